"""Calibration: hooks add XᵀX per nn.Linear, exact sequence counts, train shards only (never val), self-sampled
sequences, the distributed all-reduce (2 CPU processes), and the saved file."""

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_two_rank_script
from torch import nn

import golf.data
import golf.hessian
from golf.config import CalibConfig
from golf.data import BOS_ID, write_shard
from golf.errors import GolfError
from golf.hessian import (
    _my_share,
    calibrate,
    collect_hessians,
    load_hessians,
    sampled_batches,
    save_hessians,
    train_batches,
)

V = 64


class StandInLM(nn.Module):
    """Embedding → two linears → head: (B, T) ids → (B, T, V) logits, the interface calibration needs."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.fc = nn.Linear(16, 24)
        self.proj = nn.Linear(24, 16, bias=False)
        self.head = nn.Linear(16, V, bias=False)

    def forward(self, ids):
        x = self.emb(ids)  # (B, T, 16)
        x = x + self.proj(torch.relu(self.fc(x)))
        return self.head(x)  # (B, T, V)


def _inputs(model, batches):
    """The inputs each linear sees, gathered independently of the hook code: (tokens, in) per module."""
    seen = {n: [] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        for ids in batches:
            x = model.emb(ids)
            seen["fc"].append(x.reshape(-1, 16))
            hid = torch.relu(model.fc(x))
            seen["proj"].append(hid.reshape(-1, 24))
            seen["head"].append((x + model.proj(hid)).reshape(-1, 16))
    return {n: torch.cat(v) for n, v in seen.items()}


def test_hooks_add_xtx_for_every_linear():
    torch.manual_seed(0)
    m = StandInLM()
    batches = [torch.randint(0, V, (3, 10)) for _ in range(4)]
    hess, n = collect_hessians(m, batches, "cpu")
    assert n == 120 and set(hess) == {"fc", "proj", "head"}
    for name, x in _inputs(m, batches).items():
        assert hess[name].dtype == torch.float32
        torch.testing.assert_close(hess[name], x.T @ x, rtol=1e-5, atol=1e-4)
    assert m.training and not m.fc._forward_hooks  # hooks removed, mode restored


def _data_dir(root: Path, n_train_shards=2, tokens=3000) -> Path:
    d = root / "data"
    rng = np.random.default_rng(0)
    for i in range(n_train_shards):
        write_shard(d / f"fineweb_train_{i:06d}.bin", rng.integers(0, V, tokens))
    # a validation shard that would fail to read: any attempt to use it raises DataError
    (d / "fineweb_val_000000.bin").write_bytes(b"\x00" * 17)
    return d


def test_calibration_reads_train_shards_only(tmp_path, monkeypatch):
    data = _data_dir(tmp_path)
    splits, read = [], []
    real_list, real_read, real_header = golf.data.list_shards, golf.data.read_shard, golf.data.read_shard_header

    def spy_list(d, split):
        splits.append(split)
        return real_list(d, split)

    def spy_read(p):
        read.append(Path(p).name)
        return real_read(p)

    def spy_header(p):
        read.append(Path(p).name)
        return real_header(p)

    monkeypatch.setattr(golf.hessian, "list_shards", spy_list)
    monkeypatch.setattr(golf.hessian, "read_shard_header", spy_header)
    monkeypatch.setattr(golf.data, "read_shard", spy_read)
    cfg = CalibConfig(source="train", num_sequences=10, seq_len=16, batch_seqs=4, seed=3)
    _, info = calibrate(StandInLM(), data, cfg, "cpu")
    assert splits == ["train"] and read and all("_train_" in f for f in read)
    assert info["samples"] == 10 and info["tokens"] == 160 and info["layers"] == 3
    assert set(info) >= {"layers", "samples", "tokens", "secs"}


def test_warm_up_runs_one_eval_forward_outside_the_timed_calibration(tmp_path):
    """calibrate's warm-up (the eval-mode kernels compile there) runs once, before the clock, on zeros at the first
    batch's shape; its seconds are reported apart and its tokens add nothing to the Hessians."""
    torch.manual_seed(0)
    data = _data_dir(tmp_path)
    m = StandInLM().train()
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append((args[0].clone(), mod.training)))
    cfg = CalibConfig(source="train", num_sequences=6, seq_len=16, batch_seqs=4, seed=3)
    hess, info = calibrate(m, data, cfg, "cpu")
    assert m.training  # restored
    (first, first_training), rest = seen[0], seen[1:]
    assert first.shape == (4, 16) and not first.any() and not first_training
    assert [x.shape for x, _ in rest] == [(4, 16), (2, 16)]
    assert info["tokens"] == 96 and info["warmup_s"] >= 0 and info["secs"] >= 0
    expect, _ = collect_hessians(m, [x for x, _ in rest], "cpu")
    for name in expect:
        torch.testing.assert_close(hess[name], expect[name])
    # a rank with fewer sequences than a batch warms up at its own share
    assert golf.hessian.warm_up(m, CalibConfig(num_sequences=3, seq_len=8, batch_seqs=4), "cpu", rank=1, world=2) >= 0
    assert seen[-1][0].shape == (1, 8)


