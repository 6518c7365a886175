"""golf's own Triton kernels for the Mamba-2 mixer's gated RMSNorm (norm_before_gate=False), forward and
backward. `gated_rmsnorm_fwd` / `gated_rmsnorm_bwd` take the arguments of mamba-ssm's
layernorm_gated._layer_norm_fwd / _layer_norm_bwd as golf calls them (RMSNorm, no bias, the gate applied
before the norm), on 2-D (rows, d_inner) views, and write into caller-provided outputs of any row stride: in
the mixer, z is a column slice of in_proj's (M, 1664) output, and the backward can write dz straight into the
matching slice of in_proj's gradient buffer instead of returning a fresh tensor that autograd then copies
there. bench/gated_norm_bench.py times both against mamba-ssm's kernels and torch.compile of the reference on
a CUDA device.

What it computes, per row m and group k of group_size gs (G = N / gs groups per row; G = 1 in production,
N = d_inner = 768), exactly golf.ssm.gated_rms_norm_reference(y, z, weight, G, eps):
    g        = y silu(z) = y z sigmoid(z)
    rstd[m,k] = 1 / sqrt(mean_{j in group k} g_j^2 + eps)
    out      = g rstd weight                                   stored in y's dtype (or out's, when given)
Backward, for dout = dL/dout (gh = g rstd, the normalized gate; dgh = dout weight):
    dweight  = sum_m dout gh
    dg       = rstd (dgh - gh mean_{group}(dgh gh))
    dy       = dg silu(z)
    dz       = dg y silu'(z),  silu'(z) = s (1 + z (1 - s)),  s = sigmoid(z)
All arithmetic in fp32 (fp64 for fp64 y, so that the tests compare exactly), whatever the inputs' dtypes; rstd
is returned in that compute dtype as (M, G); dweight in weight's dtype, reduced in the compute dtype. The
backward recomputes g from y and z (one sigmoid per element), so the forward's out need not be kept.

Layout. Every 2-D tensor (y, z, out, dout, dy, dz) may have any row stride but must have unit stride along N:
then each row of a tile is one contiguous, vectorizable load or store, and a column slice of a wider tensor is
used in place. Row offsets are computed in int64 (M times a row stride of 1664 passes 2^31 at ~1.3M rows).

Tiles. Both kernels work on (BLOCK_M, BLOCK_N) tiles: BLOCK_M rows of one group, BLOCK_N the next power of two
>= gs (columns past gs masked: 1024 lanes for 768, a quarter of the lanes idle, which costs registers and ALU
but no memory traffic, the bound that matters here). The grid's second axis is the group, so G > 1 treats
each (row, group) as its own normalization unit and a group's columns stay contiguous. The group size is a
compile-time constant (the mean's divisor and the column mask then fold into the code and the loads vectorize;
a model has one or two group sizes) and so is eps (a runtime float argument would reach the kernel as fp32,
off the fp64 reference by ~1e-13 relative at eps 1e-5).
  Forward, grid (cdiv(M, BLOCK_M), G): load y and z, form g, reduce g^2 along the row, store out and rstd.
    Default tile 4096 elements (BLOCK_M = 4 at BLOCK_N 1024), 4 warps: 32,768 programs in production.
  Backward, grid (cdiv(M, BLOCK_M * tiles), G): each program walks `tiles` consecutive row blocks, storing dy
    and dz per block and adding dout gh into one (BLOCK_M, BLOCK_N) fp32 accumulator, reduced over its rows
    once at the end into one row of a (programs, N) partial-sum buffer that golf.sum_kernel sums afterwards:
    deterministic (no atomics; the same bits run to run) and small (production: 131072 / 32 = 4096 rows of 768
    fp32, 12.6 MB written and read back, against the ~1 GB the kernel must move). The walk is a
    software-pipelined tl.range (num_stages 3): the next blocks' loads are in flight while one is computed.
    Without it a program waits out each block's load latency in turn, and only many resident programs hide
    that.
    Default tile 1024 elements (one row at BLOCK_N 1024), 1 warp, 32 row blocks per program, 3 stages.
Both defaults keep 32 values of each tile tensor per thread (one warp per 1024 tile elements); 64 or more per
thread spills registers in the backward (8 ms instead of 0.3 below).

Measured on an H200 (bench/gated_norm_bench.py, M = 131072, N = 768, G = 1, bf16 y, z, dout, fp32 weight, z
and dz column slices of (M, 1664) tensors, Triton 3.6, torch 2.11; median of 50 calls with the L2 flushed):
forward 0.150 ms (4.0 TB/s of what it must move, 1.19x the floor below), mamba-ssm's _layer_norm_fwd 0.167,
torch.compile of the reference 0.267; backward 0.274 ms (3.7 TB/s, 1.31x), mamba-ssm's _layer_norm_bwd 0.987;
forward + backward 0.42 ms against mamba-ssm's 1.13 to 1.15 and torch.compile's 0.76 to 0.87 (one autograd
call; over three runs). The backward's sweep: without the pipeline (num_stages 1) 0.341 ms; 2 or 4 warps 0.29
to 0.32; 2 rows per tile 0.44 to 0.50; the first design (4 rows, 8 warps, 16 blocks, no pipeline) 0.536. With
four groups (gs 192): forward 0.163, backward 0.348 (mamba-ssm 0.320 and 0.858). Errors against the fp32
reference are those of rounding to bf16, the same as mamba-ssm's for out, dy and dz (max 0.0625 absolute);
dweight 3.7e-4 absolute (mamba-ssm's 7.0e-4).

Memory floor (M = 131072, N = 768, bf16; one activation A = 201 MB): forward reads y, z and writes out, 3A =
0.60 GB, 0.126 ms at 4.8 TB/s; backward reads dout, y, z and writes dy, dz, 5A = 1.0 GB, 0.21 ms (rstd and the
partial sums' round trip add about 2.5%).

Limits. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is first imported; tests/conftest.py). Checked against the reference and autograd through it
(tests/test_gated_norm_kernel.py) in the interpreter and, compiled, on the H200 above. No autograd.Function
here: the mixer's wiring (which buffer dz lands in) belongs to its caller.
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from golf.kernel_inputs import (
    TL_DTYPES,
    check_dtypes_and_device,
    check_row_launch,
    check_runs_here,
    row_launch,
)
from golf.ssm import compute_dtype
from golf.sum_kernel import column_sums

# Launch defaults (module docstring, "Tiles"): elements per (BLOCK_M, BLOCK_N) tile, BLOCK_M = max(1,
# tile // BLOCK_N); one warp per 1024 of them (32 values of each tile tensor per thread); backward row blocks
# per program and pipeline stages
FWD_TILE = 4096
BWD_TILE = 1024
ELEMENTS_PER_WARP = 1024
BWD_TILES = 32
BWD_STAGES = 3


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _gated_norm_fwd_kernel(y_ptr, z_ptr, w_ptr, out_ptr, rstd_ptr,
                           M,
                           sy, sz, so, sr_m, sr_g,
                           GS: tl.constexpr, EPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           ACC: tl.constexpr):
    pid_m = tl.program_id(0)
    grp = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    cols = tl.arange(0, BLOCK_N)  # (BN,) within the group
    rmask = rows < M
    cmask = cols < GS
    m = rmask[:, None] & cmask[None, :]  # (BM, BN)
    r = rows.to(tl.int64)[:, None]  # (BM, 1): int64, M * row stride can pass 2^31
    c = (grp * GS + cols)[None, :]  # (1, BN): column in the row
    y = tl.load(y_ptr + r * sy + c, mask=m, other=0.0).to(ACC)  # (BM, BN)
    z = tl.load(z_ptr + r * sz + c, mask=m, other=0.0).to(ACC)
    g = y * z / (1.0 + tl.exp(-z))  # y silu(z); 0 in masked lanes, so they add nothing to the sum below
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=1) / GS + EPS)  # (BM,)
    w = tl.load(w_ptr + c, mask=cmask[None, :], other=0.0).to(ACC)  # (1, BN)
    out = g * rstd[:, None] * w
    tl.store(out_ptr + r * so + c, out.to(out_ptr.dtype.element_ty), mask=m)
    tl.store(rstd_ptr + rows.to(tl.int64) * sr_m + grp * sr_g, rstd, mask=rmask)


@triton.jit
def _gated_norm_bwd_kernel(dout_ptr, y_ptr, z_ptr, w_ptr, rstd_ptr, dy_ptr, dz_ptr, part_ptr, zero_ptr,
                           M, N, tiles,
                           sd, sy, sz, sr_m, sr_g, sdy, sdz, szero,
                           GS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
                           STAGES: tl.constexpr, ZERO_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """dy and dz for `tiles` consecutive row blocks of one group, and this program's partial dweight (one row
    of the (programs, N) buffer, the group's columns); with ZERO_K > 0 also zeros in the same rows' ZERO_K
    columns of `zero` (the first group's programs)."""
    pid_m = tl.program_id(0)
    grp = tl.program_id(1)
    cols = tl.arange(0, BLOCK_N)  # (BN,)
    cmask = cols < GS
    c = (grp * GS + cols)[None, :]  # (1, BN)
    w = tl.load(w_ptr + c, mask=cmask[None, :], other=0.0).to(ACC)  # (1, BN), loaded once for all tiles
    # dweight summed elementwise over the program's tiles and reduced over rows once at the end: the per-tile
    # alternative, a (BN,) vector, would need a cross-warp reduction (through shared memory) every tile
    dw = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    zero_rows = tl.where(grp == 0, M, 0)  # `zero`'s rows are written by the first group's programs alone
    # STAGES > 1 software-pipelines the loop: the next row blocks' loads are issued (asynchronous copies into
    # shared memory) while this one is computed; a plain range() waits for each block's loads in turn
    for i in tl.range(0, tiles, num_stages=STAGES):
        rows = (pid_m * tiles + i) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        rmask = rows < M
        m = rmask[:, None] & cmask[None, :]
        r = rows.to(tl.int64)[:, None]  # (BM, 1)
        dout = tl.load(dout_ptr + r * sd + c, mask=m, other=0.0).to(ACC)  # (BM, BN)
        y = tl.load(y_ptr + r * sy + c, mask=m, other=0.0).to(ACC)
        z = tl.load(z_ptr + r * sz + c, mask=m, other=0.0).to(ACC)
        rstd = tl.load(rstd_ptr + rows.to(tl.int64) * sr_m + grp * sr_g, mask=rmask, other=0.0)  # (BM,)
        rstd = rstd.to(ACC)
        sig = 1.0 / (1.0 + tl.exp(-z))
        silu = z * sig
        gh = y * silu * rstd[:, None]  # the normalized gate; 0 in masked lanes and rows
        dgh = dout * w
        proj = tl.sum(dgh * gh, axis=1) / GS  # (BM,): mean over the group of dgh gh
        dg = rstd[:, None] * (dgh - gh * proj[:, None])
        tl.store(dy_ptr + r * sdy + c, (dg * silu).to(dy_ptr.dtype.element_ty), mask=m)
        dzv = dg * y * sig * (1.0 + z * (1.0 - sig))
        tl.store(dz_ptr + r * sdz + c, dzv.to(dz_ptr.dtype.element_ty), mask=m)
        dw += dout * gh  # rows past M add 0 (dout and gh masked to 0)
        if ZERO_K > 0:
            k = tl.arange(0, BLOCK_K)  # (BK,)
            zmask = (rows < zero_rows)[:, None] & (k < ZERO_K)[None, :]  # (BM, BK)
            tl.store(zero_ptr + r * szero + k[None, :],
                     tl.zeros((BLOCK_M, BLOCK_K), dtype=zero_ptr.dtype.element_ty), mask=zmask)
    tl.store(part_ptr + pid_m * N + c, tl.sum(dw, axis=0)[None, :], mask=cmask[None, :])


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_gated_norm_fwd_kernel, InterpretedFunction)


