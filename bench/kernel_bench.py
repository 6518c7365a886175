"""What golf's kernel benchmarks share (bench/ssd_kernel_bench.py, bench/conv_kernel_bench.py, the SSD chunk-kernel
benches bench/ssd_dcb_bench.py, bench/ssd_xy_bench.py and bench/ssd_dt_bench.py; in part bench/attn_kernel_bench.py
and bench/gated_norm_bench.py): their run options, the kernel module's import (under Triton's interpreter for a CPU
dry run), the timers (wall time per call, and device time per call, the one a training step pays), a CUDA graph of
a call (bench/sum_kernel_bench.py, bench/gemm_graph_bench.py: what runs inside the step's graphs), the relative
error of a parity check, the result JSON (written even when a device fault stops the run) and the markdown table."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.io import write_text_atomic
from golf.kernel_inputs import MAXNREG_RANGE, check_maxnreg


def add_run_args(ap: argparse.ArgumentParser, warmup: int, rep: int, device_help: str) -> None:
    """--bw, --warmup, --rep, --device and --json, with this benchmark's do_bench defaults and --device help."""
    ap.add_argument("--bw", type=float, default=4.0, help="memory bandwidth for the floor, TB/s (default 4.0)")
    ap.add_argument("--warmup", type=int, default=warmup, help=f"do_bench warm-up, ms (default {warmup})")
    ap.add_argument("--rep", type=int, default=rep, help=f"do_bench repetitions, ms (default {rep})")
    ap.add_argument("--device", default="cuda", help=device_help)
    ap.add_argument("--json", type=Path, help="also write the results here")


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type: '4,8' -> (4, 8), positive integers separated by commas."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def register_caps(text: str) -> tuple[int | None, ...]:
    """argparse type: '0,128' -> (None, 128), the register caps a thread (ptxas's .maxnreg) for a sweep to try; 0 is
    no cap, the compiler's choice."""
    try:
        values = tuple(int(v) for v in text.split(","))
        for v in values:
            check_maxnreg("--maxnreg", v)
    except ValueError:
        lo, hi = MAXNREG_RANGE
        raise argparse.ArgumentTypeError(f"expected register caps in [{lo}, {hi}] or 0 (none) separated by commas, "
                                         f"got {text!r}") from None
    return tuple(v or None for v in values)


def add_ssd_shape_args(ap: argparse.ArgumentParser) -> None:
    """The SSD kernel benches' shapes (bench/ssd_dcb_bench.py, bench/ssd_xy_bench.py), hybrid_12_b131k's mixer by
    default, and --reps; check them with ssd_shapes_ok."""
    ap.add_argument("--batch", type=int, default=64, help="sequences (default 64)")
    ap.add_argument("--seqlen", type=int, default=2048, help="tokens a sequence (default 2048)")
    ap.add_argument("--heads", type=int, default=12, help="SSM heads (default 12)")
    ap.add_argument("--headdim", type=int, default=64, help="head width (default 64)")
    ap.add_argument("--groups", type=int, default=1, help="B/C groups (default 1)")
    ap.add_argument("--chunk", type=int, default=64, help="chunk size (default 64)")
    ap.add_argument("--dstate", type=int, default=32, help="state size N (default 32)")
    ap.add_argument("--reps", type=int, default=20, help="profiled calls per side (default 20)")


def check_ssd_shapes(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """One argparse error line unless every add_ssd_shape_args size is positive and --heads a multiple of
    --groups."""
    if min(a.batch, a.seqlen, a.heads, a.headdim, a.groups, a.chunk, a.dstate, a.reps) < 1 or a.heads % a.groups:
        ap.error("every size must be positive and --heads a multiple of --groups")


def time_sides(a: argparse.Namespace, result: dict, sides: dict, floor_of: Callable[[str], float]) -> None:
    """Each side's device ms a call (sides: {name: (part, fn)}) with its part's floor (floor_of(part), ms) into
    result["timing"], printed as one table, then each of result["parity"]'s entries: max relative errors against
    mamba-ssm (CUDA) or golf's PyTorch twins (the CPU dry run). The SSD kernel benches' last step."""
    rows = []
    for name, (part, fn) in sides.items():
        floor = floor_of(part)
        ms = device_ms(fn, a.device, a.reps)
        result["timing"][name] = {"device_ms": ms, "floor_ms": floor}
        rows.append([name, f"{ms:.3f}", f"{floor:.3f}", f"{ms / floor:.2f}x"])
    print(table(rows, ["impl", "device ms a call", "floor", "ms / floor"]))
    against = "mamba-ssm" if a.device == "cuda" else "golf's twin"
    for impl, errs in result["parity"].items():
        print(f"parity of {impl} (max rel err against {against}): "
              + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))


def cuda_missing(a: argparse.Namespace) -> bool:
    """True, after one error line, when --device cuda was asked for on a machine without one."""
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA device (--device cpu: a dry run in Triton's interpreter)",
              file=sys.stderr)
        return True
    return False


def import_kernels(a: argparse.Namespace, module: str):
    """golf's kernel module `module` (e.g. "golf.ssd_dt_kernel"), under Triton's CPU interpreter for a --device cpu
    dry run: TRITON_INTERPRET is read when a module's kernels are defined, so it is set before the import."""
    if a.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return importlib.import_module(module)


