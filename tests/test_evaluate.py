"""Exact-BPB evaluation: window plans, plain vs sliding vs brute force, stateful SSM eval, the eval_sliding stage.

The stand-in LMs below are tiny and float64 so sums agree to float tolerance; one test uses the real GolfLM."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golf.config import ModelConfig, QuantConfig, load_params, to_dict
from golf.data import ByteTables, target_bytes
from golf.errors import ArtifactError, GolfError
from golf.evaluate import eval_bpb, eval_stateful, span_plan, window_plan
from golf.model import build_model

V = 40


def tables(vocab: int = V, seed: int = 0) -> ByteTables:
    """Random byte tables with a few boundary tokens, so the leading-space rule matters."""
    g = torch.Generator().manual_seed(seed)
    return ByteTables(torch.randint(0, 4, (vocab,), generator=g).to(torch.int16),
                      torch.rand(vocab, generator=g) < 0.5, torch.arange(vocab) < 3)


class GRULM(nn.Module):
    """Causal LM with unbounded memory (embedding -> GRU -> head), in GolfLM's stateful calling convention."""

    supports_state = True

    def __init__(self, vocab: int = V, d: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb, self.rnn, self.head = nn.Embedding(vocab, d), nn.GRU(d, d, batch_first=True), nn.Linear(d, vocab)
        for p in self.parameters():  # strong weights: context changes the predictions
            nn.init.normal_(p, std=0.6)
        self.double()

    def forward(self, ids, states=None, return_states=False):
        h0 = None if states is None else states["layers"][0][0].transpose(0, 1).contiguous()  # (1, B, d)
        out, hn = self.rnn(self.emb(ids), h0)  # (B, T, d)
        logits = self.head(out)  # (B, T, V)
        if return_states:
            return logits, {"prev_token": ids[:, -1], "layers": [(hn.transpose(0, 1),)]}  # batch first
        return logits


class ConvLM(nn.Module):
    """Causal LM that sees exactly the last `k` tokens (a left-padded convolution): any window giving a
    target at least k-1 tokens of context scores it identically."""

    def __init__(self, vocab: int = V, d: int = 16, k: int = 5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.k = k
        self.emb, self.conv, self.head = nn.Embedding(vocab, d), nn.Conv1d(d, d, k), nn.Linear(d, vocab)
        for p in self.parameters():
            nn.init.normal_(p, std=0.6)
        self.double()

    def forward(self, ids):
        h = self.emb(ids).transpose(1, 2)  # (B, d, T)
        h = self.conv(F.pad(h, (self.k - 1, 0)))  # (B, d, T): position j sees ids[j-k+1 .. j]
        return self.head(torch.tanh(h).transpose(1, 2))  # (B, T, V)


def brute_force(model, toks: torch.Tensor, tab: ByteTables, context: int) -> tuple[float, int]:
    """(sum NLL, sum bytes): every target t scored alone, from a window of the last `context` tokens."""
    nll, nbytes = 0.0, 0
    with torch.no_grad():
        for t in range(1, toks.numel()):
            logits = model(toks[max(0, t - context):t][None])[0, -1].double()  # (V,)
            nll += float(-torch.log_softmax(logits, -1)[toks[t]])
            prev = toks[t - 1]
            nbytes += int(tab.base_bytes[toks[t]]) + int(bool(tab.has_leading_space[toks[t]])
                                                          and not bool(tab.is_boundary[prev]))
    return nll, nbytes


def bpb(nll: float, nbytes: int) -> float:
    return nll / math.log(2) / nbytes


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lo,hi,L,s", [(1, 99, 16, 4), (1, 100, 16, 16), (1, 16, 16, 3), (1, 499, 64, 7),
                                       (33, 97, 16, 5), (40, 45, 16, 16), (1, 5, 16, 2), (17, 200, 32, 1)])
def test_span_plan_scores_each_target_once_with_the_most_context(lo, hi, L, s):
    plan = span_plan(lo, hi, L, s)
    Lw = min(L, hi)
    seen = []
    for start, first in plan:
        assert start >= 0 and start + Lw <= hi  # never reads a token after the range
        assert 0 <= first < Lw
        for t in range(start + 1 + first, start + Lw + 1):
            seen.append(t)
            context = t - start  # tokens start .. t-1
            assert context >= min(t, Lw - s + 1), (t, start)
    assert sorted(seen) == list(range(lo, hi + 1))
    assert len(seen) == len(set(seen))


