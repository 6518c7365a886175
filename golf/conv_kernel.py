"""golf's own Triton kernels for the Mamba-2 mixer's causal depthwise conv1d + bias + SiLU, forward and backward.
`causal_conv1d_silu(x, weight, bias)` has the call of causal-conv1d's causal_conv1d_fn(x, weight, bias,
activation="silu") as golf.ssm.Mamba2Mixer makes it (no seq_idx, initial or final states); model.ssm_conv "golf"
selects it on the triton path (golf.ssm.resolve_ssm_backend; golf::causal_conv1d_silu under ssm_compile
"opaque") and inside golf's fused mixer op (golf/mixer_op.py: conv_fwd, and conv_bwd writing dx into the input
gradient's columns). Its reference twin is golf.ssm.causal_conv_silu_reference (PyTorch), which the tests compare it
with. bench/conv_kernel_bench.py times it against causal_conv1d_fn on a CUDA device.

What it computes, per batch b, channel c and time t (W the kernel width, x zero before t = 0, exactly
golf.ssm.causal_conv_silu_reference on F.pad(x, (W - 1, 0))):
    pre[t] = bias[c] + sum_{k<W} w[c, k] x[t - (W - 1 - k)]
    out[t] = silu(pre[t]) = pre[t] sigmoid(pre[t])                     stored in x's dtype
Backward, for dout = dL/dout:
    dpre[t]   = dout[t] silu'(pre[t]),  silu'(p) = s (1 + p (1 - s)),  s = sigmoid(p)
    dx[t]     = sum_{k<W} w[c, k] dpre[t + (W - 1 - k)]                 (the transposed conv; dpre = 0 at t >= T)
    dw[c, k]  = sum_{b,t} dpre[t] x[t - (W - 1 - k)]
    dbias[c]  = sum_{b,t} dpre[t]
All arithmetic in fp32 (fp64 for fp64 x, so that the tests compare exactly), whatever x's, weight's and bias's
dtypes; out and dx in x's dtype, dweight and dbias in their parameter's dtype. Nothing is saved for backward but
the inputs: the backward recomputes pre.

Layout. The kernels read and write channel-last tensors: x (B, C, T) as a transpose view of a (B, T, C) tensor,
stride over channels 1, over time C or wider (the mixer's xBC is a slice of in_proj's output, row stride 1664 at
the production shapes), so that a row of channels is one coalesced access. x or dout with another layout is
copied channel-last first (inside a compiled model dout can arrive as a plain (B, C, T) tensor): one extra read
and write of that tensor, far cheaper than loads whose every element is its own transaction. out and dx (unless
conv_bwd is given dx=, any buffer with channel stride 1) are allocated channel-last contiguous, as causal-conv1d's
are.

How both kernels work: walking rows. Grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B); a program owns BLOCK_T rows of
BLOCK_C channels of one sequence and walks them one (BLOCK_C,) row at a time, keeping the three rows of x before
the current one in registers, so no tile is ever shifted along time and each row is loaded once (three more at
the program's start). The taps are indexed by the time shift s they apply to (tap_s = w[:, W - 1 - s], zero for
s >= W), so every W walks the same three-row window, and are loaded once a program from the weight as it is.
Rows go four to an iteration with their loads issued before the four rows' stores: the compiler may not move a
load above a store that could alias it, and Triton does not software-pipeline loads that feed no dot (a stage
count made no difference to the sm_90a code), so this is what keeps several rows of loads in flight per warp.
  Forward (_conv_fwd_walk_kernel): at row r, pre[r] from x[r] and the window, out[r] = silu(pre[r]) stored.
    Default 64 rows x 128 channels at one warp (four channels a thread).
  Backward (_conv_bwd_walk_kernel): at row r it loads x[r] and dout[r], forms pre[r] and dpre[r], adds dpre[r]
    x[r - s] (s < W) and dpre[r] into the weight gradients' (BLOCK_C,) sums (its own rows only), and stores
    dx[r - 3] = sum_s tap_s dpre[r - 3 + s] from the three rows of dpre before it kept in registers too: dx trails
    by three rows, so a program walks three rows past its own (their dpre only) and stores nothing for its first
    three. The weight gradients' sums go to one row per program of a (B * programs along time, W + 1, C) partial-sum
    buffer (taps, then dbias), summed by golf.sum_kernel.column_sums: deterministic (no atomics; the same bits run
    to run). Default 128 rows x 64 channels at one warp (two channels a thread; 64 registers, ptxas for sm_90a,
    bf16 x, W = 4).
  Every program is one warp, so many share an SM. DRAM traffic: the forward reads x and writes out, the backward
  reads x and dout and writes dx, plus three rows of halo per program (2-5%).

Measured on an H200 at the production shapes (b=64, t=2048, c=832, row stride 1664, bf16; bench/RESULTS.md,
2026-12-01 sixteenth block), device ms a call alone: forward 0.137 (causal-conv1d 0.131, floor 0.109 at 4 TB/s),
backward 0.248 (causal-conv1d 0.37-0.61, floor 0.164); in hybrid_12_b131k's training step 0.138 and 0.243 against
causal-conv1d's 0.130 and 0.507, the step 73.5 against 74.8 ms (two runs a side; three runs a side with the forward
at 128 x 64: 73.7 against 75.1). Tile-based designs measured before (a forward over time-shifted tiles, 0.162; a
backward in two kernels through a dpre scratch, and one over overlapping time tiles shifting dpre within the tile,
0.65-0.84 a call alone) were held back by registers (128-140 a thread at 8 warps: one program an SM) and are gone.

Limits. W (the width) 2, 3 or 4, as causal-conv1d. No seq_idx, initial_states, return_final_states or activations
other than SiLU. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is first imported; tests/conftest.py). Tested in the interpreter against the reference in fp64
(tests/test_conv_kernel.py) and compiled on an H200 (these tests while the tile designs were still beside the
walking kernels, and the fused mixer op's eager parity cases with model.ssm_conv golf); the bench's parity against
causal_conv1d_fn: out 1.7e-3, dx 2.1e-3, the weight gradients <= 1.1e-6 relative (bf16 x).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_runs_here
from golf.ssm import compute_dtype
from golf.sum_kernel import column_sums

WIDTHS = (2, 3, 4)
# the default launch of each kernel: rows a program walks, its channels, its warps (module docstring)
FWD_DEFAULTS = {"block_t": 64, "block_c": 128, "num_warps": 1}
BWD_DEFAULTS = {"block_t": 128, "block_c": 64, "num_warps": 1}


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _w_shift(w_ptr, c, cmask, s: tl.constexpr, W: tl.constexpr, sw_c, sw_k, ACC: tl.constexpr):
    """The tap that multiplies x[t - s] in pre[t], i.e. w[:, W - 1 - s] (zeros for s >= W), (BC,), from a weight
    of strides sw_c over channels and sw_k over taps."""
    if s < W:
        return tl.load(w_ptr + c * sw_c + (W - 1 - s) * sw_k, mask=cmask, other=0.0).to(ACC)
    else:
        return tl.zeros(c.shape, dtype=ACC)


@triton.jit
def _store_partials(p_base, sp_k, cmask, dw0, dw1, dw2, dw3, db, W: tl.constexpr):
    """A program's row of the partial-sum buffer, [row, k, c] at p_base (the row's channels c): its (BC,) sums of
    dweight by shift s (tap k = W - 1 - s) and of dbias (k = W)."""
    tl.store(p_base + (W - 1) * sp_k, dw0, mask=cmask)
    tl.store(p_base + (W - 2) * sp_k, dw1, mask=cmask)
    if W >= 3:
        tl.store(p_base + (W - 3) * sp_k, dw2, mask=cmask)
    if W >= 4:
        tl.store(p_base + (W - 4) * sp_k, dw3, mask=cmask)
    tl.store(p_base + W * sp_k, db, mask=cmask)


@triton.jit
def _walk_row(base, r, c, cmask, T, s_t, ACC: tl.constexpr):
    """Row r of a channel-last tensor, (BC,) (zeros from T): base points at the program's channels c of row 0,
    s_t is the stride over time."""
    m = cmask & (c * 0 + r < T)  # (BC,): the row index as a vector, so that the mask is one too
    return tl.load(base + r * s_t, mask=m, other=0.0).to(ACC)


@triton.jit
def _walk_setup(x_base, w_ptr, b_ptr, t0, c, cmask, sx_t, sw_c, sw_k, W: tl.constexpr, HAS_BIAS: tl.constexpr,
                ACC: tl.constexpr):
    """What a walking program keeps from its start, (BC,) each: the bias, the taps by time shift (tap_s =
    w[:, W - 1 - s] multiplies x[r - s] in pre[r]; zero for s >= W, so that every W walks the same three-row
    window) and the x window before its first row t0, x[t0 - 1], x[t0 - 2], x[t0 - 3] (zero before row 0)."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros(c.shape, dtype=ACC)
    t0v = c * 0 + t0  # (BC,): t0 as a vector, so that the masks are vectors
    x1 = tl.load(x_base + (t0 - 1) * sx_t, mask=cmask & (t0v >= 1), other=0.0).to(ACC)
    x2 = tl.load(x_base + (t0 - 2) * sx_t, mask=cmask & (t0v >= 2), other=0.0).to(ACC)
    x3 = tl.load(x_base + (t0 - 3) * sx_t, mask=cmask & (t0v >= 3), other=0.0).to(ACC)
    return (bias, _w_shift(w_ptr, c, cmask, 0, W, sw_c, sw_k, ACC), _w_shift(w_ptr, c, cmask, 1, W, sw_c, sw_k, ACC),
            _w_shift(w_ptr, c, cmask, 2, W, sw_c, sw_k, ACC), _w_shift(w_ptr, c, cmask, 3, W, sw_c, sw_k, ACC),
            x1, x2, x3)


