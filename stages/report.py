"""report: per-seed table, mean/std, Welch t-test vs a reference → reports/report.md, report.json, PNGs."""

from __future__ import annotations

from pathlib import Path

from golf.config import Params
from golf.report import build_report


def run(params: Params) -> dict:
    return build_report(params, Path("reports"))