def _shape(t) -> tuple:
    return tuple(getattr(t, "shape", ()))


def _check_rows(op: str, name: str, t, m: int, n: int, output: bool = False) -> None:
    """t must be an (m, n) tensor with unit stride along n; an output's rows must also not overlap (else two
    programs would write the same elements)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or tuple(t.shape) != (m, n):
        raise ValueError(f"{op}: {name} must be a 2-D (rows, channels) = ({m}, {n}) tensor, got shape "
                         f"{_shape(t)}")
    if n > 1 and t.stride(1) != 1:
        raise ValueError(f"{op}: {name} must have unit stride along its last dim (any row stride), got "
                         f"strides {tuple(t.stride())}")
    if output and m > 1 and t.stride(0) < n:
        raise ValueError(f"{op}: {name}'s rows overlap (row stride {t.stride(0)} < {n} channels)")


def _check_common(op: str, y, z, weight, eps, group_size) -> tuple[int, int, int]:
    """One ValueError line for the first of y, z, weight, eps, group_size that is not what the kernels take;
    returns (M, N, G)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise ValueError(f"{op}: y must be a 2-D (rows, channels) tensor, got shape {_shape(y)}")
    m, n = y.shape
    _check_rows(op, "y", y, m, n)
    _check_rows(op, "z", z, m, n)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (n,):
        raise ValueError(f"{op}: weight must be ({n},), got shape {_shape(weight)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{op}: group_size must be a positive int, got {group_size!r}")
    if n % group_size:
        raise ValueError(f"{op}: group_size {group_size} does not divide the {n} channels")
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0):
        raise ValueError(f"{op}: eps must be a finite number >= 0, got {eps!r}")
    return m, n, n // group_size


