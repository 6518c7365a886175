"""golf's Triton kernels for the two chunk-parallel steps of the Mamba-2 SSD scan that read x or dy per head and
chunk: the chunk output y from x (mamba-ssm's _chunk_scan_fwd) and its input gradient dx from dy (mamba-ssm's
_chunk_scan_chunk_state_bwd_dx). In hybrid_12_b131k's step on an H200 those two take 3.3 and 4.2 ms of the SSD
scan's 18.6 for nine layers (bench/RESULTS.md sixteenth block): 0.37 and 0.47 ms a call, where reading and writing
their tensors once takes about 0.16 and 0.19 ms at 4 TB/s. mamba-ssm's kernels are written for any chunk size and
head size: they tile the chunk's rows and the head dimension, loop over the chunk in blocks, and add their ddt and
dD partial sums with atomics into zero-filled buffers. At the shapes golf trains (chunk 64, head size 64, state 32)
a whole chunk of one head fits one program, so each program here loads its tiles once, makes two dots, and
stores every output it owns outright (no atomics, no zero fills). model.ssm_scan "mamba_keep_xy" calls them from
golf.mixer_op (the kept-internals SSD with golf's chunk-backward kernel, golf/ssd_dcb_kernel.py).

What they compute, per batch b, chunk c and head h of group g (positions i, j < L of the chunk; x, dy: the chunk's
(L, P) rows of head h; dt the softplus'ed dt, cs the running log-decay within the chunk, cs_last = cs[L - 1]; CB[g]
the chunk's C_i·B_j; S (P, N) the state entering the chunk, dS (P, N) the gradient of the state leaving it; B, C
(L, N) the group's rows):
    chunk_y:   y_i  = sum_{j<=i} CB[i, j] exp(min(cs_i - cs_j, 0)) dt_j x_j + exp(cs_i) S C_i + D_h x_i
    chunk_dx:  acc_j = sum_{i>=j} CB[i, j] exp(min(cs_i - cs_j, 0)) dy_i + exp(min(cs_last - cs_j, 0)) dS B_j
               dx_j = acc_j dt_j + D_h dy_j,   ddt_j = acc_j · x_j,   dD_h = sum over every chunk of dy_j · x_j
The clamp at 0 is mamba-ssm's: it only matters where the causal mask then drops the entry. As in mamba-ssm the
decay-weighted C·B tile is rounded to the dot dtype (x's: bf16 in training) before its dot, S and dS are cast to it
as they load, and the products accumulate in the compute dtype (fp32; fp64 for fp64 inputs, which the tests use).
A ragged last chunk: rows past the sequence's end load as zero and are not stored (ddt stores zeros there).

Layout: one program per (head, chunk, batch), heads fastest in the grid, so the heads of one chunk, which read the
same C·B tile and B or C rows, run side by side and find them in L2. LAUNCH holds each kernel's warps, the fastest
of bench/ssd_xy_bench.py's sweep on an H200 (bench/RESULTS.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import (
    TL_DTYPES,
    check_chunk_layout,
    check_dtypes_and_device,
    check_maxnreg,
    check_num_warps,
    check_runs_here,
    maxnreg_option,
)
from golf.ssd_dcb_kernel import _chunked, _decay, _per_head
from golf.ssm import compute_dtype

# warps a program, by kernel; MAXNREG: the register cap a thread (ptxas's .maxnreg), None for the compiler's choice.
# An SM's 65,536 registers hold four 4-warp programs at <= 128 a thread, three at <= 168: the dx kernel compiles to
# 128 (offline for sm_90a with Triton 3.9, bench/RESULTS.md 2026-12-02 CPU block), at that edge, which a cap holds
# whatever the compiler version. On an H200 (bench/ssd_xy_bench.py --sweep, RESULTS twenty-third block) dx at 128
# takes 0.294 ms a call against 0.311 uncapped; y's caps moved it by less than the runs differ (0.209-0.218).
LAUNCH = {"y": 4, "dx": 4}
MAXNREG: dict[str, int | None] = {"y": None, "dx": 128}


@triton.jit
def _chunk_y_kernel(cb_ptr, x_ptr, dt_ptr, cs_ptr, c_ptr, st_ptr, D_ptr, y_ptr, T, heads_per_group,
                    scb_b, scb_c, scb_g, scb_i, scb_j, sx_b, sx_t, sx_h, sx_p,
                    sdt_b, sdt_h, sdt_c, sdt_l, scs_b, scs_h, scs_c, scs_l, sc_b, sc_t, sc_g, sc_n,
                    sst_b, sst_c, sst_h, sst_p, sst_n, sy_b, sy_t, sy_h, sy_p,
                    L: tl.constexpr, P: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr, ACC: tl.constexpr,
                    DOT: tl.constexpr):
    h = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    g = h // heads_per_group
    i = tl.arange(0, BLOCK_L)  # (BL,): positions in the chunk, rows
    j = tl.arange(0, BLOCK_L)  # (BL,): the same, columns
    p = tl.arange(0, BLOCK_P)  # (BP,)
    n = tl.arange(0, BLOCK_N)  # (BN,)
    t0 = c * L
    valid = tl.minimum(L, T - t0)  # rows of this chunk inside the sequence
    in_i = i < valid
    in_j = j < valid
    rows = (t0 + i).to(tl.int64)  # (BL,): b * T * row stride can pass 2^31
    at = b * scs_b + h * scs_h + c * scs_c
    cs_i = tl.load(cs_ptr + at + i * scs_l, mask=in_i, other=0.0).to(ACC)  # (BL,)
    cs_j = tl.load(cs_ptr + at + j * scs_l, mask=in_j, other=0.0).to(ACC)
    dt_j = tl.load(dt_ptr + b * sdt_b + h * sdt_h + c * sdt_c + j * sdt_l, mask=in_j, other=0.0).to(ACC)
    cb = tl.load(cb_ptr + b * scb_b + c * scb_c + g * scb_g + i[:, None] * scb_i + j[None, :] * scb_j,
                 mask=in_i[:, None] & in_j[None, :], other=0.0).to(ACC)  # (BL, BL)
    decay = tl.exp(tl.minimum(cs_i[:, None] - cs_j[None, :], 0.0))
    w = tl.where(i[:, None] >= j[None, :], cb * decay * dt_j[None, :], 0.0)  # (BL, BL)
    row_mask = in_i[:, None] & (p < P)[None, :]  # (BL, BP)
    x = tl.load(x_ptr + b * sx_b + rows[:, None] * sx_t + h * sx_h + p[None, :] * sx_p, mask=row_mask,
                other=0.0)  # (BL, BP)
    y = tl.dot(w.to(DOT), x.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BP): the within-chunk part
    cg = tl.load(c_ptr + b * sc_b + rows[:, None] * sc_t + g * sc_g + n[None, :] * sc_n,
                 mask=in_i[:, None] & (n < N)[None, :], other=0.0)  # (BL, BN): the group's C rows
    st = tl.load(st_ptr + b * sst_b + c * sst_c + h * sst_h + n[:, None] * sst_n + p[None, :] * sst_p,
                 mask=(n < N)[:, None] & (p < P)[None, :], other=0.0)  # (BN, BP): the state entering, transposed
    y_in = tl.dot(cg.to(DOT), st.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BP)
    y += tl.exp(cs_i)[:, None] * y_in
    if HAS_D:
        y += tl.load(D_ptr + h).to(ACC) * x.to(ACC)
    tl.store(y_ptr + b * sy_b + rows[:, None] * sy_t + h * sy_h + p[None, :] * sy_p,
             y.to(y_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _chunk_dx_kernel(x_ptr, dy_ptr, dt_ptr, cs_ptr, cb_ptr, b_ptr, ds_ptr, D_ptr, dx_ptr, ddt_ptr, dD_ptr,
                     T, heads_per_group,
                     sx_b, sx_t, sx_h, sx_p, sy_b, sy_t, sy_h, sy_p, sdt_b, sdt_h, sdt_c, sdt_l,
                     scs_b, scs_h, scs_c, scs_l, scb_b, scb_c, scb_g, scb_i, scb_j, sb_b, sb_t, sb_g, sb_n,
                     sds_b, sds_c, sds_h, sds_p, sds_n, sdx_b, sdx_t, sdx_h, sdx_p,
                     sa_b, sa_h, sa_c, sa_l, sdD_b, sdD_c, sdD_h,
                     L: tl.constexpr, P: tl.constexpr, N: tl.constexpr, BLOCK_L: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr, ACC: tl.constexpr,
                     DOT: tl.constexpr):
    h = tl.program_id(0)
    c = tl.program_id(1)
    b = tl.program_id(2)
    g = h // heads_per_group
    j = tl.arange(0, BLOCK_L)  # (BL,): the positions whose gradient this is, rows
    i = tl.arange(0, BLOCK_L)  # (BL,): the positions that read them, columns
    p = tl.arange(0, BLOCK_P)  # (BP,)
    n = tl.arange(0, BLOCK_N)  # (BN,)
    t0 = c * L
    valid = tl.minimum(L, T - t0)
    in_j = j < valid
    in_i = i < valid
    rows = (t0 + j).to(tl.int64)  # (BL,)
    at = b * scs_b + h * scs_h + c * scs_c
    cs_j = tl.load(cs_ptr + at + j * scs_l, mask=in_j, other=0.0).to(ACC)  # (BL,)
    cs_i = tl.load(cs_ptr + at + i * scs_l, mask=in_i, other=0.0).to(ACC)
    cs_last = tl.load(cs_ptr + at + (L - 1) * scs_l).to(ACC)  # the chunk's whole log-decay, as the state passing
    # wT[j, i] = CB[i, j] exp(min(cs_i - cs_j, 0)) for i >= j: C·B's tile read transposed
    cbt = tl.load(cb_ptr + b * scb_b + c * scb_c + g * scb_g + i[None, :] * scb_i + j[:, None] * scb_j,
                  mask=in_j[:, None] & in_i[None, :], other=0.0).to(ACC)  # (BL, BL)
    decay = tl.exp(tl.minimum(cs_i[None, :] - cs_j[:, None], 0.0))
    wt = tl.where(i[None, :] >= j[:, None], cbt * decay, 0.0)  # (BL, BL)
    row_mask = in_j[:, None] & (p < P)[None, :]  # (BL, BP): rows are positions either way
    dy = tl.load(dy_ptr + b * sy_b + rows[:, None] * sy_t + h * sy_h + p[None, :] * sy_p, mask=row_mask,
                 other=0.0)  # (BL, BP)
    acc = tl.dot(wt.to(DOT), dy.to(DOT), out_dtype=ACC, input_precision="ieee")  # (BL, BP)
    bg = tl.load(b_ptr + b * sb_b + rows[:, None] * sb_t + g * sb_g + n[None, :] * sb_n,
                 mask=in_j[:, None] & (n < N)[None, :], other=0.0)  # (BL, BN): the group's B rows
    ds = tl.load(ds_ptr + b * sds_b + c * sds_c + h * sds_h + n[:, None] * sds_n + p[None, :] * sds_p,
                 mask=(n < N)[:, None] & (p < P)[None, :], other=0.0)  # (BN, BP): dS transposed
    scale = tl.exp(tl.minimum(cs_last - cs_j, 0.0))  # (BL,)
    acc += scale[:, None] * tl.dot(bg.to(DOT), ds.to(DOT), out_dtype=ACC, input_precision="ieee")
    dt_j = tl.load(dt_ptr + b * sdt_b + h * sdt_h + c * sdt_c + j * sdt_l, mask=in_j, other=0.0).to(ACC)
    dyf = dy.to(ACC)
    dx = acc * dt_j[:, None]
    if HAS_D:
        dx += tl.load(D_ptr + h).to(ACC) * dyf
    tl.store(dx_ptr + b * sdx_b + rows[:, None] * sdx_t + h * sdx_h + p[None, :] * sdx_p,
             dx.to(dx_ptr.dtype.element_ty), mask=row_mask)
    x = tl.load(x_ptr + b * sx_b + rows[:, None] * sx_t + h * sx_h + p[None, :] * sx_p, mask=row_mask,
                other=0.0).to(ACC)  # (BL, BP)
    tl.store(ddt_ptr + b * sa_b + h * sa_h + c * sa_c + j * sa_l, tl.sum(acc * x, axis=1), mask=j < L)
    if HAS_D:
        tl.store(dD_ptr + b * sdD_b + c * sdD_c + h * sdD_h, tl.sum(tl.sum(dyf * x, axis=1), axis=0))


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_chunk_y_kernel, InterpretedFunction)


def _check(op: str, x, dt, dA_cumsum, CB, BC, states, states_name, D, dot_dtype, num_warps, maxnreg, dout=None,
           dx=None) -> None:
    """One ValueError line, prefixed `op`, for the first input that is not what the kernels take (BC: C for
    chunk_y, B for chunk_dx; states: the states entering the chunks, or the gradients of those leaving them)."""
    b, t, h, p, chunks, g = check_chunk_layout(op, x, dt, CB)
    bc_name = "C" if states_name == "states" else "B"
    if states.dim() != 5 or states.shape[:4] != (b, chunks, h, p):
        raise ValueError(f"{op}: {states_name} must be (batch, chunks, nheads, headdim, dstate) = ({b}, {chunks}, "
                         f"{h}, {p}, n), got {tuple(states.shape)}")
    n = states.shape[-1]  # the state's size, which B's or C's rows must match
    shapes = [("dA_cumsum", dA_cumsum, tuple(dt.shape)), (bc_name, BC, (b, t, g, n)), ("D", D, (h,)),
              ("dout", dout, tuple(x.shape)), ("dx", dx, tuple(x.shape))]
    for name, tensor, shape in shapes:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    check_dtypes_and_device(op, x, (("x", x), ("dt", dt), ("dA_cumsum", dA_cumsum), ("CB", CB), (bc_name, BC),
                                    (states_name, states), ("D", D), ("dout", dout), ("dx", dx)))
    for name, tensor in (("dout", dout), ("dx", dx)):
        if tensor is not None and tensor.dtype != x.dtype:
            raise ValueError(f"{op}: {name} must have x's dtype {x.dtype}, got {tensor.dtype}")
    if dot_dtype is not None and dot_dtype not in TL_DTYPES:
        raise ValueError(f"{op}: dot_dtype must be None or one of {list(TL_DTYPES)}, got {dot_dtype}")
    check_num_warps(op, num_warps)
    check_maxnreg(op, maxnreg)
    check_runs_here(op, x, interpreted())


def _launch(kernel: str, num_warps: int | None, maxnreg: int | None) -> dict:
    """The launch options: num_warps (None: LAUNCH's), maxnreg (None: MAXNREG's; 0: no cap)."""
    return {"num_warps": num_warps or LAUNCH[kernel], **maxnreg_option(maxnreg, MAXNREG[kernel])}


def _consts(x: torch.Tensor, size: int, n: int, D, dot_dtype) -> dict:
    """The constexprs both kernels take."""
    acc = compute_dtype(x)
    dot = dot_dtype or (x.dtype if x.dtype in (torch.bfloat16, torch.float16) else acc)
    return {"L": size, "P": x.shape[-1], "N": n, "BLOCK_L": max(16, triton.next_power_of_2(size)),
            "BLOCK_P": max(16, triton.next_power_of_2(x.shape[-1])), "BLOCK_N": max(16, triton.next_power_of_2(n)),
            "HAS_D": D is not None, "ACC": TL_DTYPES[acc], "DOT": TL_DTYPES[dot]}


def chunk_y(CB: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, C: torch.Tensor,
            states: torch.Tensor, D: torch.Tensor | None = None, dot_dtype: torch.dtype | None = None,
            num_warps: int | None = None, maxnreg: int | None = None) -> torch.Tensor:
    """y (b, T, h, P) in x's dtype, what mamba-ssm's _chunk_scan_fwd(CB, x, dt, dA_cumsum, C, states, D=D) returns
    first, without z: CB (b, chunks, g, L, L), x (b, T, h, P), dt (softplus'ed) and dA_cumsum (b, h, chunks, L), C
    (b, T, g, N), states (b, chunks, h, P, N) the state entering each chunk, D (h,) or None (module docstring).
    dot_dtype: tl.dot's operand dtype, by default x's for 16-bit x, else the compute dtype. num_warps:
    LAUNCH["y"] by default; maxnreg: the register cap a thread, MAXNREG["y"] by default, 0 for none."""
    _check("chunk_y", x, dt, dA_cumsum, CB, C, states, "states", D, dot_dtype, num_warps, maxnreg)
    b, t, h, _ = x.shape
    _, _, chunks, size = dt.shape
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    if y.numel():
        D_ = D.contiguous() if D is not None else dt  # the kernel reads D[h] at stride 1, never when D is None
        _chunk_y_kernel[(h, chunks, b)](
            CB, x, dt, dA_cumsum, C, states, D_, y, t, h // CB.shape[2],
            *CB.stride(), *x.stride(), *dt.stride(), *dA_cumsum.stride(), *C.stride(), *states.stride(),
            *y.stride(), **_consts(x, size, C.shape[-1], D, dot_dtype), **_launch("y", num_warps, maxnreg))
    return y


def chunk_dx(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, B: torch.Tensor, CB: torch.Tensor,
             dout: torch.Tensor, dstates: torch.Tensor, D: torch.Tensor | None = None,
             dx: torch.Tensor | None = None, dot_dtype: torch.dtype | None = None,
             num_warps: int | None = None, maxnreg: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dx, ddt, dD), what mamba-ssm's _chunk_scan_chunk_state_bwd_dx(x, dt, dA_cumsum, B, CB, dout, dstates, D=D,
    dx=dx) returns: B (b, T, g, N) as the forward read it, dstates (b, chunks, h, P, N) the gradient of the state
    leaving each chunk. dx (x's shape and dtype) is written in place when given; ddt (b, h, chunks, L) in the
    compute dtype is dt's gradient as a factor (the log-decays' share is not in it); dD (h,) in D's dtype, None
    without D (module docstring). dot_dtype as chunk_y's; num_warps LAUNCH["dx"] and maxnreg MAXNREG["dx"] by
    default (maxnreg 0: no cap)."""
    _check("chunk_dx", x, dt, dA_cumsum, CB, B, dstates, "dstates", D, dot_dtype, num_warps, maxnreg, dout, dx)
    b, t, h, _ = x.shape
    _, _, chunks, size = dt.shape
    acc = compute_dtype(x)
    dx = torch.empty_like(x) if dx is None else dx
    ddt = torch.empty(b, h, chunks, size, dtype=acc, device=x.device)
    dD = torch.empty(b, chunks, h, dtype=acc, device=x.device)  # per-chunk partial sums
    if dx.numel():
        D_ = D.contiguous() if D is not None else dt
        _chunk_dx_kernel[(h, chunks, b)](
            x, dout, dt, dA_cumsum, CB, B, dstates, D_, dx, ddt, dD, t, h // CB.shape[2],
            *x.stride(), *dout.stride(), *dt.stride(), *dA_cumsum.stride(), *CB.stride(), *B.stride(),
            *dstates.stride(), *dx.stride(), *ddt.stride(), *dD.stride(),
            **_consts(x, size, B.shape[-1], D, dot_dtype), **_launch("dx", num_warps, maxnreg))
    else:
        ddt.zero_()
        dD.zero_()
    return dx, ddt, dD.sum((0, 1)).to(D.dtype) if D is not None else None


def chunk_y_reference(CB: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, C: torch.Tensor,
                      states: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """`chunk_y` in PyTorch, in the compute dtype, y returned in x's dtype."""
    acc = compute_dtype(x)
    b, t, h, p = x.shape
    _, _, chunks, size = dt.shape
    g = C.shape[2]
    xs = _chunked(x, chunks, size, acc)  # (b, c, L, h, p)
    cs = dA_cumsum.to(acc)  # (b, h, c, L)
    w = _per_head(CB, h, acc) * _decay(cs) * dt.to(acc)[..., None, :]  # (b, h, c, L_i, L_j)
    y = torch.einsum("bhcij,bcjhp->bcihp", w, xs)
    cg = _chunked(C, chunks, size, acc).repeat_interleave(h // g, dim=3)  # (b, c, L, h, n)
    y = y + torch.einsum("bhci,bcihn,bchpn->bcihp", torch.exp(cs), cg, states.to(acc))
    if D is not None:
        y = y + D.to(acc)[:, None] * xs
    return y.reshape(b, chunks * size, h, p)[:, :t].to(x.dtype).contiguous()


def chunk_dx_reference(x: torch.Tensor, dt: torch.Tensor, dA_cumsum: torch.Tensor, B: torch.Tensor,
                       CB: torch.Tensor, dout: torch.Tensor, dstates: torch.Tensor, D: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`chunk_dx` in PyTorch, in the compute dtype: (dx in x's dtype, ddt in the compute dtype, dD in D's)."""
    acc_t = compute_dtype(x)
    b, t, h, p = x.shape
    _, _, chunks, size = dt.shape
    g = B.shape[2]
    xs, dys = (_chunked(v, chunks, size, acc_t) for v in (x, dout))  # (b, c, L, h, p)
    bs = _chunked(B, chunks, size, acc_t).repeat_interleave(h // g, dim=3)  # (b, c, L, h, n)
    cs = dA_cumsum.to(acc_t)  # (b, h, c, L)
    w = _per_head(CB, h, acc_t) * _decay(cs)  # (b, h, c, L_i, L_j)
    acc = torch.einsum("bhcij,bcihp->bcjhp", w, dys)
    scale = torch.exp((cs[..., -1:] - cs).clamp(max=0))  # (b, h, c, L)
    acc = acc + torch.einsum("bhcj,bcjhn,bchpn->bcjhp", scale, bs, dstates.to(acc_t))
    dx = acc * dt.to(acc_t).permute(0, 2, 3, 1)[..., None]  # (b, c, L, h, p)
    dD = None
    if D is not None:
        dx = dx + D.to(acc_t)[:, None] * dys
        dD = (dys * xs).sum((0, 1, 2, 4)).to(D.dtype)
    ddt = (acc * xs).sum(-1).permute(0, 3, 1, 2)  # (b, h, c, L)
    dx = dx.reshape(b, chunks * size, h, p)[:, :t].to(x.dtype).contiguous()
    return dx, ddt.contiguous(), dD
