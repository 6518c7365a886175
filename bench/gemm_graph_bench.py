"""Where the memset before each GEMM in the training step's CUDA graph comes from: hybrid_12_b131k's matmul shapes
run eagerly and captured in a CUDA graph, with torch's preferred BLAS library set to each of --libraries, counting
the memset nodes the profiler sees per GEMM and timing each GEMM (graph replays). Prints one JSON line; --json
writes it too.

    python bench/gemm_graph_bench.py --json $OUT/gemm_graph.json

In the step's profile (bench/RESULTS.md, 2026-12-02) every cuBLAS GEMM inside the graph followed a 4-byte memset
with idle gaps of about 4 us on each side; the optimizer's eager GEMMs had none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import graph_of, print_and_write

# (name, M, K, N, transposed B) in the forward's and backward's forms: in_proj, out_proj, the MLP, a weight gradient
SHAPES = (("in_proj_fwd", 131072, 512, 1664, False), ("out_proj_fwd", 131072, 768, 512, False),
          ("mlp_up_fwd", 131072, 512, 1536, False), ("in_proj_dgrad", 131072, 1664, 512, True),
          ("in_proj_wgrad", 1664, 131072, 512, False))


def _operands(m: int, k: int, n: int, transposed: bool):
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16).t() if transposed else \
        torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    return a, b


def _memsets_and_ms(fn, graphed: bool, replays: int) -> tuple[int, float]:
    """(memsets the profiler saw in one run of fn, or of its graph; ms per run over `replays`)."""
    from torch.profiler import ProfilerActivity, profile

    run = graph_of(fn).replay if graphed else fn
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    memsets = sum(1 for e in prof.events() if "memset" in e.name.lower())
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        run()
    end.record()
    torch.cuda.synchronize()
    return memsets, start.elapsed_time(end) / replays


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libraries", default="default,cublas,cublaslt",
                    help="torch.backends.cuda.preferred_blas_library values; 'default' leaves it as it is")
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    libraries = [s for s in args.libraries.split(",") if s]
    bad = [s for s in libraries if s not in ("default", "cublas", "cublaslt")]
    if bad:
        ap.error(f"--libraries: {bad} not among default, cublas, cublaslt")
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device: the question is what cuBLAS does inside a CUDA graph")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "default_library": str(torch.backends.cuda.preferred_blas_library()), "rows": []}
    default = torch.backends.cuda.preferred_blas_library()
    for lib in libraries:
        torch.backends.cuda.preferred_blas_library(default if lib == "default" else lib)
        for name, m, k, n, transposed in SHAPES:
            a, b = _operands(m, k, n, transposed)
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            for graphed in (False, True):
                memsets, ms = _memsets_and_ms(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), graphed, args.replays)
                out["rows"].append({"library": lib, "shape": name, "graphed": graphed, "memsets": memsets,
                                    "ms": round(ms, 4)})
    torch.backends.cuda.preferred_blas_library(default)
    return print_and_write(out, args.json)


if __name__ == "__main__":
    main()