def test_calibration_code_can_only_name_the_train_split():
    """Structural: the only shard listing in the calibration code asks for the constant "train"; the string
    "val" appears nowhere in it, so no params value can route validation data into calibration."""
    for path in (REPO / "golf" / "hessian.py", REPO / "stages" / "hessian.py"):
        tree = ast.parse(path.read_text())
        consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert "val" not in consts, path
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            f = call.func
            if (isinstance(f, ast.Name) and f.id == "list_shards") or \
                    (isinstance(f, ast.Attribute) and f.attr == "list_shards"):
                assert isinstance(call.args[1], ast.Constant) and call.args[1].value == "train", path


def test_exact_sequence_counts_and_disjoint_rank_shares(tmp_path):
    data = _data_dir(tmp_path)
    cfg = CalibConfig(num_sequences=10, seq_len=16, batch_seqs=4)
    assert [b.shape for b in train_batches(data, cfg)] == [(4, 16), (4, 16), (2, 16)]
    assert [_my_share(10, r, 3) for r in range(3)] == [4, 3, 3]
    r0 = torch.cat(list(train_batches(data, cfg, 0, 2)))
    r1 = torch.cat(list(train_batches(data, cfg, 1, 2)))
    assert r0.shape == r1.shape == (5, 16)
    assert not any(torch.equal(a, b) for a in r0 for b in r1)  # ranks calibrate on different windows


def test_self_sampled_calibration_needs_no_data(tmp_path):
    torch.manual_seed(0)
    m = StandInLM()
    cfg = CalibConfig(source="self", num_sequences=5, seq_len=12, batch_seqs=2, temperature=0.8, seed=1)
    seqs = list(sampled_batches(m, cfg, "cpu"))
    assert [s.shape for s in seqs] == [(2, 12), (2, 12), (1, 12)]
    assert all((s[:, 0] == BOS_ID).all() and s.max() < V for s in seqs)
    again = list(sampled_batches(m, cfg, "cpu"))
    assert all(torch.equal(a, b) for a, b in zip(seqs, again))  # seeded
    _, info = calibrate(m, tmp_path / "no_such_data", cfg, "cpu")
    assert info["samples"] == 5 and info["tokens"] == 60 and info["source"] == "self"
    greedy = next(sampled_batches(m, CalibConfig(source="self", num_sequences=2, seq_len=6, batch_seqs=2,
                                                 temperature=0.0), "cpu"))
    with torch.no_grad():
        assert torch.equal(greedy[:, 1], m(greedy[:, :1])[:, -1].argmax(-1))


def test_save_and_load_hessians(tmp_path):
    h = {"a.fc": torch.randn(4, 4), "b": torch.eye(3)}
    save_hessians(tmp_path / "h.safetensors", h, 1234, 7, "train")
    back, meta = load_hessians(tmp_path / "h.safetensors")
    assert meta["tokens"] == "1234" and meta["sequences"] == "7" and meta["source"] == "train"
    assert all(torch.equal(back[k], h[k]) for k in h)
    with pytest.raises(GolfError, match="not found"):
        load_hessians(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.eye(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(GolfError, match="format"):
        load_hessians(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(GolfError, match="junk.safetensors"):
        load_hessians(tmp_path / "junk.safetensors")


_DIST_SCRIPT = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_hessian import StandInLM
from golf.hessian import collect_hessians
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = StandInLM()
g = torch.Generator().manual_seed(100 + rank)
batches = [torch.randint(0, 64, (2, 8), generator=g) for _ in range(2 + rank)]  # unequal shares
hess, n = collect_hessians(model, batches, "cpu")
if rank == 0:
    json.dump({{"n": n, "h": {{k: v.tolist() for k, v in hess.items()}}}}, open({out!r}, "w"))
dist.destroy_process_group()
"""


def test_distributed_calibration_all_reduces_hessians_and_counts(tmp_path):
    out = tmp_path / "rank0.json"
    run_two_rank_script(tmp_path, "calib_dist.py",
                        _DIST_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out)), out, 180)
    res = json.loads(out.read_text())
    torch.manual_seed(0)
    model = StandInLM()
    batches = []
    for rank in (0, 1):
        g = torch.Generator().manual_seed(100 + rank)
        batches += [torch.randint(0, 64, (2, 8), generator=g) for _ in range(2 + rank)]
    hess, n = collect_hessians(model, batches, "cpu")  # one process over the union of both shares
    assert res["n"] == n == 80
    for k, h in hess.items():
        torch.testing.assert_close(torch.tensor(res["h"][k]), h, rtol=1e-5, atol=1e-4)
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
