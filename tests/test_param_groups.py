"""golf/param_groups.py: every parameter of every shipped config in exactly one group of each
classification (size, optimizer, TTT subsets), checked against what the model's module structure says each
parameter is, on meta-device models (no memory, no init cost)."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from golf.attention import GQAttention
from golf.config import TTTConfig, field_choices, load_params
from golf.gptq import group_bits
from golf.model import MLP, build_model, count_params
from golf.param_groups import (
    BIT_GROUPS,
    OPTIM_GROUPS,
    SIZE_GROUPS,
    TTT_SUBSETS,
    optim_group,
    size_group,
    ttt_subset,
)
from golf.ssm import Mamba2Mixer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [(p, []) for p in sorted(REPO.glob("configs/*.yaml")) + [REPO / "params.yaml"]]
CONFIGS.append((REPO / "params.yaml", ["model.tie_embeddings=false"]))  # an untied lm_head: no shipped config
CONFIGS += [(REPO / "params.yaml", [o]) for o in  # the architecture levers (tests/test_arch_levers.py), each on
            ("model.mamba_mlp_mult=2.0", "model.rope_dims=16", "model.mlp_act=leaky_relu2")]
CONFIGS += [(REPO / "params.yaml", [o]) for o in  # the seed's features (tests/test_seed_features.py), each on
            ("model.smear_gate=true", "model.xsa=true", "model.ln_scale=true")]


def _by_structure(model: nn.Module) -> dict[str, tuple[str, str]]:
    """(size group, optimizer group) of each parameter from the module that owns it, not from its name."""
    out = {}
    for mod_name, mod in model.named_modules():
        parent = model.get_submodule(mod_name.rpartition(".")[0]) if mod_name else None
        for pname, p in mod.named_parameters(recurse=False):
            name = f"{mod_name}.{pname}" if mod_name else pname
            if isinstance(mod, nn.Embedding) or (parent is model and mod_name == "lm_head"):
                g = "embed"
            elif isinstance(parent, Mamba2Mixer) and isinstance(mod, nn.Linear):
                g = {"in_proj": "mamba_in", "out_proj": "mamba_out"}[mod_name.rpartition(".")[2]]
            elif isinstance(parent, Mamba2Mixer) or (isinstance(mod, Mamba2Mixer) and pname != "norm_weight"):
                g = "mamba_dynamics"  # the conv and A_log / dt_bias / D: all the mixer owns but its gain
            elif isinstance(parent, GQAttention) and isinstance(mod, nn.Linear):
                g = "attn"
            elif isinstance(parent, MLP) and isinstance(mod, nn.Linear):
                g = "mlp"
            else:
                g = "other"
            if g == "embed":
                opt = "embed"
            elif g in ("mamba_in", "mamba_out"):
                opt = "mamba_matrix"
            elif isinstance(mod, nn.Linear) and pname == "weight":
                opt = "matrix"
            else:
                opt = "scalar"
            out[name] = (g, opt)
    return out


@pytest.mark.parametrize("path,overrides", CONFIGS, ids=lambda c: c.name if isinstance(c, Path) else ",".join(c))
def test_every_parameter_of_every_config_lands_in_one_group_of_each_classification(path, overrides):
    # the same parameters on every kernel path: the reference paths build anywhere (ssm_backend fused and
    # attn_backend flash4 need CUDA)
    cfg = dataclasses.replace(load_params(path, overrides).model, ssm_backend="reference", attn_backend="auto")
    with torch.device("meta"):
        model = build_model(cfg, "meta")
    names = [n for n, _ in model.named_parameters()]
    expected = _by_structure(model)
    assert sorted(expected) == sorted(names)
    model_groups = {n: key for key, items in model.param_groups().items() for n, _ in items}
    assert sorted(model_groups) == sorted(names)  # the optimizer's grouping: each parameter once
    seen = dict.fromkeys(SIZE_GROUPS, 0)
    for name, p in model.named_parameters():
        assert (size_group(name), optim_group(name, p.ndim)) == expected[name], name
        assert model_groups[name] == optim_group(name, p.ndim) in OPTIM_GROUPS
        seen[size_group(name)] += 1
    assert seen["embed"] == 1 + (cfg.bigram_buckets > 0) + (not cfg.tie_embeddings)
    n_m, n_a = cfg.layer_pattern.count("M"), cfg.layer_pattern.count("A")
    assert seen["mamba_in"] == seen["mamba_out"] == n_m and seen["mamba_dynamics"] == 5 * n_m  # A_log dt_bias D conv w/b
    assert seen["attn"] == 4 * n_a and seen["mlp"] == 2 * (n_a + n_m * (cfg.mamba_mlp_mult > 0))

    # TTT subsets (ttt.params), as golf/ttt.py and the README describe them
    subset = {w: {n for n in names if ttt_subset(n, w)} for w in TTT_SUBSETS}
    owned_by = {t: {f"{m}.{n}" for m, mod in model.named_modules() if isinstance(mod, t)
                    for n, _ in mod.named_parameters()} for t in (Mamba2Mixer, MLP)}
    assert subset["all"] == set(names)
    assert subset["ssm"] == owned_by[Mamba2Mixer]  # everything inside the Mamba mixers
    assert subset["mlp"] == owned_by[MLP]  # every block's MLP (Mamba blocks' too with model.mamba_mlp_mult)
    gains = {n for n in names if expected[n][1] == "scalar" and expected[n][0] != "mamba_dynamics"}
    assert subset["norms"] == gains  # per-channel gains and mixes: the scalars but the SSM dynamics
    assert all(model.get_parameter(n).ndim <= 2 and model.get_parameter(n).shape[-1] <= cfg.d_model * cfg.expand
               for n in gains)
    assert set(TTT_SUBSETS) == set(field_choices(TTTConfig, "params"))


def test_names_and_bit_widths():
    assert size_group("blocks.3.mixer.in_proj.weight.q") == "mamba_in"
    assert size_group("blocks.3.mixer.out_proj.weight.scale") == "mamba_out"
    assert size_group("blocks.3.mixer.norm_weight") == "other"
    assert size_group("blocks.3.mixer.conv1d.bias") == "mamba_dynamics"
    assert size_group("blocks.1.attn.o_proj.weight") == "attn" and size_group("blocks.1.attn.q_gain") == "other"
    assert size_group("blocks.1.mlp.proj.weight") == "mlp" and size_group("bigram.proj.weight") == "other"
    assert size_group("lm_head.weight") == "embed"
    per = {"mlp": 5, "mamba_in": 0}
    assert group_bits("blocks.1.mlp.fc.weight", 6, 8, per) == 5
    assert group_bits("blocks.0.mixer.in_proj.weight", 6, 8, per) == 6
    assert group_bits("tok_emb.weight", 6, 8, per) == 8
    assert set(BIT_GROUPS) < set(SIZE_GROUPS)


def test_the_seed_fit_config_loads_with_its_levers():
    from golf.config import train_budget_s

    p = load_params(REPO / "configs" / "hybrid_seed_fit.yaml")
    assert p.model.layer_pattern == "MMMMMMMMMMMMAAAMMM" and p.model.in_proj_multiple == 64
    assert p.package.target_bytes == 15_900_000 <= p.package.cap_bytes and p.package.compressor == "auto"
    assert (p.quant.bits_mamba_in, p.quant.bits_mlp) == (5, 5) and p.train.weight_decay_matrix == 0.04
    assert train_budget_s(p) == p.train.wallclock_s - 20.0


@pytest.mark.parametrize("name", ["hybrid_mlp_fit", "hybrid_mlp_tuned_fit"])
def test_the_mamba_mlp_hybrids_quantize_their_mamba_blocks_mlps_as_mlps(name):
    """The 7 Mamba blocks' own MLPs get quant.bits_mlp (int5) like the attention blocks' MLPs; each Mamba block
    has one, and the model has the parameter count its config's header gives."""
    p = load_params(REPO / "configs" / f"{name}.yaml")
    model = build_model(dataclasses.replace(p.model, ssm_backend="reference"), "cpu")  # fused needs CUDA
    assert count_params(model) == 26_796_500
    mamba = [i for i, kind in enumerate(p.model.layer_pattern) if kind == "M"]
    assert len(mamba) == 7 and p.model.mamba_mlp_mult == 2.75
    for i in mamba:
        assert size_group(f"blocks.{i}.mlp.fc.weight") == "mlp" and dict(model.named_parameters())[
            f"blocks.{i}.mlp.fc.weight"].shape == (int(2.75 * 512), 512)
        assert group_bits(f"blocks.{i}.mlp.fc.weight", p.quant.bits, p.quant.embed_bits,
                          {"mlp": p.quant.bits_mlp}) == 5


def test_qat_trains_each_linear_at_its_stored_width():
    """QAT fake-quantizes a group at quant.bits_<group> (int5 in_proj/MLP: qmax 15), the rest at train.qat_bits."""
    from golf.gptq import qat_module_bits
    params = load_params(REPO / "params.yaml", ["quant.bits_mamba_in=5", "quant.bits_mlp=4"])
    model = build_model(params.model, "cpu")
    bits = qat_module_bits(model, 6, params.quant)
    model.set_qat(True, 6, bits)
    qmax = {n: float(m.qat_qmax) for n, m in model.named_modules() if hasattr(m, "qat_qmax")}
    assert qmax and set(qmax) == set(bits)
    for name, q in qmax.items():
        want = {"mamba_in": 15.0, "mlp": 7.0}.get(size_group(f"{name}.weight"), 31.0)
        assert q == want, name
        assert bool(dict(model.named_modules())[name].qat_on)
    assert {15.0, 7.0, 31.0} <= set(qmax.values())  # the demo model has all three kinds
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        model.set_qat(True, 6, {next(iter(bits)): 1})
