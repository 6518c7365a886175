"""golf's fused SSD scan (golf/ssd_kernel.py) against mamba-ssm's mamba_chunk_scan_combined on a CUDA device:
parity first, then forward and forward+backward time per call, against the memory floor (issue 22).

Defaults are the production shapes of hybrid_12_b131k: b=64 sequences of l=2048, h=12 heads of headdim p=64,
g=1 group, d_state n=32, chunk 64; x, B, C in bf16, dt (raw), A, D, dt_bias in fp32; dt_softplus=True, no
initial or final state (as in training).

1. Parity. Every implementation's y and gradients (x, dt, A, B, C, D, dt_bias for one random dy) on the first
   --ref-b sequences against golf.ssm.ssd_scan_reference in fp32 (the same bf16 inputs), and each golf variant
   against mamba-ssm on the whole batch: max |a - b| / max |b| per tensor. A golf variant is timed only if
   each of its errors against the reference is within --tol or twice mamba-ssm's (both round in bf16, so
   they need not agree more closely with each other than each does with the reference).
2. Time: triton.testing.do_bench (warm-up first, so mamba-ssm's autotuning is done), median ms per call, and
   the device time per call from torch.profiler (kernel_bench.device_ms: what a training step pays; do_bench's
   wall time also counts host launch gaps, most likely why mamba-ssm looked 2x slower here than in a step).
   Floor: the bytes each call must move (forward: read x, B, C, dt, write y; backward: read x, B, C, dt, dy,
   write dx, dB, dC, ddt) at --bw TB/s. "bwd ms" is fwd+bwd less fwd.

golf's variants: --bwds (its two backward designs, golf/ssd_kernel.py's module docstring): "walk" (one program
per (head, batch) walking the chunks in reverse) and "split" (the states and state gradients of every chunk by
two sequential passes side by side, then one program per (batch, chunk, head)), × --head-sums × --num-warps;
--split-states fp32 adds split variants storing those states in fp32 instead of the dot dtype (bf16); --fwds
its two forward designs: "walk" (default: one program per (head, batch) walking the chunks) and "split" (the
state recurrence alone, then one program per (batch, chunk, head); with bwd=split the backward reuses its
states, as model.ssm_scan "golf_split" runs). Rows are labelled "golf <head sum> w<warps>[ fwd=split]
bwd=<design>[ states=fp32]".

    python bench/ssd_kernel_bench.py                         # production shapes: walk and split, 4 and 8 warps
    python bench/ssd_kernel_bench.py --bwds split --num-warps 4 --split-states dot,fp32
    python bench/ssd_kernel_bench.py --fwds walk,split --bwds split --num-warps 4   # golf_split's forward
    python bench/ssd_kernel_bench.py --head-sums atomic,sum --json $OUT/ssd_kernel.json

On a lent H200 (bench/README.md): carry .carry/whl (mamba-ssm's pure-Python wheel) and run
`source bench/h200/h200_env.sh && python3 bench/ssd_kernel_bench.py --json $OUT/ssd_kernel.json`; no corpus needed.

mamba-ssm is imported lazily (golf.ssm._import_mamba_triton), so --help works anywhere.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # kernel_bench, also when a test loads this file

from kernel_bench import (
    TIMING_HEADER,
    add_run_args,
    bencher,
    cuda_missing,
    device_ms,
    new_result,
    off_reference,
    rel_errs,
    run_and_write,
    table,
    timing_row,
)

GRADS = ("x", "dt", "A", "B", "C", "D", "dt_bias")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default, what in (("b", 64, "batch (sequences)"), ("l", 2048, "sequence length"),
                                ("h", 12, "heads"), ("p", 64, "headdim"), ("g", 1, "groups of B, C"),
                                ("n", 32, "d_state"), ("chunk", 64, "chunk size")):
        ap.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default {default})")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                    help="x, B, C dtype (default bf16)")
    ap.add_argument("--num-warps", default="4,8", help="golf kernel variants: warps per program (default 4,8)")
    ap.add_argument("--head-sums", default="atomic",
                    help="golf kernel variants: dB/dC head sum, atomic and/or sum (default atomic)")
    ap.add_argument("--bwds", default="walk,split",
                    help="golf kernel variants: backward design, walk and/or split (default walk,split)")
    ap.add_argument("--fwds", default="walk",
                    help="golf kernel variants: forward design, walk and/or split (default walk)")
    ap.add_argument("--split-states", default="dot",
                    help="golf split variants: the stored states' dtype, dot (the dot dtype: bf16 for bf16) "
                    "and/or fp32 (default dot)")
    ap.add_argument("--ref-b", type=int, default=2,
                    help="sequences checked against the fp32 reference (default 2)")
    ap.add_argument("--tol", type=float, default=0.05,
                    help="largest relative error against the reference, unless mamba-ssm's is larger "
                    "(default 0.05)")
    ap.add_argument("--no-mamba", action="store_true", help="time golf's kernel alone")
    add_run_args(ap, warmup=50, rep=200,
                 device_help="cuda (default); cpu is a dry run of this script in Triton's interpreter "
                 "(TRITON_INTERPRET=1, tiny shapes, --dtype fp32, --no-mamba), timed with a wall clock")
    return ap.parse_args(argv)


def make_inputs(a: argparse.Namespace, b: int, seed: int = 0) -> dict:
    """Mamba-2-like inputs: dt_bias = softplus^-1 of dt in [1e-3, 1e-1], A = -[1, 16] (Mamba2's init)."""
    gen = torch.Generator(device=a.device).manual_seed(seed)
    act = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, device=a.device).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=a.device)

    dt0 = torch.exp(rand(a.h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))  # (h,) log-uniform
    return {"x": randn(b, a.l, a.h, a.p, dtype=act), "dt": 0.5 * randn(b, a.l, a.h),
            "A": -(1 + 15 * rand(a.h)), "B": randn(b, a.l, a.g, a.n, dtype=act),
            "C": randn(b, a.l, a.g, a.n, dtype=act), "D": torch.ones(a.h, device=a.device),
            "dt_bias": dt0 + torch.log(-torch.expm1(-dt0))}  # softplus(dt_bias) = dt0


