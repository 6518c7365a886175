"""golf's Triton kernel for the chunk-local pieces of the Mamba-2 SSD backward, which mamba-ssm runs as five
launches and a few cumulative sums: the gradient of each chunk's C·B matrix (its _chunk_scan_bwd_dcb), the
within-chunk part of the log-decays' gradient (_chunk_scan_bwd_ddAcs_stable), dx with dt's and D's gradients
(_chunk_scan_chunk_state_bwd_dx), and the states' parts of B's and C's gradients with their log-decay shares
(_chunk_state_bwd_db, _chunk_scan_bwd_dC). In hybrid_12_b131k's step on an H200 they take 1.2, 2.8, 4.1, 1.0 and
1.1 ms of the SSD scan's 19.3 for nine layers (bench/RESULTS.md twelfth block), and each loads dy or x per head and
chunk again. Here one program per chunk and group loads C·B, B and C once and each head's dy and x once, and
derives all of them. model.ssm_scan "mamba_keep_dA" calls `dcb_ddA` (the first two), "mamba_keep_dx" `chunk_bwd`
(the first three) and "mamba_keep_chunk" `chunk_bwd` with the states (all five) in golf.mixer_op._scan_bwd_keep;
`dcb_ddA_reference` and `chunk_bwd_reference` are the PyTorch twins. What is left of mamba-ssm's backward: the two
passes of the state gradient across chunks, the C·B gradient's products with B and C, and dt's cumsum backward.

What it computes, per batch b, chunk c and head h of group g (positions i, j < L of the chunk; dy, x: the chunk's
(L, P) rows of head h; dt the softplus'ed dt, cs its running log-decay cs_i = sum_{k<=i} dA_k, dA_k = dt_k A_h, as
mamba-ssm's forward keeps them; CB[g] the chunk's C_i·B_j):
    G_h[i, j] = (dy_i · x_j) dt_j exp(min(cs_i - cs_j, 0))   for j <= i, else 0
    dCB[g]    = sum of G_h over the group's heads                                      (L, L)
    M_h[i, j] = G_h[i, j] CB[g][i, j]                        for j < i, else 0
The within-chunk output y_i = sum_{j<=i} CB[i, j] exp(cs_i - cs_j) dt_j x_j reads the increments dA_k through
exp(cs_i - cs_j) = exp(sum_{j<k<=i} dA_k), so their gradient is the sum of M_h over the rectangle i >= k > j:
    ddA_h[k] = sum_{i>=k} sum_{j<k} M_h[i, j]
mamba-ssm sums that rectangle with a running sum along j over the (L × L) tile (a 2-D scan per head). Here it is
the reverse cumulative sum of row sums minus column sums, two reductions and a scan of a vector:
    ddA_h[k] = sum_{i>=k} (row_i - col_i),   row_i = sum_j M_h[i, j],  col_i = sum_j M_h[j, i]
(the rows i >= k hold every pair with i >= k; taking away the columns j >= k leaves those with j < k), with
ddA_h[0] = 0 stored exactly. The same products in fp32 summed in another order: the two agree to fp32 rounding,
which the bf16 inputs' rounding dwarfs. The exp's clamp at 0 is mamba-ssm's (it only matters where the mask then
drops the entry). A ragged last chunk: rows past the sequence's end read as zero, so their G, M and ddA are zero.
With dx (`chunk_bwd`; B (L, N) the group's rows, dS (P, N) the gradient of the state the chunk passes on, D_h):
    acc_j = sum_{i>=j} CB[g][i, j] exp(min(cs_i - cs_j, 0)) dy_i + exp(min(cs_last - cs_j, 0)) dS B_j      (P,)
    dx_j  = acc_j dt_j + D_h dy_j,   ddt_j = acc_j · x_j,   dD_h = sum over the chunk of dy_j · x_j
(the within-chunk output's and the chunk's state contribution's gradients; dD summed over chunks after the launch).
With the states (C (L, N) the group's rows, S_in (P, N) the state entering the chunk, e = the gradient of the
chunk's end-to-end log-decay cs_last from the state passing):
    dB_j += exp(min(cs_last - cs_j, 0)) dt_j dS^T x_j      (N,) summed over the group's heads; s_j = that · B_j
    dC_i += exp(cs_i) S_in^T dy_i                          (N,) likewise;                   q_i = that · C_i
    ddA_h[k] += sum_{j<k} s_j + sum_{i>=k} q_i + e         (the state passed on reads cs_last - cs_j, the state read
                                                            exp(cs_i), the chunk end cs_last)
which makes ddA the whole gradient of the log-decay increments, as _mamba_chunk_scan_combined_bwd assembles it.

Layout: one program per (batch, chunk, group) walking the group's heads (mamba-ssm's _chunk_scan_bwd_dcb makes the
same choice at these shapes: every head of a group in one program), the (L × L) C·B tile (and the (L × N) B rows)
loaded once. Outputs dCB (b, chunks, g, L, L), ddA and ddt (b, h, chunks, L) in the compute dtype (fp32, fp64 for
fp64 inputs), dx in x's dtype, dD in D's: the shapes and order mamba-ssm's functions return. tl.dot's operands are
in x's dtype (bf16 at the production shapes; fp32 operands are not rounded to TF32), its products in the compute
dtype. The dx part keeps four (L × L) or (L × P) fp32 tiles live; the states' part adds two (L × N) accumulators.
LAUNCH holds each part's launch, the fastest of a sweep on an H200; a Launch's head_split > 1 shares a group's heads
among that many programs, which was slower at every split there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import (
    MAXNREG_RANGE,
    TL_DTYPES,
    check_chunk_layout,
    check_dtypes_and_device,
    check_runs_here,
    maxnreg_option,
)
from golf.ssm import compute_dtype


class Launch(NamedTuple):
    """How the kernel is launched: warps a program, Triton's software-pipelining stages for the head loop, and
    head_split programs sharing a group's heads (each walks heads_per_group / head_split of them; above 1 the sums
    over the group's heads, dCB, dB and dC, are added to zeroed outputs with atomics, so their summation order
    varies from run to run); maxnreg caps the registers a thread may use (ptxas's .maxnreg; None: the compiler's
    choice). Why a cap: an SM holds 65,536 registers, so a program of 4 warps fits four times only at <= 128 a
    thread, one of 8 warps twice; uncapped, the "dA" part compiles to 199-245 at 4 warps and to 128 at 8 (offline
    for sm_90a with Triton 3.9, bench/RESULTS.md 2026-12-02), and a cap holds 128 whatever the compiler version."""

    num_warps: int
    num_stages: int
    head_split: int
    maxnreg: int | None = None


# by part: "dA" (dCB and ddA alone), "dx" (with dx: four (L x L) or (L x P) fp32 tiles live at once), "chunk" (with
# the states' part: two (L x N) accumulators more). The fastest of bench/ssd_dcb_bench.py --sweep at
# hybrid_12_b131k's mixer shapes on an H200 (bench/RESULTS.md, 2026-12-01 fourteenth block): dA 0.314 ms a call
# (mamba-ssm's two kernels 0.487), dx 0.828 (mamba-ssm's three 0.932); every head_split above 1 was slower. "chunk"
# keeps the one launch that has run there (1.33 ms against 1.24): its sweep faulted at Launch(4, 1, 1). "dA" under
# a cap of 128 (twenty-third block, Triton 3.6): 4 warps, 2 stages 0.262 ms against 0.315 for 8 warps uncapped; at
# 4 warps the cap is what matters (0.364 uncapped): offline that launch takes 199-245 registers a thread, two
# programs an SM, and under the cap four, with a few spills.
LAUNCH = {"dA": Launch(4, 2, 1, 128), "dx": Launch(4, 1, 1), "chunk": Launch(8, 3, 1)}


@triton.jit
def _chunk_local_bwd_kernel(x_ptr, dy_ptr, dt_ptr, cs_ptr, cb_ptr, b_ptr, dst_ptr, D_ptr, c_ptr, sin_ptr, dce_ptr,
                      dcb_ptr, dda_ptr, dx_ptr, ddt_ptr, dD_ptr, db_ptr, dc_ptr,
                      T, chunks, heads_per_group, splits,
                      sx_b, sx_t, sx_h, sx_p, sy_b, sy_t, sy_h, sy_p,
                      sdt_b, sdt_h, sdt_c, sdt_l, scs_b, scs_h, scs_c, scs_l,
                      scb_b, scb_c, scb_g, scb_i, scb_j, sb_b, sb_t, sb_g, sb_n,
                      sst_b, sst_c, sst_h, sst_p, sst_n,
                      sd_b, sd_c, sd_g, sd_i, sd_j, sa_b, sa_h, sa_c, sa_l,
                      sdx_b, sdx_t, sdx_h, sdx_p, sdD_b, sdD_c, sdD_h,
                      sc_b, sc_t, sc_g, sc_n, ssi_b, ssi_c, ssi_h, ssi_p, ssi_n, sce_b, sce_h, sce_c,
                      sdb_b, sdb_t, sdb_g, sdb_n,
                      L: tl.constexpr, P: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, WITH_DX: tl.constexpr,
                      WITH_STATES: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, ATOMIC: tl.constexpr):
    pid = tl.program_id(0)
    gs = tl.program_id(1)
    b = pid // chunks
    c = pid - b * chunks
    g = gs // splits
    heads = heads_per_group // splits  # this program's share of the group's heads
    h0 = g * heads_per_group + (gs - g * splits) * heads
    i = tl.arange(0, BLOCK_L)  # (BL,): positions in the chunk, rows
    j = tl.arange(0, BLOCK_L)  # (BL,): the same, columns
    p = tl.arange(0, BLOCK_P)  # (BP,)
    t0 = c * L
    valid = tl.minimum(L, T - t0)  # rows of this chunk inside the sequence
    in_l = i < L
    tile = in_l[:, None] & (j < L)[None, :]  # (BL, BL)
    lower = i[:, None] >= j[None, :]
    strict = i[:, None] > j[None, :]
    rows = (t0 + i).to(tl.int64)  # (BL,): b * T * row stride can pass 2^31
    row_mask = (i < valid)[:, None] & (p < P)[None, :]  # (BL, BP)
    cb = tl.load(cb_ptr + b * scb_b + c * scb_c + g * scb_g + i[:, None] * scb_i + j[None, :] * scb_j,
                 mask=tile, other=0.0).to(ACC)  # (BL, BL)
    if WITH_DX:
        n = tl.arange(0, BLOCK_N)  # (BN,)
        bg = tl.load(b_ptr + b * sb_b + rows[:, None] * sb_t + g * sb_g + n[None, :] * sb_n,
                     mask=(i < valid)[:, None] & (n < N)[None, :], other=0.0)  # (BL, BN): the group's B rows
    if WITH_STATES:
        cg = tl.load(c_ptr + b * sc_b + rows[:, None] * sc_t + g * sc_g + n[None, :] * sc_n,
                     mask=(i < valid)[:, None] & (n < N)[None, :], other=0.0).to(ACC)  # (BL, BN): C rows
        db_acc = tl.zeros((BLOCK_L, BLOCK_N), dtype=ACC)
        dc_acc = tl.zeros((BLOCK_L, BLOCK_N), dtype=ACC)
    dcb = tl.zeros((BLOCK_L, BLOCK_L), dtype=ACC)
    for hh in range(heads):
        h = h0 + hh
        dy = tl.load(dy_ptr + b * sy_b + rows[:, None] * sy_t + h * sy_h + p[None, :] * sy_p,
                     mask=row_mask, other=0.0)  # (BL, BP)
        xt = tl.load(x_ptr + b * sx_b + rows[None, :] * sx_t + h * sx_h + p[:, None] * sx_p,
                     mask=(p < P)[:, None] & (j < valid)[None, :], other=0.0)  # (BP, BL): x's rows as columns
        gm = tl.dot(dy.to(DOT), xt.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BL): dy_i · x_j
        dt = tl.load(dt_ptr + b * sdt_b + h * sdt_h + c * sdt_c + j * sdt_l, mask=j < L, other=0.0).to(ACC)
        cs_i = tl.load(cs_ptr + b * scs_b + h * scs_h + c * scs_c + i * scs_l, mask=in_l, other=0.0).to(ACC)
        cs_j = tl.load(cs_ptr + b * scs_b + h * scs_h + c * scs_c + j * scs_l, mask=j < L, other=0.0).to(ACC)
        decay = tl.where(lower, tl.exp(tl.minimum(cs_i[:, None] - cs_j[None, :], 0.0)), 0.0)  # (BL, BL)
        gm = gm * dt[None, :] * decay
        dcb += gm
        m = tl.where(strict, gm * cb, 0.0)  # (BL, BL)
        diff = tl.sum(m, axis=1) - tl.sum(m, axis=0)  # (BL,): row_i - col_i
        dda = tl.cumsum(diff, axis=0, reverse=True)  # (BL,): sum over positions >= k
        dda = tl.where(i == 0, 0.0, dda)
        if WITH_DX:
            # acc[j, :] = sum_{i>=j} CB[i, j] decay[i, j] dy_i + exp(cs_last - cs_j) B_j · dstates (its (P, N) grad)
            w = (cb * decay).to(DOT)  # (BL, BL), zero above the diagonal
            acc = tl.dot(tl.trans(w), dy.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BP)
            dst = tl.load(dst_ptr + b * sst_b + c * sst_c + h * sst_h + n[:, None] * sst_n + p[None, :] * sst_p,
                          mask=(n < N)[:, None] & (p < P)[None, :], other=0.0)  # (BN, BP)
            cs_last = tl.load(cs_ptr + b * scs_b + h * scs_h + c * scs_c + (L - 1) * scs_l).to(ACC)
            scale = tl.exp(tl.minimum(cs_last - cs_i, 0.0))  # (BL,)
            acc += scale[:, None] * tl.dot(bg.to(DOT), dst.to(DOT), out_dtype=ACC, input_precision="ieee")
            x = tl.trans(xt).to(ACC)  # (BL, BP)
            dyf = dy.to(ACC)
            dt_i = tl.load(dt_ptr + b * sdt_b + h * sdt_h + c * sdt_c + i * sdt_l, mask=in_l, other=0.0).to(ACC)
            d_h = tl.load(D_ptr + h).to(ACC)
            dx = acc * dt_i[:, None] + d_h * dyf
            tl.store(dx_ptr + b * sdx_b + rows[:, None] * sdx_t + h * sdx_h + p[None, :] * sdx_p,
                     dx.to(dx_ptr.dtype.element_ty), mask=row_mask)
            tl.store(ddt_ptr + b * sa_b + h * sa_h + c * sa_c + i * sa_l, tl.sum(acc * x, axis=1), mask=in_l)
            tl.store(dD_ptr + b * sdD_b + c * sdD_c + h * sdD_h, tl.sum(tl.sum(dyf * x, axis=1), axis=0))
        if WITH_STATES:
            # the state this chunk passes on: dB_j += exp(cs_last - cs_j) dt_j dS^T x_j; its log-decays' share,
            # s_j = that · B_j, reaches every increment after j (an exclusive cumulative sum)
            dbh = tl.dot(tl.trans(xt).to(DOT), tl.trans(dst).to(DOT), out_dtype=ACC, input_precision="ieee")
            dbh = dbh * (scale * dt_i)[:, None]  # (BL, BN)
            db_acc += dbh
            s_next = tl.sum(dbh * bg.to(ACC), axis=1)  # (BL,)
            dda += tl.cumsum(s_next, axis=0) - s_next
            # the state entering it: dC_i += exp(cs_i) S_in^T dy_i; q_i = that · C_i is the gradient w.r.t. cs_i,
            # plus the chunk-end decay's own gradient at the last position, passed to increments <= i
            s_in = tl.load(sin_ptr + b * ssi_b + c * ssi_c + h * ssi_h + p[:, None] * ssi_p + n[None, :] * ssi_n,
                           mask=(p < P)[:, None] & (n < N)[None, :], other=0.0)  # (BP, BN)
            dch = tl.dot(dy.to(DOT), s_in.to(DOT), out_dtype=ACC, input_precision="ieee") * tl.exp(cs_i)[:, None]
            dc_acc += dch
            q = tl.sum(dch * cg, axis=1)  # (BL,)
            q += tl.where(i == L - 1, tl.load(dce_ptr + b * sce_b + h * sce_h + c * sce_c).to(ACC), 0.0)
            dda += tl.cumsum(q, axis=0, reverse=True)
        tl.store(dda_ptr + b * sa_b + h * sa_h + c * sa_c + i * sa_l, dda.to(dda_ptr.dtype.element_ty), mask=in_l)
    # the sums over the group's heads: stored by the one program of a group, else added to zeroed outputs
    dcb_at = dcb_ptr + b * sd_b + c * sd_c + g * sd_g + i[:, None] * sd_i + j[None, :] * sd_j
    if ATOMIC:
        tl.atomic_add(dcb_at, dcb.to(dcb_ptr.dtype.element_ty), mask=tile)
    else:
        tl.store(dcb_at, dcb.to(dcb_ptr.dtype.element_ty), mask=tile)
    if WITH_STATES:
        out_mask = (i < valid)[:, None] & (n < N)[None, :]
        at = b * sdb_b + rows[:, None] * sdb_t + g * sdb_g + n[None, :] * sdb_n
        if ATOMIC:
            tl.atomic_add(db_ptr + at, db_acc, mask=out_mask)
            tl.atomic_add(dc_ptr + at, dc_acc, mask=out_mask)
        else:
            tl.store(db_ptr + at, db_acc, mask=out_mask)
            tl.store(dc_ptr + at, dc_acc, mask=out_mask)


def interpreted() -> bool:
    """Whether this module's kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_chunk_local_bwd_kernel, InterpretedFunction)


