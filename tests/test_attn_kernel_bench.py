"""bench/attn_kernel_bench.py on the CPU: its parity reference, its arguments and a dry run's result JSON."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("attn_kernel_bench", ROOT / "bench/attn_kernel_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["attn_kernel_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_reference_groups_query_heads_onto_kv_heads_as_golf_does(bench):
    torch.manual_seed(0)
    B, T, H, Hkv, D = 2, 5, 4, 2, 8
    q, k, v = torch.randn(B, T, H, D), torch.randn(B, T, Hkv, D), torch.randn(B, T, Hkv, D)
    out = bench.reference(q, k, v)  # (B, T, H, D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for h in range(H):
        g = h // (H // Hkv)  # query head h reads KV head h // (H / Hkv)
        s = (q[:, :, h] @ k[:, :, g].transpose(1, 2)) / math.sqrt(D)  # (B, T, T)
        want = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v[:, :, g]
        torch.testing.assert_close(out[:, :, h], want, atol=1e-5, rtol=1e-5)


def test_flops_count_half_the_scores_and_a_backward_of_two_and_a_half_forwards(bench):
    f = bench.flops(2, 8, 4, 16)
    assert f["fwd"] == 2 * 2 * 2 * 4 * 8 * 8 * 16 / 2 and f["fwd_bwd"] == 3.5 * f["fwd"]


def test_bad_arguments_get_one_line(bench, capsys):
    with pytest.raises(SystemExit, match="heads must be a multiple of kv_heads"):
        bench.parse_args(["--cases", "6,4,64"])
    with pytest.raises(SystemExit, match="not heads,kv_heads,head_dim"):
        bench.parse_args(["--cases", "8,4"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--impls", "sdpa,fa5"])
    assert "unknown fa5" in capsys.readouterr().err


def test_a_missing_flash_attn_is_reported_not_fatal(bench, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench.kernel("fa4") is None and bench.kernel("fa2") is None
    assert bench.kernel("sdpa") is not None


def test_cpu_dry_run_checks_parity_and_times_sdpa(bench, tmp_path):
    out = tmp_path / "attn.json"
    assert bench.main(["--device", "cpu", "--impls", "sdpa,sdpa_math", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["errors"] == {}
    for case in ("h8_kv4_d64", "h4_kv2_d128"):
        assert set(result["parity"][case]) == {"sdpa", "sdpa_math"}
        assert max(result["parity"][case]["sdpa"].values()) < 1e-5  # fp32 on the CPU
        t = result["timing"][case]["sdpa"]
        assert t["fwd_ms"] > 0 and t["fwd_bwd_device_ms"] > 0
