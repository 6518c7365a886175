"""The seed's attention-side features of issue 23, each a model.* setting that is off by default:
model.smear_gate (SmearGate on the token embeddings), model.xsa (exclusive self-attention) and model.ln_scale
(pre-norms times 1/sqrt(layer + 1)). Off builds today's model exactly; on, each is checked against its
written-out definition, sorted by golf/param_groups.py, carried through quantize -> package -> load, and a
window run in pieces with carried states scores as in one pass where the model allows it (no attention)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from golf.attention import GQAttention, exclude_self_value
from golf.config import ConfigError, load_params
from golf.model import SMEAR_GATE_INIT, AttentionBlock, MambaBlock, build_model
from golf.optim import build_optimizers
from golf.param_groups import optim_group, size_group, ttt_subset
from tests import test_arch_levers as arch_levers
from tests.test_arch_levers import BEFORE, TINY, _ids
from tests.test_attention import naive_attention
from tests.test_model import analytic_count
from tests.test_param_groups import REPO

FEATURES = {"smear_gate": {"smear_gate": True}, "xsa": {"xsa": True}, "ln_scale": {"ln_scale": True}}
ALL_ON = {k: v for opt in FEATURES.values() for k, v in opt.items()}


def _perturbed(cfg, seed: int = 0, std: float = 0.05, gate: float | None = 0.0):
    """test_arch_levers' perturbed GolfLM, with the SmearGate logits (when on) set to `gate` (0: a half blend, far
    from the near-identity init; None: left at the init)."""
    model = arch_levers._perturbed(cfg, seed, std)
    if model.smear_gate is not None and gate is not None:
        with torch.no_grad():
            model.smear_gate.fill_(gate)
    return model


def _todays_forward(model, ids: torch.Tensor) -> torch.Tensor:
    """The model's forward as it was before these features, written out around its own submodules: no blend
    of the embeddings, plain rms_norm before each mixer / attention / MLP, U-Net skips, tied softcapped head."""
    x = F.rms_norm(model.tok_emb(ids) + model.bigram(ids), (TINY.d_model,))
    x0, skips = x, []
    for i, block in enumerate(model.blocks):
        if i >= model.num_encoder and skips and i - model.num_encoder < model.num_skips:
            x = x + model.skip_weights[i - model.num_encoder] * skips.pop()
        x = block.resid_mix[0] * x + block.resid_mix[1] * x0
        if isinstance(block, AttentionBlock):
            x = x + block.attn_scale * block.attn(F.rms_norm(x, (x.shape[-1],)))
        else:
            x = x + block.mixer_scale * block.mixer(F.rms_norm(x, (x.shape[-1],)))
        if block.mlp is not None:
            x = x + block.mlp_scale * block.mlp(F.rms_norm(x, (x.shape[-1],)))
        if i < model.num_encoder:
            skips.append(x)
    logits = F.linear(F.rms_norm(x, (x.shape[-1],)), model.tok_emb.weight)
    return model.cfg.logit_softcap * torch.tanh(logits / model.cfg.logit_softcap)


# ------------------------------------------------------------------------------------------------
# Off by default
# ------------------------------------------------------------------------------------------------

def test_the_defaults_build_todays_model_and_spelled_out_off_is_the_same_model():
    assert [(k, tuple(v.shape)) for k, v in build_model(TINY).state_dict().items()] == BEFORE
    cfg = dataclasses.replace(TINY, layer_pattern="MAMA")  # two A blocks, the second deeper than the first
    default = _perturbed(cfg)
    explicit = _perturbed(dataclasses.replace(cfg, smear_gate=False, xsa=False, ln_scale=False))
    ids = _ids()
    with torch.no_grad():
        want = default(ids)
        assert torch.equal(_todays_forward(default, ids), want)  # bit for bit
        assert list(explicit.state_dict()) == list(default.state_dict())
        assert all(torch.equal(v, default.state_dict()[k]) for k, v in explicit.state_dict().items())
        assert torch.equal(explicit(ids), want)
    assert default.smear_gate is None and "smear_gate" not in default.state_dict()
    assert {b.norm_scale for b in default.blocks} == {1.0} and not any(b.attn.xsa for b in default.blocks[1::2])
    p = load_params(REPO / "params.yaml").model
    assert (p.smear_gate, p.xsa, p.ln_scale) == (False, False, False)


def test_each_feature_loads_from_params():
    p = load_params(REPO / "params.yaml", ["model.smear_gate=true", "model.xsa=true", "model.ln_scale=true"])
    assert (p.model.smear_gate, p.model.xsa, p.model.ln_scale) == (True, True, True)


@pytest.mark.parametrize("overrides, match", [
    (["model.xsa=true", "model.layer_pattern=MMMM"],
     "'model.xsa'.*acts on attention layers.*'MMMM' has no 'A'; set model.xsa to false"),
    (["model.smear_gate=1.5"], "'model.smear_gate'"),
    (["model.ln_scale=maybe"], "'model.ln_scale'"),
])
def test_bad_feature_settings_are_one_config_error_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_params(REPO / "params.yaml", overrides)
    assert "\n" not in str(e.value) and "params.yaml" in str(e.value)


def test_smear_gate_and_ln_scale_are_accepted_without_attention():
    p = load_params(REPO / "params.yaml", ["model.layer_pattern=MMM", "model.smear_gate=true",
                                           "model.ln_scale=true"])
    assert p.model.smear_gate and p.model.ln_scale  # both act on Mamba-only models too


# ------------------------------------------------------------------------------------------------
# SmearGate
# ------------------------------------------------------------------------------------------------

def test_smear_gate_is_the_written_out_blend_with_the_carried_token_before_the_window():
    model = _perturbed(dataclasses.replace(TINY, smear_gate=True)).double()
    with torch.no_grad():
        model.smear_gate.copy_(torch.randn(TINY.d_model, dtype=torch.float64))
    ids = _ids(shape=(3, 7))
    emb = model.tok_emb(ids)  # (3, 7, 32)
    lam = 1 / (1 + torch.exp(-model.smear_gate))  # (32,)
    prev_first = torch.tensor([5, -1, 0])  # a carried token, none (a negative id), token 0
    for prev, want_first in ((None, [None, None, None]), (prev_first, [5, None, 0])):
        got = model.smear(emb, prev)
        for b in range(3):
            for t in range(7):
                if t > 0:
                    e_prev = emb[b, t - 1]
                elif want_first[b] is None:
                    e_prev = emb[b, 0]  # no previous token: no blend
                else:
                    e_prev = model.tok_emb.weight[want_first[b]]
                expected = (1 - lam) * emb[b, t] + lam * e_prev
                torch.testing.assert_close(got[b, t], expected, rtol=1e-12, atol=1e-12)


def test_smear_gate_starts_near_identity_and_is_one_vector_per_model():
    cfg = dataclasses.replace(TINY, smear_gate=True)
    fresh = build_model(cfg)
    assert fresh.smear_gate.shape == (32,) and torch.equal(fresh.smear_gate, torch.full((32,), SMEAR_GATE_INIT))
    assert 0.017 < torch.sigmoid(fresh.smear_gate[0]).item() < 0.019
    assert sum(p.numel() for p in fresh.parameters()) == analytic_count(TINY) + 32
    on = _perturbed(cfg, gate=None)  # the initial gate
    off = build_model(TINY).eval()
    off.load_state_dict({k: v for k, v in on.state_dict().items() if k != "smear_gate"})
    ids = _ids()
    with torch.no_grad():
        a, b = on(ids), off(ids)
        assert 0 < ((a - b).norm() / b.norm()).item() < 0.05  # a small blend, but a blend
        on.smear_gate.fill_(0.0)  # a half blend, for scale
        assert ((on(ids) - b).norm() / b.norm()).item() > 0.2
        on.smear_gate.fill_(-1e4)  # sigmoid underflows to 0: exactly the model without the gate
        assert torch.equal(on(ids), b)


def test_smear_gate_reads_only_the_previous_token():
    model = _perturbed(dataclasses.replace(TINY, layer_pattern="MM", smear_gate=True, bigram_buckets=0,
                                           bigram_dim=0))
    ids = _ids(shape=(1, 12))
    other = ids.clone()
    other[0, 6] = (ids[0, 6] + 1) % 128
    with torch.no_grad():
        emb, emb2 = model.smear(model.tok_emb(ids), None), model.smear(model.tok_emb(other), None)
        changed = (emb - emb2).abs().amax(-1)[0]  # (12,)
        assert torch.equal(changed[:6], torch.zeros(6)) and torch.equal(changed[8:], torch.zeros(4))
        assert (changed[6:8] > 0).all()  # the token itself and the next one, which blends it in
        logits, logits2 = model(ids), model(other)
    torch.testing.assert_close(logits[:, :6], logits2[:, :6], rtol=0, atol=1e-6)  # causal
    assert not torch.allclose(logits[:, 7], logits2[:, 7])


def test_smear_gate_is_a_scalar_in_the_ttt_norms_subset_and_trains():
    cfg = dataclasses.replace(TINY, smear_gate=True)
    model = build_model(cfg)
    assert size_group("smear_gate") == "other" and optim_group("smear_gate", 1) == "scalar"
    assert ttt_subset("smear_gate", "norms") and not ttt_subset("smear_gate", "ssm")
    assert not ttt_subset("smear_gate", "mlp")
    groups = {n: g for g, items in model.param_groups().items() for n, _ in items}
    assert groups["smear_gate"] == "scalar"
    p = load_params(REPO / "params.yaml", ["train.device=cpu"])
    opts = build_optimizers(model, p.train)
    before = model.smear_gate.detach().clone()
    ids = _ids(shape=(2, 16))
    model(ids[:, :-1], targets=ids[:, 1:]).backward()
    assert model.smear_gate.grad is not None and model.smear_gate.grad.abs().sum() > 0
    for o in opts:
        o.step()
    assert not torch.equal(model.smear_gate, before)


# ------------------------------------------------------------------------------------------------
# XSA
# ------------------------------------------------------------------------------------------------

def _xsa_written_out(out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per query head h and token t: out - (out . u) u, u = v[KV head h // (H / Hkv)] / |v|."""
    H, Hkv = out.shape[2], v.shape[2]
    res = torch.empty_like(out)
    for h in range(H):
        vh = v[:, :, h // (H // Hkv)]  # (B, T, D)
        u = vh / vh.norm(dim=-1, keepdim=True)
        res[:, :, h] = out[:, :, h] - (out[:, :, h] * u).sum(-1, keepdim=True) * u
    return res


def test_exclude_self_value_is_the_written_out_projection():
    out = torch.randn(2, 9, 6, 8, dtype=torch.float64)  # 6 query heads on 2 KV heads: groups of 3
    v = torch.randn(2, 9, 2, 8, dtype=torch.float64)
    got = exclude_self_value(out, v)
    torch.testing.assert_close(got, _xsa_written_out(out, v), rtol=1e-12, atol=1e-12)
    own = v.repeat_interleave(3, dim=2)  # (2, 9, 6, 8): each query head's own value vector
    assert (got * own).sum(-1).abs().max() < 1e-12  # nothing left along it
    torch.testing.assert_close(exclude_self_value(got, v), got, rtol=1e-12, atol=1e-12)  # a projection
    assert torch.equal(exclude_self_value(out, torch.zeros_like(v)), out)  # a zero value: nothing removed
    half = exclude_self_value(out.bfloat16(), v.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), got, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 4), (4, 1)])
