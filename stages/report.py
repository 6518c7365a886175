"""report: every seed's metrics -> reports/report.md, report.json, summary.json, plots/*.png, and the DVC
metrics file metrics/summary.json (golf/summary.py).

Reads runs/<seed>/metrics/{train,quantize,package,eval_sliding,eval_ttt}.json and plots/train_curve.tsv for
each of params.seeds, plus params.report.reference (another runs folder or a JSON of per-seed BPBs) and/or
params.report.reference_bpb. See golf/report.py for the table, the tests and the margin conversion.
"""

from __future__ import annotations

from pathlib import Path

from golf import progress
from golf.config import Params
from golf.report import collect, write_report
from golf.summary import write_summary

REPORTS_DIR = Path("reports")


def run(params: Params) -> dict:
    with progress.bars("report") as bar:
        steps = bar.tracker("steps", 3)
        report, curves = collect(params)  # every input is read and checked before anything is written
        steps(1, 3)
        out = write_report(report, curves, REPORTS_DIR)  # tables, Welch tests, plots
        steps(2, 3)
        write_summary(report)  # metrics/summary.json, the file DVC experiments compare
        steps(3, 3)
    return out
