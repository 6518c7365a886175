"""Registers a thread and spill stores of golf's SSD chunk kernels at hybrid_12_b131k's shapes, compiled offline for
sm_90a on a machine without a GPU (Triton's front end for a stand-in sm_90 target, then its PTX through the ptxas
that ships with Triton, ptxas-blackwell; the H200 image has Triton 3.6, this machine 3.9, so the H200's counts may
differ), under each register cap (ptxas's .maxnreg) given.

Unlike the earlier offline scripts beside it (2026-12-02_xy_walk_offline, 2026-12-02_qk_rope_offline), the compile
here is specialized as Triton's JIT specializes a real launch: the unit strides (each tensor's last) as the
constant 1, every other stride and every pointer marked divisible by 16. Without that the loads cannot be
vectorized and the per-element addresses are 64-bit, which overstated the dx kernel's registers (203 against 141).
Chunk 64, headdim 64, d_state 32; bf16 x, dy, B, C, dstates; fp32 C·B, dt, dA_cumsum, D, states. Run from the root:

    env -u TRITON_INTERPRET TRITON_DEFAULT_FP_FUSION=1 .venv/bin/python \
        bench/results/2026-12-02_register_caps_offline/offline_regs.py
"""

import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import golf.ssd_dcb_kernel as dk
import golf.ssd_kernel as sk
import golf.ssd_xy_kernel as xk

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas-blackwell")
BF16 = {"x_ptr", "dy_ptr", "b_ptr", "c_ptr", "ds_ptr", "dst_ptr", "dx_ptr", "y_ptr", "sin_ptr",
        "dt_ptr", "B_ptr", "C_ptr", "states_ptr", "dstates_ptr"}  # the pass kernel's: raw dt, B, C, bf16 states
UNIT = {"sx_p", "sy_p", "sdt_l", "scs_l", "scb_j", "sb_n", "sc_n", "sds_p", "sdx_p", "sa_l", "sst_p", "sst_n", "sd_j",
        "ssi_n", "sdb_n",  # the chunk kernels' last strides; then the pass kernel's (raw dt is a column: h stride 1)
        "sdt_h", "sB_n", "sC_n", "sdy_p", "ss_n", "sds_n", "sa_c", "sdk_l"}
# the sizes at hybrid_12_b131k's shapes: Triton specializes an int equal to 1 as that constant and marks one
# divisible by 16 (12 is neither); every stride not in UNIT is taken as divisible by 16
SIZES = {"T": 2048, "seqlen": 2048, "chunks": 32, "nchunks": 32, "chunk_size": 64, "heads_per_group": 12,
         "splits": 1, "hdim": 64, "dstate": 32}
SHAPES = {"L": 64, "P": 64, "BLOCK_L": 64, "BLOCK_P": 64, "ACC": tl.float32, "DOT": tl.bfloat16}
# golf.ssd_kernel's pass kernel as golf.mixer_op's "mamba_keep_golf_overlap" launches it: the kept log-decays read
# (KEPT_CS), softplus'ed dt with a bias, no initial state or final-state gradient, bf16 dots
PASS = {"BL": 64, "BP": 64, "BN": 32, "SOFTPLUS": True, "HAS_BIAS": True, "HAS_INIT": False, "HAS_DFINAL": False,
        "STORE_DINIT": False, "STORE_FINAL": False, "ACC": tl.float32, "DOT": tl.bfloat16, "PREC": "ieee",
        "KEPT_CS": True}
# (name, kernel, its other constexprs, [(num_warps, num_stages, maxnreg), ...])
CASES = [
    ("dcb dA part", dk._chunk_local_bwd_kernel,
     {"N": 1, "BLOCK_N": 16, "WITH_DX": False, "WITH_STATES": False, "ATOMIC": False},
     [(8, 1, None), (8, 1, 128), (8, 2, None), (8, 2, 128), (4, 1, None), (4, 1, 128)]),
    ("dx", xk._chunk_dx_kernel, {"N": 32, "BLOCK_N": 32, "HAS_D": True},
     [(4, 1, None), (4, 1, 168), (4, 1, 128), (8, 1, None)]),
    ("y", xk._chunk_y_kernel, {"N": 32, "BLOCK_N": 32, "HAS_D": True}, [(4, 1, None), (8, 1, None)]),
    ("pass, states entering (role 0)", sk._ssd_bwd_pass_kernel, PASS | {"ROLE": 0, "STORE_DDA": False},
     [(4, 1, None), (4, 1, 80), (2, 1, None), (8, 1, None)]),
    ("pass, state gradients (role 1)", sk._ssd_bwd_pass_kernel, PASS | {"ROLE": 1, "STORE_DDA": True},
     [(4, 1, None), (4, 1, 80), (2, 1, None), (8, 1, None)]),
]


def compiled(kernel, consts: dict, warps: int, stages: int, maxnreg):
    ones = {n for n in kernel.arg_names if n in UNIT or SIZES.get(n) == 1}
    consts = {**consts, **{n: 1 for n in ones}}
    signature = {n: "constexpr" if n in consts else ("*bf16" if n in BF16 else "*fp32") if n.endswith("_ptr")
                 else "i32" for n in kernel.arg_names}
    attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n in kernel.arg_names
             if n not in consts and SIZES.get(n, 16) % 16 == 0}
    src = ASTSource(fn=kernel, signature=signature, attrs=attrs,
                    constexprs={(kernel.arg_names.index(k),): v for k, v in consts.items()})
    options = {"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(src, target=TARGET, options=options)


def ptxas_report(ptx: str) -> tuple[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True,
                         check=True)
    os.unlink(f.name)
    text = out.stderr + out.stdout
    return re.search(r"Used (\d+) registers", text).group(1), re.search(r"(\d+) bytes spill stores", text).group(1)


def report(cases) -> None:
    """One table row per (case, launch): registers a thread, spill stores, programs an SM by registers. A case is
    (name, kernel, its constexprs, [(num_warps, num_stages, maxnreg), ...])."""
    print("| kernel | warps | stages | maxnreg | registers | spill stores (bytes) | programs an SM by registers |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kernel, consts, launches in cases:
        for warps, stages, maxnreg in launches:
            regs, spills = ptxas_report(compiled(kernel, consts, warps, stages, maxnreg).asm["ptx"])
            fits = 65536 // (-(-int(regs) // 8) * 8 * 32 * warps)  # an SM allocates registers 8 a thread at a time
            print(f"| {name} | {warps} | {stages} | {maxnreg or '-'} | {regs} | {spills} | {fits} |", flush=True)


if __name__ == "__main__":
    report([(name, kernel, consts if kernel is sk._ssd_bwd_pass_kernel else {**SHAPES, **consts}, launches)
            for name, kernel, consts, launches in CASES])
