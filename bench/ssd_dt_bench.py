"""golf's dt-gradient kernel (golf/ssd_dt_kernel.py) against what it replaces at the end of golf.mixer_op's
kept-internals SSD backward, on a CUDA device with mamba-ssm: the glue (ddA_prev's chunk-end add, the
flip/cumsum/flip and the adds into ddA) followed by mamba-ssm's _chunk_cumsum_bwd (its memset and atomics). Parity
of ddt, dA and ddt_bias (max relative error against mamba-ssm's), device ms per call of each side (the time a
training step pays; _chunk_cumsum_bwd alone too) and the memory floor: the four (b, h, chunks, L) pieces and the
chunk ends read once, dt read and ddt written once (their elements; in the model each token's heads are a 24-byte
run of a wider row, so a 32-byte sector moves for it).

Default shapes are hybrid_12_b131k's mixer as golf.mixer_op calls the step: 64 x 2048 tokens, 12 heads, chunks of
64, fp32 pieces, A and dt_bias; bf16 dt and ddt as the last 12 columns of (b, T, width) rows like zxbcdt and
dzxbcdt (width = 2 heads headdim + 2 groups dstate + heads = 1612); softplus on.

    python3 bench/ssd_dt_bench.py --json $OUT/ssd_dt.json
    python3 bench/ssd_dt_bench.py --sweep --json $OUT/ssd_dt_sweep.json   # golf's launches too
    python3 bench/ssd_dt_bench.py --device cpu                            # a dry run in the interpreter

--sweep also times golf's kernel under every --warps and --chunks-per-program value, each checked against the same
reference, and prints the fastest: what golf.ssd_dt_kernel.LAUNCH should hold. --device cpu runs golf's kernel in
Triton's interpreter against its PyTorch twin (mamba-ssm's kernels need a GPU there), at small shapes unless given
(2 x 200 tokens, a ragged last chunk): it checks the plumbing, its times mean nothing.
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
    rel_errs,
    require_mamba_triton,
    run_and_write,
    table,
    time_sides,
)

NAMES = ("ddt", "dA", "ddt_bias")
CPU_DEFAULTS = {"batch": 2, "seqlen": 200, "reps": 2}  # the interpreter's dry run, unless the sizes are given


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_ssd_shape_args(ap)
    ap.add_argument("--sweep", action="store_true", help="also time golf's kernel under each launch")
    ap.add_argument("--warps", type=positive_ints, default=(2, 4, 8),
                    help="the sweep's num_warps values (default 2,4,8)")
    ap.add_argument("--chunks-per-program", type=positive_ints, default=(1, 2, 4),
                    help="the sweep's chunks a program walks (default 1,2,4)")
    add_run_args(ap, 25, 100, "cuda, or cpu for a dry run in Triton's interpreter")
    a = ap.parse_args(argv)
    if a.device == "cpu":
        ap.set_defaults(**CPU_DEFAULTS)
        a = ap.parse_args(argv)
    check_ssd_shapes(ap, a)
    return a


def _inputs(a: argparse.Namespace, device: str) -> dict:
    """dt_grads's keyword inputs in the dtypes and layouts golf.mixer_op passes them; ddt a column slice of a
    zeroed dzxbcdt."""
    gen = torch.Generator(device=device).manual_seed(0)
    chunks = -(-a.seqlen // a.chunk)
    b, t, h = a.batch, a.seqlen, a.heads
    width = 2 * h * a.headdim + 2 * a.groups * a.dstate + h

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    zxbcdt = (randn(b, t, width) - 2).to(torch.bfloat16)  # raw dt around -2: softplus'ed to ~0.13
    pieces = {k: randn(b, h, chunks, a.chunk) for k in ("ddA", "ddA_next", "ddA_prev", "ddt_sp")}
    return pieces | {"ddA_chunk_end": randn(b, h, chunks), "dt": zxbcdt[..., -h:],
                     "A": -torch.rand(h, generator=gen, device=device) - 0.5, "dt_bias": randn(h) * 0.1,
                     "dt_softplus": True, "ddt": torch.zeros_like(zxbcdt)[..., -h:]}


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def floor_ms(inp: dict, bw_tbs: float, part: str = "dt") -> float:
    """Bytes / bandwidth: the four pieces, the chunk ends, dt, A and dt_bias read once, ddt written once."""
    total = sum(_bytes(inp[k]) for k in ("ddA", "ddA_next", "ddA_prev", "ddt_sp", "ddA_chunk_end", "dt", "A",
                                         "dt_bias", "ddt"))
    return total / (bw_tbs * 1e12) * 1e3


def _errs(got, want) -> dict:
    return rel_errs({k: v.float() for k, v in zip(NAMES, got)}, {k: v.float() for k, v in zip(NAMES, want)})


def sweep(a: argparse.Namespace, tk, want, inp: dict) -> list[dict]:
    """[{num_warps, chunks, device_ms, max_rel_err}, ...] over --warps x --chunks-per-program (LAUNCH["chunks"]
    set for each, then restored), each printed as measured, then one table with the fastest marked."""
    rows = []
    saved = tk.LAUNCH["chunks"]
    try:
        for chunks in a.chunks_per_program:
            tk.LAUNCH["chunks"] = chunks
            for w in a.warps:
                fn = functools.partial(tk.dt_grads, **inp, num_warps=w)
                err = max(_errs(fn(), want).values())
                ms = device_ms(fn, a.device, a.reps)
                rows.append({"num_warps": w, "chunks": chunks, "device_ms": ms, "max_rel_err": err})
                print(f"sweep num_warps {w}, {chunks} chunks a program: {ms:.4f} ms, max rel err {err:.1e}",
                      flush=True)
    finally:
        tk.LAUNCH["chunks"] = saved
    best = min(rows, key=lambda r: r["device_ms"])
    print(table([[r["num_warps"], r["chunks"], f"{r['device_ms']:.4f}", f"{r['max_rel_err']:.1e}",
                  "fastest" if r is best else ""] for r in rows],
                ["warps", "chunks a program", "device ms a call", "max rel err", ""]))
    return rows


def mamba_sides(inp: dict) -> tuple[dict, tuple]:
    """{name: ("dt", fn)} for mamba-ssm's side (the glue + _chunk_cumsum_bwd, and _chunk_cumsum_bwd alone), and its
    result on fresh copies (the glue adds into ddA and ddA_prev in place: the timed calls work on copies of their
    own, whose values drift as they add up, which costs nothing in time). ddt goes into its own dzxbcdt slice."""
    from mamba_ssm.ops.triton import ssd_chunk_state as sst

    h = inp["dt"].shape[-1]

    def glue_and_cumsum_bwd(ddA, ddA_prev, ddt):
        ddA_prev[..., -1].add_(inp["ddA_chunk_end"])
        ddA += inp["ddA_next"] + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
        _, dA, ddt_bias = sst._chunk_cumsum_bwd(ddA, inp["ddt_sp"], inp["dt"], inp["A"], dt_bias=inp["dt_bias"],
                                                dt_softplus=True, ddt=ddt)
        return ddt, dA, ddt_bias

    def fresh():  # ddt: the last h columns of a zeroed (b, T, width) tensor, as golf's own
        b, t, _ = inp["dt"].shape
        ddt = torch.zeros(b, t, inp["ddt"].stride(1), dtype=inp["dt"].dtype, device=inp["dt"].device)[..., -h:]
        return inp["ddA"].clone(), inp["ddA_prev"].clone(), ddt

    want = glue_and_cumsum_bwd(*fresh())
    timed = fresh()
    cumsum_bwd = functools.partial(sst._chunk_cumsum_bwd, timed[0], inp["ddt_sp"], inp["dt"], inp["A"],
                                   dt_bias=inp["dt_bias"], dt_softplus=True, ddt=timed[2])
    return {"mamba-ssm glue + _chunk_cumsum_bwd": ("dt", functools.partial(glue_and_cumsum_bwd, *timed)),
            "mamba-ssm _chunk_cumsum_bwd alone": ("dt", cumsum_bwd)}, want


def main(argv=None) -> int:
    a = parse_args(argv)
    if cuda_missing(a):
        return 2
    tk = import_kernels(a, "golf.ssd_dt_kernel")

    result = new_result(a, ("torch", "triton", "mamba-ssm"), ("parity",))

    def measure():
        inp = _inputs(a, a.device)
        golf_fn = functools.partial(tk.dt_grads, **inp)
        sides = {"golf dt_grads": ("dt", golf_fn)}
        if a.device == "cuda":
            require_mamba_triton()
            mamba, want = mamba_sides(inp)
            sides |= mamba
        else:
            want = tk.dt_grads_reference(**{k: v for k, v in inp.items() if k != "ddt"})
        result["parity"]["golf dt_grads"] = _errs(golf_fn(), want)
        time_sides(a, result, sides, functools.partial(floor_ms, inp, a.bw))
        if a.sweep:
            result["sweep"] = sweep(a, tk, want, inp)

    return run_and_write(a, result, measure)


if __name__ == "__main__":
    sys.exit(main())
