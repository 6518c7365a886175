"""Collect per-seed metrics, compute statistics, and render reports/report.md, report.json, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from golf import plots, stats
from golf.config import Params
from golf.errors import GolfError
from golf.io import write_json_atomic, write_text_atomic

COLUMNS = [  # (column, metrics file, key)
    ("pre_quant_bpb", "train", "val_bpb"),
    ("quant_bpb", "eval_sliding", "plain_val_bpb"),
    ("sliding_bpb", "eval_sliding", "val_bpb"),
    ("stateful_bpb", "eval_sliding", "stateful_val_bpb"),
    ("ttt_bpb", "eval_ttt", "val_bpb"),
    ("artifact_bytes", "package", "total_bytes"),
    ("train_tok_per_s", "train", "tok_per_s"),
    ("steps", "train", "steps"),
]
METRIC_COLUMN = {"train": "pre_quant_bpb", "quant": "quant_bpb", "eval_sliding": "sliding_bpb",
                 "eval_ttt": "ttt_bpb"}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise GolfError(f"metrics file {str(path)!r} not found (run that stage for this seed first)")
    return json.loads(path.read_text())


def seed_row(run_dir: Path) -> dict:
    m = {name: _read(run_dir / "metrics" / f"{name}.json") for name in ("train", "package", "eval_sliding")}
    ttt_path = run_dir / "metrics" / "eval_ttt.json"
    m["eval_ttt"] = _read(ttt_path) if ttt_path.is_file() else {}
    row = {col: m[src].get(key, float("nan")) for col, src, key in COLUMNS}
    row["_eval_tokens"], row["_eval_bytes"] = m["eval_sliding"]["tokens"], m["eval_sliding"]["bytes"]
    row["_groups"] = m["package"].get("groups_raw_bytes", {})
    row["_code_bytes"], row["_cap"] = m["package"]["code_bytes"], m["package"]["cap_bytes"]
    return row


def read_curve(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[4])) for r in lines if r.strip()]


def load_reference(ref: str, column: str) -> tuple[str, list[float]]:
    """Another run's runs/ folder (seeds = its numeric subfolders), or a JSON {"name", "val_bpb": [...]}."""
    path = Path(ref)
    if path.is_dir():
        seeds = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
        if not seeds:
            raise GolfError(f"report.reference {ref!r}: no seed folders in it")
        return str(path), [seed_row(path / str(s))[column] for s in seeds]
    if path.is_file():
        data = json.loads(path.read_text())
        vals = data.get("val_bpb") if isinstance(data, dict) else None
        if not isinstance(vals, list) or not vals:
            raise GolfError(f"report.reference {ref!r}: expected a JSON object with a non-empty list 'val_bpb'")
        return str(data.get("name", path.name)), [float(v) for v in vals]
    raise GolfError(f"report.reference {ref!r} is neither a runs folder nor a JSON file")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else (f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.5f}")
    return f"{v:,}" if isinstance(v, int) else str(v)


def build_report(params: Params, out_dir: Path) -> dict:
    rows = {seed: seed_row(params.run_dir(seed)) for seed in params.seeds}
    cols = [c for c, _, _ in COLUMNS]
    summary = {}
    for c in cols:
        vals = [float(rows[s][c]) for s in rows if isinstance(rows[s][c], (int, float)) and rows[s][c] == rows[s][c]]
        summary[c] = {"mean": stats.mean(vals) if vals else float("nan"),
                      "std": stats.sample_std(vals) if len(vals) > 1 else float("nan")}
    column = METRIC_COLUMN[params.report.metric]
    mine = [float(rows[s][column]) for s in rows]
    tokens = sum(r["_eval_tokens"] for r in rows.values())
    n_bytes = sum(r["_eval_bytes"] for r in rows.values())
    margin_bpb = stats.nats_to_bpb(params.report.margin_nats, tokens, n_bytes)
    tests = {}
    if params.report.reference:
        name, ref = load_reference(params.report.reference, column)
        tests["vs_run"] = {"reference": name, "values": ref, "plain": stats.welch(mine, ref).as_dict(),
                           "margin": stats.welch(mine, ref, margin_bpb).as_dict()}
    if params.report.reference_bpb > 0:
        r = params.report.reference_bpb
        tests["vs_value"] = {"reference": r, "plain": stats.one_sample(mine, r).as_dict(),
                             "margin": stats.one_sample(mine, r, margin_bpb).as_dict()}
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots.training_curves({s: read_curve(params.run_dir(s) / "plots" / "train_curve.tsv") for s in rows},
                          plot_dir / "train_curves.png")
    stage_cols = ["pre_quant_bpb", "quant_bpb", "sliding_bpb", "stateful_bpb", "ttt_bpb"]
    plots.bpb_by_stage({s: {c: float(rows[s][c]) for c in stage_cols} for s in rows}, stage_cols,
                       plot_dir / "bpb_by_stage.png")
    first = rows[params.seeds[0]]
    plots.size_breakdown(first["_groups"], first["_code_bytes"], int(first["artifact_bytes"]), first["_cap"],
                         plot_dir / "size_breakdown.png")
    report = {"seeds": params.seeds, "metric": column, "rows": {s: {c: rows[s][c] for c in cols} for s in rows},
              "summary": summary, "margin_nats": params.report.margin_nats, "margin_bpb": margin_bpb, "tests": tests}
    write_json_atomic(out_dir / "report.json", report)
    write_text_atomic(out_dir / "report.md", render_markdown(report))
    flat = {f"{c}_mean": summary[c]["mean"] for c in cols}
    for k, t in tests.items():
        flat[f"{k}_p"] = t["plain"]["p_one_sided"]
        flat[f"{k}_margin_p"] = t["margin"]["p_one_sided"]
    write_json_atomic(out_dir / "summary.json", flat)
    return flat


def render_markdown(r: dict) -> str:
    cols = list(next(iter(r["rows"].values())).keys())
    out = ["# golf report", "", f"Seeds: {', '.join(map(str, r['seeds']))}. Lower BPB is better.", "",
           "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s, row in r["rows"].items():
        out.append(f"| {s} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    out.append("| mean | " + " | ".join(_fmt(r["summary"][c]["mean"]) for c in cols) + " |")
    out.append("| std | " + " | ".join(_fmt(r["summary"][c]["std"]) for c in cols) + " |")
    out += ["", f"Compared metric: `{r['metric']}`. Margin: {r['margin_nats']} nats/token = "
            f"{r['margin_bpb']:.5f} BPB at this run's tokens/bytes ratio.", ""]
    for name, t in r["tests"].items():
        for kind in ("plain", "margin"):
            tt = t[kind]
            what = "A < B" if kind == "plain" else f"A < B - {tt['delta']:.5f}"
            res = tt["note"] or f"t = {tt['t']:.3f}, df = {tt['df']:.2f}, one-sided p = {tt['p_one_sided']:.4g}"
            out.append(f"- {name} ({t['reference']}), H1 {what}: mean A {tt['mean_a']:.5f}, mean B "
                       f"{tt['mean_b']:.5f}; {res}")
    if not r["tests"]:
        out.append("No reference set (params report.reference / report.reference_bpb): no t-test.")
    out += ["", "Plots: plots/train_curves.png, plots/bpb_by_stage.png, plots/size_breakdown.png", ""]
    return "\n".join(out)
