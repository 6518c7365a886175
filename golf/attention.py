"""GQA causal self-attention with RoPE. One wrapper over four kernels, chosen once at model build:
FlashAttention-3 (`flash_attn_interface`), FlashAttention-2 (`flash_attn`), FlashAttention-4 (`flash_attn.cute`,
PyPI flash-attn-4, through golf's custom op golf::flash4_attn, golf/attn_ops.py), else PyTorch SDPA.

All of them compute softmax(q kᵀ / sqrt(D) + causal mask) v with num_heads / num_kv_heads query heads per
key/value head. Flash kernels take only bf16/fp16, so an fp32 forward (CPU tests, fp32 eval) uses SDPA on
every path; RoPE tables are fp32 on every path (see rope_tables), cached in each layer
(GQAttention.reserve_positions).
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


FA4_MODULE = "flash_attn.cute"  # FlashAttention-4 (PyPI flash-attn-4): model.attn_backend "flash4"


def flash_installed(module: str) -> bool:
    """Whether `module` is installed as a regular module or package, without importing it (its parent packages
    are imported). A namespace package does not count: FlashAttention-4's wheel installs flash_attn/cute/ with no
    flash_attn/__init__.py, so `flash_attn` is then a namespace package and flash-attn 2 is simply not there.
    Neither does a dotted name whose parent is missing or fails to import."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return False
    return spec is not None and spec.origin is not None


def _import_flash(module: str):
    """flash_attn_func from `module`, or None when it is missing (flash_installed) or does not import (e.g. built
    for another torch/CUDA: a warning says why)."""
    if not flash_installed(module):
        return None
    try:
        return importlib.import_module(module).flash_attn_func
    except (ImportError, AttributeError) as e:
        log.warning("%s found but failed to import: %s", module, e)
        return None


def resolve_attn_backend(requested: str, device: torch.device | str) -> tuple[str, object]:
    """(path, flash_attn_func) for model.attn_backend `requested` on `device`: ("flash3" | "flash2", fn) for
    auto/flash when importable on CUDA (FA3 first), ("flash4", fn) for flash4, else ("sdpa", None).

    "flash" and "flash4" name kernels that run only on CUDA, so asking for one where it cannot run (any CPU
    device included) is a GolfError, not a quiet SDPA; an fp32 forward of a flash model still runs SDPA (see the
    module docstring). "auto" never picks FlashAttention-4: flash4 (the golf::flash4_attn custom op, so that the
    compiled training step stays one graph) is chosen only explicitly until it has run inside the training step
    on a GPU; FA4's kernels alone were measured (golf/attn_ops.py)."""
    on_cuda = torch.device(device).type == "cuda"
    if requested == "flash4":
        if not on_cuda:
            raise GolfError(f"model.attn_backend is 'flash4' but the device is not CUDA, and FlashAttention-4 "
                            f"({FA4_MODULE}, `pip install flash-attn-4`) runs only on CUDA: use 'auto' or 'sdpa' here")
        if _import_flash(FA4_MODULE) is None:
            raise GolfError(f"model.attn_backend is 'flash4' but FlashAttention-4 ({FA4_MODULE}) does not import on "
                            "this CUDA machine: install it with `pip install flash-attn-4`, or use 'auto' or 'sdpa'")
        from golf import attn_ops  # training-only (golf.package.TRAINING_ONLY); artifacts load with "auto"

        return "flash4", attn_ops.flash_attn_func
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
    GQAttention caches these tables in non-persistent buffers and keeps them out of every 16-bit cast (its
    `_apply` rebuilds them here), so compiled and eager graphs use the same fp32 tables.
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


def norm_rope_gain(x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                   gain: torch.Tensor | None) -> torch.Tensor:
    """A query or key tensor x (B, T, H, D) as GQAttention prepares it with PyTorch ops (model.qk_rope "torch"):
    RMSNorm over each head, RoPE with cos, sin (T, R/2) (none where they are None: NoPE), then the per-head gain
    (H,) where given, each step rounded to x's dtype. golf::qk_norm_rope (golf/qk_rope_kernel.py) computes the
    same in one kernel."""
    x = F.rms_norm(x, (x.shape[-1],))
    if cos is not None:
        x = apply_rope(x, cos, sin)
    return x if gain is None else x * gain.to(x.dtype)[None, None, :, None]


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


# The paths whose flash_attn_func GQAttention calls on bf16/fp16 q, k, v (resolve_attn_backend)
FLASH_PATHS = ("flash3", "flash2", "flash4")

# Positions a new GQAttention caches RoPE tables for: the default seq_len of training, eval, calibration and
# TTT (0.5 MiB per layer at 64 rotated dims), so that the usual lengths never grow the cache. Growing it
# (GQAttention.reserve_positions) replaces buffers that an already compiled graph was traced with, and
# torch.compile then recompiles.
ROPE_CACHE_POSITIONS = 2048


