"""bench/results_report.py: a report rebuilt from the per-seed result folders committed under bench/results."""

import json
import shutil
import sys

import pytest

from golf.errors import GolfError
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import results_report

RESULTS = REPO / "bench" / "results"
BASELINE = str(RESULTS / "2026-11-29_c724ba99_baseline_attn_240s_seed*")


def test_committed_seeds_against_the_anchor_json(tmp_path):
    out = tmp_path / "cmp"
    results_report.main(["-p", str(REPO / "configs" / "baseline_attn.yaml"), "--metric", "eval_ttt",
                         "--runs", BASELINE, "--reference", str(RESULTS / "anchor_baseline_sp1024_h200_240s.json"),
                         "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [42, 1337]
    ttt = {s: json.loads((RESULTS / f"2026-11-29_c724ba99_baseline_attn_240s_seed{s}" / "eval_ttt.json").read_text())
           ["val_bpb"] for s in (42, 1337)}
    assert report["rows"]["1337"]["ttt_bpb"] == pytest.approx(ttt[1337])
    assert report["rows"]["42"]["ttt_bpb"] == pytest.approx(ttt[42])
    test = report["tests"]["vs_run"]
    assert test["reference_values"] == [1.39859263, 1.39926267]
    plain = test["plain"]
    assert (plain["n_a"], plain["n_b"]) == (2, 2)
    assert plain["mean_a"] == pytest.approx((ttt[42] + ttt[1337]) / 2)
    assert plain["t"] < 0 and 0.0 < plain["p"] < 0.5  # ours is lower: the one-sided p is below one half
    assert (out / "report.md").is_file() and (out / "plots" / "bpb_by_stage.png").is_file()
    assert not (out / "staged_runs").exists()


def test_result_folders_as_reference_and_bad_inputs(tmp_path):
    out = tmp_path / "cmp"
    results_report.main(["-p", str(REPO / "configs" / "hybrid_12.yaml"), "--metric", "eval_ttt",
                         "--runs", str(RESULTS / "2026-11-29_c724ba99_hybrid_12_240s_seed*"),
                         "--reference", BASELINE, "--out", str(out)])
    test = json.loads((out / "report.json").read_text())["tests"]["vs_run"]
    assert test["reference"] == "2026-11-29_c724ba99_baseline_attn_240s" and test["reference_seeds"] == [42, 1337]
    with pytest.raises(GolfError, match="no result folders match"):
        results_report.main(["-p", str(REPO / "configs" / "hybrid_12.yaml"), "--runs", str(tmp_path / "none*"),
                             "--out", str(tmp_path / "x")])
    for name in ("a_seed42", "b_seed42"):  # two folders of one seed
        shutil.copytree(RESULTS / "2026-11-29_c724ba99_baseline_attn_240s_seed42", tmp_path / name)
    with pytest.raises(GolfError, match="two folders of seed 42"):
        results_report.main(["-p", str(REPO / "configs" / "baseline_attn.yaml"),
                             "--runs", str(tmp_path / "*_seed42"), "--out", str(tmp_path / "y")])
    assert not (tmp_path / "y" / "staged_runs").exists()


def test_several_globs_per_side_with_labels(tmp_path):
    """Seeds filed under different names (an -S set, and the named config it became) join one side."""
    out = tmp_path / "cmp"
    hybrid = "*_hybrid_12_b262k__train.batch_tokens=131072_240s_seed"
    results_report.main(["-p", str(REPO / "configs" / "hybrid_12_b131k.yaml"), "--metric", "eval_ttt",
                         "--runs", str(RESULTS / f"{hybrid}1337"), str(RESULTS / f"{hybrid}42"),
                         "--runs-label", "hybrid_12_b131k_240s",
                         "--reference", str(RESULTS / "*_c34875c5_baseline_attn_b262k_240s_seed*"),
                         str(RESULTS / "*_c478e7a7_baseline_attn_b262k_240s_seed*"),
                         "--reference-label", "baseline_attn_b262k_240s", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [42, 1337]
    assert report["tests"]["vs_run"]["reference"] == "baseline_attn_b262k_240s"
    assert report["tests"]["vs_run"]["reference_seeds"] == [42, 1337, 2024]
    with pytest.raises(GolfError, match="label 'a/b'"):
        results_report.main(["-p", str(REPO / "configs" / "hybrid_12.yaml"), "--runs", BASELINE,
                             "--runs-label", "a/b", "--out", str(tmp_path / "z")])


def test_label_of_seeds_from_several_sessions(tmp_path):
    names = ["2026-11-29_c34875c5_hybrid_12_b262k_240s_seed1337", "2026-11-29_c478e7a7_hybrid_12_b262k_240s_seed42"]
    assert results_report.common_label([tmp_path / n for n in names]) == "hybrid_12_b262k_240s"
    assert results_report.common_label([tmp_path / n for n in names[1:]]) == "2026-11-29_c478e7a7_hybrid_12_b262k_240s"
    mixed = [tmp_path / names[0], tmp_path / "2026-11-29_c478e7a7_baseline_attn_240s_seed42"]
    assert results_report.common_label(mixed) == "runs"  # different configs: no shared name
