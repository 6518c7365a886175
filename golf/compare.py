"""`golf compare A.yaml B.yaml --seeds 3`: both configs' full pipelines, seed by seed on this machine, then the
Welch report of A against B.

Layout under the output folder (default compare/<A>_vs_<B>/):

    compare.json                 what was compared (configs, seeds, overrides, placement) and when
    runs/<A>/<seed>/...          side A's runs folder (the stages' usual outputs and logs/<stage>.log)
    runs/<B>/<seed>/...          side B's
    report/                      report.md, report.json, summary.json, plots/ (golf/report.py)

Each (side, seed) runs train → hessian → quantize → package → eval_sliding → eval_ttt. With CUDA devices
visible each runs in a fresh process (`cli.py seed-stages`), so neither side inherits the other's warm caches
(torch.compile's, the CUDA allocator's, Triton's autotuning); without CUDA (no compile, no autotuning here) they
run in this process, which saves a torch import per run. On one device the runs are interleaved A, B, A, B, ... so that drift of the machine
(clocks, other load) hits both sides alike; with two or more visible CUDA devices and one process per run
(launch.nproc_per_node 1), each seed's A and B run side by side, A on the first device and B on the second
(CUDA_VISIBLE_DEVICES). Both sides read their own data/<name>/ (prepared first); two configs that name the same
data folder must agree on its settings.

A comparison resumes: run again with the same configs, overrides and --out, it keeps every (side, seed) whose
last stage (eval_ttt) already wrote its metrics and runs the rest (an interrupted seed starts over, train from
its checkpoint), so a study longer than one sitting, or one cut off, finishes in later runs; more seeds can be
added the same way. compare.json records the settings (each side's resolved params, hashed); an --out folder
holding a comparison of other settings is refused.

The report is golf/report.py's, built by `welch_report` (shared with bench/results_report.py): side A's seeds
with side B's runs folder as report.reference, so the one-sided Welch t-test asks whether A's BPB is lower.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from golf import progress
from golf.config import ConfigError, Params, load_params, to_dict
from golf.errors import GolfError
from golf.io import read_json, write_json_atomic
from golf.launch import CLI

PER_SEED_STAGES = ("train", "hessian", "quantize", "package", "eval_sliding", "eval_ttt")


# --------------------------------------------------------------------------------------------------
# One seed's stages (also the in-process pipeline's loop)
# --------------------------------------------------------------------------------------------------


def run_seed(params: Params, seed: int, params_path: Path, overrides: Sequence[str],
             announce: Callable[[str], None] | None = None) -> dict[str, dict]:
    """train … eval_ttt for one seed, each stage with its log (runs/<seed>/logs/<stage>.log); a stage that
    params.launch spreads over several processes goes through `cli.py <stage>` (torchrun). Metrics by stage."""
    from golf.launch import DISTRIBUTED_STAGES, run_cli_stage

    out: dict[str, dict] = {}
    for name in PER_SEED_STAGES:
        if announce is not None:
            announce(f"{name} seed {seed}")
        if params.launch.world_size > 1 and name in DISTRIBUTED_STAGES:  # torchrun via the CLI; it logs itself
            run_cli_stage(name, seed, params_path, list(overrides))
            continue
        command = f"golf {name.replace('_', '-')} --seed {seed} --params {params_path}" + "".join(
            f" --set {o}" for o in overrides)
        with progress.stage_log(progress.log_path(params, name, seed), command):
            out[name] = importlib.import_module(f"stages.{name}").run(params, seed)
    return out


# --------------------------------------------------------------------------------------------------
# The report (shared with bench/results_report.py)
# --------------------------------------------------------------------------------------------------


def welch_report(params_path: str | Path, runs_dir: Path, seeds: Sequence[int], reference: Path | None,
                 out_dir: Path, metric: str = "", overrides: Sequence[str] = ()) -> dict:
    """golf/report.py's report of `seeds` under `runs_dir` (settings from params_path + overrides) against
    `reference`: a runs folder (named in the report by its folder name) or a JSON file of per-seed BPBs.
    Writes out_dir/{report.md, report.json, summary.json, plots/}; returns the summary."""
    from golf.report import build_report

    sets = [*overrides, f"runs_dir={Path(runs_dir).resolve()}", f"seeds={json.dumps([int(s) for s in seeds])}"]
    cwd = None
    if reference is not None:
        reference = Path(reference).resolve()
        if reference.is_dir():  # relative to its parent, so the report names it by the folder's name
            sets.append(f"report.reference={reference.name}")
            cwd = reference.parent
        else:
            sets.append(f"report.reference={reference}")
    if metric:
        sets.append(f"report.metric={metric}")
    params = load_params(params_path, sets)
    out_dir = Path(out_dir).resolve()
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        return build_report(params, out_dir)


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    params_path: Path
    params: Params
    overrides: list[str]  # the user's --set plus runs_dir and seeds


def parse_seeds(text: str, params: Params) -> list[int]:
    """'3' → the first 3 of the config's `seeds`; '1,2,5' → those seeds. One seed runs, but reports nothing
    (compare resumes: a later call with more seeds adds to it)."""
    text = text.strip()
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or (len(seeds) == 1 and "," not in text and seeds[0] < 1):
        raise ConfigError(f"--seeds {text!r}: expected a count (e.g. 3) or a comma-separated list of seeds "
                          "(e.g. 1,2,3)")
    if "," not in text:  # a count
        n = seeds[0]
        if n > len(params.seeds):
            raise ConfigError(f"--seeds {n}: the first config lists only {len(params.seeds)} seeds "
                              f"({params.seeds}); give them explicitly, e.g. --seeds 1,2,3,4")
        seeds = list(params.seeds[:n])
    elif len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct seeds")
    return seeds


def _label(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", path.stem) or "config"


def visible_gpus() -> list[str]:
    """The CUDA device ids this process may use, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:n] if listed else [str(i) for i in range(n)]


