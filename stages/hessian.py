"""hessian: H = XᵀX per linear layer of the trained model, over TRAIN-shard (or self-sampled) calibration tokens.

Reads runs/<seed>/train/ and the train shards of data/<name>/ (never val); writes
runs/<seed>/hessian/hessians.safetensors + provenance.json and runs/<seed>/metrics/hessian.json.
Under torchrun every rank calibrates on its own share; rank 0 writes the all-reduced result.
"""

from __future__ import annotations

import torch

from golf import progress
from golf.config import Params
from golf.hessian import calibrate, save_hessians
from golf.locks import locks_run_folder
from golf.model import load_model
from golf.runtime import init_stage_process, leave_distributed
from golf.stage_io import write_metrics, write_provenance


@locks_run_folder
def run(params: Params, seed: int) -> dict:
    run_dir = params.run_dir(seed)
    dist_info, device = init_stage_process(params.train.device)
    model = load_model(run_dir / "train", device)
    autocast = torch.bfloat16 if params.train.dtype == "bf16" else None  # as the model was trained and is scored
    with progress.bars(f"hessian seed {seed}", enabled=dist_info.is_main) as bar:
        hess, info = calibrate(model, params.data_dir(), params.calib, device, autocast,
                               progress=bar.tracker("calibration sequences"))
    if dist_info.is_main:
        out_dir = run_dir / "hessian"
        save_hessians(out_dir / "hessians.safetensors", hess, info["tokens"], info["samples"], info["source"],
                      info["secs"])
        write_provenance(out_dir, "hessian", params.calib, {"seed": seed, "device": str(device), **info})
        write_metrics(run_dir / "metrics", info, "hessian.json")
    leave_distributed(dist_info)
    return info