def test_plan_errors_name_the_problem():
    with pytest.raises(GolfError, match="longer than the validation set"):
        window_plan(10, 16, 4)
    with pytest.raises(GolfError, match="stride"):
        span_plan(1, 100, 16, 17)
    with pytest.raises(GolfError, match="stride"):
        span_plan(1, 100, 16, 0)
    assert window_plan(17, 16, 4) == [(0, 0)]  # exactly one window: every target once


def test_plain_equals_stride_seq_len_and_counts_every_target_and_byte():
    m, tab = GRULM(), tables()
    toks = torch.randint(0, V, (203,), generator=torch.Generator().manual_seed(1))
    plain = eval_bpb(m, toks, tab, 24, 4)
    same = eval_bpb(m, toks, tab, 24, 4, stride=24)
    assert plain["val_bpb"] == same["val_bpb"] and plain["val_loss"] == same["val_loss"]
    assert plain["tokens"] == toks.numel() - 1
    assert plain["bytes"] == int(target_bytes(toks[:-1], toks[1:], tab).sum())
    sliding = eval_bpb(m, toks, tab, 24, 4, stride=5)
    assert sliding["tokens"] == toks.numel() - 1 and sliding["bytes"] == plain["bytes"]
    assert sliding["val_bpb"] != plain["val_bpb"]  # more context changes the score of this context-heavy model


def test_stride_one_equals_per_token_brute_force_with_max_context():
    m, tab, L = GRULM(seed=3), tables(seed=3), 12
    toks = torch.randint(0, V, (90,), generator=torch.Generator().manual_seed(2))
    got = eval_bpb(m, toks, tab, L, 7, stride=1)
    nll, nbytes = brute_force(m, toks, tab, L)
    assert got["bytes"] == nbytes
    assert got["val_bpb"] == pytest.approx(bpb(nll, nbytes), rel=1e-6)
    assert got["val_loss"] == pytest.approx(nll / (toks.numel() - 1), rel=1e-6)


def test_sliding_equals_brute_force_when_every_window_gives_enough_context():
    # the conv LM sees 5 tokens; stride 8 in windows of 16 leaves >= 9 tokens of context: exact agreement
    m, tab = ConvLM(k=5), tables(seed=4)
    toks = torch.randint(0, V, (157,), generator=torch.Generator().manual_seed(5))
    nll, nbytes = brute_force(m, toks, tab, 16)
    for batch_seqs in (1, 3, 100):  # batching does not change what is scored
        got = eval_bpb(m, toks, tab, 16, batch_seqs, stride=8)
        assert got["tokens"] == 156 and got["bytes"] == nbytes
        assert got["val_bpb"] == pytest.approx(bpb(nll, nbytes), rel=1e-6)


def _golflm(pattern: str, vocab: int = V, bigram: int = 0):
    torch.manual_seed(0)
    m = build_model(ModelConfig(vocab_size=vocab, d_model=32, layer_pattern=pattern, d_state=8, expand=2.0,
                                headdim=16, chunk_size=8, num_heads=2, num_kv_heads=1, mlp_mult=2.0,
                                bigram_buckets=bigram, bigram_dim=8 if bigram else 0, ssm_backend="reference",
                                attn_backend="sdpa")).double()
    with torch.no_grad():
        for p in m.parameters():  # break the zero init of the output projections so context matters
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    return m


def test_golflm_sliding_stride_one_equals_brute_force():
    m, tab = _golflm("MAM", bigram=16), tables(seed=6)
    toks = torch.randint(0, V, (60,), generator=torch.Generator().manual_seed(6))
    got = eval_bpb(m, toks, tab, 12, 16, stride=1)
    nll, nbytes = brute_force(m, toks, tab, 12)
    assert got["val_bpb"] == pytest.approx(bpb(nll, nbytes), rel=1e-5)
    m.train()
    eval_bpb(m, toks, tab, 12, 16)
    assert m.training  # eval_bpb restores the caller's mode


