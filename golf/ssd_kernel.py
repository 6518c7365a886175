"""golf's own fused Triton kernels for the Mamba-2 SSD scan, forward and backward (issue 22: "a fused kernel of
our own specialised to headdim 64, d_state 32"). `ssd_scan` has the call signature of mamba-ssm's
mamba_chunk_scan_combined as golf.ssm.Mamba2Mixer calls it; model.ssm_scan "golf" (the walking forward and backward)
or "golf_split" (both split over chunks) selects it on the triton path (golf.ssm.resolve_ssm_backend; golf::ssd_scan
under ssm_compile "opaque"). In hybrid_seed_fit's training step on an H200 it is slower than mamba-ssm's
chunk-parallel kernels: 4.71 ms ("golf") and 3.18 ms ("golf_split") of device time per layer call, forward and
backward, against 2.35 ms (bench/RESULTS.md, 2026-11-30 fifth block; an earlier wall-clock bench of the call alone
had ranked it faster, most likely timing mamba-ssm's host launches too). "golf_split" then ran the walking forward:
1.16 ms of its 3.18 (chunk backward 1.77, passes 0.25), against roughly 0.6 for mamba-ssm's forward kernels (0.56
for the three in the profile's top 25). The likely reason: a program per (head, batch) walks its chunks one after
another, while mamba-ssm's kernels work on all chunks at once; the split forward (fwd="split", below, now
golf_split's) keeps that parallelism.

What it computes, per batch b and head h, exactly golf.ssm.ssd_scan_reference (x: (b, l, h, p), dt: (b, l, h)
raw, A, D, dt_bias: (h,), B, C: (b, l, g, n) shared by the h // g heads of a group):
    dt_t    = softplus(dt_t + dt_bias_h)       (softplus and dt_bias optional, as in mamba-ssm)
    S_t     = exp(dt_t A_h) S_{t-1} + dt_t x_t ⊗ B_t        S: (p, n), S_{-1} = initial_states or 0
    y_t     = S_t C_t + D_h x_t                              stored in x's dtype
and the final state S_{l-1} (in the compute dtype: fp32, fp64 for fp64 inputs). Chunked as in ssd_reference:
within a chunk of positions i, j with cs = cumsum(dt A) over the chunk,
    y_i = sum_{j<=i} (C_i·B_j) exp(cs_i - cs_j) dt_j x_j + exp(cs_i) S_in C_i
    S_out = exp(cs_last) S_in + sum_j exp(cs_last - cs_j) dt_j x_j ⊗ B_j

Layout. The forward comes in two designs (fwd=), the same math per chunk (_chunk_y) and the same results to
rounding:

fwd="walk" (default): one program per (head, batch), heads of one batch adjacent in the grid (they read the
same B, C rows, which then come from L2), walking the chunks in order with the running state (p × n) in
registers: x, B, C, dt are read once and y written once, but 768 programs at the production shapes, each a
chain of dependent dots through all 32 chunks.

fwd="split": (1) the state recurrence alone, the split backward's first pass with only its role 0 launched
(_ssd_bwd_pass_kernel on grid (h, 1, b)): one (p × n) update a chunk, storing the state entering each chunk
S_in ((b, chunks, h, p, n), in the dot dtype by default as the split backward stores it: states_dtype; the one
dot of y that reads it casts it to that dtype anyway) and the final state (in the compute dtype, from
registers); then (2) one program per (batch, chunk, head) (_ssd_fwd_chunk_kernel, 24,576 at the production
shapes) computing its chunk's y from S_in exactly as the walk's loop body does. It moves more bytes than the
walk: x, B and dt are read by both launches and S_in round-trips (at the production shapes in bf16: x 201 MB a
read, S_in 101 MB each way, ~0.4 GB more, ~0.1 ms at 4 TB/s), the trade mamba-ssm's forward makes too
(_chunk_state_fwd and _chunk_scan_fwd each read x). Through ssd_scan with bwd="split" as well (golf_split),
S_in is kept for the backward (saved in the autograd context: 101 MB per layer call held from forward to
backward at the production shapes), whose first pass then runs only role 1: no recompute of S_in (nor its
re-read of x and B). The opaque custom op (golf.ssm_ops, ssm_compile "opaque") has no output to carry S_in to
its backward op, which recomputes it as before. On an H200 at hybrid_seed_fit's shapes (bench/ssd_kernel_bench.py,
bench/RESULTS.md 2026-11-30 sixth block) the split forward took 0.525 ms of device time per call (the walk
0.517, mamba-ssm's forward 0.730), and with the split backward 2.44 ms forward + backward against mamba-ssm's
3.18 in the same bench; in the interpreter it equals the walk in fp64 (tests/test_ssd_kernel.py: y, final state
and S_in, with initial states and ragged lengths).

The backward comes in two designs (bwd=), the same math per chunk (_chunk_bwd) and the same results to
rounding:

bwd="walk" (default): (1) the forward kernel again with the outputs off, storing the state entering each chunk
((b, chunks, h, p, n) in the compute dtype; recomputed rather than saved in forward, as mamba-ssm's backward
does (ssd_combined.py _mamba_chunk_scan_combined_bwd calls _chunk_state_fwd and _state_passing_fwd again,
mamba-ssm 2.x), so training holds no extra activation and the forward stays at its floor), then (2) one program
per (head, batch) walking the chunks in reverse with the state gradient in registers, computing every per-chunk
gradient there (dx, ddt, dB, dC, and per-program partial sums for dA and dD). Few programs (h b: 768 at the
production shapes on an H200's 132 SMs), each a long chain of dependent dots: latency-bound (3.4 ms of the
3.9 ms forward+backward measured on an H200, 2026-11-30).

bwd="split": only the state-gradient recurrence is sequential, and it is cheap (one p × n update a chunk), so (1)
one launch of grid (h, 2, b) runs both recurrences side by side (_ssd_bwd_pass_kernel): programs of role 0 walk
forward storing the state entering each chunk S_in (the walk's recompute; skipped, grid (h, 1, b) of role 1 alone,
when the split forward's S_in are passed in), programs of role 1 walk backward storing the loss's gradient w.r.t.
the state leaving each chunk dS_out (and the initial state's gradient). Neither needs the other, so they share a
launch rather than one being folded into the other's program: twice the programs in flight for the same two serial
chains. (2) One program per (batch, chunk, head) (_ssd_bwd_chunk_kernel; b × chunks × h = 24,576 at the production
shapes) computes every gradient of its chunk from its S_in and dS_out with no dependence on any other program; dA
and dD leave as (b, chunks, h) partial sums. S_in and dS_out are stored in the dot dtype by default
(states_dtype=None; bf16 at the production shapes, as mamba-ssm stores them in x's dtype for its chunk kernels:
_state_passing_bwd's states_dtype and dstates_dtype, same file): every dot that reads them casts them to it anyway,
so the one thing it changes is the elementwise term exp(cs_last) <dS_out, S_in> of the dA and ddt gradients, which
mamba-ssm keeps in fp32. In the interpreter, with bf16 dots emulated (operands rounded to bf16, products in fp32) at
production tiles, the bf16-stored split's errors against the fp64 reference matched the walk's (dt 3.8e-3, dA 5e-4
vs 2e-3, dB, dC 4e-3): the dots' bf16 rounding dominates. fp32 and fp64 inputs store at full precision. Bytes: at
the production shapes (bf16, b=64 l=2048 h=12 p=64 n=32 chunk 64) the walk moves ~1.29 GB in its backward (recompute
included), the split ~1.50 GB: dy, C and dt are read a second time (+216 MB, ~54 us at 4 TB/s) while the states now
round-trip twice (S_in and dS_out) but in bf16, the walk's one fp32 round-trip in bytes; states_dtype=torch.float32
adds 403 MB more.

Both designs finish dA, dD and ddt_bias in PyTorch (sums over batch (and chunks), and over (b, l) of the raw dt
gradient). The head-sum of dB and dC for g < h is done with fp32 atomics by default (head_sum="atomic": one
(b, l, g, n) buffer that stays in L2, instead of writing and re-reading a (b, l, h, n) buffer per gradient, 12x
the bytes of dB at the production shapes; the summation order across heads varies run to run), or
deterministically by head_sum="sum" (a per-head buffer summed in PyTorch).

Dots (tl.dot) take their operands in the input dtype (bf16 at the production shapes, accumulating in fp32; the
states and state gradients too, as mamba-ssm's backward casts them to x's dtype "since [they] will be used in
matmul", same file) unless dot_dtype says otherwise; fp32 and fp64 inputs dot at full precision (Triton's
"ieee"), and dot_dtype="tf32" rounds fp32 operands to TF32 on a GPU (Triton's default for fp32, which mamba-ssm's
kernels get).

Limits. p (headdim), n (d_state) and chunk_size may be any size: each is padded to a power of two >= 16 (tl.dot
needs that) and masked, so sizes that already are powers of two >= 16 (the production 64, 32, 64) waste no
lanes. Sequence lengths need not divide chunk_size (the tail is masked as dt = 0, as the reference pads). D is
per head (h,), not per (h, p). Runs on CUDA tensors, or on CPU tensors under Triton's interpreter
(TRITON_INTERPRET=1 set before triton is first imported; tests/conftest.py). No seq_idx, z or cu_seqlens.
num_warps (default 4) is the one launch knob: the backward holds several (chunk × chunk) fp32 tiles per program,
so 8 warps may spill less. The walk was compiled, checked against mamba-ssm and timed on an H200 on
2026-11-30 (bench/ssd_kernel_bench.py); the split backward (added the same day) was timed in the training step
that day (above); the split forward was compiled, checked against mamba-ssm (y 2.7e-3, gradients <= 4.3e-3
relative) and timed in the bench on an H200 in the sixth block, and ran a training step of hybrid_seed_fit
(133.9 ms, on another host than its base: not yet a comparison).

The pass kernel alone: `chunk_states` (role 0) and `chunk_state_grads` (role 1, optionally with each chunk's
end-to-end log-decay gradient) run the two recurrences for golf.mixer_op's kept-internals scan (model.ssm_scan
"mamba_keep_xy_pass"), in place of mamba-ssm's _chunk_state_fwd + _state_passing_fwd and _chunk_scan_bwd_dstates +
_state_passing_bwd: 0.143 and 0.126 ms a call alone against 0.237 and 0.283 on an H200 at hybrid_12_b131k's mixer
shapes (bench/ssd_xy_bench.py --passes, bench/RESULTS.md seventeenth block).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import (
    TL_DTYPES,
    check_dtypes_and_device,
    check_maxnreg,
    check_runs_here,
    maxnreg_option,
)
from golf.ssm import compute_dtype

HEAD_SUMS = ("atomic", "sum")
# The pass kernel's register cap a thread by role (ptxas's .maxnreg; None: the compiler's choice). Why a cap: the
# pass runs one program per (head, batch), 768 at hybrid_12_b131k's shapes, each walking every chunk in turn, so the
# launch takes one wave only if 6 fit an SM (132 SMs); at 4 warps that is <= 80 registers a thread (an SM allocates
# them 8 a thread at a time), and role 1 compiles to about 107 (offline for sm_90a, bench/RESULTS.md 2026-12-02 CPU
# block): two waves of serial walks. Measured on an H200 (bench/ssd_xy_bench.py --passes, RESULTS twenty-third
# block): role 1 with ddA_chunk_end at 80 takes 0.146 ms a call against 0.171 uncapped; role 0 is the same either way.
PASS_MAXNREG: dict[int, int | None] = {0: None, 1: 80}
FWDS = ("walk", "split")
BWDS = ("walk", "split")


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _softplus(z):
    # log1p(exp(z)) without a log1p intrinsic (Triton's interpreter has none): log(w) * u / (w - 1) with
    # w = 1 + u is accurate to a few ulp even where 1 + u rounds (Goldberg 1991, "What every computer scientist
    # should know about floating-point arithmetic", theorem 4); log(1 + u) alone loses ~1e-4 relative at the
    # usual dt ~ 1e-3. Above 20 it is z itself, as torch's softplus (threshold 20).
    u = tl.exp(z)
    w = 1.0 + u
    sp = tl.where(w == 1.0, u, tl.log(w) * u / (w - 1.0))
    return tl.where(z > 20.0, z, sp)


@triton.jit
def _mm(a, b, ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
    """a @ b with operands cast to DOT, accumulated in ACC."""
    return tl.dot(a.to(DOT), b.to(DOT), out_dtype=ACC, input_precision=PREC)


@triton.jit
def _chunk_dt(dt_base, sdt_l, dtb, A, pos, valid, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """One chunk's dt (after softplus and bias; 0 outside the sequence), the pre-softplus value z, and the
    cumulative log-decay cs = cumsum(dt * A). All (BL,)."""
    z = tl.load(dt_base + pos * sdt_l, mask=valid, other=0.0).to(ACC) + dtb
    dtv = _softplus(z) if SOFTPLUS else z
    dtv = tl.where(valid, dtv, 0.0)  # dt = 0 on padding: no decay, no input (as ssd_reference pads)
    cs = tl.cumsum(dtv * A, axis=0)
    return dtv, z, cs


@triton.jit
def _kept_cs(cs_row, scs_l, dt_row, sdt_l, t, chunk_size, ACC: tl.constexpr, WITH_DT: tl.constexpr = True):
    """One chunk's kept running log-decay cs (BL,), its last value cs_last, and with WITH_DT its kept softplus'ed
    dt (BL,; else 0), from the forward's (b, h, chunks, L) rows: zero past the chunk (L < BL), where the kept rows
    end; past the sequence's end the kept dt is 0 and cs flat, as _chunk_dt makes them."""
    inside = t < chunk_size
    cs = tl.load(cs_row + t * scs_l, mask=inside, other=0.0).to(ACC)
    cs_last = tl.load(cs_row + (chunk_size - 1) * scs_l).to(ACC)
    if WITH_DT:
        dtv = tl.load(dt_row + t * sdt_l, mask=inside, other=0.0).to(ACC)
    else:
        dtv = tl.zeros_like(cs)
    return dtv, cs, cs_last


