"""Registers, spill stores and shared memory of golf/ssd_xy_kernel.py's y and dx kernels as they were at commit
5373046 (a program walking CHUNKS chunks in a tl.range loop with num_stages STAGES; reverted in 047bc08, so this
script runs only on a checkout of 5373046), compiled offline for sm_90a on a machine without a GPU: Triton's front
end for a stand-in sm_90 target, then the PTX through the ptxas that ships with Triton (ptxas-blackwell, CUDA 13.4;
the other bundled ptxas is too old for Triton 3.9's PTX). hybrid_12_b131k's shapes: chunk 64, headdim 64, d_state
32; bf16 x, dy, B, C; fp32 C·B, dt, dA_cumsum, the states. Run from the project root:

    env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 .venv/bin/python \
        bench/results/2026-12-02_xy_walk_offline/offline_regs.py
"""

import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import golf.ssd_xy_kernel as xk

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas-blackwell")
SHAPES = {"L": 64, "P": 64, "N": 32, "BLOCK_L": 64, "BLOCK_P": 64, "BLOCK_N": 32, "HAS_D": True,
          "ACC": tl.float32, "DOT": tl.bfloat16}
POINTERS = {
    "y": {"cb_ptr": "*fp32", "x_ptr": "*bf16", "dt_ptr": "*fp32", "cs_ptr": "*fp32", "c_ptr": "*bf16",
          "st_ptr": "*fp32", "D_ptr": "*fp32", "y_ptr": "*bf16"},
    "dx": {"x_ptr": "*bf16", "dy_ptr": "*bf16", "dt_ptr": "*fp32", "cs_ptr": "*fp32", "cb_ptr": "*fp32",
           "b_ptr": "*bf16", "ds_ptr": "*bf16", "D_ptr": "*fp32", "dx_ptr": "*bf16", "ddt_ptr": "*fp32",
           "dD_ptr": "*fp32"},
}
KERNELS = {"y": xk._chunk_y_kernel, "dx": xk._chunk_dx_kernel}
LAUNCHES = [(2, 1, 1), (4, 1, 1), (8, 1, 1), (4, 2, 1), (4, 4, 1), (8, 4, 1), (4, 2, 2), (4, 4, 3), (8, 2, 2),
            (8, 2, 3), (8, 4, 3)]  # (num_warps, chunks, stages)


def compiled(kernel, pointers: dict, warps: int, chunks: int, stages: int):
    consts = {**SHAPES, "CHUNKS": chunks, "STAGES": stages}
    signature = {n: "constexpr" if n in consts else pointers.get(n, "i32") for n in kernel.arg_names}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=TARGET, options={"num_warps": warps})


def ptxas_report(ptx: str) -> tuple[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True,
                         check=True)
    os.unlink(f.name)
    text = out.stderr + out.stdout
    return re.search(r"Used (\d+) registers", text).group(1), re.search(r"(\d+) bytes spill stores", text).group(1)


print("--- ptxas -v")
for name, kernel in KERNELS.items():
    for warps, chunks, stages in LAUNCHES:
        ck = compiled(kernel, POINTERS[name], warps, chunks, stages)
        regs, spills = ptxas_report(ck.asm["ptx"])
        print(name, (warps, chunks, stages), "regs", regs, "spill stores", spills, "shared", ck.metadata.shared,
              flush=True)
