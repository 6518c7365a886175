"""golf's own Triton kernels for a block's residual glue (model.block_norm "golf"): the residual add that
completes the previous sublayer, the U-Net skip add, the block's residual mix and its pre-norm, as one PyTorch
custom operator, golf::add_mix_norm, with one backward operator, golf::add_mix_norm_bwd.

What it computes, per row (the last dim, d channels; rows = every leading dim flattened), exactly the math of
golf.model.add_mix_norm_reference, the PyTorch twin the model's "torch" path spells out inline:
    out = x + s y                      (s (d,): a sublayer's output scale; out = x without y, x + y with y
                                        but no s: the scale folded into the sublayer, model.block_norm
                                        "golf_fold")
    out = out + w skip                 (w (d,): a U-Net skip weight; no add without skip)
    xm  = mix[0] out + mix[1] x0       (mix (2, d): the block's resid_mix; xm = out without mix)
    rstd = 1 / sqrt(mean(xm^2) + eps)  (eps: F.rms_norm's default, finfo of the compute dtype: fp32's 1.19e-7
                                        for bf16 / fp16 / fp32, fp64's for fp64)
    h   = xm rstd norm_scale           (norm_scale a Python float: model.ln_scale's factor, 1.0 when off)
Backward, from the gradients of h, xm and out (g_h, g_xm, g_out; the latter two may be absent):
    dxm  = rstd (norm_scale g_h - xhat mean(norm_scale g_h xhat)) + g_xm,   xhat = xm rstd
    dout = mix[0] dxm + g_out          (dout = dxm + g_out without mix)
    dx = dout,  dy = s dout,  dskip = w dout,  dx0 = mix[1] dxm   (y without s: dy = dout, dx's own tensor,
                                                                   not written twice)
    ds = sum_rows dout y,  dw = sum_rows dout skip,  dmix = sum_rows [dxm out, dxm x0]
Arithmetic in fp32 (fp64 for fp64 x), whatever the inputs' dtypes; out, xm and h are stored in x's dtype, rstd
in the compute dtype, each input's gradient in that input's dtype (parameters' too: fp32 under autocast).

Why one op: under torch.compile inductor splits this glue into several kernels around each block (the add, the
mix, the norm's reduction, and as many again in the backward), about 11 ms a training step at roughly twice
their memory floor. Here each direction is one pass over the rows. The model (golf.model.GolfLM under
model.block_norm "golf") never materializes a sublayer's residual add on its own: it keeps the stream as
(x, y, s) pending and the next pre-norm completes it inside this op. Outputs:
  * xm, the residual base of the block's next sublayer (with mix) or the completed stream (without);
  * h, the pre-norm's output, what the sublayer reads;
  * out, only with keep_out and mix (without mix xm is out): the block input an encoder block's U-Net skip
    keeps, otherwise not written at all (an empty tensor);
  * rstd (rows,), which the backward reads.
The backward recomputes out and xm from the inputs (a few FMAs a element) instead of keeping them: reading x,
y, skip, x0 again is no more traffic than reading saved copies, and nothing extra stays alive between the
passes. The optional pieces are tl.constexpr flags, so each combination compiles to its own straight-line
kernel (the model uses four: first block, later block, decoder block with a skip, sublayer without mix).

Tiles. Both kernels work on (BLOCK_M, BLOCK_N) tiles, BLOCK_N the next power of two >= d (512 for golf's
d_model 512: no idle lanes), BLOCK_M rows.
  Forward, grid cdiv(M, BLOCK_M): load the row pieces and parameter vectors, reduce xm^2 along the row, store.
    Default tile 4096 elements (8 rows at d 512), 8 warps.
  Backward, grid cdiv(M, BLOCK_M * tiles): each program walks `tiles` consecutive row blocks (a software-
    pipelined tl.range, so the next blocks' loads are in flight while one is computed), storing the input
    gradients per block and adding the parameter gradients' terms into (BLOCK_M, BLOCK_N) fp32 accumulators,
    reduced over rows once at the end into this program's row of a (programs, 4, d) partial-sum buffer
    [ds, dw, dmix0, dmix1] that golf.sum_kernel sums afterwards: deterministic (no atomics) and small (131072 rows /
    64 = 2048 programs: 16 MB at d 512, against about 1 GB the kernel must move).
    Default tile 512 elements (one row at d 512), 1 warp, 64 row blocks a program, 3 stages: up to four
    accumulators and six loaded tensors a tile, 16 values of each a thread, which stays in registers.
These defaults follow golf/gated_norm_kernel.py's measurements on the same kind of work (a row-wise norm with
parameter-gradient partials). Swept on an H200 (bench/block_norm_bench.py --fwd-launch/--bwd-launch,
bench/RESULTS.md 2026-12-01 thirteenth block), each kernel alone runs at 0.95-1.22x (forward) and 1.24-1.37x
(backward) its floor with them, within 0.02 ms a call of the best setting tried. The op's forward + backward
through autograd measures 2.0-4.1x (twelfth block): the rest is outside the kernels (the partial sums'
reductions, allocation, autograd). Inside the compiled training step the op takes 2.3 ms of device time off
hybrid_12_b131k's step.

Memory floor (M = 131072, d = 512, bf16; one activation A = 134 MB): the model's decoder call reads x, y, skip,
x0 and writes out, xm, h: 7A = 0.94 GB, 0.20 ms at 4.8 TB/s; its backward reads g_h, g_xm, x, y, skip, x0 and
writes dx, dy, dskip, dx0: 10A.

Limits. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is first imported; tests/conftest.py). On CPU outside the interpreter the ops compute the reference
twin instead (so torch.library.opcheck and a CPU evaluation work anywhere), and golf.model uses the twin
directly there without importing this module. Rows must have unit stride along the channels (any row stride
is read; the op makes other layouts contiguous first). Training-only in spirit: an artifact's model computes
the same function with model.block_norm "torch".
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_row_launch, row_launch
from golf.model import add_mix_norm_reference, norm_eps
from golf.ssm import compute_dtype
from golf.sum_kernel import column_sums

__all__ = ["add_mix_norm", "add_mix_norm_bwd_kernels", "add_mix_norm_fwd_kernels", "add_mix_norm_reference",
           "interpreted", "norm_eps"]

OP = "golf::add_mix_norm"

# Launch defaults (module docstring, "Tiles"): elements per (BLOCK_M, BLOCK_N) tile, BLOCK_M = max(1, tile //
# BLOCK_N); elements per warp; backward row blocks per program and pipeline stages
FWD_TILE = 4096
FWD_ELEMENTS_PER_WARP = 512
BWD_TILE = 512
BWD_ELEMENTS_PER_WARP = 512
BWD_TILES = 64
BWD_STAGES = 3
PARAM_GRADS = 4  # rows of the backward's partial-sum buffer: ds, dw, dmix[0], dmix[1]


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _add_mix_norm_fwd_kernel(x_ptr, y_ptr, s_ptr, skip_ptr, w_ptr, x0_ptr, mix_ptr,
                             out_ptr, xm_ptr, h_ptr, rstd_ptr,
                             M, norm_scale,
                             sx, sy, sskip, sx0, sout, sxm, sh,
                             D: tl.constexpr, EPS: tl.constexpr,
                             HAS_Y: tl.constexpr, HAS_S: tl.constexpr, HAS_SKIP: tl.constexpr,
                             HAS_MIX: tl.constexpr, KEEP_OUT: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    cols = tl.arange(0, BLOCK_N)  # (BN,)
    rmask = rows < M
    cmask = cols < D
    m = rmask[:, None] & cmask[None, :]  # (BM, BN)
    r = rows.to(tl.int64)[:, None]  # (BM, 1): int64, M * row stride can pass 2^31
    c = cols[None, :]  # (1, BN)
    pm = cmask[None, :]
    o = tl.load(x_ptr + r * sx + c, mask=m, other=0.0).to(ACC)  # (BM, BN): the residual stream
    if HAS_Y:
        yv = tl.load(y_ptr + r * sy + c, mask=m, other=0.0).to(ACC)
        if HAS_S:
            yv *= tl.load(s_ptr + c, mask=pm, other=0.0).to(ACC)  # (1, BN)
        o += yv
    if HAS_SKIP:
        w = tl.load(w_ptr + c, mask=pm, other=0.0).to(ACC)
        o += w * tl.load(skip_ptr + r * sskip + c, mask=m, other=0.0).to(ACC)
    if HAS_MIX:
        m0 = tl.load(mix_ptr + c, mask=pm, other=0.0).to(ACC)
        m1 = tl.load(mix_ptr + D + c, mask=pm, other=0.0).to(ACC)
        xm = m0 * o + m1 * tl.load(x0_ptr + r * sx0 + c, mask=m, other=0.0).to(ACC)
        if KEEP_OUT:
            tl.store(out_ptr + r * sout + c, o.to(out_ptr.dtype.element_ty), mask=m)
    else:
        xm = o
    tl.store(xm_ptr + r * sxm + c, xm.to(xm_ptr.dtype.element_ty), mask=m)
    rstd = 1.0 / tl.sqrt(tl.sum(xm * xm, axis=1) / D + EPS)  # (BM,); masked lanes add 0
    h = xm * (rstd * norm_scale)[:, None]
    tl.store(h_ptr + r * sh + c, h.to(h_ptr.dtype.element_ty), mask=m)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _add_mix_norm_bwd_kernel(gout_ptr, gxm_ptr, gh_ptr, x_ptr, y_ptr, s_ptr, skip_ptr, w_ptr, x0_ptr, mix_ptr,
                             rstd_ptr, dx_ptr, dy_ptr, dskip_ptr, dx0_ptr, part_ptr,
                             M, tiles, norm_scale,
                             sgout, sgxm, sgh, sx, sy, sskip, sx0, sdx, sdy, sdskip, sdx0,
                             D: tl.constexpr, HAS_Y: tl.constexpr, HAS_S: tl.constexpr, HAS_SKIP: tl.constexpr,
                             HAS_MIX: tl.constexpr, HAS_GOUT: tl.constexpr, HAS_GXM: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
                             STAGES: tl.constexpr):
    """The input gradients for `tiles` consecutive row blocks, and this program's partial parameter gradients
    (one (4, D) slab of the partial-sum buffer; the slabs of absent parameters are left unwritten)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)  # (BN,)
    cmask = cols < D
    c = cols[None, :]  # (1, BN)
    pm = cmask[None, :]
    # the parameter vectors (1, BN), loaded once for all tiles; absent ones stay zeros, unused
    s = tl.zeros((1, BLOCK_N), dtype=ACC)
    w = tl.zeros((1, BLOCK_N), dtype=ACC)
    m0 = tl.zeros((1, BLOCK_N), dtype=ACC)
    m1 = tl.zeros((1, BLOCK_N), dtype=ACC)
    if HAS_S:
        s = tl.load(s_ptr + c, mask=pm, other=0.0).to(ACC)
    if HAS_SKIP:
        w = tl.load(w_ptr + c, mask=pm, other=0.0).to(ACC)
    if HAS_MIX:
        m0 = tl.load(mix_ptr + c, mask=pm, other=0.0).to(ACC)
        m1 = tl.load(mix_ptr + D + c, mask=pm, other=0.0).to(ACC)
    # parameter gradients summed elementwise over the program's tiles, reduced over rows once at the end
    acc_s = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_w = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_m0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    acc_m1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for i in tl.range(0, tiles, num_stages=STAGES):
        rows = (pid * tiles + i) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        rmask = rows < M
        m = rmask[:, None] & cmask[None, :]  # (BM, BN)
        r = rows.to(tl.int64)[:, None]  # (BM, 1)
        # recompute out and xm from the inputs (0 in masked lanes and rows)
        o = tl.load(x_ptr + r * sx + c, mask=m, other=0.0).to(ACC)
        yv = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        skv = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        x0v = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        if HAS_Y:
            yv = tl.load(y_ptr + r * sy + c, mask=m, other=0.0).to(ACC)
            if HAS_S:
                o += s * yv
            else:
                o += yv
        if HAS_SKIP:
            skv = tl.load(skip_ptr + r * sskip + c, mask=m, other=0.0).to(ACC)
            o += w * skv
        if HAS_MIX:
            x0v = tl.load(x0_ptr + r * sx0 + c, mask=m, other=0.0).to(ACC)
            xm = m0 * o + m1 * x0v
        else:
            xm = o
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0).to(ACC)  # (BM,)
        xhat = xm * rstd[:, None]
        dxhat = tl.load(gh_ptr + r * sgh + c, mask=m, other=0.0).to(ACC) * norm_scale
        proj = tl.sum(dxhat * xhat, axis=1) / D  # (BM,): mean over the row of dxhat xhat
        dxm = rstd[:, None] * (dxhat - xhat * proj[:, None])
        if HAS_GXM:
            dxm += tl.load(gxm_ptr + r * sgxm + c, mask=m, other=0.0).to(ACC)
        if HAS_MIX:
            do = m0 * dxm
            tl.store(dx0_ptr + r * sdx0 + c, (m1 * dxm).to(dx0_ptr.dtype.element_ty), mask=m)
            acc_m0 += dxm * o
            acc_m1 += dxm * x0v
        else:
            do = dxm
        if HAS_GOUT:
            do += tl.load(gout_ptr + r * sgout + c, mask=m, other=0.0).to(ACC)
        tl.store(dx_ptr + r * sdx + c, do.to(dx_ptr.dtype.element_ty), mask=m)
        if HAS_S:  # without s, y's gradient is dx's tensor (the op returns none of its own)
            tl.store(dy_ptr + r * sdy + c, (s * do).to(dy_ptr.dtype.element_ty), mask=m)
            acc_s += do * yv
        if HAS_SKIP:
            tl.store(dskip_ptr + r * sdskip + c, (w * do).to(dskip_ptr.dtype.element_ty), mask=m)
            acc_w += do * skv
    base = part_ptr + pid * (4 * D) + cols  # (BN,): this program's (4, D) slab
    if HAS_S:
        tl.store(base, tl.sum(acc_s, axis=0), mask=cmask)
    if HAS_SKIP:
        tl.store(base + D, tl.sum(acc_w, axis=0), mask=cmask)
    if HAS_MIX:
        tl.store(base + 2 * D, tl.sum(acc_m0, axis=0), mask=cmask)
        tl.store(base + 3 * D, tl.sum(acc_m1, axis=0), mask=cmask)