def _check(op, x, dt, dA_cumsum, dy, CB, dot_dtype, launch, B=None, dstates=None, D=None, dx=None, C=None,
           states_in=None, ddA_chunk_end=None) -> None:
    """One ValueError line, prefixed `op`, for the first input that is not what the kernel takes."""
    b, t, h, p, chunks, g = check_chunk_layout(op, x, dt, CB)
    shapes = [("dA_cumsum", dA_cumsum, tuple(dt.shape)), ("dout", dy, tuple(x.shape))]
    if B is not None:
        n = B.shape[-1] if B.dim() == 4 else -1
        shapes += [("B", B, (b, t, g, n)), ("dstates", dstates, (b, chunks, h, p, n)), ("D", D, (h,)),
                   ("dx", dx, tuple(x.shape)), ("C", C, (b, t, g, n)), ("states_in", states_in, (b, chunks, h, p, n)),
                   ("ddA_chunk_end", ddA_chunk_end, (b, h, chunks))]
        states = (C, states_in, ddA_chunk_end)
        if any(v is not None for v in states) and any(v is None for v in states):
            raise ValueError(f"{op}: C, states_in and ddA_chunk_end come together (the states' part), or none")
    for name, tensor, shape in shapes:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    check_dtypes_and_device(op, x, (("x", x), ("dt", dt), ("dA_cumsum", dA_cumsum), ("dout", dy), ("CB", CB),
                                    ("B", B), ("dstates", dstates), ("D", D), ("dx", dx), ("C", C),
                                    ("states_in", states_in), ("ddA_chunk_end", ddA_chunk_end)))
    for name, tensor in (("dout", dy), ("dx", dx)):
        if tensor is not None and tensor.dtype != x.dtype:
            raise ValueError(f"{op}: {name} must have x's dtype {x.dtype}, got {tensor.dtype}")
    if dot_dtype is not None and dot_dtype not in TL_DTYPES:
        raise ValueError(f"{op}: dot_dtype must be None or one of {list(TL_DTYPES)}, got {dot_dtype}")
    per_group = h // g
    lo, hi = MAXNREG_RANGE
    if launch is not None and (not isinstance(launch, Launch) or min(launch[:3]) < 1 or per_group % launch.head_split
                               or (launch.maxnreg is not None and not lo <= launch.maxnreg <= hi)):
        raise ValueError(f"{op}: launch must be a Launch of positive ints whose head_split divides the {per_group} "
                         f"heads of a group and whose maxnreg is None or in [{lo}, {hi}], got {launch!r}")
    check_runs_here(op, x, interpreted())


