"""quantize: GPTQ int6 block matrices, int8 embeddings, float small tensors and SSM dynamics."""

from __future__ import annotations

import json
import time

from golf.config import Params
from golf.gptq import quantize_state_dict
from golf.hessian import load_hessians
from golf.io import atomic_path
from golf.model import load_model
from golf.stage_io import write_metrics, write_provenance
from golf.train import resolve_device


def run(params: Params, seed: int) -> dict:
    from safetensors.torch import save_file

    t0 = time.time()
    run_dir = params.run_dir(seed)
    device = resolve_device(params.train.device)
    model = load_model(run_dir / "train", "cpu")
    hessians, _ = load_hessians(run_dir / "hessian" / "hessians.safetensors")
    tensors, spec, report = quantize_state_dict(model.state_dict(), hessians, params.quant, device)
    out_dir = run_dir / "quant"
    with atomic_path(out_dir / "quantized.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"spec": json.dumps(spec, sort_keys=True),
                                               "model_config": (run_dir / "train" / "config.json").read_text()})
    write_provenance(out_dir, "quantize", params.quant, {"seed": seed})
    errs = [v["rel_err"] for v in report.values()]
    metrics = {"layers": report, "gptq_layers": len(report), "secs": round(time.time() - t0, 3),
               "mean_rel_err": sum(errs) / len(errs) if errs else 0.0,
               "mean_rtn_rel_err": sum(v["rtn_rel_err"] for v in report.values()) / len(errs) if errs else 0.0}
    write_metrics(run_dir / "metrics", metrics, "quantize.json")
    return metrics
