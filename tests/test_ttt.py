"""Score-first TTT: the ordering is proven from the outside (an instrumented model and optimizer), the reported
score is the pre-update score (a model that memorizes), parameter subsets, torchrun behaviour, the stage."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from test_evaluate import GRULM, _golflm, _params, tables, write_artifact
from torch import nn

from golf import ttt as ttt_mod
from golf.config import TTTConfig
from golf.errors import GolfError
from golf.evaluate import eval_bpb
from golf.ttt import adapt_params, chunk_lr, ttt_eval

CPU = torch.device("cpu")
VB = 256  # vocab of the tests whose tokens are all distinct (a token id identifies its position)


def distinct_tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(VB, generator=torch.Generator().manual_seed(seed))[:n]


class BigramLM(nn.Module):
    """logits = table[previous token]: it can memorize every transition it is trained on, and training on
    one transition changes only that row, so it cannot help a transition from another token."""

    def __init__(self, vocab: int = VB):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab, vocab, dtype=torch.float64))

    def forward(self, ids):
        return self.table[ids]  # (B, T, V)


class Recorder(nn.Module):
    """Wraps a model; logs every forward as (grad enabled, first input position, last input position)."""

    def __init__(self, inner: nn.Module, tokens: torch.Tensor, log: list):
        super().__init__()
        self.inner, self.log = inner, log
        self.pos_of = torch.full((VB,), -1, dtype=torch.long)
        self.pos_of[tokens] = torch.arange(tokens.numel())

    def forward(self, ids):
        pos = self.pos_of[ids.cpu()]  # (B, T) positions in the stream
        assert (pos >= 0).all()
        for row in pos:  # each window is a contiguous run of the stream
            assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + row.numel()))
            self.log.append(("fwd", torch.is_grad_enabled(), int(row[0]), int(row[-1])))
        return self.inner(ids)


def cfg(**kw) -> TTTConfig:
    base = {"chunk_tokens": 60, "seq_len": 8, "stride": 0, "lr": 0.05, "momentum": 0.9, "epochs": 1, "batch_seqs": 3,
            "params": "all", "grad_clip": 1.0}
    return TTTConfig(**{**base, **kw})


# the production geometry is a chunk that is a multiple of seq_len (32,768 = 16 x 2,048): there a training
# window shifted by one token reaches exactly one target into the next, still unscored, chunk
PRODUCTION_GEOMETRY = [{"chunk_tokens": 64, "seq_len": 8}, {"chunk_tokens": 32, "seq_len": 16, "batch_seqs": 2}]


@pytest.mark.parametrize("kw", [{}, {"stride": 3, "epochs": 2}, {"chunk_tokens": 20, "seq_len": 16, "batch_seqs": 1},
                                *PRODUCTION_GEOMETRY])
def test_every_token_is_scored_before_any_update_that_trains_on_it(monkeypatch, kw):
    log: list = []
    real_step = torch.optim.SGD.step

    def logged_step(self, *a, **k):
        log.append(("step",))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", logged_step)
    toks = distinct_tokens(200, seed=1)
    model = Recorder(GRULM(vocab=VB, d=8), toks, log)
    c = cfg(**kw)
    out = ttt_eval(model, toks, tables(VB), c, CPU)
    assert out["tokens"] == 199

    predicted = 0  # every target <= predicted has had its logits computed under no_grad
    pending: list[tuple[int, int]] = []  # training windows since the last optimizer step
    trained_max, steps = 0, 0
    for ev in log:
        if ev[0] == "fwd" and not ev[1]:
            _, _, lo, hi = ev
            assert lo <= predicted + 1 or predicted == 0, "scoring windows must not skip ahead"
            predicted = max(predicted, hi + 1)  # inputs lo..hi predict targets lo+1..hi+1
        elif ev[0] == "fwd":
            _, _, lo, hi = ev
            # conservatively, a training window on inputs lo..hi may use targets up to hi+1
            assert hi + 1 <= predicted, f"trained on targets up to {hi + 1} before scoring past {predicted}"
            pending.append((lo, hi))
            trained_max = max(trained_max, hi + 1)
        else:
            assert pending, "an optimizer step without a training forward"
            pending, steps = [], steps + 1
    assert predicted == 199 and steps == out["adapt_steps"] > 0
    last_chunk_start = (199 - 1) // c.chunk_tokens * c.chunk_tokens + 1
    assert trained_max < last_chunk_start  # the last chunk is scored but never trained on


@pytest.mark.parametrize("kw", [{}, *PRODUCTION_GEOMETRY])
def test_events_log_agrees_with_the_order(kw):
    events: list = []
    toks = torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(2))
    ttt_eval(GRULM(), toks, tables(), cfg(**kw), CPU, events=events)
    scored = set()
    assert [e for e in events if e[0] == "score"][-1][2] == 299
    for kind, lo, hi in events:
        if kind == "score":
            assert not scored & set(range(lo, hi + 1))  # each target scored once
            scored |= set(range(lo, hi + 1))
        else:
            assert set(range(lo, hi + 1)) <= scored, f"adapted on {lo}..{hi} before scoring it"
    assert scored == set(range(1, 300))


def test_reported_score_is_the_pre_update_score_of_a_model_that_memorizes():
    toks = distinct_tokens(201, seed=3)  # every transition is new: nothing learned on chunk i helps chunk i+1
    tab = tables(VB)
    c = cfg(chunk_tokens=50, seq_len=10, lr=500.0, momentum=0.0, grad_clip=0.0, batch_seqs=5)
    base = ttt_eval(BigramLM(), toks, tab, c, CPU, adapt=False)
    model = BigramLM()
    got = ttt_eval(model, toks, tab, c, CPU)
    assert got["adapt_steps"] > 0
    assert got["val_loss"] == pytest.approx(base["val_loss"], rel=1e-12)
    assert got["val_bpb"] == pytest.approx(base["val_bpb"], rel=1e-12)
    # yet training on a chunk visibly changes that chunk's own score: scoring chunk 0 after adapting on it
    # (which score-first TTT never does) gives a far lower loss than the reported one
    after = eval_bpb(model, toks[:51], tab, 10, 8)
    before = eval_bpb(BigramLM(), toks[:51], tab, 10, 8)
    assert after["val_loss"] < before["val_loss"] - 1.0


def test_adaptation_helps_later_chunks_when_text_repeats():
    a = distinct_tokens(100, seed=4)
    toks = torch.cat([a, a])  # the second copy repeats the first copy's transitions
    c = cfg(chunk_tokens=50, seq_len=10, lr=500.0, momentum=0.0, grad_clip=0.0, batch_seqs=5)
    base = ttt_eval(BigramLM(), toks, tables(VB), c, CPU, adapt=False)
    got = ttt_eval(BigramLM(), toks, tables(VB), c, CPU)
    assert got["tokens"] == base["tokens"] == 199
    assert got["val_loss"] < base["val_loss"] - 0.5


@pytest.mark.parametrize("which,key", [("norms", None), ("ssm", ".mixer."), ("mlp", ".mlp.")])
def test_only_the_chosen_parameters_adapt(which, key):
    m = _golflm("MAM", bigram=16)
    chosen = {n for n, _ in adapt_params(m, which)}
    assert chosen and chosen != {n for n, _ in m.named_parameters()}
    if key:
        assert all(key in n for n in chosen)
    else:
        assert all(n.endswith(("_scale", "resid_mix", "skip_weights", "norm_weight", "q_gain")) for n in chosen)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    toks = torch.randint(0, 40, (200,), generator=torch.Generator().manual_seed(5))
    ttt_eval(m, toks, tables(), cfg(params=which, lr=0.5), CPU)
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= chosen
    assert all(p.requires_grad and p.grad is None for p in m.parameters())  # the model is left as found


@pytest.mark.parametrize("which", ["dynamics", "dynamics_norms"])
def test_the_dynamics_subsets_adapt_the_mixers_dynamics(which):
    m = _golflm("MAM", bigram=16)
    chosen = {n for n, _ in adapt_params(m, which)}
    dynamics = {n for n in chosen if n.rsplit("mixer.", 1)[-1] in ("A_log", "dt_bias", "D", "conv1d.weight",
                                                                     "conv1d.bias")}
    assert len(dynamics) == 2 * 5  # two M blocks, five dynamics tensors each
    norms = {n for n, _ in adapt_params(m, "norms")}
    assert chosen == (dynamics if which == "dynamics" else dynamics | norms)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    toks = torch.randint(0, 40, (200,), generator=torch.Generator().manual_seed(5))
    ttt_eval(m, toks, tables(), cfg(params=which, lr=0.5), CPU)
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed & dynamics and changed <= chosen


def test_cosine_schedule_falls_from_lr_to_zero_over_the_adapted_chunks():
    c = cfg(lr=0.2, lr_schedule="cosine")
    lrs = [chunk_lr(c, i, 4) for i in range(4)]
    assert lrs[0] == pytest.approx(0.2) and lrs[2] == pytest.approx(0.1)
    assert all(a > b > 0 for a, b in itertools.pairwise(lrs))
    assert [chunk_lr(cfg(lr=0.2), i, 4) for i in range(4)] == [0.2] * 4  # constant: the default


def test_cosine_schedule_reaches_the_optimizer(monkeypatch):
    seen = []
    real = ttt_mod._adapt_on_chunk

    def spy(model, opt, *args, **kw):
        seen.append(opt.param_groups[0]["lr"])
        return real(model, opt, *args, **kw)

    monkeypatch.setattr(ttt_mod, "_adapt_on_chunk", spy)
    toks = torch.randint(0, 40, (241,), generator=torch.Generator().manual_seed(5))
    ttt_eval(GRULM(), toks, tables(), cfg(lr=0.1, lr_schedule="cosine"), CPU)  # 4 chunks of 60: 3 adapted
    assert seen == pytest.approx([0.1, 0.075, 0.025])


def test_bad_settings_fail_clearly():
    with pytest.raises(GolfError, match="selects no parameters"):
        adapt_params(_golflm("AA"), "ssm")
    with pytest.raises(GolfError, match="ttt.stride"):
        ttt_eval(GRULM(), torch.randint(0, 40, (100,)), tables(), cfg(stride=9), CPU)


# --------------------------------------------------------------------------------------------------
# torchrun: each rank scores a share, gradients are all-reduced, weights stay identical
# --------------------------------------------------------------------------------------------------

_DIST_SCRIPT = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from test_evaluate import GRULM, tables
from test_ttt import cfg
from golf.evaluate import eval_bpb
from golf.ttt import ttt_eval
dist.init_process_group("gloo")
toks = torch.randint(0, 40, (301,), generator=torch.Generator().manual_seed(6))
m = GRULM()
ev = eval_bpb(m, toks, tables(), 16, 3, stride=5)
tt = ttt_eval(m, toks, tables(), cfg(), torch.device("cpu"))
w = torch.cat([p.detach().flatten() for p in m.parameters()]).tolist()
json.dump({{"eval": ev, "ttt": tt, "w": w}}, open({out!r} + str(dist.get_rank()), "w"))
dist.destroy_process_group()
"""


