"""Per step against per second: two sets of per-seed result folders (bench/save_run.py), their training losses
compared at equal steps and at equal seconds of training (each folder's plots/train_curve.tsv, or train_curve.tsv
beside its metrics as save_run.py files it).

A faster step wins at equal wall clock even when it learns less per step, so a comparison of two architectures
shows both views: the loss at the same optimizer step (what each step learns) and at the same elapsed training
time (what the budget buys).

    python bench/curves.py --a 'bench/results/2026-11-30_cb2d9b3d_hybrid_seed_fit_240s_seed*' \\
        --b 'bench/results/2026-11-30_cb2d9b3d_attn_fit_240s_seed*' --steps 250,500,750,1000 --seconds 30,60,100,150

Also each folder's milliseconds per step between two logged steps (--pace). Each value is the mean over the folders of one side of the logged training losses within --step-window steps
(or --second-window seconds) of the point; a folder without a logged loss there is an error, never a silent gap.
Prints a markdown table per view and, with --json, writes them.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.io import write_text_atomic


def load_curve(folder: Path) -> list[tuple[int, float, float]]:
    """(step, train_s, train_loss) of every logged training step of one result folder."""
    for path in (folder / "train_curve.tsv", folder / "plots" / "train_curve.tsv"):
        if path.is_file():
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            return [(int(r["step"]), float(r["train_s"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    raise SystemExit(f"error: {folder} has no train_curve.tsv (expected a folder written by bench/save_run.py)")


def folders(pattern: str) -> list[Path]:
    found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
    if not found:
        raise SystemExit(f"error: no result folder matches {pattern!r}")
    return found


def loss_at(curves: dict[str, list], column: int, point: float, window: float) -> float:
    """Mean over folders of each folder's mean logged loss with |column - point| <= window."""
    means = []
    for name, rows in curves.items():
        near = [r[2] for r in rows if abs(r[column] - point) <= window]
        if not near:
            what = "step" if column == 0 else "second"
            raise SystemExit(f"error: {name} logged no training loss within {window} of {what} {point}")
        means.append(statistics.fmean(near))
    return statistics.fmean(means)


def pace(rows: list, first: int, last: int, name: str) -> float:
    """Milliseconds per step between two logged steps of one curve."""
    at = {r[0]: r[1] for r in rows}
    if first not in at or last not in at or last <= first:
        raise SystemExit(f"error: --pace {first},{last}: {name} did not log both steps (or they are out of order)")
    return (at[last] - at[first]) / (last - first) * 1000


def _numbers(name: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: {name} must be comma-separated numbers, got {text!r}") from None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="glob of side A's per-seed result folders")
    ap.add_argument("--b", required=True, help="glob of side B's")
    ap.add_argument("--steps", default="250,500,750,1000", help="steps to compare at")
    ap.add_argument("--seconds", default="30,60,100,150", help="elapsed training seconds to compare at")
    ap.add_argument("--step-window", type=float, default=50.0, help="logged steps within this many of a point")
    ap.add_argument("--second-window", type=float, default=6.0, help="logged steps within this many seconds")
    ap.add_argument("--pace", default="250,1250", help="FIRST,LAST: each folder's ms per step between two logged steps")
    ap.add_argument("--json", default=None, help="write both tables here")
    args = ap.parse_args(argv)
    steps, seconds = _numbers("--steps", args.steps), _numbers("--seconds", args.seconds)
    pace_points = _numbers("--pace", args.pace)
    if len(pace_points) != 2:
        raise SystemExit(f"error: --pace must be two steps FIRST,LAST, got {args.pace!r}")
    first, last = (int(v) for v in pace_points)
    sides = {}
    for label, pattern in (("a", args.a), ("b", args.b)):
        sides[label] = {str(f): load_curve(f) for f in folders(pattern)}
    out: dict = {"a": sorted(sides["a"]), "b": sorted(sides["b"]), "per_step": [], "per_second": []}
    out["ms_per_step"] = {name: pace(rows, first, last, name) for side in sides.values() for name, rows in side.items()}
    print(f"\nms per step, steps {first}-{last}: " + ", ".join(f"{Path(n).name} {v:.1f}"
                                                            for n, v in out["ms_per_step"].items()))
    for view, column, points, window in (("per_step", 0, steps, args.step_window),
                                         ("per_second", 1, seconds, args.second_window)):
        for point in points:
            a, b = (loss_at(sides[s], column, point, window) for s in ("a", "b"))
            out[view].append({"at": point, "a": a, "b": b, "a_minus_b": a - b})
    for view, head in (("per_step", "step"), ("per_second", "elapsed training s")):
        print(f"\n| {head} | A | B | A − B |\n|---:|---:|---:|---:|")
        for r in out[view]:
            print(f"| {r['at']:g} | {r['a']:.4f} | {r['b']:.4f} | {r['a_minus_b']:+.4f} |")
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
