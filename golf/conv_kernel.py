"""golf's own Triton kernels for the Mamba-2 mixer's causal depthwise conv1d + bias + SiLU, forward and backward.
`causal_conv1d_silu(x, weight, bias)` has the call of causal-conv1d's causal_conv1d_fn(x, weight, bias,
activation="silu") as golf.ssm.Mamba2Mixer makes it (no seq_idx, initial or final states); model.ssm_conv "golf"
selects it on the triton path (golf.ssm.resolve_ssm_backend; golf::causal_conv1d_silu under ssm_compile
"opaque") and inside golf's fused mixer op (golf/mixer_op.py, conv_fwd and conv_bwd writing dx into the input
gradient's columns). bench/conv_kernel_bench.py times it against causal_conv1d_fn on a CUDA device.

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
dtypes; out and dx in x's dtype, dweight and dbias in their parameter's dtype.

Layout. x (B, C, T) may have any strides, but the fast one is channel-last: a transpose view of a (B, T, C)
tensor, stride over channels 1, over time C or wider (the mixer's xBC is a slice of in_proj's output, row stride
1664 at the production shapes). Channels are then the contiguous axis of every load. The forward passes x's
strides to its kernel as they are. The backward first makes a channel-last copy of x or dout where its stride
over channels is not 1 (inside a compiled model dout can arrive as a plain (B, C, T) tensor, time the fast
axis): one extra read and write of that tensor, far cheaper than tile loads whose every element is its own
memory transaction; its kernels then take channels as contiguous (stride 1 at compile time, so loads can be
vectorized). out and dx (unless conv_bwd is given dx=) are allocated channel-last contiguous ((B, T, C)
transposed), as causal-conv1d's are.

Forward: conv_fwd(..., design=) "walk" (the default) or "tile". Nothing is saved for backward but the inputs (x,
weight, bias): the backward recomputes pre.
  "walk": _conv_fwd_walk_kernel, grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B), default 128 rows of 64 channels at
     one warp: each program walks its rows as the walking backward does (below), one (BLOCK_C,) row of x at a
     time with the last three rows in registers, so each row of x is loaded once. x copied channel-last first
     where it is not.
  "tile": _conv_fwd_kernel, same grid, default tile 64 x 128 at 4 warps; each program loads the W time-shifted
     (BLOCK_T, BLOCK_C) tiles of x it needs (rows t - W + 1 .. t; the overlapping rows come from L1/L2, so DRAM
     sees x about once), adds the W taps and the bias, applies SiLU and stores. x at any strides.

Backward: conv_bwd(..., design=) "walk" (the default: one kernel walking rows), "two_pass" (two kernels and a
dpre scratch) or "fused" (one kernel over tiles, no activation-sized scratch). Each has its own default launch
(BWD_DEFAULTS: the tile designs 32 x 64 at 8 warps, each (BT, BC) fp32 tile then 8 values per thread), reads
channels contiguous in every load and store (x and dout copied channel-last where needed, above), writes dx
through its strides (conv_bwd's dx= takes any buffer whose channel stride is 1, e.g. a slice of a wider
channel-last tensor), and sums the weight gradients the same way: per-program partial sums, one row per program
along time of a (B * programs, W + 1, C) buffer (taps, then dbias), summed in PyTorch: deterministic (no atomics;
the same bits run to run).

Design "walk": _conv_bwd_walk_kernel, grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B), default 128 rows of 64
channels at one warp (two channels a thread). A program walks its rows one (BLOCK_C,) vector at a time, never
shifting a tile along time: at row r it loads x[r] and dout[r], forms pre[r] from x[r] and the three rows of x
before it (kept in registers), dpre[r] = dout[r] silu'(pre[r]), adds dpre[r] x[r - s] (s < W) and dpre[r] to the
weight gradients' (BLOCK_C,) sums, and stores dx[r - 3] = sum_s tap_s dpre[r - 3 + s] from the three rows of dpre
before it: dx trails by three rows, so a program walks three rows past its own (their dpre only) and stores
nothing for its first three. The taps are indexed by the time shift s they apply to (tap_s = w[:, W - 1 - s],
zero for s >= W), so every W walks the same three-row window, and are loaded once a program from the weight as
it is (no (W, C) copy). Rows go four to an iteration, their eight loads issued before the four rows' stores:
the compiler may not move a load above a store that could alias it, and Triton does not software-pipeline loads
that feed no dot (compiled for sm_90a, a stage count made no difference), so this is what keeps several rows in
flight per warp. Registers (ptxas for sm_90a, bf16 x, W = 4): 64 at the default, 120 at 128 channels a warp, 40 at
64 channels on two warps; no spills; every program a warp, so many share an SM. DRAM traffic: read x and dout,
write dx, about 3A as the fused design, plus 3 rows of x and dout of halo per 128 (2%). On an H200 (bench/RESULTS.md
2026-12-01 sixteenth block) 0.255 ms a call alone (1.6x its floor) against causal-conv1d's 0.37-0.61 in the same
bench, and 0.245 against 0.506 in hybrid_12_b131k's training step.

Design "two_pass": a scratch dpre of (B, T, C) in the compute dtype.
  A. _conv_bwd_dpre_kernel, grid (cdiv(T, BLOCK_T * tiles), cdiv(C, BLOCK_C), B): each program walks `tiles`
     consecutive time tiles (default 8, 256 rows). Per tile it loads the W shifted x tiles once, forms pre,
     loads dout, stores dpre = dout silu'(pre) (one sigmoid per element), and adds dpre and dpre x[t - s]
     (s = 0 .. W - 1, the same x tiles) into W + 1 (BT, BC) accumulators, reduced over rows once at the end
     into the program's row of the partial-sum buffer (production shapes: 512 rows * 5 * 832 fp32 = 8.5 MB).
  B. _conv_bwd_dx_kernel, grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B): dx[t] = sum_j w[W - 1 - j] dpre[t + j]
     from W shifted loads of the scratch (zero at or past T; overlapping rows again from L1/L2), stored in x's
     dtype.
Registers, from ptxas -v on the Triton 3.9 PTX for sm_90a (bf16 x, W = 4, no GPU run): A 128 per thread at
the default tile (149 fp16, 152 fp32 x), B 62, no spills, every global load and store vectorized. A at 32 x 64
with 4 warps, or 64 x 64 or 32 x 128 with 8, uses 228 to 237 (fewer programs per SM); at the forward's 64 x 128
it spills (976 bytes per thread at 8 warps, 10 KB at 4), which is why the backward has its own defaults.
DRAM traffic (bf16 x at the production shapes, one activation A = 218 MB): read x and dout (2A), write and
read back the fp32 scratch (4A), write dx (A): about 7A = 1.5 GB (plus 2A for each of x and dout that needs its
channel-last copy). Measured on an H200 with bench/conv_kernel_bench.py (b=64 T=2048 C=832 W=4 bf16
channel-last; bench/RESULTS.md, 2026-11-30 sixth block): forward + backward 0.942 ms of device time against
causal-conv1d's 0.741; in hybrid_seed_fit's training step its kernels took 13.7 ms a step against
causal-conv1d's 9.45, plus 10.2 ms for one (B, C, T) copy per call (most likely dout's channel-last copy above:
x arrives channel-last there). `tiles` trades the partial-sum buffer's size (and its reduction in PyTorch)
against the number of programs of kernel A; it does not affect dx, nor (beyond rounding order) the weight
gradients. A fused kernel of another kind, which recomputed pre W times per tile (W shifted loads each, several
large fp32 tiles held at once; 64 x 128 tiles, 4 warps: 255 registers and 2.4 KB of spill stores per thread
compiled as above), measured 4.9 ms on the same bench against causal-conv1d's 0.62 ms and a 0.164 ms memory
floor, and about 20 ms per call inside the compiled hybrid model.

Design "fused": _conv_bwd_fused_kernel, one kernel over overlapping time tiles. A tile covers BT rows from t0;
the program computes pre (W shifted loads of x, rows t0 - (W - 1) .. t0 + BT - 1, zero before 0 and from T),
dout and dpre on all BT rows, but owns only the first OWN = BT - (W - 1): it writes dx and adds to the weight
gradients for those rows only. The other W - 1 rows are the halo whose dpre the owned rows' dx needs (dx[t] =
sum_j w[W - 1 - j] dpre[t + j], dpre = 0 from T). Tiles start OWN rows apart, so every row is owned once;
grid (cdiv(cdiv(T, OWN), tiles), cdiv(C, BLOCK_C), B), each program walking `tiles` consecutive tiles (default
8: 232 rows at BT = 32, W = 4; partial-sum buffer at the production shapes 576 rows, 9.6 MB); block_t must be
at least W. Costs of the overlap: (W - 1) / OWN more pre and dpre work (10% at BT = 32, W = 4), and per tile
2(W - 1) rows of x and W - 1 of dout read a second time (from L1/L2).
  Shifting dpre along time within the tile (dpre[t + j], j = 1 .. W - 1) is done one of two ways, conv_bwd's
  shift= (a constexpr of the kernel; which is faster is for the GPU to say):
  "gather" (default): tl.gather(dpre, min(row + j, BT - 1), axis=0) on the register tile. Rows past the tile
     read row BT - 1, garbage that feeds only unowned rows. Compiled (Triton 3.9, sm_90a), the gathers run
     with warp shuffles in a layout where each warp holds whole columns of the tile: dpre and the x tile are
     converted into it, and dx back out of it for the store, each through shared memory.
  "scratch": each program stores its dpre tile into a private (BT, BC) region of a global scratch buffer,
     tl.debug_barrier(), loads it back W - 1 times at row offsets j (rows past the tile masked to zero), and
     passes a second barrier before its next tile overwrites the region. The scratch is num_programs * BT * BC
     in the compute dtype (production shapes, default tiles: 7488 programs * 8 KB = 61 MB), each region live
     only while its program runs, so its traffic stays in L1/L2 until L2 evicts a dead region's dirty lines (at
     most its size in writes, 0.3 A). Compiled, the fp32 store takes a 4-per-thread layout, so with bf16 x (8
     per thread) it too converts the tile through shared memory first.
  Weight gradients without the shifted x tiles: dw[:, W - 1 - j] = sum_t dpre[t] x[t - j] = sum_u x[u]
  dpre[u + j] (x = 0 before 0, dpre = 0 from T), summed over the owned rows u, which together cover [0, T) once.
  So the kernel keeps only the unshifted x tile, next to the shifted dpre tiles that dx needs anyway, and each
  x tile of pre dies as soon as it is added in. W + 1 (BT, BC) accumulators over the program's tiles, reduced
  over rows once at the end, as kernel A: at the default tile a (BC,) vector costs each thread as many
  registers as a (BT, BC) tile, and (BC,) sums reduced per tile measured more (166 gather, 180 scratch). The
  taps are loaded twice per tile, for pre and for dx, from two stacked copies of the (W, C) weight ((2W, C)):
  from one address the compiler merges the loads and keeps the W taps live through the tile (171 gather, 142
  scratch).
  Registers per thread (triton.compile for sm_90a with Triton 3.9 and its bundled ptxas, bf16 x, W = 4,
  pointers and ints 16-divisible as in the production call, no GPU run; kernel A 134 in the same run, where
  the figures above say 128), gather and scratch: at the default 32 x 64 and 8 warps 140 and 136, no spills,
  every x, dout and dx access 16 bytes wide (fp32 x 181 and 140, W = 3 128 and 134, W = 2 102 and 100);
  16 x 64 at 8 warps 126 and 104; 16 x 64 at 4 warps 144 and 142; 64 x 32 at 8 warps and 32 x 32 at 4, 138
  both; 16 x 128 at 8 warps 189 and 137; 32 x 64 at 4 warps 255 (a 16-byte spill stack) and 250; 64 x 64 and
  32 x 128 at 8 warps 254 to 255 (gather: 80 to 88 bytes of spill stack); 64 x 128 at 4 warps spills, 5.4 KB
  of stack. Above 128 a program of 8 warps has an SM to itself.
  DRAM traffic: read x and dout, write dx: about 3A = 0.65 GB at the production shapes, against the two-pass
  design's 7A (plus the channel-last copies, as there). The bytes saved did not make it faster. On an H200
  (bench/conv_kernel_bench.py at the production shapes, row stride 1664, Triton 3.6; bench/RESULTS.md 2026-12-01
  fifteenth block), the "bwd ms" column (fwd + bwd less fwd, through autograd, which adds work of its own around each
  implementation's kernels): the best fused launch 1.363 (gather, 32 x 32, 4 warps; scratch best 1.408 at 16 x 32, 4
  warps), the best two-pass launch 1.321 (16 x 32, 4 warps; 1.453 at its default), causal-conv1d 1.287. Neither design
  beats causal-conv1d's backward, so no config selects golf's conv.

Limits. W (the width) 2, 3 or 4, as causal-conv1d. No seq_idx, initial_states, return_final_states or activations
other than SiLU. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is first imported; tests/conftest.py). The two-pass backward is checked in the interpreter
(tests/test_conv_kernel.py), by compiling it offline (above), and on an H200 against causal_conv1d_fn
(bench/conv_kernel_bench.py: forward bit-exact, dx 2.2e-3, the weight gradients <= 1e-6 relative); the fused one in
the interpreter (against the reference and the two-pass design, both shifts), by compiling it offline, and on an
H200 (tests/test_conv_kernel.py compiled: every case passed; the bench's parity against causal_conv1d_fn: dx 2.1e-3,
the weight gradients <= 1.3e-6 relative). The two-pass backward allocates its scratch per call (an fp32 activation,
436 MB at the production shapes), the fused one its per-program regions with the scratch shift (61 MB), transient in
PyTorch's caching allocator.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_runs_here
from golf.ssm import compute_dtype

WIDTHS = (2, 3, 4)
BWD_DESIGNS = ("two_pass", "fused", "walk")  # conv_bwd's design
SHIFTS = ("gather", "scratch")  # the fused backward's shift of dpre within a tile


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _pre(x_base, w_base, bias, t, c, cmask, T, sx_c, sx_t, sw_c, sw_k, W: tl.constexpr, ACC: tl.constexpr):
    """pre = bias + sum_k w[:, k] x[t - (W - 1 - k)] on the (BT, BC) tile of rows t, channels c (zero-padded
    before t = 0; rows at or past T read zeros too)."""
    acc = tl.zeros((t.shape[0], c.shape[0]), dtype=ACC) + bias[None, :]
    for k in tl.static_range(W):
        ts = t - (W - 1 - k)  # (BT,)
        m = ((ts >= 0) & (ts < T))[:, None] & cmask[None, :]
        xv = tl.load(x_base + ts[:, None] * sx_t + c[None, :] * sx_c, mask=m, other=0.0).to(ACC)  # (BT, BC)
        wk = tl.load(w_base + c * sw_c + k * sw_k, mask=cmask, other=0.0).to(ACC)  # (BC,)
        acc += wk[None, :] * xv
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr,
                     T, C,
                     sx_b, sx_c, sx_t, sw_c, sw_k, so_b, so_c, so_t,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                     ACC: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)  # (BT,)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros((BC,), dtype=ACC)
    pre = _pre(x_ptr + b * sx_b, w_ptr, bias, t, c, cmask, T, sx_c, sx_t, sw_c, sw_k, W, ACC)  # (BT, BC)
    out = pre / (1.0 + tl.exp(-pre))
    m = (t < T)[:, None] & cmask[None, :]
    tl.store(out_ptr + b * so_b + t[:, None] * so_t + c[None, :] * so_c, out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _x_shift(x_base, t, s: tl.constexpr, c, cmask, T, sx_t, ACC: tl.constexpr):
    """x[t - s] on the (BT, BC) tile of rows t (channels contiguous; zero before t = 0 and at or past T)."""
    ts = t - s
    m = ((ts >= 0) & (ts < T))[:, None] & cmask[None, :]
    return tl.load(x_base + ts[:, None] * sx_t + c[None, :], mask=m, other=0.0).to(ACC)


@triton.jit
def _w_shift(w_ptr, c, cmask, s: tl.constexpr, W: tl.constexpr, sw_c, sw_k, ACC: tl.constexpr):
    """The tap that multiplies x[t - s] in pre[t], i.e. w[:, W - 1 - s] (zeros for s >= W), from a weight of
    strides sw_c over channels and sw_k over taps (the (W, C) contiguous copy: 1, C)."""
    if s < W:
        return tl.load(w_ptr + c * sw_c + (W - 1 - s) * sw_k, mask=cmask, other=0.0).to(ACC)
    else:
        return tl.zeros(c.shape, dtype=ACC)


@triton.jit
def _tile_dpre(x_base, d_base, b_ptr, wt_ptr, t, c, cmask, T, C, sx_t, sd_t, W: tl.constexpr, HAS_BIAS: tl.constexpr,
               ACC: tl.constexpr):
    """dpre = dout silu'(pre) on the (BT, BC) tile of rows t (0 at rows t >= T), with the W shifted x tiles
    x[t - s] that pre was made of: → dpre, x0, x1, x2, x3 (zeros for s >= W). x and dout channel-last; wt the
    (W, C) contiguous copy of the weight. The bias and the W taps (indexed by the time shift s they apply to,
    s = W - 1 - k) are loaded per tile, not kept from before the caller's loop over tiles: L1 hits, where keeping
    them holds 5 more (BC,) vectors through the loop (kernel A, ptxas for sm_90: 168 registers per thread against
    128). A caller that uses only some of the x tiles lets the others die once added into pre."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros((c.shape[0],), dtype=ACC)
    x0 = _x_shift(x_base, t, 0, c, cmask, T, sx_t, ACC)
    x1 = _x_shift(x_base, t, 1, c, cmask, T, sx_t, ACC)
    pre = (bias[None, :] + _w_shift(wt_ptr, c, cmask, 0, W, 1, C, ACC)[None, :] * x0
           + _w_shift(wt_ptr, c, cmask, 1, W, 1, C, ACC)[None, :] * x1)
    if W >= 3:
        x2 = _x_shift(x_base, t, 2, c, cmask, T, sx_t, ACC)
        pre += _w_shift(wt_ptr, c, cmask, 2, W, 1, C, ACC)[None, :] * x2
    else:
        x2 = tl.zeros_like(x0)
    if W >= 4:
        x3 = _x_shift(x_base, t, 3, c, cmask, T, sx_t, ACC)
        pre += _w_shift(wt_ptr, c, cmask, 3, W, 1, C, ACC)[None, :] * x3
    else:
        x3 = tl.zeros_like(x0)
    m = (t < T)[:, None] & cmask[None, :]
    dout = tl.load(d_base + t[:, None] * sd_t + c[None, :], mask=m, other=0.0).to(ACC)
    sig = 1.0 / (1.0 + tl.exp(-pre))
    return dout * sig * (1.0 + pre * (1.0 - sig)), x0, x1, x2, x3


