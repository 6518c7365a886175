"""Registers and spill stores of golf/qk_rope_kernel.py's forward and backward kernels compiled offline for sm_90a
on a machine without a GPU (Triton's front end for a stand-in sm_90 target, the PTX through the ptxas-blackwell
that ships with Triton), at golf's head dim 64 with bf16 activations and fp32 tables and gain: full RoPE and partial
(16 channels passing through), with and without the gain, at 64 rows over 4 warps; then five launches of the
full-RoPE case with the gain. Run from the project root:

    env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 .venv/bin/python \\
        bench/results/2026-12-02_qk_rope_offline/offline_regs.py
"""

import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import golf.qk_rope_kernel as qk

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas-blackwell")
FWD_POINTERS = {"x_ptr": "*bf16", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "gain_ptr": "*fp32", "y_ptr": "*bf16",
                "rstd_ptr": "*fp32"}
BWD_POINTERS = {"dy_ptr": "*bf16", "x_ptr": "*bf16", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "gain_ptr": "*fp32",
                "rstd_ptr": "*fp32", "dx_ptr": "*bf16", "gdot_ptr": "*fp32"}


def compiled(kernel, pointers: dict, consts: dict, warps: int):
    signature = {n: "constexpr" if n in consts else pointers.get(n, "i32") for n in kernel.arg_names}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=TARGET, options={"num_warps": warps})


def ptxas_report(ptx: str) -> tuple[str, str]:
    """(registers a thread, spill-store bytes) from `ptxas -v`."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True,
                         check=True)
    os.unlink(f.name)
    text = out.stderr + out.stdout
    return re.search(r"Used (\d+) registers", text).group(1), re.search(r"(\d+) bytes spill stores", text).group(1)


def both(block_m: int, warps: int, rotated_half: int, passing: int, gain: bool) -> tuple:
    consts = {"D": 64, "HALF": rotated_half, "PASS": passing, "BLOCK_M": block_m, "BLOCK_H": rotated_half,
              "BLOCK_P": max(passing, 1), "ACC": tl.float32, "HAS_GAIN": gain}
    fwd = compiled(qk._qk_rope_fwd_kernel, FWD_POINTERS, {**consts, "EPS": 1.1920928955078125e-07}, warps)
    bwd = compiled(qk._qk_rope_bwd_kernel, BWD_POINTERS, consts, warps)
    return ptxas_report(fwd.asm["ptx"]), ptxas_report(bwd.asm["ptx"])


for passing, half in ((0, 32), (16, 16)):
    for gain in (True, False):
        fwd, bwd = both(64, 4, half, passing, gain)
        print("pass", passing, "gain", gain, "fwd regs/spill", fwd, "bwd regs/spill", bwd, flush=True)
print("--- launches (full rope, gain)")
for block_m, warps in ((64, 8), (32, 4), (32, 2), (16, 2), (128, 8)):
    fwd, bwd = both(block_m, warps, 32, 0, True)
    print("block_m", block_m, "warps", warps, "fwd", fwd, "bwd", bwd, flush=True)
