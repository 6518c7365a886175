"""GQA causal self-attention with RoPE. One wrapper over three kernels, chosen once at model build:
FlashAttention-3 (`flash_attn_interface`), FlashAttention-2 (`flash_attn`), else PyTorch SDPA.

All three compute softmax(q kᵀ / sqrt(D) + causal mask) v with num_heads / num_kv_heads query heads per
key/value head. Flash kernels take only bf16/fp16, so an fp32 forward (CPU tests, fp32 eval) uses SDPA on
every path; RoPE tables are fp32 on every path (see rope_tables).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch import nn

from golf.errors import GolfError

log = logging.getLogger(__name__)


def _import_flash(module: str):
    """flash_attn_func from `module`, or None when it is missing or does not import (e.g. built for another
    torch/CUDA)."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.import_module(module).flash_attn_func
    except (ImportError, AttributeError) as e:
        log.warning("%s found but failed to import: %s", module, e)
        return None


def resolve_attn_backend(requested: str, device: torch.device | str) -> tuple[str, object]:
    """("flash3" | "flash2", fn) when requested/auto and importable on CUDA, else ("sdpa", None)."""
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and requested in ("auto", "flash"):
        for name, module in (("flash3", "flash_attn_interface"), ("flash2", "flash_attn")):
            fn = _import_flash(module)
            if fn is not None:
                return name, fn
    if requested == "flash":
        raise GolfError("model.attn_backend is 'flash' but neither flash-attn 3 (flash_attn_interface) nor "
                        "flash-attn 2 is importable on a CUDA device here; use 'auto' or 'sdpa'")
    return "sdpa", None


def rope_tables(seq_len: int, head_dim: int, base: float, device: torch.device, offset: int = 0,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim/2), computed in fp32 (fp64 if asked), never in the model's bf16.

    Positions must never be materialized in bf16: bf16 cannot represent integers above 256 exactly, and
    rounded positions wreck attention (a shared anchor measured val loss 3.02 instead of 2.37 that way).
    Nothing here is a buffer, so model.bfloat16() cannot reach it, and compiled and eager graphs compute
    the same fp32 tables.
    """
    dtype = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim))
    pos = torch.arange(offset, offset + seq_len, device=device, dtype=dtype)
    freqs = torch.outer(pos, inv_freq)  # (T, head_dim/2)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, D); rotate pairs (first half, second half) of its first R = 2 * cos.shape[-1] dims in at
    least fp32, return in x's dtype. R < D is partial RoPE: the last D - R dims pass through unrotated."""
    r = 2 * cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :r], cos, sin), x[..., r:]], dim=-1)
    d = x.shape[-1] // 2
    xf = x.to(torch.promote_types(x.dtype, cos.dtype))
    x1, x2 = xf[..., :d], xf[..., d:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, D/2)
    return torch.cat([x1 * c + x2 * s, x2 * c - x1 * s], dim=-1).to(x.dtype)


def exclude_self_value(out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's attention output its component along the token's own value vector.

    out: (B, T, H, D) attention output, v: (B, T, Hkv, D) the values it attended over, H a multiple of Hkv with
    query head h reading KV head h // (H / Hkv) (the grouping of SDPA's enable_gqa and of flash-attn). With
    u_t = v_t / |v_t| per KV head: out_t <- out_t - (out_t . u_t) u_t, so what a token passes on is only what
    it gathered from the other tokens' values, orthogonal to its own. A zero value vector leaves out_t as it
    is (F.normalize's eps). Computed in at least fp32, returned in out's dtype; it needs only the kernel's
    output and v, so every attention backend gets the same step.

    From "Exclusive Self Attention" (Shuangfei Zhai, arXiv:2603.09078, 2026), as Parameter Golf records apply
    it after the attention kernel (openai/parameter-golf PR #287; e.g.
    records/track_10min_16mb/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon, on the last 4 of 11 layers).
    """
    B, T, H, D = out.shape
    Hkv = v.shape[2]
    dt = torch.promote_types(out.dtype, torch.float32)
    o = out.to(dt).reshape(B, T, Hkv, H // Hkv, D)  # (B, T, Hkv, G, D): the G query heads of each KV head
    u = F.normalize(v.to(dt), dim=-1).unsqueeze(3)  # (B, T, Hkv, 1, D)
    o = o - (o * u).sum(dim=-1, keepdim=True) * u
    return o.reshape(B, T, H, D).to(out.dtype)


class GQAttention(nn.Module):
    """Causal GQA: num_heads query heads share num_kv_heads key/value heads; QK RMS-normed, per-head gain.

    rope_dims (model.rope_dims): RoPE rotates the first rope_dims dims of each q/k head, with frequencies
    base^(-2i/rope_dims) as if the head were that wide; the rest carry no position (0 = the whole head).
    rope (model.rope): false leaves q and k unrotated (NoPE): the layer sees position only through the causal
    mask and whatever earlier layers wrote into the residual stream (a hybrid's Mamba layers are recurrent).
    xsa (model.xsa): the attention output goes through exclude_self_value before o_proj."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, rope_base: float,
                 linear_cls=nn.Linear, backend: str = "sdpa", flash_fn=None, rope_dims: int = 0,
                 xsa: bool = False, rope: bool = True):
        super().__init__()
        self.xsa, self.rope = xsa, rope
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.rope_dims = rope_dims or self.head_dim
        if self.rope_dims % 2 or not 0 < self.rope_dims <= self.head_dim:
            raise ValueError(f"GQAttention: rope_dims must be even and in 1..{self.head_dim}, got {rope_dims}")
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = linear_cls(d_model, d_model, bias=False)
        self.k_proj = linear_cls(d_model, kv_dim, bias=False)
        self.v_proj = linear_cls(d_model, kv_dim, bias=False)
        self.o_proj = linear_cls(d_model, d_model, bias=False)
        self.q_gain = nn.Parameter(torch.full((num_heads,), 1.5))
        self.rope_base = rope_base
        self.backend, self._flash_fn = backend, flash_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, T, _ = x.shape
        q = self.q_proj(x).view(bsz, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = self.k_proj(x).view(bsz, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(bsz, T, self.num_kv_heads, self.head_dim)
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        if self.rope:
            cos, sin = rope_tables(T, self.rope_dims, self.rope_base, x.device, dtype=q.dtype)  # (T, R/2) fp32
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        if self.backend in ("flash3", "flash2") and q.dtype in (torch.bfloat16, torch.float16):
            out = self._flash_fn(q, k, v, causal=True)  # (B, T, H, D); GQA handled by the kernel
            out = out[0] if isinstance(out, tuple) else out
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True, enable_gqa=True).transpose(1, 2)
        if self.xsa:
            out = exclude_self_value(out, v)  # (B, T, H, D)
        return self.o_proj(out.reshape(bsz, T, -1))
