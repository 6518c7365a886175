"""Resuming interrupted training: in-process interruption, a SIGKILL during a checkpoint write, SIGTERM,
a corrupt checkpoint, a checkpoint from other settings. Resumed runs must end with the same weights,
bit for bit, as an uninterrupted run (CPU, step-only schedule)."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import golf.train
from golf.errors import TrainingError
from golf.train import CKPT_NAME
from tests.conftest import REPO, tiny_run_params, train_tiny

_params, _train = tiny_run_params, train_tiny


def _same_weights(rd_a, rd_b) -> bool:
    wa, wb = (load_file(str(r / "train" / "model.safetensors")) for r in (rd_a, rd_b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tiny_env):
    root, _, ov = tiny_env
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return _train(root, ov, 1, "full")


def test_in_process_interruption_resumes_to_identical_weights(reference, in_tiny):
    root, _, ov = in_tiny
    full, rf = reference
    part, rp = _train(root, ov, 1, "resumed", stop_after_steps=3)
    assert part == {"interrupted_at_step": 3} and (rp / "ckpt" / CKPT_NAME).is_file()
    resumed, rp = _train(root, ov, 1, "resumed")
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == full["steps"] == 6
    assert resumed["val_bpb"] == full["val_bpb"] and resumed["tokens"] == full["tokens"]
    assert _same_weights(rf, rp)
    def curve(rd):  # every column but train_s (time) must match: the curve survives the interruption
        rows = (rd / "plots" / "train_curve.tsv").read_text().splitlines()
        return [r.split("\t")[:2] + r.split("\t")[3:] for r in rows]

    assert curve(rp) == curve(rf) and len(curve(rf)) == 7  # header + 6 steps
    # a rerun of a finished seed trains nothing and reproduces the same output
    again, rp = _train(root, ov, 1, "resumed")
    assert again["resumed_from_step"] == 6 and again["val_bpb"] == full["val_bpb"] and _same_weights(rf, rp)


def test_failed_checkpoint_write_keeps_the_previous_one(reference, in_tiny):
    root, _, ov = in_tiny
    _, rf = reference
    _train(root, ov, 1, "torn", stop_after_steps=2)
    ckpt = root / "torn" / "1" / "ckpt" / CKPT_NAME
    before = ckpt.read_bytes()

    def torn_save(obj, f, *a, **k):  # half a file, then the process "dies"
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(golf.train.torch, "save", torn_save)
        _train(root, ov, 1, "torn", stop_after_steps=1)
    assert ckpt.read_bytes() == before and [p.name for p in ckpt.parent.iterdir()] == [CKPT_NAME]
    resumed, rt = _train(root, ov, 1, "torn")
    assert resumed["resumed_from_step"] == 2 and _same_weights(rf, rt)


def test_corrupt_checkpoint_is_a_clear_error(in_tiny):
    root, _, ov = in_tiny
    ckpt = root / "corrupt" / "1" / "ckpt" / CKPT_NAME
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=r"checkpoint .*checkpoint\.pt.* cannot be read.*delete it"):
        _train(root, ov, 1, "corrupt")


def test_checkpoint_from_other_settings_is_not_resumed(in_tiny, caplog):
    root, _, ov = in_tiny
    _train(root, ov, 1, "changed", stop_after_steps=3)
    with caplog.at_level(logging.WARNING, logger="golf.checkpoint"):
        m, _ = _train(root, ov + ["train.lr_matrix=0.03"], 1, "changed")
    assert m["resumed_from_step"] == -1 and m["steps"] == 6
    assert "train.lr_matrix: 0.02 -> 0.03" in caplog.text and "starting over" in caplog.text


def _cli(root, name, overrides, prelude=""):
    """`python cli.py train --seed 1` in a fresh process; `prelude` runs first (to inject a signal)."""
    args = ["train", "--seed", "1", "--params", str(REPO / "params.yaml")]
    for o in overrides + [f"runs_dir={root / name}"]:
        args += ["--set", o]
    code = (f"import runpy, sys\n{prelude}\nsys.argv = ['cli.py'] + {args!r}\n"
            f"runpy.run_path({str(REPO / 'cli.py')!r}, run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="120")
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


# In the child process: the 2nd checkpoint write (step 4) is torn and the process SIGKILLed mid-write.
_KILL_IN_WRITE = """
import os, signal, torch
_real_save, _n = torch.save, [0]
def _save(obj, f, *a, **k):
    _n[0] += 1
    if _n[0] == 2:
        open(f, 'wb').write(b'partial')
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_save(obj, f, *a, **k)
torch.save = _save
"""

# In the child process: SIGTERM arrives right after the first checkpoint this process writes.
_TERM_AFTER_CKPT = """
import os, signal, golf.train
_real = golf.train.save_checkpoint
def _save(*a, **k):
    _real(*a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
golf.train.save_checkpoint = _save
"""


@pytest.mark.parametrize("runahead, stop_step", [(True, 6), (False, 5)])
def test_killed_then_terminated_cli_run_resumes_to_identical_weights(reference, in_tiny, runahead, stop_step):
    """SIGKILL inside the step-4 checkpoint write, rerun, SIGTERM after its step-4 checkpoint, rerun: the
    final weights equal the uninterrupted run's. The SIGTERM is seen when step 5's loss is read: at once
    without host_runahead, after step 6 is launched with it; the checkpoint holds every launched step."""
    root, _, ov = in_tiny
    ov = ov + [f"train.host_runahead={str(runahead).lower()}"]
    _, rf = reference
    name = f"signals_{runahead}"
    rd = root / name / "1"
    killed = _cli(root, name, ov, _KILL_IN_WRITE)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(rd / "ckpt" / CKPT_NAME, weights_only=True)["state"]["step"] == 2  # the old one survived
    assert not (rd / "train" / "model.safetensors").exists()

    termed = _cli(root, name, ov, _TERM_AFTER_CKPT)  # resumes at 2; SIGTERM after the step-4 checkpoint
    assert termed.returncode == 2, termed.stderr[-2000:]
    assert f"interrupted by SIGTERM after step {stop_step}" in " ".join(termed.stderr.split())
    assert torch.load(rd / "ckpt" / CKPT_NAME, weights_only=True)["state"]["step"] == stop_step
    assert not (rd / "train" / "model.safetensors").exists()

    rerun = _cli(root, name, ov)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _same_weights(rf, rd)
