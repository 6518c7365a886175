"""What golf's own Triton kernels (golf/ssd_kernel.py, golf/conv_kernel.py) check of their inputs alike, and the
torch -> Triton dtype map both compile with. Training-only like the kernels: artifacts ship neither."""

from __future__ import annotations

import torch
import triton.language as tl

TL_DTYPES = {torch.float64: tl.float64, torch.float32: tl.float32, torch.bfloat16: tl.bfloat16,
             torch.float16: tl.float16}


def check_dtypes_and_device(op: str, x: torch.Tensor, tensors) -> None:
    """One ValueError line, prefixed `op`, for the first of `tensors` ((name, tensor or None) pairs) whose dtype
    no kernel takes or that is not on x's device."""
    for name, t in tensors:
        if t is None:
            continue
        if t.dtype not in TL_DTYPES:
            raise ValueError(f"{op}: {name} must be a float64/32/16 or bfloat16 tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}: one device for all")


def check_runs_here(op: str, x: torch.Tensor, interpreted: bool) -> None:
    """One ValueError line unless x is a CUDA tensor or the kernels run in Triton's interpreter (`interpreted`:
    the calling module's interpreted(), which tests may replace)."""
    if x.device.type != "cuda" and not interpreted:
        raise ValueError(f"{op}: the Triton kernels need CUDA tensors (x is on {x.device}); on a CPU they run only "
                         "in Triton's interpreter (TRITON_INTERPRET=1 before triton is imported)")
