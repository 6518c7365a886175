"""The standings table at the top of bench/RESULTS.md, rebuilt from the per-seed result folders in results/.

    python bench/standings.py            # prints the markdown table

One row per configuration: the seeds that its Welch report (results/*_vs_*/) compared, each a folder written
by save_run.py. Every number is a mean ± sample std over those seeds (n says how many): params, artifact bytes,
training tok/s and steps from train.json / package.json, and the BPB of each stage as golf.report's columns
define it (pre-quant: train.json val_bpb; quantized: eval_sliding.json plain_val_bpb; sliding:
eval_sliding.json val_bpb; TTT: eval_ttt.json val_bpb). Date and commit come from the folder names.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.report import COLUMNS
from golf.stats import summarize

RESULTS = Path(__file__).resolve().parent / "results"

# configuration -> its seeds' result folders, as in the Welch report that compared it (RESULTS.md below the
# table gives each report's command). A seed run under an override that a config later adopted counts for it.
GROUPS: dict[str, list[str]] = {
    "hybrid_mlp_tuned_fit": ["2026-12-01_c22ff87d_hybrid_mlp_tuned_fit_240s_seed*"],
    "attn_tuned_fit": ["2026-12-01_c22ff87d_attn_tuned_fit_240s_seed*"],
    "attn_fit": ["2026-11-30_cb2d9b3d_attn_fit_240s_seed*"],
    "hybrid_seed_fit": ["2026-11-30_cb2d9b3d_hybrid_seed_fit_240s_seed*"],
    "hybrid_12_b131k": ["2026-12-02_c7c417a9_hybrid_12_b131k_240s_seed*"],
    "baseline_attn_b131k": ["2026-11-29_cc917d2e_baseline_attn_b262k__train.batch_tokens=131072_240s_seed1337",
                            "2026-11-29_c2ba2c39_baseline_attn_b131k_240s_seed*"],
    "hybrid_12_b262k": ["2026-11-29_c*_hybrid_12_b262k_240s_seed*"],
    "baseline_attn_b262k": ["2026-11-29_c*_baseline_attn_b262k_240s_seed*"],
    "hybrid_12": ["2026-11-29_c*_hybrid_12_240s_seed*"],
    "baseline_attn": ["2026-11-29_c*_baseline_attn_240s_seed*"],
}
STAGES = ("pre_quant_bpb", "quant_bpb", "sliding_bpb", "ttt_bpb")


def folders(patterns: list[str]) -> list[Path]:
    out = sorted({Path(p) for pat in patterns for p in glob.glob(str(RESULTS / pat))})
    if not out:
        raise SystemExit(f"no result folder matches {patterns}")
    return out


def seed_values(folder: Path) -> dict[str, float]:
    """One seed's numbers: golf.report's columns plus the parameter count."""
    files = {stage: json.loads((folder / f"{stage}.json").read_text())
             for stage in ("train", "package", "eval_sliding", "eval_ttt")}
    out = {c.key: files[c.source].get(c.field) for c in COLUMNS if c.source in files}
    out["params"] = files["train"]["params"]
    return out


def group_row(name: str, patterns: list[str]) -> dict:
    found = folders(patterns)
    seeds = [seed_values(f) for f in found]
    row = {"config": name, "n": len(seeds)}
    for key in ("params", "artifact_bytes", "train_tok_per_s", "steps", *STAGES):
        row[key] = summarize([s[key] for s in seeds])
    names = [f.name for f in found]
    row["dates"] = sorted({n[:10] for n in names})
    row["commits"] = sorted({m.group(1) for n in names if (m := re.search(r"_c([0-9a-f]{7,8})[_+]", n))})
    return row


def _pm(s: dict, digits: int) -> str:
    if s["n"] == 0:
        return "—"
    std = "" if s["std"] is None or s["n"] < 2 else f" ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{std}"


def _count(s: dict) -> str:
    std = "" if s["std"] is None or s["n"] < 2 else f" ± {s['std']:,.0f}"
    return f"{s['mean']:,.0f}{std}"


def markdown(rows: list[dict]) -> str:
    out = [("| config | params | artifact bytes | train tok/s | steps | pre-quant BPB | quantized BPB | sliding BPB "
            "| TTT BPB | n | date | commit |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in sorted(rows, key=lambda r: r["ttt_bpb"]["mean"]):
        out.append(f"| {r['config']} | {r['params']['mean']:,.0f} | {_count(r['artifact_bytes'])} | "
                   f"{_count(r['train_tok_per_s'])} | {_count(r['steps'])} | "
                   + " | ".join(_pm(r[k], 4) for k in STAGES)
                   + f" | {r['n']} | {', '.join(r['dates'])} | {', '.join(r['commits'])} |")
    return "\n".join(out) + "\n"


def main() -> None:
    print(markdown([group_row(name, pats) for name, pats in GROUPS.items()]), end="")


if __name__ == "__main__":
    main()