@triton.jit
def _chunk_y(xc, Bc, Cc, S, dtv, cs, Dh, BL: tl.constexpr, HAS_D: tl.constexpr, ACC: tl.constexpr,
             DOT: tl.constexpr, PREC: tl.constexpr):
    """One chunk's y (BL, BP) in ACC, from its x (BL, BP), B, C (BL, BN), dt and cs (BL,) and the state entering
    it S (BP, BN): both forwards' per-chunk math."""
    t = tl.arange(0, BL)
    causal = t[:, None] >= t[None, :]  # (BL, BL) [i, j]: j <= i
    CB = _mm(Cc, tl.trans(Bc), ACC, DOT, PREC)  # (BL, BL) C_i·B_j
    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))  # 0 above the diagonal
    M = CB * decay * dtv[None, :]
    y = _mm(M, xc, ACC, DOT, PREC)  # (BL, BP) within the chunk
    y += tl.exp(cs)[:, None] * _mm(Cc, tl.trans(S), ACC, DOT, PREC)  # carried state
    if HAS_D:
        y += Dh * xc
    return y


@triton.jit
def _ssd_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dtb_ptr, init_ptr, y_ptr, final_ptr, states_ptr,
    seqlen, nchunks, chunk_size, heads_per_group, hdim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    sy_b, sy_l, sy_h, sy_p,
    si_b, si_h, si_p, si_n,
    sf_b, sf_h, sf_p, sf_n,
    ss_b, ss_c, ss_h, ss_p, ss_n,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr,
    COMPUTE_Y: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_STATES: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)  # int64: batch offsets of (b, l, h, p) tensors pass 2**31
    g = pid_h // heads_per_group
    t = tl.arange(0, BL)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pmask = pp < hdim
    nmask = nn < dstate
    pn_mask = pmask[:, None] & nmask[None, :]

    x_base = x_ptr + pid_b * sx_b + pid_h * sx_h
    dt_base = dt_ptr + pid_b * sdt_b + pid_h * sdt_h
    B_base = B_ptr + pid_b * sB_b + g * sB_g
    C_base = C_ptr + pid_b * sC_b + g * sC_g
    y_base = y_ptr + pid_b * sy_b + pid_h * sy_h
    A = tl.load(A_ptr + pid_h).to(ACC)
    dtb = tl.load(dtb_ptr + pid_h).to(ACC) if HAS_BIAS else 0.0
    Dh = tl.load(D_ptr + pid_h).to(ACC) if HAS_D else 0.0

    if HAS_INIT:
        S = tl.load(init_ptr + pid_b * si_b + pid_h * si_h + pp[:, None] * si_p + nn[None, :] * si_n,
                    mask=pn_mask, other=0.0).to(ACC)  # (BP, BN)
    else:
        S = tl.zeros((BP, BN), dtype=ACC)

    for c in range(nchunks):
        pos = c * chunk_size + t  # (BL,) positions of this chunk; lanes past chunk_size are padding
        valid = (t < chunk_size) & (pos < seqlen)
        dtv, _, cs = _chunk_dt(dt_base, sdt_l, dtb, A, pos, valid, SOFTPLUS, ACC)
        cs_last = tl.sum(tl.where(t == BL - 1, cs, 0.0), axis=0)
        lp_mask = valid[:, None] & pmask[None, :]
        ln_mask = valid[:, None] & nmask[None, :]
        xc = tl.load(x_base + pos[:, None] * sx_l + pp[None, :] * sx_p, mask=lp_mask, other=0.0).to(ACC)
        Bc = tl.load(B_base + pos[:, None] * sB_l + nn[None, :] * sB_n, mask=ln_mask, other=0.0).to(ACC)
        if STORE_STATES:  # the state entering chunk c, for the backward
            st_ptrs = states_ptr + pid_b * ss_b + c * ss_c + pid_h * ss_h + pp[:, None] * ss_p + nn[None, :] * ss_n
            tl.store(st_ptrs, S, mask=pn_mask)
        if COMPUTE_Y:
            Cc = tl.load(C_base + pos[:, None] * sC_l + nn[None, :] * sC_n, mask=ln_mask, other=0.0).to(ACC)
            y = _chunk_y(xc, Bc, Cc, S, dtv, cs, Dh, BL, HAS_D, ACC, DOT, PREC)
            y_ptrs = y_base + pos[:, None] * sy_l + pp[None, :] * sy_p
            tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=lp_mask)
        w = tl.exp(cs_last - cs) * dtv  # (BL,) weight of x_j ⊗ B_j in the state at the chunk's end
        S = tl.exp(cs_last) * S + _mm(tl.trans(xc * w[:, None]), Bc, ACC, DOT, PREC)

    if STORE_FINAL:
        tl.store(final_ptr + pid_b * sf_b + pid_h * sf_h + pp[:, None] * sf_p + nn[None, :] * sf_n, S,
                 mask=pn_mask)


