"""golf/param_groups.py: every parameter of every shipped config in exactly one group, agreeing with the
optimizer's grouping, on meta-device models (no memory, no init cost)."""

from pathlib import Path

import pytest
import torch

from golf.config import load_params
from golf.model import build_model
from golf.param_groups import BIT_GROUPS, OPTIM_GROUPS, SIZE_GROUPS, group_bits, optim_group, size_group

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(REPO.glob("configs/*.yaml")) + [REPO / "params.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_parameter_of_every_config_lands_in_one_group(path):
    cfg = load_params(path).model
    with torch.device("meta"):
        model = build_model(cfg, "meta")
    model_groups = {n: key for key, items in model.param_groups().items() for n, _ in items}
    seen = {g: 0 for g in SIZE_GROUPS}
    for name, p in model.named_parameters():
        g = size_group(name)
        assert g in SIZE_GROUPS, name
        seen[g] += 1
        assert optim_group(name, p.ndim) == model_groups[name], name
        assert optim_group(name, p.ndim) in OPTIM_GROUPS
    assert seen["embed"] >= 1 and seen["other"] >= 1
    if "M" in cfg.layer_pattern:
        n_m = cfg.layer_pattern.count("M")
        assert seen["mamba_in"] == seen["mamba_out"] == n_m and seen["mamba_dynamics"] == 5 * n_m  # A_log dt_bias D conv w/b
    if "A" in cfg.layer_pattern:
        n_a = cfg.layer_pattern.count("A")
        assert seen["attn"] == 4 * n_a and seen["mlp"] == 2 * n_a


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


def test_qat_trains_each_linear_at_its_stored_width():
    """QAT fake-quantizes a group at quant.bits_<group> (int5 in_proj/MLP: qmax 15), the rest at train.qat_bits."""
    from golf.param_groups import qat_module_bits
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