@triton.jit
def _walk_out(xr, r, t0, T, c, cmask, o_base, so_t, bias, tap0, tap1, tap2, tap3, x1, x2, x3, BT: tl.constexpr):
    """Row r of the walking forward: out[r] = silu(pre[r]) from x[r] (xr) and the window x1, x2, x3 = x[r - 1 ..
    r - 3], stored where r is one of the program's rows t0 .. t0 + BT - 1 (and < T). → the window moved on."""
    pre = bias + tap0 * xr + tap1 * x1 + tap2 * x2 + tap3 * x3
    rv = c * 0 + r
    tl.store(o_base + r * so_t, (pre / (1.0 + tl.exp(-pre))).to(o_base.dtype.element_ty),
             mask=cmask & (rv < t0 + BT) & (rv < T))
    return xr, x1, x2


@triton.jit
def _walk_step(xr, dr, r, t0, T, c, cmask, dx_base, sdx_t, bias, tap0, tap1, tap2, tap3,
               x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db, BT: tl.constexpr):
    """Row r of the walking backward, from x[r] and dout[r] (xr, dr) and the windows x1, x2, x3 = x[r - 1 ..
    r - 3] and g1, g2, g3 = dpre[r - 1 .. r - 3]: dpre[r] = dout[r] silu'(pre[r]); its dweight and dbias terms
    where r is one of the program's own rows t0 .. t0 + BT - 1; dx[r - 3] = sum_s tap_s dpre[r - 3 + s] stored
    where r - 3 is one of them (and < T). → the windows moved one row on, and the sums."""
    pre = bias + tap0 * xr + tap1 * x1 + tap2 * x2 + tap3 * x3
    sig = 1.0 / (1.0 + tl.exp(-pre))
    g0 = dr * sig * (1.0 + pre * (1.0 - sig))
    g_own = tl.where(r < t0 + BT, g0, 0.0)
    db += g_own
    dw0 += g_own * xr
    dw1 += g_own * x1
    dw2 += g_own * x2
    dw3 += g_own * x3
    u = r - 3  # the row whose dx is complete now
    uv = c * 0 + u
    dxu = tap0 * g3 + tap1 * g2 + tap2 * g1 + tap3 * g0
    tl.store(dx_base + u * sdx_t, dxu.to(dx_base.dtype.element_ty),
             mask=cmask & (uv >= t0) & (uv < t0 + BT) & (uv < T))
    return xr, x1, x2, g0, g1, g2, dw0, dw1, dw2, dw3, db


