"""The stages end to end on the tiny config (in-process), the report and export, the CLI, and DVC."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from golf.artifact import load_model_from_artifact
from golf.config import load_params
from golf.model import load_model
from tests.conftest import REPO, demo_docs, tiny_overrides, write_jsonl


@pytest.fixture(scope="module")
def finished_runs(tiny_env):
    root, params, ov = tiny_env
    old = os.getcwd()
    os.chdir(root)
    try:
        import importlib
        for seed in params.seeds:
            for name in ("train", "hessian", "quantize", "package", "eval_sliding", "eval_ttt"):
                importlib.import_module(f"stages.{name}").run(params, seed)
    finally:
        os.chdir(old)
    return root, params, ov


def test_stages_write_their_contract(finished_runs):
    _, params, _ = finished_runs
    rd = params.run_dir(1)
    for f in ("train", "hessian", "quantize", "package", "eval_sliding", "eval_ttt"):
        assert (rd / "metrics" / f"{f}.json").is_file()
    m = json.loads((rd / "metrics" / "eval_sliding.json").read_text())
    assert m["tokens"] == 2047 and {"plain_val_bpb", "stateful_val_bpb", "val_bpb"} <= set(m)
    assert (rd / "train" / "provenance.json").is_file() and (rd / "artifact" / "code" / "model.py").is_file()
    # what is scored is the artifact: close to (not identical with) the float model
    ids = torch.randint(0, 512, (2, 32))
    with torch.no_grad():
        a = load_model(rd / "train")(ids)
        b = load_model_from_artifact(rd / "artifact")(ids)
    assert 0 < (a - b).abs().max() < 0.5


def test_report_and_export(finished_runs, monkeypatch, tmp_path):
    root, _, ov = finished_runs
    monkeypatch.chdir(root)
    ref = root / "ref.json"
    ref.write_text(json.dumps({"name": "baseline", "val_bpb": [9.0, 9.1, 9.2]}))
    p = load_params(REPO / "params.yaml", ov + [f"report.reference={ref}", "report.reference_bpb=9.5"])
    from stages import export, report

    flat = report.run(p)
    rep = json.loads((root / "reports" / "report.json").read_text())
    vals = [rep["rows"][str(s)]["sliding_bpb"] if str(s) in rep["rows"] else rep["rows"][s]["sliding_bpb"]
            for s in p.seeds]
    assert flat["sliding_bpb_mean"] == pytest.approx(sum(vals) / 2)
    assert max(vals) < 9.0 and flat["vs_run_p"] < 0.05  # both seeds clearly below the made-up reference
    md = (root / "reports" / "report.md").read_text()
    assert f"{vals[0]:.5f}" in md and "one-sided p" in md
    for png in ("train_curves.png", "bpb_by_stage.png", "size_breakdown.png"):
        data = (root / "reports" / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    out = export.run(p, tmp_path / "sub")
    sub = json.loads((tmp_path / "sub" / "submission.json").read_text())
    assert sub["val_bpb"] == pytest.approx(flat["sliding_bpb_mean"]) and (tmp_path / "sub" / "logs" / "1").is_dir()
    assert out["bytes_total"] == sub["bytes_total"]


def test_cli_user_errors_are_one_line_exit_2(in_tiny):
    sys.path.insert(0, str(REPO))
    import cli

    runner = CliRunner()
    r = runner.invoke(cli.app, ["train", "--seed", "1", "--params", str(REPO / "params.yaml"), "--set", "train.lr=1"])
    assert r.exit_code == 2 and "unknown key(s) train.lr" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli.app, ["prepare", "--params", str(REPO / "params.yaml"), "--set",
                                "data.train_globs=[/nonexistent/*.jsonl]"])
    assert r.exit_code == 2 and "matches no file" in r.output
    r = runner.invoke(cli.app, ["eval-sliding", "--seed", "77", "--params", str(REPO / "params.yaml")])
    assert r.exit_code == 2 and "not found" in r.output
    assert runner.invoke(cli.app, ["--help"]).exit_code == 0


@pytest.mark.slow
def test_dvc_repro_then_a_gptq_change_reruns_only_quantize_and_later(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git missing")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    work = tmp_path / "repo"
    for f in files:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, work / f)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", demo_docs(40))
    p = load_params(REPO / "params.yaml", tiny_overrides(tmp_path, corpus))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    from golf.config import to_dict
    d = to_dict(p)
    d["runs_dir"] = "runs"
    d["seeds"] = [1]
    raw.update(d)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    run = lambda *a: subprocess.run(list(a), check=False, cwd=work, capture_output=True, text=True, env=env)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        assert run(*cmd).returncode == 0
    r = run(sys.executable, "-m", "dvc", "repro")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (work / "reports" / "report.md").is_file()
    # the one DVC metrics file: tracked by git (experiments keep it), flat, the stage JSONs are not metrics
    summary = json.loads((work / "metrics" / "summary.json").read_text())
    assert summary["slide"] == summary["slide_1"] and 0 < summary["ttt_1"] < 20 and summary["steps_1"] == 6
    assert run("git", "check-ignore", "-q", "metrics/summary.json").returncode == 1  # 1: not ignored
    r = run(sys.executable, "-m", "dvc", "metrics", "show", "--json")
    assert r.returncode == 0 and "metrics/summary.json" in r.stdout and "runs/" not in r.stdout, r.stdout[-2000:]
    text = (work / "params.yaml").read_text().replace("damp_frac: 0.01", "damp_frac: 0.02")
    (work / "params.yaml").write_text(text)
    r = run(sys.executable, "-m", "dvc", "status", "--json")
    changed = set(json.loads(r.stdout))
    assert "quantize@1" in changed
    assert not changed & {"prepare", "train@1", "hessian@1"}, changed