def call(scan, inp: dict, chunk: int):
    return scan(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], chunk, D=inp["D"], dt_bias=inp["dt_bias"],
                dt_softplus=True)


def outputs(scan, inp: dict, dy: torch.Tensor, chunk: int) -> dict:
    """y and the gradients of sum(y * dy), in fp32."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    y = call(scan, leaves, chunk)
    y.backward(dy)
    return {"y": y.detach().float()} | {k: leaves[k].grad.float() for k in GRADS}




def reference_scan(x, dt, A, B, C, chunk, D, dt_bias, dt_softplus):
    from golf.ssm import ssd_scan_reference
    return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk)[0]


def floor_ms(a: argparse.Namespace, act_bytes: int) -> dict:
    x = a.b * a.l * a.h * a.p * act_bytes  # x, y, dy, dx
    bc = a.b * a.l * a.g * a.n * act_bytes  # B, C, dB, dC each
    dt = a.b * a.l * a.h * 4  # dt, ddt (fp32)
    fwd = 2 * x + 2 * bc + dt
    bwd = 3 * x + 4 * bc + 2 * dt  # read x, dy, B, C, dt; write dx, dB, dC, ddt
    return {"fwd_bytes": fwd, "fwd_bwd_bytes": fwd + bwd, "fwd_ms": fwd / (a.bw * 1e9),
            "fwd_bwd_ms": (fwd + bwd) / (a.bw * 1e9)}




def time_ms(scan, inp: dict, dy: torch.Tensor, a: argparse.Namespace) -> dict:
    do_bench = bencher(a.device)
    with torch.no_grad():
        fwd = do_bench(lambda: call(scan, inp, a.chunk), warmup=a.warmup, rep=a.rep, return_mode="median")
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    both = do_bench(lambda: call(scan, leaves, a.chunk).backward(dy), warmup=a.warmup, rep=a.rep,
                    grad_to_none=list(leaves.values()), return_mode="median")
    with torch.no_grad():
        fwd_dev = device_ms(lambda: call(scan, inp, a.chunk), a.device)
    both_dev = device_ms(lambda: call(scan, leaves, a.chunk).backward(dy), a.device,
                         grad_to_none=list(leaves.values()))
    return {"fwd_ms": fwd, "fwd_bwd_ms": both, "fwd_device_ms": fwd_dev, "fwd_bwd_device_ms": both_dev}




def measure(a: argparse.Namespace, impls: dict, result: dict) -> None:
    """Parity, then timing, of every implementation, into `result` (written out even if this raises)."""
    # 1. parity
    inp = make_inputs(a, a.b)
    gen = torch.Generator(device=a.device).manual_seed(1)  # seeded like the inputs: the same dy in every run
    dy = torch.randn(a.b, a.l, a.h, a.p, generator=gen, device=a.device).to(inp["x"].dtype)
    small = {k: (v[: a.ref_b] if v.dim() > 1 else v) for k, v in inp.items()}
    ref = outputs(reference_scan, small, dy[: a.ref_b], a.chunk)
    full = {}
    for name, scan in impls.items():
        try:
            result["parity_vs_reference"][name] = rel_errs(outputs(scan, small, dy[: a.ref_b], a.chunk), ref)
            full[name] = outputs(scan, inp, dy, a.chunk)
        except Exception as e:  # noqa: BLE001 -- report a failing kernel and carry on with the others
            result["errors"][name] = repr(e)
            print(f"{name}: FAILED {e!r}", file=sys.stderr)
    base = "mamba-ssm" if "mamba-ssm" in full else None
    for name, out in full.items():
        if name != base and base is not None:
            result["parity_vs_mamba"][name] = rel_errs(out, full[base])
    del full
    cols = ["y"] + [f"d{k}" for k in GRADS]
    for title, errs in ((f"vs fp32 reference (first {a.ref_b} sequences)", result["parity_vs_reference"]),
                        ("vs mamba-ssm (whole batch)", result["parity_vs_mamba"])):
        if errs:
            print(f"\nparity {title}: max |a - b| / max |b|\n")
            rows = [[n] + [f"{e[k]:.1e}" for k in ["y", *GRADS]] for n, e in errs.items()]
            print(table(rows, ["impl", *cols]))

    # 2. time
    floor = floor_ms(a, inp["x"].element_size())
    result["floor"] = floor
    rows = []
    for name, scan in impls.items():
        if name in result["errors"]:
            continue
        errs, mamba_errs = result["parity_vs_reference"][name], result["parity_vs_reference"].get("mamba-ssm", {})
        off = off_reference(errs, mamba_errs, a.tol)
        if name != "mamba-ssm" and off:
            result["errors"][name] = f"parity: {off} off the reference by more than --tol and 2x mamba-ssm's"
            print(f"{name}: not timed, {result['errors'][name]}", file=sys.stderr)
            continue
        try:
            t = time_ms(scan, inp, dy, a)
        except Exception as e:  # noqa: BLE001
            result["errors"][name] = repr(e)
            print(f"{name}: timing FAILED {e!r}", file=sys.stderr)
            continue
        result["timing"][name] = t
        rows.append(timing_row(name, t, floor))
    rows.append(timing_row("memory floor", floor, floor))
    print(f"\n{result['device']}, b={a.b} l={a.l} h={a.h} p={a.p} g={a.g} n={a.n} chunk={a.chunk} {a.dtype}, "
          f"floor at {a.bw} TB/s\n")
    print(table(rows, TIMING_HEADER))
    print("\nbwd=walk: one program per (head, batch) walks the chunks in reverse; bwd=split: states and state "
          "gradients by two sequential passes, then one program per (batch, chunk, head); fwd=split: the states "
          "by one sequential pass, then y by one program per (batch, chunk, head) (golf/ssd_kernel.py)")


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    from golf import ssd_kernel
    from golf.ssm import _import_mamba_triton

    states = {"dot": None, "fp32": torch.float32}
    for name, values, known in (("--bwds", a.bwds, ssd_kernel.BWDS), ("--fwds", a.fwds, ssd_kernel.FWDS),
                                ("--split-states", a.split_states, states),
                                ("--head-sums", a.head_sums, ssd_kernel.HEAD_SUMS)):
        if not set(values.split(",")) <= set(known):
            print(f"error: {name} takes a comma-separated list of {list(known)}, got {values!r}", file=sys.stderr)
            return 2

    impls = {}
    if not a.no_mamba:
        mamba = _import_mamba_triton()
        if mamba is None:
            print("error: mamba-ssm's Triton kernels are not importable here (or pass --no-mamba)",
                  file=sys.stderr)
            return 2
        impls["mamba-ssm"] = mamba["scan"]
    for fwd, bwd in itertools.product(a.fwds.split(","), a.bwds.split(",")):
        for hs in a.head_sums.split(","):
            for w in a.num_warps.split(","):
                for st in a.split_states.split(",") if "split" in (fwd, bwd) else ["dot"]:
                    label = (f"golf {hs} w{w}" + (" fwd=split" if fwd == "split" else "") + f" bwd={bwd}"
                             + ("" if st == "dot" else f" states={st}"))
                    impls[label] = functools.partial(ssd_kernel.ssd_scan, head_sum=hs, num_warps=int(w), fwd=fwd,
                                                     bwd=bwd, states_dtype=states[st])

    result = new_result(a, ("torch", "triton", "mamba_ssm"), ("parity_vs_reference", "parity_vs_mamba"))
    return run_and_write(a, result, lambda: measure(a, impls, result))


if __name__ == "__main__":
    sys.exit(main())
