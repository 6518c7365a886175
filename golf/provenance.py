"""Provenance written beside every output: resolved config, git commit, library versions, device, and the
process-wide matmul settings (TF32, float32 matmul precision, deterministic algorithms) in force."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from golf.config import to_dict

_LIBRARIES = ("torch", "numpy", "sentencepiece", "mamba-ssm", "causal-conv1d", "flash-attn", "flash-attn-4",
              "triton", "safetensors", "dvc", "typer", "scipy")


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """HEAD commit and whether the tree had uncommitted changes; 'unknown' outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def commit_label(git: dict[str, Any]) -> str:
    """A git_commit() record as a short label: the first 12 hex digits, '+dirty' for uncommitted changes;
    'unknown' outside a git checkout."""
    commit = str(git.get("commit") or "unknown")
    return "unknown" if commit == "unknown" else commit[:12] + ("+dirty" if git.get("dirty") else "")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "machine": platform.machine(),
                            "python": sys.version.split()[0]}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            info["cuda_devices"] = []
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return info


def collect(stage: str, config: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to trace an output back: stage, config, code version, libraries, device, the matmul
    settings in force when it is called (a stage that changes them for its own work, as train does, passes
    the ones it used in `extra`)."""
    from golf.runtime import matmul_settings

    prov: dict[str, Any] = {
        "stage": stage,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "versions": library_versions(),
        "device": device_info(),
        "matmul": matmul_settings(),
        "argv": sys.argv,
    }
    if config is not None:
        prov["config"] = to_dict(config) if hasattr(config, "__dataclass_fields__") else config
    if extra:
        prov.update(extra)
    return prov