def _sides(a: Path, b: Path, overrides: list[str], out_dir: Path, seeds_text: str) -> tuple[list[Side], list[int]]:
    la, lb = _label(a), _label(b)
    if la == lb:
        la, lb = f"A_{la}", f"B_{lb}"
    pa = load_params(a, overrides)  # validated before anything runs
    pb = load_params(b, overrides)
    seeds = parse_seeds(seeds_text, pa)
    if pa.data.name == pb.data.name and to_dict(pa.data) != to_dict(pb.data):
        raise ConfigError(f"'data' in {a} and {b}: both write data/{pa.data.name}/ but with different settings; "
                          "give one of them another data.name")
    sides = []
    for label, path in ((la, a), (lb, b)):
        sets = [*overrides, f"runs_dir={(out_dir / 'runs' / label).resolve()}", f"seeds={json.dumps(seeds)}"]
        sides.append(Side(label, path, load_params(path, sets), sets))
    return sides, seeds


def _check_out(out_dir: Path) -> None:
    """A user's own folder is never written into: out_dir must be new, empty or an earlier compare's."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "compare.json").is_file())):
        raise GolfError(f"--out {str(out_dir)!r} exists and is not a comparison folder (no compare.json); "
                        "choose a new folder")


def _settings(a: Path, b: Path, sides: list[Side], overrides: Sequence[str]) -> dict:
    """What makes two runs the same comparison: the configs, the overrides and each side's resolved params
    (hashed; seeds left out, so a later run may add seeds, and the runs folders, which follow --out)."""
    def digest(p: Params) -> str:
        d = {k: v for k, v in to_dict(p).items() if k not in ("seeds", "runs_dir")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    return {"a": str(a), "b": str(b), "overrides": list(overrides),
            "params_sha256": {s.label: digest(s.params) for s in sides}}


def _done(side: Side, seed: int) -> bool:
    """Whether this side's seed ran to its last stage in an earlier run of the same comparison."""
    return (side.params.run_dir(seed) / "metrics" / f"{PER_SEED_STAGES[-1]}.json").is_file()


def _worker(side: Side, seed: int, gpu: str | None) -> subprocess.Popen:
    cmd = [sys.executable, str(CLI), "seed-stages", "--seed", str(seed), "--params", str(side.params_path)]
    for o in side.overrides:
        cmd += ["--set", o]
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return _start(cmd, env)


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env)


