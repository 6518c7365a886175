"""The export folder's records-style files, built from a collected report (golf.report.collect):
`submission(report, ...)` is submission.json's content, `submission_readme(...)` the folder's README.md.
Used only by the export stage; the report itself (tables, tests, plots) stays in golf/report.py.
"""

from __future__ import annotations

import math
from typing import Any

from golf import stats
from golf.config import CAP_BYTES, Params
from golf.report import _col, _jsonable, _seeds, fmt

# Field names follow the challenge's records (openai/parameter-golf, records/track_10min_16mb/*/submission.json,
# e.g. 2026-03-19_SlidingWindowEval and 2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT): author,
# github_id, name, blurb, date, track, val_loss, val_bpb, val_bpb_std, pre_quant_val_loss, pre_quant_val_bpb,
# seeds, seed_results {seed: {val_bpb, artifact_bytes, ...}}, wallclock_seconds, eval_time_seconds,
# bytes_total, bytes_code, hardware, pytorch_version, technique_summary, compliance. Ours on top: metric,
# bytes_model, significance, library_versions, git_commit, git_dirty.

TIME_LIMIT_S = 600.0       # the 10-minute track: training and evaluation, each, on 8xH100 SXM


def hardware(train_provenance: dict | None, world_size: int) -> str:
    """'8x NVIDIA H100 80GB HBM3' from a train stage's provenance; 'unknown' without it."""
    dev = (train_provenance or {}).get("device") or {}
    gpus = dev.get("cuda_devices") or []
    if gpus:
        return f"{max(world_size, 1)}x {gpus[0]}"
    return f"CPU ({dev['machine']})" if dev.get("machine") else "unknown"


def _max(vals) -> Any:
    vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(vals) if vals else None


def submission(report: dict, params: Params, train_provenance: dict[int, dict | None], prov: dict) -> dict:
    """submission.json's content from a collected report (see the field list above)."""
    rc, seeds = params.report, report["seeds"]
    col = report["metric_column"]
    rows, losses, timing = report["rows"], report["val_loss"], report["timing"]
    hw = hardware(train_provenance.get(seeds[0]), int(timing[str(seeds[0])].get("world_size") or 1))
    seed_results = {str(s): {"val_bpb": rows[str(s)][col], "val_loss": losses[str(s)][col],
                             "pre_quant_val_bpb": rows[str(s)]["pre_quant_bpb"],
                             "artifact_bytes": int(rows[str(s)]["artifact_bytes"]),
                             "steps": int(rows[str(s)]["steps"]),
                             "wallclock_seconds": timing[str(s)]["train_s"],
                             "eval_time_seconds": timing[str(s)]["eval_s"]} for s in seeds}
    train_s = _max(t["train_s"] for t in timing.values())
    eval_s = _max(t["eval_s"] for t in timing.values())
    total = max(int(r["artifact_bytes"]) for r in rows.values())
    eight_h100 = hw.startswith("8x") and "H100" in hw
    compliance = {"artifact_under_16mb": total <= CAP_BYTES,
                  "train_under_600s": train_s is not None and train_s <= TIME_LIMIT_S,
                  "eval_under_600s": eval_s is not None and eval_s <= TIME_LIMIT_S,
                  "three_seeds": len(seeds) >= 3,
                  "on_8xh100": eight_h100}
    if params.ttt.enabled:
        compliance["score_first_ttt"] = True  # golf.ttt scores each chunk before adapting on it (tested)
    m = params.model
    sub = {
        "author": rc.author, "github_id": rc.github_id,
        "name": rc.name or f"golf {m.layer_pattern} d{m.d_model} int{params.quant.bits} {params.package.compressor}",
        "blurb": rc.blurb or (f"Mamba-2 SSM + GQA attention hybrid (layers {m.layer_pattern}, d_model {m.d_model}), "
                              f"GPTQ int{params.quant.bits} weights, {params.package.compressor} artifact; "
                              f"val_bpb is the {report['metric_label']}, mean of {len(seeds)} seeds."),
        "date": prov["created_utc"][:10],
        "track": "10min_16mb" if all(compliance[k] for k in ("artifact_under_16mb", "train_under_600s",
                                                               "eval_under_600s", "on_8xh100")) else "non_record_16mb",
        "metric": f"{_col(col).source}.{_col(col).field}",
        "val_loss": _mean_loss(losses, col), "val_bpb": report["summary"][col]["mean"],
        "val_bpb_std": report["summary"][col]["std"],
        "pre_quant_val_loss": _mean_loss(losses, "pre_quant_bpb"),
        "pre_quant_val_bpb": report["summary"]["pre_quant_bpb"]["mean"],
        "seeds": seeds, "seed_results": seed_results,
        "wallclock_seconds": train_s, "eval_time_seconds": eval_s,
        "bytes_total": total,
        "bytes_code": max(int(v.get("code", 0)) for v in report["sizes"].values()),
        "bytes_model": max(sum(int(x) for k, x in v.items() if k != "code") for v in report["sizes"].values()),
        "hardware": hw,
        "pytorch_version": prov["versions"].get("torch", "unknown"),
        "technique_summary": (f"Mamba-2 + GQA hybrid {m.layer_pattern}, d_model {m.d_model}, BigramHash "
                              f"{m.bigram_buckets}, Muon + Adam, EMA, late QAT, GPTQ int{params.quant.bits} "
                              f"(embeddings int{params.quant.embed_bits}), {params.package.compressor}, "
                              f"sliding eval stride {params.eval.stride}"
                              + (", score-first TTT" if params.ttt.enabled else "")),
        "compliance": compliance,
        "significance": {name: {"reference": t["reference"], "p_value": t["plain"]["p"],
                                "margin_p_value": t["margin"]["p"], "margin_bpb": report["margin"]["bpb"],
                                "margin_nats": report["margin"]["nats"], "alpha": report["alpha"],
                                "note": t["plain"]["note"] or t["margin"]["note"]}
                         for name, t in report["tests"].items()},
        "library_versions": prov["versions"],
    }
    # The code version that trained the seeds (their train provenance), else the one exporting.
    gits = {str(s): (train_provenance.get(s) or {}).get("git") or prov["git"] for s in seeds}
    first = gits[str(seeds[0])]
    sub["git_commit"], sub["git_dirty"] = first.get("commit", "unknown"), first.get("dirty")
    if len({g.get("commit") for g in gits.values()}) > 1:
        sub["git_commit_by_seed"] = {s: g.get("commit") for s, g in gits.items()}
    sub["export_git_commit"] = prov["git"]["commit"]
    return _jsonable(sub)