@triton.jit
def _ssd_fwd_chunk_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dtb_ptr, states_ptr, y_ptr,
    seqlen, chunk_size, nheads, heads_per_group, hdim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    ss_b, ss_c, ss_h, ss_p, ss_n,
    sy_b, sy_l, sy_h, sy_p,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
):
    """fwd="split", step 2: one program per (batch, chunk, head), grid (chunks * h, b) with the heads of one
    chunk adjacent (they read the same B, C rows, from L2), each computing its chunk's y from the state
    entering the chunk (S_in, stored by _ssd_bwd_pass_kernel's role 0) exactly as the walk forward's loop body
    does (_chunk_y)."""
    pid = tl.program_id(0)
    pid_h = pid % nheads
    c = pid // nheads
    pid_b = tl.program_id(1).to(tl.int64)  # int64: batch offsets of (b, l, h, p) tensors pass 2**31
    g = pid_h // heads_per_group
    t = tl.arange(0, BL)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pmask = pp < hdim
    nmask = nn < dstate
    A = tl.load(A_ptr + pid_h).to(ACC)
    dtb = tl.load(dtb_ptr + pid_h).to(ACC) if HAS_BIAS else 0.0
    Dh = tl.load(D_ptr + pid_h).to(ACC) if HAS_D else 0.0

    pos = c * chunk_size + t
    valid = (t < chunk_size) & (pos < seqlen)
    dtv, _, cs = _chunk_dt(dt_ptr + pid_b * sdt_b + pid_h * sdt_h, sdt_l, dtb, A, pos, valid, SOFTPLUS, ACC)
    lp_mask = valid[:, None] & pmask[None, :]
    ln_mask = valid[:, None] & nmask[None, :]
    xc = tl.load(x_ptr + pid_b * sx_b + pid_h * sx_h + pos[:, None] * sx_l + pp[None, :] * sx_p, mask=lp_mask,
                 other=0.0).to(ACC)
    Bc = tl.load(B_ptr + pid_b * sB_b + g * sB_g + pos[:, None] * sB_l + nn[None, :] * sB_n, mask=ln_mask,
                 other=0.0).to(ACC)
    Cc = tl.load(C_ptr + pid_b * sC_b + g * sC_g + pos[:, None] * sC_l + nn[None, :] * sC_n, mask=ln_mask,
                 other=0.0).to(ACC)
    S = tl.load(states_ptr + pid_b * ss_b + c * ss_c + pid_h * ss_h + pp[:, None] * ss_p + nn[None, :] * ss_n,
                mask=pmask[:, None] & nmask[None, :], other=0.0).to(ACC)  # (BP, BN) the state entering the chunk
    y = _chunk_y(xc, Bc, Cc, S, dtv, cs, Dh, BL, HAS_D, ACC, DOT, PREC)
    tl.store(y_ptr + pid_b * sy_b + pid_h * sy_h + pos[:, None] * sy_l + pp[None, :] * sy_p,
             y.to(y_ptr.dtype.element_ty), mask=lp_mask)


@triton.jit
def _chunk_bwd(
    c, S0, dS, x_base, dt_base, B_base, C_base, dy_base, dx_base, ddt_base, dB_base, dC_base, A, dtb, Dh,
    seqlen, chunk_size, hdim, dstate,
    sx_l, sx_p, sdt_l, sB_l, sB_n, sC_l, sC_n, sdy_l, sdy_p, sdx_l, sdx_p, sddt_l, sdB_l, sdB_n, sdC_l, sdC_n,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HEAD_ATOMIC: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr,
):
    """Every gradient of chunk c of one (batch, head), given the state entering the chunk S0 and the loss's
    gradient w.r.t. the state leaving it dS (both (BP, BN) in ACC): stores dx, ddt and dB, dC (added into a
    group-shared buffer under HEAD_ATOMIC) for the chunk's positions, and returns (dtv * da (BL,), the chunk's
    sum of dy * x (BP,), the state gradient entering the chunk (BP, BN)) for the dA and dD sums and the walk's
    recurrence (the split design's chunk kernel drops the last: the compiler removes its dot)."""
    t = tl.arange(0, BL)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pmask = pp < hdim
    nmask = nn < dstate
    causal = t[:, None] >= t[None, :]

    pos = c * chunk_size + t
    valid = (t < chunk_size) & (pos < seqlen)
    dtv, z, cs = _chunk_dt(dt_base, sdt_l, dtb, A, pos, valid, SOFTPLUS, ACC)
    is_last = t == BL - 1
    cs_last = tl.sum(tl.where(is_last, cs, 0.0), axis=0)
    lp_mask = valid[:, None] & pmask[None, :]
    ln_mask = valid[:, None] & nmask[None, :]
    xc = tl.load(x_base + pos[:, None] * sx_l + pp[None, :] * sx_p, mask=lp_mask, other=0.0).to(ACC)
    dy = tl.load(dy_base + pos[:, None] * sdy_l + pp[None, :] * sdy_p, mask=lp_mask, other=0.0).to(ACC)
    Bc = tl.load(B_base + pos[:, None] * sB_l + nn[None, :] * sB_n, mask=ln_mask, other=0.0).to(ACC)
    Cc = tl.load(C_base + pos[:, None] * sC_l + nn[None, :] * sC_n, mask=ln_mask, other=0.0).to(ACC)

    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))  # (BL, BL) [i, j]
    CB = _mm(Cc, tl.trans(Bc), ACC, DOT, PREC)  # C_i·B_j
    G = _mm(dy, tl.trans(xc), ACC, DOT, PREC)  # dy_i·x_j
    e_end = tl.exp(cs_last - cs)  # (BL,) decay from j to the chunk's end
    e_in = tl.exp(cs)  # (BL,) decay from the chunk's start to i

    # x enters as xd_j = dt_j x_j: its gradient from the outputs i >= j and from the state at the end
    BdS = _mm(Bc, tl.trans(dS), ACC, DOT, PREC)  # (BL, BP) dS B_j
    dxd = _mm(tl.trans(CB * decay), dy, ACC, DOT, PREC) + e_end[:, None] * BdS
    dx = dxd * dtv[:, None]
    if HAS_D:
        dx += Dh * dy
    dx_ptrs = dx_base + pos[:, None] * sdx_l + pp[None, :] * sdx_p
    tl.store(dx_ptrs, dx.to(dx_base.dtype.element_ty), mask=lp_mask)

    Gd = G * decay * dtv[None, :]  # (BL, BL) [i, j]: dy_i·xd_j exp(cs_i - cs_j)
    dB = _mm(tl.trans(Gd), Cc, ACC, DOT, PREC)
    dB += (e_end * dtv)[:, None] * _mm(xc, dS, ACC, DOT, PREC)
    dyS = _mm(dy, S0, ACC, DOT, PREC)  # (BL, BN) dy_i S_in
    dC = _mm(Gd, Bc, ACC, DOT, PREC) + e_in[:, None] * dyS
    dB_ptrs = dB_base + pos[:, None] * sdB_l + nn[None, :] * sdB_n
    dC_ptrs = dC_base + pos[:, None] * sdC_l + nn[None, :] * sdC_n
    if HEAD_ATOMIC:
        tl.atomic_add(dB_ptrs, dB, mask=ln_mask)
        tl.atomic_add(dC_ptrs, dC, mask=ln_mask)
    else:
        tl.store(dB_ptrs, dB, mask=ln_mask)
        tl.store(dC_ptrs, dC, mask=ln_mask)

    # the gradient w.r.t. cs: exp(cs_i - cs_j) within the chunk, exp(cs_i) on the carried state's read-out,
    # exp(cs_last - cs_j) and exp(cs_last) in the state at the chunk's end
    T = Gd * CB  # (BL, BL) each term of y_i·dy_i within the chunk
    dcs = tl.sum(T, axis=1) - tl.sum(T, axis=0)
    dcs += e_in * tl.sum(Cc * dyS, axis=1)
    u = e_end * dtv * tl.sum(xc * BdS, axis=1)  # (BL,) <dS, exp(cs_last - cs_j) xd_j ⊗ B_j>
    dcs -= u
    d_last = tl.sum(u, axis=0) + tl.exp(cs_last) * tl.sum(tl.sum(dS * S0, axis=1), axis=0)  # via cs_last
    dcs += tl.where(is_last, d_last, 0.0)
    da = tl.cumsum(dcs, axis=0, reverse=True)  # cs_t = sum_{s<=t} a_s: da_s = sum_{t>=s} dcs_t
    ddt = tl.sum(dxd * xc, axis=1) + A * da
    if SOFTPLUS:
        ddt = tl.where(z > 20.0, ddt, ddt / (1.0 + tl.exp(-z)))  # softplus' = sigmoid (1 past 20)
    tl.store(ddt_base + pos * sddt_l, ddt, mask=valid)

    # the state gradient entering chunk c: through the decay across the chunk and the read-outs C_i
    dS_in = tl.exp(cs_last) * dS + _mm(tl.trans(dy * e_in[:, None]), Cc, ACC, DOT, PREC)
    return dtv * da, tl.sum(dy * xc, axis=0), dS_in


