"""golf command line: one command per pipeline stage, plus `pipeline` for the whole graph.

    golf prepare                    # or: python cli.py prepare (the same app; `golf` is its console script)
    golf train --seed 42 --set train.wallclock_s=240
    golf pipeline                   # every stage, every seed, the report (through DVC when available)
    golf compare A.yaml B.yaml --seeds 3
    golf params show train          # keys, values, defaults, ranges, docs
    golf doctor                     # torch/CUDA and the SSM, conv and attention paths that will run

Every command reads params.yaml (or --params FILE); `--set section.key=value` overrides one setting for
an ad-hoc run, validated like the file. User errors print one line (never wrapped, whatever the terminal
width) and exit with code 2. Each stage appends to its log (golf/progress.py says where).
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
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    no_args_is_help=True,
    help="[bold]golf[/bold]: train, quantize, package and score a Mamba-2 + attention hybrid for "
         "Parameter Golf. Each command is one DVC stage; settings come from params.yaml.",
)
console = Console(stderr=True)

def version_string() -> str:
    """golf <package version> (commit <sha>[+dirty]) when inside a git checkout."""
    from importlib.metadata import PackageNotFoundError, version

    from golf import __version__
    from golf.provenance import commit_label, git_commit

    try:
        v = version("golf")
    except PackageNotFoundError:  # running from a checkout that was never pip-installed
        v = __version__
    label = commit_label(git_commit(Path(__file__).resolve().parent))
    commit = "" if label == "unknown" else f" (commit {label})"
    return f"golf {v}{commit}"


def _version_cb(value: bool) -> None:
    if value:
        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version_cb, is_eager=True,
                                       help="Print the package version and git commit, then exit.")) -> None:
    """golf: train, quantize, package and score a Mamba-2 + attention hybrid for Parameter Golf."""


ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file (YAML, see golf/config.py).")
SetOpt = typer.Option(None, "--set", "-s", help="Override one setting: section.key=value (repeatable).")
SeedOpt = typer.Option(..., "--seed", help="Run seed; outputs go to runs/<seed>/.")


def _load(params: Path, overrides: list[str] | None):
    from golf.config import load_params

    return load_params(params, overrides or [])


def error_line(message: str) -> None:
    """One physical line on stderr, whatever the terminal width (typer.echo does not wrap; rich would)."""
    text = " ".join(str(message).split())  # a message's own newlines would break the one-line promise too
    typer.echo(typer.style("error:", fg="red", bold=True) + " " + text, err=True)


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run a stage; user errors become one red line and exit code 2, not a traceback."""
    from golf.errors import GolfError

    try:
        return fn()
    except (GolfError, FileNotFoundError) as e:
        error_line(str(e))
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(code=130) from None


def _logged(p, stage: str, seed: int | None, fn: Callable[[], Any], log_path: Path | None = None) -> Any:
    """Run fn with the stage's log open (rank 0 only; golf.progress.log_path says where) and its scalar
    metrics logged at the end."""
    from golf import progress
    from golf.launch import is_main_process

    if not is_main_process():
        return fn()
    with progress.stage_log(log_path or progress.log_path(p, stage, seed)):
        result = fn()
        if isinstance(result, dict):
            progress.log("metrics: " + " ".join(f"{k}={v}" for k, v in result.items()
                                                if not isinstance(v, (dict, list))))
        return result


def _run_stage(p, stage: str, seed: int | None, *run_args: Any) -> None:
    """stages/<stage>.run(p, *run_args) with its log open and its metrics printed, user errors as one line."""
    title = stage if seed is None else f"{stage} seed {seed}"
    _print_metrics(title, _guarded(lambda: _logged(p, stage, seed, lambda: _stage(stage).run(p, *run_args))))


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
        if v is None or isinstance(v, (dict, list)):
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
    _run_stage(p, "prepare", None, force)


