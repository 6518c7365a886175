"""metrics/summary.json: flat, short, means first, null where a seed lacks a value (golf/summary.py)."""

from __future__ import annotations

import json
import math

from golf.summary import FIELDS, summary, write_summary


def _row(bpb: float, tok_s: float, ttt: float = math.nan) -> dict:
    return {"pre_quant_bpb": bpb, "quant_bpb": bpb + 0.01, "sliding_bpb": bpb + 0.005, "stateful_bpb": math.nan,
            "ttt_bpb": ttt, "artifact_bytes": 1000.0, "train_tok_per_s": tok_s, "steps": 120.0}


def test_summary_keys_values_and_order(tmp_path):
    rows = {"1337": _row(2.1234567, 1500.4, 2.0), "42": _row(2.2, 1601.6, 2.1)}
    path = tmp_path / "metrics" / "summary.json"
    out = write_summary({"rows": rows}, path)
    on_disk = json.loads(path.read_text())
    assert on_disk == out
    assert list(on_disk)[:len(FIELDS)] == list(FIELDS)  # means first, in FIELDS order
    assert set(on_disk) == set(FIELDS) | {f"{k}_{s}" for k in FIELDS for s in ("1337", "42")}
    assert out["pre_1337"] == 2.12346 and out["pre"] == round((2.1234567 + 2.2) / 2, 5)
    assert out["quant_42"] == 2.21 and out["ttt"] == 2.05
    assert out["tok_s"] == 1551 and isinstance(out["tok_s"], int) and out["steps_42"] == 120
    assert out["bytes"] == 1000
    assert all(not isinstance(v, (dict, list)) for v in out.values())  # flat: one DVC column per key
    assert max(len(json.dumps(v)) for v in out.values()) <= 8  # narrow columns in `dvc exp show`


def test_a_missing_value_makes_the_mean_null_not_a_partial_mean():
    out = summary({"1": _row(2.0, 10.0, 1.9), "2": _row(2.0, 10.0)})  # seed 2 has no TTT
    assert out["ttt_1"] == 1.9 and out["ttt_2"] is None and out["ttt"] is None