@triton.jit
def _ssd_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dtb_ptr, dy_ptr, states_ptr, dfinal_ptr,
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dinit_ptr,
    seqlen, nchunks, chunk_size, heads_per_group, hdim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    ss_b, ss_c, ss_h, ss_p, ss_n,
    sdf_b, sdf_h, sdf_p, sdf_n,
    sdx_b, sdx_l, sdx_h, sdx_p,
    sddt_b, sddt_l, sddt_h,
    sdB_b, sdB_l, sdB_k, sdB_n,
    sdC_b, sdC_l, sdC_k, sdC_n,
    sdi_b, sdi_h, sdi_p, sdi_n,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DFINAL: tl.constexpr,
    STORE_DINIT: tl.constexpr, HEAD_ATOMIC: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
    PREC: tl.constexpr,
):
    """bwd="walk": one program per (head, batch) walking the chunks in reverse, the state gradient dS carried
    in registers from one chunk's _chunk_bwd to the next."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    nheads = tl.num_programs(0)
    g = pid_h // heads_per_group
    # dB, dC: one (b, l, g, n) buffer that the group's heads add into (HEAD_ATOMIC), or a per-head (b, l, h, n)
    # one (summed over the group in PyTorch; also the g == h case, where there is nothing to sum)
    k = g if HEAD_ATOMIC else pid_h
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pn_mask = (pp < hdim)[:, None] & (nn < dstate)[None, :]

    st_base = states_ptr + pid_b * ss_b + pid_h * ss_h
    A = tl.load(A_ptr + pid_h).to(ACC)
    dtb = tl.load(dtb_ptr + pid_h).to(ACC) if HAS_BIAS else 0.0
    Dh = tl.load(D_ptr + pid_h).to(ACC) if HAS_D else 0.0

    if HAS_DFINAL:  # dS: the loss's gradient w.r.t. the state at the end of the current chunk
        dS = tl.load(dfinal_ptr + pid_b * sdf_b + pid_h * sdf_h + pp[:, None] * sdf_p + nn[None, :] * sdf_n,
                     mask=pn_mask, other=0.0).to(ACC)
    else:
        dS = tl.zeros((BP, BN), dtype=ACC)
    dA_acc = tl.zeros((BL,), dtype=ACC)
    dD_acc = tl.zeros((BP,), dtype=ACC)

    for ci in range(nchunks):
        c = nchunks - 1 - ci
        S0 = tl.load(st_base + c * ss_c + pp[:, None] * ss_p + nn[None, :] * ss_n, mask=pn_mask, other=0.0)
        S0 = S0.to(ACC)  # (BP, BN) the state entering chunk c (forward)
        dA_c, dD_c, dS = _chunk_bwd(
            c, S0, dS, x_ptr + pid_b * sx_b + pid_h * sx_h, dt_ptr + pid_b * sdt_b + pid_h * sdt_h,
            B_ptr + pid_b * sB_b + g * sB_g, C_ptr + pid_b * sC_b + g * sC_g,
            dy_ptr + pid_b * sdy_b + pid_h * sdy_h, dx_ptr + pid_b * sdx_b + pid_h * sdx_h,
            ddt_ptr + pid_b * sddt_b + pid_h * sddt_h, dB_ptr + pid_b * sdB_b + k * sdB_k,
            dC_ptr + pid_b * sdC_b + k * sdC_k, A, dtb, Dh, seqlen, chunk_size, hdim, dstate,
            sx_l, sx_p, sdt_l, sB_l, sB_n, sC_l, sC_n, sdy_l, sdy_p, sdx_l, sdx_p, sddt_l, sdB_l, sdB_n, sdC_l,
            sdC_n, BL, BP, BN, SOFTPLUS, HAS_D, HEAD_ATOMIC, ACC, DOT, PREC)
        dA_acc += dA_c
        if HAS_D:
            dD_acc += dD_c

    tl.store(dA_ptr + pid_b * nheads + pid_h, tl.sum(dA_acc, axis=0))
    if HAS_D:
        tl.store(dD_ptr + pid_b * nheads + pid_h, tl.sum(dD_acc, axis=0))
    if STORE_DINIT:
        tl.store(dinit_ptr + pid_b * sdi_b + pid_h * sdi_h + pp[:, None] * sdi_p + nn[None, :] * sdi_n, dS,
                 mask=pn_mask)



@triton.jit
def _ssd_bwd_pass_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, dtb_ptr, init_ptr, dy_ptr, dfinal_ptr, states_ptr, dstates_ptr,
    dinit_ptr, final_ptr, dda_ptr, cs_ptr, dtk_ptr,
    seqlen, nchunks, chunk_size, heads_per_group, hdim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    si_b, si_h, si_p, si_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    sdf_b, sdf_h, sdf_p, sdf_n,
    ss_b, ss_c, ss_h, ss_p, ss_n,
    sds_b, sds_c, sds_h, sds_p, sds_n,
    sdi_b, sdi_h, sdi_p, sdi_n,
    sf_b, sf_h, sf_p, sf_n,
    sa_b, sa_h, sa_c,
    scs_b, scs_h, scs_c, scs_l,
    sdk_b, sdk_h, sdk_c, sdk_l,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DFINAL: tl.constexpr,
    STORE_DINIT: tl.constexpr, STORE_FINAL: tl.constexpr, ROLE: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, STORE_DDA: tl.constexpr = False, KEPT_CS: tl.constexpr = False,
):
    """The two sequential recurrences of the split designs, each one (p × n) update per chunk. Role 0 walks
    forward: stores the state entering each chunk (and, under STORE_FINAL, the state leaving the last one, in
    ACC),
        S_in(c) (S_in(0) = initial state or 0);  S <- exp(cs_last) S + sum_j exp(cs_last - cs_j) dt_j x_j ⊗ B_j
    role 1 walks backward: stores the loss's gradient w.r.t. the state leaving each chunk,
        dS_out(c) (dS_out(last) = dfinal or 0);  dS <- exp(cs_last) dS + sum_i exp(cs_i) dy_i ⊗ C_i
    and the gradient w.r.t. the initial state (the dS entering chunk 0). One kernel serves three launches:
    ROLE=-1 on grid (h, 2, b), a program's role its program_id(1): the split backward computing both (they need
    nothing of each other, so they run side by side, 2 h b programs instead of h b for each in turn: both chains
    are short (one load, one dot, one update a chunk) but serial, so more of them in flight is what hides their
    latency); ROLE=0 on grid (h, 1, b), the split forward's first step; ROLE=1 on grid (h, 1, b), the split
    backward given the split forward's S_in. With ROLE 0 or 1 the role is a constant, so the other role's code
    is not compiled at all: its stores go through pointers the launcher fills with a dummy (x), and a store
    left in the kernel, even one that never runs, makes torch.compile's analysis of the kernel (ssm_compile
    "trace") take x as written, clone it before the launch and put the clone in x's place after it.
    STORE_DDA (ROLE=1 only, with the states entering each chunk S_in given in `states`): role 1 also stores the
    gradient of each chunk's end-to-end log-decay cs_last, exp(cs_last) <S_in(c), dS_out(c)> (b, h, chunks) in
    ACC, from the running fp32 dS_out before it is stored, as mamba-ssm's _state_passing_bwd computes it.
    KEPT_CS (ROLE 0 or 1): each chunk's running log-decay cs (and for role 0 its softplus'ed dt) are loaded from
    the forward's kept dA_cumsum and dt (b, h, chunks, L: contiguous rows, with cs_last one more load) instead of
    recomputed from the raw dt (a strided column of a wide row, a softplus, a cumsum and a reduction for cs_last,
    all on the chain each chunk's update waits for)."""
    pid_h = tl.program_id(0)
    if ROLE < 0:
        role = tl.program_id(1)
    else:
        role: tl.constexpr = ROLE  # annotated: a plain assignment would make it a runtime value, both roles compiled
    pid_b = tl.program_id(2).to(tl.int64)
    g = pid_h // heads_per_group
    t = tl.arange(0, BL)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pmask = pp < hdim
    nmask = nn < dstate
    pn_mask = pmask[:, None] & nmask[None, :]
    dt_base = dt_ptr + pid_b * sdt_b + pid_h * sdt_h
    A = tl.load(A_ptr + pid_h).to(ACC)
    dtb = tl.load(dtb_ptr + pid_h).to(ACC) if HAS_BIAS else 0.0

    if role == 0:
        x_base = x_ptr + pid_b * sx_b + pid_h * sx_h
        B_base = B_ptr + pid_b * sB_b + g * sB_g
        st_base = states_ptr + pid_b * ss_b + pid_h * ss_h + pp[:, None] * ss_p + nn[None, :] * ss_n
        if HAS_INIT:
            S = tl.load(init_ptr + pid_b * si_b + pid_h * si_h + pp[:, None] * si_p + nn[None, :] * si_n,
                        mask=pn_mask, other=0.0).to(ACC)  # (BP, BN)
        else:
            S = tl.zeros((BP, BN), dtype=ACC)
        for c in range(nchunks):
            pos = c * chunk_size + t
            valid = (t < chunk_size) & (pos < seqlen)
            if KEPT_CS:
                dtv, cs, cs_last = _kept_cs(cs_ptr + pid_b * scs_b + pid_h * scs_h + c * scs_c, scs_l,
                                            dtk_ptr + pid_b * sdk_b + pid_h * sdk_h + c * sdk_c, sdk_l, t,
                                            chunk_size, ACC)
            else:
                dtv, _, cs = _chunk_dt(dt_base, sdt_l, dtb, A, pos, valid, SOFTPLUS, ACC)
                cs_last = tl.sum(tl.where(t == BL - 1, cs, 0.0), axis=0)
            tl.store(st_base + c * ss_c, S.to(states_ptr.dtype.element_ty), mask=pn_mask)
            xc = tl.load(x_base + pos[:, None] * sx_l + pp[None, :] * sx_p, mask=valid[:, None] & pmask[None, :],
                         other=0.0).to(ACC)  # (BL, BP)
            Bc = tl.load(B_base + pos[:, None] * sB_l + nn[None, :] * sB_n, mask=valid[:, None] & nmask[None, :],
                         other=0.0).to(ACC)  # (BL, BN)
            w = tl.exp(cs_last - cs) * dtv  # (BL,) weight of x_j ⊗ B_j in the state at the chunk's end
            S = tl.exp(cs_last) * S + _mm(tl.trans(xc * w[:, None]), Bc, ACC, DOT, PREC)
        if STORE_FINAL:
            tl.store(final_ptr + pid_b * sf_b + pid_h * sf_h + pp[:, None] * sf_p + nn[None, :] * sf_n, S,
                     mask=pn_mask)
    else:
        dy_base = dy_ptr + pid_b * sdy_b + pid_h * sdy_h
        C_base = C_ptr + pid_b * sC_b + g * sC_g
        ds_base = dstates_ptr + pid_b * sds_b + pid_h * sds_h + pp[:, None] * sds_p + nn[None, :] * sds_n
        if HAS_DFINAL:
            dS = tl.load(dfinal_ptr + pid_b * sdf_b + pid_h * sdf_h + pp[:, None] * sdf_p + nn[None, :] * sdf_n,
                         mask=pn_mask, other=0.0).to(ACC)  # (BP, BN)
        else:
            dS = tl.zeros((BP, BN), dtype=ACC)
        for ci in range(nchunks):
            c = nchunks - 1 - ci
            pos = c * chunk_size + t
            valid = (t < chunk_size) & (pos < seqlen)
            if KEPT_CS:
                _, cs, cs_last = _kept_cs(cs_ptr + pid_b * scs_b + pid_h * scs_h + c * scs_c, scs_l, cs_ptr, 0, t,
                                          chunk_size, ACC, False)
            else:
                _, _, cs = _chunk_dt(dt_base, sdt_l, dtb, A, pos, valid, SOFTPLUS, ACC)
                cs_last = tl.sum(tl.where(t == BL - 1, cs, 0.0), axis=0)
            tl.store(ds_base + c * sds_c, dS.to(dstates_ptr.dtype.element_ty), mask=pn_mask)
            if STORE_DDA:
                s_in = tl.load(states_ptr + pid_b * ss_b + pid_h * ss_h + c * ss_c + pp[:, None] * ss_p
                               + nn[None, :] * ss_n, mask=pn_mask, other=0.0).to(ACC)  # (BP, BN)
                tl.store(dda_ptr + pid_b * sa_b + pid_h * sa_h + c * sa_c,
                         tl.exp(cs_last) * tl.sum(tl.sum(s_in * dS, axis=1), axis=0))
            dy = tl.load(dy_base + pos[:, None] * sdy_l + pp[None, :] * sdy_p,
                         mask=valid[:, None] & pmask[None, :], other=0.0).to(ACC)  # (BL, BP)
            Cc = tl.load(C_base + pos[:, None] * sC_l + nn[None, :] * sC_n, mask=valid[:, None] & nmask[None, :],
                         other=0.0).to(ACC)  # (BL, BN)
            dS = tl.exp(cs_last) * dS + _mm(tl.trans(dy * tl.exp(cs)[:, None]), Cc, ACC, DOT, PREC)
        if STORE_DINIT:
            tl.store(dinit_ptr + pid_b * sdi_b + pid_h * sdi_h + pp[:, None] * sdi_p + nn[None, :] * sdi_n, dS,
                     mask=pn_mask)


@triton.jit
def _ssd_bwd_chunk_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dtb_ptr, dy_ptr, states_ptr, dstates_ptr,
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr,
    seqlen, chunk_size, nheads, heads_per_group, hdim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    ss_b, ss_c, ss_h, ss_p, ss_n,
    sds_b, sds_c, sds_h, sds_p, sds_n,
    sdx_b, sdx_l, sdx_h, sdx_p,
    sddt_b, sddt_l, sddt_h,
    sdB_b, sdB_l, sdB_k, sdB_n,
    sdC_b, sdC_l, sdC_k, sdC_n,
    sp_b, sp_c, sp_h,
    BL: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HEAD_ATOMIC: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
):
    """bwd="split", step 2: one program per (batch, chunk, head), grid (chunks * h, b) with the heads of one
    chunk adjacent (they read the same B, C rows, and under HEAD_ATOMIC add into the same dB, dC rows, in L2).
    With the chunk's S_in and dS_out from step 1 nothing is left to wait for: every gradient of the chunk is
    _chunk_bwd's, the walk's own per-chunk math, and dA, dD leave as per-(b, chunk, h) partial sums
    (dA_ptr, dD_ptr: (b, chunks, h)), summed in PyTorch."""
    pid = tl.program_id(0)
    pid_h = pid % nheads
    c = pid // nheads
    pid_b = tl.program_id(1).to(tl.int64)
    g = pid_h // heads_per_group
    k = g if HEAD_ATOMIC else pid_h  # dB, dC buffer: as in _ssd_bwd_kernel
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    pn_mask = (pp < hdim)[:, None] & (nn < dstate)[None, :]
    A = tl.load(A_ptr + pid_h).to(ACC)
    dtb = tl.load(dtb_ptr + pid_h).to(ACC) if HAS_BIAS else 0.0
    Dh = tl.load(D_ptr + pid_h).to(ACC) if HAS_D else 0.0

    S0 = tl.load(states_ptr + pid_b * ss_b + c * ss_c + pid_h * ss_h + pp[:, None] * ss_p + nn[None, :] * ss_n,
                 mask=pn_mask, other=0.0).to(ACC)  # (BP, BN) state entering the chunk
    # (BP, BN) the loss's gradient w.r.t. the state leaving the chunk
    dS = tl.load(dstates_ptr + pid_b * sds_b + c * sds_c + pid_h * sds_h + pp[:, None] * sds_p
                 + nn[None, :] * sds_n, mask=pn_mask, other=0.0).to(ACC)
    dA_c, dD_c, _ = _chunk_bwd(
        c, S0, dS, x_ptr + pid_b * sx_b + pid_h * sx_h, dt_ptr + pid_b * sdt_b + pid_h * sdt_h,
        B_ptr + pid_b * sB_b + g * sB_g, C_ptr + pid_b * sC_b + g * sC_g,
        dy_ptr + pid_b * sdy_b + pid_h * sdy_h, dx_ptr + pid_b * sdx_b + pid_h * sdx_h,
        ddt_ptr + pid_b * sddt_b + pid_h * sddt_h, dB_ptr + pid_b * sdB_b + k * sdB_k,
        dC_ptr + pid_b * sdC_b + k * sdC_k, A, dtb, Dh, seqlen, chunk_size, hdim, dstate,
        sx_l, sx_p, sdt_l, sB_l, sB_n, sC_l, sC_n, sdy_l, sdy_p, sdx_l, sdx_p, sddt_l, sdB_l, sdB_n, sdC_l, sdC_n,
        BL, BP, BN, SOFTPLUS, HAS_D, HEAD_ATOMIC, ACC, DOT, PREC)
    tl.store(dA_ptr + pid_b * sp_b + c * sp_c + pid_h * sp_h, tl.sum(dA_c, axis=0))
    if HAS_D:
        tl.store(dD_ptr + pid_b * sp_b + c * sp_c + pid_h * sp_h, tl.sum(dD_c, axis=0))


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_ssd_fwd_kernel, InterpretedFunction)


