"""golf's Triton gated RMSNorm (golf/gated_norm_kernel.py) against mamba-ssm's layernorm_gated kernels and
torch.compile of golf.ssm.gated_rms_norm_reference, on a CUDA device: forward and backward ms per call, GB/s
against the bytes each must move, and each result's max |error| against the fp32 reference.

Inputs as in golf's Mamba-2 mixer (defaults: hybrid configs' d_inner 768, 64 x 2048 = 131072 tokens, bf16):
y (rows, dim) contiguous (the scan's output), z the first dim columns of a (rows, --z-row-stride) tensor
(in_proj's output, 1664 wide), dout (rows, dim) contiguous, weight (dim,) in --wdtype (fp32 default, as
training keeps it). golf's and mamba-ssm's backward write dz into the matching columns of a (rows,
--z-row-stride) gradient buffer (both take a preallocated dz of any row stride); torch.compile's autograd
returns a fresh dz (what the mixer then copies into in_proj's gradient).

Timing: CUDA events around each call after --warmup calls, the median of --reps, with a 256 MB buffer zeroed
before each call (untimed) so that no input is still in the 60 MB L2 from the call before. Bytes each call
must move (the floor): forward reads y, z and writes out (+ rstd); backward reads dout, y, z (+ rstd) and
writes dy, dz; torch.compile's forward+backward is timed as one autograd call against the sum of both.

golf is timed at its defaults and over a sweep: --block-m x --fwd-warps for the forward, --block-m x
--bwd-warps x --tiles x --stages for the backward (fwd and bwd are separate launches, so each is swept alone;
"golf best" pairs the fastest of each). mamba-ssm is found through golf.ssm._import_mamba_triton (which gets
around a missing selective_scan_cuda extension); without it, or with --no-mamba, its rows are skipped.
--no-compile skips torch.compile.

    python3 bench/gated_norm_bench.py                                 # production shapes
    python3 bench/gated_norm_bench.py --groups 4 --json $OUT/gated_norm.json

On a lent H200 (bench/README.md), mamba-ssm comes from its pure-Python wheel in .carry/whl (pip install
--no-deps --target, then PYTHONPATH); the defaults ran in about a minute there (results in
golf/gated_norm_kernel.py's docstring). triton, mamba-ssm and golf's kernels are imported only once a CUDA
device is found, so --help works anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import package_versions, run_and_write, table

EPS = 1e-5  # golf.ssm.NORM_EPS
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FLUSH_BYTES = 256 << 20  # > 4x the H200's L2


def _ints(ap: argparse.ArgumentParser, name: str, text: str, pow2: bool = False) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1 or (pow2 and any(v & (v - 1) for v in vals)):
        kind = "powers of two" if pow2 else "positive ints"
        ap.error(f"--{name} takes a comma-separated list of {kind}, got {text!r}")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=131072, help="rows (tokens) (default 131072)")
    ap.add_argument("--dim", type=int, default=768, help="channels, the mixer's d_inner (default 768)")
    ap.add_argument("--groups", type=int, default=1, help="norm groups per row (default 1)")
    ap.add_argument("--z-row-stride", type=int, default=1664,
                    help="row stride of z and of the dz buffer, >= --dim (default 1664, in_proj's width)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="y, z, dout dtype (default bf16)")
    ap.add_argument("--wdtype", choices=list(DTYPES), default="fp32", help="weight dtype (default fp32)")
    ap.add_argument("--block-m", default="1,2,4", help="golf sweep: rows per tile (default 1,2,4)")
    ap.add_argument("--fwd-warps", default="1,2,4", help="golf sweep: forward warps (default 1,2,4)")
    ap.add_argument("--bwd-warps", default="1,2,4", help="golf sweep: backward warps (default 1,2,4)")
    ap.add_argument("--tiles", default="16,32",
                    help="golf sweep: backward row blocks per program (default 16,32)")
    ap.add_argument("--stages", default="1,3",
                    help="golf sweep: backward software-pipeline stages, 1 for none (default 1,3)")
    ap.add_argument("--reps", type=int, default=50, help="timed calls per measurement (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    ap.add_argument("--bw", type=float, default=4.8,
                    help="memory bandwidth for the floor, TB/s (default 4.8)")
    ap.add_argument("--no-mamba", action="store_true", help="skip mamba-ssm's kernels")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    if a.rows < 1 or a.dim < 1 or a.groups < 1 or a.reps < 1 or a.warmup < 0:
        ap.error("--rows, --dim, --groups and --reps must be positive, --warmup >= 0")
    if a.dim % a.groups:
        ap.error(f"--groups {a.groups} does not divide --dim {a.dim}")
    if a.z_row_stride < a.dim:
        ap.error(f"--z-row-stride {a.z_row_stride} is narrower than --dim {a.dim}")
    a.block_m_list = _ints(ap, "block-m", a.block_m, pow2=True)
    a.fwd_warps_list = _ints(ap, "fwd-warps", a.fwd_warps, pow2=True)
    a.bwd_warps_list = _ints(ap, "bwd-warps", a.bwd_warps, pow2=True)
    a.tiles_list = _ints(ap, "tiles", a.tiles)
    a.stages_list = _ints(ap, "stages", a.stages)
    return a


def bytes_moved(rows: int, dim: int, groups: int, act_bytes: int) -> dict:
    """The bytes a call must move: forward y, z in and out out, backward dout, y, z in and dy, dz out, each
    also rstd (fp32, (rows, groups)); the weight and dweight (dim values) are negligible."""
    act, rstd = rows * dim * act_bytes, rows * groups * 4
    return {"fwd": 3 * act + rstd, "bwd": 5 * act + rstd}


def cuda_ms(fn, reps: int, warmup: int, flush: torch.Tensor) -> float:
    """Median ms per call of fn() by CUDA events, after `warmup` calls; the L2 flushed (untimed) before
    each."""
    for _ in range(warmup):
        fn()
    events = [tuple(torch.cuda.Event(enable_timing=True) for _ in range(2)) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in events:
        flush.zero_()  # also gives the host a head start: the call's launches queue behind it
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def make_inputs(a: argparse.Namespace) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    act, m, n = DTYPES[a.dtype], a.rows, a.dim

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    zbuf = randn(m, a.z_row_stride).to(act)
    return {"y": randn(m, n).to(act), "z": zbuf[:, :n], "weight": (1 + 0.1 * randn(n)).to(DTYPES[a.wdtype]),
            "dout": randn(m, n).to(act),
            # the slice of in_proj's gradient that dz goes into, in place (golf's and mamba-ssm's backward)
            "dz_out": torch.zeros(m, a.z_row_stride, dtype=act, device="cuda")[:, :n]}


def reference(inp: dict, groups: int) -> dict:
    """out and the gradients of sum(out * dout) in fp32 (golf.ssm.gated_rms_norm_reference on fp32 copies)."""
    from golf.ssm import gated_rms_norm_reference

    leaves = [inp[k].detach().float().requires_grad_(True) for k in ("y", "z", "weight")]
    out = gated_rms_norm_reference(*leaves, groups, EPS)
    out.backward(inp["dout"].float())
    return {"out": out.detach(), "dy": leaves[0].grad, "dz": leaves[1].grad, "dweight": leaves[2].grad}


def max_errs(got: dict, ref: dict) -> dict:
    """{name: max |got - ref|} and {name + "_rel": that / max |ref|} for the tensors in got."""
    out = {}
    for k, v in got.items():
        err = (v.float() - ref[k]).abs().max().item()
        out[k] = err
        out[k + "_rel"] = err / max(ref[k].abs().max().item(), 1e-30)
    return out


def golf_impls(a: argparse.Namespace, inp: dict) -> tuple[dict, dict]:
    """{name: forward call} and {name: backward call} for golf's defaults and its sweep. A forward call
    returns {"out": ...}, a backward call {"dy", "dz", "dweight"}."""
    from golf import gated_norm_kernel as gk

    y, z, w, dout, dz_out = (inp[k] for k in ("y", "z", "weight", "dout", "dz_out"))
    gs = a.dim // a.groups
    _, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, gs)

    def fwd(**kw):
        return lambda: {"out": gk.gated_rmsnorm_fwd(y, z, w, EPS, gs, **kw)[0]}

    def bwd(**kw):
        def call():
            dy, dz, dw = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, gs, dz=dz_out, **kw)
            return {"dy": dy, "dz": dz, "dweight": dw}
        return call

    fwds = {"golf default": fwd()}
    for bm, nw in itertools.product(a.block_m_list, a.fwd_warps_list):
        fwds[f"golf bm{bm} w{nw}"] = fwd(block_m=bm, num_warps=nw)
    bwds = {"golf default": bwd()}
    for bm, nw, t, st in itertools.product(a.block_m_list, a.bwd_warps_list, a.tiles_list, a.stages_list):
        bwds[f"golf bm{bm} w{nw} t{t} s{st}"] = bwd(block_m=bm, num_warps=nw, tiles=t, num_stages=st)
    return fwds, bwds


def mamba_impls(a: argparse.Namespace, inp: dict) -> tuple[dict, dict] | None:
    """mamba-ssm's layernorm_gated _layer_norm_fwd / _layer_norm_bwd as golf calls them (RMSNorm, no bias, the
    gate before the norm), or None where mamba-ssm is not importable."""
    from golf.ssm import _import_mamba_triton

    fns = _import_mamba_triton()
    if not fns or fns.get("norm_fwd") is None or fns.get("norm_bwd") is None:
        return None
    y, z, w, dout, dz_out = (inp[k] for k in ("y", "z", "weight", "dout", "dz_out"))
    gs = a.dim // a.groups
    kw = {"group_size": gs, "norm_before_gate": False, "is_rms_norm": True}
    _, _, rstd = fns["norm_fwd"](y, w, None, EPS, z=z, **kw)  # (groups * rows,), fp32

    def fwd():
        return {"out": fns["norm_fwd"](y, w, None, EPS, z=z, **kw)[0]}

    def bwd():
        dy, dw, _, dz = fns["norm_bwd"](dout, y, w, None, EPS, None, rstd, z=z, dz=dz_out, **kw)
        return {"dy": dy, "dz": dz, "dweight": dw}

    return {"mamba-ssm": fwd}, {"mamba-ssm": bwd}


def compile_impls(a: argparse.Namespace, inp: dict) -> tuple[dict, dict]:
    """torch.compile of the reference: the forward under no_grad, and forward+backward through autograd (a
    fresh dz; leaves that keep z's row stride)."""
    from golf.ssm import gated_rms_norm_reference

    groups = a.groups
    fn = torch.compile(lambda y, z, w: gated_rms_norm_reference(y, z, w, groups, EPS))
    y, z, w, dout = (inp[k] for k in ("y", "z", "weight", "dout"))
    leaves = [t.detach().requires_grad_(True) for t in (y, z, w)]

    def fwd():
        with torch.no_grad():
            return {"out": fn(y, z, w)}

    def both():
        for t in leaves:
            t.grad = None
        out = fn(*leaves)
        out.backward(dout)
        return {"out": out.detach(), "dy": leaves[0].grad, "dz": leaves[1].grad, "dweight": leaves[2].grad}

    return {"torch.compile": fwd}, {"torch.compile": both}


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def measure(a: argparse.Namespace, result: dict) -> None:
    inp = make_inputs(a)
    ref = reference(inp, a.groups)
    nbytes = bytes_moved(a.rows, a.dim, a.groups, DTYPES[a.dtype].itemsize)
    result["bytes"] = nbytes
    result["floor_ms"] = {k: v / (a.bw * 1e9) for k, v in nbytes.items()}
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")

    fwds, bwds = golf_impls(a, inp)
    if not a.no_mamba:
        mamba = mamba_impls(a, inp)
        if mamba is None:
            print("mamba-ssm's layernorm_gated is not importable here: its rows are skipped", file=sys.stderr)
        else:
            fwds.update(mamba[0])
            bwds.update(mamba[1])
    both = {}
    if not a.no_compile:
        cfwd, cboth = compile_impls(a, inp)
        fwds.update(cfwd)
        both.update(cboth)

    def run(kind: str, name: str, fn, moved: int) -> None:
        try:
            errs = max_errs(fn(), ref)
            ms = cuda_ms(fn, a.reps, a.warmup, flush)
        except Exception as e:  # noqa: BLE001 -- report a failing implementation and carry on with the others
            result["errors"][f"{kind} {name}"] = repr(e)
            print(f"{kind} {name}: FAILED {e!r}", file=sys.stderr)
            return
        result[kind][name] = {"ms": ms, "gb_s": moved / (ms * 1e-3) / 1e9,
                              **{f"err_{k}": v for k, v in errs.items()}}

    for name, fn in fwds.items():
        run("fwd", name, fn, nbytes["fwd"])
    for name, fn in bwds.items():
        run("bwd", name, fn, nbytes["bwd"])
    for name, fn in both.items():
        run("fwd_bwd", name, fn, nbytes["fwd"] + nbytes["bwd"])
    report(a, result)


def report(a: argparse.Namespace, result: dict) -> None:
    floor = result["floor_ms"]
    print(f"\n{result['device']}: rows={a.rows} dim={a.dim} groups={a.groups} z row stride {a.z_row_stride}, "
          f"{a.dtype} activations, {a.wdtype} weight; floor at {a.bw} TB/s: fwd {floor['fwd']:.3f} ms, "
          f"bwd {floor['bwd']:.3f} ms; max |error| against the fp32 reference\n")
    grads = ["dy", "dz", "dweight"]
    for kind, cols in (("fwd", ["out"]), ("bwd", grads), ("fwd_bwd", ["out", *grads])):
        if not result[kind]:
            continue
        fl = floor["fwd"] + floor["bwd"] if kind == "fwd_bwd" else floor[kind]
        rows = [[name, f"{r['ms']:.3f}", f"{r['gb_s']:.0f}", f"{r['ms'] / fl:.2f}x",
                 *(_fmt(r.get(f"err_{c}"), ".2e") for c in cols)]
                for name, r in sorted(result[kind].items(), key=lambda kv: kv[1]["ms"])]
        print(f"{kind}:\n")
        print(table(rows, ["impl", "ms", "GB/s", "/ floor", *(f"err {c}" for c in cols)]))
        print()
    # forward + backward per implementation: golf at its defaults and with the fastest of each sweep
    summary = {}
    golf_f = {k: v for k, v in result["fwd"].items() if k.startswith("golf")}
    golf_b = {k: v for k, v in result["bwd"].items() if k.startswith("golf")}
    if "golf default" in golf_f and "golf default" in golf_b:
        summary["golf default"] = golf_f["golf default"]["ms"] + golf_b["golf default"]["ms"]
    if golf_f and golf_b:
        bf = min(golf_f, key=lambda k: golf_f[k]["ms"])
        bb = min(golf_b, key=lambda k: golf_b[k]["ms"])
        summary[f"golf best (fwd {bf[5:]}, bwd {bb[5:]})"] = golf_f[bf]["ms"] + golf_b[bb]["ms"]
    if "mamba-ssm" in result["fwd"] and "mamba-ssm" in result["bwd"]:
        summary["mamba-ssm"] = result["fwd"]["mamba-ssm"]["ms"] + result["bwd"]["mamba-ssm"]["ms"]
    if "torch.compile" in result["fwd_bwd"]:
        summary["torch.compile (one autograd call)"] = result["fwd_bwd"]["torch.compile"]["ms"]
    result["fwd_plus_bwd_ms"] = summary
    total = floor["fwd"] + floor["bwd"]
    print("forward + backward:\n")
    print(table([[k, f"{v:.3f}", f"{v / total:.2f}x"] for k, v in summary.items()] +
                [["memory floor", f"{total:.3f}", "1.00x"]], ["impl", "ms", "/ floor"]))


def main(argv=None) -> int:
    a = parse_args(argv)
    if not torch.cuda.is_available():
        print("error: gated_norm_bench.py needs a CUDA device (none is visible here)", file=sys.stderr)
        return 2
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "device": torch.cuda.get_device_name(), "versions": package_versions(("torch", "triton", "mamba_ssm")),
              "fwd": {}, "bwd": {}, "fwd_bwd": {}, "errors": {}}
    return run_and_write(a, result, lambda: measure(a, result))


if __name__ == "__main__":
    sys.exit(main())
