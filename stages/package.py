"""package: serialize + compress the quantized model, add the eval code, check the 16,000,000-byte cap.

Reads runs/<seed>/quant/quantized.safetensors; writes runs/<seed>/artifact/ (compressed model, code/*.py,
provenance.json) and runs/<seed>/metrics/package.json. Over params.package.cap_bytes it fails with an
ArtifactError naming the sizes, writes no artifact and removes a previous one. With package.target_bytes > 0
the cheapest quantized ±1 codes are zeroed first until the artifact fits the target (golf/size_target.py;
it reads runs/<seed>/quant/column_weights.safetensors); metrics["size_target"] says how many, the estimated
cost, the search's slack and rounds and (sizes_before) every compressor's size on the untouched model; the
search's last compression is the one written. metrics["phase_secs"]: seconds of loading, the compressor sweep
and the search (with a target) and the write (with the compressions it still does).
"""

from __future__ import annotations

import time
from pathlib import Path

from golf import progress, provenance
from golf.config import Params
from golf.gptq import load_quantized
from golf.locks import locks_run_folder
from golf.package import build_artifact, inspect_artifact
from golf.size_target import COLUMN_WEIGHTS_FILE, load_column_weights, shrink_for_package
from golf.stage_io import write_metrics


@locks_run_folder
def run(params: Params, seed: int) -> dict:
    t0 = time.time()
    run_dir = params.run_dir(seed)
    tensors, spec, model_config = load_quantized(run_dir / "quant" / "quantized.safetensors")
    pc = params.package
    prov = provenance.collect("package", pc, {"seed": seed})
    compressor, planes, extra, compare, blob = pc.compressor, pc.byte_planes, {}, pc.compare_compressors, None
    phases = {"load": round(time.time() - t0, 2)}
    if pc.target_bytes > 0:
        col_weights = load_column_weights(run_dir / "quant" / COLUMN_WEIGHTS_FILE)
        tensors, info, compressor, planes, blob = shrink_for_package(
            tensors, spec, model_config, col_weights, pc.target_bytes, pc.compressor, pc.byte_planes,
            compare=pc.compare_compressors, segments=pc.segments)
        extra, compare = {"size_target": info}, False  # the comparison sizes are in size_target.sizes_before
        phases.update(info["secs"])
    t_write = time.time()
    with progress.bars(f"package seed {seed}") as bar:
        metrics = build_artifact(run_dir / "artifact", tensors, spec, model_config, compressor, pc.cap_bytes,
                                 compare, provenance=prov, byte_planes=planes, extra_metrics=extra,
                                 progress=bar.tracker("steps"), precompressed=blob, segments=pc.segments)
    phases["write"] = round(time.time() - t_write, 2)
    metrics["phase_secs"] = phases
    metrics["secs"] = round(time.time() - t0, 3)
    write_metrics(run_dir / "metrics", metrics, "package.json")
    return metrics


def inspect(path: Path) -> str:
    """Size breakdown of an artifact folder (or its model file) by tensor group."""
    return inspect_artifact(path)