@triton.jit
def _store_partials(p_base, sp_k, cmask, dw0, dw1, dw2, dw3, db, W: tl.constexpr):
    """A program's row of the partial-sum buffer, [row, k, c] at p_base (the row's channels c): the (BT, BC)
    accumulators of dweight by shift s (tap k = W - 1 - s) and of dbias (k = W), each reduced over rows."""
    tl.store(p_base + (W - 1) * sp_k, tl.sum(dw0, axis=0), mask=cmask)
    tl.store(p_base + (W - 2) * sp_k, tl.sum(dw1, axis=0), mask=cmask)
    if W >= 3:
        tl.store(p_base + (W - 3) * sp_k, tl.sum(dw2, axis=0), mask=cmask)
    if W >= 4:
        tl.store(p_base + (W - 4) * sp_k, tl.sum(dw3, axis=0), mask=cmask)
    tl.store(p_base + W * sp_k, tl.sum(db, axis=0), mask=cmask)


@triton.jit
def _conv_bwd_dpre_kernel(x_ptr, wt_ptr, b_ptr, dout_ptr, dpre_ptr, part_ptr,
                          T, C, tiles,
                          sx_b, sx_t, sd_b, sd_t, sg_b, sg_t, sp_r, sp_k,
                          W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                          ACC: tl.constexpr):
    """Kernel A: dpre = dout silu'(pre) to the scratch, and this program's partial dweight and dbias. x, dout and
    the scratch are channel-last (stride over channels 1, so every row of a tile is one coalesced load); wt is
    the (W, C) contiguous copy of the weight, so that each tap is a contiguous vector over channels too."""
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    x_base = x_ptr + b * sx_b
    d_base = dout_ptr + b * sd_b
    g_base = dpre_ptr + b * sg_b
    # dweight (by shift s) and dbias summed elementwise over the program's tiles and reduced over rows once at
    # the end: at the default 32 x 64 tile and 8 warps a (BT, BC) tile is 8 values per thread, no more than a
    # (BC,) vector replicated across the rows' threads, and no cross-warp reduction runs per tile
    dw0 = tl.zeros((BT, BC), dtype=ACC)
    dw1 = tl.zeros((BT, BC), dtype=ACC)
    dw2 = tl.zeros((BT, BC), dtype=ACC)
    dw3 = tl.zeros((BT, BC), dtype=ACC)
    db = tl.zeros((BT, BC), dtype=ACC)
    for i in range(tiles):
        t = (pid_g * tiles + i) * BT + tl.arange(0, BT)  # (BT,)
        m = (t < T)[:, None] & cmask[None, :]
        # (BT, BC) each: dpre, and the W shifted x tiles, each loaded once and used for pre and for dweight
        dpre, x0, x1, x2, x3 = _tile_dpre(x_base, d_base, b_ptr, wt_ptr, t, c, cmask, T, C, sx_t, sd_t, W, HAS_BIAS,
                                          ACC)
        tl.store(g_base + t[:, None] * sg_t + c[None, :], dpre, mask=m)
        db += dpre
        dw0 += dpre * x0
        dw1 += dpre * x1
        if W >= 3:
            dw2 += dpre * x2
        if W >= 4:
            dw3 += dpre * x3
    _store_partials(part_ptr + (b * tl.num_programs(0) + pid_g) * sp_r + c, sp_k, cmask, dw0, dw1, dw2, dw3, db, W)