def require_mamba_triton() -> None:
    """A RuntimeError (which run_and_write records as the run's error) unless mamba-ssm's Triton kernels import."""
    from golf import ssm

    if ssm._import_mamba_triton() is None:
        raise RuntimeError("mamba-ssm's Triton kernels do not import here")


def new_result(a: argparse.Namespace, packages, parity_keys) -> dict:
    """The result JSON's skeleton: the arguments, the device, the packages' versions, an empty entry per parity
    comparison, timing and errors."""
    import torch

    return {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "device": torch.cuda.get_device_name() if a.device == "cuda" else a.device,
            "versions": package_versions(packages), **{k: {} for k in parity_keys}, "timing": {}, "errors": {}}


def run_and_write(a: argparse.Namespace, result: dict, measure: Callable[[], None]) -> int:
    """measure() (parity, then timing, into `result`), then --json: written even when measure() raises, since a
    CUDA fault poisons every later call and what came before it is still worth keeping. Returns 1 when any
    implementation (or the run) failed, else 0."""
    try:
        measure()
    except Exception as e:  # noqa: BLE001 -- keep what was measured
        result["errors"]["fatal"] = repr(e)
        print(f"stopped: {e!r}", file=sys.stderr)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(a.json, json.dumps(result, indent=1))
    return 1 if result["errors"] else 0


def print_and_write(result: dict, json_path) -> dict:
    """A bench's result as one JSON line on stdout and, with a --json path (str or Path; "" or None: none), as an
    indented file, written atomically (its folder made if missing). Returns the result."""
    print(json.dumps(result))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=1))
    return result


def rel_errs(got: dict, want: dict) -> dict:
    """max |got - want| / max |want| per tensor name (the scale-free error the benchmarks gate on)."""
    return {k: float((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)) for k in want}


def wall_clock(fn, warmup, rep, grad_to_none=(), return_mode="median"):
    """triton.testing.do_bench's stand-in for a CPU dry run: one warm-up call, then the median of three (ms)."""
    fn()
    times = []
    for _ in range(3):
        for t in grad_to_none:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[1]


def bencher(device: str) -> Callable:
    """do_bench on CUDA (its warm-up also runs autotuning, so no tuning lands in the timed calls), else the
    wall clock above."""
    if device == "cuda":
        from triton.testing import do_bench
        return do_bench
    return wall_clock


def device_ms(fn, device: str, reps: int = 20, grad_to_none=()) -> float:
    """Device time per call (ms): the kernels `fn` launches, summed over `reps` calls under torch.profiler.
    A training step with host run-ahead pays this, not the wall time do_bench measures, which also counts the
    host's launch gaps whenever the host is slower than the device (mamba-ssm's Python wrappers launch about
    twenty kernels per forward + backward; RESULTS, 2026-11-30 fifth block: its scan took 2.35 ms per layer call
    in a step's profile against 5.16 ms under do_bench). On a CPU dry run, the CPU ops' self time instead."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from golf.profiling import summarize_window

    cuda = device == "cuda"
    fn()  # warm: compiles, autotunes
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(reps):
            for t in grad_to_none:
                t.grad = None
            fn()
        if cuda:
            torch.cuda.synchronize()
    return summarize_window(prof, reps, 0.0, cuda)["ms_per_step"]


def package_versions(names) -> dict:
    """{name: installed version or None} for the benchmark's JSON."""
    import importlib.metadata

    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def off_reference(errs: dict, base_errs: dict, tol: float) -> list[str]:
    """The tensors whose error against the reference exceeds both tol and twice the baseline library's own
    (both round in low precision, so they need not agree with each other more closely than each does with it)."""
    return [k for k, e in errs.items() if e > max(tol, 2 * base_errs.get(k, 0.0))]


TIMING_HEADER = ["impl", "fwd ms", "fwd / floor", "fwd+bwd ms", "fwd+bwd / floor", "bwd ms", "fwd device ms",
                 "fwd+bwd device ms"]


def timing_row(name: str, t: dict, floor: dict) -> list[str]:
    """A TIMING_HEADER row: t and floor hold fwd_ms and fwd_bwd_ms (do_bench's), t also the device times
    (device_ms; "-" where absent, as for the floor)."""
    dev = [f"{t[k]:.3f}" if k in t else "-" for k in ("fwd_device_ms", "fwd_bwd_device_ms")]
    return [name, f"{t['fwd_ms']:.3f}", f"{t['fwd_ms'] / floor['fwd_ms']:.1f}x", f"{t['fwd_bwd_ms']:.3f}",
            f"{t['fwd_bwd_ms'] / floor['fwd_bwd_ms']:.1f}x", f"{t['fwd_bwd_ms'] - t['fwd_ms']:.3f}", *dev]


def graph_of(fn: Callable[[], object], calls: int = 1):
    """fn() `calls` times captured in one CUDA graph, after one call on the capture's stream (lazy setup such as
    cuBLAS's workspace stays out of the capture) → the graph (replay() runs it)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(calls):
            fn()
    return graph