def _block(size: int) -> int:
    """size padded to a power of two >= 16 (tl.dot's smallest tile)."""
    return max(16, triton.next_power_of_2(size))


def _check(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, dot_dtype) -> None:
    """One ValueError line for the first input that is not what the kernels take."""
    if x.dim() != 4:
        raise ValueError(f"ssd_scan: x must be (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if B.dim() != 4 or B.shape[:2] != (b, l) or h % B.shape[2]:
        raise ValueError(f"ssd_scan: B must be (batch, seqlen, ngroups, dstate) = ({b}, {l}, g, n) with nheads "
                         f"{h} divisible by g, got {tuple(B.shape)}")
    g, n = B.shape[2], B.shape[3]
    expected = {"dt": (dt, (b, l, h)), "A": (A, (h,)), "C": (C, (b, l, g, n)), "D": (D, (h,)),
                "dt_bias": (dt_bias, (h,)), "initial_states": (initial_states, (b, h, p, n))}
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"ssd_scan: {name} must have shape {shape}, got {tuple(t.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"ssd_scan: chunk_size must be a positive int, got {chunk_size!r}")
    check_dtypes_and_device("ssd_scan", x, (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D),
                                            ("dt_bias", dt_bias), ("initial_states", initial_states)))
    if dot_dtype is not None and dot_dtype != "tf32" and dot_dtype not in TL_DTYPES:
        raise ValueError(f"ssd_scan: dot_dtype must be None, 'tf32' or one of {list(TL_DTYPES)}, "
                         f"got {dot_dtype}")
    check_runs_here("ssd_scan", x, interpreted())


