"""The report: collect every seed's metrics into a table, test it against a reference, render it.

`collect(params)` reads runs/<seed>/metrics/*.json and plots/train_curve.tsv for each seed of params.seeds
and the reference, and returns a JSON-able dict (the content of report.json); it writes nothing.
`write_report(report, curves, out_dir)` writes report.md, report.json, summary.json and plots/*.png.
The export folder's files (submission.json, its README) are built from the same report in golf/submission.py.

Reference (params report.reference), compared on the BPB named by report.metric:
  * a runs folder with this project's layout (<seed>/metrics/*.json); its seeds are its numeric subfolders;
  * a JSON file of per-seed BPBs: {"name": "baseline", "val_bpb": [1.2244, 1.2251, 1.2239]} ("name" and a
    matching "seeds" list optional), or a challenge-style submission.json with
    "seed_results": {"42": {"val_bpb": 1.2244}, ...} (e.g. one written by `cli.py export`).
report.reference_bpb > 0 adds a one-sample test against that fixed value.

Margin: the challenge asks for a 0.005-nat win (val_loss, nats per token; openai/parameter-golf README,
"Submission Process"). We test BPB, with margin_bpb = margin_nats / ln 2 * tokens / bytes, tokens and bytes
being those this run scored (summed over seeds). With the same tokenizer and validation text on both sides
this is exactly the val_loss test with a margin of margin_nats (see golf.stats.nats_to_bpb); with another
tokenizer, "nats per token" has no common meaning and the margin is this run's tokens' worth of nats.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf import plots, stats
from golf.config import CAP_BYTES, Params
from golf.errors import GolfError
from golf.io import atomic_dir, read_json, write_json_atomic, write_text_atomic
from golf.provenance import commit_label


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    source: str        # metrics file (stage) it comes from
    field: str         # key in that file
    kind: str          # "bpb" | "bytes" | "rate" | "count"
    optional: bool = False


COLUMNS = (
    Column("pre_quant_bpb", "pre-quant BPB", "train", "val_bpb", "bpb"),
    Column("quant_bpb", "quantized BPB", "eval_sliding", "plain_val_bpb", "bpb"),
    Column("sliding_bpb", "sliding BPB", "eval_sliding", "val_bpb", "bpb"),
    Column("stateful_bpb", "stateful BPB", "eval_sliding", "stateful_val_bpb", "bpb", optional=True),
    Column("ttt_bpb", "TTT BPB", "eval_ttt", "val_bpb", "bpb"),
    Column("artifact_bytes", "artifact bytes", "package", "total_bytes", "bytes"),
    Column("train_tok_per_s", "train tok/s", "train", "tok_per_s", "rate"),
    Column("steps", "steps", "train", "steps", "count"),
)
BPB_COLUMNS = tuple(c for c in COLUMNS if c.kind == "bpb")
METRIC_COLUMN = {"train": "pre_quant_bpb", "quant": "quant_bpb", "eval_sliding": "sliding_bpb",
                 "eval_ttt": "ttt_bpb"}
# the val_loss (nats/token) recorded beside each BPB
LOSS_FIELD = {"pre_quant_bpb": "val_loss", "quant_bpb": "plain_val_loss", "sliding_bpb": "val_loss",
              "stateful_bpb": "stateful_val_loss", "ttt_bpb": "val_loss"}
STAGE_FILES = ("train", "quantize", "package", "eval_sliding", "eval_ttt")
CLI_NAME = {"eval_sliding": "eval-sliding", "eval_ttt": "eval-ttt"}
PLOTS = ("train_curves.png", "bpb_by_stage.png", "size_breakdown.png")


def _col(key: str) -> Column:
    return next(c for c in COLUMNS if c.key == key)


# --------------------------------------------------------------------------------------------------
# Reading one run's files
# --------------------------------------------------------------------------------------------------


def load_metrics(run_dir: Path, stage: str) -> dict:
    """runs/<seed>/metrics/<stage>.json as a dict; GolfError naming the file when missing or malformed."""
    path = Path(run_dir) / "metrics" / f"{stage}.json"
    data = read_json(path, "metrics file", GolfError,
                     f": (re)run the {stage} stage for this seed (`python cli.py {CLI_NAME.get(stage, stage)} "
                     f"--seed {Path(run_dir).name}` or `dvc repro`)")
    if not isinstance(data, dict):
        raise GolfError(f"metrics file {str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return data


def _number(m: dict, key: str, path: str, optional: bool = False) -> float:
    v = m.get(key)
    if v is None and optional:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GolfError(f"metrics file {path!r}: expected a number under {key!r}, got {v!r}")
    return v


def read_seed(run_dir: Path, ttt_enabled: bool) -> tuple[dict, dict, list[str]]:
    """(table row, the raw metrics files by stage, warnings) for one seed's folder.

    TTT is "n/a" (NaN) when params ttt.enabled is false, or when eval_ttt.json says it did not run."""
    run_dir = Path(run_dir)
    files: dict[str, dict | None] = {}
    warnings: list[str] = []
    for stage in STAGE_FILES:
        if stage == "eval_ttt" and not ttt_enabled:
            files[stage] = None
            continue
        files[stage] = load_metrics(run_dir, stage)
    ttt = files["eval_ttt"]
    if ttt is not None and ttt.get("enabled") is False:
        warnings.append(f"{run_dir / 'metrics' / 'eval_ttt.json'} says TTT did not run although ttt.enabled "
                        "is true: TTT shown as n/a (rerun eval_ttt)")
        files["eval_ttt"] = None
    row = {}
    for c in COLUMNS:
        m = files[c.source]
        row[c.key] = float("nan") if m is None else \
            _number(m, c.field, str(run_dir / "metrics" / f"{c.source}.json"), c.optional)
    return row, files, warnings


def result_commit(run_dir: Path, column: str) -> str | None:
    """The git commit (with "+dirty" when the tree had uncommitted changes) that produced this seed's compared
    BPB, from its stage's provenance file beside the metrics (eval_sliding's when that one has none); None
    when no provenance was kept."""
    metrics = Path(run_dir) / "metrics"
    for stage in (_col(column).source, "eval_sliding"):
        path = metrics / f"{stage}.provenance.json"
        if path.is_file():
            try:
                git = json.loads(path.read_text()).get("git") or {}
            except (OSError, ValueError, AttributeError):
                continue
            if git.get("commit"):
                return commit_label(git)
    return None


def _commits_line(who: str, commits: dict) -> str:
    """'<who>: commit a (seeds 1, 2), commit b (seed 3)' grouped by commit, in seed order."""
    by_commit: dict[str, list[str]] = {}
    for seed, c in commits.items():
        by_commit.setdefault(c or "unknown (no provenance file)", []).append(str(seed))
    parts = [f"{c} ({'seed' if len(s) == 1 else 'seeds'} {', '.join(s)})" for c, s in by_commit.items()]
    return f"{who}: " + "; ".join(parts) + "."


def read_curve(path: Path) -> dict[str, list[float]] | None:
    """train_curve.tsv as columns (header names -> values; empty cells -> NaN); None when the file is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    header = lines[0].split("\t") if lines else []
    if not {"step", "train_loss"} <= set(header):
        raise GolfError(f"training curve {str(path)!r}: expected a tab-separated header with 'step' and "
                        f"'train_loss', got {header!r}")
    cols: dict[str, list[float]] = {h: [] for h in header}
    for i, ln in enumerate(lines[1:], start=2):
        cells = ln.split("\t")
        if len(cells) != len(header):
            raise GolfError(f"training curve {str(path)!r} line {i}: expected {len(header)} columns, got {len(cells)}")
        for h, cell in zip(header, cells):
            try:
                cols[h].append(float(cell) if cell.strip() else float("nan"))
            except ValueError:
                raise GolfError(f"training curve {str(path)!r} line {i}: {h}={cell!r} is not a number") from None
    return cols