@triton.jit
def _conv_bwd_dx_kernel(dpre_ptr, wt_ptr, dx_ptr,
                        T, C,
                        sg_b, sg_t, sdx_b, sdx_t,
                        W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr):
    """Kernel B: dx[t] = sum_j w[:, W - 1 - j] dpre[t + j] (dpre = 0 at t + j >= T), stored in dx's dtype. The
    scratch and dx are channel-last; wt is the (W, C) contiguous copy of the weight."""
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)  # (BT,)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    g_base = dpre_ptr + b * sg_b
    dx = tl.zeros((BT, BC), dtype=ACC)
    for j in tl.static_range(W):  # W shifted loads of the scratch: the overlapping rows come from L1/L2
        s = t + j
        g = tl.load(g_base + s[:, None] * sg_t + c[None, :], mask=(s < T)[:, None] & cmask[None, :], other=0.0)
        wk = tl.load(wt_ptr + (W - 1 - j) * C + c, mask=cmask, other=0.0).to(ACC)  # (BC,)
        dx += wk[None, :] * g
    m = (t < T)[:, None] & cmask[None, :]
    tl.store(dx_ptr + b * sdx_b + t[:, None] * sdx_t + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


@triton.jit
def _dpre_shift(dpre, s_ptrs, r, j: tl.constexpr, BT: tl.constexpr, GATHER: tl.constexpr):
    """dpre[r + j] on the program's (BT, BC) tile (rows r = 0 .. BT - 1 of the tile). Rows r + j >= BT are not
    in the tile: garbage (gather: row BT - 1) or zero (scratch), either way they feed only rows r >= BT - (W - 1),
    which the program does not own. GATHER: a gather of the register tile along rows; else loads from the
    program's scratch region s_ptrs (the tile stored there row-major, (BT, BC) contiguous)."""
    if j == 0:
        return dpre
    if GATHER:
        idx = tl.minimum(r + j, BT - 1)[:, None] + tl.zeros(dpre.shape, dtype=tl.int32)  # (BT, BC)
        return tl.gather(dpre, idx, axis=0)
    else:
        return tl.load(s_ptrs + j * dpre.shape[1], mask=(r + j < BT)[:, None], other=0.0)


@triton.jit
def _conv_bwd_fused_kernel(x_ptr, wt_ptr, b_ptr, dout_ptr, dx_ptr, part_ptr, scratch_ptr,
                           T, C, tiles,
                           sx_b, sx_t, sd_b, sd_t, sdx_b, sdx_t, sp_r, sp_k,
                           W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                           GATHER: tl.constexpr, ACC: tl.constexpr):
    """The one-kernel backward. Per (BT, BC) tile of rows t0 .. t0 + BT - 1: pre and dpre as kernel A, then the
    shifted dpre[t + j] (j < W, _dpre_shift) for dx[t] = sum_j w[:, W - 1 - j] dpre[t + j] and for the weight
    gradients, taken over the tile's first OWN = BT - (W - 1) rows only (its owned rows; the other W - 1 rows are
    the halo whose dpre those rows need). Tiles start OWN rows apart, a program walks `tiles` consecutive ones.
    x, dout and dx channel-last (stride over channels 1); wt two (W, C) contiguous copies of the weight, one
    stacked on the other ((2W, C)): pre's taps from the first, dx's from the second (two addresses, so the
    compiler cannot merge the loads and keep the taps live through the tile; module docstring); scratch_ptr
    (scratch shift only): one (BT, BC) region in the compute dtype per program, row-major."""
    OWN: tl.constexpr = BT - (W - 1)
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    r = tl.arange(0, BT)  # (BT,) row within the tile
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    own = (r < OWN)[:, None]  # (BT, 1)
    x_base = x_ptr + b * sx_b
    d_base = dout_ptr + b * sd_b
    dx_base = dx_ptr + b * sdx_b
    wd_ptr = wt_ptr + W * C  # the taps' second copy, for dx
    region = (b * tl.num_programs(1) + pid_c) * tl.num_programs(0) + pid_g  # this program's scratch region
    s_ptrs = scratch_ptr + region * (BT * BC) + r[:, None] * BC + tl.arange(0, BC)[None, :]  # (BT, BC) row-major
    # dw[:, W - 1 - j] = sum_t dpre[t] x[t - j] = sum_u x[u] dpre[u + j] (x = 0 before u = 0, dpre = 0 from T):
    # summed over owned rows u, it needs only the unshifted x tile next to the shifted dpre that dx needs anyway,
    # and every u in [0, T) is some tile's owned row, so the sum is whole. Accumulated elementwise over the
    # program's tiles, reduced over rows once at the end, as kernel A.
    dw0 = tl.zeros((BT, BC), dtype=ACC)
    dw1 = tl.zeros((BT, BC), dtype=ACC)
    dw2 = tl.zeros((BT, BC), dtype=ACC)
    dw3 = tl.zeros((BT, BC), dtype=ACC)
    db = tl.zeros((BT, BC), dtype=ACC)
    for i in range(tiles):
        t = (pid_g * tiles + i) * OWN + r  # (BT,)
        m = (t < T)[:, None] & cmask[None, :]
        # (BT, BC) each: dpre, and the unshifted x tile, kept for dweight (the shifted ones die inside pre)
        dpre, x0, _, _, _ = _tile_dpre(x_base, d_base, b_ptr, wt_ptr, t, c, cmask, T, C, sx_t, sd_t, W, HAS_BIAS, ACC)
        x0 = tl.where(own, x0, 0.0)  # owned rows only, for dweight
        db += tl.where(own, dpre, 0.0)
        dw0 += x0 * dpre
        if not GATHER:
            tl.store(s_ptrs, dpre)
            tl.debug_barrier()  # the whole tile stored before any thread reads its neighbours' rows
        g = _dpre_shift(dpre, s_ptrs, r, 1, BT, GATHER)
        dx = _w_shift(wd_ptr, c, cmask, 1, W, 1, C, ACC)[None, :] * g
        dw1 += x0 * g
        if W >= 3:
            g = _dpre_shift(dpre, s_ptrs, r, 2, BT, GATHER)
            dx += _w_shift(wd_ptr, c, cmask, 2, W, 1, C, ACC)[None, :] * g
            dw2 += x0 * g
        if W >= 4:
            g = _dpre_shift(dpre, s_ptrs, r, 3, BT, GATHER)
            dx += _w_shift(wd_ptr, c, cmask, 3, W, 1, C, ACC)[None, :] * g
            dw3 += x0 * g
        dx += _w_shift(wd_ptr, c, cmask, 0, W, 1, C, ACC)[None, :] * dpre
        tl.store(dx_base + t[:, None] * sdx_t + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m & own)
        if not GATHER:
            tl.debug_barrier()  # every thread's loads done before the next tile overwrites the region
    _store_partials(part_ptr + (b * tl.num_programs(0) + pid_g) * sp_r + c, sp_k, cmask, dw0, dw1, dw2, dw3, db, W)


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
    _store_partials(part_ptr + (b * tl.num_programs(0) + pid_g) * sp_r + c, sp_k, cmask, dw0[None, :],
                    dw1[None, :], dw2[None, :], dw3[None, :], db[None, :], W)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_conv_fwd_kernel, InterpretedFunction)


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


