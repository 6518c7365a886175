"""golf's Triton causal depthwise conv1d + bias + SiLU (golf/conv_kernel.py) against causal-conv1d's
causal_conv1d_fn(x, weight, bias, activation="silu") on a CUDA device: parity first, then forward and
forward+backward time per call, against the memory floor.

Defaults are the production shapes of golf's Mamba-2 mixer: x a (B, C, T) channel-last view of a bf16
(b=64, t=2048, row) tensor's first c=832 channels (768 + 2 * 32), for each --row-strides value (832: a
contiguous (B, T, C) tensor; 1664: the mixer's slice of in_proj's output), weight (C, 4) and bias (C,) in
--wdtype (fp32 default, as training keeps them), dout channel-last like x.

1. Parity. out and the gradients (x, weight, bias for one random dout) of every implementation on the first
   --ref-b sequences against golf.ssm.causal_conv_silu_reference in fp32 (the same bf16 inputs), and golf's
   against causal_conv1d_fn on the whole batch: max |a - b| / max |b| per tensor. golf is timed only if each of
   its errors against the reference is within --tol or twice causal_conv1d_fn's.
2. Time: triton.testing.do_bench, median ms per call, and device time per call (kernel_bench.device_ms, what
   a training step pays). Floor: the bytes each call must move at --bw TB/s
   (forward: read x, write out; backward: read x, dout, write dx; the (C, W) parameters are negligible).
   "bwd ms" is fwd+bwd less fwd. Both go through autograd, which adds its own work around the kernels (on an H200,
   2026-12-01: causal-conv1d's "bwd ms" 1.29 against 0.50 ms a call for its backward kernel in the training
   step's profile). So the backward is also timed alone, as golf's fused mixer op calls it: each
   implementation's backward function writing dx into a slice of a (b, t, row) buffer, x and dout as above
   ("backward alone" table: device ms a call).

golf's launch variants: --block-t (rows a program walks), --block-c (its channels), --num-warps, each a
comma-separated list, every combination timed; they apply to the forward and backward kernels alike (to one of
them only with --launch-to fwd or bwd), and left out each kernel keeps its own default
(golf.conv_kernel.FWD_DEFAULTS, BWD_DEFAULTS). Rows are labelled "golf row=<row stride>", plus
" bt.. bc.. w.." ("-" for a kernel default) when more than one variant is.

    python bench/conv_kernel_bench.py                                  # production shapes, rows 832 and 1664
    python bench/conv_kernel_bench.py --row-strides 1664 --launch-to bwd \
        --block-t 64,128,256 --block-c 64,128,256 --num-warps 1,2,4 --json $OUT/conv_bwd_launch.json

On a lent H200 (bench/README.md): carry causal-conv1d's wheel if it is not installed there and run
`source bench/h200/h200_env.sh && python3 bench/conv_kernel_bench.py --json $OUT/conv_kernel.json`; no corpus
needed. --device cpu is a dry run in Triton's interpreter (TRITON_INTERPRET=1 before triton is imported; tiny
shapes, --dtype fp32), timed with a wall clock.

causal-conv1d and triton are imported lazily, so --help works anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

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

GRADS = ("dx", "dweight", "dbias")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default, what in (("b", 64, "batch (sequences)"), ("t", 2048, "sequence length"),
                                ("c", 832, "channels"), ("w", 4, "conv width")):
        ap.add_argument(f"--{name}", type=int, default=default, help=f"{what} (default {default})")
    ap.add_argument("--row-strides", default="832,1664",
                    help="x's stride over time, each >= c: one row of results each (default 832,1664)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="x dtype (default bf16)")
    ap.add_argument("--wdtype", choices=list(DTYPES), default="fp32", help="weight, bias dtype (default fp32)")
    ap.add_argument("--block-t", help="golf variants: rows a program walks (default: each kernel's own)")
    ap.add_argument("--block-c", help="golf variants: a program's channels (default: each kernel's own)")
    ap.add_argument("--num-warps", help="golf variants: warps per program (default: each kernel's own)")
    ap.add_argument("--launch-to", choices=("both", "fwd", "bwd"), default="both",
                    help="which of golf's kernels --block-t, --block-c and --num-warps apply to; the other keeps its "
                    "own launch (default both)")
    ap.add_argument("--ref-b", type=int, default=2, help="sequences checked against the fp32 reference (default 2)")
    ap.add_argument("--tol", type=float, default=0.02,
                    help="largest relative error against the reference, unless causal_conv1d_fn's is larger "
                    "(default 0.02)")
    ap.add_argument("--no-ref", action="store_true", help="time golf's kernel alone (no causal_conv1d_fn)")
    add_run_args(ap, warmup=25, rep=100,
                 device_help="cuda (default); cpu is a dry run in Triton's interpreter (tiny shapes, --dtype fp32)")
    return ap.parse_args(argv)


def import_causal_conv1d():
    """(causal_conv1d_fn, its backward function as golf's fused op calls it: bwd(x, weight, bias, dout, dx)), or
    None where causal-conv1d is not importable (its rows are then skipped)."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from causal_conv1d.cpp_functions import causal_conv1d_bwd_function
    except Exception:  # noqa: BLE001 -- missing, or built for another torch: skip its rows either way
        return None

    def bwd(x, weight, bias, dout, dx):
        # (x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, return_dinitial_states, silu)
        return causal_conv1d_bwd_function(x, weight, bias, dout, None, None, None, dx, False, True)

    return causal_conv1d_fn, bwd


def make_inputs(a: argparse.Namespace, row: int, b: int, seed: int = 0) -> dict:
    """x: (b, c, t) channel-last view of a (b, t, row) tensor; weight, bias as nn.Conv1d's init (uniform in
    +-1/sqrt(W)); dout channel-last."""
    gen = torch.Generator(device=a.device).manual_seed(seed)
    act, par = DTYPES[a.dtype], DTYPES[a.wdtype]
    base = torch.randn(b, a.t, row, generator=gen, device=a.device).to(act)
    bound = a.w ** -0.5
    weight = ((torch.rand(a.c, a.w, generator=gen, device=a.device) * 2 - 1) * bound).to(par)
    bias = ((torch.rand(a.c, generator=gen, device=a.device) * 2 - 1) * bound).to(par)
    dout = torch.randn(b, a.t, a.c, generator=gen, device=a.device).to(act).transpose(1, 2)
    return {"x": base[:, :, : a.c].transpose(1, 2), "weight": weight, "bias": bias, "dout": dout}


def reference_conv(x, weight, bias=None, activation=None):
    from golf.ssm import causal_conv_silu_reference
    return causal_conv_silu_reference(F.pad(x.float(), (weight.shape[1] - 1, 0)), weight.float()[:, None],
                                      bias.float())


def _leaves(inp: dict) -> tuple:
    return tuple(inp[k].detach().requires_grad_(True) for k in ("x", "weight", "bias"))  # x keeps its strides


def outputs(fn, inp: dict) -> dict:
    """out and the gradients of sum(out * dout), in fp32."""
    x, w, b = _leaves(inp)
    out = fn(x, w, b, activation="silu")
    out.backward(inp["dout"].to(out.dtype))
    return {"out": out.detach().float(), "dx": x.grad.float(), "dweight": w.grad.float(), "dbias": b.grad.float()}




def floor_ms(a: argparse.Namespace, act_bytes: int) -> dict:
    act = a.b * a.t * a.c * act_bytes  # one activation: x, out, dout or dx
    fwd, bwd = 2 * act, 3 * act
    return {"fwd_bytes": fwd, "fwd_bwd_bytes": fwd + bwd, "fwd_ms": fwd / (a.bw * 1e9),
            "fwd_bwd_ms": (fwd + bwd) / (a.bw * 1e9)}




def time_ms(fn, inp: dict, a: argparse.Namespace) -> dict:
    do_bench = bencher(a.device)
    with torch.no_grad():
        fwd = do_bench(lambda: fn(inp["x"], inp["weight"], inp["bias"], activation="silu"), warmup=a.warmup,
                       rep=a.rep, return_mode="median")
    x, w, b = _leaves(inp)
    both = do_bench(lambda: fn(x, w, b, activation="silu").backward(inp["dout"]), warmup=a.warmup, rep=a.rep,
                    grad_to_none=[x, w, b], return_mode="median")
    with torch.no_grad():
        fwd_dev = device_ms(lambda: fn(inp["x"], inp["weight"], inp["bias"], activation="silu"), a.device)
    both_dev = device_ms(lambda: fn(x, w, b, activation="silu").backward(inp["dout"]), a.device,
                         grad_to_none=[x, w, b])
    return {"fwd_ms": fwd, "fwd_bwd_ms": both, "fwd_device_ms": fwd_dev, "fwd_bwd_device_ms": both_dev}




def _ints(text: str) -> list[int] | None:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        return None


def launch_to_one(conv_kernel, fwd_keys: dict, bwd_keys: dict):
    """causal_conv1d_fn's call on golf's kernels, conv_fwd with the keywords fwd_keys and conv_bwd with bwd_keys
    (--launch-to: one of them gets the launch, the other keeps its own)."""
    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight, bias)
            return conv_kernel.conv_fwd(x, weight, bias, **fwd_keys)

        @staticmethod
        def backward(ctx, dout):
            return conv_kernel.conv_bwd(*ctx.saved_tensors, dout, **bwd_keys)

    return lambda x, weight, bias=None, activation=None: Fn.apply(x, weight, bias)


