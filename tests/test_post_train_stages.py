"""The stages after training take a model trained with the GPU-only kernel paths (golf::mamba_core with its kept
scan internals and golf's norm kernels, golf's residual glue, FlashAttention-4, CUDA graphs) on a machine without
them: Hessian calibration and GPTQ rebuild it with golf.model.scoring_config's paths, the same function. On the
H200 (2026-12-01) hybrid_12_b131k trained with them and its quantize stage then failed."""

import dataclasses

import torch

from golf.gptq import load_quantized
from golf.model import save_model
from stages import hessian, quantize

GPU_ONLY = {"ssm_backend": "fused", "ssm_compile": "opaque", "ssm_scan": "mamba_keep_golf_overlap",
            "gated_norm": "golf", "ssm_conv": "golf", "block_norm": "golf", "attn_backend": "flash4"}


def test_hessian_and_quantize_take_a_model_trained_on_the_gpu_only_paths(in_tiny, tmp_path):
    from tests.test_package import _trained_like

    _, params, _ = in_tiny
    params = dataclasses.replace(params, runs_dir=str(tmp_path / "runs"))
    seed = 5
    rd = params.run_dir(seed)
    trained = dataclasses.replace(params.model, **GPU_ONLY)
    save_model(_trained_like(params.model), trained, rd / "train")
    assert hessian.run(params, seed)["samples"] > 0
    quantize.run(params, seed)
    tensors, _, model_config = load_quantized(rd / "quant" / "quantized.safetensors")
    assert {k: model_config[k] for k in GPU_ONLY} == GPU_ONLY  # the record says how it trained
    assert all(torch.isfinite(t.float()).all() for t in tensors.values())
