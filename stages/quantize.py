"""quantize: GPTQ int6 block matrices, int8 embeddings, float small tensors and fp32 SSM dynamics.

Reads only runs/<seed>/train/ and runs/<seed>/hessian/ (so changing params.quant reruns from the cached
Hessians, without retraining or recalibrating); writes runs/<seed>/quant/quantized.safetensors +
provenance.json and runs/<seed>/metrics/quantize.json (per-layer relative output error through H, and
calib_budget: the hessian and GPTQ seconds against calib.reserve_s, which they must fit, or the stage fails).
"""

from __future__ import annotations

import time

from golf import progress
from golf.config import Params, to_dict
from golf.errors import GolfError
from golf.gptq import quantize_model, save_quantized
from golf.hessian import calibration_budget, load_hessians
from golf.locks import locks_run_folder
from golf.model import load_model, load_model_config
from golf.runtime import resolve_device
from golf.size_target import COLUMN_WEIGHTS_FILE, column_weights, save_column_weights
from golf.stage_io import write_metrics, write_provenance


@locks_run_folder
def run(params: Params, seed: int) -> dict:
    t0 = time.time()
    run_dir = params.run_dir(seed)
    device = resolve_device(params.train.device)
    model = load_model(run_dir / "train", "cpu")
    hessians, hmeta = load_hessians(run_dir / "hessian" / "hessians.safetensors")
    t_gptq = time.time()
    with progress.bars(f"quantize seed {seed}") as bar:
        tensors, spec, report = quantize_model(model, hessians, params.quant, device,
                                               progress=bar.tracker("weights (elements)"))
    gptq_s = time.time() - t_gptq
    out_dir = run_dir / "quant"
    hess_s = float(hmeta["secs"]) if "secs" in hmeta else None
    try:
        budget = calibration_budget(hess_s, gptq_s, params.calib.reserve_s, params.train.wallclock_s)
    except GolfError:
        (out_dir / "quantized.safetensors").unlink(missing_ok=True)  # no stale model for the package stage
        raise
    # the config as trained, not the rebuilt model's (load_model swaps training-only kernel paths for scoring's):
    # the artifact records how the model trained, and its loader makes the same swap
    trained = load_model_config(run_dir / "train" / "config.json")
    save_quantized(out_dir / "quantized.safetensors", tensors, spec, to_dict(trained))
    # diag(H) per layer: package.target_bytes weighs each code's error by it, without the Hessians
    save_column_weights(out_dir / COLUMN_WEIGHTS_FILE, column_weights(hessians))
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
               "calib_budget": budget, "secs": round(time.time() - t0, 3)}
    write_metrics(run_dir / "metrics", metrics, "quantize.json")
    return metrics
