"""What golf's own Triton kernels (golf/ssd_kernel.py, golf/ssd_dcb_kernel.py, golf/ssd_xy_kernel.py,
golf/conv_kernel.py, golf/gated_norm_kernel.py, golf/block_norm_kernel.py) check of their inputs alike, the torch ->
Triton dtype map they compile with, and the row-tile launch the two norm kernels share. Training-only like the
kernels: artifacts ship neither."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TL_DTYPES = {torch.float64: tl.float64, torch.float32: tl.float32, torch.bfloat16: tl.bfloat16,
             torch.float16: tl.float16}


def check_dtypes_and_device(op: str, x: torch.Tensor, tensors, x_name: str = "x") -> None:
    """One ValueError line, prefixed `op`, for the first of `tensors` ((name, tensor or None) pairs) whose dtype
    no kernel takes or that is not on x's device (x_name: what the message calls x)."""
    for name, t in tensors:
        if t is None:
            continue
        if t.dtype not in TL_DTYPES:
            raise ValueError(f"{op}: {name} must be a float64/32/16 or bfloat16 tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {x_name} is on {x.device}: one device for all")


def check_num_warps(op: str, num_warps) -> None:
    """One ValueError line, prefixed `op`, unless num_warps is None (the kernel's default) or a power of two from 1
    to 16."""
    if num_warps is not None and (isinstance(num_warps, bool) or num_warps not in (1, 2, 4, 8, 16)):
        raise ValueError(f"{op}: num_warps must be a power of two from 1 to 16, got {num_warps!r}")


# the register caps a thread that ptxas's .maxnreg takes
MAXNREG_RANGE = (24, 255)


def check_maxnreg(op: str, maxnreg) -> None:
    """One ValueError line, prefixed `op`, unless maxnreg is None (the kernel's default), 0 (no cap) or a register
    cap a thread in MAXNREG_RANGE (ptxas's .maxnreg)."""
    lo, hi = MAXNREG_RANGE
    if maxnreg is not None and (isinstance(maxnreg, bool) or not isinstance(maxnreg, int)
                                or (maxnreg != 0 and not lo <= maxnreg <= hi)):
        raise ValueError(f"{op}: maxnreg must be None, 0 (no cap) or an int in [{lo}, {hi}], got {maxnreg!r}")


def maxnreg_option(maxnreg: int | None, default: int | None) -> dict:
    """A launch's register-cap keyword: {"maxnreg": cap} for cap = maxnreg, or `default` when maxnreg is None; {}
    (the compiler's choice) when that is 0 or None."""
    cap = default if maxnreg is None else maxnreg
    return {"maxnreg": cap} if cap else {}


def check_chunk_layout(op: str, x: torch.Tensor, dt: torch.Tensor, CB: torch.Tensor
                       ) -> tuple[int, int, int, int, int, int]:
    """The SSD chunk kernels' common layout (golf/ssd_dcb_kernel.py, golf/ssd_xy_kernel.py): x (batch, seqlen,
    nheads, headdim), dt (batch, nheads, chunks, L) with chunks = ceil(seqlen / L), C·B (batch, chunks, ngroups, L,
    L) with ngroups dividing nheads. One ValueError line, prefixed `op`, for the first that is not; else (batch,
    seqlen, nheads, headdim, chunks, ngroups)."""
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
    b, t, h, p = x.shape
    if dt.dim() != 4 or dt.shape[:2] != (b, h):
        raise ValueError(f"{op}: dt must be (batch, nheads, chunks, chunk_size) = ({b}, {h}, c, L), "
                         f"got {tuple(dt.shape)}")
    chunks, size = dt.shape[2], dt.shape[3]
    if chunks != -(-t // size):
        raise ValueError(f"{op}: dt has {chunks} chunks of {size} but seqlen {t} needs {-(-t // size)}")
    if CB.dim() != 5 or CB.shape[:2] != (b, chunks) or CB.shape[3:] != (size, size) or h % CB.shape[2]:
        raise ValueError(f"{op}: CB must be (batch, chunks, ngroups, L, L) = ({b}, {chunks}, g, {size}, {size}) "
                         f"with nheads {h} divisible by g, got {tuple(CB.shape)}")
    return b, t, h, p, chunks, CB.shape[2]


def check_runs_here(op: str, x: torch.Tensor, interpreted: bool) -> None:
    """One ValueError line unless x is a CUDA tensor or the kernels run in Triton's interpreter (`interpreted`:
    the calling module's interpreted(), which tests may replace)."""
    if x.device.type != "cuda" and not interpreted:
        raise ValueError(f"{op}: the Triton kernels need CUDA tensors (x is on {x.device}); on a CPU they run only "
                         "in Triton's interpreter (TRITON_INTERPRET=1 before triton is imported)")


def check_power_of_two(op: str, name: str, value) -> None:
    """One ValueError line, prefixed `op`, unless `value` is None (the kernel's default) or an int power of two."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1
                              or value & (value - 1)):
        raise ValueError(f"{op}: {name} must be a power of two, got {value!r}")


def check_row_launch(op: str, block_m, num_warps, tiles=1, num_stages=1) -> None:
    """A row-tile kernel's launch settings: block_m a power of two, num_warps a power of two <= 32 (either None:
    the default for the tile); tiles and num_stages positive ints. One ValueError line, prefixed `op`."""
    check_power_of_two(op, "block_m", block_m)
    if num_warps is not None and (isinstance(num_warps, bool) or not isinstance(num_warps, int)
                                  or num_warps not in (1, 2, 4, 8, 16, 32)):
        raise ValueError(f"{op}: num_warps must be a power of two from 1 to 32, got {num_warps!r}")
    for name, v in (("tiles", tiles), ("num_stages", num_stages)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")


def row_launch(width: int, block_m, num_warps, tile: int, per_warp: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for rows of `width` elements: BLOCK_N the next power of two >= width; BLOCK_M
    as asked or max(1, tile // BLOCK_N); num_warps as asked or one per `per_warp` elements of the tile (1 to 16)."""
    block_n = triton.next_power_of_2(width)
    block_m = block_m or max(1, tile // block_n)
    return block_m, block_n, num_warps or max(1, min(16, block_m * block_n // per_warp))