def gated_rmsnorm_fwd(y, z, weight, eps, group_size, out=None, *, block_m=None, num_warps=None):
    """out = rmsnorm(y silu(z)) weight per group of group_size channels (module docstring), and rstd.

    y, z: (M, N), unit stride along N, any row stride (z may be a column slice of a wider tensor); weight
    (N,); group_size divides N. out: None (a new contiguous (M, N) tensor in y's dtype) or a preallocated
    (M, N) tensor of y's dtype with unit stride along N and any row stride (only its (M, N) elements are
    written). Returns (out, rstd): rstd a new (M, N // group_size) tensor in the compute dtype (fp32; fp64 for
    fp64 y). block_m (rows per tile, a power of two) and num_warps: the launch; None takes the defaults
    (module docstring: at BLOCK_N 1024, 4 rows and 4 warps)."""
    op = "gated_rmsnorm_fwd"
    check_row_launch(op, block_m, num_warps)
    m, n, g = _check_common(op, y, z, weight, eps, group_size)
    if out is not None:
        _check_rows(op, "out", out, m, n, output=True)
        if out.dtype != y.dtype:
            raise ValueError(f"{op}: out must have y's dtype {y.dtype}, got {out.dtype}")
    check_dtypes_and_device(op, y, (("y", y), ("z", z), ("weight", weight), ("out", out)))
    check_runs_here(op, y, interpreted())
    acc = compute_dtype(y)
    if out is None:
        out = torch.empty(m, n, dtype=y.dtype, device=y.device)
    rstd = torch.empty(m, g, dtype=acc, device=y.device)
    if m == 0 or n == 0:
        return out, rstd
    bm, bn, nw = row_launch(group_size, block_m, num_warps, FWD_TILE, ELEMENTS_PER_WARP)
    weight = weight.contiguous()  # (N,): loaded as one contiguous vector per program
    _gated_norm_fwd_kernel[(triton.cdiv(m, bm), g)](
        y, z, weight, out, rstd,
        m,
        y.stride(0), z.stride(0), out.stride(0), rstd.stride(0), rstd.stride(1),
        GS=group_size, EPS=float(eps), BLOCK_M=bm, BLOCK_N=bn, ACC=TL_DTYPES[acc], num_warps=nw)
    return out, rstd


