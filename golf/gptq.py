"""GPTQ quantization (Frantar et al., 2022, arXiv:2210.17323) with per-row scales and a clip search.

Per layer with weight W (out, in) and input Hessian H = XᵀX (in, in): columns are quantized in order of
descending diag(H) (act-order), in blocks of `block_size`; each column's rounding error is pushed onto
the not-yet-quantized columns through the upper Cholesky factor of H⁻¹ (with damping
`damp_frac * mean(diag H)`). The clip search runs the whole solve per candidate clip ratio and keeps, per
row, the ratio with the least output error tr((W-Q) H (W-Q)ᵀ).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from golf.config import QuantConfig

SSM_DYNAMICS_KEYS = ("A_log", "dt_bias", "conv1d.weight", "conv1d.bias")
EMBEDDING_KEYS = ("tok_emb.weight", "bigram.emb.weight")


def is_ssm_dynamics(name: str) -> bool:
    return name.endswith(SSM_DYNAMICS_KEYS) or name.endswith(".D")


def qmax_for(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def rtn(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest codes for per-row scales. w (out, in), scale (out,) → int8 codes (out, in)."""
    return torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)


def row_error(w: torch.Tensor, deq: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    """Per-row output error: ((W-Q) H (W-Q)ᵀ)_ii, or plain squared error without H. (out,)"""
    e = (w - deq).float()
    if h is None:
        return (e * e).sum(1)
    return ((e @ h) * e).sum(1)


def _gptq_solve(w: torch.Tensor, hinv_u: torch.Tensor, scale: torch.Tensor, qmax: int, block: int
                ) -> torch.Tensor:
    """Codes for w (out, in) with columns already permuted; hinv_u = upper Cholesky factor of H⁻¹."""
    w = w.clone()
    out_f, n = w.shape
    codes = torch.zeros(out_f, n, dtype=torch.int8, device=w.device)
    s = scale[:, None]  # (out, 1)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1 = w[:, i1:i2].clone()  # (out, b)
        err1 = torch.zeros_like(w1)
        h1 = hinv_u[i1:i2, i1:i2]  # (b, b)
        for i in range(i2 - i1):
            col = w1[:, i]
            q = torch.clamp(torch.round(col / s[:, 0]), -qmax, qmax)
            codes[:, i1 + i] = q.to(torch.int8)
            err = (col - q * s[:, 0]) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv_u[i1:i2, i2:]  # push the block's error onto later columns
    return codes


@dataclass
class QuantResult:
    codes: torch.Tensor  # (out, in) int8
    scale: torch.Tensor  # (out,) float32
    rel_err: float  # tr(E H Eᵀ) / tr(W H Wᵀ)
    rtn_rel_err: float  # same for plain round-to-nearest at the max-abs scale (for comparison)


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, block_size: int = 128, damp_frac: float = 0.01,
                  act_order: bool = True, clip_ratios: list[float] | None = None) -> QuantResult:
    w = w.detach().float()
    h = h.detach().float().clone()
    qmax = qmax_for(bits)
    n = w.shape[1]
    dead = torch.diag(h) == 0  # inputs that never fire: their weights cannot matter
    h[dead, dead] = 1.0
    w_work = w.clone()
    w_work[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(n, device=w.device)
    inv_perm = torch.argsort(perm)
    hp = h[perm][:, perm]
    damp = damp_frac * torch.mean(torch.diag(hp))
    hp += damp * torch.eye(n, device=w.device)
    L = torch.linalg.cholesky(hp)
    hinv = torch.cholesky_inverse(L)
    hinv_u = torch.linalg.cholesky(hinv, upper=True)
    amax = w_work.abs().amax(1).clamp_min(1e-12)  # (out,)
    h_true = h.clone()
    h_true[dead, dead] = 0.0
    best_codes, best_scale, best_err = None, None, None
    for r in (clip_ratios or [1.0]):
        scale = amax * r / qmax
        codes = _gptq_solve(w_work[:, perm], hinv_u, scale, qmax, block_size)[:, inv_perm]
        err = row_error(w, codes.float() * scale[:, None], h_true)
        if best_err is None:
            best_codes, best_scale, best_err = codes, scale, err
        else:
            better = err < best_err
            best_codes = torch.where(better[:, None], codes, best_codes)
            best_scale = torch.where(better, scale, best_scale)
            best_err = torch.where(better, err, best_err)
    denom = float(((w @ h_true) * w).sum().clamp_min(1e-30))
    rtn_scale = amax / qmax
    rtn_err = row_error(w, rtn(w, rtn_scale, qmax).float() * rtn_scale[:, None], h_true)
    return QuantResult(best_codes, best_scale, float(best_err.sum()) / denom, float(rtn_err.sum()) / denom)


def rtn_quantize(w: torch.Tensor, bits: int, clip_ratios: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row round-to-nearest with a per-row clip search on squared error (for tensors without H)."""
    w = w.detach().float()
    qmax = qmax_for(bits)
    amax = w.abs().amax(1).clamp_min(1e-12)
    best = None
    for r in (clip_ratios or [1.0]):
        scale = amax * r / qmax
        codes = rtn(w, scale, qmax)
        err = row_error(w, codes.float() * scale[:, None], None)
        if best is None:
            best = (codes, scale, err)
        else:
            better = err < best[2]
            best = (torch.where(better[:, None], codes, best[0]), torch.where(better, scale, best[1]),
                    torch.where(better, err, best[2]))
    return best[0], best[1]


def quantize_state_dict(state: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], cfg: QuantConfig,
                        device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Quantize a model's state dict. Returns (tensors to store, per-tensor spec, per-layer report).

    Stored tensors: `<name>.q` (int8 codes) + `<name>.scale` (fp16) for quantized matrices, `<name>` for
    float ones. The spec says how each original tensor was stored."""
    float_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[cfg.float_dtype]
    tensors, spec, report = {}, {}, {}
    for name in sorted(state):
        t = state[name].detach()
        module = name.removesuffix(".weight")
        if is_ssm_dynamics(name):
            tensors[name] = t.float().cpu().contiguous()
            spec[name] = {"kind": "float", "dtype": "fp32", "shape": list(t.shape), "why": "ssm_dynamics"}
        elif t.ndim != 2 or t.numel() <= cfg.float_max_numel:
            tensors[name] = t.to(float_dtype).cpu().contiguous()
            spec[name] = {"kind": "float", "dtype": cfg.float_dtype, "shape": list(t.shape), "why": "small"}
        elif name in EMBEDDING_KEYS:
            codes, scale = rtn_quantize(t.to(device), cfg.embed_bits, cfg.clip_ratios if cfg.clip_search else None)
            tensors[name + ".q"], tensors[name + ".scale"] = codes.cpu(), scale.half().cpu()
            spec[name] = {"kind": "int", "bits": cfg.embed_bits, "shape": list(t.shape), "method": "rtn"}
        elif module in hessians:
            t0 = time.time()
            res = gptq_quantize(t.to(device), hessians[module].to(device), cfg.bits, cfg.block_size,
                                cfg.damp_frac, cfg.act_order, cfg.clip_ratios if cfg.clip_search else None)
            tensors[name + ".q"], tensors[name + ".scale"] = res.codes.cpu(), res.scale.half().cpu()
            spec[name] = {"kind": "int", "bits": cfg.bits, "shape": list(t.shape), "method": "gptq"}
            report[module] = {"rel_err": res.rel_err, "rtn_rel_err": res.rtn_rel_err,
                              "secs": round(time.time() - t0, 4)}
        else:
            codes, scale = rtn_quantize(t.to(device), cfg.bits, cfg.clip_ratios if cfg.clip_search else None)
            tensors[name + ".q"], tensors[name + ".scale"] = codes.cpu(), scale.half().cpu()
            spec[name] = {"kind": "int", "bits": cfg.bits, "shape": list(t.shape), "method": "rtn"}
    return tensors, spec, report


def dequantize(tensors: dict[str, torch.Tensor], spec: dict) -> dict[str, torch.Tensor]:
    """Float32 state dict from stored tensors + spec."""
    out = {}
    for name, s in spec.items():
        if s["kind"] == "int":
            out[name] = tensors[name + ".q"].float() * tensors[name + ".scale"].float()[:, None]
        else:
            out[name] = tensors[name].float()
    return out