def test_stateful_gru_equals_each_segment_read_in_one_pass():
    m, tab, L = GRULM(seed=7), tables(seed=7), 8
    toks = torch.randint(0, V, (105,), generator=torch.Generator().manual_seed(7))  # 104 targets
    got = eval_stateful(m, toks, tab, L, 3)
    assert got["segments"] == 3 and got["tokens"] == 104
    seg, nll = 104 // 3, 0.0
    with torch.no_grad():
        for s, e in [(0, seg), (seg, 2 * seg), (2 * seg, 104)]:  # the last segment takes the remainder
            logits = m(toks[s:e][None])[0]  # one pass over the whole segment, no windows
            nll += float(F.cross_entropy(logits, toks[s + 1:e + 1], reduction="sum"))
    assert got["bytes"] == int(target_bytes(toks[:-1], toks[1:], tab).sum())
    assert got["val_bpb"] == pytest.approx(bpb(nll, got["bytes"]), rel=1e-6)
    # and it is not what windows without carried state give
    assert got["val_bpb"] != pytest.approx(eval_bpb(m, toks, tab, L, 3)["val_bpb"], rel=1e-3)


def test_stateful_golflm_ssm_only_equals_one_long_window():
    m, tab = _golflm("MM", bigram=16), tables(seed=8)
    toks = torch.randint(0, V, (97,), generator=torch.Generator().manual_seed(8))
    one = eval_bpb(m, toks, tab, 96, 1)
    st = eval_stateful(m, toks, tab, 16, 1)
    assert st["tokens"] == 96 and st["val_bpb"] == pytest.approx(one["val_bpb"], rel=1e-6)


def test_stateful_needs_recurrent_layers():
    m = _golflm("AA")
    with pytest.raises(GolfError, match="SSM layers"):
        eval_stateful(m, torch.randint(0, V, (40,)), tables(), 8, 2)


# --------------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------------


def write_artifact(params, seed: int, tmp_seed: int = 0) -> None:
    """A packaged artifact of a random (perturbed) model of params.model under params.run_dir(seed)."""
    from golf.gptq import quantize_model
    from golf.package import build_artifact

    torch.manual_seed(tmp_seed)
    model = build_model(params.model, "cpu")
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * 0.05)
    tensors, spec, _ = quantize_model(model, {}, QuantConfig(float_max_numel=256))
    build_artifact(params.run_dir(seed) / "artifact", tensors, spec, to_dict(params.model))


def _params(in_tiny, tmp_path, *extra):
    from conftest import REPO

    _, _, overrides = in_tiny
    return load_params(REPO / "params.yaml", [*overrides, f"runs_dir={tmp_path / 'runs'}", *extra])


def test_eval_sliding_stage_writes_metrics_and_provenance(in_tiny, tmp_path):
    from stages import eval_sliding

    params = _params(in_tiny, tmp_path)
    with pytest.raises(ArtifactError, match="artifact"):
        eval_sliding.run(params, 1)  # nothing packaged yet
    write_artifact(params, 1)
    m = eval_sliding.run(params, 1)
    metrics_dir = params.run_dir(1) / "metrics"
    saved = json.loads((metrics_dir / "eval_sliding.json").read_text())
    assert saved == pytest.approx(json.loads(json.dumps(m)))
    for k in ("val_loss", "val_bpb", "tokens", "bytes", "eval_s", "plain_val_loss", "plain_val_bpb",
              "stateful_val_bpb"):
        assert k in saved, k
    assert saved["tokens"] == params.eval.max_tokens - 1 and saved["bytes"] > saved["tokens"]
    assert 0 < saved["val_bpb"] < 20 and saved["val_bpb"] != saved["plain_val_bpb"]
    prov = json.loads((metrics_dir / "eval_sliding.provenance.json").read_text())
    assert prov["stage"] == "eval_sliding" and prov["config"]["stride"] == params.eval.stride

    too_long = _params(in_tiny, tmp_path, "eval.seq_len=4096", "eval.stride=64")
    with pytest.raises(GolfError, match="eval.seq_len = 4096 is longer than the validation set"):
        eval_sliding.run(too_long, 1)


def test_eval_sliding_stage_notes_a_skipped_stateful_eval(in_tiny, tmp_path):
    from stages import eval_sliding

    params = _params(in_tiny, tmp_path, "model.layer_pattern=AA")
    write_artifact(params, 2)
    m = eval_sliding.run(params, 2)
    assert "stateful_val_bpb" not in m and "attention-only" in m["stateful_note"]