def compare(a: Path, b: Path, seeds_text: str, out_dir: Path | None = None, overrides: Sequence[str] = (),
            metric: str = "", parallel: bool | None = None, say: Callable[[str], None] = print,
            fresh_processes: bool | None = None) -> dict:
    """Run both sides for every seed, then the report; returns the report's summary plus where things are.
    parallel: None = side by side when two CUDA devices are visible, True/False to force. fresh_processes:
    None = a process per (side, seed) when CUDA devices are visible, else in this process."""
    a, b = Path(a), Path(b)
    out_dir = Path(out_dir) if out_dir is not None else Path("compare") / f"{_label(a)}_vs_{_label(b)}"
    _check_out(out_dir)
    sides, seeds = _sides(a, b, list(overrides), out_dir, seeds_text)
    gpus = visible_gpus()
    single_process = all(s.params.launch.world_size == 1 for s in sides)
    if parallel is None:
        parallel = len(gpus) >= 2 and single_process
    if fresh_processes is None:
        fresh_processes = bool(gpus)
    if parallel and (len(gpus) < 2 or not single_process):
        raise GolfError("compare side by side needs two visible CUDA devices and launch.nproc_per_node 1 in both "
                        f"configs (visible: {len(gpus)})")
    placement = (f"side by side: {sides[0].label} on CUDA device {gpus[0]}, {sides[1].label} on {gpus[1]}"
                 if parallel else "interleaved on one device: " + ", ".join(
                     f"{s.label} seed {seed}" for seed in seeds for s in sides))
    settings = _settings(a, b, sides, overrides)
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    meta_path = out_dir / "compare.json"
    earlier = read_json(meta_path, "compare.json", GolfError) if meta_path.is_file() else None
    if earlier is not None and earlier.get("settings") != settings:
        raise GolfError(f"--out {str(out_dir)!r} holds a comparison of other settings (configs, --set or their "
                        "contents changed since); choose a new folder, or rerun with the same ones to resume it")
    write_json_atomic(meta_path, {
        "a": str(a), "b": str(b), "labels": [s.label for s in sides], "seeds": seeds, "overrides": list(overrides),
        "placement": placement, "settings": settings,
        "started_utc": earlier["started_utc"] if earlier else now, **({"resumed_utc": now} if earlier else {})})
    say(f"compare {sides[0].label} vs {sides[1].label}, seeds {seeds}; {placement}"
        + ("; resuming the comparison in this folder" if earlier else ""))

    prepared: set[str] = set()
    for s in sides:
        if s.params.data.name not in prepared:
            prepared.add(s.params.data.name)
            say(f"== prepare data/{s.params.data.name}/ ({s.label})")
            with progress.stage_log(progress.log_path(s.params, "prepare"), f"golf prepare --params {s.params_path}"):
                importlib.import_module("stages.prepare").run(s.params)

    def wait(procs: list[tuple[Side, int, subprocess.Popen]]) -> None:
        failed = [(s, seed, p.wait()) for s, seed, p in procs]
        for s, seed, rc in failed:
            if rc != 0:
                raise GolfError(f"compare: {s.label} seed {seed} failed with exit code {rc}; its stage logs are in "
                                f"{s.params.run_dir(seed) / 'logs'}")

    for seed in seeds:
        kept = {s.label for s in sides if _done(s, seed)}
        for s in sides:
            if s.label in kept:
                say(f"== {s.label} seed {seed}: done in an earlier run, kept")
        if parallel:
            todo = [(s, gpu) for s, gpu in zip(sides, gpus[:2]) if s.label not in kept]
            if todo:
                say(f"== seed {seed}: " + " and ".join(s.label for s, _ in todo) + " side by side"
                    if len(todo) == 2 else f"== {todo[0][0].label} seed {seed}")
                wait([(s, seed, _worker(s, seed, gpu)) for s, gpu in todo])
            continue
        for s in sides:
            if s.label in kept:
                continue
            say(f"== {s.label} seed {seed}")
            if fresh_processes:
                wait([(s, seed, _worker(s, seed, None))])
            else:
                run_seed(s.params, seed, s.params_path, s.overrides, announce=lambda text: say(f"== {text}"))
    a_side, b_side = sides
    if len(seeds) < 2:  # a first seed, e.g. one per device call: the report comes with a rerun with more seeds
        say(f"== no report: the Welch t-test needs at least 2 seeds per side; rerun with --seeds 2 (or a longer "
            f"list) and --out {str(out_dir)!r} to add seeds, keeping this one")
        return {"report": None, "a": a_side.label, "b": b_side.label, "seeds": len(seeds)}
    say("== report")
    summary = welch_report(a_side.params_path, Path(a_side.params.runs_dir), seeds, Path(b_side.params.runs_dir),
                           out_dir / "report", metric, overrides)
    return {"report": str(out_dir / "report" / "report.md"), "a": a_side.label, "b": b_side.label,
            "seeds": len(seeds), **{k: v for k, v in summary.items() if k.startswith("vs_run")}}
