"""The GPU's SM clock and power draw while a timed window runs, from `nvidia-smi` sampling in the background.

Why: lent H200s stepped the same code 2-20% apart (bench/RESULTS.md), and under the 700-W cap their SM clocks sat
at different speeds (1,650-1,755 against 1,740-1,830 MHz during training, twenty-third block). A step time that
names the clock it ran at can be read across machines. bench/train_throughput.py records it over its timed steps.

    with ClockSamples(device) as clock:
        ...timed work...
    clock.summary()  # {"sm_clock_mhz": median, "sm_clock_min_mhz", "sm_clock_max_mhz", "power_w": median,
                     #  "samples": n} or {"unavailable": why}

Sampling is nvidia-smi's own loop (`--loop-ms`), one process for the window, so it costs the timed work nothing but a
few milliseconds of host time when it starts. Without CUDA, without nvidia-smi, or with no sample back (a window
shorter than the interval), summary() says why instead of inventing a number.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from typing import Self

import torch

QUERY = "clocks.sm,power.draw"


def device_id(device: torch.device) -> str:
    """The id nvidia-smi's -i takes for a torch device: its UUID, right whatever CUDA_VISIBLE_DEVICES maps."""
    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def parse(text: str) -> list[tuple[float, float]]:
    """(SM MHz, watts) per line of `--format=csv,noheader,nounits` output; lines that are not two numbers (a
    '[N/A]', a partial last line when the sampler is stopped) are skipped."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            out.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    return out


def summarize(samples: list[tuple[float, float]]) -> dict:
    clocks = [c for c, _ in samples]
    return {"sm_clock_mhz": round(statistics.median(clocks)), "sm_clock_min_mhz": round(min(clocks)),
            "sm_clock_max_mhz": round(max(clocks)), "power_w": round(statistics.median(w for _, w in samples), 1),
            "samples": len(samples)}


class ClockSamples:
    """Context manager: nvidia-smi samples `device`'s SM clock and power every interval_ms while the block runs."""

    def __init__(self, device: torch.device | str, interval_ms: int = 100, smi: str = "nvidia-smi"):
        if interval_ms < 1:
            raise ValueError(f"interval_ms must be >= 1, got {interval_ms}")
        self.device = torch.device(device)
        self.interval_ms = interval_ms
        self.smi = smi
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._why: str | None = None
        self._samples: list[tuple[float, float]] = []

    def __enter__(self) -> Self:
        if self.device.type != "cuda":
            self._why = f"device {self.device} is not CUDA"
            return self
        exe = shutil.which(self.smi)
        if exe is None:
            self._why = f"{self.smi} not found on PATH"
            return self
        try:  # a measurement beside the benchmark: whatever fails here is reported, never raised into the timing
            gpu = device_id(self.device)
        except Exception as e:  # noqa: BLE001 (torch versions differ in what a device's properties hold)
            self._why = f"no nvidia-smi id for {self.device}: {type(e).__name__}: {e}"
            return self
        self._log = tempfile.TemporaryFile("w+")
        try:
            self._proc = subprocess.Popen([exe, "-i", gpu, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits",
                                           f"--loop-ms={self.interval_ms}"],
                                          stdout=self._log, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            self._log.close()
            self._why = f"{self.smi} could not start: {e}"
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.seek(0)
        self._samples = parse(self._log.read())
        self._log.close()
        self._proc = None
        if not self._samples:
            self._why = f"{self.smi} returned no sample in the window (shorter than {self.interval_ms} ms?)"

    def summary(self) -> dict:
        return summarize(self._samples) if self._samples else {"unavailable": self._why or "not sampled"}