# --------------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------------


def discover_seeds(runs_dir: Path) -> list[int]:
    """Numeric subfolder names of a runs folder, sorted."""
    return sorted(int(p.name) for p in Path(runs_dir).iterdir() if p.is_dir() and p.name.isdigit())


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def load_reference(ref: str, column: str) -> dict:
    """{"name", "kind", "seeds", "values", "tokens", "bytes"} of report.reference (see the module docstring)."""
    path = Path(ref)
    col = _col(column)
    if path.is_dir():
        seeds = discover_seeds(path)
        if not seeds:
            raise GolfError(f"report.reference {ref!r}: no seed folders (numeric names such as 42/) in it; "
                            "expected a runs folder laid out as <seed>/metrics/*.json")
        values, tokens, n_bytes = [], 0, 0
        for s in seeds:
            m = load_metrics(path / str(s), col.source)
            where = str(path / str(s) / "metrics" / f"{col.source}.json")
            if col.source == "eval_ttt" and m.get("enabled") is False:
                raise GolfError(f"report.reference: {where} says TTT did not run, so it has no {col.label}; "
                                "choose another report.metric")
            values.append(float(_number(m, col.field, where)))
            if not ("tokens" in m and "bytes" in m):  # same choice as _scored: the compared BPB's own counts
                sliding = path / str(s) / "metrics" / "eval_sliding.json"
                m = load_metrics(path / str(s), "eval_sliding") if sliding.is_file() else {}
            tokens += int(m.get("tokens") or 0)
            n_bytes += int(m.get("bytes") or 0)
        return {"name": str(path), "kind": "runs folder", "seeds": seeds, "values": values,
                "tokens": tokens, "bytes": n_bytes,
                "commits": {str(s): result_commit(path / str(s), column) for s in seeds}}
    if not path.is_file():
        raise GolfError(f"report.reference {ref!r}: no such file or folder; expected a runs folder or a JSON "
                        'file such as {"name": "baseline", "val_bpb": [1.2244, 1.2251, 1.2239]}')
    data = read_json(path, "report.reference", GolfError)
    if not isinstance(data, dict):
        raise GolfError(f"report.reference {ref!r}: expected a JSON object with a 'val_bpb' list")
    name = str(data.get("name") or path.name)
    if isinstance(data.get("val_bpb"), list):
        values, seeds = data["val_bpb"], data.get("seeds")
        if not isinstance(seeds, list) or len(seeds) != len(values):
            seeds = list(range(1, len(values) + 1))
    elif isinstance(data.get("seed_results"), dict) and data["seed_results"]:
        seeds = list(data["seed_results"])
        values = [r.get("val_bpb") if isinstance(r, dict) else None for r in data["seed_results"].values()]
    elif "val_bpb" in data:
        raise GolfError(f"report.reference {ref!r} holds a single val_bpb ({data['val_bpb']!r}); a t-test needs "
                        "the per-seed values ('val_bpb': [..] or 'seed_results'), or set report.reference_bpb "
                        "to compare against a fixed value")
    else:
        raise GolfError(f"report.reference {ref!r}: expected a 'val_bpb' list of per-seed BPBs "
                        "(or a challenge-style 'seed_results' mapping)")
    if not values or not all(_positive(v) for v in values):
        raise GolfError(f"report.reference {ref!r}: per-seed val_bpb must be positive numbers, got {values!r}")
    return {"name": name, "kind": "JSON file", "seeds": seeds, "values": [float(v) for v in values],
            "tokens": 0, "bytes": 0, "commits": {}}


