"""Where a training step's time goes: torch.profiler over a window of steps, summarised by kernel family.

Used by bench/train_throughput.py (the step alone, on random or host-loaded tokens) and by the training loop
itself (`train.profile_steps`), which says whether the loop's own extra work (data, budget bookkeeping,
checkpoints, progress) or a wait keeps the device idle. On 2026-11-29 it showed the loop stepping as fast as the
bench on one machine (97.6 against 97.3 ms, device busy 95.7%), with the host's launch work about as long as the
device's: a slower host alone made another machine's loop step at ~119 ms (bench/RESULTS.md, that day's eighth
block).

On CUDA a window's summary holds the device kernels' time by family (KERNEL_FAMILIES) and by name, how much
of the window's wall time the device was busy (the union of kernel intervals), where it was idle (idle_gaps: gap
lengths and the kernels around them), the host's CUDA runtime
calls by time (a long cudaStreamSynchronize or cudaEventSynchronize is the host waiting for the device; a
long cudaLaunchKernel total is the host launching), and the host's time per step inside each phase of the
step (golf.train's `golf/...` ranges: batch, forward, backward, optimizer, ema, read_loss), and the ATen ops
whose own kernels took the most device time, by input shapes (aten_ops: where eager work comes from). On CPU it
holds the ops' self time instead of the kernels.
"""

from __future__ import annotations

import re
import time

import torch

