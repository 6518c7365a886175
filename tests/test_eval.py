import math

import pytest
import torch
import torch.nn.functional as F

from golf.config import ModelConfig, TTTConfig
from golf.data import ByteTables
from golf.errors import GolfError
from golf.evaluate import eval_bpb, eval_stateful, window_plan
from golf.model import build_model
from golf.ttt import ttt_eval

V = 50


def _tables():
    g = torch.Generator().manual_seed(0)
    return ByteTables(torch.randint(1, 4, (V,), generator=g).to(torch.int16),
                      torch.rand(V, generator=g) < 0.5, torch.arange(V) < 2)


def _model(pattern="MAM"):
    torch.manual_seed(0)
    m = build_model(ModelConfig(vocab_size=V, d_model=32, layer_pattern=pattern, d_state=8, expand=2.0, headdim=16,
                                chunk_size=8, num_heads=2, num_kv_heads=1, mlp_mult=2.0, bigram_buckets=0,
                                bigram_dim=0)).double()
    for name, p in m.named_parameters():  # break the zero init so context matters
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.3)
    return m


def test_window_plan_scores_every_target_once():
    for n, L, s in [(100, 16, 4), (101, 16, 16), (17, 16, 3), (500, 64, 7)]:
        seen = []
        for start, first in window_plan(n, L, s):
            seen += list(range(start + 1 + first, start + L + 1))
        assert sorted(seen) == list(range(1, n)), (n, L, s)
    with pytest.raises(GolfError, match="longer than the validation set"):
        window_plan(10, 16, 4)


def test_sliding_equals_brute_force_and_stride_seq_len_equals_plain():
    m, tables = _model(), _tables()
    toks = torch.randint(0, V, (161,))
    L, stride = 24, 8
    plain = eval_bpb(m, toks, tables, L, 4)
    same = eval_bpb(m, toks, tables, L, 4, stride=L)
    assert plain["val_bpb"] == same["val_bpb"] and plain["tokens"] == toks.numel() - 1
    sliding = eval_bpb(m, toks, tables, L, 4, stride=stride)
    assert sliding["tokens"] == toks.numel() - 1
    # brute force: score token t with the window the plan gives it, one token at a time
    nll, nbytes = 0.0, 0
    for start, first in window_plan(toks.numel(), L, stride):
        with torch.no_grad():
            logits = m(toks[start:start + L][None])[0]
        for j in range(first, L):
            t = start + j + 1
            nll += F.cross_entropy(logits[j][None], toks[t][None]).item()
            prev = toks[t - 1]
            nbytes += int(tables.base_bytes[toks[t]]) + int(tables.has_leading_space[toks[t]] and not tables.is_boundary[prev])
    assert sliding["val_bpb"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-9)
    assert sliding["val_bpb"] != plain["val_bpb"]


def test_stateful_eval_of_ssm_only_model_equals_one_long_window():
    m, tables = _model("MM"), _tables()
    toks = torch.randint(0, V, (97,))
    one = eval_bpb(m, toks, tables, 96, 1)
    st = eval_stateful(m, toks, tables, 16, 1)
    assert st["tokens"] == 96 and st["val_bpb"] == pytest.approx(one["val_bpb"], rel=1e-7)


def test_ttt_scores_every_chunk_before_adapting_on_it():
    m, tables = _model(), _tables()
    toks = torch.randint(0, V, (400,))
    cfg = TTTConfig(chunk_tokens=96, seq_len=16, batch_seqs=2, lr=0.5, momentum=0.0)
    events = []
    out = ttt_eval(m, toks, tables, cfg, torch.device("cpu"), events=events)
    assert out["tokens"] == 399
    scored = set()
    adapted_any = False
    for kind, lo, hi in events:
        if kind == "score":
            scored |= set(range(lo, hi + 1))
        else:
            adapted_any = True
            assert set(range(lo, hi + 1)) <= scored, f"adapted on {lo}..{hi} before scoring it"
    assert adapted_any


def test_ttt_reported_score_is_the_pre_update_score():
    # a single chunk: it is scored before any update, so even a huge learning rate cannot change its score
    m, tables = _model(), _tables()
    toks = torch.randint(0, V, (120,))
    frozen = ttt_eval(_model(), toks, tables, TTTConfig(chunk_tokens=1000, seq_len=16), torch.device("cpu"),
                      adapt=False)
    big = ttt_eval(m, toks, tables, TTTConfig(chunk_tokens=1000, seq_len=16, lr=10.0), torch.device("cpu"))
    assert big["val_bpb"] == frozen["val_bpb"]
    # two chunks with adaptation: the second chunk's score moves, the first does not
    m2 = _model()
    two = ttt_eval(m2, toks, tables, TTTConfig(chunk_tokens=60, seq_len=16, lr=1.0), torch.device("cpu"))
    assert two["val_bpb"] != ttt_eval(_model(), toks, tables, TTTConfig(chunk_tokens=60, seq_len=16),
                                      torch.device("cpu"), adapt=False)["val_bpb"]