def _check_blocks(block_t, block_c, tiles, optional=False) -> None:
    """optional: None also accepted for block_t and block_c (each kernel's own default)."""
    for name, v in (("block_t", block_t), ("block_c", block_c)):
        if optional and v is None:
            continue
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"causal_conv1d_silu: {name} must be a power of two, got {v!r}")
    if not isinstance(tiles, int) or tiles < 1:
        raise ValueError(f"causal_conv1d_silu: tiles must be a positive int, got {tiles!r}")


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


FWD_DESIGNS = ("walk", "tile")  # conv_fwd's design
# conv_fwd's launch defaults by design. walk: block_t rows walked by a program of block_c channels; tile: (BT, BC)
# tiles
FWD_DEFAULTS = {"walk": {"block_t": 64, "block_c": 128, "num_warps": 1},
                "tile": {"block_t": 64, "block_c": 128, "num_warps": 4}}


def _launch(defaults: dict, block_t, block_c, num_warps) -> tuple[int, int, int]:
    """(block_t, block_c, num_warps), each None replaced by the design's default."""
    return tuple(v if v is not None else defaults[k]
                 for k, v in (("block_t", block_t), ("block_c", block_c), ("num_warps", num_warps)))


def conv_fwd(x, weight, bias=None, *, design="walk", block_t=None, block_c=None, num_warps=None):
    """out = silu(causal depthwise conv1d(x, weight) + bias): x (B, C, T) (channel-last for speed; any
    strides), weight (C, W) with W in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype, channel-last.
    design: "walk" (a program walks block_t rows of block_c channels; x copied channel-last first where it is
    not) or "tile" ((block_t, block_c) tiles, x at any strides); module docstring. None takes the design's
    default launch (FWD_DEFAULTS)."""
    if not isinstance(design, str) or design not in FWD_DESIGNS:
        raise ValueError(f"causal_conv1d_silu: fwd design must be one of {list(FWD_DESIGNS)}, got {design!r}")
    _check_blocks(block_t, block_c, 1, optional=True)
    _check(x, weight, bias)
    block_t, block_c, num_warps = _launch(FWD_DEFAULTS[design], block_t, block_c, num_warps)
    bsz, c, t = x.shape
    out = _new_channel_last(x)
    if out.numel() == 0:
        return out
    common = {"W": weight.shape[1], "HAS_BIAS": bias is not None, "BT": block_t, "BC": block_c,
              "ACC": TL_DTYPES[compute_dtype(x)], "num_warps": num_warps}
    grid = (triton.cdiv(t, block_t), triton.cdiv(c, block_c), bsz)
    if design == "walk":
        x = _as_channel_last(x)
        _conv_fwd_walk_kernel[grid](
            x, weight, bias if bias is not None else weight, out,
            t, c,
            x.stride(0), x.stride(2), *weight.stride(), out.stride(0), out.stride(2),
            **common)
    else:
        _conv_fwd_kernel[grid](
            x, weight, bias if bias is not None else weight, out,
            t, c,
            *x.stride(), *weight.stride(), *out.stride(),
            **common)
    return out


