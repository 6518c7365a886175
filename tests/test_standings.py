"""bench/standings.py: the standings table is built from the committed result folders and agrees with the
Welch reports that compared the same seeds."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("standings", REPO / "bench" / "standings.py")
standings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(standings)

# each config's Welch report (its `runs` side), built by bench/results_report.py from the same folders
REPORTS = {"hybrid_seed_fit": "2026-11-30_hybrid_seed_fit_vs_attn_fit_ttt",
           "hybrid_12_b131k": "2026-12-02_hybrid_12_b131k_vs_baseline_attn_b131k",
           "hybrid_12_b262k": "2026-11-29_b262k_hybrid_12_vs_baseline_attn",
           "hybrid_12": "2026-11-29_3seed_hybrid_12_vs_baseline_attn",
           "baseline_attn": "2026-11-29_3seed_baseline_attn_vs_anchor"}


@pytest.mark.parametrize("config", sorted(REPORTS))
def test_rows_match_the_welch_reports(config):
    row = standings.group_row(config, standings.GROUPS[config])
    summary = json.loads((standings.RESULTS / REPORTS[config] / "report.json").read_text())["summary"]
    assert row["n"] == 3
    for key in ("artifact_bytes", "steps", *standings.STAGES):
        assert math.isclose(row[key]["mean"], summary[key]["mean"], rel_tol=1e-12), key
        assert math.isclose(row[key]["std"], summary[key]["std"], rel_tol=1e-9), key


def test_table_has_one_row_per_config_best_ttt_first():
    rows = [standings.group_row(n, p) for n, p in standings.GROUPS.items()]
    lines = standings.markdown(rows).splitlines()
    assert len(lines) == 2 + len(standings.GROUPS)
    ttt = [float(line.split("|")[9].split("±")[0]) for line in lines[2:]]
    assert ttt == sorted(ttt)


def _table_after(text: str, header: str) -> list[str]:
    """The markdown table that starts at `header`: its lines up to the first line that is not a table row."""
    lines = text[text.index(header):].splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    return lines[:end]


def test_results_and_readme_tables_are_the_scripts_rows():
    """bench/RESULTS.md opens with the table bench/standings.py prints, and the README's short table (config,
    params, mean artifact bytes, mean TTT BPB) has the same rows in the same order: a row filed in one place and
    not the other fails here."""
    rows = sorted((standings.group_row(n, p) for n, p in standings.GROUPS.items()), key=lambda r: r["ttt_bpb"]["mean"])
    printed = standings.markdown(rows).splitlines()
    results = (REPO / "bench" / "RESULTS.md").read_text()
    assert _table_after(results, printed[0]) == printed
    readme = _table_after((REPO / "README.md").read_text(), "| config | params | artifact bytes (mean) | TTT BPB |")
    expected = [f"| {r['config']} | {r['params']['mean']:,.0f} | {r['artifact_bytes']['mean']:,.0f} | "
                f"{r['ttt_bpb']['mean']:.4f} |" for r in rows]
    assert readme[2:] == expected