def _mean_loss(losses: dict, col: str) -> float:
    return stats.summarize([v[col] for v in losses.values()])["mean"]


def submission_readme(sub: dict, report: dict) -> str:
    std = sub["val_bpb_std"]
    out = [f"# {sub['name']}", "", sub["blurb"], "",
           f"**val_bpb {fmt(sub['val_bpb'])}**" + (f" ± {std:.5f} (sample std)" if std is not None else "")
           + f" over {_seeds(len(sub['seeds']))}; val_bpb is `{sub['metric']}` ({report['metric_label']}). "
           f"Largest artifact: {sub['bytes_total']:,} bytes (code {sub['bytes_code']:,}). "
           f"Hardware: {sub['hardware']}. Track: {sub['track']}"
           + (f" (not met: {', '.join(k for k, v in sub['compliance'].items() if not v)})"
              if sub["track"] != "10min_16mb" else "") + ".", "",
           "## Results per seed", "",
           "| seed | val_bpb | val_loss | pre-quant val_bpb | artifact bytes | steps | train s | eval s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r in sub["seed_results"].items():
        out.append(f"| {s} | {fmt(r['val_bpb'])} | {fmt(r['val_loss'])} | {fmt(r['pre_quant_val_bpb'])} | "
                   f"{r['artifact_bytes']:,} | {r['steps']:,} | {fmt(r['wallclock_seconds'], 's')} | "
                   f"{fmt(r['eval_time_seconds'], 's')} |")
    out.append(f"| **mean** | {fmt(sub['val_bpb'])} | {fmt(sub['val_loss'])} | {fmt(sub['pre_quant_val_bpb'])} "
               f"| {sub['bytes_total']:,} (max) | | | |")
    out.append("")
    for sig in sub["significance"].values():
        if sig["note"]:
            out.append(f"- vs {sig['reference']}: {sig['note']}")
        else:
            out.append(f"- vs {sig['reference']}: one-sided p = {fmt(sig['p_value'], 'p')} (lower BPB); with the "
                       f"{sig['margin_nats']}-nat margin ({sig['margin_bpb']:.5f} BPB) p = "
                       f"{fmt(sig['margin_p_value'], 'p')} (alpha {sig['alpha']})")
    if sub["significance"]:
        out.append("")
    c = sub["compliance"]
    out += ["Checks: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in c.items()) + ".", "",
            "## Contents", "",
            "- `submission.json`: the numbers above, library versions, git commit.",
            "- `report.md`, `report.json`, `summary.json`, `plots/`: the full report (every stage's BPB, tests, plots).",
            "- `params.yaml`: the resolved settings of this run.",
            ("- `logs/<seed>/`: each seed's stage metrics (`train.json` ... `eval_ttt.json`), training curve "
             "(`train_curve.tsv`) and provenance (`train_provenance.json`, `artifact_provenance.json`)."), "",
            "## Reproduce", "",
            "```bash",
            f"git checkout {sub['git_commit']}" + ("   # the run had uncommitted changes" if sub["git_dirty"] else "")
            + ("   # seeds were trained at different commits: see git_commit_by_seed"
               if "git_commit_by_seed" in sub else ""),
            "cp <this folder>/params.yaml params.yaml",
            "python cli.py pipeline          # prepare, every seed's stages, the report (dvc repro when set up)",
            "python cli.py export --out submission",
            "```", "",
            f"Versions: torch {sub['pytorch_version']}; see `submission.json` for the rest.", ""]
    return "\n".join(out)
