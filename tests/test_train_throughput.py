"""bench/train_throughput.py: the step timer on random or host-loaded tokens, with its profile."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from golf.data import read_shard
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import train_throughput as tt

# the demo's params at the tiny size of tests/conftest.py (the timer and profiler do not depend on the size)
TINY = ["--set", "model.d_model=32", "--set", "model.headdim=16", "--set", "model.num_heads=2",
        "--set", "model.num_kv_heads=1", "--set", "model.bigram_dim=8", "--set", "model.chunk_size=8",
        "--set", "train.seq_len=32", "--set", "train.batch_tokens=256", "--set", "train.micro_batch_seqs=8"]


def test_cpu_run_with_profile_writes_its_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    out = tt.main([str(REPO / "params.yaml"), "--steps", "1", "--profile-steps", "1", "--label", "demo x=1",
                   "--set", "train.max_steps=5", *TINY])
    assert out["ms_per_step"] > 0 and out["tok_per_s"] > 0 and out["tokens_per_step"] == 256
    assert out["gpu_clock"] == {"unavailable": "device cpu is not CUDA"}  # golf.gpu_samples: no clock invented
    prof = out["profile"]
    assert prof["timeline"] == "CPU ops (self time)" and prof["steps"] == 1
    assert prof["ms_per_step"] == pytest.approx(sum(prof["by_family_ms"].values()), rel=1e-2, abs=0.05)
    assert any(t["name"] == "aten::mm" for t in prof["top"])  # the linear layers' matmuls ran and were seen
    assert json.loads((tmp_path / "throughput_demo-x-1.json").read_text())["profile"]["steps"] == 1
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "0"])


def test_the_clock_starts_after_the_warm_up_steps(monkeypatch):
    """The timed window holds only the timed steps: the optimizer graph's capture (the third step,
    golf.optim_graph) and the CUDA graphs' recording (the second) stay out of ms_per_step."""
    events: list[str] = []
    real_step, real_clock = tt.train_step, tt.time.perf_counter

    def counted_step(*a, **k):
        events.append("step")
        return real_step(*a, **k)

    def clock():
        events.append("clock")
        return real_clock()

    monkeypatch.setattr(tt, "train_step", counted_step)
    monkeypatch.setattr(tt, "time", SimpleNamespace(perf_counter=clock))  # the bench's readings only
    tt.main([str(REPO / "params.yaml"), "--steps", "2", *TINY])
    clocks = [i for i, e in enumerate(events) if e == "clock"]  # step 0's start and end, then the timed window's
    assert len(clocks) == 4
    timed_from = clocks[2]
    assert events[:timed_from].count("step") == tt.WARMUP_STEPS == 3
    assert events[timed_from:] == ["clock", "step", "step", "clock"]


def test_trace_needs_profiled_steps_and_a_new_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "1", "--trace", str(tmp_path / "t.json.gz")])
    assert "--trace" in capsys.readouterr().err
    (tmp_path / "kept.json.gz").write_text("a user's file")
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "1", "--profile-steps", "1", "--trace", str(tmp_path / "kept.json.gz")])
    assert "exists" in capsys.readouterr().err and (tmp_path / "kept.json.gz").read_text() == "a user's file"


def test_host_batches_are_the_token_loaders_windows(tmp_path):
    batches = tt.HostBatches(tmp_path, vocab=100, micro=4, seq_len=16, pinned=False)
    x, y = batches.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64 and not x.is_pinned()
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 100  # next-token targets from the shard
    shard = read_shard(tmp_path / "fineweb_train_000000.bin")
    row = x[0].numpy()
    candidates = np.flatnonzero(shard[:-16] == row[0])  # where the window could start
    assert any((shard[i:i + 16] == row).all() for i in candidates), "the batch's first window is not in the shard"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_pinned_host_batches_need_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tt.main([str(REPO / "params.yaml"), "--steps", "1", "--tokens", "pinned"])
    assert "--tokens pinned needs CUDA" in capsys.readouterr().err


def test_cpu_run_on_host_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    out = tt.main([str(REPO / "params.yaml"), "--steps", "1", "--tokens", "pageable", "--label", "host", *TINY])
    assert out["token_source"] == "pageable" and out["ms_per_step"] > 0 and out["last_loss"] > 0