@triton.jit
def _conv_fwd_walk_kernel(x_ptr, w_ptr, b_ptr, out_ptr,
                          T, C,
                          sx_b, sx_t, sw_c, sw_k, so_b, so_t,
                          W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                          ACC: tl.constexpr):
    """The walking forward: one program per (BT rows, BC channels, sequence) walks its rows as the walking
    backward does (four rows' loads issued before their stores, the last three rows of x in registers), so each x
    row is loaded once (three more at the program's start). x and out channel-last (stride over channels 1); the
    weight (C, W) with any strides."""
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    x_base = x_ptr + b * sx_b + c
    o_base = out_ptr + b * so_b + c
    t0 = pid_g * BT
    bias, tap0, tap1, tap2, tap3, x1, x2, x3 = _walk_setup(x_base, w_ptr, b_ptr, t0, c, cmask, sx_t, sw_c, sw_k, W,
                                                           HAS_BIAS, ACC)
    for r in range(t0, t0 + BT, 4):
        xa = _walk_row(x_base, r, c, cmask, T, sx_t, ACC)
        xb = _walk_row(x_base, r + 1, c, cmask, T, sx_t, ACC)
        xc = _walk_row(x_base, r + 2, c, cmask, T, sx_t, ACC)
        xd = _walk_row(x_base, r + 3, c, cmask, T, sx_t, ACC)
        x1, x2, x3 = _walk_out(xa, r, t0, T, c, cmask, o_base, so_t, bias, tap0, tap1, tap2, tap3, x1, x2, x3, BT)
        x1, x2, x3 = _walk_out(xb, r + 1, t0, T, c, cmask, o_base, so_t, bias, tap0, tap1, tap2, tap3, x1, x2, x3, BT)
        x1, x2, x3 = _walk_out(xc, r + 2, t0, T, c, cmask, o_base, so_t, bias, tap0, tap1, tap2, tap3, x1, x2, x3, BT)
        x1, x2, x3 = _walk_out(xd, r + 3, t0, T, c, cmask, o_base, so_t, bias, tap0, tap1, tap2, tap3, x1, x2, x3, BT)


