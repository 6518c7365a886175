"""train: one seed → runs/<seed>/train/ (EMA weights, config.json, provenance.json; profile.json with
train.profile_steps), resumable through runs/<seed>/ckpt/; metrics in runs/<seed>/metrics/train.json, curve in
runs/<seed>/plots/train_curve.tsv.
Under torchrun every rank trains; only rank 0 shows progress and writes files."""

from __future__ import annotations

import dataclasses
import time

from golf import progress
from golf.config import Params, train_budget_s
from golf.launch import is_main_process
from golf.locks import locks_run_folder
from golf.runtime import resolve_device
from golf.ssm import ssm_autotune_choices
from golf.stage_io import write_metrics, write_provenance
from golf.train import train


@locks_run_folder
def run(params: Params, seed: int) -> dict:
    # the calibration's reserve comes off the loop's budget (golf.config.train_budget_s)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, wallclock_s=train_budget_s(params)))
    run_dir = params.run_dir(seed)
    out_dir = run_dir / "train"
    main = is_main_process()
    t0 = time.time()
    with progress.bars(f"train seed {seed}", enabled=main) as bar:
        track = bar.tracker("budget", total=1.0)
        compiles = params.train.compile and resolve_device(params.train.device).type == "cuda"
        bar.note("first step: torch.compile compiles the model now" if compiles else "first step")

        def on_step(step: int, loss: float, tok_s: float, budget: float) -> None:
            track.update(budget, info=f"step {step} loss {loss:.4f} {tok_s:,.0f} tok/s")

        metrics = train(params, seed, out_dir, run_dir / "ckpt", run_dir / "plots" / "train_curve.tsv", on_step)
    if not main:
        return {}  # rank 0 reports
    if "interrupted_at_step" in metrics:
        return metrics
    metrics["stage_s"] = round(time.time() - t0, 2)
    matmul = metrics.pop("matmul")  # the settings training ran with (restored since): provenance, not metrics
    profile = metrics.pop("profile", None)  # train.profile_steps: beside the weights, out of the DVC metrics
    if profile is not None:
        write_metrics(out_dir, profile, "profile.json")
    # the launch configs mamba-ssm's autotuner picked in this process: provenance of the device run, kept
    # out of the DVC metrics (bench/RESULTS.md: step times differed 13% between two lent machines)
    write_provenance(out_dir, "train", params, {"seed": seed, "kernel_paths": metrics["kernel_paths"],
                                                "world_size": metrics["world_size"], "matmul": matmul,
                                                "ssm_autotune": ssm_autotune_choices()})
    write_metrics(run_dir / "metrics", metrics, "train.json")
    return metrics
