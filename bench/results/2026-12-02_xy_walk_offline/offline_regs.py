"""Registers, spill stores and shared memory of golf/ssd_xy_kernel.py's y and dx kernels at commit 5373046 (a program
walking `chunks` chunks in a tl.range loop with num_stages `stages`), compiled offline for sm_90a on a machine
without a GPU: Triton 3.9's front end for a stand-in sm_90 target, then the PTX through the ptxas that ships with
it (ptxas-blackwell, CUDA 13.4; the other bundled ptxas is too old for Triton 3.9's PTX). hybrid_12_b131k's shapes:
chunk 64, headdim 64, d_state 32, bf16 x/dy/B/C, fp32 C·B/dt/dA_cumsum/states. Run as
`env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 .venv/bin/python offline_regs.py` from the project root."""
import torch, triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import golf.ssd_xy_kernel as xk

target = GPUTarget("cuda", 90, 32)

def sig_for(kernel, ptr_dtypes):
    sig = {}
    for name in kernel.arg_names:
        if name in ptr_dtypes:
            sig[name] = ptr_dtypes[name]
    return sig

def compile_one(kernel, consts, ptrs, warps, stages_opt=3):
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in ptrs:
            sig[name] = ptrs[name]
        else:
            sig[name] = "i32"
    src = ASTSource(fn=kernel, signature=sig, constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
    ck = triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages_opt})
    md = ck.metadata
    return ck.n_regs if hasattr(ck, "n_regs") else None, md.shared, ck

base = dict(L=64, P=64, N=32, BLOCK_L=64, BLOCK_P=64, BLOCK_N=32, HAS_D=True, ACC=tl.float32, DOT=tl.bfloat16)
ptr_y = {"cb_ptr": "*fp32", "x_ptr": "*bf16", "dt_ptr": "*fp32", "cs_ptr": "*fp32", "c_ptr": "*bf16", "st_ptr": "*fp32",
         "D_ptr": "*fp32", "y_ptr": "*bf16"}
ptr_dx = {"x_ptr": "*bf16", "dy_ptr": "*bf16", "dt_ptr": "*fp32", "cs_ptr": "*fp32", "cb_ptr": "*fp32", "b_ptr": "*bf16",
          "ds_ptr": "*bf16", "D_ptr": "*fp32", "dx_ptr": "*bf16", "ddt_ptr": "*fp32", "dD_ptr": "*fp32"}

import subprocess, tempfile, os, re
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas-blackwell")
print("--- ptxas -v")
for name, kern, ptrs in (("y", xk._chunk_y_kernel, ptr_y), ("dx", xk._chunk_dx_kernel, ptr_dx)):
    for w, c, st in [(2, 1, 1), (4, 1, 1), (8, 1, 1), (4, 2, 1), (4, 4, 1), (8, 4, 1), (4, 2, 2), (4, 4, 3),
                     (8, 2, 2), (8, 2, 3), (8, 4, 3)]:
        ck = triton.compile(ASTSource(fn=kern, signature={n: ("constexpr" if n in {**base, 'CHUNKS':0,'STAGES':0} else ptrs.get(n, "i32")) for n in kern.arg_names},
                                      constexprs={(kern.arg_names.index(k),): v for k, v in {**base, "CHUNKS": c, "STAGES": st}.items()}),
                            target=target, options={"num_warps": w})
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ck.asm["ptx"])
        out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True)
        m = re.search(r"Used (\d+) registers", out.stderr + out.stdout)
        sp = re.search(r"(\d+) bytes spill stores", out.stderr + out.stdout)
        print(name, (w, c, st), "regs", m and m.group(1), "spill stores", sp and sp.group(1), "shared", ck.metadata.shared, flush=True)