def test_xsa_attention_matches_the_written_out_definition(heads, kv_heads):
    torch.manual_seed(0)
    a = GQAttention(32, heads, kv_heads, 10000.0, rope_dims=4, xsa=True).double()
    with torch.no_grad():
        a.o_proj.weight.copy_(torch.eye(32, dtype=torch.float64))  # the output is the heads' concatenation
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    v = (x @ a.v_proj.weight.T).view(2, 11, kv_heads, 32 // heads)
    plain = naive_attention(a, x).view(2, 11, heads, 32 // heads)  # written out, no XSA
    want = _xsa_written_out(plain, v).reshape(2, 11, 32)
    torch.testing.assert_close(a(x), want, rtol=1e-10, atol=1e-10)
    a.xsa = False
    torch.testing.assert_close(a(x), plain.reshape(2, 11, 32), rtol=1e-10, atol=1e-10)


def _flash_like(q, k, v, causal):
    """flash-attn's contract on (B, T, H, D) tensors with fewer KV heads, through SDPA on explicit copies."""
    g = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal).transpose(1, 2)


def test_xsa_is_the_same_step_on_the_flash_path():
    torch.manual_seed(0)
    sdpa = GQAttention(32, 4, 2, 10000.0, xsa=True)
    flash = GQAttention(32, 4, 2, 10000.0, backend="flash2", flash_fn=_flash_like, xsa=True)
    flash.load_state_dict(sdpa.state_dict())
    torch.nn.init.normal_(sdpa.o_proj.weight, std=0.2)
    flash.o_proj.weight.data.copy_(sdpa.o_proj.weight)
    x = torch.randn(2, 13, 32).bfloat16()
    sdpa, flash = sdpa.bfloat16(), flash.bfloat16()
    calls = []
    flash._flash_fn = lambda *a, **kw: calls.append(1) or _flash_like(*a, **kw)
    with torch.no_grad():
        got = flash(x)
        assert calls  # the flash branch ran (bf16 input)
        torch.testing.assert_close(got.float(), sdpa(x).float(), rtol=0.02, atol=0.02)
        flash.xsa = False
        assert not torch.allclose(flash(x).float(), got.float(), atol=1e-3)


def test_xsa_reaches_every_attention_block_and_changes_the_output():
    cfg = dataclasses.replace(TINY, layer_pattern="MAMA", xsa=True)
    model = _perturbed(cfg)
    assert [b.attn.xsa for b in model.blocks if isinstance(b, AttentionBlock)] == [True, True]
    assert list(model.state_dict()) == list(_perturbed(dataclasses.replace(cfg, xsa=False)).state_dict())
    plain = _perturbed(dataclasses.replace(cfg, xsa=False))
    ids = _ids()
    with torch.no_grad():
        got = model(ids)
        assert not torch.allclose(got, plain(ids))
        stated, states = model(ids, return_states=True)
    assert torch.equal(stated, got)  # the stateful path computes the same window
    assert states["layers"][1] is None and states["layers"][3] is None  # attention carries nothing


# ------------------------------------------------------------------------------------------------
# LN scale
# ------------------------------------------------------------------------------------------------

def test_ln_scale_damps_each_blocks_pre_norms_by_its_depth():
    cfg = dataclasses.replace(TINY, layer_pattern="MAMA", ln_scale=True, mamba_mlp_mult=1.0)
    model = _perturbed(cfg)
    assert [b.norm_scale for b in model.blocks] == [1 / math.sqrt(i + 1) for i in range(4)]
    x, x0 = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            f = 1 / math.sqrt(i + 1)
            h = block.resid_mix[0] * x + block.resid_mix[1] * x0
            if isinstance(block, MambaBlock):
                h = h + block.mixer_scale * block.mixer(F.rms_norm(h, (32,)) * f)
            else:
                h = h + block.attn_scale * block.attn(F.rms_norm(h, (32,)) * f)
            expected = h + block.mlp_scale * block.mlp(F.rms_norm(h, (32,)) * f)
            torch.testing.assert_close(block(x, x0), expected, rtol=0, atol=0)
        plain = _perturbed(dataclasses.replace(cfg, ln_scale=False))
        assert list(plain.state_dict()) == list(model.state_dict())
        assert not torch.allclose(model(_ids()), plain(_ids()))


# ------------------------------------------------------------------------------------------------
# Together: carried state, artifact, bf16, compile
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("features", [{"smear_gate": True}, {"ln_scale": True}, {"smear_gate": True,
                                                                                 "ln_scale": True}],
                         ids=["smear_gate", "ln_scale", "both"])
def test_a_mamba_model_run_in_pieces_with_carried_states_scores_as_in_one_pass(features):
    cfg = dataclasses.replace(TINY, layer_pattern="MMM", **features)
    model = _perturbed(cfg, std=0.1, gate=0.5).double()
    ids = _ids(shape=(2, 40))
    with torch.no_grad():
        full = model(ids)
        a, st = model(ids[:, :17], return_states=True)
        b, st2 = model(ids[:, 17:29], states=st, return_states=True)
        c, _ = model(ids[:, 29:], states=st2, return_states=True)
        torch.testing.assert_close(torch.cat([a, b, c], 1), full, rtol=1e-10, atol=1e-10)
        cold = model(ids[:, 17:29])  # the same window without the carried states
    assert not torch.allclose(cold[:, 0], b[:, 0])


@pytest.mark.parametrize("feature", FEATURES)
def test_a_model_with_each_feature_round_trips_through_the_artifact(tmp_path, feature):
    cfg = dataclasses.replace(TINY, layer_pattern="MAM", **FEATURES[feature])
    model = _perturbed(cfg)
    loaded, _ = arch_levers.check_artifact_round_trip(tmp_path, cfg, model, _ids())
    if feature == "smear_gate":
        assert torch.equal(loaded.smear_gate, model.smear_gate)  # a 32-float vector stays float (fp16: 0 exact)


def test_every_feature_on_runs_under_bf16_autocast_and_a_bf16_cast():
    model = _perturbed(dataclasses.replace(TINY, **ALL_ON))
    with torch.no_grad():
        ref = model(_ids())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(_ids())
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        model.bfloat16()
        cast = model(_ids())
    assert ((cast - ref).norm() / ref.norm()).item() < 0.05


def test_every_feature_on_compiles_to_the_eager_output():
    model = _perturbed(dataclasses.replace(TINY, layer_pattern="AM", **ALL_ON))
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter)
    ids = _ids(shape=(2, 16))
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids), model(ids), rtol=1e-5, atol=1e-5)
    assert counter.frame_count >= 1
