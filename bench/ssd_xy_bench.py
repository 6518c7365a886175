"""golf's SSD chunk-output and input-gradient kernels (golf/ssd_xy_kernel.py, model.ssm_scan "mamba_keep_xy")
against the mamba-ssm functions they replace, on a CUDA device with mamba-ssm: `chunk_y` against _chunk_scan_fwd
and `chunk_dx` against _chunk_scan_chunk_state_bwd_dx. Parity of every output (max relative error against
mamba-ssm's), device ms per call of each side (the time a training step pays) and the memory floor: each input read
once (C·B and the B or C rows once a group), each output written once.

Default shapes are hybrid_12_b131k's mixer as golf.mixer_op's kept-internals scan calls them: 64 x 2048 tokens, 12
heads of 64, one group, chunks of 64, d_state 32; bf16 x, dy, B and C; fp32 dt, dA_cumsum, C·B, D and the states
entering each chunk (kept from the forward); bf16 dstates (as _state_passing_bwd hands them on).

    python3 bench/ssd_xy_bench.py --json $OUT/ssd_xy.json
    python3 bench/ssd_xy_bench.py --sweep --json $OUT/ssd_xy_sweep.json       # golf's warps too
    python3 bench/ssd_xy_bench.py --device cpu --batch 1 --seqlen 128 --heads 2   # a dry run in the interpreter

--sweep also times each golf kernel under every --warps value and --maxnreg register cap, each checked against the
same reference, and prints the fastest: what golf.ssd_xy_kernel.LAUNCH and MAXNREG should hold. --passes also times
the SSD's two sequential recurrences as golf.ssd_kernel's one-program-per-(head, batch) pass kernel runs them for
golf.mixer_op's "mamba_keep_golf_overlap" (role 0: the state entering each chunk, stored in x's dtype, from x, B and
the kept running log-decay and dt; role 1: the gradient of the state leaving each chunk, in x's dtype, from dy, C
and the kept log-decay; role 1 again with the chunk-end log-decay gradient from the kept states) under each --warps
value and --maxnreg cap (golf.ssd_kernel.PASS_MAXNREG), against the two mamba-ssm kernels each replaces
(_chunk_state_fwd + _state_passing_fwd; _chunk_scan_bwd_dstates + _state_passing_bwd), with parity (CUDA only).
--device cpu runs golf's kernels in Triton's interpreter against golf's PyTorch twins (mamba-ssm's kernels need a GPU
there): it checks the plumbing, its times mean nothing. Its H200 results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import (
    add_run_args,
    add_ssd_shape_args,
    check_ssd_shapes,
    cuda_missing,
    device_ms,
    import_kernels,
    new_result,
    positive_ints,
    register_caps,
    rel_errs,
    require_mamba_triton,
    run_and_write,
    table,
    time_sides,
)

NAMES = {"y": ("y",), "dx": ("dx", "ddt", "dD")}



def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_ssd_shape_args(ap)
    ap.add_argument("--sweep", action="store_true", help="also time golf's kernels under each --warps value")
    ap.add_argument("--warps", type=positive_ints, default=(2, 4, 8),
                    help="the sweep's num_warps values (default 2,4,8)")
    ap.add_argument("--maxnreg", type=register_caps, default=(None,),
                    help="the sweep's register caps a thread, 0 for none (default 0: the compiler's choice)")
    ap.add_argument("--passes", action="store_true", help="also time golf's state passes against mamba-ssm's (CUDA)")
    add_run_args(ap, 25, 100, "cuda, or cpu for a dry run in Triton's interpreter")
    a = ap.parse_args(argv)
    check_ssd_shapes(ap, a)
    return a


def _inputs(a: argparse.Namespace, device: str) -> dict:
    """The kept forward internals and the backward's inputs, in the dtypes golf.mixer_op passes them."""
    gen = torch.Generator(device=device).manual_seed(0)
    act = torch.bfloat16 if device == "cuda" else torch.float32
    chunks = -(-a.seqlen // a.chunk)
    b, h = a.batch, a.heads

    def randn(*shape, dtype=act):
        return torch.randn(*shape, generator=gen, device=device).to(dtype)

    dt = torch.nn.functional.softplus(randn(b, h, chunks, a.chunk, dtype=torch.float32) - 2)
    A = -torch.rand(h, generator=gen, device=device) - 0.5
    return {"x": randn(b, a.seqlen, h, a.headdim), "dout": randn(b, a.seqlen, h, a.headdim), "dt": dt,
            "dA_cumsum": (dt * A[None, :, None, None]).cumsum(-1),
            "CB": randn(b, chunks, a.groups, a.chunk, a.chunk, dtype=torch.float32),
            "B": randn(b, a.seqlen, a.groups, a.dstate), "C": randn(b, a.seqlen, a.groups, a.dstate),
            "states": randn(b, chunks, h, a.headdim, a.dstate, dtype=torch.float32),
            "dstates": randn(b, chunks, h, a.headdim, a.dstate), "D": torch.rand(h, generator=gen, device=device) + 0.5}


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def floor_ms(inp: dict, bw_tbs: float, kernel: str) -> float:
    """The kernel's bytes / bandwidth: "y" reads x, C, C·B, dt, dA_cumsum and the states and writes y; "dx" reads
    x, dy, B, C·B, dt, dA_cumsum and dstates and writes dx and ddt."""
    if kernel == "y":
        total = sum(_bytes(inp[k]) for k in ("x", "C", "CB", "dt", "dA_cumsum", "states")) + _bytes(inp["x"])
    else:
        total = sum(_bytes(inp[k]) for k in ("x", "dout", "B", "CB", "dt", "dA_cumsum", "dstates"))
        total += _bytes(inp["x"]) + _bytes(inp["dt"])
    return total / (bw_tbs * 1e12) * 1e3


def golf_calls(xk, inp: dict) -> dict:
    """{kernel: (golf's function, its keyword inputs)}."""
    return {"y": (xk.chunk_y, {k: inp[k] for k in ("CB", "x", "dt", "dA_cumsum", "C", "states", "D")}),
            "dx": (xk.chunk_dx, {k: inp[k] for k in ("x", "dt", "dA_cumsum", "B", "CB", "dout", "dstates", "D")})}


def _as_tuple(v) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def _errs(kernel: str, got, want) -> dict:
    return rel_errs({k: v.float() for k, v in zip(NAMES[kernel], _as_tuple(got))},
                    {k: v.float() for k, v in zip(NAMES[kernel], _as_tuple(want))})


def sweep(a: argparse.Namespace, xk, want: dict, inp: dict, out: dict) -> None:
    """out[kernel] = [{num_warps, maxnreg, device_ms, max_rel_err}, ...] over --warps x --maxnreg, each printed as
    measured, then one table with the fastest per kernel."""
    rows = []
    for kernel, (fn, kwargs) in golf_calls(xk, inp).items():
        out[kernel] = []
        for w, reg in itertools.product(a.warps, a.maxnreg):
            launch = {"num_warps": w, "maxnreg": reg or 0}  # 0: no cap, whatever golf.ssd_xy_kernel.MAXNREG holds
            errs = _errs(kernel, fn(**kwargs, **launch), want[kernel])
            ms = device_ms(functools.partial(fn, **kwargs, **launch), a.device, a.reps)
            out[kernel].append({"num_warps": w, "maxnreg": reg, "device_ms": ms, "max_rel_err": max(errs.values())})
            print(f"sweep {kernel} num_warps {w} maxnreg {reg}: {ms:.3f} ms, max rel err {max(errs.values()):.1e}",
                  flush=True)
        best = min(out[kernel], key=lambda r: r["device_ms"])
        rows += [[kernel, r["num_warps"], r["maxnreg"] or "-", f"{r['device_ms']:.3f}", f"{r['max_rel_err']:.1e}",
                  "fastest" if r is best else ""] for r in out[kernel]]
    print(table(rows, ["kernel", "warps", "maxnreg", "device ms a call", "max rel err", ""]))


def passes(a: argparse.Namespace, inp: dict, out: dict) -> None:
    """out[role] = {"mamba-ssm": ms, "golf w<warps>[ r<maxnreg>]": ms, ..., "parity": {...}} for the two recurrences
    (--passes) over --warps x --maxnreg, from the same raw dt, A and dt_bias; a table of them."""
    from mamba_ssm.ops.triton import ssd_chunk_scan as scs
    from mamba_ssm.ops.triton import ssd_chunk_state as sst
    from mamba_ssm.ops.triton import ssd_state_passing as ssp

    import golf.ssd_kernel as sk

    gen = torch.Generator(device="cuda").manual_seed(1)
    x, dy, B, C = inp["x"], inp["dout"], inp["B"], inp["C"]
    b, t, h, p = x.shape
    n = B.shape[-1]
    dt_raw = torch.randn(b, t, h, generator=gen, device="cuda") - 2
    A = -torch.rand(h, generator=gen, device="cuda") - 0.5
    dt_bias = torch.randn(h, generator=gen, device="cuda") * 0.1

    def cumsum():
        return sst._chunk_cumsum_fwd(dt_raw, A, a.chunk, dt_bias=dt_bias, dt_softplus=True)

    dA_cumsum, dt_sp = cumsum()

    def mamba_states():  # what golf.mixer_op._scan_fwd_keep keeps: the state entering each chunk, fp32
        local = sst._chunk_state_fwd(B, x, dt_sp, dA_cumsum, states_in_fp32=True)
        return ssp._state_passing_fwd(local.flatten(-2), dA_cumsum[:, :, :, -1])[0].unflatten(-1, (p, n))

    states = mamba_states()

    def mamba_dstates():  # what golf.mixer_op._scan_bwd_keep passes on: the gradient of each chunk's end state
        local = scs._chunk_scan_bwd_dstates(C, dA_cumsum, dy, dtype=states.dtype)
        return ssp._state_passing_bwd(states.flatten(-2), dA_cumsum[:, :, :, -1], local.flatten(-2),
                                      has_initial_states=False, dstates_dtype=x.dtype,
                                      states_dtype=x.dtype)[0].unflatten(-1, (p, n))

    def mamba_dstates_dda():  # the same with the chunk-end log-decays' gradient
        local = scs._chunk_scan_bwd_dstates(C, dA_cumsum, dy, dtype=states.dtype)
        ds, dda = ssp._state_passing_bwd(states.flatten(-2), dA_cumsum[:, :, :, -1], local.flatten(-2),
                                         has_initial_states=False, dstates_dtype=x.dtype, states_dtype=x.dtype)[:2]
        return ds.unflatten(-1, (p, n)), dda

    # as golf.mixer_op's "mamba_keep_golf_overlap" calls them: the kept running log-decay (and softplus'ed dt) read
    # instead of recomputed from the raw dt, the states stored in x's dtype and read back by role 1
    kept_states = sk.chunk_states(x, dt_raw, A, B, a.chunk, dt_bias=dt_bias, dt_softplus=True,
                                  states_dtype=x.dtype, dA_cumsum=dA_cumsum, dt_chunks=dt_sp)

    def golf_states(warps, maxnreg):
        return sk.chunk_states(x, dt_raw, A, B, a.chunk, dt_bias=dt_bias, dt_softplus=True, num_warps=warps,
                               states_dtype=x.dtype, dA_cumsum=dA_cumsum, dt_chunks=dt_sp, maxnreg=maxnreg)

    def golf_dstates(warps, maxnreg, with_dda):
        got = sk.chunk_state_grads(dy, dt_raw, A, C, a.chunk, dt_bias=dt_bias, dt_softplus=True,
                                   states=kept_states if with_dda else None, num_warps=warps,
                                   dA_cumsum=dA_cumsum, maxnreg=maxnreg)
        return got if with_dda else got[0]

    rows = []
    roles = (("role 0", mamba_states, "states", golf_states),
             ("role 1", mamba_dstates, "dstates", functools.partial(golf_dstates, with_dda=False)),
             ("role 1 + dda", mamba_dstates_dda, "dstates, ddA_chunk_end",
              functools.partial(golf_dstates, with_dda=True)))
    for role, mamba_fn, what, golf_fn in roles:
        want = mamba_fn()
        entry = {"mamba-ssm": device_ms(mamba_fn, "cuda", a.reps), "parity": {}}
        rows.append([f"{role} ({what})", "mamba-ssm (two kernels)", f"{entry['mamba-ssm']:.3f}", ""])
        for w, reg in itertools.product(a.warps, a.maxnreg):
            fn = functools.partial(golf_fn, w, reg or 0)  # 0: no cap, whatever golf.ssd_kernel.PASS_MAXNREG holds
            key = f"golf w{w}" + (f" r{reg}" if reg else "")
            names = what.split(", ")
            errs = rel_errs({k: v.float() for k, v in zip(names, _as_tuple(fn()))},
                            {k: v.float() for k, v in zip(names, _as_tuple(want))})
            entry[key] = device_ms(fn, "cuda", a.reps)
            entry["parity"][key] = errs
            rows.append([f"{role} ({what})", f"golf pass, {w} warps" + (f", maxnreg {reg}" if reg else ""),
                         f"{entry[key]:.3f}", ", ".join(f"{k} {v:.1e}" for k, v in errs.items())])
        out[role] = entry
    print(table(rows, ["recurrence", "impl", "device ms a call", "max rel err vs mamba-ssm"]))


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    xk = import_kernels(a, "golf.ssd_xy_kernel")

    result = new_result(a, ("torch", "triton", "mamba-ssm"), ("parity",))

    def measure():
        inp = _inputs(a, a.device)
        calls = golf_calls(xk, inp)
        sides = {f"golf {kernel}": (kernel, functools.partial(fn, **kwargs)) for kernel, (fn, kwargs) in calls.items()}
        if a.device == "cuda":
            require_mamba_triton()
            from mamba_ssm.ops.triton import ssd_chunk_scan as scs
            from mamba_ssm.ops.triton import ssd_combined as sc

            def mamba_y():
                return scs._chunk_scan_fwd(inp["CB"], inp["x"], inp["dt"], inp["dA_cumsum"], inp["C"], inp["states"],
                                           D=inp["D"])[0]

            def mamba_dx():
                return sc._chunk_scan_chunk_state_bwd_dx(inp["x"], inp["dt"], inp["dA_cumsum"], inp["B"], inp["CB"],
                                                         inp["dout"], inp["dstates"], D=inp["D"])

            sides |= {"mamba-ssm _chunk_scan_fwd": ("y", mamba_y),
                      "mamba-ssm _chunk_scan_chunk_state_bwd_dx": ("dx", mamba_dx)}
            want = {"y": mamba_y(), "dx": mamba_dx()}
        else:
            want = {"y": xk.chunk_y_reference(**calls["y"][1]), "dx": xk.chunk_dx_reference(**calls["dx"][1])}
        for name, (kernel, fn) in sides.items():
            if name.startswith("golf"):
                result["parity"][name] = _errs(kernel, fn(), want[kernel])
        time_sides(a, result, sides, functools.partial(floor_ms, inp, a.bw))
        if a.sweep:
            result["sweep"] = {}
            sweep(a, xk, want, inp, result["sweep"])
        if a.passes and a.device == "cuda":
            result["passes"] = {}
            passes(a, inp, result["passes"])

    return run_and_write(a, result, measure)


if __name__ == "__main__":
    sys.exit(main())