def bwd_alone_ms(bwd, inp: dict, row: int, a: argparse.Namespace) -> float:
    """Device ms a call of bwd(x, weight, bias, dout, dx) alone, dx a (b, c, t) channel-last view of channels
    [0, c) of a (b, t, row) buffer: where golf's fused mixer op has its conv backward write."""
    x, dout = inp["x"], inp["dout"]
    dx = torch.empty(x.shape[0], x.shape[2], row, dtype=x.dtype, device=x.device)[:, :, : x.shape[1]].transpose(1, 2)
    return device_ms(lambda: bwd(x, inp["weight"], inp["bias"], dout, dx), a.device)


def measure(a: argparse.Namespace, impls_by_row: dict, result: dict, bwds_by_row: dict | None = None) -> None:
    """Parity, then timing, of every row stride's implementations (and of their backward functions alone,
    bwds_by_row: {row: {name: bwd}}), into `result` (written out even if this raises)."""
    floor = floor_ms(a, DTYPES[a.dtype].itemsize)
    result["floor"] = floor
    rows, bwd_rows = [], []
    bwd_floor = floor["fwd_bwd_ms"] - floor["fwd_ms"]  # read x and dout, write dx
    for row, impls in impls_by_row.items():
        base = f"causal_conv1d row={row}"

        # 1. parity
        inp = make_inputs(a, row, a.b)
        small = {k: (v[: a.ref_b] if k in ("x", "dout") else v) for k, v in inp.items()}
        ref = outputs(reference_conv, small)
        full = {}
        for name, fn in impls.items():
            try:
                result["parity_vs_reference"][name] = rel_errs(outputs(fn, small), ref)
                full[name] = outputs(fn, inp)
            except Exception as e:  # noqa: BLE001 -- report a failing kernel and carry on with the others
                result["errors"][name] = repr(e)
                print(f"{name}: FAILED {e!r}", file=sys.stderr)
        for name, out in full.items():
            if name != base and base in full:
                result["parity_vs_causal_conv1d"][name] = rel_errs(out, full[base])
        del full

        # 2. time
        for name, fn in impls.items():
            if name in result["errors"]:
                continue
            errs, theirs = result["parity_vs_reference"][name], result["parity_vs_reference"].get(base, {})
            off = off_reference(errs, theirs, a.tol)
            if name != base and off:
                result["errors"][name] = f"parity: {off} off the reference by more than --tol and 2x causal_conv1d's"
                print(f"{name}: not timed, {result['errors'][name]}", file=sys.stderr)
                continue
            try:
                t = time_ms(fn, inp, a)
                bwd = (bwds_by_row or {}).get(row, {}).get(name)
                if bwd is not None:
                    t["bwd_alone_device_ms"] = bwd_alone_ms(bwd, inp, row, a)
            except Exception as e:  # noqa: BLE001
                result["errors"][name] = repr(e)
                print(f"{name}: timing FAILED {e!r}", file=sys.stderr)
                continue
            result["timing"][name] = t
            rows.append(timing_row(name, t, floor))
            if "bwd_alone_device_ms" in t:
                ms = t["bwd_alone_device_ms"]
                bwd_rows.append([name, f"{ms:.3f}", f"{ms / bwd_floor:.1f}x"])
    rows.append(timing_row("memory floor", floor, floor))
    cols = ["out", *GRADS]
    for title, errs in ((f"vs fp32 reference (first {a.ref_b} sequences)", result["parity_vs_reference"]),
                        ("vs causal_conv1d_fn (whole batch)", result["parity_vs_causal_conv1d"])):
        if errs:
            print(f"\nparity {title}: max |a - b| / max |b|\n")
            print(table([[n] + [f"{e[k]:.1e}" for k in cols] for n, e in errs.items()], ["impl", *cols]))
    print(f"\n{result['device']}, b={a.b} t={a.t} c={a.c} w={a.w} x {a.dtype}, weight/bias {a.wdtype}, "
          f"floor at {a.bw} TB/s\n")
    print(table(rows, TIMING_HEADER))
    if bwd_rows:
        print("\nbackward alone (dx into a slice of a (b, t, row) buffer), device ms a call\n")
        print(table(bwd_rows + [["memory floor", f"{bwd_floor:.3f}", "1.0x"]], ["impl", "bwd ms", "/ floor"]))


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    lists = {}
    for name in ("row_strides", "block_t", "block_c", "num_warps"):
        if getattr(a, name) is None:  # left out: the kernels' own defaults
            lists[name] = [None]
            continue
        vals = _ints(getattr(a, name))
        if not vals or min(vals) < 1:
            print(f"error: --{name.replace('_', '-')} takes a comma-separated list of positive ints, "
                  f"got {getattr(a, name)!r}", file=sys.stderr)
            return 2
        lists[name] = vals
    if min(lists["row_strides"]) < a.c:
        print(f"error: --row-strides must each be >= --c {a.c}, got {a.row_strides!r}", file=sys.stderr)
        return 2
    from golf import conv_kernel

    ref = None if a.no_ref else import_causal_conv1d()
    ref_fn, ref_bwd = ref if ref is not None else (None, None)
    if ref is None and not a.no_ref:
        print("causal_conv1d_fn is not importable here: its rows are skipped", file=sys.stderr)
    variants = list(itertools.product(lists["block_t"], lists["block_c"], lists["num_warps"]))

    def launch(bt, bc, nw) -> dict:
        return {k: v for k, v in (("block_t", bt), ("block_c", bc), ("num_warps", nw)) if v is not None}

    def golf_fn(bt, bc, nw):
        keys = launch(bt, bc, nw)
        if a.launch_to == "both":
            return lambda x, weight, bias=None, activation=None: conv_kernel.causal_conv1d_silu(x, weight, bias, **keys)
        return launch_to_one(conv_kernel, keys if a.launch_to == "fwd" else {}, keys if a.launch_to == "bwd" else {})

    def golf_bwd(bt, bc, nw):
        keys = launch(bt, bc, nw) if a.launch_to != "fwd" else {}
        return lambda x, weight, bias, dout, dx: conv_kernel.conv_bwd(x, weight, bias, dout, dx=dx, **keys)

    impls_by_row, bwds_by_row = {}, {}  # {row stride: {name: function}}, causal-conv1d's (the base) first
    for row in lists["row_strides"]:
        base = f"causal_conv1d row={row}"
        impls = {} if ref_fn is None else {base: ref_fn}
        bwds = {} if ref_bwd is None else {base: ref_bwd}
        for v in variants:
            bt, bc, nw = ("-" if n is None else n for n in v)
            name = f"golf row={row}" + (f" bt{bt} bc{bc} w{nw}" if len(variants) > 1 else "")
            impls[name], bwds[name] = golf_fn(*v), golf_bwd(*v)
        impls_by_row[row], bwds_by_row[row] = impls, bwds
    result = new_result(a, ("torch", "triton", "causal_conv1d"), ("parity_vs_reference", "parity_vs_causal_conv1d"))
    return run_and_write(a, result, lambda: measure(a, impls_by_row, result, bwds_by_row))


if __name__ == "__main__":
    sys.exit(main())