# --------------------------------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------------------------------


def _scored(files: dict, column: str) -> tuple[int, int]:
    """Tokens and bytes the compared BPB was computed on (its own file's, else eval_sliding's)."""
    m = files.get(_col(column).source) or {}
    if not ("tokens" in m and "bytes" in m):
        m = files["eval_sliding"]
    return int(m.get("tokens", 0)), int(m.get("bytes", 0))


def _test_pair(kind: str, mine: list[float], ref, margin_bpb: float) -> dict:
    if kind == "welch":
        plain, margin = stats.welch_test(mine, ref), stats.welch_test(mine, ref, margin_bpb)
    else:
        plain, margin = stats.one_sample_test(mine, ref), stats.one_sample_test(mine, ref, margin_bpb)
    return {"plain": plain.as_dict(), "margin": margin.as_dict()}


def collect(params: Params) -> tuple[dict, dict[int, dict | None]]:
    """(report dict, training curves by seed). Reads every input first; raises GolfError on a bad one."""
    from golf import provenance

    rc = params.report
    column = METRIC_COLUMN[rc.metric]
    if rc.metric == "eval_ttt" and not params.ttt.enabled:
        raise GolfError("report.metric is 'eval_ttt' but ttt.enabled is false: there is no TTT BPB to compare; "
                        "enable ttt or choose another report.metric")
    rows, files, warnings, curves = {}, {}, [], {}
    for seed in params.seeds:
        run_dir = params.run_dir(seed)
        rows[seed], files[seed], w = read_seed(run_dir, params.ttt.enabled)
        warnings += w
        curves[seed] = read_curve(run_dir / "plots" / "train_curve.tsv")
        if curves[seed] is None:
            warnings.append(f"training curve {str(run_dir / 'plots' / 'train_curve.tsv')!r} not found: "
                            f"seed {seed} is missing from the training-curve plot")
    mine = [rows[s][column] for s in params.seeds]
    if not all(math.isfinite(v) for v in mine):
        raise GolfError(f"report.metric {rc.metric!r}: {_col(column).label} is missing for seed(s) "
                        f"{[s for s in params.seeds if not math.isfinite(rows[s][column])]}")
    tokens = sum(_scored(files[s], column)[0] for s in params.seeds)
    n_bytes = sum(_scored(files[s], column)[1] for s in params.seeds)
    if tokens <= 0 or n_bytes <= 0:
        raise GolfError(f"metrics files of seeds {params.seeds}: no scored 'tokens'/'bytes' recorded, so "
                        "report.margin_nats cannot be converted to BPB")
    margin_bpb = stats.nats_to_bpb(rc.margin_nats, tokens, n_bytes)

    tests: dict[str, dict] = {}
    if rc.reference:
        ref = load_reference(rc.reference, column)
        if Path(rc.reference).resolve() == Path(params.runs_dir).resolve():
            warnings.append(f"report.reference {rc.reference!r} is this run's own runs folder")
        if ref["bytes"] and ref["bytes"] / len(ref["seeds"]) != n_bytes / len(params.seeds):
            warnings.append(f"the reference scored {ref['bytes'] // len(ref['seeds']):,} bytes per seed, this run "
                            f"{n_bytes // len(params.seeds):,}: they were not evaluated on the same text")
        tests["vs_run"] = {"reference": ref["name"], "reference_kind": ref["kind"], "reference_seeds": ref["seeds"],
                           "reference_values": ref["values"], "reference_commits": ref["commits"],
                           **_test_pair("welch", mine, ref["values"], margin_bpb)}
    if rc.reference_bpb > 0:
        tests["vs_value"] = {"reference": f"fixed value {rc.reference_bpb}", "reference_kind": "value",
                             "reference_seeds": [], "reference_values": [rc.reference_bpb], "reference_commits": {},
                             **_test_pair("one_sample", mine, rc.reference_bpb, margin_bpb)}

    def loss(s: int, key: str) -> float:
        src = _col(key).source
        m = files[s].get(src)
        where = str(params.run_dir(s) / "metrics" / f"{src}.json")
        return float("nan") if m is None else float(_number(m, LOSS_FIELD[key], where, optional=True))

    report = {
        "seeds": list(params.seeds),
        "metric": rc.metric, "metric_column": column, "metric_label": _col(column).label,
        "columns": [{"key": c.key, "label": c.label, "kind": c.kind, "source": f"{c.source}.{c.field}"}
                    for c in COLUMNS],
        "rows": {str(s): rows[s] for s in params.seeds},
        "val_loss": {str(s): {c.key: loss(s, c.key) for c in BPB_COLUMNS} for s in params.seeds},
        "summary": {c.key: stats.summarize([rows[s][c.key] for s in params.seeds]) for c in COLUMNS},
        "effects": _effects(rows),
        "margin": {"nats": rc.margin_nats, "bpb": margin_bpb, "tokens": tokens, "bytes": n_bytes},
        "alpha": rc.alpha,
        "tests": tests,
        "sizes": {str(s): _sizes(files[s]["package"]) for s in params.seeds},
        "cap_bytes": int(files[params.seeds[0]]["package"].get("cap_bytes", CAP_BYTES)),
        "timing": {str(s): {"train_s": files[s]["train"].get("train_s"),
                            "eval_s": (files[s].get(_col(column).source) or {}).get("eval_s"),
                            "world_size": files[s]["train"].get("world_size", 1)} for s in params.seeds},
        "warnings": warnings,
        "result_commits": {str(s): result_commit(params.run_dir(s), column) for s in params.seeds},
        "plots": [f"plots/{p}" for p in PLOTS],
        "provenance": provenance.collect("report", rc),
    }
    return report, curves


