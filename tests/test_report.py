"""The report stage on fake runs/ trees: table, mean/std, tests, margin, missing inputs, markdown, PNGs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from scipy import stats as sps

from golf.config import CAP_BYTES, load_params
from golf.errors import GolfError
from golf.report import load_reference, read_curve

REPO = Path(__file__).resolve().parents[1]
TOKENS, BYTES = 40_000, 100_000  # scored per seed: 0.4 tokens per byte
GROUPS = {"mamba": 4_100_000, "attention": 900_000, "mlp": 1_200_000, "embeddings": 600_000,
          "ssm_dynamics": 100_000, "norms_scalars": 20_000}


def write_run(runs: Path, seed: int, sliding: float, *, ttt: bool = True, stateful: bool = True,
              steps: int = 400, log_every: int = 20) -> Path:
    """One seed's metrics + curve with this project's file layout. Other BPBs are fixed offsets of `sliding`."""
    rd = runs / str(seed)
    (rd / "metrics").mkdir(parents=True)
    (rd / "plots").mkdir()
    pre = sliding + 0.016

    def put(name: str, m: dict) -> None:
        (rd / "metrics" / f"{name}.json").write_text(json.dumps(m))

    put("train", {"steps": steps, "tokens": steps * 524_288, "train_s": 590.5, "tok_per_s": 2_000_000.0 + seed,
                  "val_loss": pre * math.log(2) / 0.4, "val_bpb": pre, "peak_mem_mb": 1.0, "kernel_paths": {}})
    put("quantize", {"layers": {}, "secs": 3.0, "mean_rel_err": 0.01})
    put("package", {"model_bytes": sum(GROUPS.values()), "code_bytes": 90_000 + seed,
                    "total_bytes": sum(GROUPS.values()) + 90_000 + seed, "cap_bytes": CAP_BYTES, "under_cap": True,
                    "compressed": {}, "groups": GROUPS})
    es = {"val_loss": sliding * math.log(2) / 0.4, "val_bpb": sliding, "tokens": TOKENS, "bytes": BYTES,
          "eval_s": 80.0, "plain_val_loss": (sliding + 0.024) * math.log(2) / 0.4, "plain_val_bpb": sliding + 0.024}
    if stateful:
        es["stateful_val_bpb"] = sliding + 0.002
    put("eval_sliding", es)
    put("eval_ttt", {"enabled": True, "val_loss": 1.0, "val_bpb": sliding - 0.003, "tokens": TOKENS, "bytes": BYTES,
                     "eval_s": 300.0} if ttt else {"enabled": False})
    lines = ["step\ttokens\ttrain_s\tlr_scale\ttrain_loss\tval_bpb"]
    for st in range(log_every, steps + 1, log_every):
        loss = 2.0 + 4.9 * math.exp(-st / 60) + 0.01 * math.sin(st + seed)
        lines.append(f"{st}\t{st * 524288}\t{st * 1.47:.3f}\t1.0\t{loss:.5f}\t{pre if st == steps else ''}")
    (rd / "plots" / "train_curve.tsv").write_text("\n".join(lines) + "\n")
    return rd


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temp cwd with runs/ for seeds 1, 2, 3 (sliding BPB 1.20, 1.21, 1.22) and a params loader."""
    monkeypatch.chdir(tmp_path)
    for seed, bpb in ((1, 1.20), (2, 1.21), (3, 1.22)):
        write_run(tmp_path / "runs", seed, bpb)

    def params(*overrides: str):
        return load_params(REPO / "params.yaml", ["seeds=[1, 2, 3]", "runs_dir=runs", *overrides])

    return tmp_path, params


def run_report(p):
    from stages import report

    return report.run(p)


