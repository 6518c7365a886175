"""Rebuild a report (per-seed table, Welch t-test, plots) from per-seed result folders kept under bench/results/
(one folder per seed holding that seed's metrics JSON files and train_curve.tsv, as h200_pipeline.sh runs are
stored), so that comparisons gathered over several sessions can be redone from committed files alone.

    python bench/results_report.py -p configs/baseline_attn.yaml --metric eval_ttt \\
        --runs 'bench/results/2026-11-29_c724ba99_baseline_attn_240s_seed*' \\
        --reference bench/results/anchor_baseline_sp1024_h200_240s.json \\
        --out bench/results/2026-11-29_c724ba99_baseline_attn_vs_anchor

--reference is a JSON file of per-seed BPBs (golf/report.py) or a glob of result folders like --runs. Both
--runs and --reference take several globs (seeds run under different names, e.g. an -S set and the named
config it became); --runs-label / --reference-label then name the sides. Each
folder's seed comes from its metrics' provenance (`seed`), else from a name ending in `seed<N>`. The folders
are laid out as runs folders (<seed>/metrics/, <seed>/plots/) under --out while the report is built, then
removed; --out receives report.md, report.json, summary.json and plots/.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.compare import welch_report
from golf.errors import GolfError

CURVE = "train_curve.tsv"


def seed_of(folder: Path) -> int:
    """The seed a result folder belongs to: a provenance file's `seed`, else the `seed<N>` name suffix."""
    for prov in sorted(folder.glob("*.provenance.json")):
        seed = json.loads(prov.read_text()).get("seed")
        if isinstance(seed, int):
            return seed
    m = re.search(r"seed(\d+)$", folder.name)
    if m is None:
        raise GolfError(f"result folder {str(folder)!r}: no provenance file with a seed and no name ending in "
                        "seed<N>; cannot tell which seed it holds")
    return int(m.group(1))


def common_label(folders: list[Path]) -> str:
    """The folders' shared name without the seed suffix (e.g. 2026-11-29_c724ba99_hybrid_12_240s); when seeds
    come from different dates or commits, the shared name without that prefix too (hybrid_12_240s)."""
    labels = {re.sub(r"_?seed\d+$", "", f.name) for f in folders}
    if len(labels) > 1:
        labels = {re.sub(r"^\d{4}-\d{2}-\d{2}_(c[0-9a-f]{7,40}_)?", "", label) for label in labels}
    return labels.pop() if len(labels) == 1 and "" not in labels else "runs"


def stage_runs(patterns: list[str], dest_root: Path, label: str = "") -> tuple[Path, list[int]]:
    """Copy the result folders matching any of `patterns` into dest_root/<label>/<seed>/{metrics,plots}/;
    `label` names the side in the report (default: the folders' common_label)."""
    folders = sorted({Path(p) for pattern in patterns for p in glob.glob(pattern) if Path(p).is_dir()})
    shown = " ".join(repr(p) for p in patterns)
    if not folders:
        raise GolfError(f"no result folders match {shown}")
    if label and not re.fullmatch(r"[A-Za-z0-9_.=-]+", label):
        raise GolfError(f"label {label!r}: expected letters, digits and _ . = - only (it names a folder)")
    runs = dest_root / (label or common_label(folders))
    seeds: list[int] = []
    for folder in folders:
        seed = seed_of(folder)
        if seed in seeds:
            raise GolfError(f"{shown} match two folders of seed {seed}; narrow the pattern")
        seeds.append(seed)
        (runs / str(seed) / "metrics").mkdir(parents=True)
        (runs / str(seed) / "plots").mkdir()
        for f in folder.glob("*.json"):
            shutil.copy2(f, runs / str(seed) / "metrics" / f.name)
        if (folder / CURVE).is_file():
            shutil.copy2(folder / CURVE, runs / str(seed) / "plots" / CURVE)
    return runs, sorted(seeds)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--params", required=True, help="the params file the runs used (its ttt/report settings)")
    ap.add_argument("--runs", required=True, nargs="+", help="glob(s) of this side's per-seed result folders")
    ap.add_argument("--runs-label", default="", help="this side's name in the report (default: the folders' "
                                                     "shared name)")
    ap.add_argument("--reference", default=[], nargs="+",
                    help="JSON of per-seed BPBs, or glob(s) of result folders")
    ap.add_argument("--reference-label", default="", help="the reference's name when it is result folders")
    ap.add_argument("--metric", default="", help="report.metric override (eval_sliding, eval_ttt, ...)")
    ap.add_argument("--out", required=True, help="folder for report.md, report.json, summary.json, plots/")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    staging = out / "staged_runs"
    if staging.exists():
        raise GolfError(f"{str(staging)!r} exists (a previous run stopped midway?); remove it first")
    try:
        runs, seeds = stage_runs(args.runs, staging / "mine", args.runs_label)
        reference = None
        if args.reference:
            reference = Path(args.reference[0]).resolve()
            if len(args.reference) > 1 or not reference.is_file():  # staged as staging/<label>: named by that label
                reference = stage_runs(args.reference, staging, args.reference_label)[0]
        summary = welch_report(args.params, runs, seeds, reference, out, args.metric)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out / 'report.md'}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except GolfError as e:
        sys.exit(f"error: {e}")
