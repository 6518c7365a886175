"""golf.gpu_samples: nvidia-smi's SM clock and power over a timed window, here with a stand-in nvidia-smi script
(the sampler's own logic: the command it runs, parsing, the summary, and saying why when there is no number)."""

import os
import stat
import time

import pytest
import torch

import golf.gpu_samples as gs
from golf.gpu_samples import ClockSamples, parse, summarize


def _stub(tmp_path, body: str) -> str:
    """An executable `nvidia-smi` in tmp_path that records its arguments and runs `body`; returns the folder."""
    path = tmp_path / "nvidia-smi"
    path.write_text(f'#!/usr/bin/env bash\necho "$@" > {tmp_path}/args\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(tmp_path)


def test_parse_skips_what_is_not_two_numbers():
    text = "1980, 120.51\n1755, 689.92\n[N/A], [N/A]\n1680, 69"  # the last line cut short by the stop: kept if whole
    assert parse(text) == [(1980.0, 120.51), (1755.0, 689.92), (1680.0, 69.0)]
    assert parse("garbage\n1,2,3\n") == []


def test_summary_is_the_median_and_range():
    s = summarize([(1980.0, 100.0), (1650.0, 690.0), (1740.0, 700.0)])
    assert s == {"sm_clock_mhz": 1740, "sm_clock_min_mhz": 1650, "sm_clock_max_mhz": 1980, "power_w": 690.0,
                 "samples": 3}


def test_samples_the_device_by_uuid_over_the_window(tmp_path, monkeypatch):
    # the stand-in prints a sample every 20 ms until it is stopped, as nvidia-smi's --loop-ms does
    monkeypatch.setenv("PATH", _stub(tmp_path, "while true; do echo '1755, 690.5'; sleep 0.02; done") + os.pathsep
                       + os.environ["PATH"])
    monkeypatch.setattr(gs, "device_id", lambda device: "GPU-6bc5ec26")
    with ClockSamples("cuda", interval_ms=20) as clock:
        time.sleep(0.5)
    s = clock.summary()
    assert s["sm_clock_mhz"] == 1755 and s["power_w"] == 690.5 and s["samples"] >= 2
    args = (tmp_path / "args").read_text().split()
    assert args == ["-i", "GPU-6bc5ec26", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                    "--loop-ms=20"]


def test_says_why_when_there_is_no_number(tmp_path, monkeypatch):
    with ClockSamples(torch.device("cpu")) as clock:
        pass
    assert clock.summary() == {"unavailable": "device cpu is not CUDA"}
    with ClockSamples("cuda", smi="no-such-nvidia-smi-here") as clock:
        pass
    assert clock.summary() == {"unavailable": "no-such-nvidia-smi-here not found on PATH"}
    monkeypatch.setenv("PATH", _stub(tmp_path, "echo 'No devices were found'") + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(gs, "device_id", lambda device: "GPU-0")
    with ClockSamples("cuda", interval_ms=20) as clock:
        time.sleep(0.2)
    assert "returned no sample" in clock.summary()["unavailable"]
    def no_uuid(device):
        raise AttributeError("'_CudaDeviceProperties' object has no attribute 'uuid'")

    monkeypatch.setattr(gs, "device_id", no_uuid)
    with ClockSamples("cuda") as clock:
        pass
    assert clock.summary() == {"unavailable": "no nvidia-smi id for cuda: AttributeError: '_CudaDeviceProperties' "
                                              "object has no attribute 'uuid'"}
    with pytest.raises(ValueError, match="interval_ms must be >= 1, got 0"):
        ClockSamples("cuda", interval_ms=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and its nvidia-smi")
def test_real_nvidia_smi_finds_the_device_by_its_torch_uuid():
    with ClockSamples("cuda", interval_ms=50) as clock:
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(50):
            a = a @ a / 64
        torch.cuda.synchronize()
        time.sleep(0.3)
    s = clock.summary()
    assert s.get("samples", 0) >= 1 and s["sm_clock_mhz"] > 0, s
