"""Several processes from params: the CLI relaunches distributed stages under torchrun (golf/launch.py).

The end-to-end test runs the real CLI on the tiny config with 2 CPU processes (gloo) and checks what issue 8
asks of N-GPU runs: training sees world size 2 and follows the 1-process loss curve (same global batch, only
the reduction order differs), and the eval BPB of one artifact is the same on 1 and 2 processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, skip_without_gloo

from golf.config import ConfigError, LaunchConfig, load_params
from golf.launch import launch_env, relaunch_under_torchrun, torchrun_command


def test_torchrun_command_one_node_and_several():
    one = torchrun_command(LaunchConfig(nproc_per_node=4), "cli.py", ["train", "--seed", "1"])
    assert one[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in one and "--standalone" in one
    assert one[-4:] == ["cli.py", "train", "--seed", "1"]
    two = torchrun_command(LaunchConfig(nproc_per_node=8, nnodes=2, rdzv_endpoint="node0:29400", rdzv_id="r1"),
                           "cli.py", ["eval-sliding", "--seed", "3"])
    assert "--standalone" not in two
    for arg in ("--nproc_per_node=8", "--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=node0:29400",
                "--rdzv_id=r1"):
        assert arg in two
    assert LaunchConfig(nproc_per_node=8, nnodes=2).world_size == 16


def test_launch_settings_are_checked():
    with pytest.raises(ConfigError, match="'launch.rdzv_endpoint'.*nnodes is 2"):
        load_params(REPO / "params.yaml", ["launch.nnodes=2"])
    with pytest.raises(ConfigError, match="'launch.rdzv_endpoint'.*host:port"):
        load_params(REPO / "params.yaml", ["launch.rdzv_endpoint=node0"])
    with pytest.raises(ConfigError, match="'launch.nproc_per_node'.*>= 1"):
        load_params(REPO / "params.yaml", ["launch.nproc_per_node=0"])


def test_multicast_stays_off_unless_the_caller_chose(monkeypatch):
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)
    assert launch_env()["NCCL_NVLS_ENABLE"] == "0"
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    assert launch_env()["NCCL_NVLS_ENABLE"] == "1"


def test_no_relaunch_for_one_process_or_inside_a_worker(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert relaunch_under_torchrun(LaunchConfig(), "cli.py", ["train"]) is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # a torchrun worker runs the stage itself
    assert relaunch_under_torchrun(LaunchConfig(nproc_per_node=2), "cli.py", ["train"]) is None


def _cli(root, overrides, *args, timeout=300):
    cmd = [sys.executable, str(REPO / "cli.py"), *args, "--params", str(REPO / "params.yaml")]
    for ov in overrides:
        cmd += ["--set", ov]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _losses(run_dir):
    with open(run_dir / "plots" / "train_curve.tsv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f, delimiter="\t") if r["train_loss"]]


def test_cli_stages_on_two_processes_match_one(tiny_env):
    root, _, overrides = tiny_env
    one = overrides + [f"runs_dir={root / 'launch1'}"]
    two = overrides + [f"runs_dir={root / 'launch2'}", "launch.nproc_per_node=2"]
    skip_without_gloo()  # probed once; past this, any failure of the two-process run is a failure
    for ov in (one, two):
        r = _cli(root, ov, "train", "--seed", "5")
        assert r.returncode == 0, r.stderr[-3000:]
    m1 = json.loads((root / "launch1/5/metrics/train.json").read_text())
    m2 = json.loads((root / "launch2/5/metrics/train.json").read_text())
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m1["steps"] == m2["steps"] == 6 and m1["tokens"] == m2["tokens"]
    l1, l2 = _losses(root / "launch1/5"), _losses(root / "launch2/5")
    assert len(l1) == len(l2) >= 6
    assert l2 == pytest.approx(l1, rel=1e-5)  # same global batches; only the reduction order differs

    for stage in ("hessian", "quantize", "package"):
        r = _cli(root, two, stage, "--seed", "5")
        assert r.returncode == 0, (stage, r.stderr[-3000:])
    assert json.loads((root / "launch2/5/metrics/hessian.json").read_text())["world_size"] == 2
    r = _cli(root, two, "eval-sliding", "--seed", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    e2 = json.loads((root / "launch2/5/metrics/eval_sliding.json").read_text())
    r = _cli(root, two[:-1], "eval-sliding", "--seed", "5")  # the same artifact on one process
    assert r.returncode == 0, r.stderr[-3000:]
    e1 = json.loads((root / "launch2/5/metrics/eval_sliding.json").read_text())
    prov = json.loads((root / "launch2/5/metrics/eval_sliding.provenance.json").read_text())
    assert prov["world_size"] == 1
    assert e1["tokens"] == e2["tokens"] and e1["bytes"] == e2["bytes"]
    assert abs(e1["val_bpb"] - e2["val_bpb"]) < 1e-6 and abs(e1["plain_val_bpb"] - e2["plain_val_bpb"]) < 1e-6


def test_pipeline_hands_distributed_stages_to_the_cli(monkeypatch, tmp_path):
    from golf import launch
    from golf.errors import GolfError

    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, check: calls.append(cmd) or Done())
    launch.run_cli_stage("eval_sliding", 3, tmp_path / "p.yaml", ["launch.nproc_per_node=2"])
    cmd = calls[0]
    assert cmd[0] == sys.executable and cmd[1].endswith("cli.py")
    assert cmd[2:] == ["eval-sliding", "--seed", "3", "--params", str(tmp_path / "p.yaml"),
                       "--set", "launch.nproc_per_node=2"]
    Done.returncode = 1
    with pytest.raises(GolfError, match="stage train \\(seed 3\\) failed with exit code 1"):
        launch.run_cli_stage("train", 3, tmp_path / "p.yaml", [])
