"""GPTQ quantization (Frantar et al., 2022, arXiv:2210.17323) with per-row scales and a per-row clip search.

For a linear layer with weight W (out, in) and input Hessian H = XᵀX (in, in), the output error of a
quantized Q is ||(W-Q)X||² = tr((W-Q) H (W-Q)ᵀ), a sum of independent per-row terms. GPTQ quantizes the
columns one at a time and pushes each column's rounding error onto the columns not yet quantized, through
the upper Cholesky factor of H⁻¹, so later columns compensate for earlier ones:

- columns in order of descending diag(H) (act-order): the inputs with the most energy are fixed first,
  while many columns are still free to absorb their error;
- damping `damp_frac * mean(diag H)` on the diagonal keeps the Cholesky factorization well conditioned;
- blocks of `block_size` columns: the error is applied inside a block column by column, then to the rest
  of the matrix with one matmul per block (same result, far fewer small kernels);
- dead inputs (diag H = 0: never non-zero on the calibration tokens) get a unit diagonal, so their column
  is plain round-to-nearest and feeds no error to others; their weights are kept, not zeroed;
- clip search (quant.clip_mode: search): every candidate clip ratio r gives per-row scales
  r * max|w_row| / qmax. Rows are independent, so all candidates are solved in ONE pass over a (R*out, in)
  stack and each row keeps the candidate with the least tr((W-Q) H (W-Q)ᵀ) row term;
- sigma clip (quant.clip_mode: sigma): one candidate per row, min(k * std(w_row), max|w_row|) / qmax, k =
  quant.clip_sigmas: a clip that follows the row's spread rather than its single largest weight;
- bit width per tensor group (quant.bits_<group>, groups in golf/param_groups.py): e.g. int5 Mamba in_proj
  and MLP, int6 elsewhere, int8 embeddings; the spec records each tensor's width.

Scales are rounded to fp16 before the solve, so what GPTQ optimizes is exactly what gets stored.
Codes are int8 containers holding values in [-qmax, qmax] (int6: [-31, 31]); golf.artifact.dequantize
turns the stored form back into floats (codes * per-row scale).

Tensors that are not block matrices are handled by `quantize_state_dict`: embeddings get per-row int8
round-to-nearest (no Hessian), small tensors stay float (quant.float_dtype), SSM dynamics (A_log, dt_bias,
D, conv1d.*) stay fp32 whatever their size.

Cost per layer: one Cholesky of (in, in) plus `in` column steps, each an O(R*out*block) update; the block
updates add about R*out*in²/2 multiply-adds in matmuls. The Python loop runs `in` times per layer (~7 small
kernels a step),
so on a GPU a 1612x512 layer with 6 clip ratios takes tens of milliseconds; the cost grows linearly in
the number of layers and in `in`, and the matmul part in R*out*in².
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from golf.config import QuantConfig
from golf.errors import GolfError
from golf.io import atomic_path
from golf.param_groups import BIT_GROUPS, is_embedding, is_mamba_dynamics, size_group

FP16_TINY = 2.0 ** -24  # the smallest positive fp16 (subnormal): scales never round to 0
FP16_MAX = 65504.0
QUANT_FORMAT = "golf-quant-1"


def group_bits(name: str, bits: int, embed_bits: int, per_group: dict[str, int]) -> int:
    """A quantized matrix's width: embed_bits for embeddings, else per_group[its group] or `bits` (0 or unset)."""
    g = size_group(name)
    return embed_bits if g == "embed" else per_group.get(g) or bits


def quant_group_bits(quant_cfg) -> dict[str, int]:
    """quant.bits_<group> as {group: bits}; 0 means the default width."""
    return {g: getattr(quant_cfg, f"bits_{g}") for g in BIT_GROUPS}


def qat_module_bits(model, qat_bits: int, quant_cfg) -> dict[str, int]:
    """Each QAT linear's fake-quant width (by module name): its stored width quant.bits_<group>, else
    `qat_bits`; training at the stored width keeps the int5 groups' quantization gap small."""
    per_group = quant_group_bits(quant_cfg)
    return {name: per_group.get(size_group(f"{name}.weight")) or qat_bits
            for name, m in model.named_modules() if hasattr(m, "qat_qmax")}


