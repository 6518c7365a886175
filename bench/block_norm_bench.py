"""golf::add_mix_norm (golf/block_norm_kernel.py, model.block_norm "golf") against torch.compile of its PyTorch
twin (golf.model.add_mix_norm_reference: the torch path's own expressions), on a CUDA device: forward and
forward + backward ms per call for each combination of the glue's pieces the model calls, the memory floor
(the bytes each must move / --bw), and each result's max relative error against the fp32 twin.

The cases (CASES), at golf's d_model 512 and 64 x 2048 = 131072 tokens, bf16 activations (the autocast stream)
and fp32 parameters, as GolfLM._blocks_golf calls the op:
    first     block 0's pre-norm: the mix and norm of the embedding stream (x is x0), no residual add
    block     a later block's first pre-norm: the pending residual add, the mix, the norm
    keep      the same, writing the block input too (an encoder block whose output a U-Net skip keeps)
    decoder   a decoder block's first pre-norm: the residual add, the skip add, the mix, the norm
    sublayer  the MLP's pre-norm (and a Mamba block's): the residual add and the norm, no mix
    final     the final norm: the residual add and the norm (only h used)
The backward takes the gradients the model gives each output: h always, xm where the next sublayer adds to it
(every case but final), out for keep.

Bytes each call must move (the floor): the forward reads x, y, skip, x0 as present and writes xm, h (and out
for keep), plus rstd; the backward reads g_h, g_xm, g_out as present, x, y, skip, x0, rstd and writes dx, dy,
dskip, dx0 (the parameters' partial sums are ignored: < 2% of it). torch.compile's autograd is timed as one
forward + backward call against the sum of both floors.

    python3 bench/block_norm_bench.py                                   # production shapes, every case
    python3 bench/block_norm_bench.py --cases decoder,sublayer --json $OUT/block_norm.json
    python3 bench/block_norm_bench.py --device cpu --rows 64 --dim 48   # a dry run in Triton's interpreter
    python3 bench/block_norm_bench.py --bwd-launch 1:1:64:3,2:2:32:3,4:4:16:3,8:8:8:2 --fwd-launch 8:8,4:4,16:8
                                         # also each kernel alone at those launch settings, to pick the defaults

--device cpu runs the kernels in Triton's interpreter (TRITON_INTERPRET=1 is set before triton is imported)
and the twin eagerly (no torch.compile): it checks the plumbing, its times mean nothing. triton and golf's
kernels are imported only after the device is checked, so --help works anywhere. Ran on an H200 on
2026-12-01 (bench/RESULTS.md twelfth block) before --fwd-launch and --bwd-launch were added.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import bencher, cuda_missing, new_result, rel_errs, run_and_write, table

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# name: (y, skip, mix, keep_out, gradients the backward gets: g_xm, g_out)
CASES = {
    "first": {"y": False, "skip": False, "mix": True, "keep_out": False, "g_xm": True, "g_out": False},
    "block": {"y": True, "skip": False, "mix": True, "keep_out": False, "g_xm": True, "g_out": False},
    "keep": {"y": True, "skip": False, "mix": True, "keep_out": True, "g_xm": True, "g_out": True},
    "decoder": {"y": True, "skip": True, "mix": True, "keep_out": False, "g_xm": True, "g_out": False},
    "sublayer": {"y": True, "skip": False, "mix": False, "keep_out": False, "g_xm": True, "g_out": False},
    "final": {"y": True, "skip": False, "mix": False, "keep_out": False, "g_xm": False, "g_out": False},
}


def bytes_moved(case: dict, rows: int, dim: int, act_bytes: int) -> dict:
    """{"fwd", "bwd"}: the bytes one call must move (module docstring), activations of act_bytes, rstd fp32."""
    act = rows * dim * act_bytes
    reads = 1 + case["y"] + case["skip"] + case["mix"]  # x, y, skip, x0
    fwd_writes = 2 + (case["keep_out"] and case["mix"])  # xm, h, out
    grads_in = 1 + case["g_xm"] + (case["g_out"] and case["mix"] and case["keep_out"])  # g_h, g_xm, g_out
    bwd_writes = 1 + case["y"] + case["skip"] + case["mix"]  # dx, dy, dskip, dx0
    return {"fwd": (reads + fwd_writes) * act + rows * 4, "bwd": (grads_in + reads + bwd_writes) * act + rows * 4}


def parse_launches(text: str, fields: int) -> list[tuple[int, ...]]:
    """--fwd-launch / --bwd-launch: comma-separated entries of `fields` colon-separated positive ints."""
    out = []
    for entry in (e for e in text.split(",") if e):
        parts = entry.split(":")
        if len(parts) != fields or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"a launch entry is {fields} positive ints joined by ':', got {entry!r}")
        out.append(tuple(int(p) for p in parts))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=131072, help="rows (tokens) (default 131072)")
    ap.add_argument("--dim", type=int, default=512, help="channels, d_model (default 512)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="activations' dtype (default bf16)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (default all)")
    ap.add_argument("--norm-scale", type=float, default=0.5, help="the pre-norm's factor (default 0.5)")
    ap.add_argument("--bw", type=float, default=4.8, help="memory bandwidth for the floor, TB/s (default 4.8)")
    ap.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms (default 25)")
    ap.add_argument("--rep", type=int, default=200, help="do_bench repetitions, ms (default 200)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run in Triton's interpreter")
    ap.add_argument("--fwd-launch", default="", help="also time the forward kernel alone at these launch settings: "
                    "comma-separated BLOCK_M:WARPS entries, e.g. 8:8,4:4,16:8 (default none)")
    ap.add_argument("--bwd-launch", default="", help="also time the backward kernel alone at these launch settings: "
                    "comma-separated BLOCK_M:WARPS:TILES:STAGES entries, e.g. 1:1:64:3,2:2:32:3 (default none)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    try:
        a.fwd_launches = parse_launches(a.fwd_launch, 2)
        a.bwd_launches = parse_launches(a.bwd_launch, 4)
    except ValueError as e:
        ap.error(str(e))
    cases = [c for c in a.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad or not cases:
        ap.error(f"--cases takes names from {', '.join(CASES)}, got {a.cases!r}")
    if a.rows < 1 or a.dim < 1:
        ap.error("--rows and --dim must be positive")
    a.case_list = cases
    return a


def _inputs(case: dict, rows: int, dim: int, dtype: torch.dtype, device: str) -> dict:
    """The op's arguments for `case`, and the cotangents of its outputs (g_h, g_xm, g_out)."""
    gen = torch.Generator(device=device).manual_seed(0)

    def act():
        return torch.randn(rows, dim, generator=gen, device=device).to(dtype)

    def par(*shape):
        return (1 + 0.1 * torch.randn(*shape, generator=gen, device=device)).requires_grad_(True)

    x = act().requires_grad_(True)
    args = {"x": x, "y": None, "s": None, "skip": None, "w": None, "x0": None, "mix": None}
    if case["y"]:
        args["y"], args["s"] = act().requires_grad_(True), par(dim)
    if case["skip"]:
        args["skip"], args["w"] = act().requires_grad_(True), par(dim)
    if case["mix"]:
        args["x0"], args["mix"] = (x if not case["y"] else act().requires_grad_(True)), par(2, dim)
    cot = {"g_h": act(), "g_xm": act() if case["g_xm"] else None, "g_out": act() if case["g_out"] else None}
    return {"args": args, "cot": cot}