def gated_rmsnorm_bwd(dout, y, z, weight, rstd, eps, group_size, dy=None, dz=None, zero=None, *, block_m=None,
                      num_warps=None, tiles=BWD_TILES, num_stages=BWD_STAGES):
    """(dy, dz, dweight): the gradients of sum(out * dout) for out = gated_rmsnorm_fwd(y, z, weight, eps,
    group_size)[0], from that call's rstd ((M, G), any strides; eps is not used again: rstd already holds it).

    dout, y, z: (M, N), unit stride along N, any row stride. dy, dz: None (new contiguous tensors in y's / z's
    dtype) or preallocated (M, N) tensors of y's / z's dtype, unit stride along N, any row stride (dz may be a
    column slice of in_proj's gradient buffer: written in place, the columns around it untouched). zero: None or
    an (M, K) tensor, unit stride along K, any row stride, that the same launch fills with zeros (in the mixer,
    in_proj's padding columns of its gradient buffer, which no other kernel writes: one launch less than a
    separate fill of that strided slice). dweight:
    weight's shape and dtype, summed over rows in the compute dtype. The launch (module docstring): block_m
    and num_warps (None: the defaults, at BLOCK_N 1024 one row and one warp), tiles (row blocks per program;
    the partial-sum buffer has cdiv(M, block_m * tiles) rows) and num_stages (the software pipeline's depth
    over them; 1: none)."""
    op = "gated_rmsnorm_bwd"
    check_row_launch(op, block_m, num_warps, tiles, num_stages)
    m, n, g = _check_common(op, y, z, weight, eps, group_size)
    _check_rows(op, "dout", dout, m, n)
    if not isinstance(rstd, torch.Tensor) or tuple(rstd.shape) != (m, g):
        raise ValueError(f"{op}: rstd must be (rows, groups) = ({m}, {g}), got shape {_shape(rstd)}")
    for name, t, like in (("dy", dy, y), ("dz", dz, z)):
        if t is not None:
            _check_rows(op, name, t, m, n, output=True)
            if t.dtype != like.dtype:
                src = "y" if name == "dy" else "z"
                raise ValueError(f"{op}: {name} must have {src}'s dtype {like.dtype}, got {t.dtype}")
    if zero is not None:  # its width is its own (K): the check is of its rows and layout
        width = zero.shape[-1] if isinstance(zero, torch.Tensor) and zero.dim() else -1
        _check_rows(op, "zero", zero, m, width, output=True)
    check_dtypes_and_device(op, y, (("y", y), ("z", z), ("weight", weight), ("dout", dout), ("rstd", rstd),
                                    ("dy", dy), ("dz", dz), ("zero", zero)))
    check_runs_here(op, y, interpreted())
    acc = compute_dtype(y)
    if dy is None:
        dy = torch.empty(m, n, dtype=y.dtype, device=y.device)
    if dz is None:
        dz = torch.empty(m, n, dtype=z.dtype, device=y.device)
    bm, bn, nw = row_launch(group_size, block_m, num_warps, BWD_TILE, ELEMENTS_PER_WARP)
    programs = triton.cdiv(m, bm * tiles)
    # every (program, group) writes all its group's columns of its row, so the buffer needs no zeroing
    part = torch.empty(programs, n, dtype=acc, device=y.device)  # (programs, N)
    zero_k = zero.shape[1] if zero is not None else 0
    if programs and n:
        _gated_norm_bwd_kernel[(programs, g)](
            dout, y, z, weight.contiguous(), rstd, dy, dz, part, zero if zero_k else dz,
            m, n, tiles,
            dout.stride(0), y.stride(0), z.stride(0), rstd.stride(0), rstd.stride(1), dy.stride(0),
            dz.stride(0), zero.stride(0) if zero_k else 0,
            GS=group_size, BLOCK_M=bm, BLOCK_N=bn, ACC=TL_DTYPES[acc], STAGES=num_stages, ZERO_K=zero_k,
            BLOCK_K=triton.next_power_of_2(max(zero_k, 1)), num_warps=nw)
    elif zero_k:
        zero.zero_()
    dweight = column_sums(part, dtype=weight.dtype)  # (N,), deterministic; zeros when M = 0
    return dy, dz, dweight