def _effects(rows: dict) -> dict:
    """Mean per-seed change in BPB from each stage (negative = the stage helped)."""
    pairs = {"quantization": ("quant_bpb", "pre_quant_bpb"), "sliding_window": ("sliding_bpb", "quant_bpb"),
             "stateful_vs_sliding": ("stateful_bpb", "sliding_bpb"), "ttt_vs_sliding": ("ttt_bpb", "sliding_bpb")}
    return {name: stats.summarize([r[a] - r[b] for r in rows.values()])["mean"] for name, (a, b) in pairs.items()}


def _sizes(package: dict) -> dict[str, int]:
    """Artifact bytes by part: each tensor group's share of the compressed model, plus the code."""
    groups = package.get("groups")
    parts = {str(k): int(v) for k, v in groups.items()} if isinstance(groups, dict) and groups else \
        {"model (no group sizes recorded)": int(package.get("model_bytes", 0))}
    parts["code"] = int(package.get("code_bytes", 0))
    return parts


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """NaN/inf -> null (strict JSON; DVC and other readers choke on NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def summary_metrics(report: dict) -> dict:
    """The small flat dict DVC tracks (reports/summary.json) and the CLI prints."""
    out: dict[str, Any] = {"n_seeds": len(report["seeds"]), "metric": report["metric_column"]}
    for c in COLUMNS:
        out[f"{c.key}_mean"] = report["summary"][c.key]["mean"]
        if c.kind == "bpb":
            out[f"{c.key}_std"] = report["summary"][c.key]["std"]
    out["artifact_bytes_max"] = max(int(r["artifact_bytes"]) for r in report["rows"].values())
    out["margin_bpb"] = report["margin"]["bpb"]
    for name, t in report["tests"].items():
        out[f"{name}_t"] = t["plain"]["t"]
        out[f"{name}_p"] = t["plain"]["p"]
        out[f"{name}_margin_p"] = t["margin"]["p"]
        out[f"{name}_diff"] = t["plain"]["diff"]
        out[f"{name}_diff_ci_low"] = t["plain"]["ci_low"]
        out[f"{name}_diff_ci_high"] = t["plain"]["ci_high"]
    return _jsonable(out)


def write_report(report: dict, curves: dict[int, dict | None], out_dir: Path) -> dict:
    """reports/plots/*.png (folder replaced as a whole), report.json, report.md, summary.json; all atomic."""
    out_dir = Path(out_dir)
    rows = {int(s): r for s, r in report["rows"].items()}
    with atomic_dir(out_dir / "plots") as tmp:
        plots.training_curves({s: c for s, c in curves.items() if c}, {s: r["pre_quant_bpb"] for s, r in rows.items()},
                              tmp / "train_curves.png")
        ref = None
        if "vs_run" in report["tests"]:
            ref = (f"reference mean: {Path(report['tests']['vs_run']['reference']).name}",
                   stats.mean(report["tests"]["vs_run"]["reference_values"]))
        elif "vs_value" in report["tests"]:
            ref = ("reference value", report["tests"]["vs_value"]["reference_values"][0])
        plots.bpb_by_stage(rows, [(c.key, c.label.removesuffix(" BPB")) for c in BPB_COLUMNS],
                           tmp / "bpb_by_stage.png", ref)
        plots.size_breakdown({int(s): v for s, v in report["sizes"].items()}, report["cap_bytes"],
                             tmp / "size_breakdown.png")
    write_json_atomic(out_dir / "report.json", _jsonable(report))
    write_text_atomic(out_dir / "report.md", render_markdown(report))
    summary = summary_metrics(report)
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def build_report(params: Params, out_dir: Path) -> dict:
    report, curves = collect(params)
    return write_report(report, curves, out_dir)


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def fmt(v: Any, kind: str = "bpb") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if kind == "bpb":
        return f"{v:.5f}"
    if kind in ("bytes", "count"):
        return f"{round(v):,}"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "p":
        return f"{v:.3g}"
    if kind == "s":
        return f"{v:,.1f}"
    return str(v)


def _signed(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return "±0.00000" if abs(v) < 5e-6 else f"{v:+.5f}"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def render_markdown(r: dict) -> str:
    cols = [c for c in COLUMNS if c.key != "stateful_bpb" or r["summary"]["stateful_bpb"]["n"]]
    n = len(r["seeds"])
    out = ["# golf report", "",
           (f"Seeds: {', '.join(map(str, r['seeds']))} ({n}). Compared metric: **{r['metric_label']}** "
            f"(`report.metric: {r['metric']}`). BPB = bits per byte of validation text, lower is better."), "",
           "## Per seed", "",
           "| seed | " + " | ".join(c.label for c in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for s, row in r["rows"].items():
        out.append(f"| {s} | " + " | ".join(fmt(row[c.key], c.kind) for c in cols) + " |")
    mean_kind = {"count": "rate"}  # a mean of step counts is not an integer
    out.append("| **mean** | " + " | ".join(fmt(r["summary"][c.key]["mean"], mean_kind.get(c.kind, c.kind))
                                           for c in cols) + " |")
    out.append("| std | " + " | ".join(fmt(r["summary"][c.key]["std"], mean_kind.get(c.kind, c.kind))
                                      for c in cols) + " |")
    out.append("")
    if n < 2:
        out += ["Standard deviations need at least 2 seeds (n/a above).", ""]
    e = r["effects"]
    out += [(f"Mean change in BPB by stage (negative = better): quantization {_signed(e['quantization'])}, "
             f"sliding window {_signed(e['sliding_window'])}, "
             f"stateful vs sliding {_signed(e['stateful_vs_sliding'])}, "
             f"TTT vs sliding {_signed(e['ttt_vs_sliding'])}."), ""]

    m = r["margin"]
    out += ["## Significance", "",
            (f"One-sided tests of H1 \"this run's {r['metric_label']} is lower\", at alpha = {r['alpha']}. "
             f"Margin: {m['nats']} nats/token of val_loss = {m['nats']} / ln 2 x {m['tokens']:,} tokens / "
             f"{m['bytes']:,} bytes = **{m['bpb']:.5f} BPB** (with the same tokenizer and validation text on "
             f"both sides, the same test as on val_loss with a {m['nats']}-nat margin)."), ""]
    if not r["tests"]:
        out += [("No reference set, so no t-test: set `report.reference` (another runs folder, or a JSON file "
                 "`{\"name\": ..., \"val_bpb\": [...]}`) or `report.reference_bpb`."), ""]
    for t in r["tests"].values():
        p = t["plain"]
        kind = "Welch two-sample t-test" if p["kind"] == "welch" else "one-sample t-test"
        versus = _seeds(p["n_b"]) if p["kind"] == "welch" else "a fixed value"
        out += [f"### vs {t['reference']} ({kind}, {_seeds(p['n_a'])} vs {versus})", ""]
        if p["kind"] == "welch":
            seeds = t.get("reference_seeds") or []
            named = f" (seeds {', '.join(map(str, seeds))})" if len(seeds) == len(t["reference_values"]) else ""
            out += [f"Reference values{named}: {', '.join(fmt(v) for v in t['reference_values'])}.", ""]
        out += ["| H1 | mean A | mean B | t | df | one-sided p | p < alpha |", "|---|---:|---:|---:|---:|---:|---|"]
        for label, tt in (("A < B", p), (f"A < B - {t['margin']['margin']:.5f}", t["margin"])):
            if tt["note"]:
                out.append(f"| {label} | {fmt(tt['mean_a'])} | {fmt(tt['mean_b'])} | - | - | - | {tt['note']} |")
            else:
                verdict = "**yes**" if tt["p"] < r["alpha"] else "no"
                out.append(f"| {label} | {fmt(tt['mean_a'])} | {fmt(tt['mean_b'])} | {tt['t']:.3f} | "
                           f"{tt['df']:.2f} | {fmt(tt['p'], 'p')} | {verdict} |")
        out.append("")
        if not p["note"]:
            out += [_difference_line(p), ""]
    if r["warnings"]:
        out += ["## Warnings", ""] + [f"- {w}" for w in r["warnings"]] + [""]
    out += ["## Plots", "", "![training curves](plots/train_curves.png)", "",
            "![BPB by stage and seed](plots/bpb_by_stage.png)", "",
            "![artifact size by part](plots/size_breakdown.png)", ""]
    g = r["provenance"]["git"]
    dirty = " (uncommitted changes)" if g["dirty"] else ""
    out += [f"Report written by code version {g['commit']}{dirty}, {r['provenance']['created_utc']}.", ""]
    if r.get("result_commits"):  # the code that produced the compared numbers, which may differ per seed
        out += [_commits_line("Compared BPBs produced at", r["result_commits"]), ""]
    for t in r["tests"].values():
        if t.get("reference_commits"):
            out += [_commits_line(f"Reference ({t['reference']}) produced at", t["reference_commits"]), ""]
    return "\n".join(out)


def _difference_line(p: dict) -> str:
    """How large the gap is: A - B with its confidence interval, which side is lower, and the opposite test."""
    d, lo, hi = p["diff"], p["ci_low"], p["ci_high"]
    level = f"{100 * p['ci_level']:.0f}%"
    if d < 0:
        side = "A is lower (better) in these seeds"
    elif d > 0:
        side = "B is lower (better) in these seeds"
    else:
        side = "the means are equal"
    crosses = " The interval includes 0." if lo <= 0 <= hi else ""
    return (f"Difference A - B: **{d:+.5f} BPB**, two-sided {level} confidence interval [{lo:+.5f}, {hi:+.5f}]"
            f" (t with {p['df']:.2f} df); {side}.{crosses} One-sided p of the opposite H1 \"A > B\": "
            f"{fmt(p['p_opposite'], 'p')}.")
