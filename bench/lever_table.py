"""Issue 23's lever table from the run folders of bench/h200/lever_pairs.sh (through h200_train_sweep.sh): one row
per pair of the script's PAIRS, in its order, that has runs: each side's exact val BPB, its Δ against that side's
base (the pair with no overrides), tokens per second, steps, and the mean logged training loss over a window of
steps.

A run folder is `<config stem>[__<override>]...`/<seed>/ with metrics/train.json and plots/train_curve.tsv, as the
sweep writes them (bench/results/*_lever_pairs_*/ keep them). Its side is its config (--hybrid / --attn). Its pair
is the one whose overrides for that side are the largest subset of the run's own; whatever else the run carries
(HYBRID_SETS / ATTN_SETS: fixed step counts, profiled steps) is common to the block and left out of the row. A run
that matches no pair with overrides is its side's base. Several seeds of one run are averaged (n in the table).

    python bench/lever_table.py bench/results/2026-11-30_cc7b76a3_lever_pairs_fixed_steps
    python bench/lever_table.py --loss-steps 300,375 --json table.json <folder> [<folder> ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.io import write_text_atomic

PAIRS_SCRIPT = Path(__file__).resolve().parent / "h200" / "lever_pairs.sh"
PAIR_LINE = re.compile(r'^\s*"([^"|]*)\|([^"|]*)"\s*$')  # "hybrid overrides | attention overrides"
SIDES = ("hybrid", "attn")


def read_pairs(script: Path) -> list[tuple[frozenset, frozenset]]:
    """lever_pairs.sh's PAIRS in order: (hybrid overrides, attention overrides) as sets of words."""
    pairs = [(frozenset(m[1].split()), frozenset(m[2].split()))
             for m in map(PAIR_LINE.match, script.read_text().splitlines()) if m]
    if not pairs:
        raise ValueError(f"error: {script} holds no PAIRS lines (\"<hybrid overrides> | <attention overrides>\")")
    return pairs


def read_run(seed_dir: Path, loss_steps: tuple[int, int]) -> dict:
    """One seed's val BPB, tok/s, steps, and mean training loss over the logged steps in loss_steps."""
    m = json.loads((seed_dir / "metrics" / "train.json").read_text())
    losses = []
    curve = seed_dir / "plots" / "train_curve.tsv"
    if curve.is_file():
        lines = curve.read_text().splitlines()
        col = {name: i for i, name in enumerate(lines[0].split("\t"))}
        for line in lines[1:]:
            cells = line.split("\t")
            step, loss = int(cells[col["step"]]), cells[col["train_loss"]]
            if loss and loss_steps[0] <= step <= loss_steps[1]:
                losses.append(float(loss))
    return {"val_bpb": m["val_bpb"], "tok_per_s": m["tok_per_s"], "steps": m["steps"],
            "train_loss": sum(losses) / len(losses) if losses else None}


def find_runs(folders: list[Path], stems: dict[str, str]) -> dict[str, dict[str, list[Path]]]:
    """{side: {run label: [seed folders]}} for every run folder under `folders` whose config stem is a side's."""
    runs: dict[str, dict[str, list[Path]]] = {side: {} for side in SIDES}
    for folder in folders:
        for metrics in sorted(folder.glob("*/*/metrics/train.json")):
            seed_dir = metrics.parent.parent
            label = seed_dir.parent.name
            side = next((s for s, stem in stems.items() if label.split("__")[0] == stem), None)
            if side is not None:
                runs[side].setdefault(label, []).append(seed_dir)
    return runs


def match_pair(label: str, side: int, pairs: list[tuple[frozenset, frozenset]]) -> int | None:
    """Index of the pair whose overrides on `side` (0 hybrid, 1 attention) are the largest non-empty subset of the
    run's overrides; None for a run that matches none (its side's base)."""
    words = set(label.split("__")[1:])
    fits = [(len(p[side]), -i) for i, p in enumerate(pairs) if p[side] and p[side] <= words]
    return -max(fits)[1] if fits else None


