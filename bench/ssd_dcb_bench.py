"""golf's chunk-backward kernel (golf/ssd_dcb_kernel.py) against the mamba-ssm functions it replaces, on a CUDA
device with mamba-ssm: `dcb_ddA` (model.ssm_scan "mamba_keep_dA": the C·B gradient and the within-chunk log-decay
gradient) against _chunk_scan_bwd_dcb + _chunk_scan_bwd_ddAcs_stable, and `chunk_bwd` ("mamba_keep_dx": dx, ddt and
dD too) against those two + _chunk_scan_chunk_state_bwd_dx, and `chunk_bwd` with the states' part
("mamba_keep_chunk": dB's and dC's states parts and the whole log-decay gradient too) against those three +
_chunk_state_bwd_db + _chunk_scan_bwd_dC + the cumulative sums _mamba_chunk_scan_combined_bwd adds. Parity of every
output (max relative error against mamba-ssm's), device ms per call of each side (the time a training step pays)
and the memory floor of golf's kernel: it reads each input once (C·B once a group) and writes its outputs once.

Default shapes are hybrid_12_b131k's mixer: 64 x 2048 tokens, 12 heads of 64, one group, chunks of 64, bf16 x and
dy, fp32 dt and dA_cumsum, bf16 C·B, B, C, dstates and the states entering each chunk (d_state 32), fp32 D and
chunk-end log-decay gradients.

    python3 bench/ssd_dcb_bench.py --json $OUT/ssd_dcb.json
    python3 bench/ssd_dcb_bench.py --device cpu --batch 1 --seqlen 128 --heads 2   # a dry run in the interpreter
    python3 bench/ssd_dcb_bench.py --sweep --json $OUT/ssd_dcb_sweep.json       # golf's launch settings too

--sweep also times golf's kernel for each part of --parts under every launch of --warps x --stages x --splits x
--maxnreg (a Launch of golf.ssd_dcb_kernel; splits that do not divide a group's heads are left out), each checked
against the same reference as the default launch, and prints the fastest per part: what golf.ssd_dcb_kernel.LAUNCH
should hold.

--device cpu runs golf's kernel in Triton's interpreter against golf's PyTorch twin (mamba-ssm's kernels need a
GPU there): it checks the plumbing, its times mean nothing. Its H200 results: bench/RESULTS.md, 2026-12-01
fourteenth block.
"""

from __future__ import annotations

import argparse
import functools
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


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_ssd_shape_args(ap)
    ap.add_argument("--sweep", action="store_true", help="also time golf's kernel under each launch below")
    ap.add_argument("--warps", type=positive_ints, default=(4, 8), help="the sweep's num_warps values (default 4,8)")
    ap.add_argument("--stages", type=positive_ints, default=(1, 2, 3),
                    help="the sweep's num_stages values (default 1,2,3)")
    ap.add_argument("--splits", type=positive_ints, default=(1, 2, 3, 4, 6, 12),
                    help="the sweep's head_split values (default 1,2,3,4,6,12)")
    ap.add_argument("--maxnreg", type=register_caps, default=(None,),
                    help="the sweep's register caps a thread, 0 for none (default 0: the compiler's choice)")
    ap.add_argument("--parts", type=lambda t: tuple(t.split(",")), default=("dA", "dx", "chunk"),
                    help="the parts the sweep times, of dA,dx,chunk (default all three)")
    add_run_args(ap, 25, 100, "cuda, or cpu for a dry run in Triton's interpreter")
    a = ap.parse_args(argv)
    check_ssd_shapes(ap, a)
    if not a.parts or not set(a.parts) <= {"dA", "dx", "chunk"}:
        ap.error(f"--parts {','.join(a.parts)!r}: expected names of dA, dx, chunk separated by commas")
    return a