@triton.jit
def _conv_bwd_walk_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, part_ptr,
                          T, C,
                          sx_b, sx_t, sw_c, sw_k, sd_b, sd_t, sdx_b, sdx_t, sp_r, sp_k,
                          W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                          ACC: tl.constexpr):
    """The walking backward: one program per (BT rows, BC channels, sequence) walks its rows one at a time, each a
    (BC,) vector, keeping the last three rows of x and of dpre in registers: no tile is shifted along time, and
    only (BC,) vectors are live, so many programs fit an SM. At row r it forms dpre[r], adds its dweight and dbias
    terms (rows it owns, t0 .. t0 + BT - 1), and stores dx[r - 3] = sum_s tap_s dpre[r - 3 + s], which needs dpre
    three rows ahead: its first three rows store nothing (the previous program's rows) and it walks three rows
    past its own for dpre only. The taps are indexed by the time shift s they apply to (tap_s = w[:, W - 1 - s],
    zero for s >= W), so every W walks the same three-row window. Rows go four to an iteration, their eight loads
    issued before any of the four rows' stores: the compiler may not move a load above a store that could alias
    it, so this is what keeps several rows' loads in flight per warp (Triton does not software-pipeline loads
    that feed no dot). x, dout and dx channel-last (stride over channels 1); the weight (C, W) with any
    strides."""
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    x_base = x_ptr + b * sx_b + c
    d_base = dout_ptr + b * sd_b + c
    dx_base = dx_ptr + b * sdx_b + c
    t0 = pid_g * BT
    bias, tap0, tap1, tap2, tap3, x1, x2, x3 = _walk_setup(x_base, w_ptr, b_ptr, t0, c, cmask, sx_t, sw_c, sw_k, W,
                                                           HAS_BIAS, ACC)
    # the dpre window, dpre[r - 1 .. r - 3]; dweight by shift s (sum_r dpre[r] x[r - s]) and dbias
    g1 = tl.zeros((BC,), dtype=ACC)
    g2 = tl.zeros((BC,), dtype=ACC)
    g3 = tl.zeros((BC,), dtype=ACC)
    dw0 = tl.zeros((BC,), dtype=ACC)
    dw1 = tl.zeros((BC,), dtype=ACC)
    dw2 = tl.zeros((BC,), dtype=ACC)
    dw3 = tl.zeros((BC,), dtype=ACC)
    db = tl.zeros((BC,), dtype=ACC)
    for r in range(t0, t0 + BT + 3, 4):  # rows t0 .. t0 + BT + 2, and one past them whose stores are masked off
        xa, da = _walk_row(x_base, r, c, cmask, T, sx_t, ACC), _walk_row(d_base, r, c, cmask, T, sd_t, ACC)
        xb, dbb = _walk_row(x_base, r + 1, c, cmask, T, sx_t, ACC), _walk_row(d_base, r + 1, c, cmask, T, sd_t, ACC)
        xc, dc = _walk_row(x_base, r + 2, c, cmask, T, sx_t, ACC), _walk_row(d_base, r + 2, c, cmask, T, sd_t, ACC)
        xd, dd = _walk_row(x_base, r + 3, c, cmask, T, sx_t, ACC), _walk_row(d_base, r + 3, c, cmask, T, sd_t, ACC)
        x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db = _walk_step(
            xa, da, r, t0, T, c, cmask, dx_base, sdx_t, bias, tap0, tap1, tap2, tap3,
            x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db, BT)
        x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db = _walk_step(
            xb, dbb, r + 1, t0, T, c, cmask, dx_base, sdx_t, bias, tap0, tap1, tap2, tap3,
            x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db, BT)
        x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db = _walk_step(
            xc, dc, r + 2, t0, T, c, cmask, dx_base, sdx_t, bias, tap0, tap1, tap2, tap3,
            x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db, BT)
        x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db = _walk_step(
            xd, dd, r + 3, t0, T, c, cmask, dx_base, sdx_t, bias, tap0, tap1, tap2, tap3,
            x1, x2, x3, g1, g2, g3, dw0, dw1, dw2, dw3, db, BT)
    _store_partials(part_ptr + (b * tl.num_programs(0) + pid_g) * sp_r + c, sp_k, cmask, dw0, dw1, dw2, dw3, db, W)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_conv_fwd_walk_kernel, InterpretedFunction)


