"""quantize: GPTQ int6 block matrices, int8 embeddings, float small tensors and fp32 SSM dynamics.

Reads only runs/<seed>/train/ and runs/<seed>/hessian/ (so changing params.quant reruns from the cached
Hessians, without retraining or recalibrating); writes runs/<seed>/quant/quantized.safetensors +
provenance.json and runs/<seed>/metrics/quantize.json (per-layer relative output error through H).
"""

from __future__ import annotations

import time

from golf import progress
from golf.config import Params, to_dict
from golf.gptq import quantize_model, save_quantized
from golf.hessian import load_hessians
from golf.model import load_model
from golf.stage_io import write_metrics, write_provenance
from golf.train import resolve_device


def run(params: Params, seed: int) -> dict:
    t0 = time.time()
    run_dir = params.run_dir(seed)
    device = resolve_device(params.train.device)
    model = load_model(run_dir / "train", "cpu")
    hessians, hmeta = load_hessians(run_dir / "hessian" / "hessians.safetensors")
    with progress.bars(f"quantize seed {seed}") as bar:
        tensors, spec, report = quantize_model(model, hessians, params.quant, device,
                                               progress=bar.tracker("weights (elements)"))
    out_dir = run_dir / "quant"
    save_quantized(out_dir / "quantized.safetensors", tensors, spec, to_dict(model.cfg))
    write_provenance(out_dir, "quantize", params.quant,
                     {"seed": seed, "device": str(device), "hessian_tokens": int(hmeta.get("tokens", 0))})
    errs = [v["rel_err"] for v in report.values()]
    kinds: dict[str, int] = {}
    for s in spec.values():
        key = f"int{s['bits']}_{s['method']}" if s["kind"] == "int" else f"{s['dtype']}_{s['why']}"
        kinds[key] = kinds.get(key, 0) + 1
    metrics = {"layers": report, "gptq_layers": len(report), "tensors_by_kind": kinds,
               "mean_rel_err": sum(errs) / len(errs) if errs else 0.0,
               "max_rel_err": max(errs) if errs else 0.0,
               "mean_rtn_rel_err": sum(v["rtn_rel_err"] for v in report.values()) / len(errs) if errs else 0.0,
               "secs": round(time.time() - t0, 3)}
    write_metrics(run_dir / "metrics", metrics, "quantize.json")
    return metrics
