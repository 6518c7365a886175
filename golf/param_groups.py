"""Which group a GolfLM parameter belongs to, by its state-dict name: the one place these names are
defined (README "Parameter groups" lists each group's members)."""

from __future__ import annotations

OPTIM_GROUPS = ("matrix", "mamba_matrix", "embed", "scalar")
SIZE_GROUPS = ("embed", "mamba_in", "mamba_out", "attn", "mlp", "mamba_dynamics", "other")
BIT_GROUPS = ("mamba_in", "mamba_out", "attn", "mlp", "other")  # quant.bits_<group>; embed: quant.embed_bits
EMBEDDING_NAMES = ("tok_emb.weight", "bigram.emb.weight", "lm_head.weight")
MAMBA_DYNAMICS = ("A_log", "dt_bias", "D", "conv1d.weight", "conv1d.bias")  # a mixer's names; kept fp32
_NORM_KEYS = ("_scale", "resid_mix", "skip_weights", "norm", "q_gain", "smear_gate")


def _is_norm(name: str) -> bool:
    """A per-channel gain or mix: the TTT "norms" subset."""
    return any(k in name for k in _NORM_KEYS)


def _is_mixer_dynamics(name: str) -> bool:
    """A Mamba mixer's dynamics in the whole model (decay, step size, skip, conv): a few thousand numbers that set
    how far back each head remembers."""
    return ".mixer." in name and is_mamba_dynamics(name)


TTT_SUBSETS = {"all": lambda n: True, "norms": _is_norm, "ssm": lambda n: ".mixer." in n,
               "mlp": lambda n: ".mlp." in n, "dynamics": _is_mixer_dynamics,
               "dynamics_norms": lambda n: _is_mixer_dynamics(n) or _is_norm(n)}


def is_embedding(name: str) -> bool:
    return name in EMBEDDING_NAMES


def is_mamba_dynamics(name: str) -> bool:
    """A_log, dt_bias, D, conv1d.*: named from the model's root or from the mixer's."""
    return name.rsplit("mixer.", 1)[-1] in MAMBA_DYNAMICS


def is_mamba_matrix(name: str) -> bool:
    parts = name.split(".")
    return "mixer" in parts[:-2] and parts[-2] in ("in_proj", "out_proj") and parts[-1] == "weight"


def size_group(name: str) -> str:
    """The size / quantization group; stored names (.q, .scale) map to their parameter's."""
    base = name.removesuffix(".q").removesuffix(".scale")
    parts = base.split(".")
    if is_embedding(base):
        return "embed"
    if is_mamba_dynamics(base):
        return "mamba_dynamics"
    if is_mamba_matrix(base):
        return "mamba_in" if parts[-2] == "in_proj" else "mamba_out"
    if parts[-1] == "weight" and len(parts) > 2:
        if parts[-3] == "attn" and parts[-2] in ("q_proj", "k_proj", "v_proj", "o_proj"):
            return "attn"
        if parts[-3] == "mlp" and parts[-2] in ("fc", "proj"):
            return "mlp"
    return "other"


def optim_group(name: str, ndim: int) -> str:
    if is_embedding(name):
        return "embed"
    if ndim == 2 and is_mamba_matrix(name):
        return "mamba_matrix"
    if ndim == 2 and name.endswith(".weight") and not is_mamba_dynamics(name):
        return "matrix"
    return "scalar"


def ttt_subset(name: str, which: str) -> bool:
    """Whether test-time training's ttt.params `which` adapts the parameter."""
    return TTT_SUBSETS[which](name)
