"""prepare: corpus (or the challenge's FineWeb export, or existing shards) → data/<name>/ shards."""

from __future__ import annotations

from golf import progress
from golf.config import Params
from golf.prepare import prepare
from golf.stage_io import write_metrics, write_provenance


def run(params: Params, force: bool = False) -> dict:
    out_dir = params.data_dir()
    with progress.bars("prepare") as bar:
        manifest = prepare(params.data, out_dir, force, bar)
    if not manifest.get("up_to_date"):  # kept shards keep the provenance of the run that wrote them
        write_provenance(out_dir, "prepare", params.data)
    metrics = {"source": manifest["source"], "vocab_size": params.data.vocab_size}
    for split, info in manifest["splits"].items():
        for key in ("docs", "tokens", "bytes"):
            if key in info:
                metrics[f"{split}_{key}"] = info[key]
    if "seconds" in manifest:
        metrics["seconds"] = manifest["seconds"]
    metrics["up_to_date"] = bool(manifest.get("up_to_date"))  # true: same inputs, shards kept as they were
    write_metrics("metrics", metrics, "prepare.json")
    return metrics
