"""golf's Triton kernel for the last step of the Mamba-2 SSD backward: from the log-decays' gradient pieces to the
gradients of the raw dt, A and dt_bias. golf.mixer_op._scan_bwd_keep ends with this glue (mamba-ssm 2.3.2.post1):

    ddA_prev[..., -1].add_(ddA_chunk_end)
    ddA += ddA_next + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    _, dA, ddt_bias = _chunk_cumsum_bwd(ddA, ddt_sp, dt, A, dt_bias=dt_bias, dt_softplus=True, ddt=ddt)

about seven small launches a layer on an H200 (the flips, the cumsum, the adds, the memset of the atomics' targets,
and _chunk_cumsum_bwd with its atomics, 35 us alone: ~80 us a layer). `dt_grads` does all of it in one launch plus
one small sum; `dt_grads_reference` is its PyTorch twin.

What it computes (b batch, h head, c chunk, l < L the position in it, pos = c L + l < T the token; the compute dtype
is fp32, fp64 for fp64 dt, as golf.ssm.compute_dtype):
    total[b, h, c, l] = ddA + ddA_next + sum_{l' >= l} ddA_prev[b, h, c, l'] + ddA_chunk_end[b, h, c]
(the chunk end's gradient enters at l' = L - 1, so every position of the chunk gets it; the reverse sum runs over
the whole chunk, past a ragged end too, as the glue's flip/cumsum/flip does), and per token pos < T:
    v    = dt[b, pos, h] + dt_bias[h]
    dts  = softplus(v) where v <= 20 else v      (with dt_softplus; else dts = v)
    mask = dts < 0                               (mamba-ssm's clamp to dt_limit (0, inf); softplus never is)
    dts  = max(dts, 0)
    g    = total A[h] + ddt_sp                   (ddt_sp: the gradient of the softplus'ed dt from earlier kernels)
    ddt  = 0 where mask else g,   times sigmoid(v) where v <= 20 (with dt_softplus)
    ddt[b, pos, h] stored in dt's dtype;   dA[h] = sum_{b, pos} total dts;   ddt_bias[h] = sum_{b, pos} ddt
(ddt_bias sums the compute-dtype ddt before its rounding to dt's dtype, as mamba-ssm's kernel does). Tokens past a
ragged end are not stored and add nothing; ddA, ddA_next and ddt_sp are not read there (as _chunk_cumsum_bwd reads
ddA), ddA_prev is (the glue's reverse sum carries it to the chunk's earlier tokens).

Layout: one program per (block of chunks, batch), each chunk a (heads, L) tile of every head at once. dt and ddt
are (b, T, h) with the heads contiguous (in the model, column slices of rows ~1,600 wide): a program per head
would read and write 2 bytes of every 32-byte sector, a tile of all heads touches each token's heads as one
24-byte run, while ddA's four (b, h, c, L) inputs still load as 256-byte rows. The reverse cumsum is tl.cumsum
along the tile's L axis. No atomics: each program stores its per-head partial sums of dA and ddt_bias into a
(2, b, blocks, h) buffer (1 without dt_bias) and one torch sum reduces it, so the result is the same bits on every
run and needs no zeroed output. LAUNCH holds the warps a program and the chunks a program walks: short programs of
8 warps, one chunk each (2,048 at hybrid_12_b131k's shapes; 48 registers a thread in an offline compile for sm_90),
the fastest of bench/ssd_dt_bench.py --sweep's 2/4/8 warps x 1/2/4 chunks on an H200 (bench/RESULTS.md eighteenth
block): 0.033 ms a call, against 0.051 for the glue and _chunk_cumsum_bwd it replaces and a 0.008 floor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import TL_DTYPES, check_dtypes_and_device, check_num_warps, check_runs_here
from golf.ssd_kernel import _softplus
from golf.ssm import compute_dtype

# warps a program and chunks a program walks
LAUNCH = {"num_warps": 8, "chunks": 1}


@triton.jit
def _dt_grads_kernel(dda_ptr, nxt_ptr, prv_ptr, end_ptr, dsp_ptr, dt_ptr, A_ptr, bias_ptr, ddt_ptr, part_ptr,
                     T, H, C, sa_b, sa_h, sa_c, sa_l, sn_b, sn_h, sn_c, sn_l, sp_b, sp_h, sp_c, sp_l,
                     se_b, se_h, se_c, ss_b, ss_h, ss_c, ss_l, sdt_b, sdt_t, sdt_h, sA, sbias,
                     sg_b, sg_t, sg_h, sq_k, sq_b, sq_j,
                     L: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_L: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    j = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)  # b * the row stride of a wide dt can pass 2^31
    hh = tl.arange(0, BLOCK_H)  # (BH,): heads, rows of the tile
    ll = tl.arange(0, BLOCK_L)  # (BL,): positions in the chunk, columns
    in_h = hh < H
    A = tl.load(A_ptr + hh * sA, mask=in_h, other=0.0).to(ACC)  # (BH,)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + hh * sbias, mask=in_h, other=0.0).to(ACC)
    else:
        bias = tl.zeros((BLOCK_H,), dtype=ACC)
    dA_acc = tl.zeros((BLOCK_H,), dtype=ACC)
    db_acc = tl.zeros((BLOCK_H,), dtype=ACC)
    for k in tl.static_range(CHUNKS):  # unrolled: every chunk's loads can be in flight at once
        c = j * CHUNKS + k
        # (BH, BL): the chunk's whole (h, L) block, empty past the last chunk (limits as vectors: the interpreter
        # cannot & a scalar condition onto a tensor)
        tile = in_h[:, None] & (ll < tl.minimum(L, (C - c) * L))[None, :]
        in_hc = in_h & (hh < (C - c) * BLOCK_H)  # (BH,)
        pos = (c * L + ll).to(tl.int64)  # (BL,): tokens
        valid = tile & (pos < T)[None, :]  # (BH, BL): tokens inside the sequence
        # the within-chunk pieces are read inside the sequence only (as _chunk_cumsum_bwd reads ddA), ddA_prev over
        # the whole chunk: the glue's flip/cumsum/flip sums it past a ragged end too
        dda = tl.load(dda_ptr + b * sa_b + hh[:, None] * sa_h + c * sa_c + ll[None, :] * sa_l, mask=valid,
                      other=0.0).to(ACC)  # (BH, BL)
        nxt = tl.load(nxt_ptr + b * sn_b + hh[:, None] * sn_h + c * sn_c + ll[None, :] * sn_l, mask=valid,
                      other=0.0).to(ACC)
        prv = tl.load(prv_ptr + b * sp_b + hh[:, None] * sp_h + c * sp_c + ll[None, :] * sp_l, mask=tile,
                      other=0.0).to(ACC)
        end = tl.load(end_ptr + b * se_b + hh * se_h + c * se_c, mask=in_hc, other=0.0).to(ACC)  # (BH,)
        # the chunk end's gradient sits at L - 1, which every position's reverse sum reaches
        total = dda + nxt + tl.cumsum(prv, axis=1, reverse=True) + end[:, None]  # (BH, BL)
        v = tl.load(dt_ptr + b * sdt_b + pos[None, :] * sdt_t + hh[:, None] * sdt_h, mask=valid,
                    other=0.0).to(ACC) + bias[:, None]  # (BH, BL): the pre-softplus dt
        if SOFTPLUS:
            dts = _softplus(v)  # v itself past 20
        else:
            dts = v
        dsp = tl.load(dsp_ptr + b * ss_b + hh[:, None] * ss_h + c * ss_c + ll[None, :] * ss_l, mask=valid,
                      other=0.0).to(ACC)
        ddt = tl.where(valid, total * A[:, None] + dsp, 0.0)  # (BH, BL)
        ddt = tl.where(dts < 0.0, 0.0, ddt)  # mamba-ssm's clamp to dt_limit (0, inf) drops the gradient there
        dts = tl.where(valid, tl.maximum(dts, 0.0), 0.0)
        if SOFTPLUS:
            ddt = tl.where(v <= 20.0, ddt / (1.0 + tl.exp(-v)), ddt)  # softplus' = sigmoid, 1 past 20
        tl.store(ddt_ptr + b * sg_b + pos[None, :] * sg_t + hh[:, None] * sg_h, ddt.to(ddt_ptr.dtype.element_ty),
                 mask=valid)
        dA_acc += tl.sum(total * dts, axis=1)  # dts is 0 past the end
        db_acc += tl.sum(ddt, axis=1)
    tl.store(part_ptr + b * sq_b + j * sq_j + hh, dA_acc, mask=in_h)
    if HAS_BIAS:
        tl.store(part_ptr + sq_k + b * sq_b + j * sq_j + hh, db_acc, mask=in_h)


def interpreted() -> bool:
    """Whether this module's kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_dt_grads_kernel, InterpretedFunction)