def _inputs(a: argparse.Namespace, device: str) -> dict:
    """x, dt (softplus'ed), dA_cumsum, dout, CB, B, dstates, D as mamba-ssm's backward has them."""
    gen = torch.Generator(device=device).manual_seed(0)
    act = torch.bfloat16 if device == "cuda" else torch.float32
    chunks = -(-a.seqlen // a.chunk)
    b, h = a.batch, a.heads
    x = torch.randn(b, a.seqlen, h, a.headdim, generator=gen, device=device).to(act)
    dout = torch.randn(b, a.seqlen, h, a.headdim, generator=gen, device=device).to(act)
    dt = torch.nn.functional.softplus(torch.randn(b, h, chunks, a.chunk, generator=gen, device=device) - 2)
    A = -torch.rand(h, generator=gen, device=device) - 0.5
    dA_cumsum = (dt * A[None, :, None, None]).cumsum(-1)
    CB = torch.randn(b, chunks, a.groups, a.chunk, a.chunk, generator=gen, device=device).to(act)
    B = torch.randn(b, a.seqlen, a.groups, a.dstate, generator=gen, device=device).to(act)
    dstates = torch.randn(b, chunks, h, a.headdim, a.dstate, generator=gen, device=device).to(act)
    D = torch.rand(h, generator=gen, device=device) + 0.5
    C = torch.randn(b, a.seqlen, a.groups, a.dstate, generator=gen, device=device).to(act)
    states_in = torch.randn(b, chunks, h, a.headdim, a.dstate, generator=gen, device=device).to(act)
    chunk_end = torch.randn(b, h, chunks, generator=gen, device=device)
    return {"x": x, "dt": dt, "dA_cumsum": dA_cumsum, "dout": dout, "CB": CB, "B": B, "dstates": dstates, "D": D,
            "C": C, "states_in": states_in, "ddA_chunk_end": chunk_end}


def floor_ms(inp: dict, bw_tbs: float, part: str) -> float:
    """golf's kernel's bytes / bandwidth for `part` ("dA", "dx" or "chunk"): its inputs read once, its outputs (dCB
    and ddA; dx and ddt; dB and dC in fp32) written once."""
    names = ["x", "dt", "dA_cumsum", "dout", "CB"] + (["B", "dstates"] if part != "dA" else [])
    names += ["C", "states_in"] if part == "chunk" else []
    reads = sum(inp[k].numel() * inp[k].element_size() for k in names)
    writes = inp["CB"].numel() * 4 + inp["dt"].numel() * 4
    if part != "dA":
        writes += inp["x"].numel() * inp["x"].element_size() + inp["dt"].numel() * 4
    if part == "chunk":
        writes += 2 * inp["B"].numel() * 4
    return (reads + writes) / (bw_tbs * 1e12) * 1e3


def golf_calls(dk, inp: dict) -> dict:
    """{part: (golf's function, its keyword inputs)}: "dA" dcb_ddA, "dx" chunk_bwd, "chunk" chunk_bwd with the
    states."""
    base = {k: inp[k] for k in ("x", "dt", "dA_cumsum", "dout", "CB")}
    return {"dA": (dk.dcb_ddA, base), "dx": (dk.chunk_bwd, base | {k: inp[k] for k in ("B", "dstates", "D")}),
            "chunk": (dk.chunk_bwd, inp)}


def sweep(a: argparse.Namespace, dk, want_parts: dict, names: tuple, inp: dict, out: dict) -> None:
    """out[part] = [{launch, device_ms, max_rel_err}, ...] over --warps x --stages x --splits x --maxnreg for
    golf's parts in --parts, each launch printed as it is measured (a launch that faults ends the run: the line
    before names the last that did not), then one table with the fastest launch per part."""
    import itertools

    per_group = a.heads // a.groups
    rows = []
    for part, (fn, kwargs) in golf_calls(dk, inp).items():
        if part not in a.parts:
            continue
        out[part] = []
        for sp, w, st, reg in itertools.product(a.splits, a.warps, a.stages, a.maxnreg):
            if per_group % sp:
                continue
            launch = dk.Launch(w, st, sp, reg)
            got = fn(**kwargs, launch=launch)
            errs = rel_errs({k: v.float() for k, v in zip(names, got)},
                            {k: v.float() for k, v in zip(names, want_parts[part])})
            ms = device_ms(functools.partial(fn, **kwargs, launch=launch), a.device, a.reps)
            out[part].append({"launch": list(launch), "device_ms": ms, "max_rel_err": max(errs.values())})
            print(f"sweep {part} {launch}: {ms:.3f} ms, max rel err {max(errs.values()):.1e}", flush=True)
        best = min(out[part], key=lambda r: r["device_ms"])
        for r in out[part]:
            launch = (v if v is not None else "-" for v in r["launch"])  # maxnreg None: no cap
            rows.append([part, *launch, f"{r['device_ms']:.3f}", f"{r['max_rel_err']:.1e}",
                         "fastest" if r is best else ""])
    print(table(rows, ["part", "warps", "stages", "head_split", "maxnreg", "device ms a call", "max rel err", ""]))


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    dk = import_kernels(a, "golf.ssd_dcb_kernel")

    result = new_result(a, ("torch", "triton", "mamba-ssm"), ("parity",))

    def measure():
        inp = _inputs(a, a.device)
        calls = golf_calls(dk, inp)
        sides = {f"golf {name}": (part, functools.partial(calls[part][0], **calls[part][1]))
                 for name, part in (("dcb_ddA", "dA"), ("chunk_bwd", "dx"), ("chunk_bwd + states", "chunk"))}
        if a.device == "cuda":
            require_mamba_triton()
            from mamba_ssm.ops.triton import ssd_chunk_scan as scs
            from mamba_ssm.ops.triton import ssd_chunk_state as sst
            from mamba_ssm.ops.triton import ssd_combined as sc

            x, dt, cs, dy = inp["x"], inp["dt"], inp["dA_cumsum"], inp["dout"]

            def mamba_dA():
                return (sc._chunk_scan_bwd_dcb(x, dt, cs, dy, ngroups=a.groups),
                        sc._chunk_scan_bwd_ddAcs_stable(x, dt, cs, dy, inp["CB"]))

            def mamba_dx():
                dx, ddt, dD = sc._chunk_scan_chunk_state_bwd_dx(x, dt, cs, inp["B"], inp["CB"], dy, inp["dstates"],
                                                                D=inp["D"])
                return (*mamba_dA(), dx, ddt, dD)

            def mamba_chunk():  # the steps golf.mixer_op._scan_bwd_keep takes for these outputs
                dcb, dda, dx, ddt, dD = mamba_dx()
                dB, dda_next = sst._chunk_state_bwd_db(x, dt, cs, inp["dstates"], B=inp["B"], ngroups=a.groups)
                dC, dda_prev = scs._chunk_scan_bwd_dC(inp["states_in"], cs, dy, C=inp["C"], ngroups=a.groups)
                dda_prev[..., -1] += inp["ddA_chunk_end"]
                dda = dda + dda_next + dda_prev.flip([-1]).cumsum(dim=-1).flip([-1])
                return dcb, dda, dx, ddt, dD, dB, dC

            sides |= {"mamba-ssm dcb + ddAcs": ("dA", mamba_dA), "mamba-ssm dx + dcb + ddAcs": ("dx", mamba_dx),
                      "mamba-ssm dx + dcb + ddAcs + db + dC": ("chunk", mamba_chunk)}
            want = mamba_chunk()
            want_parts = {"dA": mamba_dA(), "dx": mamba_dx(), "chunk": want}
        else:
            want_parts = {part: (dk.dcb_ddA_reference if part == "dA" else dk.chunk_bwd_reference)(**kwargs)
                          for part, (_, kwargs) in calls.items()}
        names = ("dCB", "ddA", "dx", "ddt", "dD", "dB", "dC")
        for name, (part, fn) in sides.items():
            if name.startswith("golf"):
                got, want = fn(), want_parts[part]
                result["parity"][name] = rel_errs({k: v.float() for k, v in zip(names, got)},
                                                  {k: v.float() for k, v in zip(names, want)})
        time_sides(a, result, sides, functools.partial(floor_ms, inp, a.bw))
        if a.sweep:
            result["sweep"] = {}
            sweep(a, dk, want_parts, names, inp, result["sweep"])

    return run_and_write(a, result, measure)


if __name__ == "__main__":
    sys.exit(main())