def _backward(outs, cot) -> None:
    out, xm, h = outs
    pairs = [(h, cot["g_h"]), (xm, cot["g_xm"]), (out, cot["g_out"])]
    pairs = [(o, g) for o, g in pairs if o is not None and g is not None]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


def _run(fn, inp, case, norm_scale, backward: bool):
    outs = fn(**inp["args"], norm_scale=norm_scale, keep_out=case["keep_out"])
    if backward:
        _backward(outs, inp["cot"])
    return outs


def _parity(fn, inp, case, norm_scale, reference) -> dict:
    """max relative error of fn's outputs and gradients against the fp32 twin on the same values."""
    leaves = [t for t in inp["args"].values() if t is not None]

    def collect(f, args):
        for t in args.values():
            if t is not None:
                t.grad = None
        outs = _run(f, {"args": args, "cot": inp["cot"]}, case, norm_scale, True)
        got = {k: o.detach().float() for k, o in zip(("out", "xm", "h"), outs) if o is not None}
        got.update({f"d{k}": t.grad.float() for k, t in args.items() if t is not None and t.grad is not None})
        return got

    got = collect(fn, inp["args"])
    ref_args = {k: None if t is None else t.detach().float().requires_grad_(True) for k, t in inp["args"].items()}
    if case["mix"] and not case["y"]:
        ref_args["x0"] = ref_args["x"]
    want = collect(reference, ref_args)
    for t in leaves:
        t.grad = None
    return rel_errs({k: got[k] for k in want if k in got}, want)