def _check(op: str, ddA, ddA_next, ddA_prev, ddA_chunk_end, ddt_sp, dt, A, dt_bias, ddt, num_warps) -> None:
    """One ValueError line, prefixed `op`, for the first input that is not what the kernel takes."""
    if dt.dim() != 3:
        raise ValueError(f"{op}: dt must be (batch, seqlen, nheads), got shape {tuple(dt.shape)}")
    b, t, h = dt.shape
    if ddA.dim() != 4 or ddA.shape[:2] != (b, h):
        raise ValueError(f"{op}: ddA must be (batch, nheads, chunks, chunk_size) = ({b}, {h}, c, L), "
                         f"got {tuple(ddA.shape)}")
    chunks, size = ddA.shape[2], ddA.shape[3]
    if size < 1:
        raise ValueError(f"{op}: ddA's chunk size (its last dimension) must be positive, got {tuple(ddA.shape)}")
    if chunks != -(-t // size):
        raise ValueError(f"{op}: ddA has {chunks} chunks of {size} but seqlen {t} needs {-(-t // size)}")
    shapes = [("ddA_next", ddA_next, tuple(ddA.shape)), ("ddA_prev", ddA_prev, tuple(ddA.shape)),
              ("ddA_chunk_end", ddA_chunk_end, (b, h, chunks)), ("ddt_sp", ddt_sp, tuple(ddA.shape)),
              ("A", A, (h,)), ("dt_bias", dt_bias, (h,)), ("ddt", ddt, (b, t, h))]
    for name, tensor, shape in shapes:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    named = (("ddA", ddA), ("ddA_next", ddA_next), ("ddA_prev", ddA_prev), ("ddA_chunk_end", ddA_chunk_end),
             ("ddt_sp", ddt_sp), ("dt", dt), ("A", A), ("dt_bias", dt_bias), ("ddt", ddt))
    check_dtypes_and_device(op, dt, named, x_name="dt")
    acc = compute_dtype(dt)
    for name, tensor in named[:5]:
        if tensor.dtype != acc:
            raise ValueError(f"{op}: {name} must be {acc} (the compute dtype for dt's {dt.dtype}), got {tensor.dtype}")
    if ddt is not None and ddt.dtype != dt.dtype:
        raise ValueError(f"{op}: ddt must have dt's dtype {dt.dtype}, got {ddt.dtype}")
    check_num_warps(op, num_warps)
    check_runs_here(op, dt, interpreted())


def dt_grads(ddA: torch.Tensor, ddA_next: torch.Tensor, ddA_prev: torch.Tensor, ddA_chunk_end: torch.Tensor,
             ddt_sp: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, dt_bias: torch.Tensor | None = None,
             dt_softplus: bool = False, ddt: torch.Tensor | None = None, num_warps: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(ddt, dA, ddt_bias): the raw dt's gradient (b, T, h) in dt's dtype (written into `ddt` when given, any
    strides), A's and dt_bias's (h,) in the compute dtype (ddt_bias None without dt_bias), from the log-decays'
    gradient pieces ddA, ddA_next, ddA_prev (b, h, chunks, L), ddA_chunk_end (b, h, chunks) and the softplus'ed
    dt's gradient ddt_sp (b, h, chunks, L), all in the compute dtype; dt (b, T, h) raw, any strides; A, dt_bias
    (h,). Module docstring for the math. num_warps: LAUNCH["num_warps"] by default."""
    op = "dt_grads"
    _check(op, ddA, ddA_next, ddA_prev, ddA_chunk_end, ddt_sp, dt, A, dt_bias, ddt, num_warps)
    b, t, h = dt.shape
    chunks, size = ddA.shape[2], ddA.shape[3]
    acc = compute_dtype(dt)
    ddt = torch.empty_like(dt) if ddt is None else ddt
    per = LAUNCH["chunks"]
    blocks = -(-chunks // per)
    part = torch.empty(1 + (dt_bias is not None), b, blocks, h, dtype=acc, device=dt.device)  # per-program sums
    if part.numel():
        bias = dt_bias if dt_bias is not None else A  # never read without dt_bias
        _dt_grads_kernel[(blocks, b)](
            ddA, ddA_next, ddA_prev, ddA_chunk_end, ddt_sp, dt, A, bias, ddt, part, t, h, chunks,
            *ddA.stride(), *ddA_next.stride(), *ddA_prev.stride(), *ddA_chunk_end.stride(), *ddt_sp.stride(),
            *dt.stride(), A.stride(0), bias.stride(0), *ddt.stride(), *part.stride()[:3],
            L=size, CHUNKS=per, BLOCK_H=triton.next_power_of_2(h), BLOCK_L=triton.next_power_of_2(size),
            HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), ACC=TL_DTYPES[acc],
            num_warps=num_warps or LAUNCH["num_warps"])
    sums = part.sum((1, 2))  # (1 or 2, h); zeros when nothing ran
    # two tensors that share no memory: golf::mamba_core_bwd returns both, and a custom op's outputs may not alias
    return ddt, sums[0], sums[1].clone() if dt_bias is not None else None


def dt_grads_reference(ddA: torch.Tensor, ddA_next: torch.Tensor, ddA_prev: torch.Tensor,
                       ddA_chunk_end: torch.Tensor, ddt_sp: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                       dt_bias: torch.Tensor | None = None, dt_softplus: bool = False,
                       ddt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`dt_grads` in PyTorch, in the compute dtype: the glue's flip/cumsum/flip, then mamba-ssm's
    _chunk_cumsum_bwd per token. ddt written into `ddt` when given."""
    acc = compute_dtype(dt)
    b, t, h = dt.shape
    chunks, size = ddA.shape[2], ddA.shape[3]
    prev = ddA_prev.to(acc).clone()
    prev[..., -1] += ddA_chunk_end.to(acc)
    total = ddA.to(acc) + ddA_next.to(acc) + prev.flip([-1]).cumsum(-1).flip([-1])  # (b, h, c, L)

    def tokens(x):  # (b, h, c, L) -> (b, T, h): the tokens inside the sequence
        return x.permute(0, 2, 3, 1).reshape(b, chunks * size, h)[:, :t]

    total = tokens(total)
    v = dt.to(acc) + (dt_bias.to(acc) if dt_bias is not None else 0)  # (b, T, h)
    dts = torch.where(v <= 20, torch.log1p(torch.exp(v)), v) if dt_softplus else v
    clamp = dts < 0
    dts = dts.clamp_min(0)
    grad = torch.where(clamp, torch.zeros_like(v), total * A.to(acc) + tokens(ddt_sp.to(acc)))
    if dt_softplus:
        grad = torch.where(v <= 20, grad * torch.sigmoid(v), grad)
    dA = (total * dts).sum((0, 1))
    ddt_bias = grad.sum((0, 1)) if dt_bias is not None else None
    if ddt is None:
        ddt = grad.to(dt.dtype)
    else:
        ddt.copy_(grad)
    return ddt, dA, ddt_bias
