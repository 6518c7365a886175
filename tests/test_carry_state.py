"""train.carry_state: every batch row reads its own contiguous stream (golf.loaders.StreamLoader) and starts from the
recurrent state its previous window ended with (golf.train.CarriedStreams), detached; checkpoints keep the
streams and their states, so a resumed run ends with the uninterrupted run's weights."""

import itertools
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from golf import provenance
from golf.checkpoint import run_fingerprint
from golf.config import ConfigError, TrainConfig, load_params
from golf.data import list_shards, write_shard
from golf.errors import DataError
from golf.loaders import StreamLoader, TokenLoader
from golf.model import build_model
from golf.runtime import DistInfo
from golf.train import CarriedStreams, StatefulLoss
from tests.conftest import REPO, tiny_run_params, train_tiny

CARRY = ["train.carry_state=true"]


def _position_shards(tmp_path, cuts):
    """Shards whose concatenation is 0, 1, 2, ...: a token is its own position in the stream."""
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        paths.append(tmp_path / f"fineweb_train_{i:06d}.bin")
        write_shard(paths[-1], np.arange(a, b, dtype=np.uint16))
    return paths


# --------------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------------


def test_each_row_continues_its_own_stream_and_restarts_at_its_region_end(tmp_path):
    paths = _position_shards(tmp_path, [0, 700, 700, 1301, 2400])  # an empty shard; streams cross shard ends
    T, B, accum, world = 10, 3, 2, 2
    loaders = [StreamLoader(paths, T, B, accum, rank, world, seed=4) for rank in range(world)]
    region = 2400 // (B * accum * world)  # 200 tokens a stream
    assert all(ld.region == region and ld.num_streams == 12 for ld in loaders)
    last = {}  # (rank, micro) -> the previous x of those rows
    restarts = 0
    for call in range(2 * 40):  # 40 steps: every stream runs past its region's end at least once
        micro = call % accum
        for rank, ld in enumerate(loaders):
            x, y, restart = ld.next_batch()
            assert x.shape == y.shape == (B, T) and x.dtype == torch.int64 and restart.shape == (B,)
            assert torch.equal(x[:, 1:], y[:, :-1])
            streams = torch.arange(B) + (micro * world + rank) * B  # the stream numbering StreamLoader documents
            assert torch.equal(x[:, 0] // region, streams) and torch.equal(y[:, -1] // region, streams)
            prev = last.get((rank, micro))
            if prev is None:
                assert restart.all()  # every stream starts from a zero state
            else:
                cont = x[:, 0] == prev[:, -1] + 1  # starts with the token after the row's last input
                assert torch.equal(~cont, restart)
                assert torch.equal(x[restart, 0], streams[restart] * region)  # restart = the region's start
                restarts += int(restart.sum())
            last[(rank, micro)] = x
    assert restarts >= 12  # the restart path ran for every stream


def test_streams_do_not_depend_on_the_rank_count_and_resume_exactly(tmp_path):
    paths = _position_shards(tmp_path, [0, 5000])
    one = StreamLoader(paths, 16, 4, 2, 0, 1, seed=9)
    two = [StreamLoader(paths, 16, 2, 2, rank, 2, seed=9) for rank in range(2)]
    for _ in range(6):
        x1, _, r1 = one.next_batch()
        parts = [ld.next_batch() for ld in two]
        assert torch.equal(torch.cat([p[0] for p in parts]), x1) and torch.equal(torch.cat([p[2] for p in parts]), r1)
    assert torch.equal(two[1].state_dict()["pos"], two[0].state_dict()["pos"])  # every rank tracks every stream
    other = StreamLoader(paths, 16, 4, 2, 0, 1, seed=9)
    other.load_state_dict(one.state_dict())
    for _ in range(5):
        a, b = one.next_batch(), other.next_batch()
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(StreamLoader(paths, 16, 4, 2, seed=10).next_batch()[0], StreamLoader(
        paths, 16, 4, 2, seed=9).next_batch()[0])  # the seed places the streams


def test_too_little_data_for_the_streams_is_a_clear_error(tmp_path):
    paths = _position_shards(tmp_path, [0, 300])
    with pytest.raises(DataError, match=r"train.carry_state: .* 300 tokens, fewer than 16 streams x \(seq_len \+ 1\)"):
        StreamLoader(paths, 32, 8, 2)


def test_the_default_loader_draws_what_it_drew_before(tmp_path):
    """carry_state off keeps TokenLoader's random windows: for a seed, the same starts from the same generator."""
    paths = _position_shards(tmp_path, [0, 900, 3000])
    loader, gen = TokenLoader(paths, 24, 5, 1, 2, seed=11), torch.Generator().manual_seed(11)
    for _ in range(4):
        starts = torch.randint(0, 3000 - 25 + 1, (10,), generator=gen)[5:]  # rank 1's half of the global draw
        x, y = loader.next_batch()
        assert torch.equal(x[:, 0], starts) and torch.equal(y[:, -1], starts + 24)


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def test_attention_only_models_are_refused(tiny_env):
    _, _, ov = tiny_env
    with pytest.raises(ConfigError, match=r"'train.carry_state' in .*has no 'M' block"):
        load_params(REPO / "params.yaml", ov + CARRY + ["model.layer_pattern=AAA"])
    assert load_params(REPO / "params.yaml", ov + ["model.layer_pattern=AAA"]).train.carry_state is False
    assert TrainConfig().carry_state is False


def test_carry_state_is_in_the_fingerprint_so_a_checkpoint_of_the_other_setting_is_not_resumed(in_tiny, caplog):
    root, _, ov = in_tiny
    off, on = tiny_run_params(root, ov, "fp"), tiny_run_params(root, ov + CARRY, "fp")
    assert run_fingerprint(off, 1, 1, 8, 1, [])["train"]["carry_state"] is False
    assert run_fingerprint(on, 1, 1, 8, 1, [])["train"]["carry_state"] is True
    assert provenance.collect("train", on)["config"]["train"]["carry_state"] is True  # the stage's provenance.json
    part, _ = train_tiny(root, ov, 1, "fp", stop_after_steps=2)
    assert part == {"interrupted_at_step": 2}
    with caplog.at_level(logging.WARNING, logger="golf.checkpoint"):
        m, _ = train_tiny(root, ov + CARRY, 1, "fp", stop_after_steps=1)
    assert m == {"interrupted_at_step": 1}  # started over: step 1, not 3
    assert "train.carry_state: False -> True" in caplog.text


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def carried_reference(tiny_env):
    root, _, ov = tiny_env
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return train_tiny(root, ov + CARRY, 1, "carry_full")


def _same_weights(rd_a, rd_b) -> bool:
    wa, wb = (load_file(str(r / "train" / "model.safetensors")) for r in (rd_a, rd_b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_with_carried_state_runs_with_finite_losses(carried_reference):
    m, rd = carried_reference
    assert m["steps"] == 6 and np.isfinite(m["val_bpb"]) and 0 < m["val_bpb"] < 20
    losses = [float(r.split("\t")[4]) for r in (rd / "plots" / "train_curve.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 6 and all(np.isfinite(losses))


def _flat(states):
    return [states["prev_token"]] + [t for layer in states["layers"] if layer is not None for t in layer]


def test_each_step_starts_from_the_detached_states_the_last_one_ended_with(in_tiny, monkeypatch):
    root, _, ov = in_tiny
    calls = []  # per StatefulLoss call: (x, y, states in, states out), copies
    forward = StatefulLoss.forward

    def spy(self, x, targets, states):
        assert all(not t.requires_grad for t in _flat(states))  # no gradient reaches back into an earlier step
        loss, new = forward(self, x, targets, states)
        calls.append((x.clone(), targets.clone(), [t.clone() for t in _flat(states)],
                      [t.detach().clone() for t in _flat(new)]))
        return loss, new

    monkeypatch.setattr(StatefulLoss, "forward", spy)
    accum = 2  # micro_batch_seqs 4 of 8 sequences a step: each micro batch its own rows and states
    m, _ = train_tiny(root, ov + CARRY + ["train.micro_batch_seqs=4", "train.max_steps=4"], 1, "carry_spy")
    assert m["grad_accum"] == accum and len(calls) == 4 * accum
    for n, (x, _, st_in, st_out) in enumerate(calls):
        if n < accum:  # a stream's first window: zero states, no previous token
            assert (st_in[0] == -1).all() and all((t == 0).all() for t in st_in[1:])
            continue
        px, py, _, prev_out = calls[n - accum]  # the same micro batch one step earlier
        assert torch.equal(x[:, 0], py[:, -1])  # the row's stream continues: its last target is the next input
        assert len(st_in) == len(prev_out) == 1 + 2 * 2  # prev token + (conv, ssm) of the two M blocks of MAM
        assert all(torch.equal(a, b.to(a.dtype)) for a, b in zip(st_in, prev_out))
        assert torch.equal(st_in[0], px[:, -1])
        assert all(t.abs().sum() > 0 for t in st_in[1:])  # real states, not zeros passed along


def test_resume_restores_positions_and_states_to_identical_weights(carried_reference, in_tiny, monkeypatch):
    root, _, ov = in_tiny
    full, rf = carried_reference
    part, _ = train_tiny(root, ov + CARRY, 1, "carry_resumed", stop_after_steps=3)
    assert part == {"interrupted_at_step": 3}
    resumed, rr = train_tiny(root, ov + CARRY, 1, "carry_resumed")
    assert resumed["resumed_from_step"] == 3 and resumed["val_bpb"] == full["val_bpb"] and _same_weights(rf, rr)
    # the saved states matter: a resume from zero states (positions kept) ends elsewhere
    train_tiny(root, ov + CARRY, 1, "carry_zeroed", stop_after_steps=3)
    load = CarriedStreams.load_state_dict

    def zero_states(self, state):
        load(self, {**state, "states": [torch.full_like(t, -1) if t.dtype == torch.int64 else torch.zeros_like(t)
                                        for t in state["states"]]})

    monkeypatch.setattr(CarriedStreams, "load_state_dict", zero_states)
    zeroed, rz = train_tiny(root, ov + CARRY, 1, "carry_zeroed")
    assert zeroed["resumed_from_step"] == 3 and not _same_weights(rf, rz)


def test_a_compiled_stateful_loss_does_not_recompile_as_states_are_carried(in_tiny):
    """What the GPU's torch.compile sees, traced on the CPU (aot_eager: Dynamo and AOTAutograd, no Inductor):
    the carried buffers keep their shapes, dtypes and strides, so steps after the first reuse its graph."""
    _, params, _ = in_tiny
    torch.manual_seed(0)
    model = build_model(params.model)
    loader = StreamLoader(list_shards(params.data_dir(), "train"), 32, 4, 2, seed=0)  # two micro batches
    streams = CarriedStreams(loader, model, DistInfo(), torch.device("cpu"))
    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            net = torch.compile(StatefulLoss(model), backend="aot_eager")
            for _ in range(3 * 2):
                x, y, states = streams.next_batch()
                loss, new = net(x, y, states)
                loss.backward()
                streams.keep(new)
                assert torch.isfinite(loss)
    finally:
        torch._dynamo.reset()


_DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}]
import torch.distributed as dist
from conftest import train_tiny

root, ov = Path({root!r}), json.loads({ov!r})
os.chdir(root)
# every call stops with a checkpoint and keeps the process group (a finished call leaves it, for good)
out = {{"part": train_tiny(root, ov, 1, "ddp_resumed", stop_after_steps=3)[0],
        "full": train_tiny(root, ov, 1, "ddp_full", stop_after_steps=6)[0],
        "resumed": train_tiny(root, ov, 1, "ddp_resumed", stop_after_steps=3)[0]}}
if dist.get_rank() == 0:
    with open({out!r}, "w") as f:
        json.dump(out, f)
dist.barrier()
dist.destroy_process_group()
"""


def test_two_ranks_read_the_same_streams_and_resume_their_states(carried_reference, in_tiny, tmp_path):
    """Under DDP each rank carries its own rows' states; a checkpoint gathers them all and a resume hands each
    rank its own back (the same checkpoint after 3 + 3 steps as after 6). Two ranks follow the one-process loss
    curve: the same streams, split by rank."""
    import json

    from tests.conftest import run_two_rank_script

    root, _, ov = in_tiny
    _, rd1 = carried_reference
    run_two_rank_script(tmp_path, "carry_ddp.py",
                        _DDP_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root),
                                           ov=json.dumps(ov + CARRY), out=str(tmp_path / "rank0")),
                        tmp_path / "rank0", 300)
    out = json.loads((tmp_path / "rank0").read_text())
    assert out == {"part": {"interrupted_at_step": 3}, "full": {"interrupted_at_step": 6},
                   "resumed": {"interrupted_at_step": 6}}
    full, resumed = (torch.load(root / name / "1" / "ckpt" / "checkpoint.pt", weights_only=True)
                     for name in ("ddp_full", "ddp_resumed"))
    assert full["fingerprint"]["world_size"] == 2 and full["state"]["step"] == resumed["state"]["step"] == 6
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    states_f, states_r = full["loader"]["states"], resumed["loader"]["states"]
    assert len(states_f) == 5 and all(t.shape[0] == 8 for t in states_f)  # all 8 streams of both ranks
    assert all(torch.equal(a, b) for a, b in zip(states_f, states_r)) and states_f[2].abs().sum() > 0
    losses1 = [float(r.split("\t")[4]) for r in (rd1 / "plots" / "train_curve.tsv").read_text().splitlines()[1:]]
    assert [row[4] for row in full["curve"]] == pytest.approx(losses1, rel=1e-5)