def measure_launches(a: argparse.Namespace, result: dict, bench, bk) -> None:
    """Each kernel alone at each --fwd-launch / --bwd-launch setting, per case: ms a call against its floor, so
    that one device call can pick the defaults (golf/block_norm_kernel.py FWD_TILE, BWD_TILE, BWD_TILES...)."""
    dtype = DTYPES[a.dtype]
    rows_out = []
    for name in a.case_list:
        case = CASES[name]
        inp = _inputs(case, a.rows, a.dim, dtype, a.device)
        args = {k: None if t is None else t.detach() for k, t in inp["args"].items()}
        cot = inp["cot"]
        nbytes = bytes_moved(case, a.rows, a.dim, torch.tensor([], dtype=dtype).element_size())
        _, _, _, rstd = bk.add_mix_norm_fwd_kernels(*args.values(), a.norm_scale, case["keep_out"])
        g_out = cot["g_out"] if case["keep_out"] and case["mix"] else None
        runs = [("fwd", launch, functools.partial(bk.add_mix_norm_fwd_kernels, *args.values(), a.norm_scale,
                                                  case["keep_out"], block_m=launch[0], num_warps=launch[1]))
                for launch in a.fwd_launches]
        runs += [("bwd", launch, functools.partial(bk.add_mix_norm_bwd_kernels, g_out, cot["g_xm"], cot["g_h"],
                                                   *args.values(), rstd, a.norm_scale, block_m=launch[0],
                                                   num_warps=launch[1], tiles=launch[2], num_stages=launch[3]))
                 for launch in a.bwd_launches]
        for way, launch, call in runs:
            label = ":".join(map(str, launch))
            try:
                ms = bench(call, warmup=a.warmup, rep=a.rep)
            except Exception as e:  # noqa: BLE001 -- a launch the kernel refuses leaves the others' rows
                result["errors"][f"{name}/{way} {label}"] = repr(e)
                print(f"{name} / {way} {label} failed: {e!r}", file=sys.stderr)
                continue
            floor = nbytes[way] / (a.bw * 1e12) * 1e3
            result["launch"].setdefault(name, []).append({"way": way, "launch": label, "ms": ms, "floor_ms": floor})
            rows_out.append([name, way, label, f"{ms:.3f}", f"{floor:.3f}", f"{ms / floor:.2f}x"])
    print(table(rows_out, ["case", "kernel", "launch", "ms", "floor", "ms / floor"]))


def measure(a: argparse.Namespace, result: dict) -> None:
    from golf import block_norm_kernel as bk
    from golf.model import add_mix_norm_reference

    cuda = a.device == "cuda"
    dtype = DTYPES[a.dtype]
    bench = bencher(a.device)
    impls = {"golf": bk.add_mix_norm,
             "torch.compile" if cuda else "torch eager": torch.compile(add_mix_norm_reference) if cuda
             else add_mix_norm_reference}
    rows_out = []
    for name in a.case_list:
        case = CASES[name]
        inp = _inputs(case, a.rows, a.dim, dtype, a.device)
        nbytes = bytes_moved(case, a.rows, a.dim, torch.tensor([], dtype=dtype).element_size())
        floor = {"fwd_ms": nbytes["fwd"] / (a.bw * 1e12) * 1e3,
                 "fwd_bwd_ms": (nbytes["fwd"] + nbytes["bwd"]) / (a.bw * 1e12) * 1e3}
        result["timing"][name] = {"floor": floor, "bytes": nbytes}
        leaves = [t for t in inp["args"].values() if t is not None]
        for impl, fn in impls.items():
            try:
                result["parity"].setdefault(name, {})[impl] = _parity(fn, inp, case, a.norm_scale,
                                                                       add_mix_norm_reference)
                call = functools.partial(_run, fn, inp, case, a.norm_scale)
                with torch.no_grad():
                    fwd = bench(lambda: call(False), warmup=a.warmup, rep=a.rep)  # noqa: B023 (called at once)
                both = bench(lambda: call(True), warmup=a.warmup, rep=a.rep, grad_to_none=leaves)  # noqa: B023
            except Exception as e:  # noqa: BLE001 -- one implementation failing leaves the others' rows
                result["errors"][f"{name}/{impl}"] = repr(e)
                print(f"{name} / {impl} failed: {e!r}", file=sys.stderr)
                continue
            t = {"fwd_ms": fwd, "fwd_bwd_ms": both}
            result["timing"][name][impl] = t
            err = max(result["parity"][name][impl].values())
            rows_out.append([name, impl, f"{fwd:.3f}", f"{floor['fwd_ms']:.3f}", f"{fwd / floor['fwd_ms']:.2f}x",
                             f"{both:.3f}", f"{floor['fwd_bwd_ms']:.3f}", f"{both / floor['fwd_bwd_ms']:.2f}x",
                             f"{err:.1e}"])
    print(table(rows_out, ["case", "impl", "fwd ms", "fwd floor", "fwd / floor", "fwd+bwd ms", "fwd+bwd floor",
                           "fwd+bwd / floor", "max rel err"]))
    if a.fwd_launches or a.bwd_launches:
        measure_launches(a, result, bench, bk)


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 1
    if a.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported (golf.block_norm_kernel)
    result = new_result(a, ("torch", "triton"), ("parity",))
    for k in ("case_list", "fwd_launches", "bwd_launches"):
        result["args"].pop(k, None)
    result["launch"] = {}
    return run_and_write(a, result, lambda: measure(a, result))


if __name__ == "__main__":
    sys.exit(main())
