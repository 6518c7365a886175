"""package: serialize + compress the quantized model, add the eval code, check the 16,000,000-byte cap.

Reads runs/<seed>/quant/quantized.safetensors; writes runs/<seed>/artifact/ (compressed model, code/*.py,
provenance.json) and runs/<seed>/metrics/package.json. Over params.package.cap_bytes it fails with an
ArtifactError naming the sizes and writes no artifact.
"""

from __future__ import annotations

import time
from pathlib import Path

from golf import progress, provenance
from golf.config import Params
from golf.gptq import load_quantized
from golf.package import build_artifact, inspect_artifact
from golf.stage_io import write_metrics


def run(params: Params, seed: int) -> dict:
    t0 = time.time()
    run_dir = params.run_dir(seed)
    tensors, spec, model_config = load_quantized(run_dir / "quant" / "quantized.safetensors")
    pc = params.package
    prov = provenance.collect("package", pc, {"seed": seed})
    with progress.bars(f"package seed {seed}") as bar:
        metrics = build_artifact(run_dir / "artifact", tensors, spec, model_config, pc.compressor, pc.cap_bytes,
                                 pc.compare_compressors, provenance=prov, progress=bar.tracker("steps"))
    metrics["secs"] = round(time.time() - t0, 3)
    write_metrics(run_dir / "metrics", metrics, "package.json")
    return metrics


def inspect(path: Path) -> str:
    """Size breakdown of an artifact folder (or its model file) by tensor group."""
    return inspect_artifact(path)
