"""bench/train_throughput.py: the step timer and its profile summary (kernel families, per-step times)."""

import json
import sys

import pytest
import torch

from golf.data import read_shard
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import train_throughput as tt


@pytest.mark.parametrize("name, family", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align2", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rms_norm_rsqrt_3", "inductor_fused"),
    ("triton_poi_fused_add_mul_silu_12", "inductor_fused"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("_chunk_scan_chunk_state_bwd_dx_kernel", "ssd_scan"),
    ("_state_passing_fwd_kernel", "ssd_scan"),
    ("_bmm_chunk_fwd_kernel", "ssd_scan"),
    ("_layer_norm_fwd_1pass_kernel", "gated_norm"),
    ("void causal_conv1d_channellast_fwd_kernel<Causal_conv1d_channellast_fwd_kernel_traits<128, 4>>", "causal_conv"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>", "optimizer_foreach"),
    ("Memcpy DtoD (Device -> Device)", "copy_fill"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise_eager"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "nccl"),
    ("some_unknown_kernel", "other"),
])
def test_kernel_families(name, family):
    assert tt.kernel_family(name) == family


def test_profile_summary_per_step_and_ranking():
    events = [("triton_poi_fused_add_0", 100.0), ("_chunk_scan_fwd_kernel", 300.0), ("triton_poi_fused_add_0", 100.0),
              ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", 600.0), ("mystery", 50.0)]
    s = tt.summarize_profile(events, steps=2, top=2)
    assert s["ms_per_step"] == pytest.approx(1150 / 1e3 / 2)
    assert s["by_family_ms"] == {"gemm": 0.3, "ssd_scan": 0.15, "inductor_fused": 0.1, "other": 0.025}
    assert list(s["by_family_ms"]) == ["gemm", "ssd_scan", "inductor_fused", "other"]  # largest first
    assert [t["name"] for t in s["top"]] == ["nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "_chunk_scan_fwd_kernel"]
    assert s["top"][0]["calls_per_step"] == 0.5
    by_name = {t["name"]: t for t in tt.summarize_profile(events, steps=2)["top"]}
    assert by_name["triton_poi_fused_add_0"]["calls_per_step"] == 1.0
    assert by_name["triton_poi_fused_add_0"]["ms_per_step"] == pytest.approx(0.1)


def test_cpu_run_with_profile_writes_its_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    out = tt.main([str(REPO / "params.yaml"), "--steps", "1", "--profile-steps", "1", "--label", "demo x=1",
                   "--set", "train.max_steps=5"])
    assert out["ms_per_step"] > 0 and out["tok_per_s"] > 0 and out["tokens_per_step"] == 8192
    prof = out["profile"]
    assert prof["timeline"] == "CPU ops (self time)" and prof["steps"] == 1
    assert prof["ms_per_step"] == pytest.approx(sum(prof["by_family_ms"].values()), rel=1e-2, abs=0.05)
    assert any(t["name"] == "aten::mm" for t in prof["top"])  # the linear layers' matmuls ran and were seen
    assert json.loads((tmp_path / "throughput_demo-x-1.json").read_text())["profile"]["steps"] == 1
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "0"])


def test_host_batches_are_the_token_loaders_windows(tmp_path):
    batches = tt.HostBatches(tmp_path, vocab=100, micro=4, seq_len=16, pinned=False)
    x, y = batches.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64 and not x.is_pinned()
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 100  # next-token targets from the shard
    shard = read_shard(tmp_path / "fineweb_train_000000.bin")
    row = x[0].numpy()
    starts = [i for i in range(shard.size - 16) if (shard[i:i + 16] == row).all()]
    assert starts, "the batch's first window is not a window of the shard"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_pinned_host_batches_need_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "1", "--tokens", "pinned"])
    assert "--tokens pinned needs CUDA" in capsys.readouterr().err


def test_cpu_run_on_host_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    out = tt.main([str(REPO / "params.yaml"), "--steps", "1", "--tokens", "pageable", "--label", "host"])
    assert out["token_source"] == "pageable" and out["ms_per_step"] > 0 and out["last_loss"] > 0