def build_rows(folders: list[Path], pairs, stems: dict[str, str], loss_steps: tuple[int, int]) -> list[dict]:
    """One dict per pair with runs (the bases first): per side its runs' mean numbers, n, and Δ val BPB."""
    runs = find_runs(folders, stems)
    if not any(runs.values()):
        raise ValueError(f"error: no runs of {' or '.join(stems.values())} under {', '.join(map(str, folders))} "
                         "(expected <config stem>[__override...]/<seed>/metrics/train.json)")
    cells: dict[tuple[int | None, str], dict] = {}
    for s, side in enumerate(SIDES):
        for label, seed_dirs in runs[side].items():
            key = (match_pair(label, s, pairs), side)
            if key in cells:
                raise ValueError(f"error: two {side} runs for the same pair: {cells[key]['label']} and {label} "
                                 "(give the folders of one block at a time)")
            seeds = [read_run(d, loss_steps) for d in seed_dirs]
            mean = {k: sum(r[k] for r in seeds) / len(seeds) for k in ("val_bpb", "tok_per_s", "steps")}
            tl = [r["train_loss"] for r in seeds if r["train_loss"] is not None]
            cells[key] = mean | {"label": label, "n": len(seeds), "train_loss": sum(tl) / len(tl) if tl else None}
    rows = []
    for idx in [None, *range(len(pairs))]:
        row = {"pair": "none (base)" if idx is None else [" ".join(sorted(p)) for p in pairs[idx]]}
        for side in SIDES:
            cell = cells.get((idx, side))
            base = cells.get((None, side))
            if cell is not None:
                row[side] = cell | {"delta": cell["val_bpb"] - base["val_bpb"] if base and idx is not None else None}
        if any(side in row for side in SIDES):
            rows.append(row)
    return rows


def markdown(rows: list[dict], loss_steps: tuple[int, int]) -> str:
    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    header = ["pair: hybrid \\| attention", "hybrid val BPB", "Δ", "attn val BPB", "Δ", "hybrid tok/s", "attn tok/s",
              "steps, hybrid / attn", f"train loss @{loss_steps[0]}–{loss_steps[1]}, hybrid / attn", "n"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        h, a = r.get("hybrid", {}), r.get("attn", {})
        pair = r["pair"] if isinstance(r["pair"], str) else " \\| ".join(
            f"`{side}`" if side else "(none)" for side in r["pair"])
        lines.append("| " + " | ".join([
            pair, num(h.get("val_bpb"), ".5f"), num(h.get("delta"), "+.4f"), num(a.get("val_bpb"), ".5f"),
            num(a.get("delta"), "+.4f"), num(h.get("tok_per_s"), ",.0f"), num(a.get("tok_per_s"), ",.0f"),
            f"{num(h.get('steps'), '.0f')} / {num(a.get('steps'), '.0f')}",
            f"{num(h.get('train_loss'), '.3f')} / {num(a.get('train_loss'), '.3f')}",
            f"{h.get('n', 0)} / {a.get('n', 0)}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, help="folders holding the sweep's run folders")
    ap.add_argument("--hybrid", default="configs/hybrid_seed_fit.yaml", help="the hybrid side's config (its stem)")
    ap.add_argument("--attn", default="configs/attn_fit.yaml", help="the attention side's config (its stem)")
    ap.add_argument("--pairs", type=Path, default=PAIRS_SCRIPT, help="the script whose PAIRS to read, or a PAIRS_FILE of pair lines")
    ap.add_argument("--loss-steps", default="300,375", help="first,last step of the training-loss window")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    try:
        first, last = (int(s) for s in a.loss_steps.split(","))
    except ValueError:
        print(f"error: --loss-steps must be two whole numbers, first,last; got {a.loss_steps!r}", file=sys.stderr)
        return 2
    missing = [str(f) for f in a.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        rows = build_rows(a.folders, read_pairs(a.pairs), {"hybrid": Path(a.hybrid).stem, "attn": Path(a.attn).stem},
                          (first, last))
    except (OSError, ValueError, KeyError) as e:
        print(e if isinstance(e, ValueError) else f"error: cannot read a run: {e!r}", file=sys.stderr)
        return 2
    print(markdown(rows, (first, last)))
    if a.json:
        write_text_atomic(a.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
