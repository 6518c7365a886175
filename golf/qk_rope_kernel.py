"""golf's own Triton kernels for an attention layer's query/key preparation (model.qk_rope "golf"): each head's
RMSNorm, its rotary position embedding and, for the queries, the per-head gain, as one PyTorch custom operator,
golf::qk_norm_rope, with one backward operator, golf::qk_norm_rope_bwd.

What it computes, per row (one head of one token: D channels), the function golf.attention.GQAttention spells out
with PyTorch ops under "torch":
    rstd = 1 / sqrt(mean(x^2) + eps)                 (eps: F.rms_norm's default, golf.model.norm_eps)
    u    = x rstd, rotated: for the pairs (j, j + R/2), j < R/2, at the row's position t (cos, sin (T, R/2)):
           u_j = xh_j c_tj + xh_{j+R/2} s_tj,   u_{j+R/2} = xh_{j+R/2} c_tj - xh_j s_tj   (xh = x rstd)
           the last D - R channels pass through (partial RoPE, model.rope_dims)
    y    = u g_h                                     (g (H,): the query gain; none for the keys)
Backward, from dy: du = dy g_h; dxh the rotation's transpose applied to du (dxh_j = du_j c + du_{j+R/2} s,
dxh_{j+R/2} = du_{j+R/2} c - du_j s); dx = rstd (dxh - xh mean(dxh xh)); dg_h = the sum over the head's rows of
dy · u. Arithmetic in fp32 (fp64 for fp64 x), y and dx stored in x's dtype, rstd in the compute dtype. The
PyTorch path rounds to x's dtype after the norm and after the rotation; here it rounds once, at the end.

Why one op: under torch.compile inductor fuses this into one kernel a direction for q and one for k, at 2.2-2.6x
their memory floor on an H200 (hybrid_12_b131k's step: 0.67 ms forward and 0.82 ms backward for three attention
layers; bench/RESULTS.md 2026-12-02 twentieth block's profile). Here each direction reads and writes each element
once, and the forward keeps only rstd (4 bytes a row) for the backward, which recomputes the rest.

Layout: x (..., T, H, D) with the leading dims flattened to rows in (b, t, h) order (a contiguous copy where the
tensor is not laid out so); the row's position is (row // H) % T. One program per BLOCK_M rows; a row's two halves
load as two (BLOCK_M, R/2) tiles, its pass-through channels as a third. cos and sin are read at the row's
position (T rows of R/2, the tables' first T rows).

Limits. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 before triton is
first imported; tests/conftest.py). On CPU outside the interpreter the ops compute the PyTorch twin instead, and
golf.attention uses the torch path directly there. Training-only: an artifact's model is scored with "torch", the
same function.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_row_launch
from golf.model import norm_eps
from golf.ssm import compute_dtype

__all__ = ["interpreted", "qk_norm_rope", "qk_norm_rope_bwd_kernels", "qk_norm_rope_fwd_kernels",
           "qk_norm_rope_reference"]

OP = "golf::qk_norm_rope"

# Launch defaults: rows a program and warps, 32 rows of golf's head dim 64 over 4 warps (8 values a thread in
# each (rows, R/2) tile). Chosen offline, untimed: compiled for sm_90a (Triton's front end, its bundled ptxas), the
# backward takes 106-110 registers a thread where a thread holds 8 values a tile and 181-190 where it holds 16 (64
# rows over 4 warps, 128 over 8, 32 over 2), which would halve the warps an SM keeps in flight
# (bench/results/2026-12-02_qk_rope_offline/); bench/qk_rope_bench.py --launches times others on a GPU.
BLOCK_M = 32
NUM_WARPS = 4


@triton.jit
def _qk_rope_fwd_kernel(x_ptr, cos_ptr, sin_ptr, gain_ptr, y_ptr, rstd_ptr,
                        rows, H, T, sx, sy, scos, ssin,
                        D: tl.constexpr, HALF: tl.constexpr, PASS: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, EPS: tl.constexpr, HAS_GAIN: tl.constexpr,
                        ACC: tl.constexpr):
    pid = tl.program_id(0)
    r = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,): rows (b, t, h) flattened
    rmask = r < rows
    t = (r // H) % T  # (BM,): the row's position
    j = tl.arange(0, BLOCK_H)  # (BH,): the first half's channels
    m = rmask[:, None] & (j < HALF)[None, :]  # (BM, BH)
    ri = r.to(tl.int64)[:, None]  # rows * row stride can pass 2^31
    xa = tl.load(x_ptr + ri * sx + j[None, :], mask=m, other=0.0).to(ACC)  # (BM, BH)
    xb = tl.load(x_ptr + ri * sx + HALF + j[None, :], mask=m, other=0.0).to(ACC)
    ss = tl.sum(xa * xa, axis=1) + tl.sum(xb * xb, axis=1)  # (BM,)
    if PASS > 0:
        k = tl.arange(0, BLOCK_P)
        pm = rmask[:, None] & (k < PASS)[None, :]  # (BM, BP)
        xp = tl.load(x_ptr + ri * sx + 2 * HALF + k[None, :], mask=pm, other=0.0).to(ACC)
        ss += tl.sum(xp * xp, axis=1)
    rstd = 1.0 / tl.sqrt(ss / D + EPS)  # (BM,)
    scale = rstd
    if HAS_GAIN:
        scale = scale * tl.load(gain_ptr + r % H, mask=rmask, other=0.0).to(ACC)
    c = tl.load(cos_ptr + t[:, None] * scos + j[None, :], mask=m, other=0.0).to(ACC)  # (BM, BH)
    s = tl.load(sin_ptr + t[:, None] * ssin + j[None, :], mask=m, other=0.0).to(ACC)
    ya = (xa * c + xb * s) * scale[:, None]
    yb = (xb * c - xa * s) * scale[:, None]
    tl.store(y_ptr + ri * sy + j[None, :], ya.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(y_ptr + ri * sy + HALF + j[None, :], yb.to(y_ptr.dtype.element_ty), mask=m)
    if PASS > 0:
        tl.store(y_ptr + ri * sy + 2 * HALF + k[None, :], (xp * scale[:, None]).to(y_ptr.dtype.element_ty),
                 mask=pm)
    tl.store(rstd_ptr + r, rstd, mask=rmask)


@triton.jit
def _qk_rope_bwd_kernel(dy_ptr, x_ptr, cos_ptr, sin_ptr, gain_ptr, rstd_ptr, dx_ptr, gdot_ptr,
                        rows, H, T, sdy, sx, sdx, scos, ssin,
                        D: tl.constexpr, HALF: tl.constexpr, PASS: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, HAS_GAIN: tl.constexpr, ACC: tl.constexpr):
    """dx for BLOCK_M rows; with the gain, each row's dy · u (the gain's gradient before the sum over rows)."""
    pid = tl.program_id(0)
    r = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rmask = r < rows
    t = (r // H) % T
    j = tl.arange(0, BLOCK_H)
    m = rmask[:, None] & (j < HALF)[None, :]
    ri = r.to(tl.int64)[:, None]
    rstd = tl.load(rstd_ptr + r, mask=rmask, other=0.0).to(ACC)[:, None]  # (BM, 1)
    xa = tl.load(x_ptr + ri * sx + j[None, :], mask=m, other=0.0).to(ACC) * rstd  # (BM, BH): xh's halves
    xb = tl.load(x_ptr + ri * sx + HALF + j[None, :], mask=m, other=0.0).to(ACC) * rstd
    dya = tl.load(dy_ptr + ri * sdy + j[None, :], mask=m, other=0.0).to(ACC)
    dyb = tl.load(dy_ptr + ri * sdy + HALF + j[None, :], mask=m, other=0.0).to(ACC)
    c = tl.load(cos_ptr + t[:, None] * scos + j[None, :], mask=m, other=0.0).to(ACC)
    s = tl.load(sin_ptr + t[:, None] * ssin + j[None, :], mask=m, other=0.0).to(ACC)
    if PASS > 0:
        k = tl.arange(0, BLOCK_P)
        pm = rmask[:, None] & (k < PASS)[None, :]
        xp = tl.load(x_ptr + ri * sx + 2 * HALF + k[None, :], mask=pm, other=0.0).to(ACC) * rstd
        dyp = tl.load(dy_ptr + ri * sdy + 2 * HALF + k[None, :], mask=pm, other=0.0).to(ACC)
    if HAS_GAIN:
        ua = xa * c + xb * s
        ub = xb * c - xa * s
        gdot = tl.sum(dya * ua, axis=1) + tl.sum(dyb * ub, axis=1)  # (BM,)
        if PASS > 0:
            gdot += tl.sum(dyp * xp, axis=1)
        tl.store(gdot_ptr + r, gdot, mask=rmask)
        g = tl.load(gain_ptr + r % H, mask=rmask, other=0.0).to(ACC)[:, None]  # (BM, 1)
        dya = dya * g
        dyb = dyb * g
        if PASS > 0:
            dyp = dyp * g
    # the rotation's transpose, then the norm's backward
    da = dya * c - dyb * s
    db = dyb * c + dya * s
    proj = tl.sum(da * xa, axis=1) + tl.sum(db * xb, axis=1)  # (BM,)
    if PASS > 0:
        proj += tl.sum(dyp * xp, axis=1)
    proj = (proj / D)[:, None]
    tl.store(dx_ptr + ri * sdx + j[None, :], (rstd * (da - xa * proj)).to(dx_ptr.dtype.element_ty), mask=m)
    tl.store(dx_ptr + ri * sdx + HALF + j[None, :], (rstd * (db - xb * proj)).to(dx_ptr.dtype.element_ty), mask=m)
    if PASS > 0:
        tl.store(dx_ptr + ri * sdx + 2 * HALF + k[None, :], (rstd * (dyp - xp * proj)).to(dx_ptr.dtype.element_ty),
                 mask=pm)


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_qk_rope_fwd_kernel, InterpretedFunction)


def _shape(t) -> tuple:
    return tuple(getattr(t, "shape", ()))


def check_inputs(x, cos, sin, gain) -> None:
    """One ValueError line, naming the input, for the first argument that is not what the op takes: x a float
    tensor (..., T, H, D); cos and sin (T', R/2) with T' >= T, 0 < R <= D and R even, on x's device; gain None or
    (H,)."""
    if not isinstance(x, Tensor) or x.dim() < 3 or 0 in x.shape[-3:]:
        raise ValueError(f"{OP}: x must be a tensor of shape (..., positions, heads, head_dim), got shape {_shape(x)}")
    check_dtypes_and_device(OP, x, (("x", x),))
    T, H, D = x.shape[-3:]
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[0] < T or not 0 < 2 * t.shape[1] <= D:
            raise ValueError(f"{OP}: {name} must be (positions >= {T}, rotated pairs 1..{D // 2}), got shape "
                             f"{_shape(t)}")
    if cos.shape != sin.shape:
        raise ValueError(f"{OP}: cos and sin must have one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if gain is not None and (not isinstance(gain, Tensor) or tuple(gain.shape) != (H,)):
        raise ValueError(f"{OP}: gain must be ({H},), one a head, got shape {_shape(gain)}")
    check_dtypes_and_device(OP, x, (("cos", cos), ("sin", sin), ("gain", gain)))


def _runs_here(x: Tensor) -> bool:
    return x.is_cuda or interpreted()


def _launch(D: int, half: int) -> dict:
    return {"D": D, "HALF": half, "PASS": D - 2 * half, "BLOCK_H": triton.next_power_of_2(half),
            "BLOCK_P": triton.next_power_of_2(max(D - 2 * half, 1))}


def _table(t: Tensor) -> Tensor:
    return t if t.stride(1) == 1 else t.contiguous()


def qk_norm_rope_fwd_kernels(x, cos, sin, gain, *, block_m=None, num_warps=None) -> tuple[Tensor, Tensor]:
    """The forward kernel on checked inputs: (y in x's shape and dtype, rstd (rows,) in the compute dtype)."""
    check_row_launch(OP, block_m, num_warps)
    T, H, D = x.shape[-3:]
    x2 = x.contiguous().view(-1, D)  # (rows, D), rows in (b, t, h) order
    rows = x2.shape[0]
    acc = compute_dtype(x)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty(rows, dtype=acc, device=x.device)
    if rows:
        cos, sin = _table(cos), _table(sin)
        bm = block_m or BLOCK_M
        _qk_rope_fwd_kernel[(triton.cdiv(rows, bm),)](
            x2, cos, sin, x2 if gain is None else gain.contiguous(), y.view(-1, D), rstd,
            rows, H, T, x2.stride(0), D, cos.stride(0), sin.stride(0),
            **_launch(D, cos.shape[1]), BLOCK_M=bm, EPS=norm_eps(x.dtype), HAS_GAIN=gain is not None,
            ACC=TL_DTYPES[acc], num_warps=num_warps or NUM_WARPS)
    return y, rstd


def qk_norm_rope_bwd_kernels(dy, x, cos, sin, gain, rstd, *, block_m=None, num_warps=None) -> tuple[Tensor, Tensor]:
    """The backward kernel: (dx in x's shape and dtype, dgain (H,) in gain's dtype, or an empty (0,) tensor without
    a gain)."""
    check_row_launch(OP, block_m, num_warps)
    T, H, D = x.shape[-3:]
    x2 = x.contiguous().view(-1, D)
    dy2 = dy.contiguous().view(-1, D)
    rows = x2.shape[0]
    acc = compute_dtype(x)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gdot = torch.empty(rows if gain is not None else 0, dtype=acc, device=x.device)  # (rows,): dy · u a row
    if rows:
        cos, sin = _table(cos), _table(sin)
        bm = block_m or BLOCK_M
        _qk_rope_bwd_kernel[(triton.cdiv(rows, bm),)](
            dy2, x2, cos, sin, x2 if gain is None else gain.contiguous(), rstd, dx.view(-1, D),
            x2 if gain is None else gdot,
            rows, H, T, dy2.stride(0), x2.stride(0), D, cos.stride(0), sin.stride(0),
            **_launch(D, cos.shape[1]), BLOCK_M=bm, HAS_GAIN=gain is not None, ACC=TL_DTYPES[acc],
            num_warps=num_warps or NUM_WARPS)
    dgain = gdot.view(-1, H).sum(0).to(gain.dtype) if gain is not None else x.new_empty(0)  # (H,)
    return dx, dgain


def _twin_parts(x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The twin's common start, in the compute dtype: (rstd (..., T, H, 1), xh = x rstd, and cos, sin at the rows'
    positions as (T, 1, R/2))."""
    T = x.shape[-3]
    ct = compute_dtype(x)
    xf = x.to(ct)
    rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True) + norm_eps(x.dtype))
    return rstd, xf * rstd, cos[:T, None, :].to(ct), sin[:T, None, :].to(ct)


def _rotate(v: Tensor, c: Tensor, s: Tensor, sign: float = 1.0) -> Tensor:
    """v's first 2 R/2 channels rotated pairwise by the angles of (c, s) (sign -1: the inverse rotation, the
    forward's transpose); the rest pass through."""
    half = c.shape[-1]
    va, vb, vp = v[..., :half], v[..., half:2 * half], v[..., 2 * half:]
    return torch.cat([va * c + sign * vb * s, vb * c - sign * va * s, vp], dim=-1)


def _reference_fwd(x, cos, sin, gain) -> tuple[Tensor, Tensor]:
    """The op's outputs from the twin: (y in x's dtype, rstd (rows,) in the compute dtype)."""
    rstd, xh, c, s = _twin_parts(x, cos, sin)
    u = _rotate(xh, c, s)  # (..., T, H, D)
    if gain is not None:
        u = u * gain.to(u.dtype)[:, None]
    return u.to(x.dtype).contiguous(), rstd.reshape(-1)


def qk_norm_rope_reference(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None) -> Tensor:
    """The op's function in PyTorch, in the compute dtype, rounded once to x's dtype (the module docstring's
    formulas; autograd differentiates it)."""
    return _reference_fwd(x, cos, sin, gain)[0]


def _reference_bwd(dy, x, cos, sin, gain):
    """The backward kernel's formulas (module docstring) in PyTorch, in the compute dtype: (dx, dgain or (0,)).
    (Formulas rather than autograd through the twin: an op's kernel runs with autograd's dispatch keys excluded,
    so nothing would be recorded here.)"""
    H = x.shape[-2]
    rstd, xh, c, s = _twin_parts(x, cos, sin)
    du = dy.to(xh.dtype)
    dgain = x.new_empty(0)
    if gain is not None:
        dgain = (du * _rotate(xh, c, s)).sum(-1).reshape(-1, H).sum(0).to(gain.dtype)  # (H,)
        du = du * gain.to(du.dtype)[:, None]
    dxh = _rotate(du, c, s, sign=-1.0)  # the rotation's transpose
    dx = rstd * (dxh - xh * (dxh * xh).mean(-1, keepdim=True))
    return dx.to(x.dtype).contiguous(), dgain


# --------------------------------------------------------------------------------------------------
# The ops. Forward: -> y (x's shape and dtype), rstd (rows,) in the compute dtype. Backward: -> dx, dgain ((0,)
# without a gain)
# --------------------------------------------------------------------------------------------------


def _forward(x, cos, sin, gain):
    check_inputs(x, cos, sin, gain)
    if _runs_here(x):
        return qk_norm_rope_fwd_kernels(x, cos, sin, gain)
    return _reference_fwd(x, cos, sin, gain)


@torch.library.custom_op("golf::qk_norm_rope", mutates_args=(), device_types="cpu")
def _qk_norm_rope_op(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None) -> tuple[Tensor, Tensor]:
    return _forward(x, cos, sin, gain)


@_qk_norm_rope_op.register_kernel("cuda")
def _(x, cos, sin, gain):
    return _forward(x, cos, sin, gain)


@_qk_norm_rope_op.register_fake
def _(x, cos, sin, gain):
    check_inputs(x, cos, sin, gain)
    rows = math.prod(x.shape[:-1])
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(rows, dtype=compute_dtype(x))


def _backward_impl(dy, x, cos, sin, gain, rstd):
    if _runs_here(x):
        return qk_norm_rope_bwd_kernels(dy, x, cos, sin, gain, rstd)
    return _reference_bwd(dy, x, cos, sin, gain)


@torch.library.custom_op("golf::qk_norm_rope_bwd", mutates_args=(), device_types="cpu")
def _qk_norm_rope_bwd_op(dy: Tensor, x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None,
                         rstd: Tensor) -> tuple[Tensor, Tensor]:
    return _backward_impl(dy, x, cos, sin, gain, rstd)


@_qk_norm_rope_bwd_op.register_kernel("cuda")
def _(dy, x, cos, sin, gain, rstd):
    return _backward_impl(dy, x, cos, sin, gain, rstd)


@_qk_norm_rope_bwd_op.register_fake
def _(dy, x, cos, sin, gain, rstd):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(0) if gain is None else torch.empty_like(gain))


def _setup(ctx, inputs, output):
    x, cos, sin, gain = inputs
    ctx.has_gain = gain is not None
    ctx.save_for_backward(x, cos, sin, *((gain,) if gain is not None else ()), output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, _drstd):
    x, cos, sin, *rest = ctx.saved_tensors
    gain, rstd = (rest[0], rest[1]) if ctx.has_gain else (None, rest[0])
    if dy is None:
        return None, None, None, None
    dx, dgain = torch.ops.golf.qk_norm_rope_bwd(dy, x, cos, sin, gain, rstd)
    return dx, None, None, (dgain if ctx.has_gain else None)


_qk_norm_rope_op.register_autograd(_backward, setup_context=_setup)


def qk_norm_rope(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None = None) -> Tensor:
    """golf::qk_norm_rope's y: x (..., T, H, D) normed per head, rotated at positions 0..T-1 with cos, sin (T, R/2)
    and scaled by gain (H,) where given."""
    return torch.ops.golf.qk_norm_rope(x, cos, sin, gain)[0]
