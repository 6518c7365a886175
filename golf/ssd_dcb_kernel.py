"""golf's Triton kernel for two pieces of the Mamba-2 SSD backward that mamba-ssm runs as two launches: the gradient
of each chunk's C·B matrix (mamba-ssm's _chunk_scan_bwd_dcb) and the within-chunk part of the log-decays' gradient
(its _chunk_scan_bwd_ddAcs_stable, the second-largest SSD kernel in hybrid_12_b131k's step: 2.8 ms of 19.3 for nine
layers on an H200, bench/RESULTS.md twelfth block). Both start from the same (L × L) product of the output's
gradient with x, per head and chunk, so one program computes it once and derives both. model.ssm_scan
"mamba_keep_dA" calls `dcb_ddA` in place of the two (golf.mixer_op._scan_bwd_keep); `dcb_ddA_reference` is its
PyTorch twin.

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

Layout: one program per (batch, chunk, group) walking the group's heads (mamba-ssm's _chunk_scan_bwd_dcb makes the
same choice at these shapes: every head of a group in one program), the (L × L) C·B tile loaded once. Outputs
dCB (b, chunks, g, L, L) and ddA (b, h, chunks, L) in the compute dtype (fp32, fp64 for fp64 inputs), the shapes
and order mamba-ssm's two functions return. tl.dot's operands are in x's dtype (bf16 at the production shapes;
fp32 operands are not rounded to TF32), its products in the compute dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_runs_here
from golf.ssm import compute_dtype

OP = "dcb_ddA"
NUM_WARPS = 4


@triton.jit
def _dcb_ddA_kernel(x_ptr, dy_ptr, dt_ptr, cs_ptr, cb_ptr, dcb_ptr, dda_ptr,
                    T, chunks, heads_per_group,
                    sx_b, sx_t, sx_h, sx_p, sy_b, sy_t, sy_h, sy_p,
                    sdt_b, sdt_h, sdt_c, sdt_l, scs_b, scs_h, scs_c, scs_l,
                    scb_b, scb_c, scb_g, scb_i, scb_j, sd_b, sd_c, sd_g, sd_i, sd_j,
                    sa_b, sa_h, sa_c, sa_l,
                    L: tl.constexpr, P: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr,
                    ACC: tl.constexpr, DOT: tl.constexpr):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = pid // chunks
    c = pid - b * chunks
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
    cb = tl.load(cb_ptr + b * scb_b + c * scb_c + g * scb_g + i[:, None] * scb_i + j[None, :] * scb_j,
                 mask=tile, other=0.0).to(ACC)  # (BL, BL)
    dcb = tl.zeros((BLOCK_L, BLOCK_L), dtype=ACC)
    for hh in range(heads_per_group):
        h = g * heads_per_group + hh
        row_mask = (i < valid)[:, None] & (p < P)[None, :]  # (BL, BP)
        dy = tl.load(dy_ptr + b * sy_b + rows[:, None] * sy_t + h * sy_h + p[None, :] * sy_p,
                     mask=row_mask, other=0.0)  # (BL, BP)
        xt = tl.load(x_ptr + b * sx_b + rows[None, :] * sx_t + h * sx_h + p[:, None] * sx_p,
                     mask=(p < P)[:, None] & (j < valid)[None, :], other=0.0)  # (BP, BL): x's rows as columns
        gm = tl.dot(dy.to(DOT), xt.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BL): dy_i · x_j
        dt = tl.load(dt_ptr + b * sdt_b + h * sdt_h + c * sdt_c + j * sdt_l, mask=j < L, other=0.0).to(ACC)
        cs_i = tl.load(cs_ptr + b * scs_b + h * scs_h + c * scs_c + i * scs_l, mask=in_l, other=0.0).to(ACC)
        cs_j = tl.load(cs_ptr + b * scs_b + h * scs_h + c * scs_c + j * scs_l, mask=j < L, other=0.0).to(ACC)
        gm = gm * dt[None, :] * tl.exp(tl.minimum(cs_i[:, None] - cs_j[None, :], 0.0))
        gm = tl.where(lower, gm, 0.0)
        dcb += gm
        m = tl.where(strict, gm * cb, 0.0)  # (BL, BL)
        diff = tl.sum(m, axis=1) - tl.sum(m, axis=0)  # (BL,): row_i - col_i
        dda = tl.cumsum(diff, axis=0, reverse=True)  # (BL,): sum over positions >= k
        dda = tl.where(i == 0, 0.0, dda)
        tl.store(dda_ptr + b * sa_b + h * sa_h + c * sa_c + i * sa_l, dda.to(dda_ptr.dtype.element_ty), mask=in_l)
    tl.store(dcb_ptr + b * sd_b + c * sd_c + g * sd_g + i[:, None] * sd_i + j[None, :] * sd_j,
             dcb.to(dcb_ptr.dtype.element_ty), mask=tile)


def interpreted() -> bool:
    """Whether this module's kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_dcb_ddA_kernel, InterpretedFunction)