@app.command()
def train(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Train the model for one seed (resumes from the last checkpoint if interrupted)."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "train", seed, params, set_)
    _run_stage(p, "train", seed, seed)


@app.command()
def hessian(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Accumulate H = XᵀX for every linear layer over calibration tokens (never validation data)."""
    p = _guarded(lambda: _load(params, set_))
    _distributed(p, "hessian", seed, params, set_)
    _run_stage(p, "hessian", seed, seed)


@app.command()
def quantize(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """GPTQ-quantize the trained model with the calibration Hessians (int6 blocks, int8 embedding)."""
    p = _guarded(lambda: _load(params, set_))
    _run_stage(p, "quantize", seed, seed)


@app.command()
def package(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Serialize and compress the quantized model with its code; fail if over the byte cap."""
    p = _guarded(lambda: _load(params, set_))
    _run_stage(p, "package", seed, seed)


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="An artifact folder or its model file.")) -> None:
    """Print an artifact's size breakdown by tensor group."""
    text = _guarded(lambda: _stage("package").inspect(artifact))
    Console().print(text, markup=False, highlight=False)  # artifact strings are shown as written


ArtifactOpt = typer.Option(None, "--artifact", help="Score this artifact (folder or model file) instead of "
                           "runs/<seed>/artifact; metrics go to --out (no --seed needed).")
OutOpt = typer.Option(None, "--out", help="With --artifact: folder for the metrics, provenance and log "
                      "(default scores/<artifact name>/).")


def _eval(stage: str, seed: int | None, params: Path, set_: list[str] | None, artifact: Path | None,
          out: Path | None) -> None:
    """An eval stage on runs/<seed>/artifact, or on --artifact with its outputs in --out."""
    command = stage.replace("_", "-")
    p = _guarded(lambda: _load(params, set_))
    if artifact is None and seed is None:
        error_line(f"{command}: give --seed S (scores runs/S/artifact) or --artifact PATH")
        raise typer.Exit(code=2)
    if artifact is None:
        _distributed(p, command, seed, params, set_)
        _run_stage(p, stage, seed, seed)
        return
    if p.launch.world_size > 1:
        error_line(f"{command} --artifact runs in one process; set launch.nproc_per_node=1 (got "
                   f"{p.launch.nproc_per_node})")
        raise typer.Exit(code=2)
    out = out or Path("scores") / (artifact.stem if artifact.is_file() else artifact.resolve().name)
    _print_metrics(f"{stage} {artifact}", _guarded(lambda: _logged(
        p, stage, seed, lambda: _stage(stage).run(p, seed, artifact=artifact, metrics_dir=out),
        log_path=out / "logs" / f"{stage}.log")))
    console.print(f"metrics written to {out}", soft_wrap=True, markup=False, highlight=False)


@app.command("eval-sliding")
def eval_sliding(seed: int | None = typer.Option(None, "--seed", help="Run seed: scores runs/<seed>/artifact."),
                 params: Path = ParamsOpt, set_: list[str] | None = SetOpt, artifact: Path | None = ArtifactOpt,
                 out: Path | None = OutOpt) -> None:
    """Sliding-window BPB of the packaged artifact on the validation shards."""
    _eval("eval_sliding", seed, params, set_, artifact, out)


@app.command("eval-ttt")
def eval_ttt(seed: int | None = typer.Option(None, "--seed", help="Run seed: scores runs/<seed>/artifact."),
             params: Path = ParamsOpt, set_: list[str] | None = SetOpt, artifact: Path | None = ArtifactOpt,
             out: Path | None = OutOpt) -> None:
    """Legal score-first test-time training BPB of the packaged artifact."""
    _eval("eval_ttt", seed, params, set_, artifact, out)


