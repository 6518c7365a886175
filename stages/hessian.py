"""hessian: H = XᵀX per linear layer of the trained model, over TRAIN-shard calibration tokens."""

from __future__ import annotations

from golf.config import Params
from golf.hessian import calibrate, save_hessians
from golf.model import load_model
from golf.stage_io import write_metrics, write_provenance
from golf.train import resolve_device


def run(params: Params, seed: int) -> dict:
    run_dir = params.run_dir(seed)
    device = resolve_device(params.train.device)
    model = load_model(run_dir / "train", device)
    hess, info = calibrate(model, params.data_dir(), params.calib, device)
    out_dir = run_dir / "hessian"
    save_hessians(out_dir / "hessians.safetensors", hess, info["tokens"], info["samples"])
    write_provenance(out_dir, "hessian", params.calib, {"seed": seed})
    write_metrics(run_dir / "metrics", info, "hessian.json")
    return info