def _launch(x, dt, dA_cumsum, dout, CB, dot_dtype, launch, B=None, dstates=None, D=None, dx=None, C=None,
            states_in=None, ddA_chunk_end=None, out=None):
    """The kernel with or without its dx part (B given) and its states' part (C given): (dCB, ddA), (dCB, ddA, dx,
    ddt, dD) or (dCB, ddA, dx, ddt, dD, dB, dC)."""
    b, t, h, p = x.shape
    _, _, chunks, size = dt.shape
    g = CB.shape[2]
    acc = compute_dtype(x)
    with_dx, with_states = B is not None, C is not None
    launch = launch or LAUNCH["chunk" if with_states else "dx" if with_dx else "dA"]
    atomic = launch.head_split > 1
    new_sum = torch.zeros if atomic else torch.empty  # the per-group sums, added to by several programs when split
    if out is None:
        dcb = new_sum(b, chunks, g, size, size, dtype=acc, device=x.device)
        dda = torch.empty(b, h, chunks, size, dtype=acc, device=x.device)
    else:  # dcb_ddA's out: written in place (zeroed first where a split adds into it)
        dcb, dda = out
        if atomic:
            dcb.zero_()
    n = B.shape[-1] if with_dx else 1
    ddt = dD = db = dc = dcb  # placeholders where a part is off: the kernel never writes them
    if with_dx:
        dx = torch.empty_like(x) if dx is None else dx
        ddt = torch.empty_like(dda)
        dD = torch.empty(b, chunks, h, dtype=acc, device=x.device)  # per-chunk partial sums
    if with_states:
        db = new_sum(B.shape, dtype=acc, device=x.device)
        dc = new_sum(B.shape, dtype=acc, device=x.device)
    if dcb.numel() and h:
        dot = dot_dtype or (x.dtype if x.dtype in (torch.bfloat16, torch.float16) else acc)
        B_, dst, D_ = (B, dstates, D.contiguous()) if with_dx else (x, dcb, dt)  # the kernel reads D[h] at stride 1
        C_, sin, dce = (C, states_in, ddA_chunk_end) if with_states else (x, dcb, dt)

        def strides(t, on, ndim):
            return t.stride() if on else (0,) * ndim

        _chunk_local_bwd_kernel[(b * chunks, g * launch.head_split)](
            x, dout, dt, dA_cumsum, CB, B_, dst, D_, C_, sin, dce, dcb, dda, dx if with_dx else dcb, ddt, dD, db, dc,
            t, chunks, h // g, launch.head_split,
            *x.stride(), *dout.stride(), *dt.stride(), *dA_cumsum.stride(), *CB.stride(),
            *strides(B, with_dx, 4), *strides(dstates, with_dx, 5), *dcb.stride(), *dda.stride(),
            *strides(dx, with_dx, 4), *strides(dD, with_dx, 3), *strides(C, with_states, 4),
            *strides(states_in, with_states, 5), *strides(ddA_chunk_end, with_states, 3),
            *strides(db, with_states, 4),
            L=size, P=p, N=n, BLOCK_L=max(16, triton.next_power_of_2(size)), BLOCK_P=max(16, triton.next_power_of_2(p)),
            BLOCK_N=max(16, triton.next_power_of_2(n)), WITH_DX=with_dx, WITH_STATES=with_states,
            ACC=TL_DTYPES[acc], DOT=TL_DTYPES[dot], ATOMIC=atomic, num_warps=launch.num_warps,
            num_stages=launch.num_stages, **maxnreg_option(launch.maxnreg, None))
    else:
        for v in (dcb, dda) + ((dx, ddt, dD) if with_dx else ()) + ((db, dc) if with_states else ()):
            v.zero_()
    if not with_dx:
        return dcb, dda
    out = (dcb, dda, dx, ddt, dD.sum((0, 1)).to(D.dtype))
    return out + (db, dc) if with_states else out


