"""What every stage does around its real work: resolve paths, write metrics and provenance atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golf import provenance
from golf.io import write_json_atomic


def write_metrics(out_dir: str | Path, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
    path = Path(out_dir) / name
    write_json_atomic(path, metrics)
    return path


def write_provenance(out_dir: str | Path, stage: str, config: Any = None,
                     extra: dict[str, Any] | None = None) -> Path:
    path = Path(out_dir) / "provenance.json"
    write_json_atomic(path, provenance.collect(stage, config, extra))
    return path
