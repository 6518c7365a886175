"""metrics/summary.json: the one small metrics file DVC tracks per pipeline (written by the report stage).

It lives in the git-tracked metrics/ folder (runs/ and reports/ are ignored by git), so every DVC experiment
keeps its own copy and `dvc exp show`, `dvc metrics diff` compare experiments on it. Keys are flat and short,
means first, then each seed:

    pre, quant, slide, ttt   BPB: pre-quantization val (train stage), quantized plain windows, quantized
                             sliding window (eval_sliding), score-first TTT (eval_ttt; null when off)
    bytes                    artifact bytes (compressed model + code)
    steps, tok_s             optimizer steps and training tokens per second
    <key>_<seed>             the same for one seed, e.g. ttt_1337

BPB keeps 5 decimals and the rest are integers, so a value is at most 8 characters wide. Per-layer detail
(quantization error per matrix, size per tensor group, ...) stays in the stages' own files under
runs/<seed>/metrics/ and in reports/report.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from golf.io import write_text_atomic

# summary key -> (column of the report's per-seed rows, decimals; None = integer)
FIELDS = {
    "pre": ("pre_quant_bpb", 5),
    "quant": ("quant_bpb", 5),
    "slide": ("sliding_bpb", 5),
    "ttt": ("ttt_bpb", 5),
    "bytes": ("artifact_bytes", None),
    "steps": ("steps", None),
    "tok_s": ("train_tok_per_s", None),
}
SUMMARY_PATH = Path("metrics") / "summary.json"


def _value(x: float, decimals: int | None) -> float | int | None:
    if x is None or not math.isfinite(x):
        return None  # strict JSON: DVC shows "-"
    return round(x, decimals) if decimals is not None else round(x)


def summary(rows: dict) -> dict:
    """{key: mean over seeds, key_<seed>: that seed's value} from the report's rows {seed: {column: value}}.

    A mean is null when any seed lacks the value (e.g. TTT disabled), never a mean of the rest."""
    if not rows:
        raise ValueError("summary: no seeds")
    out: dict[str, float | int | None] = {}
    for key, (col, decimals) in FIELDS.items():
        vals = [float(r[col]) if r.get(col) is not None else math.nan for r in rows.values()]
        out[key] = _value(math.fsum(vals) / len(vals), decimals)
    for seed, r in rows.items():
        for key, (col, decimals) in FIELDS.items():
            out[f"{key}_{seed}"] = _value(float(r[col]) if r.get(col) is not None else math.nan, decimals)
    return out


def write_summary(report: dict, path: str | Path = SUMMARY_PATH) -> dict:
    """Write the summary of a report (golf.report.collect's dict) to path, atomically; return it."""
    out = summary(report["rows"])
    write_text_atomic(Path(path), json.dumps(out, indent=2) + "\n")  # key order kept: means first
    return out