# conv_bwd's launch defaults by design. two_pass and fused: (BT, BC) tiles of 8 values a thread at 8 warps
# (module docstring: registers). walk: block_t rows walked by a program of block_c channels
BWD_DEFAULTS = {"two_pass": {"block_t": 32, "block_c": 64, "num_warps": 8},
                "fused": {"block_t": 32, "block_c": 64, "num_warps": 8},
                "walk": {"block_t": 128, "block_c": 64, "num_warps": 1}}


def _check_design(design, shift, names=("design", "shift")) -> None:
    """One ValueError line naming the argument (names: how the caller spells design and shift) and the choices."""
    for name, v, choices in ((names[0], design, BWD_DESIGNS), (names[1], shift, SHIFTS)):
        if not isinstance(v, str) or v not in choices:
            raise ValueError(f"causal_conv1d_silu: {name} must be one of {list(choices)}, got {v!r}")


def _check_fused_tile(design, block_t, w) -> None:
    """The fused backward owns block_t - (W - 1) rows of each tile: at least one."""
    if design == "fused" and block_t is not None and block_t < w:
        raise ValueError(f"causal_conv1d_silu: block_t must be >= the width {w} for the fused backward (it owns "
                         f"block_t - (W - 1) rows of each tile), got {block_t}")


def _check_dx(dx, x) -> None:
    """conv_bwd's dx= buffer: x's shape, dtype and device, channels contiguous (any batch and time strides)."""
    if (not isinstance(dx, torch.Tensor) or tuple(dx.shape) != tuple(x.shape) or dx.dtype != x.dtype
            or dx.device != x.device or (dx.stride(1) != 1 and dx.shape[1] > 1)):
        raise ValueError(f"causal_conv1d_silu: dx must be a {tuple(x.shape)} {x.dtype} tensor on {x.device} with "
                         f"channel stride 1, got "
                         + (f"{tuple(dx.shape)} {dx.dtype} on {dx.device}, strides {dx.stride()}"
                            if isinstance(dx, torch.Tensor) else type(dx).__name__))


