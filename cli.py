"""golf command line: one command per pipeline stage, plus `pipeline` for the whole graph.

    python cli.py prepare
    python cli.py train --seed 42 --set train.wallclock_s=240
    python cli.py pipeline          # every stage, every seed, the report (through DVC when available)

Every command reads params.yaml (or --params FILE); `--set section.key=value` overrides one setting for
an ad-hoc run, validated like the file. User errors print one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    no_args_is_help=True,
    help="[bold]golf[/bold]: train, quantize, package and score a Mamba-2 + attention hybrid for "
         "Parameter Golf. Each command is one DVC stage; settings come from params.yaml.",
)
console = Console(stderr=True)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file (YAML, see golf/config.py).")
SetOpt = typer.Option(None, "--set", "-s", help="Override one setting: section.key=value (repeatable).")
SeedOpt = typer.Option(..., "--seed", help="Run seed; outputs go to runs/<seed>/.")


def _load(params: Path, overrides: list[str] | None):
    from golf.config import load_params

    return load_params(params, overrides or [])


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run a stage; user errors become one red line and exit code 2, not a traceback."""
    from golf.errors import GolfError

    try:
        return fn()
    except GolfError as e:
        console.print(f"[bold red]error:[/bold red] {escape(str(e))}")  # messages quote inputs: no markup
        raise typer.Exit(code=2) from None
    except FileNotFoundError as e:
        console.print(f"[bold red]error:[/bold red] {escape(str(e))}")
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(code=130) from None


def _distributed(p, command: str, seed: int, params: Path, set_: list[str] | None) -> None:
    """Hand this command to torchrun when params.launch asks for more than one process; the launcher's exit
    code becomes ours. Inside a torchrun worker (or with one process) this returns and the stage runs here."""
    from golf.launch import relaunch_under_torchrun, stage_cli_args

    args = stage_cli_args(command, seed, params, set_ or [])
    rc = relaunch_under_torchrun(p.launch, Path(__file__).resolve(), args)
    if rc is not None:
        raise typer.Exit(code=rc)


def _stage(name: str):
    return importlib.import_module(f"stages.{name}")


def _print_metrics(title: str, metrics: dict | None) -> None:
    from golf.launch import is_main_process

    if not metrics or not is_main_process():  # under torchrun, rank 0 reports
        return
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for k, v in metrics.items():
        if isinstance(v, (dict, list)):
            continue
        table.add_row(str(k), f"{v:.6g}" if isinstance(v, float) else str(v))
    Console().print(table)


@app.command()
def prepare(params: Path = ParamsOpt, set_: list[str] | None = SetOpt,
            force: bool = typer.Option(False, "--force", help="Re-tokenize even when the inputs are unchanged.")
            ) -> None:
    """Tokenize a corpus (or fetch the official FineWeb export) into parameter-golf shards; a corpus whose
    settings, files, tokenizer and code are unchanged since the last run is not tokenized again."""
    p = _guarded(lambda: _load(params, set_))
    _print_metrics("prepare", _guarded(lambda: _stage("prepare").run(p, force)))


@app.command()
def train(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Train the model for one seed (resumes from the last checkpoint if interrupted)."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "train", seed, params, set_)
    _print_metrics(f"train seed {seed}", _guarded(lambda: _stage("train").run(p, seed)))


@app.command()
def hessian(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Accumulate H = XᵀX for every linear layer over calibration tokens (never validation data)."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "hessian", seed, params, set_)
    _print_metrics(f"hessian seed {seed}", _guarded(lambda: _stage("hessian").run(p, seed)))


@app.command()
def quantize(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """GPTQ-quantize the trained model with the calibration Hessians (int6 blocks, int8 embedding)."""
    p = _guarded(lambda: _load(params, set_))
    _print_metrics(f"quantize seed {seed}", _guarded(lambda: _stage("quantize").run(p, seed)))


@app.command()
def package(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Serialize and compress the quantized model with its code; fail if over the byte cap."""
    p = _guarded(lambda: _load(params, set_))
    _print_metrics(f"package seed {seed}", _guarded(lambda: _stage("package").run(p, seed)))


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="An artifact folder or its model file.")) -> None:
    """Print an artifact's size breakdown by tensor group."""
    text = _guarded(lambda: _stage("package").inspect(artifact))
    Console().print(text, markup=False, highlight=False)  # artifact strings are shown as written


@app.command("eval-sliding")
def eval_sliding(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Sliding-window BPB of the packaged artifact on the validation shards."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "eval-sliding", seed, params, set_)
    _print_metrics(f"eval_sliding seed {seed}", _guarded(lambda: _stage("eval_sliding").run(p, seed)))


@app.command("eval-ttt")
def eval_ttt(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Legal score-first test-time training BPB of the packaged artifact."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "eval-ttt", seed, params, set_)
    _print_metrics(f"eval_ttt seed {seed}", _guarded(lambda: _stage("eval_ttt").run(p, seed)))


@app.command()
def report(params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Per-seed table, mean/std and Welch t-test against a reference; Markdown, JSON and PNG plots."""
    p = _guarded(lambda: _load(params, set_))
    _print_metrics("report", _guarded(lambda: _stage("report").run(p)))


@app.command()
def export(out: Path = typer.Option(Path("submission"), "--out", help="Submission folder to write."),
           params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Write a submission folder in the challenge's format (README.md, submission.json, logs)."""
    p = _guarded(lambda: _load(params, set_))
    _print_metrics("export", _guarded(lambda: _stage("export").run(p, out)))


@app.command()
def pipeline(params: Path = ParamsOpt, set_: list[str] | None = SetOpt,
             no_dvc: bool = typer.Option(False, "--no-dvc", help="Run the stages in-process, without DVC.")) -> None:
    """Run every stage for every seed, then the report (`dvc repro` when DVC is set up)."""
    p = _guarded(lambda: _load(params, set_))
    result = _guarded(lambda: _stage("pipeline").run(p, params_path=params, overrides=set_ or [],
                                                     use_dvc=not no_dvc))
    _print_metrics("pipeline", result)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    app()