# --------------------------------------------------------------------------------------------------
# Checks and launches
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_add_mix_norm_fwd_kernel, InterpretedFunction)


def _shape(t) -> tuple:
    return tuple(getattr(t, "shape", ()))


def check_inputs(x, y, s, skip, w, x0, mix, norm_scale) -> None:
    """One ValueError line, naming the input, for the first argument that is not what the op takes: x a float
    tensor of at least one dim (d = its last); y, skip, x0 x's shape, on x's device, in a dtype no wider than
    x's (the result is in x's dtype, as the twin's type promotion gives it); s and w (d,), mix (2, d), each
    given exactly when its activation is (y may also come without s: a scale of one); norm_scale a finite
    number."""
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{OP}: x must be a tensor of shape (..., channels >= 1), got shape {_shape(x)}")
    check_dtypes_and_device(OP, x, (("x", x),))
    d = x.shape[-1]
    pieces = (("y", y, "s", s, (d,)), ("skip", skip, "w", w, (d,)), ("x0", x0, "mix", mix, (2, d)))
    for act_name, act, par_name, par, par_shape in pieces:
        if act is None and par is not None:
            raise ValueError(f"{OP}: {par_name} is given without {act_name}: pass "
                             + ("y with it, or neither" if act_name == "y" else "both or neither"))
        if par is None and act is not None and act_name != "y":  # y alone: a scale of one
            raise ValueError(f"{OP}: {act_name} is given without {par_name}: pass both or neither")
        if act is None:
            continue
        if not isinstance(act, Tensor) or act.shape != x.shape:
            raise ValueError(f"{OP}: {act_name} must have x's shape {tuple(x.shape)}, got {_shape(act)}")
        if par is not None and (not isinstance(par, Tensor) or tuple(par.shape) != par_shape):
            raise ValueError(f"{OP}: {par_name} must be {par_shape}, got shape {_shape(par)}")
        check_dtypes_and_device(OP, x, ((act_name, act),) + (((par_name, par),) if par is not None else ()))
        if torch.promote_types(x.dtype, act.dtype) != x.dtype:
            raise ValueError(f"{OP}: {act_name}'s dtype {act.dtype} is wider than x's {x.dtype}: the outputs "
                             "are in x's dtype")
    if isinstance(norm_scale, bool) or not isinstance(norm_scale, numbers.Real) or not math.isfinite(norm_scale):
        raise ValueError(f"{OP}: norm_scale must be a finite number, got {norm_scale!r}")