def conv_bwd(x, weight, bias, dout, *, design="walk", shift="gather", block_t=None, block_c=None, tiles=8,
             num_warps=None, dx=None):
    """(dx, dweight, dbias) of sum(out * dout) for out = conv_fwd(x, weight, bias): dx (B, C, T) in x's dtype,
    channel-last; dweight (C, W) and dbias (C,) in their parameter's dtype (None for an absent bias), reduced
    in the compute dtype. x and dout any strides (copied channel-last first where they are not).
    design: "two_pass" (kernel A, then B, through a dpre scratch), "fused" (one kernel; shift: how it shifts
    dpre along time within a tile, "gather" or "scratch"; ignored by the others) or "walk" (one kernel walking
    rows); module docstring. block_t x block_c: the tile of the backward's kernels (for "walk": the rows one
    program walks x its channels), num_warps their warps per program; None takes the design's default
    (BWD_DEFAULTS); tiles: time tiles walked by
    one program of kernel A or of the fused kernel, which sets the partial-sum buffer's rows (module docstring).
    The fused design needs block_t >= W (it owns block_t - (W - 1) rows of each tile). dx: where to write dx, a
    tensor of x's shape and dtype with channel stride 1 and any other strides (e.g. a slice of a wider
    channel-last buffer); None allocates it channel-last contiguous."""
    _check_design(design, shift)
    _check_blocks(block_t, block_c, tiles, optional=True)
    _check(x, weight, bias, dout)
    block_t, block_c, num_warps = _launch(BWD_DEFAULTS[design], block_t, block_c, num_warps)
    bsz, c, t = x.shape
    w = weight.shape[1]
    _check_fused_tile(design, block_t, w)
    if dx is None:
        dx = _new_channel_last(x)
    else:
        _check_dx(dx, x)
    acc = compute_dtype(x)
    own = block_t - (w - 1) if design == "fused" else block_t  # rows a tile writes dx for
    # programs along time (the walk's each walk block_t rows: one tile each)
    groups = triton.cdiv(triton.cdiv(t, own), 1 if design == "walk" else tiles)
    # [row, k, c], row W dbias: every program writes its row's every channel, so only an empty launch needs zeros
    part = (torch.empty if dx.numel() else torch.zeros)(bsz * groups, w + 1, c, dtype=acc, device=x.device)
    if dx.numel():
        x, dout = _as_channel_last(x), _as_channel_last(dout)
        # (W, C): tap loads vectorize over channels (weight's rows are W wide); the walk loads its taps once a
        # program, from the weight as it is
        wt = weight.t().contiguous() if design != "walk" else weight
        has_bias = bias is not None
        cblocks = triton.cdiv(c, block_c)
        common = {"W": w, "BT": block_t, "BC": block_c, "ACC": TL_DTYPES[acc], "num_warps": num_warps}
        if design == "walk":
            _conv_bwd_walk_kernel[(groups, cblocks, bsz)](
                x, weight, bias if has_bias else weight, dout, dx, part,
                t, c,
                x.stride(0), x.stride(2), *weight.stride(), dout.stride(0), dout.stride(2), dx.stride(0),
                dx.stride(2), part.stride(0), part.stride(1),
                HAS_BIAS=has_bias, **common)
        elif design == "fused":
            wt = torch.cat([wt, wt])  # (2W, C): pre's taps, then dx's (kernel docstring)
            gather = shift == "gather"
            # scratch: one (block_t, block_c) region per program (the gather variant passes part, unused)
            scratch = part if gather else torch.empty(groups * cblocks * bsz, block_t, block_c, dtype=acc,
                                                      device=x.device)
            _conv_bwd_fused_kernel[(groups, cblocks, bsz)](
                x, wt, bias if has_bias else wt, dout, dx, part, scratch,
                t, c, tiles,
                x.stride(0), x.stride(2), dout.stride(0), dout.stride(2), dx.stride(0), dx.stride(2),
                part.stride(0), part.stride(1),
                HAS_BIAS=has_bias, GATHER=gather, **common)
        else:
            dpre = torch.empty(bsz, t, c, dtype=acc, device=x.device)  # scratch, (B, T, C) contiguous
            _conv_bwd_dpre_kernel[(groups, cblocks, bsz)](
                x, wt, bias if has_bias else wt, dout, dpre, part,
                t, c, tiles,
                x.stride(0), x.stride(2), dout.stride(0), dout.stride(2), dpre.stride(0),
                dpre.stride(1), part.stride(0), part.stride(1),
                HAS_BIAS=has_bias, **common)
            _conv_bwd_dx_kernel[(triton.cdiv(t, block_t), cblocks, bsz)](
                dpre, wt, dx,
                t, c,
                dpre.stride(0), dpre.stride(1), dx.stride(0), dx.stride(2),
                **common)
    red = part.sum(0)  # (W + 1, C), deterministic
    dweight = red[:w].t().to(weight.dtype)
    dbias = red[w].to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _ConvSiluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, opts):
        ctx.save_for_backward(x, weight, bias)
        launch = {k: v for k, v in opts.items() if k in ("block_t", "block_c", "num_warps") and v is not None}
        ctx.bwd = launch | {k: opts[k] for k in ("tiles", "design", "shift")}  # None: the design's own default
        return conv_fwd(x, weight, bias, design=opts["fwd_design"], **launch)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = conv_bwd(x, weight, bias, dout, **ctx.bwd)
        return dx, dweight, dbias, None