def dcb_ddA(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor,
            CB: torch.Tensor, dot_dtype: torch.dtype | None = None, launch: Launch | None = None,
            out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dCB (b, chunks, g, L, L), ddA (b, h, chunks, L)), both in the compute dtype, for x, dout (b, T, h, P), dt and
    dA_cumsum (b, h, chunks, L) and CB (b, chunks, g, L, L) as mamba-ssm's SSD forward makes them: what
    mamba-ssm's _chunk_scan_bwd_dcb(x, dt, dA_cumsum, dout, ngroups=g) and _chunk_scan_bwd_ddAcs_stable(x, dt,
    dA_cumsum, dout, CB) return, in one launch (module docstring). dot_dtype: tl.dot's operand dtype, by default
    x's for 16-bit x, else the compute dtype (the tests pass fp32 for bf16 x in Triton's interpreter, which
    miscomputes bf16 dots; bf16 values are exact in fp32). launch: LAUNCH["dA"] by default. out: (dCB, ddA) to
    write into (contiguous, those shapes and the compute dtype), e.g. allocated on the stream that reads them while
    this runs on another (golf.mixer_op's "mamba_keep_golf_overlap")."""
    _check("dcb_ddA", x, dt, dA_cumsum, dout, CB, dot_dtype, launch)
    if out is not None:
        b, _, h, _ = x.shape
        _, _, chunks, size = dt.shape
        acc = compute_dtype(x)
        shapes = ((b, chunks, CB.shape[2], size, size), (b, h, chunks, size))
        if (len(out) != 2 or any(tuple(o.shape) != s or o.dtype != acc or o.device != x.device or not o.is_contiguous()
                                 for o, s in zip(out, shapes))):
            raise ValueError(f"dcb_ddA: out must be two contiguous {acc} tensors on {x.device} of shapes {shapes}")
    return _launch(x, dt, dA_cumsum, dout, CB, dot_dtype, launch, out=out)


def chunk_bwd(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor, CB: torch.Tensor,
              B: torch.Tensor, dstates: torch.Tensor, D: torch.Tensor, dx: torch.Tensor | None = None,
              dot_dtype: torch.dtype | None = None, C: torch.Tensor | None = None,
              states_in: torch.Tensor | None = None, ddA_chunk_end: torch.Tensor | None = None,
              launch: Launch | None = None) -> tuple[torch.Tensor, ...]:
    """`dcb_ddA` and, in the same launch, what mamba-ssm's _chunk_scan_chunk_state_bwd_dx(x, dt, dA_cumsum, B, CB,
    dout, dstates, D=D, dx=dx) computes: → (dCB, ddA, dx, ddt, dD). B (b, T, g, N) as the forward read it,
    dstates (b, chunks, h, P, N) the gradient of the state leaving each chunk, D (h,). dx (x's shape and dtype) is
    written in place when given; ddt (b, h, chunks, L) in the compute dtype is the gradient w.r.t. dt as a factor
    (the within-chunk and the states' part; the log-decays' share is ddA's), dD (h,) in D's dtype (module
    docstring).

    With C (b, T, g, N), states_in (b, chunks, h, P, N: the state entering each chunk) and ddA_chunk_end (b, h,
    chunks: the gradient of each chunk's end-to-end log-decay from the state passing) also what mamba-ssm's
    _chunk_state_bwd_db and _chunk_scan_bwd_dC compute from the states: → (dCB, ddA, dx, ddt, dD, dB, dC), dB and dC
    (b, T, g, N) in the compute dtype, the states' parts of B's and C's gradients, and ddA then the whole gradient
    of the log-decay increments that _chunk_cumsum_bwd takes (within-chunk, the state passed on, the state read).
    launch: LAUNCH["dx"], or LAUNCH["chunk"] with the states, by default."""
    _check("chunk_bwd", x, dt, dA_cumsum, dout, CB, dot_dtype, launch, B, dstates, D, dx, C, states_in,
           ddA_chunk_end)
    return _launch(x, dt, dA_cumsum, dout, CB, dot_dtype, launch, B, dstates, D, dx, C, states_in, ddA_chunk_end)


def _chunked(v: torch.Tensor, chunks: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(b, T, k, d) -> (b, chunks, L, k, d) in `dtype`, zero past the sequence's end."""
    pad = chunks * size - v.shape[1]
    return torch.nn.functional.pad(v.to(dtype), (0, 0, 0, 0, 0, pad)).view(v.shape[0], chunks, size, v.shape[2], -1)


def _decay(cs: torch.Tensor) -> torch.Tensor:
    """exp(min(cs_i - cs_j, 0)) for j <= i, else 0: (b, h, c, L, L) from cs (b, h, c, L)."""
    pos = torch.arange(cs.shape[-1], device=cs.device)
    return torch.exp((cs[..., :, None] - cs[..., None, :]).clamp(max=0)) * (pos[:, None] >= pos[None, :])


def _per_head(CB: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """C·B (b, c, g, L, L) repeated for each head of its group: (b, heads, c, L, L) in `dtype`."""
    return CB.to(dtype).permute(0, 2, 1, 3, 4).repeat_interleave(heads // CB.shape[2], dim=1)


def dcb_ddA_reference(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor,
                      CB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`dcb_ddA` in PyTorch, in the compute dtype, with the log-decays' gradient summed over its rectangle directly
    (ddA[k] = sum_{i>=k>j} M[i, j], as mamba-ssm's stable kernel sums it) rather than by row and column sums."""
    acc = compute_dtype(x)
    b, _, h, _ = x.shape
    _, _, chunks, size = dt.shape
    g = CB.shape[2]
    xs, dys = (_chunked(v, chunks, size, acc) for v in (x, dout))  # (b, c, L, h, p)
    gm = torch.einsum("bcihp,bcjhp->bhcij", dys, xs)  # (b, h, c, L, L): dy_i · x_j
    gm = gm * dt.to(acc)[..., None, :] * _decay(dA_cumsum.to(acc))
    pos = torch.arange(size, device=x.device)
    m = gm * _per_head(CB, h, acc) * (pos[:, None] > pos[None, :])
    # rectangle sums: ddA[k] = sum over i >= k, j < k of M[i, j]
    rect = (pos[None, :, None] >= pos[:, None, None]) & (pos[None, None, :] < pos[:, None, None])  # (k, i, j)
    dda = torch.einsum("bhcij,kij->bhck", m, rect.to(acc))
    dcb = gm.view(b, g, h // g, chunks, size, size).sum(2).permute(0, 2, 1, 3, 4)  # (b, c, g, L, L)
    return dcb.contiguous(), dda.contiguous()


def chunk_bwd_reference(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor,
                        CB: torch.Tensor, B: torch.Tensor, dstates: torch.Tensor, D: torch.Tensor,
                        C: torch.Tensor | None = None, states_in: torch.Tensor | None = None,
                        ddA_chunk_end: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """`chunk_bwd` in PyTorch, in the compute dtype: (dCB, ddA) of dcb_ddA_reference, then dx, ddt, dD from
        acc[j] = sum_{i>=j} CB[i, j] exp(cs_i - cs_j) dy_i + exp(cs_last - cs_j) dstates B_j      (P,) per position j
        dx_j = acc[j] dt_j + D dy_j,   ddt_j = acc[j] · x_j,   dD = sum over positions of dy_j · x_j
    (dx in x's dtype, ddt in the compute dtype, dD in D's). With C, states_in, ddA_chunk_end also dB and dC, and
    ddA the whole increments' gradient (module docstring, `chunk_bwd`)."""
    # the dx part is golf.ssd_xy_kernel's twin (imported here: that module imports this one's helpers)
    from golf.ssd_xy_kernel import chunk_dx_reference

    acc_t = compute_dtype(x)
    dcb, dda = dcb_ddA_reference(x, dt, dA_cumsum, dout, CB)
    out = (dcb, dda, *chunk_dx_reference(x, dt, dA_cumsum, B, CB, dout, dstates, D))
    if C is None:
        return out
    b, t, h = x.shape[:3]
    _, _, chunks, size = dt.shape
    g = B.shape[2]
    xs, dys = (_chunked(v, chunks, size, acc_t) for v in (x, dout))  # (b, c, L, h, p)
    bs = _chunked(B, chunks, size, acc_t).repeat_interleave(h // g, dim=3)  # (b, c, L, h, n)
    cs = dA_cumsum.to(acc_t)  # (b, h, c, L)
    scale = torch.exp((cs[..., -1:] - cs).clamp(max=0))  # (b, h, c, L)
    # the state passed on: dB_j = sum over the group's heads of exp(cs_last - cs_j) dt_j dstates^T x_j
    db_h = torch.einsum("bhcj,bcjhp,bchpn->bcjhn", scale * dt.to(acc_t), xs, dstates.to(acc_t))  # (b, c, L, h, n)
    s_next = (db_h * bs).sum(-1).permute(0, 3, 1, 2)  # (b, h, c, L)
    dda = dda + torch.cumsum(s_next, -1) - s_next  # each increment after j
    # the state read: dC_i = sum over the group's heads of exp(cs_i) states_in^T dy_i
    cs_ = _chunked(C, chunks, size, acc_t).repeat_interleave(h // g, dim=3)  # (b, c, L, h, n)
    dc_h = torch.einsum("bhci,bcihp,bchpn->bcihn", torch.exp(cs), dys, states_in.to(acc_t))
    q = (dc_h * cs_).sum(-1).permute(0, 3, 1, 2)  # (b, h, c, L): the gradient w.r.t. cs_i
    q[..., -1] += ddA_chunk_end.to(acc_t)
    dda = dda + q.flip(-1).cumsum(-1).flip(-1)  # each increment <= i

    def per_group(v):  # (b, c, L, h, n) -> (b, T, g, n)
        return v.reshape(b, chunks, size, g, h // g, -1).sum(4).reshape(b, chunks * size, g, -1)[:, :t].contiguous()

    return (dcb, dda.contiguous(), *out[2:], per_group(db_h), per_group(dc_h))