def _rows(t: Tensor | None, d: int) -> Tensor | None:
    """t as a (rows, d) view with unit stride along d (a contiguous copy only when it has none)."""
    if t is None:
        return None
    t2 = t.reshape(-1, d)
    return t2 if d <= 1 or t2.stride(1) == 1 else t2.contiguous()


def _runs_here(x: Tensor) -> bool:
    """Whether the Triton kernels can take x: a CUDA tensor, or any tensor in the interpreter."""
    return x.is_cuda or interpreted()


def add_mix_norm_fwd_kernels(x, y, s, skip, w, x0, mix, norm_scale, keep_out, *, block_m=None,
                             num_warps=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward kernel on checked inputs (check_inputs): (out, xm, h, rstd) as the op returns them: out, xm,
    h contiguous in x's shape and dtype (out empty, shape (0,), unless keep_out with mix), rstd (rows,) in the
    compute dtype. block_m (rows a tile, a power of two) and num_warps: the launch (None: the defaults)."""
    check_row_launch(OP, block_m, num_warps)
    d = x.shape[-1]
    x2, y2, skip2, x02 = (_rows(t, d) for t in (x, y, skip, x0))
    rows = x2.shape[0]
    acc = compute_dtype(x)
    write_out = keep_out and mix is not None
    out = torch.empty(x.shape if write_out else (0,), dtype=x.dtype, device=x.device)
    xm = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    h = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty(rows, dtype=acc, device=x.device)
    if rows == 0 or d == 0:
        return out, xm, h, rstd.zero_()
    bm, bn, nw = row_launch(d, block_m, num_warps, FWD_TILE, FWD_ELEMENTS_PER_WARP)
    out2 = out.view(rows, d) if write_out else xm.view(rows, d)  # a placeholder pointer when not written
    _add_mix_norm_fwd_kernel[(triton.cdiv(rows, bm),)](
        x2, x2 if y2 is None else y2, x2 if s is None else s.contiguous(), x2 if skip2 is None else skip2,
        x2 if w is None else w.contiguous(), x2 if x02 is None else x02, x2 if mix is None else mix.contiguous(),
        out2, xm.view(rows, d), h.view(rows, d), rstd,
        rows, float(norm_scale),
        x2.stride(0), *(t.stride(0) if t is not None else 0 for t in (y2, skip2, x02)), out2.stride(0), d, d,
        D=d, EPS=norm_eps(x.dtype), HAS_Y=y is not None, HAS_S=s is not None, HAS_SKIP=skip is not None,
        HAS_MIX=mix is not None, KEEP_OUT=write_out, BLOCK_M=bm, BLOCK_N=bn, ACC=TL_DTYPES[acc], num_warps=nw)
    return out, xm, h, rstd


def add_mix_norm_bwd_kernels(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale, *, block_m=None,
                             num_warps=None, tiles=BWD_TILES, num_stages=BWD_STAGES):
    """The backward kernel: (dx, dy, ds, dskip, dw, dx0, dmix), each in its input's shape and dtype, an empty
    (0,) tensor for an absent input (and for dy when y comes without s: its gradient is dx). g_out, g_xm may be
    None (no gradient); g_h must be given. The launch: block_m, num_warps (None: the defaults), tiles (row blocks a
    program) and num_stages (the pipeline's depth; 1: none)."""
    check_row_launch(OP, block_m, num_warps, tiles, num_stages)
    d = x.shape[-1]
    x2, y2, skip2, x02, gout2, gxm2, gh2 = (_rows(t, d) for t in (x, y, skip, x0, g_out, g_xm, g_h))
    rows = x2.shape[0]
    acc = compute_dtype(x)

    def grad_like(t):
        return torch.empty((0,), dtype=x.dtype, device=x.device) if t is None else \
            torch.empty(t.shape, dtype=t.dtype, device=t.device)

    dx, dy, dskip, dx0 = (grad_like(t) for t in (x, y if s is not None else None, skip, x0))
    bm, bn, nw = row_launch(d, block_m, num_warps, BWD_TILE, BWD_ELEMENTS_PER_WARP)
    programs = triton.cdiv(rows, bm * tiles)
    # each program writes its slab's rows of the present parameters, the only rows summed: no zeroing
    part = torch.empty(programs, PARAM_GRADS, d, dtype=acc, device=x.device)  # (programs, 4, d)
    if programs and d:
        dx2, dy2, dskip2, dx02 = (t.view(rows, d) if t.numel() else dx.view(rows, d) for t in (dx, dy, dskip, dx0))
        _add_mix_norm_bwd_kernel[(programs,)](
            gh2 if gout2 is None else gout2, gh2 if gxm2 is None else gxm2, gh2,
            x2, x2 if y2 is None else y2, x2 if s is None else s.contiguous(), x2 if skip2 is None else skip2,
            x2 if w is None else w.contiguous(), x2 if x02 is None else x02, x2 if mix is None else mix.contiguous(),
            rstd, dx2, dy2, dskip2, dx02, part,
            rows, tiles, float(norm_scale),
            *(t.stride(0) if t is not None else 0 for t in (gout2, gxm2)), gh2.stride(0), x2.stride(0),
            *(t.stride(0) if t is not None else 0 for t in (y2, skip2, x02)), d, d, d, d,
            D=d, HAS_Y=y is not None, HAS_S=s is not None, HAS_SKIP=skip is not None, HAS_MIX=mix is not None,
            HAS_GOUT=g_out is not None, HAS_GXM=g_xm is not None, BLOCK_M=bm, BLOCK_N=bn, ACC=TL_DTYPES[acc],
            STAGES=num_stages, num_warps=nw)
    # the partial sums reduced over programs (deterministic), each in its parameter's dtype; zeros when rows = 0
    ds = column_sums(part[:, 0], dtype=s.dtype) if s is not None else x.new_empty(0)  # (d,)
    dw = column_sums(part[:, 1], dtype=w.dtype) if w is not None else x.new_empty(0)  # (d,)
    dmix = (column_sums(part[:, 2:].flatten(1), dtype=mix.dtype).view(2, d) if mix is not None  # (2, d)
            else x.new_empty(0))
    return dx, dy, ds, dskip, dw, dx0, dmix


# --------------------------------------------------------------------------------------------------
# The twin's forward and backward for the ops on CPU outside the interpreter
# --------------------------------------------------------------------------------------------------


def _fresh(t: Tensor, x: Tensor) -> Tensor:
    """t contiguous and not x itself (an op's outputs may not alias its inputs)."""
    return t.clone(memory_format=torch.contiguous_format) if t is x else t.contiguous()


def _reference_fwd(x, y, s, skip, w, x0, mix, norm_scale, keep_out):
    """The op's outputs from the twin: (out or (0,), xm, h, rstd (rows,) in the compute dtype)."""
    write_out = keep_out and mix is not None
    out, xm, h = add_mix_norm_reference(x, y, s, skip, w, x0, mix, norm_scale, write_out)
    rstd = torch.rsqrt(xm.reshape(-1, x.shape[-1]).to(compute_dtype(x)).square().mean(-1) + norm_eps(x.dtype))
    return (_fresh(out, x) if write_out else x.new_empty(0)), _fresh(xm, x), _fresh(h, x), rstd


def _reference_bwd(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, norm_scale):
    """The backward kernel's formulas (module docstring) in PyTorch, in the compute dtype: (dx, dy, ds, dskip,
    dw, dx0, dmix), (0,) for absent inputs. (Formulas rather than autograd through the twin: an op's kernel
    runs with autograd's dispatch keys excluded, so nothing would be recorded here.)"""
    ct = compute_dtype(x)
    d = x.shape[-1]
    o = x.to(ct)  # (..., d)
    if y is not None:
        o = o + (y.to(ct) if s is None else s.to(ct) * y.to(ct))
    if skip is not None:
        o = o + w.to(ct) * skip.to(ct)
    xm = o if mix is None else mix[0].to(ct) * o + mix[1].to(ct) * x0.to(ct)
    rstd = torch.rsqrt(xm.square().mean(-1, keepdim=True) + norm_eps(x.dtype))  # (..., 1)
    xhat = xm * rstd
    dxhat = g_h.to(ct) * norm_scale
    dxm = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    if g_xm is not None:
        dxm = dxm + g_xm.to(ct)
    do = dxm if mix is None else mix[0].to(ct) * dxm
    if g_out is not None:
        do = do + g_out.to(ct)

    def rows_sum(t):  # (..., d) -> (d,)
        return t.reshape(-1, d).sum(0)

    none = x.new_empty(0)
    dy, ds = (none, none) if y is None or s is None else ((s.to(ct) * do).to(y.dtype),
                                                           rows_sum(do * y.to(ct)).to(s.dtype))
    dskip, dw = (none, none) if skip is None else ((w.to(ct) * do).to(skip.dtype),
                                                   rows_sum(do * skip.to(ct)).to(w.dtype))
    dx0, dmix = (none, none) if mix is None else (
        (mix[1].to(ct) * dxm).to(x0.dtype), torch.stack([rows_sum(dxm * o), rows_sum(dxm * x0.to(ct))]).to(mix.dtype))
    return tuple(t.contiguous() for t in (do.to(x.dtype), dy, ds, dskip, dw, dx0, dmix))


# --------------------------------------------------------------------------------------------------
# The ops. Forward: -> out (x's shape, or (0,) unless keep_out with mix), xm, h (x's shape and dtype), rstd
# (rows,) in the compute dtype. Backward: -> dx, dy, ds, dskip, dw, dx0, dmix ((0,) for absent inputs)
# --------------------------------------------------------------------------------------------------

_FWD_OUTPUTS = tuple[Tensor, Tensor, Tensor, Tensor]
_BWD_OUTPUTS = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _forward(x, y, s, skip, w, x0, mix, norm_scale, keep_out):
    check_inputs(x, y, s, skip, w, x0, mix, norm_scale)
    if _runs_here(x):
        return add_mix_norm_fwd_kernels(x, y, s, skip, w, x0, mix, norm_scale, keep_out)
    return _reference_fwd(x, y, s, skip, w, x0, mix, norm_scale, keep_out)


@torch.library.custom_op("golf::add_mix_norm", mutates_args=(), device_types="cpu")
def _add_mix_norm_op(x: Tensor, y: Tensor | None, s: Tensor | None, skip: Tensor | None, w: Tensor | None,
                     x0: Tensor | None, mix: Tensor | None, norm_scale: float, keep_out: bool) -> _FWD_OUTPUTS:
    return _forward(x, y, s, skip, w, x0, mix, norm_scale, keep_out)


@_add_mix_norm_op.register_kernel("cuda")
def _(x, y, s, skip, w, x0, mix, norm_scale, keep_out):
    return _forward(x, y, s, skip, w, x0, mix, norm_scale, keep_out)


@_add_mix_norm_op.register_fake
def _(x, y, s, skip, w, x0, mix, norm_scale, keep_out):
    check_inputs(x, y, s, skip, w, x0, mix, norm_scale)
    rows = math.prod(x.shape[:-1])
    out = x.new_empty(x.shape if keep_out and mix is not None else (0,))
    return out, x.new_empty(x.shape), x.new_empty(x.shape), x.new_empty(rows, dtype=compute_dtype(x))


def _backward_impl(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale):
    if _runs_here(x):
        return add_mix_norm_bwd_kernels(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale)
    return _reference_bwd(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, norm_scale)


@torch.library.custom_op("golf::add_mix_norm_bwd", mutates_args=(), device_types="cpu")
def _add_mix_norm_bwd_op(g_out: Tensor | None, g_xm: Tensor | None, g_h: Tensor, x: Tensor, y: Tensor | None,
                         s: Tensor | None, skip: Tensor | None, w: Tensor | None, x0: Tensor | None,
                         mix: Tensor | None, rstd: Tensor, norm_scale: float) -> _BWD_OUTPUTS:
    return _backward_impl(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale)


@_add_mix_norm_bwd_op.register_kernel("cuda")
def _(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale):
    return _backward_impl(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale)


@_add_mix_norm_bwd_op.register_fake
def _(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, norm_scale):
    return tuple(x.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (x, y if s is not None else None, s, skip, w, x0, mix))


def _setup(ctx, inputs, output):
    x, y, s, skip, w, x0, mix, norm_scale, keep_out = inputs
    ctx.present = tuple(t is not None for t in (y, s, skip, w, x0, mix))
    ctx.save_for_backward(x, *(t for t in (y, s, skip, w, x0, mix) if t is not None), output[3])
    ctx.norm_scale = norm_scale
    ctx.wrote_out = bool(keep_out and mix is not None)
    ctx.mark_non_differentiable(output[3])
    ctx.set_materialize_grads(False)


def _backward(ctx, g_out, g_xm, g_h, _g_rstd):
    x, *saved, rstd = ctx.saved_tensors
    it = iter(saved)
    y, s, skip, w, x0, mix = (next(it) if p else None for p in ctx.present)
    if g_out is None and g_xm is None and g_h is None:
        return (None,) * 9
    if g_h is None:
        g_h = torch.zeros_like(x)
    g_out = g_out if ctx.wrote_out else None
    grads = torch.ops.golf.add_mix_norm_bwd(g_out, g_xm, g_h, x, y, s, skip, w, x0, mix, rstd, ctx.norm_scale)
    if y is not None and s is None:  # out = x + y: y's gradient is x's, one tensor for both
        grads = (grads[0], grads[0].to(y.dtype), *grads[2:])
    given = (True, *ctx.present)
    return (*(g if p else None for g, p in zip(grads, given)), None, None)


_add_mix_norm_op.register_autograd(_backward, setup_context=_setup)


def add_mix_norm(x: Tensor, y: Tensor | None = None, s: Tensor | None = None, skip: Tensor | None = None,
                 w: Tensor | None = None, x0: Tensor | None = None, mix: Tensor | None = None,
                 norm_scale: float = 1.0, keep_out: bool = False) -> tuple[Tensor | None, Tensor, Tensor]:
    """golf::add_mix_norm with golf.model.add_mix_norm_reference's signature and results: (out, xm, h), out
    None unless keep_out (then the completed stream before the mix: x itself when there is nothing to add, xm
    when there is no mix, else the op's own output)."""
    if keep_out and y is None and skip is None:
        _, xm, h, _ = torch.ops.golf.add_mix_norm(x, None, None, None, None, x0, mix, norm_scale, False)
        return x, xm, h
    out, xm, h, _ = torch.ops.golf.add_mix_norm(x, y, s, skip, w, x0, mix, norm_scale, keep_out)
    if not keep_out:
        return None, xm, h
    return (out if mix is not None else xm), xm, h
