"""golf.sum_kernel.column_sums against torch's sum(0) on the partial-sum buffers of hybrid_12_b131k's backward, as
the training step runs them: captured in a CUDA graph (where torch's reduction brings a memset node), each call
timed as a graph of `--calls` calls replayed `--replays` times. Prints one JSON line; `--json` writes it too.

    python bench/sum_kernel_bench.py --json $OUT/sum_kernel.json

Shapes (rows, columns), from the step's profile (bench/RESULTS.md, 2026-12-02): golf's block-norm backward (2048
programs; its scale, skip weight and the two mix rows: 512, 512 and 1024 columns of a (2048, 4, 512) buffer),
gated-norm backward (4096, 768), conv backward (1024, 5 x 832), dt gradients and D's gradient ((64 x 32, 12)).
Each launch in --launches (BLOCK_R x BLOCK_N x warps) is timed on every shape; "best" names the fastest per shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_bench import graph_of, print_and_write, rel_errs

SHAPES = {"block_norm_s": (2048, 512, 2048), "block_norm_mix": (2048, 1024, 2048), "gated_norm": (4096, 768, 768),
          "conv": (1024, 4160, 4160), "dt_or_dD": (2048, 12, 12)}  # name: (rows, columns, row stride)
LAUNCHES = ("128x16x4", "256x32x8", "128x8x4", "512x16x8", "1024x16x8", "512x8x8", "256x8x8", "512x32x8", "1024x8x8")


def graph_ms(fn, calls: int, replays: int) -> float:
    """ms per fn() call: `calls` calls captured in one CUDA graph, replayed `replays` times after a warm-up."""
    graph = graph_of(fn, calls)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (replays * calls)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", default=",".join(LAUNCHES), help="BLOCK_RxBLOCK_NxWARPS, comma-separated")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    try:
        launches = [tuple(int(v) for v in s.split("x")) for s in args.launches.split(",")]
        if any(len(launch) != 3 for launch in launches):
            raise ValueError
    except ValueError:
        ap.error(f"--launches {args.launches!r}: expected BLOCK_RxBLOCK_NxWARPS items such as 128x16x4")
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device: the comparison is of kernels inside a CUDA graph")
    from golf.sum_kernel import column_sums

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "calls": args.calls,
           "replays": args.replays, "shapes": {}}
    for name, (rows, cols, stride) in SHAPES.items():
        buf = torch.randn(rows, stride * (2 if name.startswith("block_norm") else 1), device="cuda")
        x = buf[:, :cols]  # (rows, cols) with the buffer's row stride
        want = x.sum(0)
        torch_ms = graph_ms(lambda x=x: x.sum(0), args.calls, args.replays)
        row = {"rows": rows, "cols": cols, "torch_sum_ms": round(torch_ms, 5)}
        for br, bn, nw in launches:
            got = column_sums(x, block_r=br, block_n=bn, num_warps=nw)
            err = rel_errs({"sum": got}, {"sum": want})["sum"]
            ms = graph_ms(lambda x=x, br=br, bn=bn, nw=nw: column_sums(x, block_r=br, block_n=bn, num_warps=nw),
                          args.calls, args.replays)
            row[f"golf_{br}x{bn}x{nw}_ms"] = round(ms, 5)
            row[f"golf_{br}x{bn}x{nw}_rel_err"] = float(f"{err:.2e}")
        golf_ms = {k: v for k, v in row.items() if k.startswith("golf_") and k.endswith("_ms")}
        row["best"] = min(golf_ms, key=golf_ms.get)
        out["shapes"][name] = row
    return print_and_write(out, args.json)


if __name__ == "__main__":
    main()
