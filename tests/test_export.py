"""The export command on fake runs/ trees: submission folder layout, records-style fields, logs, atomicity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from golf.config import load_params, to_dict
from golf.errors import GolfError
from tests.test_report import GROUPS, REPO, write_run


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed, bpb in ((1337, 1.1987), (42, 1.2003), (2024, 1.1979)):
        rd = write_run(tmp_path / "runs", seed, bpb)
        (rd / "train").mkdir()
        (rd / "train" / "provenance.json").write_text(json.dumps(
            {"stage": "train", "device": {"cuda_devices": ["NVIDIA H100 80GB HBM3"] * 8, "machine": "x86_64"},
             "git": {"commit": "abc123" if seed != 2024 else "def456", "dirty": False}}))
        m = json.loads((rd / "metrics" / "train.json").read_text())
        (rd / "metrics" / "train.json").write_text(json.dumps({**m, "world_size": 8}))

    def params(*overrides: str):
        return load_params(REPO / "params.yaml", ["seeds=[1337, 42, 2024]", "runs_dir=runs", *overrides])

    return tmp_path, params


def test_submission_folder(project):
    from stages import export

    root, params = project
    (root / "ref.json").write_text(json.dumps({"name": "naive baseline", "val_bpb": [1.2244, 1.2250, 1.2238]}))
    p = params("report.reference=ref.json", "report.author=Ada", "report.github_id=ada", "report.name=Hybrid")
    out = export.run(p, root / "sub")
    sub_dir = root / "sub"
    sub = json.loads((sub_dir / "submission.json").read_text())
    # records fields (openai/parameter-golf records/track_10min_16mb/*/submission.json)
    for key in ("author", "github_id", "name", "blurb", "date", "track", "val_loss", "val_bpb", "val_bpb_std",
                "pre_quant_val_bpb", "seeds", "seed_results", "bytes_total", "bytes_code", "hardware",
                "pytorch_version", "compliance", "git_commit", "library_versions"):
        assert key in sub, key
    assert list(sub)[:3] == ["author", "github_id", "name"]  # records' order, not sorted
    assert (sub["author"], sub["github_id"], sub["name"]) == ("Ada", "ada", "Hybrid")
    # sliding BPBs 1.1987, 1.2003, 1.1979: mean 1.19897, deviations -0.00027, 0.00133, -0.00107 -> std 0.0012220
    assert sub["val_bpb"] == pytest.approx((1.1987 + 1.2003 + 1.1979) / 3)
    assert sub["val_bpb_std"] == pytest.approx(0.0012220, abs=1e-7)
    assert sub["seeds"] == [1337, 42, 2024] and sub["seed_results"]["42"]["val_bpb"] == pytest.approx(1.2003)
    assert sub["seed_results"]["42"]["pre_quant_val_bpb"] == pytest.approx(1.2163)
    assert sub["bytes_total"] == sum(GROUPS.values()) + 90_000 + 2024  # max over seeds (seed 2024's code is largest)
    assert sub["bytes_code"] == 92_024 and sub["bytes_model"] == sum(GROUPS.values())
    assert sub["hardware"] == "8x NVIDIA H100 80GB HBM3" and sub["track"] == "10min_16mb"
    assert sub["compliance"]["train_under_600s"] and sub["compliance"]["score_first_ttt"]
    assert sub["significance"]["vs_run"]["p_value"] < 0.01 and sub["metric"] == "eval_sliding.val_bpb"
    assert out["bytes_total"] == sub["bytes_total"] and out["val_bpb"] == sub["val_bpb"]
    # the code version is the one that trained (seed 2024 was trained at another commit: listed, flagged)
    assert sub["git_commit"] == "abc123" and sub["git_commit_by_seed"]["2024"] == "def456"

    readme = (sub_dir / "README.md").read_text()
    assert "**val_bpb 1.19897** ± 0.00122" in readme and "| 42 | 1.20030 |" in readme
    assert "git checkout abc123" in readme and "different commits" in readme and "python cli.py pipeline" in readme and "vs naive baseline" in readme
    for seed in (1337, 42, 2024):
        logs = sub_dir / "logs" / str(seed)
        assert {"train.json", "package.json", "eval_sliding.json", "eval_ttt.json", "train_curve.tsv",
                "train_provenance.json"} <= {f.name for f in logs.iterdir()}
        assert (logs / "train_curve.tsv").read_bytes() == (root / "runs" / str(seed) / "plots" / "train_curve.tsv").read_bytes()
    for f in ("report.md", "report.json", "summary.json", "plots/bpb_by_stage.png"):
        assert (sub_dir / f).is_file(), f
    # the params file reproduces the run's settings
    assert to_dict(load_params(sub_dir / "params.yaml")) == to_dict(p)
    assert not (root / "reports").exists()  # export writes only its own folder


def test_track_is_non_record_off_8xh100_or_over_time(project):
    from stages import export

    root, params = project
    m = json.loads((root / "runs" / "42" / "metrics" / "train.json").read_text())
    (root / "runs" / "42" / "metrics" / "train.json").write_text(json.dumps({**m, "train_s": 640.0}))
    export.run(params("ttt.enabled=false"), root / "sub")
    sub = json.loads((root / "sub" / "submission.json").read_text())
    assert sub["track"] == "non_record_16mb" and sub["compliance"]["train_under_600s"] is False
    assert sub["wallclock_seconds"] == 640.0 and "score_first_ttt" not in sub["compliance"]
    assert "not met: train_under_600s" in (root / "sub" / "README.md").read_text()


def test_failed_export_leaves_the_previous_folder(project):
    from stages import export

    root, params = project
    export.run(params(), root / "sub")
    before = (root / "sub" / "submission.json").read_text()
    os.remove(root / "runs" / "2024" / "metrics" / "eval_sliding.json")
    with pytest.raises(GolfError, match="runs/2024/metrics/eval_sliding.json' not found"):
        export.run(params(), root / "sub")
    assert (root / "sub" / "submission.json").read_text() == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temp folders left


def test_export_cli_prints_one_line_error(project):
    import sys

    from typer.testing import CliRunner

    root, _ = project
    sys.path.insert(0, str(REPO))
    import cli

    r = CliRunner().invoke(cli.app, ["export", "--params", str(REPO / "params.yaml"), "--set", "runs_dir=runs",
                                     "--set", "seeds=[1337, 7]", "--out", str(root / "sub")])
    assert r.exit_code == 2 and "runs/7/metrics/train.json' not found" in r.output and "Traceback" not in r.output
    assert not Path(root / "sub").exists()