def causal_conv1d_silu(x, weight, bias=None, *, block_t=None, block_c=None, tiles=8, num_warps=None,
                       fwd_design="walk", bwd_design="walk", bwd_shift="gather"):
    """causal_conv1d_fn(x, weight, bias, activation="silu") as golf's mixer calls it, on golf's kernels,
    differentiable w.r.t. x, weight and bias. x (B, C, T) (a channel-last view for speed), weight (C, W) with W
    in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype, channel-last. block_t, block_c (the tile, or
    for a walking design the rows a program walks and its channels) and num_warps (per program) apply to the
    forward and backward kernels alike; None takes each one's default by design (FWD_DEFAULTS, BWD_DEFAULTS).
    tiles: time tiles per program of the backward's first (or only) kernel; fwd_design: conv_fwd's design;
    bwd_design and bwd_shift: conv_bwd's design and shift (module docstring)."""
    if not isinstance(fwd_design, str) or fwd_design not in FWD_DESIGNS:
        raise ValueError(f"causal_conv1d_silu: fwd_design must be one of {list(FWD_DESIGNS)}, got {fwd_design!r}")
    _check_design(bwd_design, bwd_shift, ("bwd_design", "bwd_shift"))
    _check_blocks(block_t, block_c, tiles, optional=True)
    _check(x, weight, bias)
    _check_fused_tile(bwd_design, block_t, weight.shape[1])
    opts = {"block_t": block_t, "block_c": block_c, "tiles": tiles, "num_warps": num_warps,
            "fwd_design": fwd_design, "design": bwd_design, "shift": bwd_shift}
    return _ConvSiluFn.apply(x, weight, bias, opts)
