"""Column sums of a partial-sum buffer in one Triton launch: how golf's backward kernels finish their parameter
gradients.

golf's block-norm, gated-norm and conv backward kernels (golf/block_norm_kernel.py, golf/gated_norm_kernel.py,
golf/conv_kernel.py) write one row of partial sums per program, deterministically, and a parameter gradient is the
sum of those rows: a (R, N) buffer of one to four thousand rows and 512 to 4160 columns at hybrid_12_b131k's
shapes. (The SSD's dt and D gradients sum 12 columns: one program here, slower than torch's sum, which needs no
memset at that size.) torch's `sum(0)` of such a buffer splits the rows over several blocks, which then meet
through semaphores that it zeroes first: a memset node before each reduction in the step's CUDA
graph. On an H200 (bench/RESULTS.md, 2026-12-02) the memset and the idle gaps around it cost about 8 us and the
reduction itself 8-14 us, 50 times a hybrid_12_b131k step. `column_sums` is one kernel, no zero-fill: each
program owns BLOCK_N columns and walks every row, BLOCK_R rows a step, accumulating in fp32 (fp64 for fp64 input),
so a launch gives the same bits from run to run (another launch may round differently: the last sum over the
BLOCK_R lanes follows the threads' layout).

`column_sums_reference` is its twin (torch's sum in the same compute dtype); tests/test_sum_kernel.py compares them
in Triton's interpreter and on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import (
    TL_DTYPES,
    check_dtypes_and_device,
    check_num_warps,
    check_power_of_two,
    check_runs_here,
)
from golf.ssm import compute_dtype

# (BLOCK_R, BLOCK_N, num_warps) when the caller gives none: the fastest of eight on the four shapes of bench/
# sum_kernel_bench.py on an H200 (3.4-5.4 us a call in a CUDA graph against torch's 8-11; bench/RESULTS.md,
# 2026-12-02): a program walks 16 columns, 512 rows a step
DEFAULT_LAUNCH = (512, 16, 8)


@triton.jit
def _column_sums_kernel(x_ptr, out_ptr, R, N, stride_r, stride_n,
                        BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    cmask = cols < N
    rows = tl.arange(0, BLOCK_R)  # (BR,)
    col_off = cols.to(tl.int64) * stride_n
    acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=ACC)
    for r0 in range(0, R, BLOCK_R):
        r = r0 + rows
        ptrs = x_ptr + r.to(tl.int64)[:, None] * stride_r + col_off[None, :]  # (BR, BN)
        acc += tl.load(ptrs, mask=(r < R)[:, None] & cmask[None, :], other=0.0).to(ACC)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=cmask)


def interpreted() -> bool:
    """Whether this module's kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_column_sums_kernel, InterpretedFunction)


def column_sums(x: torch.Tensor, out: torch.Tensor | None = None, dtype: torch.dtype | None = None, *,
                block_r: int | None = None, block_n: int | None = None, num_warps: int | None = None
                ) -> torch.Tensor:
    """x (R, N), any strides → its column sums (N,), summed in x's compute dtype (fp32; fp64 for fp64 x) and
    written into `out` (a contiguous (N,) tensor) or into a new (N,) tensor of `dtype` (None: the compute dtype).
    R = 0 gives zeros. block_r, block_n (powers of two) and num_warps: the launch (None: DEFAULT_LAUNCH's)."""
    op = "column_sums"
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{op}: x must be a 2-D (rows, columns) tensor, got shape {tuple(getattr(x, 'shape', ()))}")
    check_power_of_two(op, "block_r", block_r)
    check_power_of_two(op, "block_n", block_n)
    check_num_warps(op, num_warps)
    r, n = x.shape
    if out is not None:
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n,) or (n > 1 and out.stride(0) != 1):
            raise ValueError(f"{op}: out must be a contiguous ({n},) tensor, got shape "
                             f"{tuple(getattr(out, 'shape', ()))}")
        if dtype is not None and out.dtype != dtype:
            raise ValueError(f"{op}: out is {out.dtype} but dtype {dtype} was asked for")
    check_dtypes_and_device(op, x, (("x", x), ("out", out)))
    check_runs_here(op, x, interpreted())
    acc = compute_dtype(x)
    if out is None:
        out = torch.empty(n, dtype=dtype or acc, device=x.device)
    if n == 0:
        return out
    br, bn, nw = DEFAULT_LAUNCH
    br, bn, nw = block_r or br, block_n or bn, num_warps or nw
    _column_sums_kernel[(triton.cdiv(n, bn),)](x, out, r, n, x.stride(0), x.stride(1),
                                               BLOCK_R=br, BLOCK_N=bn, ACC=TL_DTYPES[acc], num_warps=nw)
    return out


def column_sums_reference(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """column_sums' twin: torch's sum over rows in x's compute dtype, then `dtype` (None: the compute dtype)."""
    acc = compute_dtype(x)
    return x.to(acc).sum(0).to(dtype or acc)
