"""The architecture levers of issue 23, each a model.* setting that is off by default: model.mamba_mlp_mult
(an MLP in every Mamba block), model.rope_dims (partial RoPE), model.rope (false: NoPE) and model.mlp_act
(leaky_relu2). Off builds today's model exactly; on, each is checked against its written-out definition,
sorted by golf/param_groups.py like the blocks' other weights, and carried through quantize -> package -> load."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from golf.artifact import dequantize, load_model_from_artifact, open_artifact
from golf.attention import GQAttention, apply_rope, rope_tables
from golf.config import ConfigError, ModelConfig, QuantConfig, load_params, to_dict
from golf.errors import ArtifactError
from golf.gptq import qat_module_bits, quantize_model
from golf.hessian import collect_hessians
from golf.model import MLP, MambaBlock, build_model
from golf.optim import build_optimizers
from golf.package import build_artifact
from golf.param_groups import optim_group, size_group, ttt_subset
from tests.test_attention import naive_attention
from tests.test_model import analytic_count
from tests.test_param_groups import REPO

# head dim 16: rope_dims 8 is a true partial rotation
TINY = ModelConfig(vocab_size=128, d_model=32, layer_pattern="MA", d_state=8, expand=2.0, headdim=16, chunk_size=8,
                   num_heads=2, num_kv_heads=1, mlp_mult=2.0, bigram_buckets=64, bigram_dim=8,
                   ssm_backend="reference", attn_backend="sdpa")
LEVERS = {"mamba_mlp": {"mamba_mlp_mult": 1.5}, "rope_dims": {"rope_dims": 8},
          "leaky_relu2": {"mlp_act": "leaky_relu2"}}
# TINY's state dict as the code before these levers built it (names and shapes, in order)
BEFORE = [("skip_weights", (1, 32)), ("tok_emb.weight", (128, 32)), ("bigram.emb.weight", (64, 8)),
          ("bigram.proj.weight", (32, 8)), ("blocks.0.resid_mix", (2, 32)), ("blocks.0.mixer_scale", (32,)),
          ("blocks.0.mixer.A_log", (4,)), ("blocks.0.mixer.dt_bias", (4,)), ("blocks.0.mixer.D", (4,)),
          ("blocks.0.mixer.norm_weight", (64,)), ("blocks.0.mixer.in_proj.weight", (148, 32)),
          ("blocks.0.mixer.conv1d.weight", (80, 1, 4)), ("blocks.0.mixer.conv1d.bias", (80,)),
          ("blocks.0.mixer.out_proj.weight", (32, 64)), ("blocks.1.resid_mix", (2, 32)),
          ("blocks.1.attn_scale", (32,)), ("blocks.1.mlp_scale", (32,)), ("blocks.1.attn.q_gain", (2,)),
          ("blocks.1.attn.q_proj.weight", (32, 32)), ("blocks.1.attn.k_proj.weight", (16, 32)),
          ("blocks.1.attn.v_proj.weight", (16, 32)), ("blocks.1.attn.o_proj.weight", (32, 32)),
          ("blocks.1.mlp.fc.weight", (64, 32)), ("blocks.1.mlp.proj.weight", (32, 64))]


def _perturbed(cfg: ModelConfig, seed: int = 0, std: float = 0.05):
    """A GolfLM whose zero-initialized projections are perturbed, so every branch changes the logits."""
    torch.manual_seed(seed)
    model = build_model(cfg, "cpu")
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * std)
    return model.eval()


def _ids(seed: int = 1, shape=(2, 24)) -> torch.Tensor:
    return torch.randint(0, 128, shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# Off by default
# ------------------------------------------------------------------------------------------------

def test_the_defaults_build_todays_model_and_spelled_out_off_is_the_same_model():
    default = _perturbed(TINY)
    assert [(k, tuple(v.shape)) for k, v in default.state_dict().items()] == BEFORE
    explicit = _perturbed(dataclasses.replace(TINY, mamba_mlp_mult=0.0, rope_dims=0, rope=True, mlp_act="relu2"))
    full_head = _perturbed(dataclasses.replace(TINY, rope_dims=TINY.d_model // TINY.num_heads))
    ids = _ids()
    with torch.no_grad():
        want = default(ids)
        for other in (explicit, full_head):
            assert list(other.state_dict()) == list(default.state_dict())
            assert all(torch.equal(v, default.state_dict()[k]) for k, v in other.state_dict().items())
            assert torch.equal(other(ids), want)  # bit for bit
    assert default.blocks[0].mlp is None and default.blocks[1].attn.rope_dims == 16


@pytest.mark.parametrize("override, match", [
    ("model.rope_dims=7", "'model.rope_dims'.*expected an even number <= the attention head dim.*got 7"),
    ("model.rope_dims=34", "'model.rope_dims'.*d_model/num_heads \\(32\\).*got 34"),
    ("model.rope_dims=-2", "'model.rope_dims'.*expected a value >= 0"),
    ("model.rope=false model.rope_dims=16", "'model.rope_dims'.*only with model.rope true.*got 16"),
    ("model.mlp_act=gelu", "'model.mlp_act'.*expected one of \\['relu2', 'leaky_relu2'\\]"),
    ("model.mamba_mlp_mult=-1", "'model.mamba_mlp_mult'.*expected a value >= 0"),
    ("model.mamba_mlp_mult=17", "'model.mamba_mlp_mult'.*expected a value <= 16"),
    ("model.mamba_mlp_mult=0.001", "'model.mamba_mlp_mult'.*at least one hidden unit.*got 0.001"),
])
def test_bad_lever_values_are_one_config_error_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_params(REPO / "params.yaml", override.split())
    assert "\n" not in str(e.value) and "params.yaml" in str(e.value)


def test_each_lever_loads_from_params():
    p = load_params(REPO / "params.yaml", ["model.mamba_mlp_mult=2", "model.rope_dims=16",
                                           "model.mlp_act=leaky_relu2"])
    assert (p.model.mamba_mlp_mult, p.model.rope_dims, p.model.mlp_act) == (2.0, 16, "leaky_relu2")
    assert load_params(REPO / "params.yaml").model.mamba_mlp_mult == 0.0


# ------------------------------------------------------------------------------------------------
# Each lever against its definition
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["relu2", "leaky_relu2"])
def test_mlp_activation_is_the_written_out_function(act):
    torch.manual_seed(0)
    mlp = MLP(8, 2.0, act).double()
    torch.nn.init.normal_(mlp.proj.weight)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    h = x @ mlp.fc.weight.T  # (3, 5, 16), both signs
    slope = 0.5 if act == "leaky_relu2" else 0.0
    expected = (torch.where(h > 0, h, slope * h) ** 2) @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="act must be"):
        MLP(8, 2.0, "gelu")


def test_leaky_relu2_reaches_every_mlp_and_changes_the_output():
    cfg = dataclasses.replace(TINY, mlp_act="leaky_relu2", mamba_mlp_mult=1.0)
    model = _perturbed(cfg)
    assert {m.act for m in model.modules() if isinstance(m, MLP)} == {"leaky_relu2"}
    assert sum(isinstance(m, MLP) for m in model.modules()) == 2  # the A block's and the M block's
    relu = _perturbed(dataclasses.replace(cfg, mlp_act="relu2"))
    with torch.no_grad():
        assert not torch.allclose(model(_ids()), relu(_ids()))


@pytest.mark.parametrize("rope_dims", [2, 8, 16])
def test_partial_rope_attention_matches_the_written_out_definition(rope_dims):
    torch.manual_seed(0)
    a = GQAttention(32, 2, 1, 10000.0, rope_dims=rope_dims).double()
    torch.nn.init.normal_(a.o_proj.weight, std=32 ** -0.5)
    assert a.rope_dims == rope_dims
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    torch.testing.assert_close(a(x), naive_attention(a, x), rtol=1e-10, atol=1e-10)


def test_nope_attention_matches_the_written_out_definition_and_ignores_the_order_of_the_past():
    """model.rope false: q and k unrotated. Then a causal layer's last output sees the earlier tokens as a set:
    permuting them changes nothing there, while with RoPE it does."""
    torch.manual_seed(0)
    nope = GQAttention(32, 2, 1, 10000.0, rope=False).double()
    rope = GQAttention(32, 2, 1, 10000.0).double()
    rope.load_state_dict(nope.state_dict())  # the same weights: RoPE is the only difference
    for a in (nope, rope):
        torch.nn.init.normal_(a.o_proj.weight, std=32 ** -0.5)
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    torch.testing.assert_close(nope(x), naive_attention(nope, x), rtol=1e-10, atol=1e-10)
    perm = torch.cat([torch.randperm(18), torch.tensor([18])])  # shuffle the past, keep the last token last
    torch.testing.assert_close(nope(x[:, perm])[:, -1], nope(x)[:, -1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(rope(x[:, perm])[:, -1], rope(x)[:, -1], rtol=1e-6, atol=1e-6)


def test_nope_reaches_every_attention_layer_from_params():
    p = load_params(REPO / "params.yaml", ["model.rope=false"])
    assert p.model.rope is False and load_params(REPO / "params.yaml").model.rope is True
    model = build_model(dataclasses.replace(TINY, rope=False, layer_pattern="AMA"))
    assert [m.rope for m in model.modules() if isinstance(m, GQAttention)] == [False, False]


def test_partial_rope_leaves_the_other_dims_without_position():
    x = torch.randn(1, 6, 2, 16)
    cos, sin = rope_tables(6, 8, 10000.0, x.device)  # (6, 4): 8 rotated dims
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[..., 8:], x[..., 8:])
    torch.testing.assert_close(y[..., :8], apply_rope(x[..., :8], cos, sin), rtol=0, atol=0)
    assert not torch.allclose(y[:, 1:, :, :8], x[:, 1:, :, :8])  # positions > 0 are rotated
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # a rotation keeps each head's norm
    for bad in (-2, 3, 18):
        with pytest.raises(ValueError, match="rope_dims must be even"):
            GQAttention(32, 2, 1, 10000.0, rope_dims=bad)


def test_mamba_block_mlp_is_a_pre_norm_residual_after_the_mixer():
    cfg = dataclasses.replace(TINY, mamba_mlp_mult=1.5)
    model = _perturbed(cfg)
    block = model.blocks[0]
    assert isinstance(block, MambaBlock) and block.mlp.fc.weight.shape == (48, 32)
    with torch.no_grad():
        block.mlp_scale.uniform_(0.5, 1.5)
        x, x0 = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
        h = block.resid_mix[0] * x + block.resid_mix[1] * x0
        h = h + block.mixer_scale * block.mixer(F.rms_norm(h, (32,)))
        expected = h + block.mlp_scale * block.mlp(F.rms_norm(h, (32,)))
        torch.testing.assert_close(block(x, x0), expected, rtol=0, atol=0)
        out, state = block(x, x0, return_state=True)
        assert torch.equal(out, expected) and len(state) == 2
    fresh = build_model(cfg)
    assert not fresh.blocks[0].mlp.proj.weight.any()  # zero-init like every block's output projection
    assert sum(p.numel() for p in fresh.parameters()) == analytic_count(cfg) == analytic_count(TINY) + 2 * 32 * 48 + 32


def test_mamba_block_mlp_weights_are_classified_like_the_attention_mlp():
    model = build_model(dataclasses.replace(TINY, mamba_mlp_mult=1.5))
    shapes = dict(model.named_parameters())
    for name in ("blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight"):
        assert size_group(name) == "mlp" and optim_group(name, shapes[name].ndim) == "matrix"
        assert ttt_subset(name, "mlp") and not ttt_subset(name, "ssm") and not ttt_subset(name, "norms")
    assert size_group("blocks.0.mlp_scale") == "other" and optim_group("blocks.0.mlp_scale", 1) == "scalar"
    assert ttt_subset("blocks.0.mlp_scale", "norms")
    groups = {n: g for g, items in model.param_groups().items() for n, _ in items}
    assert groups["blocks.0.mlp.fc.weight"] == groups["blocks.0.mlp.proj.weight"] == "matrix"
    assert groups["blocks.0.mlp_scale"] == "scalar"
    # quant.bits_mlp reaches the Mamba block's MLP at QAT too
    bits = qat_module_bits(model, 6, QuantConfig(bits_mlp=5))
    assert bits["blocks.0.mlp.fc"] == bits["blocks.0.mlp.proj"] == bits["blocks.1.mlp.fc"] == 5
    assert bits["blocks.0.mixer.in_proj"] == 6


def test_an_optimizer_step_trains_the_mamba_block_mlp():
    p = load_params(REPO / "params.yaml", ["model.mamba_mlp_mult=1.0", "train.device=cpu"])
    cfg = dataclasses.replace(p.model, d_model=32, headdim=16, num_heads=2, num_kv_heads=1, vocab_size=128,
                              bigram_buckets=0, bigram_dim=0, ssm_backend="reference", attn_backend="sdpa")
    model = build_model(cfg)
    opts = build_optimizers(model, p.train)
    before = {n: t.detach().clone() for n, t in model.named_parameters() if ".mlp." in n or "mlp_scale" in n}
    ids = _ids(shape=(2, 16))
    for _ in range(2):  # the zero-init proj moves first, then fc gets a gradient through it
        model(ids[:, :-1], targets=ids[:, 1:]).backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
    changed = {n for n, t in model.named_parameters() if n in before and not torch.equal(t, before[n])}
    assert {f"blocks.{i}.mlp.{w}.weight" for i in (0, 1, 3) for w in ("fc", "proj")} <= changed


# ------------------------------------------------------------------------------------------------
# Stored and loaded
# ------------------------------------------------------------------------------------------------

def check_artifact_round_trip(tmp_path, cfg: ModelConfig, model, ids: torch.Tensor):
    """GPTQ (Hessians from `ids`) -> package -> load: the artifact records `cfg`, the loaded model's logits equal
    those of a model built here from the dequantized weights, and differ from `model`'s only by quantization.
    Returns (the loaded model, the Hessians)."""
    hess, _ = collect_hessians(model, [ids], "cpu")
    tensors, spec, _ = quantize_model(model, hess, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(cfg))
    art = open_artifact(tmp_path / "art")
    assert art.config == cfg
    loaded = load_model_from_artifact(tmp_path / "art")
    reference = build_model(cfg)  # the dequantized weights in a model built here
    reference.load_state_dict(dequantize(art.tensors, art.spec), strict=True)
    with torch.no_grad():
        got, want, original = loaded(ids), reference.eval()(ids), model(ids)
    assert torch.equal(got, want)
    assert 0 < (got - original).abs().max() < 0.1 * original.std()  # quantized, and still the same model
    return loaded, hess


@pytest.mark.parametrize("lever", [*LEVERS, "nope"])
def test_a_model_with_each_lever_round_trips_through_the_artifact(tmp_path, lever):
    # NoPE is not in LEVERS: it excludes rope_dims, which the all-levers-on test below sets
    cfg = dataclasses.replace(TINY, layer_pattern="MAM", **{**LEVERS, "nope": {"rope": False}}[lever])
    loaded, hess = check_artifact_round_trip(tmp_path, cfg, _perturbed(cfg), _ids())
    assert loaded.blocks[1].attn.rope is cfg.rope and loaded.blocks[1].attn.rope_dims == (cfg.rope_dims or 16)
    if lever == "mamba_mlp":
        assert {"blocks.0.mlp.fc", "blocks.2.mlp.proj"} <= set(hess)  # GPTQ sees the new linears


@pytest.mark.parametrize("change, match", [
    ({"rope_dims": 3}, "bad model config.*'model.rope_dims'"),
    ({"mamba_mlp_mult": 1.5}, "missing \\['blocks.0.mlp.fc.weight"),
])
def test_an_artifact_whose_lever_settings_disagree_with_its_tensors_is_refused(tmp_path, change, match):
    model = _perturbed(TINY)
    tensors, spec, _ = quantize_model(model, {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, {**to_dict(TINY), **change})
    with pytest.raises(ArtifactError, match=match):
        load_model_from_artifact(tmp_path / "art")


def test_every_lever_on_runs_under_bf16_autocast():
    model = _perturbed(dataclasses.replace(TINY, **{k: v for opt in LEVERS.values() for k, v in opt.items()}))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(_ids())
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
