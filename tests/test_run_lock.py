"""One writer per run folder (issue 25 item 5): a second stage on the same runs/<seed>/ fails at once with
one line; the lock goes with its holder, however the holder ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from golf.locks import LOCK_FILE, RunLockedError, run_folder_lock
from tests.conftest import REPO

HOLD = """
import sys, time
from golf.locks import run_folder_lock
with run_folder_lock(sys.argv[1], "train"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("stage", ["train", "hessian", "quantize", "package", "eval-sliding", "eval-ttt"])
def test_second_writer_of_a_run_folder_gets_one_line(in_tiny, tmp_path, stage):
    import cli

    _, _, overrides = in_tiny
    run_dir = tmp_path / "runs" / "1"
    holder = _holder(run_dir)
    try:
        args = [stage, "--seed", "1", "--params", str(REPO / "params.yaml")]
        for o in [*overrides, f"runs_dir={tmp_path / 'runs'}"]:
            args += ["--set", o]
        r = CliRunner().invoke(cli.app, args)
        assert r.exit_code == 2, r.output
        text = " ".join(r.output.split())
        assert f"is in use by train (pid {holder.pid})" in text and "Traceback" not in r.output
        # the second one wrote no output: only its stage log, which records the refusal
        assert sorted(p.name for p in run_dir.iterdir()) == sorted([LOCK_FILE, "logs"])
        log = (run_dir / "logs" / f"{stage.replace('-', '_')}.log").read_text()
        assert "is in use by train" in " ".join(log.split())
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_holder_is_not_stale(tmp_path):
    holder = _holder(tmp_path / "runs" / "1")
    with pytest.raises(RunLockedError, match="in use by train"), run_folder_lock(tmp_path / "runs" / "1", "hessian"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t0 = time.time()
    with run_folder_lock(tmp_path / "runs" / "1", "hessian"):  # the kernel dropped the dead holder's lock
        pass
    assert time.time() - t0 < 5
    with run_folder_lock(tmp_path / "runs" / "1", "train"):  # and released on a normal exit too
        pass