def _dot(x: torch.Tensor, dot_dtype) -> dict:
    """The kernels' DOT (tl.dot's operand dtype) and PREC (its input_precision) for x and dot_dtype."""
    if dot_dtype == "tf32":
        return {"DOT": tl.float32, "PREC": "tf32"}
    dtype = dot_dtype or (x.dtype if x.dtype in (torch.bfloat16, torch.float16) else compute_dtype(x))
    return {"DOT": TL_DTYPES[dtype], "PREC": "ieee"}  # ieee: fp32 operands not rounded to TF32


def _strides(t: torch.Tensor | None, ndim: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * ndim


def _states_dtype(states_dtype, dot: dict) -> torch.dtype:
    """The split designs' stored (b, chunks, h, p, n) states: states_dtype, by default the dot dtype (module
    docstring)."""
    return states_dtype or {v: k for k, v in TL_DTYPES.items()}[dot["DOT"]]


def _pass(role, x, dt, A, B, C, chunk_size, dt_bias, initial_states, dy, dfinal, states, dstates, dinit, final,
          consts, dda=None, dA_cumsum=None, dt_chunks=None) -> None:
    """_ssd_bwd_pass_kernel for one role on grid (h, 1, b), or both (role=None) on grid (h, 2, b) (0: S_in into
    `states` and the final state into `final` if not None; 1: dS_out into `dstates` and the initial state's
    gradient into `dinit` if not None). A role's tensors may be None when it does not run. dA_cumsum (and for
    role 0 dt_chunks), (b, h, chunks, L): the forward's kept running log-decay and softplus'ed dt, read instead
    of recomputed (KEPT_CS)."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    dummy = x  # pointer for absent tensors (never read or written: the role and the constexpr flags skip them)
    _ssd_bwd_pass_kernel[(h, 2 if role is None else 1, b)](
        x, dt, A, B, C, dt_bias if dt_bias is not None else dummy,
        initial_states if initial_states is not None else dummy, dy if dy is not None else dummy,
        dfinal if dfinal is not None else dummy, states if states is not None else dummy,
        dstates if dstates is not None else dummy, dinit if dinit is not None else dummy,
        final if final is not None else dummy, dda if dda is not None else dummy,
        dA_cumsum if dA_cumsum is not None else dummy, dt_chunks if dt_chunks is not None else dummy,
        l, triton.cdiv(l, chunk_size), chunk_size, h // g, p, n,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *_strides(initial_states, 4), *_strides(dy, 4),
        *_strides(dfinal, 4), *_strides(states, 5), *_strides(dstates, 5), *_strides(dinit, 4),
        *_strides(final, 4), *_strides(dda, 3), *_strides(dA_cumsum, 4), *_strides(dt_chunks, 4),
        KEPT_CS=dA_cumsum is not None, HAS_INIT=initial_states is not None, HAS_DFINAL=dfinal is not None,
        STORE_DINIT=dinit is not None,
        STORE_FINAL=final is not None, ROLE=-1 if role is None else role, STORE_DDA=dda is not None, **consts)


def _consts(x, chunk_size, n, dt_softplus, dt_bias, dot_dtype, num_warps) -> dict:
    """The launch arguments every kernel takes alike."""
    return dict(BL=_block(chunk_size), BP=_block(x.shape[3]), BN=_block(n), SOFTPLUS=dt_softplus,
                HAS_BIAS=dt_bias is not None, ACC=TL_DTYPES[compute_dtype(x)], **_dot(x, dot_dtype),
                num_warps=num_warps)


def ssd_scan_fwd(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False, initial_states=None,
                 compute_y=True, return_final_states=False, return_states=False, dot_dtype=None, num_warps=4, *,
                 fwd="walk", states_dtype=None):
    """The forward. Returns (y or None, final state or None, states entering each chunk or None): y (b, l, h, p)
    in x's dtype, final (b, h, p, n) in the compute dtype, states (b, chunks, h, p, n) in the compute dtype
    (fwd="walk") or in the split's stored states dtype (fwd="split": states_dtype, default the dot dtype; the
    split backward takes them as its `states`). fwd: "walk" (one program per (head, batch) walking the chunks)
    or "split" (the state recurrence alone, then one program per (batch, chunk, head)); module docstring."""
    _check_opts(fwd=fwd, states_dtype=states_dtype)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    nchunks = triton.cdiv(l, chunk_size)
    acc = compute_dtype(x)
    y = torch.empty(b, l, h, p, dtype=x.dtype, device=x.device) if compute_y else None
    final = torch.empty(b, h, p, n, dtype=acc, device=x.device) if return_final_states else None
    consts = _consts(x, chunk_size, n, dt_softplus, dt_bias, dot_dtype, num_warps)
    dummy = x  # pointer for absent optional tensors (never read: the constexpr flags turn their loads off)
    if fwd == "split":
        # 1. S_in of every chunk (and the final state), by the one sequential recurrence, the split backward's
        # role 0; stored in the dot dtype by default, what the y kernel's one dot that reads it casts it to
        states = torch.empty(b, nchunks, h, p, n, dtype=_states_dtype(states_dtype, consts), device=x.device)
        _pass(0, x, dt, A, B, C, chunk_size, dt_bias, initial_states, None, None, states, None, None, final, consts)
        # 2. every chunk's y at once
        if compute_y:
            _ssd_fwd_chunk_kernel[(nchunks * h, b)](
                x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, states, y,
                l, chunk_size, h, h // g, p, n,
                *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *states.stride(), *y.stride(),
                HAS_D=D is not None, **consts)
        return y, final, states if return_states else None
    states = torch.empty(b, nchunks, h, p, n, dtype=acc, device=x.device) if return_states else None
    _ssd_fwd_kernel[(h, b)](
        x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy,
        initial_states if initial_states is not None else dummy, y if y is not None else dummy,
        final if final is not None else dummy, states if states is not None else dummy,
        l, nchunks, chunk_size, h // g, p, n,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *_strides(y, 4), *_strides(initial_states, 4),
        *_strides(final, 4), *_strides(states, 5),
        HAS_D=D is not None, HAS_INIT=initial_states is not None, COMPUTE_Y=compute_y,
        STORE_FINAL=return_final_states, STORE_STATES=return_states, **consts)
    return y, final, states


def chunk_states(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, chunk_size: int,
                 dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                 states_dtype: torch.dtype | None = None, num_warps: int = 4, *,
                 dA_cumsum: torch.Tensor | None = None, dt_chunks: torch.Tensor | None = None,
                 maxnreg: int | None = None) -> torch.Tensor:
    """The state entering each chunk, S_in (b, chunks, h, p, n), from x (b, l, h, p), raw dt (b, l, h), A, B (b, l,
    g, n), dt_bias (h,): the split designs' forward recurrence alone (role 0 of _ssd_bwd_pass_kernel, one program
    per (head, batch) walking the chunks), what mamba-ssm's _chunk_state_fwd and _state_passing_fwd compute
    together without an initial state (model.ssm_scan "mamba_keep_xy_pass", golf.mixer_op). states_dtype: the
    stored dtype, by default the compute dtype (fp32 for bf16 inputs, as mamba-ssm's kept states). dA_cumsum and
    dt_chunks (b, h, chunks, L), together or neither: the running log-decay and the softplus'ed dt as the forward
    keeps them (mamba-ssm's _chunk_cumsum_fwd), read instead of recomputed from dt, A and dt_bias (model.ssm_scan
    "mamba_keep_golf"). maxnreg: the register cap a thread, PASS_MAXNREG[0] by default, 0 for none."""
    _check(x, dt, A, B, B, chunk_size, None, dt_bias, None, None)
    _check_states_dtype(states_dtype)
    _check_kept_cs(x, chunk_size, dA_cumsum, dt_chunks)
    check_maxnreg("ssd_scan", maxnreg)
    b, l, h, p = x.shape
    n = B.shape[3]
    consts = _consts(x, chunk_size, n, dt_softplus, dt_bias, None, num_warps) | maxnreg_option(maxnreg, PASS_MAXNREG[0])
    states = torch.empty(b, triton.cdiv(l, chunk_size), h, p, n, dtype=states_dtype or compute_dtype(x),
                         device=x.device)
    if states.numel():
        _pass(0, x, dt, A, B, B, chunk_size, dt_bias, None, None, None, states, None, None, None, consts,
              dA_cumsum=dA_cumsum, dt_chunks=dt_chunks)
    return states


def chunk_state_grads(dy: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor, chunk_size: int,
                      dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                      states: torch.Tensor | None = None, states_dtype: torch.dtype | None = None,
                      num_warps: int = 4, *, dA_cumsum: torch.Tensor | None = None, maxnreg: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradient of the loss w.r.t. the state leaving each chunk, dS_out (b, chunks, h, p, n), from the outputs'
    gradient dy (b, l, h, p), raw dt, A, C (b, l, g, n), dt_bias, with no final state's gradient: the split designs'
    backward recurrence alone (role 1 of _ssd_bwd_pass_kernel), what mamba-ssm's _chunk_scan_bwd_dstates and
    _state_passing_bwd compute together. With `states` (the states entering each chunk, (b, chunks, h, p, n)) also
    the gradient of each chunk's end-to-end log-decay, exp(cs_last) <S_in, dS_out> (b, h, chunks) in the compute
    dtype, from the fp32 dS_out (what _state_passing_bwd returns second); else None. states_dtype: dS_out's stored
    dtype, by default dy's (as _state_passing_bwd's dstates_dtype is set in golf.mixer_op). dA_cumsum (b, h, chunks,
    L): the forward's kept running log-decay, read instead of recomputed from dt, A and dt_bias. maxnreg: the
    register cap a thread, PASS_MAXNREG[1] by default, 0 for none."""
    _check(dy, dt, A, C, C, chunk_size, None, dt_bias, None, None)
    _check_states_dtype(states_dtype)
    _check_kept_cs(dy, chunk_size, dA_cumsum, dA_cumsum)
    check_maxnreg("ssd_scan", maxnreg)
    b, l, h, p = dy.shape
    n = C.shape[3]
    chunks = triton.cdiv(l, chunk_size)
    if states is not None and (tuple(states.shape) != (b, chunks, h, p, n) or states.device != dy.device):
        raise ValueError(f"ssd_scan: states must be a ({b}, {chunks}, {h}, {p}, {n}) tensor on {dy.device}, got "
                         f"{tuple(states.shape)} on {states.device}")
    check_dtypes_and_device("ssd_scan", dy, (("states", states),))  # its dtype (None passes)
    consts = _consts(dy, chunk_size, n, dt_softplus, dt_bias, None, num_warps) | maxnreg_option(maxnreg, PASS_MAXNREG[1])
    dstates = torch.empty(b, chunks, h, p, n, dtype=states_dtype or dy.dtype, device=dy.device)
    dda = torch.empty(b, h, chunks, dtype=compute_dtype(dy), device=dy.device) if states is not None else None
    if dstates.numel():
        _pass(1, dy, dt, A, C, C, chunk_size, dt_bias, None, dy, None, states, dstates, None, None, consts, dda,
              dA_cumsum=dA_cumsum)
    return dstates, dda


def _check_kept_cs(x: torch.Tensor, chunk_size: int, dA_cumsum, dt_chunks) -> None:
    """One ValueError line for kept dA_cumsum / dt_chunks (the passes' KEPT_CS inputs) that do not fit x."""
    if (dA_cumsum is None) != (dt_chunks is None):
        raise ValueError("ssd_scan: dA_cumsum and dt_chunks come together, or neither")
    b, l, h, _ = x.shape
    shape = (b, h, triton.cdiv(l, chunk_size), chunk_size)
    for name, t in (("dA_cumsum", dA_cumsum), ("dt_chunks", dt_chunks)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"ssd_scan: {name} must have shape {shape}, got {tuple(t.shape)}")
    check_dtypes_and_device("ssd_scan", x, (("dA_cumsum", dA_cumsum), ("dt_chunks", dt_chunks)))


def _check_states_dtype(states_dtype) -> None:
    if states_dtype is not None and states_dtype not in TL_DTYPES:
        raise ValueError(f"ssd_scan: states_dtype must be None or one of {list(TL_DTYPES)}, got {states_dtype!r}")


def _check_opts(head_sum="atomic", bwd="walk", states_dtype=None, fwd="walk") -> None:
    """One ValueError line for a bad option (checked before _check, whose last check is the device's, so that
    bad options give the same first error on every machine)."""
    if head_sum not in HEAD_SUMS:
        raise ValueError(f"ssd_scan: head_sum must be one of {list(HEAD_SUMS)}, got {head_sum!r}")
    if fwd not in FWDS:
        raise ValueError(f"ssd_scan: fwd must be one of {list(FWDS)}, got {fwd!r}")
    if bwd not in BWDS:
        raise ValueError(f"ssd_scan: bwd must be one of {list(BWDS)}, got {bwd!r}")
    if states_dtype is not None and ("split" not in (fwd, bwd) or states_dtype not in TL_DTYPES):
        raise ValueError(f"ssd_scan: states_dtype must be None or, with fwd='split' or bwd='split', one of "
                         f"{list(TL_DTYPES)}; got {states_dtype!r} with fwd={fwd!r}, bwd={bwd!r}")


def ssd_scan_bwd(dy, dfinal, x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
                 initial_states=None, head_sum="atomic", dot_dtype=None, num_warps=4, *, bwd="walk",
                 states_dtype=None, states=None):
    """Gradients (dx, ddt, dA, dB, dC, dD, ddt_bias, dinitial_states), each in its input's dtype (None for an
    absent D, dt_bias or initial_states). dy: (b, l, h, p) or None (zeros); dfinal: (b, h, p, n) or None.
    bwd: "walk" (one program per (head, batch) walking the chunks in reverse) or "split" (two sequential passes
    for the states and state gradients, then one program per (batch, chunk, head)); module docstring.
    states_dtype (bwd="split" only): the dtype of the per-chunk states and state gradients stored between the
    split's two launches; default the dot dtype (bf16 for bf16 inputs), which they are cast to for the dots.
    states (bwd="split" only): the states entering each chunk (b, chunks, h, p, n) as the split forward stored
    them (ssd_scan_fwd(fwd="split", return_states=True)), so that the first pass runs only its backward
    recurrence instead of recomputing them."""
    _check_opts(head_sum, bwd, states_dtype)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hpg = h // g
    acc = compute_dtype(x)
    nchunks = triton.cdiv(l, chunk_size)
    if states is not None and (bwd != "split" or tuple(states.shape) != (b, nchunks, h, p, n)
                               or states.device != x.device):
        raise ValueError(f"ssd_scan: states (the split forward's S_in) must be a ({b}, {nchunks}, {h}, {p}, {n}) "
                         f"tensor on {x.device}, with bwd='split'; got {tuple(states.shape)} on {states.device} "
                         f"with bwd={bwd!r}")
    if dy is None:
        dy = torch.zeros_like(x)
    atomic = head_sum == "atomic" and hpg > 1
    dx = torch.empty(b, l, h, p, dtype=x.dtype, device=x.device)
    ddt = torch.empty(b, l, h, dtype=acc, device=x.device)
    k = g if (atomic or hpg == 1) else h
    dB = (torch.zeros if atomic else torch.empty)(b, l, k, n, dtype=acc, device=x.device)
    dC = (torch.zeros if atomic else torch.empty)(b, l, k, n, dtype=acc, device=x.device)
    dinit = torch.empty(b, h, p, n, dtype=acc, device=x.device) if initial_states is not None else None
    dummy = x  # pointer for absent optional tensors (never read: the constexpr flags turn their loads off)
    consts = _consts(x, chunk_size, n, dt_softplus, dt_bias, dot_dtype, num_warps)
    if bwd == "walk":
        # the state entering each chunk, recomputed (reads x, B, dt again; writes (b, chunks, h, p, n))
        _, _, states = ssd_scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, initial_states,
                                    compute_y=False, return_states=True, dot_dtype=dot_dtype,
                                    num_warps=num_warps)
        dA_part = torch.empty(b, h, dtype=acc, device=x.device)
        dD_part = torch.empty(b, h, dtype=acc, device=x.device) if D is not None else None
        _ssd_bwd_kernel[(h, b)](
            x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, dy, states,
            dfinal if dfinal is not None else dummy, dx, ddt, dB, dC, dA_part,
            dD_part if dD_part is not None else dummy, dinit if dinit is not None else dummy,
            l, nchunks, chunk_size, hpg, p, n,
            *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *dy.stride(), *states.stride(),
            *_strides(dfinal, 4), *dx.stride(), *ddt.stride(), *dB.stride(), *dC.stride(), *_strides(dinit, 4),
            HAS_D=D is not None, HAS_DFINAL=dfinal is not None, STORE_DINIT=dinit is not None,
            HEAD_ATOMIC=atomic, **consts)
    else:
        # 1. S_in and dS_out of every chunk, (b, chunks, h, p, n) each, by the two recurrences side by side
        # (only dS_out's when the split forward's S_in are given); stored in the dot dtype by default: the chunk
        # kernel casts them to it for every dot that reads them, so at bf16 this halves their bytes (written
        # once, read once) and changes only the one elementwise term that reads them, exp(cs_last)
        # <dS_out, S_in> in the dA and ddt gradients (module docstring)
        sdt = _states_dtype(states_dtype, consts)
        dstates = torch.empty(b, nchunks, h, p, n, dtype=sdt, device=x.device)
        if states is None:
            states = torch.empty(b, nchunks, h, p, n, dtype=sdt, device=x.device)
            _pass(None, x, dt, A, B, C, chunk_size, dt_bias, initial_states, dy, dfinal, states, dstates, dinit,
                  None, consts)
        else:
            _pass(1, x, dt, A, B, C, chunk_size, dt_bias, initial_states, dy, dfinal, None, dstates, dinit, None,
                  consts)
        # 2. every chunk's gradients at once; dA and dD as per-(b, chunk, h) partial sums
        dA_part = torch.empty(b, nchunks, h, dtype=acc, device=x.device)
        dD_part = torch.empty(b, nchunks, h, dtype=acc, device=x.device) if D is not None else None
        _ssd_bwd_chunk_kernel[(nchunks * h, b)](
            x, dt, A, B, C, D if D is not None else dummy, dt_bias if dt_bias is not None else dummy, dy, states,
            dstates, dx, ddt, dB, dC, dA_part, dD_part if dD_part is not None else dummy,
            l, chunk_size, h, hpg, p, n,
            *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *dy.stride(), *states.stride(),
            *dstates.stride(), *dx.stride(), *ddt.stride(), *dB.stride(), *dC.stride(), *dA_part.stride(),
            HAS_D=D is not None, HEAD_ATOMIC=atomic, **consts)
        dA_part = dA_part.flatten(0, 1)  # (b * chunks, h), summed over its first dimension below as the walk's
        dD_part = dD_part.flatten(0, 1) if D is not None else None
    if k != g:  # per-head partial gradients of the group's shared B, C
        dB = dB.view(b, l, g, hpg, n).sum(3)
        dC = dC.view(b, l, g, hpg, n).sum(3)
    ddt_bias = ddt.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None  # ddt is w.r.t. dt + dt_bias
    return (dx, ddt.to(dt.dtype), dA_part.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD_part.sum(0).to(D.dtype) if D is not None else None, ddt_bias,
            dinit.to(initial_states.dtype) if dinit is not None else None)



# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _SSDScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, dt_softplus, return_final_states,
                head_sum, dot_dtype, num_warps, fwd, bwd, states_dtype):
        # fwd="split" stores every chunk's S_in anyway; with bwd="split" they are kept for the backward, whose
        # first pass then runs only the state-gradient recurrence (an activation of (b, chunks, h, p, n) in the
        # states dtype held from forward to backward, instead of recomputing it there)
        keep = fwd == "split" and bwd == "split"
        y, final, states = ssd_scan_fwd(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, initial_states,
                                        return_final_states=return_final_states, return_states=keep,
                                        dot_dtype=dot_dtype, num_warps=num_warps, fwd=fwd,
                                        states_dtype=states_dtype if fwd == "split" else None)
        ctx.save_for_backward(x, dt, A, B, C, D, dt_bias, initial_states, states)
        ctx.opts = (chunk_size, dt_softplus, head_sum, dot_dtype, num_warps, bwd, states_dtype)
        ctx.set_materialize_grads(False)  # an unused output gets None, not a tensor of zeros to read
        return (y, final) if return_final_states else y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, dt, A, B, C, D, dt_bias, initial_states, states = ctx.saved_tensors
        chunk_size, dt_softplus, head_sum, dot_dtype, num_warps, bwd, states_dtype = ctx.opts
        dx, ddt, dA, dB, dC, dD, ddt_bias, dinit = ssd_scan_bwd(
            dy, dfinal, x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, initial_states, head_sum=head_sum,
            dot_dtype=dot_dtype, num_warps=num_warps, bwd=bwd,
            states_dtype=states_dtype if bwd == "split" else None, states=states)
        return dx, ddt, dA, dB, dC, None, dD, ddt_bias, dinit, None, None, None, None, None, None, None, None


