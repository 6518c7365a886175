"""Where a training step's time goes: torch.profiler over a window of steps, summarised by kernel family.

Used by bench/train_throughput.py (the step alone, on random or host-loaded tokens) and by the training loop
itself (`train.profile_steps`): on 2026-11-29 the loop stepped at ~119 ms where the bench stepped at ~97 ms
(bench/RESULTS.md, seventh block), and only a profile of the real loop says which of its extra work (data,
budget bookkeeping, checkpoints, progress) or which wait keeps the device idle.

On CUDA a window's summary holds the device kernels' time by family (KERNEL_FAMILIES) and by name, how much
of the window's wall time the device was busy (the union of kernel intervals), and the host's CUDA runtime
calls by time (a long cudaStreamSynchronize or cudaEventSynchronize is the host waiting for the device; a
long cudaLaunchKernel total is the host launching). On CPU it holds the ops' self time instead.
"""

from __future__ import annotations

import re
import time

import torch

# Kernel families, first match wins: name patterns of cuBLAS/CUTLASS GEMMs, inductor's generated Triton kernels,
# flash/SDPA attention, mamba-ssm's Triton SSD-scan and gated-norm kernels, causal-conv1d, PyTorch's foreach
# (optimizer), copy/fill and eager elementwise/reduction kernels, NCCL. Inductor's come before the named kernels
# because they spell out the ops they fuse (e.g. triton_red_fused_..._rms_norm_...); its templates (triton_tem_)
# are matmuls.
KERNEL_FAMILIES = (
    ("gemm", r"^triton_tem_|gemm|cutlass|cublas|xmma|nvjet|s16816|s1688|splitK"),
    ("inductor_fused", r"^triton_(poi|red|per)_"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("ssd_scan", r"^_?(chunk_cumsum|chunk_state|chunk_scan|state_passing|bmm_chunk)"),
    ("gated_norm", r"^_?layer_norm_(fwd|bwd)|rms_?norm"),
    ("causal_conv", r"causal_conv1d"),
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
    step k (k counts from 1) and `after_read(k)` once step k's result is read. When the window's last step
    is read it synchronizes the device, stops, and `summary` holds the window (None before; `steps` = 0 makes
    both calls no-ops).

    Wall time runs from launching the first step of the window to the device finishing its last, so with the
    loop's run-ahead the step before the window may still be running at the start; over tens of steps that
    is a small share."""

    def __init__(self, first_step: int, steps: int, device: torch.device, clock=time.perf_counter):
        self.first_step, self.steps, self.device, self.clock = first_step, steps, device, clock
        self.summary: dict | None = None
        self._prof = None
        self._t0 = 0.0

    def before_step(self, step: int) -> None:
        if self.steps and step == self.first_step and self._prof is None and self.summary is None:
            from torch.profiler import ProfilerActivity, profile

            cuda = self.device.type == "cuda"
            self._prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
            self._prof.start()
            self._t0 = self.clock()

    def after_read(self, step: int) -> None:
        if self._prof is None or step != self.first_step + self.steps - 1:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall_s = self.clock() - self._t0
        self._prof.stop()
        self.summary = summarize_window(self._prof, self.steps, wall_s, self.device.type == "cuda")
        self.summary["first_step"] = self.first_step
        self._prof = None

    def close(self) -> None:
        """Stops a window the loop left unfinished (training ended inside it); no summary then."""
        if self._prof is not None:
            self._prof.stop()
            self._prof = None


def summarize_window(prof, steps: int, wall_s: float, cuda: bool) -> dict:
    """A stopped torch.profiler.profile of `steps` steps that took `wall_s` → the summary described above."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    out = {"steps": steps, "wall_ms_per_step": round(wall_s * 1e3 / steps, 3)}
    if not cuda:
        cpu = [(e.name, e.self_cpu_time_total) for e in events if e.device_type == DeviceType.CPU]
        return {**out, "timeline": "CPU ops (self time)", **summarize_profile(cpu, steps)}
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    device = summarize_profile([(e.name, e.time_range.elapsed_us()) for e in kernels], steps)
    busy = busy_us([(e.time_range.start, e.time_range.end) for e in kernels])
    runtime = [(e.name, e.cpu_time_total) for e in events
               if e.device_type == DeviceType.CPU and e.name.startswith(("cuda", "cu"))]
    host = summarize_profile(runtime, steps, top=10)
    return {**out, "timeline": "device kernels", "device_busy_ms_per_step": round(busy / 1e3 / steps, 3),
            "device_busy_frac": round(busy / 1e6 / wall_s, 4) if wall_s > 0 else None,
            **device,
            "host_runtime_calls": [{k: t[k] for k in ("name", "ms_per_step", "calls_per_step")}
                                   for t in host["top"]]}
