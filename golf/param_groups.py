"""Which group a GolfLM parameter belongs to, by its state-dict name: the one place these names are defined.

Two classifications, each a partition of the model's parameters:

- optimizer groups (`optim_group`): "matrix" (2-D block weights: attention q/k/v/o, MLP fc/proj, the
  BigramHash projection), "mamba_matrix" (a Mamba mixer's
  in_proj / out_proj), "embed" (tok_emb, bigram.emb, an untied lm_head), "scalar" (everything else: norm
  gains, residual mixes, skip weights, q_gain, and the Mamba dynamics). Muon trains the first two, AdamW the
  others (golf.optim).
- size / quantization groups (`size_group`), what a per-group bit width or a size report refers to:
    embed           tok_emb, bigram.emb, an untied lm_head (per-row int, no Hessian)
    mamba_in        a Mamba mixer's in_proj (the largest group of the hybrids)
    mamba_out       a Mamba mixer's out_proj
    attn            attention q_proj / k_proj / v_proj / o_proj
    mlp             an attention block's MLP fc / proj
    mamba_dynamics  A_log, dt_bias, D and conv1d.* of a mixer: they set the recurrence, kept in fp32
    other           the rest: BigramHash proj, norm gains, residual mixes, skip weights, q_gain, biases
"""

from __future__ import annotations

OPTIM_GROUPS = ("matrix", "mamba_matrix", "embed", "scalar")
SIZE_GROUPS = ("embed", "mamba_in", "mamba_out", "attn", "mlp", "mamba_dynamics", "other")
# size groups whose matrices take a per-group bit width (quant.bits_<group>); embed has quant.embed_bits
BIT_GROUPS = ("mamba_in", "mamba_out", "attn", "mlp", "other")

EMBEDDING_NAMES = ("tok_emb.weight", "bigram.emb.weight", "lm_head.weight")
_ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def is_embedding(name: str) -> bool:
    """Token / bigram embeddings and an untied output head: rows indexed by token, trained by AdamW."""
    return name in EMBEDDING_NAMES


def is_mamba_dynamics(name: str) -> bool:
    """A_log, dt_bias, D and conv1d.* of a Mamba mixer: the recurrence's own parameters."""
    parts = name.split(".")
    return ".mixer." in f".{name}" and (parts[-1] in ("A_log", "dt_bias", "D") or "conv1d" in parts[:-1])


def is_mamba_matrix(name: str) -> bool:
    """A Mamba mixer's in_proj / out_proj weight."""
    parts = name.split(".")
    return "mixer" in parts[:-2] and parts[-2] in ("in_proj", "out_proj") and parts[-1] == "weight"


def size_group(name: str) -> str:
    """The size / quantization group of a parameter (module doc); stored names (.q, .scale) map to theirs."""
    base = name.removesuffix(".q").removesuffix(".scale")
    if is_embedding(base):
        return "embed"
    if is_mamba_dynamics(base):
        return "mamba_dynamics"
    parts = base.split(".")
    if is_mamba_matrix(base):
        return "mamba_in" if parts[-2] == "in_proj" else "mamba_out"
    if parts[-1] == "weight" and len(parts) >= 3:
        if parts[-3] == "attn" and parts[-2] in _ATTN_PROJ:
            return "attn"
        if parts[-3] == "mlp" and parts[-2] in ("fc", "proj"):
            return "mlp"
    return "other"


def optim_group(name: str, ndim: int) -> str:
    """The optimizer group of a parameter of `ndim` dimensions (module doc)."""
    if is_embedding(name):
        return "embed"
    if ndim == 2 and is_mamba_matrix(name):
        return "mamba_matrix"
    if ndim == 2 and name.endswith(".weight") and not is_mamba_dynamics(name):
        return "matrix"
    return "scalar"


def group_bits(name: str, bits: int, embed_bits: int, per_group: dict[str, int]) -> int:
    """Bit width of a quantized matrix: embed_bits for embeddings, per_group[size group] when set (> 0),
    else the default `bits`."""
    g = size_group(name)
    if g == "embed":
        return embed_bits
    return per_group.get(g) or bits


def quant_group_bits(quant_cfg) -> dict[str, int]:
    """quant.bits_<group> of a QuantConfig as {group: bits}; 0 means the default width."""
    return {g: getattr(quant_cfg, f"bits_{g}") for g in BIT_GROUPS}


def qat_module_bits(model, qat_bits: int, quant_cfg) -> dict[str, int]:
    """The fake-quant width of each QAT linear of `model` (modules with a `qat_qmax` buffer), by module
    name: the width its weight is stored at (quant.bits_<group>), or `qat_bits` where its group has none.
    Training at the stored width keeps the int5 groups' quantization gap as small as the int6 ones'."""
    per_group = quant_group_bits(quant_cfg)
    return {name: per_group.get(size_group(f"{name}.weight")) or qat_bits
            for name, m in model.named_modules() if hasattr(m, "qat_qmax")}