def ssd_scan(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, *, head_sum="atomic", dot_dtype=None, num_warps=4, fwd="walk", bwd="walk",
             states_dtype=None):
    """mamba_chunk_scan_combined's call as golf's mixer makes it (no z, seq_idx, cu_seqlens; D per head), on
    golf's kernels, differentiable w.r.t. x, dt, A, B, C, D, dt_bias and initial_states.

    x (b, l, h, p), dt (b, l, h) before softplus, A (h,), B, C (b, l, g, n), D and dt_bias (h,) or None,
    initial_states (b, h, p, n) or None. Returns y (b, l, h, p) in x's dtype, and with return_final_states
    (y, final state (b, h, p, n) in fp32, fp64 for fp64 x). head_sum: "atomic" or "sum" (module docstring);
    dot_dtype: the tl.dot operand dtype, or "tf32" (default: x's dtype, full-precision fp32 for fp32 x);
    num_warps: per program (every kernel of the call); fwd and bwd: the forward's and the backward's design,
    "walk" (default) or "split" (with both "split" the backward reuses the forward's stored states), and
    states_dtype the splits' stored state dtype (ssd_scan_fwd, ssd_scan_bwd; module docstring)."""
    _check_opts(head_sum, bwd, states_dtype, fwd)  # before _check, whose last check is the device's
    _check(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, dot_dtype)
    return _SSDScanFn.apply(x, dt, A, B, C, chunk_size, D, dt_bias, initial_states, dt_softplus,
                            return_final_states, head_sum, dot_dtype, num_warps, fwd, bwd, states_dtype)