class GQAttention(nn.Module):
    """Causal GQA: num_heads query heads share num_kv_heads key/value heads; QK RMS-normed, per-head gain.

    rope_dims (model.rope_dims): RoPE rotates the first rope_dims dims of each q/k head, with frequencies
    base^(-2i/rope_dims) as if the head were that wide; the rest carry no position (0 = the whole head).
    rope (model.rope): false leaves q and k unrotated (NoPE): the layer sees position only through the causal
    mask and whatever earlier layers wrote into the residual stream (a hybrid's Mamba layers are recurrent).
    xsa (model.xsa): the attention output goes through exclude_self_value before o_proj."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, rope_base: float,
                 linear_cls=nn.Linear, backend: str = "sdpa", flash_fn=None, rope_dims: int = 0,
                 xsa: bool = False, rope: bool = True, qk_rope=None):
        super().__init__()
        self.xsa, self.rope = xsa, rope
        # model.qk_rope "golf": golf::qk_norm_rope (golf.model.resolve_qk_rope), the queries' and keys' norm, RoPE
        # and the queries' gain as one op a tensor; None: the PyTorch expressions below
        self.qk_rope = qk_rope if rope else None
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
        # RoPE cos/sin tables, (n, rope_dims/2), fp32 (fp64 once the module is cast to fp64), built by
        # rope_tables; the forward slices the first T rows. Cached rather than computed per forward: under
        # torch.compile inductor inlines the table math (arange, pow, outer, cos, sin) into the fused q/k
        # RMS-norm + rotary kernels, recomputing it for every element of the (B, T, H, D) q and k, forward and
        # backward (attn_fit on an H200: ~21.8 ms of a 110.8 ms step; a hybrid with 3 attention layers ~6 ms).
        # Non-persistent: no state-dict or artifact entry. Built for ROPE_CACHE_POSITIONS at first; NoPE layers
        # (rope false) hold none.
        cos, sin = rope_tables(ROPE_CACHE_POSITIONS, self.rope_dims, rope_base, None,
                               dtype=torch.get_default_dtype()) if rope else (None, None)  # (n, R/2)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def reserve_positions(self, n: int) -> None:
        """Build the RoPE tables anew with rope_tables for max(n, cached) positions, in the tables' dtype, on
        their device. Outside autograd and inference mode, so that tables grown in an eval under
        torch.inference_mode can still be saved for a later backward."""
        if self.rope_cos is None:
            return
        self._build_tables(max(n, self.rope_cos.shape[0]), self.rope_cos.device, self.rope_cos.dtype)

    def _build_tables(self, n: int, device: torch.device, dtype: torch.dtype) -> None:
        with torch.inference_mode(False), torch.no_grad():
            self.rope_cos, self.rope_sin = rope_tables(n, self.rope_dims, self.rope_base, device,
                                                       dtype=dtype)  # (n, R/2) each

    def _apply(self, fn, recurse=True):
        """Casts (model.bfloat16(), .half(), .to(dtype)) never leave the RoPE tables in 16 bits: where fn
        changed their dtype, rope_tables rebuilds them on their new device in at least fp32 (fp64 after
        .double()); they are not cast back up from the 16-bit copy. Device moves just move them."""
        before = self.rope_cos
        super()._apply(fn, recurse)
        after = self.rope_cos
        if after is not None and after.dtype != before.dtype:
            self._build_tables(before.shape[0], after.device, torch.promote_types(after.dtype, torch.float32))
        return self

    def _rope_for(self, T: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """cos, sin (T, R/2) for a q/k of `dtype`, in promote(dtype, fp32) as rope_tables(T, ..., dtype) gives
        them: the cached tables' first T rows (views) when they cover T positions; an eager forward grows the
        cache first. While torch.compile traces a T past the cache, the tables are computed in the graph
        instead (correct, but inductor then recomputes them per q/k element, see __init__), so that the
        traced graph never mutates the buffers. The same inline path serves a q whose precision differs from
        the tables' (e.g. fp64 inputs to an fp32 module)."""
        if self.rope_cos.dtype == torch.promote_types(dtype, torch.float32):
            if T > self.rope_cos.shape[0] and not torch.compiler.is_compiling():
                self.reserve_positions(T)
            if T <= self.rope_cos.shape[0]:
                return self.rope_cos[:T], self.rope_sin[:T]  # (T, R/2) views
        return rope_tables(T, self.rope_dims, self.rope_base, device, dtype=dtype)  # (T, R/2)

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d_model) → (B, T, d_model); out_scale (d_model,) scales the output channels through o_proj's
        weight (a QATLinear's out_scale; model.block_norm "golf_fold")."""
        bsz, T, _ = x.shape
        q = self.q_proj(x).view(bsz, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = self.k_proj(x).view(bsz, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(bsz, T, self.num_kv_heads, self.head_dim)
        # (T, R/2), fp32 (fp64 for an fp64 q); None without RoPE
        cos, sin = self._rope_for(T, q.dtype, x.device) if self.rope else (None, None)
        prepare = norm_rope_gain if self.qk_rope is None else self.qk_rope
        q, k = prepare(q, cos, sin, self.q_gain), prepare(k, cos, sin, None)
        if self.backend in FLASH_PATHS and q.dtype in (torch.bfloat16, torch.float16):
            # (B, T, H, D); GQA handled by the kernel. flash4: golf::flash4_attn, one opaque node under compile
            out = self._flash_fn(q, k, v, causal=True)
            out = out[0] if isinstance(out, tuple) else out
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True, enable_gqa=True).transpose(1, 2)
        if self.xsa:
            out = exclude_self_value(out, v)  # (B, T, H, D)
        out = out.reshape(bsz, T, -1)  # (B, T, d_model)
        return self.o_proj(out) if out_scale is None else self.o_proj(out, out_scale=out_scale)


def reserve_rope_positions(module, n: int) -> None:
    """reserve_positions(n) on every GQAttention inside `module` (the model, or the wrappers a trainer puts
    around it: StatefulLoss, DDP, a compiled module). Anything that is not an nn.Module holds none."""
    if isinstance(module, nn.Module):
        for m in module.modules():
            if isinstance(m, GQAttention):
                m.reserve_positions(n)
