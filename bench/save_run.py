"""File one device run's tarball (`run_<seed>.tgz` from bench/h200/h200_pipeline.sh) under bench/results/ as a per-seed
result folder, named from its own provenance: <date>_c<commit>_<config>[__<extra sets>]_<wall>s_seed<seed>.

    python bench/save_run.py /work/.device/4/run_2024.tgz --log /work/.device/4/log.txt \\
        --extra /work/.device/4/gpu_samples_2024.csv

The folder gets what bench/results_report.py and RESULTS.md use: the seed's metrics JSON files (with the stages'
provenance), plots/train_curve.tsv, the report's report.md, the artifact's and the train stage's provenance.json
(as artifact.provenance.json, train.provenance.json), the train stage's profile.json when the run profiled
(train.profile.json) and any --log/--extra files. It is written next to its final name and renamed into
place, so a failure leaves no half-filled folder; an existing folder of that name is an error, never replaced.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params
from golf.errors import GolfError
from golf.io import read_json

RESULTS = Path(__file__).resolve().parent / "results"
# --set overrides every h200_pipeline.sh / side_by_side.sh run passes (its data location, seed, budget and runs
# folder): not part of the name
STANDARD_SETS = ("data.", "seeds=", "train.wallclock_s=", "package.compare_compressors=", "runs_dir=")


def _seed_dir(root: Path, tgz: Path) -> Path:
    seeds = sorted((p for p in (root / "runs").glob("*") if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))
    if len(seeds) != 1:
        found = ", ".join(p.name for p in seeds) or "none"
        raise GolfError(f"{str(tgz)!r}: expected the runs/<seed>/ folder of exactly one seed, found {found}")
    return seeds[0]


def run_label(provenance: dict, where: str) -> str:
    """<config>[__<extra sets>]_<wall>s from the run's command line and config."""
    argv = [str(a) for a in provenance.get("argv") or []]
    params = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-p", "--params")), "params.yaml")
    sets = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-S", "--set")]
    extra = [s for s in sets if not s.startswith(STANDARD_SETS)]
    walls = [s.split("=", 1)[1] for s in sets if s.startswith("train.wallclock_s=")]
    if walls:  # the budget as run: the last override wins, as in golf.config
        try:
            wall = float(walls[-1])
        except ValueError:
            raise GolfError(f"{where}: train.wallclock_s={walls[-1]!r} in the command line is not a number")
    elif Path(params).is_file():  # no override: the params file's own budget
        wall = load_params(params).train.wallclock_s
    else:
        raise GolfError(f"{where}: the command line sets no train.wallclock_s and {params!r} is not here to "
                        "read it from; cannot name the run")
    label = Path(params).stem + "".join("__" + re.sub(r"[^A-Za-z0-9_.=-]", "_", s) for s in extra)
    return f"{label}_{wall:g}s"


def save_run(tgz: Path, results: Path = RESULTS, extra_files: list[Path] = ()) -> Path:
    """Unpack `tgz`, file its seed under `results`, return the new folder."""
    tgz = Path(tgz)
    for f in extra_files:
        if not Path(f).is_file():
            raise GolfError(f"extra file {str(f)!r} does not exist")
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=results, prefix=".unpack_") as tmp:
        root = Path(tmp) / "unpacked"
        try:
            with tarfile.open(tgz) as tar:
                tar.extractall(root, filter="data")  # refuses absolute paths, '..' and links leaving root
        except (OSError, tarfile.TarError) as e:
            raise GolfError(f"{str(tgz)!r}: not a readable run tarball ({e})") from e
        seed_dir = _seed_dir(root, tgz)
        prov_path = seed_dir / "artifact" / "provenance.json"
        where = f"{tgz}: runs/{seed_dir.name}/artifact/provenance.json"
        if not prov_path.is_file():
            raise GolfError(f"{where} is missing; the run did not reach the package stage")
        prov = read_json(prov_path, "artifact provenance", GolfError)
        commit = str((prov.get("git") or {}).get("commit") or "")
        created = str(prov.get("created_utc") or "")
        if not re.fullmatch(r"[0-9a-f]{7,40}", commit) or not re.match(r"\d{4}-\d{2}-\d{2}", created):
            raise GolfError(f"{where}: expected git.commit (hex) and created_utc (ISO date), got {commit!r}, "
                            f"{created!r}")
        if str(prov.get("seed")) != seed_dir.name:
            raise GolfError(f"{where} names seed {prov.get('seed')!r} but sits in runs/{seed_dir.name}/")
        name = f"{created[:10]}_c{commit[:7]}_{run_label(prov, where)}_seed{seed_dir.name}"
        dest = results / name
        if dest.exists():
            raise GolfError(f"{str(dest)!r} already exists; remove it first to file this run again")
        staged = Path(tmp) / name
        staged.mkdir()
        metrics = sorted((seed_dir / "metrics").glob("*.json"))
        if not any(m.name == "train.json" for m in metrics):
            raise GolfError(f"{tgz}: runs/{seed_dir.name}/metrics/train.json is missing")
        for m in metrics:
            shutil.copy2(m, staged / m.name)
        shutil.copy2(prov_path, staged / "artifact.provenance.json")
        # the train stage's provenance (kernel paths, autotune picks; since 2026-11-29) and, with
        # train.profile_steps, its profile of the loop's own steps
        for name in ("provenance.json", "profile.json"):
            if (seed_dir / "train" / name).is_file():
                shutil.copy2(seed_dir / "train" / name, staged / f"train.{name}")
        for src in (seed_dir / "plots" / "train_curve.tsv", root / "reports" / "report.md"):
            if src.is_file():
                shutil.copy2(src, staged / src.name)
        for f in extra_files:
            shutil.copy2(f, staged / Path(f).name)
        staged.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tgz", nargs="+", type=Path, help="run_<seed>.tgz files from bench/h200/h200_pipeline.sh")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where result folders live (bench/results)")
    ap.add_argument("--log", type=Path, action="append", default=[], help="the call's log, copied as is")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="any other file to keep beside it")
    args = ap.parse_args(argv)
    if len(args.tgz) > 1 and (args.log or args.extra):
        raise GolfError("--log/--extra belong to one run: file one tarball per command when passing them")
    saved = [save_run(t, args.results, [*args.log, *args.extra]) for t in args.tgz]
    for d in saved:
        print(d)
    return saved


if __name__ == "__main__":
    try:
        main()
    except GolfError as e:
        sys.exit(f"error: {e}")