@app.command()
def report(params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Per-seed table, mean/std and Welch t-test against a reference; Markdown, JSON and PNG plots."""
    p = _guarded(lambda: _load(params, set_))
    _run_stage(p, "report", None)


@app.command()
def export(out: Path = typer.Option(Path("submission"), "--out", help="Submission folder to write."),
           params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Write a submission folder in the challenge's format (README.md, submission.json, logs)."""
    p = _guarded(lambda: _load(params, set_))
    _run_stage(p, "export", None, out)


@app.command()
def pipeline(params: Path = ParamsOpt, set_: list[str] | None = SetOpt,
             no_dvc: bool = typer.Option(False, "--no-dvc", help="Run the stages in-process, without DVC.")) -> None:
    """Run every stage for every seed, then the report (`dvc repro` when DVC is set up)."""
    p = _guarded(lambda: _load(params, set_))
    result = _guarded(lambda: _stage("pipeline").run(p, params_path=params, overrides=set_ or [],
                                                     use_dvc=not no_dvc))
    _print_metrics("pipeline", result)


@app.command("seed-stages", hidden=True)
def seed_stages(seed: int = SeedOpt, params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """train … eval-ttt for one seed in this process (what `compare` runs for each side and seed)."""
    from golf.compare import run_seed

    p = _guarded(lambda: _load(params, set_))
    _guarded(lambda: run_seed(p, seed, params, set_ or [], announce=lambda s: console.print(
        f"[bold]== {s}[/bold]")))


@app.command()
def compare(config_a: Path = typer.Argument(..., help="Side A's params file (the one tested for a lower BPB)."),
            config_b: Path = typer.Argument(..., help="Side B's params file (the reference)."),
            seeds: str = typer.Option("3", "--seeds", help="A count (the first N of A's seeds) or a list: 1,2,3."),
            out: Path | None = typer.Option(None, "--out", help="Output folder (default compare/<A>_vs_<B>/)."),
            set_: list[str] | None = typer.Option(None, "--set", "-s", help="Override a setting on both sides "
                                                  "(repeatable)."),
            metric: str = typer.Option("", "--metric", help="report.metric for the test (default: A's)."),
            parallel: bool | None = typer.Option(None, "--parallel/--interleaved", help="Force side by side on "
                                                 "two GPUs or interleaved on one (default: side by side when "
                                                 "two CUDA devices are visible).")) -> None:
    """Run both configs' full pipelines for each seed on this machine, then a Welch t-test report of A vs B."""
    from golf.compare import compare as run_compare

    result = _guarded(lambda: run_compare(config_a, config_b, seeds, out, set_ or [], metric, parallel,
                                          say=lambda s: console.print(s, markup=False, highlight=False,
                                                                      soft_wrap=True)))
    _print_metrics("compare", result)


params_app = typer.Typer(no_args_is_help=True, help="Inspect the settings (params.yaml and golf/config.py).")
app.add_typer(params_app, name="params")


@params_app.command("show")
def params_show(section: str | None = typer.Argument(None, help="One section (e.g. train); all when left out."),
                params: Path = ParamsOpt, set_: list[str] | None = SetOpt,
                as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Keys, values (from --params with --set applied), defaults, ranges or choices, and docs."""
    import json

    from golf.params_doc import describe

    rows = _guarded(lambda: describe(_load(params, set_), section, str(params)))
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    from rich.table import Table

    table = Table(title=_esc(f"{params}" + (f" [{section}]" if section else "")), title_justify="left")
    table.add_column("key", no_wrap=True)
    for col in ("value", "default", "allowed", "doc"):
        table.add_column(col, overflow="fold")
    for r in rows:
        changed = r["value"] != r["default"]
        table.add_row(r["key"], ("[bold]" if changed else "") + _esc(repr(r["value"])) + ("[/bold]" if changed else ""),
                      _esc(repr(r["default"])), _esc(r["allowed"]), _esc(r["doc"]))
    Console().print(table)


def _esc(text: str) -> str:

    return escape(text)


@app.command()
def doctor(params: Path = ParamsOpt, set_: list[str] | None = SetOpt) -> None:
    """Print torch/CUDA versions and which SSM, conv and attention paths will run here, and why."""
    from golf.config import Params
    from golf.doctor import diagnose, render

    if params.is_file():
        p, source = _guarded(lambda: _load(params, set_)), str(params)
    else:  # outside a checkout: the defaults (golf/config.py)
        p, source = Params(), f"{params} not found: defaults of golf/config.py"
    diag = diagnose(p)
    for line in render(diag, version_string(), source):
        typer.echo(line)
    if not diag.ok:
        raise typer.Exit(code=1)


def main() -> None:
    """The `golf` console script: the app, with click's usage errors as one unwrapped line (exit code 2)."""
    try:
        rc = app(standalone_mode=False)
    except typer.Abort:
        error_line("aborted")
        sys.exit(130)
    except typer.TyperException as e:  # typer's own click: usage errors, bad parameters
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message.strip():  # no_args_is_help raises with no message, after printing the help
            error_line(message + where)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
