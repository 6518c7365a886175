"""package: serialize + LZMA the quantized model, add the eval code, check the 16,000,000-byte cap."""

from __future__ import annotations

import json
import time
from pathlib import Path

from golf.config import Params
from golf.errors import ArtifactError
from golf.package import build_artifact, inspect_artifact
from golf.stage_io import write_metrics, write_provenance


def run(params: Params, seed: int) -> dict:
    from safetensors import safe_open

    t0 = time.time()
    run_dir = params.run_dir(seed)
    qpath = run_dir / "quant" / "quantized.safetensors"
    if not qpath.is_file():
        raise ArtifactError(f"quantized model {str(qpath)!r} not found (run the quantize stage first)")
    with safe_open(str(qpath), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    spec, model_config = json.loads(meta["spec"]), json.loads(meta["model_config"])
    pc = params.package
    metrics = build_artifact(run_dir / "artifact", tensors, spec, model_config, pc.compressor, pc.cap_bytes,
                             pc.compare_compressors)
    write_provenance(run_dir / "artifact", "package", params.package, {"seed": seed})
    metrics["secs"] = round(time.time() - t0, 3)
    write_metrics(run_dir / "metrics", metrics, "package.json")
    return metrics


def inspect(path: Path) -> str:
    return inspect_artifact(path)
