"""bench/profile_diff.py: two profiles of the same step, where the slower one's extra milliseconds went."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("profile_diff", ROOT / "bench" / "profile_diff.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _profile(families: dict, kernels: list[tuple[str, str, float, float]]) -> dict:
    """A golf.profiling summary: by_family_ms and the top kernels (name, family, ms per step, calls per step)."""
    return {"wall_ms_per_step": sum(families.values()) + 1.0, "device_busy_ms_per_step": sum(families.values()),
            "by_family_ms": families,
            "top": [{"name": n, "family": f, "ms_per_step": ms, "calls_per_step": c} for n, f, ms, c in kernels]}


BASE = _profile({"gemm": 30.0, "ssd_scan": 35.0, "attention": 7.5},
                [("nvjet_gemm", "gemm", 30.0, 31), ("_chunk_scan_fwd_kernel", "ssd_scan", 20.0, 15),
                 ("_state_passing_fwd_kernel", "ssd_scan", 15.0, 30), ("sdpa_flash", "attention", 7.5, 3)])
# the same step in a slow process: one scan kernel 6 ms slower, the rest as in BASE
SLOW = _profile({"gemm": 30.0, "ssd_scan": 41.0, "attention": 7.5},
                [("nvjet_gemm", "gemm", 30.0, 31), ("_chunk_scan_fwd_kernel", "ssd_scan", 26.0, 15),
                 ("_state_passing_fwd_kernel", "ssd_scan", 15.0, 30), ("sdpa_flash", "attention", 7.5, 3)])


def test_the_slow_process_is_traced_to_its_kernel(tmp_path, capsys):
    bench = _bench()
    a, b = tmp_path / "base.json", tmp_path / "slow.json"
    a.write_text(json.dumps(BASE))
    b.write_text(json.dumps({"label": "a throughput JSON", "profile": SLOW}))  # both file shapes are read
    out = tmp_path / "diff.json"
    assert bench.main([str(a), str(b), "--top", "2", "--label", "fast,slow", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["labels"] == ["fast", "slow"]
    assert [r[0] for r in result["families"]] == ["ssd_scan", "gemm", "attention"]  # largest first
    assert result["families"][0] == ["ssd_scan", 35.0, 41.0, 6.0]
    assert result["kernels"][0] == ["_chunk_scan_fwd_kernel", 20.0, 26.0, 6.0, "15/15"]  # the one that moved
    assert len(result["kernels"]) == 2 and result["kernels"][1][3] == 0.0
    text = capsys.readouterr().out
    assert "| ssd_scan | 35.000 | 41.000 | +6.000 |" in text
    assert "| _chunk_scan_fwd_kernel | 20.000 | 26.000 | +6.000 | 15/15 |" in text


def test_a_kernel_only_one_profile_has_counts_zero_in_the_other(tmp_path):
    bench = _bench()
    golf = _profile({"gemm": 30.0, "ssd_scan": 47.0},
                    [("nvjet_gemm", "gemm", 30.0, 31), ("_ssd_fwd_kernel", "ssd_scan", 47.0, 15)])
    fams, kers = bench.diff_rows([BASE, golf], top=3)
    assert kers[0] == ["_ssd_fwd_kernel", 0.0, 47.0, 47.0, "-/15"]
    assert kers[1] == ["_chunk_scan_fwd_kernel", 20.0, 0.0, -20.0, "15/-"]
    assert ["attention", 7.5, 0.0, -7.5] in fams


@pytest.mark.parametrize("files, extra, message", [
    (1, [], "at least two profile JSONs"),
    (2, ["--label", "one"], "--label names 1 profiles, but 2 were given"),
    (2, ["--top", "0"], "--top must be at least 1"),
    ("no_profile", [], "holds no profile summary"),
    ("not_json", [], "cannot read"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, files, extra, message):
    bench = _bench()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BASE))
    paths = [good] * files if isinstance(files, int) else [good, tmp_path / "bad.json"]
    if files == "no_profile":
        paths[1].write_text(json.dumps({"ms_per_step": 139.1}))
    elif files == "not_json":
        paths[1].write_text("{truncated")
    assert bench.main([*map(str, paths), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
