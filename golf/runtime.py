"""Process setup shared by every stage: device, torchrun's process group and ranks, seeds, matmul precision,
autocast. Stages, training, calibration and the bench scripts take these from here.

`autocast` and `rank_world` are defined in golf/evaluate.py and re-exported: the artifact carries the
evaluation code and every golf module it imports (golf.package.code_files), so the two helpers that code
needs live there rather than pulling this module (seeding, process groups, TF32) into the size budget."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from golf.evaluate import autocast  # noqa: F401  (re-exported, see above)
from golf.evaluate import dist_info as rank_world  # noqa: F401  (re-exported: (rank, world) of the process group)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """This process's place in a torchrun launch, from the variables torchrun sets (before any process group
    exists); a plain `python` run is rank 0 of 1."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(int(os.environ.get("RANK", "0")))
    return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device_kind: str) -> DistInfo:
    """Join torchrun's process group (NCCL on CUDA, gloo elsewhere); a single process joins nothing."""
    info = env_dist_info()
    if info.world_size == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return info


def leave_distributed(info: DistInfo) -> None:
    """End a torchrun stage together: every rank waits here until all have arrived (so rank 0 has written its
    outputs), then the process group goes. Without the barrier a gloo rank could hang at exit once its peer
    had left (seen about one run in three on CPU). A no-op for a single process."""
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def init_stage_process(device_spec: str) -> tuple[DistInfo, torch.device]:
    """A stage's process setup: join torchrun's process group when launched under it, pick this rank's device
    from the config's device spec, and make it the current CUDA device (NCCL all-reduces run on it)."""
    dinfo = init_distributed(resolve_device(device_spec).type)
    device = resolve_device(device_spec, dinfo.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return dinfo, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def enable_tf32() -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA, as training runs (bf16 autocast covers the rest); the
    bench scripts call it too, so that they time and compare what training runs. It stays on for the rest of
    the process: inside a stage use `training_precision`, which restores the settings."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _read(getter):
    try:
        return getter()
    except RuntimeError:  # torch refuses to answer once its legacy and fp32_precision TF32 APIs were mixed
        return None


def matmul_settings() -> dict:
    """torch's process-wide numeric settings that training changes (None: torch cannot say): in provenance."""
    return {"float32_matmul_precision": _read(torch.get_float32_matmul_precision),
            "cuda_matmul_allow_tf32": _read(lambda: torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": _read(lambda: torch.backends.cudnn.allow_tf32),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


@contextlib.contextmanager
def training_precision(device: torch.device):
    """Training's global torch settings, restored on exit: TF32 on CUDA; deterministic algorithms elsewhere
    (the bit-exact CPU reference). A stage run after train in the same process (`pipeline --no-dvc`) then
    sees the settings it would see in a process of its own."""
    saved = matmul_settings()
    if device.type == "cuda":
        enable_tf32()
    else:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        if device.type == "cuda":
            # the precision string sets cuda.matmul.allow_tf32 too ("highest" = off) and keeps "medium"
            if saved["float32_matmul_precision"] is not None:
                torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
            if saved["cudnn_allow_tf32"] is not None:
                torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
        torch.use_deterministic_algorithms(saved["deterministic_algorithms"])