def _check(x, weight, bias, dout=None) -> None:
    """One ValueError line for the first input that is not what the kernels take."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"causal_conv1d_silu: x must be (batch, channels, seqlen), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    _, c, _ = x.shape
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != c:
        raise ValueError(f"causal_conv1d_silu: weight must be (channels, width) = ({c}, W), got shape "
                         f"{tuple(getattr(weight, 'shape', ()))}")
    if weight.shape[1] not in WIDTHS:
        raise ValueError(f"causal_conv1d_silu: width must be one of {list(WIDTHS)}, got {weight.shape[1]}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c,)):
        raise ValueError(f"causal_conv1d_silu: bias must be None or ({c},), got shape "
                         f"{tuple(getattr(bias, 'shape', ()))}")
    if dout is not None and tuple(dout.shape) != tuple(x.shape):
        raise ValueError(f"causal_conv1d_silu: dout must have x's shape {tuple(x.shape)}, got {tuple(dout.shape)}")
    check_dtypes_and_device("causal_conv1d_silu", x, (("x", x), ("weight", weight), ("bias", bias), ("dout", dout)))
    check_runs_here("causal_conv1d_silu", x, interpreted())


def _launch(defaults: dict, block_t, block_c, num_warps) -> tuple[int, int, int]:
    """(block_t, block_c, num_warps), each None replaced by the kernel's default; one ValueError line for a block
    that is not a power of two or a warp count that is not a positive int."""
    for name, v in (("block_t", block_t), ("block_c", block_c)):
        if v is not None and (not isinstance(v, int) or v < 1 or v & (v - 1)):
            raise ValueError(f"causal_conv1d_silu: {name} must be a power of two, got {v!r}")
    if num_warps is not None and (not isinstance(num_warps, int) or num_warps < 1):
        raise ValueError(f"causal_conv1d_silu: num_warps must be a positive int, got {num_warps!r}")
    return tuple(v if v is not None else defaults[k]
                 for k, v in (("block_t", block_t), ("block_c", block_c), ("num_warps", num_warps)))


def _new_channel_last(x: torch.Tensor) -> torch.Tensor:
    b, c, t = x.shape
    return x.new_empty(b, t, c).transpose(1, 2)  # (B, C, T), stride over channels 1


def _as_channel_last(x: torch.Tensor) -> torch.Tensor:
    """x itself where its channels are already the contiguous axis, else a channel-last copy. The backward's
    kernels read whole rows of channels per time step: with any other layout each element of a tile is a
    separate memory transaction (a 16x or worse slowdown), so one extra read and write of the tensor is the
    cheaper way."""
    if x.stride(1) == 1 or x.shape[1] == 1:
        return x
    return _new_channel_last(x).copy_(x)


def _check_dx(dx, x) -> None:
    """conv_bwd's dx= buffer: x's shape, dtype and device, channels contiguous (any batch and time strides)."""
    if (not isinstance(dx, torch.Tensor) or tuple(dx.shape) != tuple(x.shape) or dx.dtype != x.dtype
            or dx.device != x.device or (dx.stride(1) != 1 and dx.shape[1] > 1)):
        raise ValueError(f"causal_conv1d_silu: dx must be a {tuple(x.shape)} {x.dtype} tensor on {x.device} with "
                         f"channel stride 1, got "
                         + (f"{tuple(dx.shape)} {dx.dtype} on {dx.device}, strides {dx.stride()}"
                            if isinstance(dx, torch.Tensor) else type(dx).__name__))


def conv_fwd(x, weight, bias=None, *, block_t=None, block_c=None, num_warps=None):
    """out = silu(causal depthwise conv1d(x, weight) + bias): x (B, C, T) (channel-last for speed: copied so
    first where it is not), weight (C, W) with W in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype,
    channel-last. block_t x block_c: the rows a program walks and its channels, num_warps its warps; None takes
    FWD_DEFAULTS."""
    block_t, block_c, num_warps = _launch(FWD_DEFAULTS, block_t, block_c, num_warps)
    _check(x, weight, bias)
    bsz, c, t = x.shape
    out = _new_channel_last(x)
    if out.numel() == 0:
        return out
    x = _as_channel_last(x)
    _conv_fwd_walk_kernel[(triton.cdiv(t, block_t), triton.cdiv(c, block_c), bsz)](
        x, weight, bias if bias is not None else weight, out,
        t, c,
        x.stride(0), x.stride(2), *weight.stride(), out.stride(0), out.stride(2),
        W=weight.shape[1], HAS_BIAS=bias is not None, BT=block_t, BC=block_c, ACC=TL_DTYPES[compute_dtype(x)],
        num_warps=num_warps)
    return out


def conv_bwd(x, weight, bias, dout, *, block_t=None, block_c=None, num_warps=None, dx=None):
    """(dx, dweight, dbias) of sum(out * dout) for out = conv_fwd(x, weight, bias): dx (B, C, T) in x's dtype,
    channel-last; dweight (C, W) and dbias (C,) in their parameter's dtype (None for an absent bias), reduced
    in the compute dtype. x and dout any strides (copied channel-last first where they are not). block_t x
    block_c: the rows a program walks and its channels, num_warps its warps; None takes BWD_DEFAULTS. dx: where
    to write dx, a tensor of x's shape and dtype with channel stride 1 and any other strides (e.g. a slice of a
    wider channel-last buffer); None allocates it channel-last contiguous."""
    block_t, block_c, num_warps = _launch(BWD_DEFAULTS, block_t, block_c, num_warps)
    _check(x, weight, bias, dout)
    bsz, c, t = x.shape
    w = weight.shape[1]
    if dx is None:
        dx = _new_channel_last(x)
    else:
        _check_dx(dx, x)
    acc = compute_dtype(x)
    groups = triton.cdiv(t, block_t)  # programs along time
    # [row, k, c], row W dbias: every program writes its row's every channel, so only an empty launch needs zeros
    part = (torch.empty if dx.numel() else torch.zeros)(bsz * groups, w + 1, c, dtype=acc, device=x.device)
    if dx.numel():
        x, dout = _as_channel_last(x), _as_channel_last(dout)
        has_bias = bias is not None
        _conv_bwd_walk_kernel[(groups, triton.cdiv(c, block_c), bsz)](
            x, weight, bias if has_bias else weight, dout, dx, part,
            t, c,
            x.stride(0), x.stride(2), *weight.stride(), dout.stride(0), dout.stride(2), dx.stride(0), dx.stride(2),
            part.stride(0), part.stride(1),
            W=w, HAS_BIAS=has_bias, BT=block_t, BC=block_c, ACC=TL_DTYPES[acc], num_warps=num_warps)
    red = column_sums(part.view(part.shape[0], (w + 1) * c)).view(w + 1, c)  # (W + 1, C), deterministic
    dweight = red[:w].t().to(weight.dtype)
    dbias = red[w].to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _ConvSiluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, launch):
        ctx.save_for_backward(x, weight, bias)
        ctx.launch = launch
        return conv_fwd(x, weight, bias, **launch)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = conv_bwd(x, weight, bias, dout, **ctx.launch)
        return dx, dweight, dbias, None


def causal_conv1d_silu(x, weight, bias=None, *, block_t=None, block_c=None, num_warps=None):
    """causal_conv1d_fn(x, weight, bias, activation="silu") as golf's mixer calls it, on golf's kernels,
    differentiable w.r.t. x, weight and bias. x (B, C, T) (a channel-last view for speed), weight (C, W) with W
    in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype, channel-last. block_t, block_c (the rows a
    program walks, its channels) and num_warps apply to the forward and backward kernels alike; None takes each
    one's default (FWD_DEFAULTS, BWD_DEFAULTS). Bad inputs are refused by conv_fwd's checks, before any kernel
    runs."""
    return _ConvSiluFn.apply(x, weight, bias, {"block_t": block_t, "block_c": block_c, "num_warps": num_warps})
