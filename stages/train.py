"""train: one seed → runs/<seed>/train/ (EMA weights + config + provenance), resumable via runs/<seed>/ckpt/."""

from __future__ import annotations

import time

from golf.config import Params
from golf.stage_io import write_metrics, write_provenance
from golf.train import train


def run(params: Params, seed: int) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    run_dir = params.run_dir(seed)
    out_dir = run_dir / "train"
    with Progress(TextColumn("[bold]train[/bold] seed %d" % seed), BarColumn(),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task("train", total=1.0, info="")

        def on_step(step: int, loss: float, tok_s: float, progress: float) -> None:
            bar.update(task, completed=progress, info=f"step {step} loss {loss:.4f} {tok_s:,.0f} tok/s")

        t0 = time.time()
        metrics = train(params, seed, out_dir, run_dir / "ckpt", run_dir / "plots" / "train_curve.tsv", on_step)
    if "interrupted_at_step" in metrics:
        return metrics
    metrics["stage_s"] = round(time.time() - t0, 2)
    write_provenance(out_dir, "train", params, {"seed": seed, "kernel_paths": metrics["kernel_paths"]})
    write_metrics(run_dir / "metrics", metrics, "train.json")
    return metrics
