"""The whole pipeline as one command: `dvc repro` (cached, per-stage) or the same stages in-process."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from golf import progress
from golf.compare import run_seed
from golf.config import Params
from golf.errors import GolfError


def _dvc_usable() -> bool:
    return Path(".dvc").is_dir() and Path("dvc.yaml").is_file() and importlib.util.find_spec("dvc") is not None


def run(params: Params, params_path: Path = Path("params.yaml"), overrides: list[str] | None = None,
        use_dvc: bool = True) -> dict:
    console = Console(stderr=True)
    t0 = time.time()
    if use_dvc and _dvc_usable():
        if overrides or Path(params_path).resolve() != Path("params.yaml").resolve():
            raise GolfError("pipeline through DVC reads params.yaml only; use `dvc exp run -S key=value` "
                            "for overrides, or pass --no-dvc to run with --params/--set in-process")
        if params.runs_dir != "runs":
            raise GolfError(f"'runs_dir' in {params_path}: dvc.yaml expects 'runs', got {params.runs_dir!r}")
        console.print("[bold]dvc repro[/bold] (stages whose inputs did not change are skipped)")
        # dvc runs each stage's `python cli.py ...` through the shell: put this interpreter's folder first
        # on PATH so a virtual environment's python (and its packages) is the one that runs them.
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], check=False, env=env)
        if proc.returncode != 0:
            raise GolfError(f"dvc repro failed with exit code {proc.returncode} (see the stage output above)")
    else:
        for name in ("prepare",):
            console.print(f"[bold]== {name}[/bold]")
            with progress.stage_log(progress.log_path(params, name), f"golf {name} (pipeline --no-dvc)"):
                importlib.import_module(f"stages.{name}").run(params)
        for seed in params.seeds:  # each stage with its log; torchrun (via the CLI) where params.launch asks
            run_seed(params, seed, params_path, overrides or [], lambda s: console.print(f"[bold]== {s}[/bold]"))
        console.print("[bold]== report[/bold]")
        with progress.stage_log(progress.log_path(params, "report"), "golf report (pipeline --no-dvc)"):
            importlib.import_module("stages.report").run(params)
    report = Path("reports") / "report.md"
    console.print(f"[green]pipeline done in {time.time() - t0:.0f} s; report: {report.resolve()}[/green]")
    return {"seconds": round(time.time() - t0, 1), "report": str(report), "seeds": len(params.seeds),
            "python": sys.version.split()[0]}