def test_torchrun_two_ranks_match_one_process(tmp_path):
    from conftest import REPO, run_two_rank_script

    out = tmp_path / "rank"
    run_two_rank_script(tmp_path, "ttt_dist.py",
                        _DIST_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out)),
                        tmp_path / "rank0", 240)
    r0, r1 = (json.loads((tmp_path / f"rank{i}").read_text()) for i in (0, 1))
    assert r0["w"] == r1["w"]  # identical weights on every rank after adaptation
    toks = torch.randint(0, 40, (301,), generator=torch.Generator().manual_seed(6))
    m = GRULM()
    ev = eval_bpb(m, toks, tables(), 16, 3, stride=5)
    tt = ttt_eval(m, toks, tables(), cfg(), CPU)
    for res in (r0, r1):
        assert res["eval"]["tokens"] == ev["tokens"] and res["eval"]["bytes"] == ev["bytes"]
        assert res["eval"]["val_bpb"] == pytest.approx(ev["val_bpb"], rel=1e-9)
        assert res["ttt"]["tokens"] == tt["tokens"] == 300 and res["ttt"]["adapt_steps"] == tt["adapt_steps"]
        assert res["ttt"]["val_bpb"] == pytest.approx(tt["val_bpb"], rel=1e-7)
    w = torch.cat([p.detach().flatten() for p in m.parameters()])
    # two ranks sum the fp64 gradients in another order than one process, and the strongly weighted GRU's
    # recurrence amplifies that rounding through the adaptation steps: on 2026-12-01's machine (the CI kind) one
    # weight of 2,952 ended 2.6e-9 away (3e-7 relative), the rest within 1e-9 (the weights' scale is 0.6)
    torch.testing.assert_close(torch.tensor(r0["w"], dtype=torch.float64), w, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------


def test_eval_ttt_stage_writes_score_and_baseline(in_tiny, tmp_path):
    from stages import eval_ttt

    params = _params(in_tiny, tmp_path, "ttt.lr=0.01")
    write_artifact(params, 1)
    m = eval_ttt.run(params, 1)
    metrics_dir = params.run_dir(1) / "metrics"
    saved = json.loads((metrics_dir / "eval_ttt.json").read_text())
    for k in ("val_loss", "val_bpb", "tokens", "bytes", "eval_s", "no_adapt_val_bpb", "gain_bpb"):
        assert k in saved, k
    assert saved["enabled"] is True and saved["tokens"] == params.ttt.max_tokens - 1
    assert saved["gain_bpb"] == pytest.approx(saved["no_adapt_val_bpb"] - saved["val_bpb"])
    assert saved["adapt_steps"] > 0 and saved["val_bpb"] != saved["no_adapt_val_bpb"]
    assert saved == pytest.approx(json.loads(json.dumps(m)))
    assert json.loads((metrics_dir / "eval_ttt.provenance.json").read_text())["stage"] == "eval_ttt"

    # without the no-adapt pass: the same TTT score, no baseline fields, and a note saying why
    no_base = eval_ttt.run(_params(in_tiny, tmp_path, "ttt.lr=0.01", "ttt.score_no_adapt=false"), 1)
    assert no_base["val_bpb"] == pytest.approx(saved["val_bpb"], rel=1e-9)
    assert not {"no_adapt_val_bpb", "no_adapt_val_loss", "no_adapt_eval_s", "gain_bpb"} & set(no_base)
    assert "score_no_adapt" in no_base["no_adapt_note"]
    assert json.loads((metrics_dir / "eval_ttt.json").read_text()) == pytest.approx(json.loads(json.dumps(no_base)))

    off = _params(in_tiny, tmp_path, "ttt.enabled=false")
    assert eval_ttt.run(off, 1) == {"enabled": False, "note": "ttt.enabled is false"}
    assert json.loads((metrics_dir / "eval_ttt.json").read_text())["enabled"] is False