def _check(x, dt, dA_cumsum, dy, CB) -> None:
    """One ValueError line for the first input that is not what the kernel takes."""
    if x.dim() != 4:
        raise ValueError(f"{OP}: x must be (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
    b, t, h, _ = x.shape
    if dt.dim() != 4 or dt.shape[:2] != (b, h):
        raise ValueError(f"{OP}: dt must be (batch, nheads, chunks, chunk_size) = ({b}, {h}, c, L), "
                         f"got {tuple(dt.shape)}")
    chunks, size = dt.shape[2], dt.shape[3]
    if chunks != -(-t // size):
        raise ValueError(f"{OP}: dt has {chunks} chunks of {size} but seqlen {t} needs {-(-t // size)}")
    if CB.dim() != 5 or CB.shape[:2] != (b, chunks) or CB.shape[3:] != (size, size) or h % CB.shape[2]:
        raise ValueError(f"{OP}: CB must be (batch, chunks, ngroups, L, L) = ({b}, {chunks}, g, {size}, {size}) "
                         f"with nheads {h} divisible by g, got {tuple(CB.shape)}")
    for name, tensor, shape in (("dA_cumsum", dA_cumsum, tuple(dt.shape)), ("dout", dy, tuple(x.shape))):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{OP}: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    check_dtypes_and_device(OP, x, (("x", x), ("dt", dt), ("dA_cumsum", dA_cumsum), ("dout", dy), ("CB", CB)))
    if dy.dtype != x.dtype:
        raise ValueError(f"{OP}: dout must have x's dtype {x.dtype}, got {dy.dtype}")
    check_runs_here(OP, x, interpreted())


def dcb_ddA(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor,
            CB: torch.Tensor, dot_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dCB (b, chunks, g, L, L), ddA (b, h, chunks, L)), both in the compute dtype, for x, dout (b, T, h, P), dt and
    dA_cumsum (b, h, chunks, L) and CB (b, chunks, g, L, L) as mamba-ssm's SSD forward makes them: what
    mamba-ssm's _chunk_scan_bwd_dcb(x, dt, dA_cumsum, dout, ngroups=g) and _chunk_scan_bwd_ddAcs_stable(x, dt,
    dA_cumsum, dout, CB) return, in one launch (module docstring). dot_dtype: tl.dot's operand dtype, by default
    x's for 16-bit x, else the compute dtype (the tests pass fp32 for bf16 x in Triton's interpreter, which
    miscomputes bf16 dots; bf16 values are exact in fp32)."""
    _check(x, dt, dA_cumsum, dout, CB)
    if dot_dtype is not None and dot_dtype not in TL_DTYPES:
        raise ValueError(f"{OP}: dot_dtype must be None or one of {list(TL_DTYPES)}, got {dot_dtype}")
    b, t, h, p = x.shape
    _, _, chunks, size = dt.shape
    g = CB.shape[2]
    acc = compute_dtype(x)
    dcb = torch.empty(b, chunks, g, size, size, dtype=acc, device=x.device)
    dda = torch.empty(b, h, chunks, size, dtype=acc, device=x.device)
    if dcb.numel() == 0 or h == 0:
        return dcb.zero_(), dda.zero_()
    dot = dot_dtype or (x.dtype if x.dtype in (torch.bfloat16, torch.float16) else acc)
    _dcb_ddA_kernel[(b * chunks, g)](
        x, dout, dt, dA_cumsum, CB, dcb, dda, t, chunks, h // g,
        *x.stride(), *dout.stride(), *dt.stride(), *dA_cumsum.stride(), *CB.stride(), *dcb.stride(), *dda.stride(),
        L=size, P=p, BLOCK_L=max(16, triton.next_power_of_2(size)), BLOCK_P=max(16, triton.next_power_of_2(p)),
        ACC=TL_DTYPES[acc], DOT=TL_DTYPES[dot], num_warps=NUM_WARPS)
    return dcb, dda


def dcb_ddA_reference(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, dout: torch.Tensor,
                      CB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`dcb_ddA` in PyTorch, in the compute dtype, with the log-decays' gradient summed over its rectangle directly
    (ddA[k] = sum_{i>=k>j} M[i, j], as mamba-ssm's stable kernel sums it) rather than by row and column sums."""
    acc = compute_dtype(x)
    b, t, h, p = x.shape
    _, _, chunks, size = dt.shape
    g = CB.shape[2]
    pad = chunks * size - t
    xs, dys = (torch.nn.functional.pad(v.to(acc), (0, 0, 0, 0, 0, pad)).view(b, chunks, size, h, p)
               for v in (x, dout))
    gm = torch.einsum("bcihp,bcjhp->bhcij", dys, xs)  # (b, h, c, L, L): dy_i · x_j
    cs = dA_cumsum.to(acc)
    gm = gm * dt.to(acc)[..., None, :] * torch.exp((cs[..., :, None] - cs[..., None, :]).clamp(max=0))
    pos = torch.arange(size, device=x.device)
    gm = gm * (pos[:, None] >= pos[None, :])
    cb = CB.to(acc).permute(0, 2, 1, 3, 4).repeat_interleave(h // g, dim=1)  # (b, h, c, L, L)
    m = gm * cb * (pos[:, None] > pos[None, :])
    # rectangle sums: ddA[k] = sum over i >= k, j < k of M[i, j]
    rect = (pos[None, :, None] >= pos[:, None, None]) & (pos[None, None, :] < pos[:, None, None])  # (k, i, j)
    dda = torch.einsum("bhcij,kij->bhck", m, rect.to(acc))
    dcb = gm.view(b, g, h // g, chunks, size, size).sum(2).permute(0, 2, 1, 3, 4)  # (b, c, g, L, L)
    return dcb.contiguous(), dda.contiguous()