# Kernel families, first match wins: name patterns of cuBLAS/CUTLASS GEMMs, inductor's generated Triton kernels,
# flash/SDPA attention, mamba-ssm's (or golf's, golf/ssd_kernel.py, golf/ssd_dcb_kernel.py) Triton SSD-scan kernels,
# gated-norm kernels (mamba-ssm's or golf's, golf/gated_norm_kernel.py), golf's blocks' residual glue
# (golf/block_norm_kernel.py), causal-conv1d (or golf's conv, golf/conv_kernel.py), PyTorch's
# foreach (optimizer), copy/fill and eager elementwise/reduction kernels, NCCL. Inductor's come before the named kernels
# because they spell out the ops they fuse (e.g. triton_red_fused_..._rms_norm_...); its templates (triton_tem_)
# are matmuls.
KERNEL_FAMILIES = (
    ("gemm", r"^triton_tem_|gemm|cutlass|cublas|xmma|nvjet|s16816|s1688|splitK"),
    ("inductor_fused", r"^triton_(poi|red|per)_"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("ssd_scan", (r"^_?(chunk_cumsum|chunk_state|chunk_scan|chunk_local|chunk_y|chunk_dx|dt_grads|state_passing"
                  r"|bmm_chunk|ssd_(fwd|bwd))")),
    ("gated_norm", r"^_?layer_norm_(fwd|bwd)|^_gated_norm_(fwd|bwd)|rms_?norm"),
    ("block_norm", r"^_add_mix_norm_(fwd|bwd)"),
    ("causal_conv", r"causal_conv1d|^_conv_(fwd|bwd)(_\w+)?_kernel$"),
    ("optimizer_foreach", r"multi_tensor_apply|foreach"),
    ("copy_fill", r"memcpy|memset|copy_kernel|fill_kernel|CatArrayBatchedCopy|direct_copy"),
    ("elementwise_eager", r"elementwise_kernel|reduce_kernel|index_elementwise|unrolled_elementwise"),
    ("nccl", r"nccl"),
)


def kernel_family(name: str) -> str:
    """The family of a device kernel's name (KERNEL_FAMILIES), else "other"."""
    for family, pattern in KERNEL_FAMILIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return family
    return "other"


def summarize_profile(events: list[tuple[str, float]], steps: int, top: int = 25) -> dict:
    """events: (kernel or op name, microseconds) of `steps` profiled steps → ms per step in total, by family and
    for the `top` names (with their calls per step), largest first."""
    total_us, by_family, by_name = 0.0, {}, {}
    for name, us in events:
        total_us += us
        fam = kernel_family(name)
        by_family[fam] = by_family.get(fam, 0.0) + us
        t, n = by_name.get(name, (0.0, 0))
        by_name[name] = (t + us, n + 1)

    def per_step(us: float) -> float:
        return round(us / 1e3 / steps, 3)

    return {"ms_per_step": per_step(total_us),
            "by_family_ms": {f: per_step(us) for f, us in sorted(by_family.items(), key=lambda kv: -kv[1])},
            "top": [{"name": name[:160], "family": kernel_family(name), "ms_per_step": per_step(us),
                     "calls_per_step": round(n / steps, 2)}
                    for name, (us, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]]}


# idle gaps on the device timeline, by length in microseconds: (upper bound, label), the last one open
GAP_BUCKETS_US = ((2.0, "<2us"), (5.0, "2-5us"), (20.0, "5-20us"), (100.0, "20-100us"), (float("inf"), ">=100us"))


def idle_gaps(kernels: list[tuple[str, float, float]], steps: int, top: int = 12) -> dict:
    """kernels: (name, start, end) in microseconds, on any streams → the device's idle time between them: where no
    kernel runs, from the first kernel's start to the last one's end. Per step: the idle total, the number of gaps
    and idle time by gap length (GAP_BUCKETS_US), and the `top` kernel pairs around the most idle time ("before ->
    after", the kernel that ended the busy stretch and the one that began the next; names cut to 60 characters)
    with their gaps per step. Many short gaps between small kernels are launch latency; a few long ones are the
    host or a stream wait."""
    buckets = {label: [0.0, 0] for _, label in GAP_BUCKETS_US}
    pairs: dict[str, list] = {}
    total, end, last_name = 0.0, None, ""
    for name, a, b in sorted(kernels, key=lambda k: k[1]):
        if end is not None and a > end:
            gap = a - end
            total += gap
            label = next(lab for bound, lab in GAP_BUCKETS_US if gap < bound)
            buckets[label][0] += gap
            buckets[label][1] += 1
            pair = pairs.setdefault(f"{last_name[:60]} -> {name[:60]}", [0.0, 0])
            pair[0] += gap
            pair[1] += 1
        if end is None or b >= end:
            end, last_name = b, name

    def per_step(us: float) -> float:
        return round(us / 1e3 / steps, 3)

    return {"idle_ms_per_step": per_step(total),
            "gaps_per_step": round(sum(n for _, n in buckets.values()) / steps, 1),
            "by_length": {label: {"ms_per_step": per_step(us), "gaps_per_step": round(n / steps, 1)}
                          for label, (us, n) in buckets.items()},
            "top_pairs": [{"pair": pair, "ms_per_step": per_step(us), "gaps_per_step": round(n / steps, 2)}
                          for pair, (us, n) in sorted(pairs.items(), key=lambda kv: -kv[1][0])[:top]]}


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Microseconds covered by the union of (start, end) intervals: device time with at least one kernel
    running (kernels on several streams may overlap)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


class StepWindowProfiler:
    """Profiles steps [first_step, first_step + steps) of a loop that calls `before_step(k)` before launching
    step k (k counts from 1): it starts before step first_step is launched and, before step first_step + steps
    is launched, waits for the device, stops, and sets `summary` (None until then; `steps` = 0 turns it off).
    The window thus holds exactly `steps` launches and the device work they queued, whatever the loop reads
    meanwhile (with run-ahead it reads each step's loss after launching the next). `close()` ends a window the
    loop left open: a summary when all its steps were launched (training ended on its last step), else none.

    With run-ahead the step before the window may still be running on the device when it starts; over tens
    of steps that is a small share of the wall time.

    `trace_path`: the window's Chrome trace (chrome://tracing, Perfetto) is written there as well, for a timeline
    the summary does not give.

    `before_step` returns the seconds it spent on the profiler itself (starting it; stopping it and summarizing
    once the device is done), which a budgeted loop keeps off its clock: 9 s in a 60-s training run on
    2026-11-29, before the loop did so (bench/RESULTS.md, that day's eighth block). The summary's `overhead_s`
    totals them."""

    def __init__(self, first_step: int, steps: int, device: torch.device, clock=time.perf_counter,
                 record_shapes: bool = False, trace_path: str | None = None):
        self.first_step, self.steps, self.device, self.clock = first_step, steps, device, clock
        self.record_shapes = record_shapes  # train.profile_shapes: aten_ops by input shapes, at some host cost
        self.trace_path = trace_path  # the window's Chrome trace is written there too (gzipped when it ends .gz)
        self.summary: dict | None = None
        self._prof = None
        self._t0 = 0.0
        self._last_launched = 0
        self._overhead_s = 0.0  # spent starting the profiler

    def before_step(self, step: int) -> float:
        if not self.steps:
            return 0.0
        spent = 0.0
        if step == self.first_step and self._prof is None and self.summary is None:
            from torch.profiler import ProfilerActivity, profile

            t_begin = self.clock()
            cuda = self.device.type == "cuda"
            self._prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                                 record_shapes=self.record_shapes)
            self._prof.start()
            self._t0 = self.clock()
            spent = self._overhead_s = self._t0 - t_begin
        elif self._prof is not None and step == self.first_step + self.steps:
            spent = self._finish()
        if self._prof is not None:
            self._last_launched = step
        return spent

    def _finish(self) -> float:
        """Stop, summarize; the seconds spent after the window's device work ended."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t_end = self.clock()
        self._prof.stop()
        self.summary = summarize_window(self._prof, self.steps, t_end - self._t0, self.device.type == "cuda")
        if self.trace_path:
            self._prof.export_chrome_trace(self.trace_path)
            self.summary["trace"] = self.trace_path
        self.summary["first_step"] = self.first_step
        self._prof = None
        spent = self.clock() - t_end
        self.summary["overhead_s"] = round(self._overhead_s + spent, 3)
        return spent

    def close(self) -> None:
        if self._prof is None:
            return
        if self._last_launched == self.first_step + self.steps - 1:
            self._finish()
        else:
            self._prof.stop()
            self._prof = None


def host_ranges(events, steps: int) -> dict:
    """Host milliseconds per step inside each `golf/...` record_function range the training step opens (batch,
    forward, backward, optimizer, ema, read_loss): with the device busy, the host's launch work per phase; the
    window's wall time minus their sum is the loop's own bookkeeping."""
    from torch.autograd import DeviceType

    totals: dict[str, float] = {}
    for e in events:
        if e.name.startswith("golf/") and e.device_type == DeviceType.CPU:
            totals[e.name] = totals.get(e.name, 0.0) + e.cpu_time_total
    return {name: round(us / 1e3 / steps, 3) for name, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def aten_ops(events, steps: int, cuda: bool, top: int = 15) -> list[dict]:
    """The device time of the kernels each ATen op launched itself (self time: not its children's), per step, by
    op and input shapes, largest first; CPU self time where there is no device. Eager work shows here by name and
    shape (an elementwise add of (64, 2048, 512) tensors, say), where the kernel list says only which kernel ran.
    Inductor's own Triton kernels are not ATen ops and are absent; the GEMMs it calls through ATen are present."""
    from torch.autograd import DeviceType

    totals: dict[tuple[str, str], tuple[float, int]] = {}
    for e in events:
        if e.device_type != DeviceType.CPU or not e.name.startswith("aten::"):
            continue
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us <= 0:
            continue
        key = (e.name, str([list(shape) for shape in (e.input_shapes or []) if shape])[:160])
        t, n = totals.get(key, (0.0, 0))
        totals[key] = (t + us, n + 1)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [{"op": name, "shapes": shapes, "ms_per_step": round(us / 1e3 / steps, 3),
             "calls_per_step": round(n / steps, 2)} for (name, shapes), (us, n) in ranked]


def summarize_window(prof, steps: int, wall_s: float, cuda: bool) -> dict:
    """A stopped torch.profiler.profile of `steps` steps that took `wall_s` → the summary described above."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    out = {"steps": steps, "wall_ms_per_step": round(wall_s * 1e3 / steps, 3),
           "host_ranges_ms": host_ranges(events, steps)}
    if not cuda:
        cpu = [(e.name, e.self_cpu_time_total) for e in events if e.device_type == DeviceType.CPU]
        return {**out, "timeline": "CPU ops (self time)", **summarize_profile(cpu, steps),
                "aten_ops": aten_ops(events, steps, cuda)}
    # device-side spans of record_function ranges (Optimizer.step, golf/...) cover kernels and the gaps between
    # them: not kernels, so left out of the sums and of the busy time
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    device = summarize_profile([(e.name, e.time_range.elapsed_us()) for e in kernels], steps, top=80)  # every kernel over ~0.1 ms a step
    busy = busy_us([(e.time_range.start, e.time_range.end) for e in kernels])
    gaps = idle_gaps([(e.name, e.time_range.start, e.time_range.end) for e in kernels], steps)
    runtime = [(e.name, e.cpu_time_total) for e in events
               if e.device_type == DeviceType.CPU and e.name.startswith("cu")]  # cudaLaunchKernel, cuLaunchKernel, ...
    host = summarize_profile(runtime, steps, top=10)
    return {**out, "timeline": "device kernels", "device_busy_ms_per_step": round(busy / 1e3 / steps, 3),
            "device_busy_frac": round(busy / 1e6 / wall_s, 4) if wall_s > 0 else None,
            "kernels_per_step": round(len(kernels) / steps, 1), "idle_gaps": gaps,
            **device,
            "host_runtime_calls": [{k: t[k] for k in ("name", "ms_per_step", "calls_per_step")}
                                   for t in host["top"]],
            "aten_ops": aten_ops(events, steps, cuda)}


def compiled_graph_stats() -> dict:
    """What torch.compile has made of this process's compiled code so far: Dynamo's unique graphs, its graph
    breaks, and each break's reason on one line (cut to 300 characters) with its count. A model that compiles
    whole is one graph per input signature (AOT autograd's backward graphs are not counted). Each break is a
    separate launch of compiled code from Python and keeps the ops on either side out of one fusion. Until
    afc54e5 hybrid_seed_fit's forward was 10 graphs, a break in every padded Mamba layer, while its step was
    bound by the host (bench/RESULTS.md, seventh block)."""
    from torch._dynamo.utils import counters

    reasons: dict[str, int] = {}
    for reason, n in counters["graph_break"].items():
        line = " ".join(str(reason).split())[:300]
        reasons[line] = reasons.get(line, 0) + n
    return {"graphs": int(counters["stats"].get("unique_graphs", 0)), "graph_breaks": sum(reasons.values()),
            "break_reasons": reasons}
