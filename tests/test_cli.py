"""The command line: the `golf` console script, --version, `params show`, `doctor`, eval stages on any artifact
(--artifact) and error lines that stay one physical line whatever the terminal width."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

import cli

runner = CliRunner()


def _run_cli(*args: str, columns: int = 40) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=str(columns), LINES="20")
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], check=False,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_console_script_is_the_same_app():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"golf": "cli:main"}
    assert cli.main.__module__ == "cli" and callable(cli.app)
    golf = Path(sys.executable).parent / "golf"
    if not golf.is_file():
        pytest.skip("the golf console script is not installed in this venv (rerun scripts/setup.sh)")
    out = subprocess.run([str(golf), "--version"], check=False, capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == cli.version_string()


def test_version_names_the_package_version_and_commit():
    from importlib.metadata import version

    res = runner.invoke(cli.app, ["--version"])
    assert res.exit_code == 0
    line = res.stdout.strip()
    assert line.startswith(f"golf {version('golf')}")
    if shutil.which("git") and (REPO / ".git").exists():
        sha = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                             cwd=REPO).stdout.strip()
        assert f"(commit {sha[:12]}" in line


@pytest.mark.parametrize("args", [["train", "--sed", "3"], ["params", "show", "no_such_section"],
                                  ["train", "--seed", "1", "--set", "train.lr_matrix=not-a-number-at-all"]])
def test_error_lines_are_one_physical_line_at_any_width(args):
    res = _run_cli(*args, columns=40)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > 40, res.stderr
    assert "Traceback" not in res.stderr and "│" not in res.stderr


def test_params_show_reads_values_defaults_ranges_and_docs_from_the_config_dataclasses(tmp_path):
    res = runner.invoke(cli.app, ["params", "show", "calib", "--json", "--params", str(REPO / "params.yaml"),
                                  "--set", "calib.num_sequences=7"])
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in json.loads(res.stdout)}
    assert all(k.startswith("calib.") for k in rows)
    assert rows["calib.num_sequences"]["value"] == 7 and rows["calib.num_sequences"]["default"] == 128
    assert rows["calib.num_sequences"]["allowed"] == ">= 1"
    assert rows["calib.source"]["allowed"] == "train | self" and "train shards" in rows["calib.source"]["doc"]
    every = runner.invoke(cli.app, ["params", "show", "--json", "--params", str(REPO / "params.yaml")])
    keys = [r["key"] for r in json.loads(every.stdout)]
    assert "seeds" in keys and "train.lr_matrix" in keys and "launch.nproc_per_node" in keys
    assert {r["key"]: r["allowed"] for r in json.loads(every.stdout)}["quant.damp_frac"] == "0 .. 1"
    table = runner.invoke(cli.app, ["params", "show", "package", "--params", str(REPO / "params.yaml")])
    assert table.exit_code == 0 and "package.compressor" in table.stdout and "brotli" in table.stdout
    assert "params.yaml [package]" in table.stdout


def test_doctor_reports_the_paths_the_model_resolvers_choose():
    import torch

    res = runner.invoke(cli.app, ["doctor", "--params", str(REPO / "params.yaml"), "--set", "train.device=cpu"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert f"torch {torch.__version__}" in out and "device: cpu" in out
    assert "ssm: reference (" in out and "device is not CUDA" in out
    assert "conv: pytorch (" in out and "attention: sdpa (" in out
    # a path that cannot run here is reported with the resolver's own error, and the exit code says so
    bad = runner.invoke(cli.app, ["doctor", "--params", str(REPO / "params.yaml"), "--set", "train.device=cpu",
                                  "--set", "model.ssm_backend=triton", "--set", "model.attn_backend=flash"])
    assert bad.exit_code == 1
    assert "ssm: will FAIL: model.ssm_backend is 'triton'" in bad.stdout
    assert "attention: will FAIL: model.attn_backend is 'flash'" in bad.stdout


def test_eval_stages_score_any_artifact_into_their_own_folder(in_tiny, tmp_path):
    from test_evaluate import _params, write_artifact

    root, _, overrides = in_tiny
    params = _params(in_tiny, tmp_path)
    write_artifact(params, 5)
    art = params.run_dir(5) / "artifact"
    shown = tmp_path / "elsewhere" / "my_artifact"
    shutil.copytree(art, shown)
    fast = ["eval.max_tokens=512", "eval.stride=32", "eval.stateful=false"]
    sets = [x for o in [*overrides, f"runs_dir={tmp_path / 'runs'}", *fast] for x in ("--set", o)]
    res = runner.invoke(cli.app, ["eval-sliding", "--artifact", str(shown), "--params", str(REPO / "params.yaml"),
                                  *sets])
    assert res.exit_code == 0, res.output
    out = root / "scores" / "my_artifact"
    m = json.loads((out / "eval_sliding.json").read_text())
    assert 0 < m["val_bpb"] < 20
    assert json.loads((out / "eval_sliding.provenance.json").read_text())["artifact"] == str(shown)
    log = (out / "logs" / "eval_sliding.log").read_text()
    assert log.startswith("=== ") and "metrics: " in log and " done in " in log
    assert not (params.run_dir(5) / "metrics").exists()  # runs/<seed>/ untouched
    assert sorted(p.name for p in shown.iterdir()) == sorted(p.name for p in art.iterdir())  # nothing written there

    # the model file alone, and --out: the same score
    model_file = next(p for p in shown.iterdir() if p.is_file() and p.name.startswith("model"))
    res = runner.invoke(cli.app, ["eval-sliding", "--artifact", str(model_file), "--out", str(tmp_path / "o"),
                                  "--params", str(REPO / "params.yaml"), *sets])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "eval_sliding.json").read_text())["val_bpb"] == pytest.approx(m["val_bpb"])

    # the same artifact under runs/5/ scored by seed gives the same number
    res = runner.invoke(cli.app, ["eval-sliding", "--seed", "5", "--params", str(REPO / "params.yaml"), *sets])
    assert res.exit_code == 0, res.output
    by_seed = json.loads((params.run_dir(5) / "metrics" / "eval_sliding.json").read_text())
    assert by_seed["val_bpb"] == pytest.approx(m["val_bpb"])
    assert (params.run_dir(5) / "logs" / "eval_sliding.log").is_file()

    missing = runner.invoke(cli.app, ["eval-ttt", "--artifact", str(tmp_path / "nope"), "--params",
                                      str(REPO / "params.yaml"), *sets])
    assert missing.exit_code == 2 and "nope" in missing.output and "not found" in missing.output