def test_table_means_stds_and_markdown(project):
    root, params = project
    flat = run_report(params())
    rep = json.loads((root / "reports" / "report.json").read_text())
    # sliding 1.20, 1.21, 1.22: mean 1.21; deviations -0.01, 0, 0.01 -> variance 0.0002/2 = 1e-4, std 0.01
    assert flat["sliding_bpb_mean"] == pytest.approx(1.21) and flat["sliding_bpb_std"] == pytest.approx(0.01)
    assert flat["quant_bpb_mean"] == pytest.approx(1.234) and flat["pre_quant_bpb_mean"] == pytest.approx(1.226)
    assert flat["ttt_bpb_mean"] == pytest.approx(1.207) and flat["stateful_bpb_mean"] == pytest.approx(1.212)
    assert flat["steps_mean"] == 400 and flat["train_tok_per_s_mean"] == pytest.approx(2_000_002.0)
    assert flat["artifact_bytes_max"] == sum(GROUPS.values()) + 90_003 and flat["n_seeds"] == 3
    assert rep["rows"]["2"]["sliding_bpb"] == pytest.approx(1.21)
    assert rep["effects"]["quantization"] == pytest.approx(0.008)  # quant - pre-quant = 0.024 - 0.016
    # margin: 0.005 nats / ln 2 * (3 * 40,000 tokens) / (3 * 100,000 bytes) = 0.0028854 BPB
    assert flat["margin_bpb"] == pytest.approx(0.005 / math.log(2) * 0.4)
    assert not any(k.endswith("_p") for k in flat)  # no reference, no test
    md = (root / "reports" / "report.md").read_text()
    assert "| 2 | 1.22600 | 1.23400 | 1.21000 | 1.21200 | 1.20700 | 7,010,002 | 2,000,002 | 400 |" in md
    assert "| **mean** | 1.22600 | 1.23400 | 1.21000 |" in md and "| std | 0.01000 | 0.01000 | 0.01000 |" in md
    assert "0.00289 BPB" in md and "No reference set" in md
    assert "quantization +0.00800" in md
    summary = json.loads((root / "reports" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(flat)) and len((root / "reports" / "summary.json").read_text()) < 2000


def test_plots_are_real_pngs(project):
    root, params = project
    run_report(params("report.reference_bpb=1.25"))
    for name in ("train_curves.png", "bpb_by_stage.png", "size_breakdown.png"):
        data = (root / "reports" / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000, name
        assert int.from_bytes(data[16:20], "big") >= 800  # width in the IHDR chunk: readable, not a thumbnail
    assert not [p for p in (root / "reports").rglob("*") if p.name.startswith(".")]  # no temp files left


def test_welch_against_another_runs_folder(project):
    root, params = project
    for seed, bpb in ((7, 1.25), (8, 1.27), (9, 1.26), (10, 1.24)):
        write_run(root / "baseline_runs", seed, bpb)
    (root / "baseline_runs" / "notes").mkdir()  # non-numeric folders are not seeds
    flat = run_report(params("report.reference=baseline_runs"))
    rep = json.loads((root / "reports" / "report.json").read_text())
    t = rep["tests"]["vs_run"]
    assert t["reference_seeds"] == [7, 8, 9, 10] and t["reference_values"] == pytest.approx([1.25, 1.27, 1.26, 1.24])
    a, b = [1.20, 1.21, 1.22], [1.25, 1.27, 1.26, 1.24]
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="less")
    assert flat["vs_run_t"] == pytest.approx(ref.statistic, rel=1e-6) and flat["vs_run_p"] == pytest.approx(ref.pvalue, rel=1e-6)
    m = flat["margin_bpb"]
    ref_m = sps.ttest_ind(a, [x - m for x in b], equal_var=False, alternative="less")
    assert flat["vs_run_margin_p"] == pytest.approx(ref_m.pvalue, rel=1e-6) and flat["vs_run_margin_p"] > flat["vs_run_p"]
    md = (root / "reports" / "report.md").read_text()
    assert "Welch two-sample t-test, 3 seeds vs 4 seeds" in md and f"{ref.pvalue:.3g}" in md
    assert f"{t['plain']['df']:.2f}" in md and "**yes**" in md
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert flat["vs_run_diff"] == pytest.approx(1.21 - 1.255, abs=1e-9)
    assert (flat["vs_run_diff_ci_low"], flat["vs_run_diff_ci_high"]) == (pytest.approx(ci.low, abs=1e-9),
                                                                       pytest.approx(ci.high, abs=1e-9))
    assert (f"Difference A - B: **{1.21 - 1.255:+.5f} BPB**, two-sided 95% confidence interval "
            f"[{ci.low:+.5f}, {ci.high:+.5f}]") in md
    assert "A is lower (better) in these seeds" in md and "includes 0" not in md
    assert rep["warnings"] == []


def test_reference_json_formats(project, tmp_path):
    root, params = project
    (root / "ref.json").write_text(json.dumps({"name": "naive baseline", "val_bpb": [1.2244, 1.2250, 1.2238]}))
    flat = run_report(params("report.reference=ref.json", "report.reference_bpb=1.2244"))
    ref = sps.ttest_ind([1.20, 1.21, 1.22], [1.2244, 1.2250, 1.2238], equal_var=False, alternative="less")
    assert flat["vs_run_p"] == pytest.approx(ref.pvalue, rel=1e-6)
    one = sps.ttest_1samp([1.20, 1.21, 1.22], 1.2244, alternative="less")
    assert flat["vs_value_p"] == pytest.approx(one.pvalue, rel=1e-6)
    md = (root / "reports" / "report.md").read_text()
    assert "vs naive baseline" in md and "one-sample t-test" in md
    # a challenge-style submission.json with per-seed results
    (root / "sub.json").write_text(json.dumps({"name": "rec", "val_bpb": 1.2244,
                                               "seed_results": {"1": {"val_bpb": 1.22}, "2": {"val_bpb": 1.23}}}))
    assert load_reference("sub.json", "sliding_bpb")["values"] == [1.22, 1.23]
    (root / "mean_only.json").write_text(json.dumps({"name": "x", "val_bpb": 1.2244}))
    with pytest.raises(GolfError, match="single val_bpb.*reference_bpb"):
        load_reference("mean_only.json", "sliding_bpb")
    (root / "bad.json").write_text("{not json")
    with pytest.raises(GolfError, match="bad.json.*not valid JSON"):
        load_reference("bad.json", "sliding_bpb")
    (root / "neg.json").write_text(json.dumps({"val_bpb": [1.2, -1]}))
    with pytest.raises(GolfError, match="positive"):
        load_reference("neg.json", "sliding_bpb")


def test_missing_reference_is_a_clear_error(project):
    root, params = project
    with pytest.raises(GolfError, match="report.reference 'nowhere.json': no such file or folder"):
        run_report(params("report.reference=nowhere.json"))
    (root / "empty_runs").mkdir()
    with pytest.raises(GolfError, match="no seed folders"):
        run_report(params("report.reference=empty_runs"))
    assert not (root / "reports").exists()  # a failed report writes nothing


def test_one_seed_reports_without_a_test(project):
    root, params = project
    (root / "ref.json").write_text(json.dumps({"val_bpb": [1.25, 1.26]}))
    flat = run_report(params("seeds=[1]", "report.reference=ref.json", "report.reference_bpb=1.3"))
    assert flat["sliding_bpb_mean"] == pytest.approx(1.20) and flat["sliding_bpb_std"] is None
    assert flat["vs_run_p"] is None and flat["vs_value_p"] is None
    md = (root / "reports" / "report.md").read_text()
    assert "not possible: Welch's t-test needs at least 2 seeds on each side (got 1 and 2)" in md
    assert "not possible: a one-sample t-test needs at least 2 seeds (got 1)" in md
    assert "Standard deviations need at least 2 seeds" in md


def test_zero_variance_is_reported_not_crashed(project, tmp_path):
    root, params = project
    runs = root / "flat_runs"
    for seed in (1, 2):
        write_run(runs, seed, 1.2)
    (root / "ref.json").write_text(json.dumps({"val_bpb": [1.3, 1.3]}))
    flat = run_report(params("seeds=[1, 2]", "runs_dir=flat_runs", "report.reference=ref.json"))
    assert flat["sliding_bpb_std"] == 0.0 and flat["vs_run_p"] is None
    assert "both samples have zero variance" in (root / "reports" / "report.md").read_text()


def test_missing_metrics_file_names_it(project):
    root, params = project
    os.remove(root / "runs" / "2" / "metrics" / "package.json")
    with pytest.raises(GolfError, match=r"runs/2/metrics/package.json' not found.*package --seed 2"):
        run_report(params())
    (root / "runs" / "2" / "metrics" / "package.json").write_text("{truncated")
    with pytest.raises(GolfError, match=r"package.json' is not valid JSON"):
        run_report(params())
    (root / "runs" / "2" / "metrics" / "package.json").write_text(json.dumps({"total_bytes": "big"}))
    with pytest.raises(GolfError, match=r"package.json': expected a number under 'total_bytes'"):
        run_report(params())


def test_ttt_disabled_shows_na_and_missing_ttt_is_an_error(project):
    root, params = project
    for seed in (1, 2, 3):
        os.remove(root / "runs" / str(seed) / "metrics" / "eval_ttt.json")
    with pytest.raises(GolfError, match="eval_ttt.json' not found.*eval-ttt --seed 1"):
        run_report(params())
    flat = run_report(params("ttt.enabled=false"))
    assert flat["ttt_bpb_mean"] is None
    md = (root / "reports" / "report.md").read_text()
    assert "| 1 | 1.21600 | 1.22400 | 1.20000 | 1.20200 | n/a |" in md
    with pytest.raises(GolfError, match="report.metric is 'eval_ttt' but ttt.enabled is false"):
        run_report(params("ttt.enabled=false", "report.metric=eval_ttt"))


def test_metric_choice_and_missing_stateful(project):
    root, params = project
    runs = root / "r2"
    for seed, bpb in ((1, 1.20), (2, 1.22)):
        write_run(runs, seed, bpb, stateful=False)
    flat = run_report(params("seeds=[1, 2]", "runs_dir=r2", "report.metric=train", "report.reference_bpb=1.3"))
    rep = json.loads((root / "reports" / "report.json").read_text())
    assert rep["metric_column"] == "pre_quant_bpb" and rep["tests"]["vs_value"]["plain"]["mean_a"] == pytest.approx(1.226)
    assert flat["stateful_bpb_mean"] is None
    assert "stateful BPB" not in (root / "reports" / "report.md").read_text()  # column dropped when never run


def test_curve_parsing_and_missing_curve_warns(project):
    root, params = project
    c = read_curve(root / "runs" / "1" / "plots" / "train_curve.tsv")
    assert c["step"][:2] == [20.0, 40.0] and math.isnan(c["val_bpb"][0]) and c["val_bpb"][-1] == pytest.approx(1.216)
    os.remove(root / "runs" / "3" / "plots" / "train_curve.tsv")
    run_report(params())
    rep = json.loads((root / "reports" / "report.json").read_text())
    assert any("train_curve.tsv" in w and "seed 3" in w for w in rep["warnings"])
    (root / "runs" / "3" / "plots" / "train_curve.tsv").write_text("step\ttrain_loss\n1\tabc\n")
    with pytest.raises(GolfError, match=r"train_curve.tsv' line 2: train_loss='abc' is not a number"):
        run_report(params())


def test_reference_scored_on_other_text_is_flagged(project):
    root, params = project
    for seed, bpb in ((7, 1.25), (8, 1.27)):
        rd = write_run(root / "other", seed, bpb)
        m = json.loads((rd / "metrics" / "eval_sliding.json").read_text())
        (rd / "metrics" / "eval_sliding.json").write_text(json.dumps({**m, "bytes": BYTES // 2}))
    run_report(params("report.reference=other"))
    rep = json.loads((root / "reports" / "report.json").read_text())
    assert any("not evaluated on the same text" in w for w in rep["warnings"])
    assert "## Warnings" in (root / "reports" / "report.md").read_text()


def test_report_names_the_commits_that_produced_each_side(project):
    """Seeds gathered over several sessions come from different commits: the report says which, per side."""
    root, params = project

    def stamp(rd: Path, commit: str, dirty: bool = False, stage: str = "eval_ttt") -> None:
        (rd / "metrics" / f"{stage}.provenance.json").write_text(json.dumps({"git": {"commit": commit, "dirty": dirty}}))

    stamp(root / "runs" / "1", "a" * 40)
    stamp(root / "runs" / "2", "b" * 40, dirty=True)
    stamp(root / "runs" / "3", "a" * 40)
    for seed, bpb in ((7, 1.25), (8, 1.27)):
        write_run(root / "baseline_runs", seed, bpb)
    stamp(root / "baseline_runs" / "7", "c" * 40, stage="eval_sliding")  # TTT's own file missing: sliding's
    run_report(params("report.reference=baseline_runs", "report.metric=eval_ttt"))
    rep = json.loads((root / "reports" / "report.json").read_text())
    assert rep["result_commits"] == {"1": "a" * 12, "2": "b" * 12 + "+dirty", "3": "a" * 12}
    assert rep["tests"]["vs_run"]["reference_commits"] == {"7": "c" * 12, "8": None}
    md = (root / "reports" / "report.md").read_text()
    assert f"Compared BPBs produced at: {'a' * 12} (seeds 1, 3); {'b' * 12}+dirty (seed 2)." in md
    assert f"produced at: {'c' * 12} (seed 7); unknown (no provenance file) (seed 8)." in md
    assert "Reference values (seeds 7, 8): 1.24700, 1.26700." in md