def qmax_for(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _fp16_scales(amax: torch.Tensor, ratios: list[float], qmax: int) -> torch.Tensor:
    """Per-row scales for each clip ratio, rounded to fp16 values (kept in fp32). amax (out,) → (R, out)."""
    r = torch.tensor(ratios, dtype=torch.float32, device=amax.device)[:, None]  # (R, 1)
    s = (amax[None, :] * r / qmax).clamp(FP16_TINY, FP16_MAX)
    return s.half().float().clamp_min(FP16_TINY)


def row_amax(w: torch.Tensor, clip_sigmas: float | None) -> torch.Tensor:
    """Per-row clip magnitude: max |w| of each row, or, with clip_sigmas = k, min(k * std(row), max |w|).
    w (out, in) → (out,)."""
    amax = w.abs().amax(1)
    if clip_sigmas is None:
        return amax
    return torch.minimum(amax, clip_sigmas * w.std(1, correction=0))


def rtn(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest codes. w (rows, in), scale (rows,) → int8 codes (rows, in)."""
    return torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)


def row_error(w: torch.Tensor, deq: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    """Per-row output error ((W-Q) H (W-Q)ᵀ)_ii, or the plain squared error without H. (..., out)"""
    e = (w - deq).float()
    if h is None:
        return (e * e).sum(-1)
    return ((e @ h) * e).sum(-1)


def _hinv_upper(h: torch.Tensor, damp: float, source: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp·I)⁻¹; the damping grows tenfold (up to 4 times) if H is singular."""
    n = h.shape[0]
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    for _ in range(5):
        L, info = torch.linalg.cholesky_ex(h + damp * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0:
                return U
        damp = max(damp * 10.0, 1e-6 * float(h.diagonal().abs().mean()) + 1e-12)
    raise GolfError(f"GPTQ: the Hessian of {source} is not positive definite even with damping {damp:.3g} "
                    "(raise quant.damp_frac or calibrate on more tokens)")


def _gptq_solve(w: torch.Tensor, hinv_u: torch.Tensor, scale: torch.Tensor, qmax: int, block: int
                ) -> torch.Tensor:
    """Codes for w (rows, n), columns already in solve order; hinv_u (n, n) upper Cholesky of H⁻¹;
    scale (rows,). Returns int8 codes (rows, n)."""
    w = w.clone()
    rows, n = w.shape
    codes = torch.empty(rows, n, dtype=torch.int8, device=w.device)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1 = w[:, i1:i2]  # (rows, b) view: updated in place
        err1 = torch.empty_like(w1)  # (rows, b) scaled errors of this block
        h1 = hinv_u[i1:i2, i1:i2]  # (b, b)
        for i in range(i2 - i1):
            col = w1[:, i]  # (rows,)
            q = torch.clamp(torch.round(col / scale), -qmax, qmax)
            codes[:, i1 + i] = q.to(torch.int8)
            err = (col - q * scale) / h1[i, i]  # (rows,)
            w1[:, i + 1:] -= err[:, None] * h1[i, i + 1:][None, :]  # compensate inside the block
            err1[:, i] = err
        if i2 < n:
            w[:, i2:] -= err1 @ hinv_u[i1:i2, i2:]  # the block's error onto all later columns at once
    return codes


@dataclass
class QuantResult:
    codes: torch.Tensor  # (out, in) int8 in [-qmax, qmax]
    scale: torch.Tensor  # (out,) float32 holding fp16-representable values
    rel_err: float  # ||(W-Q)X|| / ||WX|| = sqrt(tr(E H Eᵀ) / tr(W H Wᵀ)), E = W - Q (Q dequantized)
    rtn_rel_err: float  # the same for round-to-nearest at the max-abs scale (the baseline GPTQ must beat)
    clip_mean: float  # mean chosen clip ratio over rows
    dead_cols: int  # inputs with diag H = 0


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, block_size: int = 128, damp_frac: float = 0.01,
                  act_order: bool = True, clip_ratios: list[float] | None = None, source: str = "layer",
                  clip_sigmas: float | None = None) -> QuantResult:
    """GPTQ of one weight w (out, in) against its input Hessian h (in, in), float32 math throughout.
    clip_sigmas (k): one clip per row at min(k·std, max|w|), instead of the clip_ratios candidates."""
    w = w.detach().float()
    h_true = h.detach().float().to(w.device)
    out_f, n = w.shape
    if h_true.shape != (n, n):
        raise GolfError(f"GPTQ: Hessian of {source} has shape {tuple(h_true.shape)}, expected ({n}, {n})")
    if not torch.isfinite(h_true).all():
        raise GolfError(f"GPTQ: Hessian of {source} has non-finite entries (bad calibration run)")
    qmax = qmax_for(bits)
    ratios = list(clip_ratios) if clip_ratios and clip_sigmas is None else [1.0]
    diag = h_true.diagonal()
    dead = diag <= 0  # (in,)
    amax = row_amax(w, clip_sigmas)  # (out,)
    denom = float(row_error(w, torch.zeros_like(w), h_true).sum())
    scales = _fp16_scales(amax, ratios, qmax)  # (R, out)
    if bool(dead.all()) or denom <= 0:
        # The layer never saw a non-zero input: nothing to weigh errors by, fall back to round-to-nearest.
        codes, scale, best = _rtn_search(w, scales, qmax)
        return QuantResult(codes, scale, 0.0, 0.0, float(torch.tensor(ratios)[best.cpu()].mean()),
                           int(dead.sum()))

    hw = h_true.clone()
    hw[dead, dead] = 1.0  # dead inputs: decoupled unit-variance columns (plain rounding, no feedback)
    perm = torch.argsort(diag, descending=True, stable=True) if act_order else torch.arange(n, device=w.device)
    inv_perm = torch.argsort(perm)
    hp = hw[perm][:, perm]  # (in, in) in solve order
    damp = damp_frac * float(diag.mean())
    hinv_u = _hinv_upper(hp, damp, source)

    R = len(ratios)
    w_stack = w[:, perm].repeat(R, 1)  # (R*out, in): one copy per clip ratio, rows stay independent
    codes = _gptq_solve(w_stack, hinv_u, scales.reshape(-1), qmax, block_size)[:, inv_perm]
    codes = codes.view(R, out_f, n)
    err = row_error(w[None], codes.float() * scales[:, :, None], h_true)  # (R, out)
    best = err.argmin(0)  # (out,)
    rows = torch.arange(out_f, device=w.device)
    codes, scale, best_err = codes[best, rows], scales[best, rows], err[best, rows]

    rtn_s = scales[0] if ratios[0] == 1.0 and clip_sigmas is None else _fp16_scales(w.abs().amax(1), [1.0], qmax)[0]
    rtn_err = row_error(w, rtn(w, rtn_s, qmax).float() * rtn_s[:, None], h_true)
    ratio_t = torch.tensor(ratios, device=w.device)
    return QuantResult(codes.contiguous(), scale, (float(best_err.sum()) / denom) ** 0.5,
                       (float(rtn_err.sum()) / denom) ** 0.5, float(ratio_t[best].mean()), int(dead.sum()))


def rtn_quantize(w: torch.Tensor, bits: int, clip_ratios: list[float] | None = None,
                 clip_sigmas: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row round-to-nearest; with several clip ratios, each row keeps the one of least squared error;
    with clip_sigmas, one clip per row (row_amax). w (out, in) → (int8 codes (out, in), fp16-valued float32
    scales (out,))."""
    w = w.detach().float()
    qmax = qmax_for(bits)
    ratios = list(clip_ratios) if clip_ratios and clip_sigmas is None else [1.0]
    scales = _fp16_scales(row_amax(w, clip_sigmas), ratios, qmax)  # (R, out)
    codes, scale, _ = _rtn_search(w, scales, qmax)
    return codes, scale


def _rtn_search(w: torch.Tensor, scales: torch.Tensor, qmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest at each candidate scale row (R, out); per row the least squared error wins."""
    codes = torch.stack([rtn(w, s, qmax) for s in scales])  # (R, out, in)
    err = row_error(w[None], codes.float() * scales[:, :, None], None)  # (R, out)
    best = err.argmin(0)  # (out,)
    rows = torch.arange(w.shape[0], device=w.device)
    return codes[best, rows].contiguous(), scales[best, rows], best


# --------------------------------------------------------------------------------------------------
# A whole model
# --------------------------------------------------------------------------------------------------


def embedding_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of every nn.Embedding weight (quantized int8 per row, without a Hessian)."""
    return {f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if isinstance(m, torch.nn.Embedding)}


def quantize_state_dict(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], cfg: QuantConfig,
                        device: torch.device | str = "cpu", embed_names: set[str] | None = None,
                        progress: Callable[[int, int], None] | None = None
                        ) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Quantize a state dict. Returns (tensors to store, per-tensor spec, per-layer report).

    Stored tensors: `<name>.q` (int8 codes) + `<name>.scale` (fp16, one per row) for quantized matrices,
    `<name>` itself for float ones. The spec (JSON-able) says how each original tensor was stored; the
    report has, per GPTQ layer, the relative output error estimated through H and the time taken.
    progress(elements done, all elements) is called after each tensor."""
    float_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.float_dtype]
    embeds = {n for n in state if is_embedding(n)} if embed_names is None else set(embed_names)
    sigmas = cfg.clip_sigmas if cfg.clip_mode == "sigma" else None
    clips = cfg.clip_ratios if cfg.clip_search and sigmas is None else None
    per_group = quant_group_bits(cfg)
    bad = {g: b for g, b in per_group.items() if b == 1}
    if bad:
        raise GolfError(f"quant.bits_{next(iter(bad))}: 1 bit leaves no levels; expected 0 (= quant.bits) or 2..8")
    tensors, spec, report = {}, {}, {}
    total, done = sum(t.numel() for t in state.values()), 0
    for name in sorted(state):
        t = state[name].detach()
        if progress is not None:
            progress(done, total)
            done += t.numel()
        module = name.removesuffix(".weight")
        shape = list(t.shape)
        if is_mamba_dynamics(name):  # they set the recurrence: kept fp32
            tensors[name] = t.float().cpu().contiguous()
            spec[name] = {"kind": "float", "dtype": "fp32", "shape": shape, "why": "ssm_dynamics"}
        elif t.ndim != 2 or t.numel() <= cfg.float_max_numel:
            tensors[name] = t.to(float_dtype).cpu().contiguous()
            spec[name] = {"kind": "float", "dtype": cfg.float_dtype, "shape": shape, "why": "small"}
        elif name in embeds:
            codes, scale = rtn_quantize(t.to(device), cfg.embed_bits, clips, sigmas)
            _store_int(tensors, name, codes, scale)
            spec[name] = {"kind": "int", "bits": cfg.embed_bits, "shape": shape, "method": "rtn"}
        elif name.endswith(".weight") and module in hessians:
            t0 = time.time()
            bits = group_bits(name, cfg.bits, cfg.embed_bits, per_group)
            res = gptq_quantize(t.to(device), hessians[module].to(device), bits, cfg.block_size,
                                cfg.damp_frac, cfg.act_order, clips, source=module, clip_sigmas=sigmas)
            _store_int(tensors, name, res.codes, res.scale)
            spec[name] = {"kind": "int", "bits": bits, "shape": shape, "method": "gptq"}
            report[module] = {"rel_err": res.rel_err, "rtn_rel_err": res.rtn_rel_err, "clip_mean": res.clip_mean,
                              "dead_cols": res.dead_cols, "shape": shape, "secs": round(time.time() - t0, 4)}
        else:  # a large matrix without a Hessian (not an nn.Linear input we saw): round-to-nearest
            bits = group_bits(name, cfg.bits, cfg.embed_bits, per_group)
            codes, scale = rtn_quantize(t.to(device), bits, clips, sigmas)
            _store_int(tensors, name, codes, scale)
            spec[name] = {"kind": "int", "bits": bits, "shape": shape, "method": "rtn"}
    if progress is not None:
        progress(total, total)
    return tensors, spec, report


def _store_int(tensors: dict, name: str, codes: torch.Tensor, scale: torch.Tensor) -> None:
    for key in (name + ".q", name + ".scale"):
        if key in tensors:
            raise GolfError(f"quantize: stored name {key!r} collides with another tensor of the model")
    tensors[name + ".q"] = codes.cpu().contiguous()
    tensors[name + ".scale"] = scale.half().cpu().contiguous()


def quantize_model(model: torch.nn.Module, hessians: dict[str, torch.Tensor], cfg: QuantConfig,
                   device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """`quantize_state_dict` of a model, its embeddings found by module type."""
    return quantize_state_dict(model.state_dict(), hessians, cfg, device, embedding_names(model), progress)


# --------------------------------------------------------------------------------------------------
# The quantize stage's output file
# --------------------------------------------------------------------------------------------------


def save_quantized(path: str | Path, tensors: dict[str, torch.Tensor], spec: dict, model_config: dict) -> None:
    """safetensors (atomic): int8 codes, fp16 scales, float tensors; spec + model config as JSON metadata."""
    from safetensors.torch import save_file

    meta = {"format": QUANT_FORMAT, "spec": json.dumps(spec, sort_keys=True),
            "model_config": json.dumps(model_config, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def load_quantized(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, spec, model_config) of a quantize-stage output; GolfError naming the file if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GolfError(f"quantized model {str(path)!r} not found (run the quantize stage first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a file handle, not a dict)
        if meta.get("format") != QUANT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {QUANT_FORMAT!r}")
        return tensors, json.loads(meta["spec"]), json.loads(meta["model_config"])
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error type for a corrupt file)
        raise GolfError(f"quantized model {str(path)!r} is not a golf quantize output: {e}") from None
