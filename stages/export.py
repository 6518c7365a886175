"""export: a submission folder in the challenge's records format, written as a whole (atomic).

    <out>/README.md          what it is, results per seed, mean, how to reproduce
    <out>/submission.json    records-style fields (golf/submission.py `submission` lists them and the source)
    <out>/report.md, report.json, summary.json, plots/   the same report the report stage writes
    <out>/params.yaml        the resolved settings
    <out>/logs/<seed>/       stage metrics, train_curve.tsv, train and artifact provenance

Reads only runs/<seed>/ (through golf.report.collect, which checks every input first); writes only <out>.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from golf import provenance
from golf.config import Params, to_dict
from golf.io import atomic_dir, check_replaceable, mark_output, write_text_atomic
from golf.report import STAGE_FILES, collect, write_report
from golf.submission import submission, submission_readme


def _provenance(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None  # only used for the hardware name; the copy in logs/ shows it as it is


def run(params: Params, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    check_replaceable(out_dir, "export --out")  # a user's own folder is never replaced; an earlier export may be
    report, curves = collect(params)
    train_prov = {s: _provenance(params.run_dir(s) / "train" / "provenance.json") for s in params.seeds}
    sub = submission(report, params, train_prov, provenance.collect("export", params.report))
    with atomic_dir(out_dir) as tmp:
        mark_output(tmp, "export")
        write_report(report, curves, tmp)
        # key order as in the challenge's records (not sorted)
        write_text_atomic(tmp / "submission.json", json.dumps(sub, indent=2) + "\n")
        write_text_atomic(tmp / "README.md", submission_readme(sub, report))
        write_text_atomic(tmp / "params.yaml", yaml.safe_dump(to_dict(params), sort_keys=False))
        for seed in params.seeds:
            rd, dest = params.run_dir(seed), tmp / "logs" / str(seed)
            dest.mkdir(parents=True)
            copies = [(rd / "metrics" / f"{st}.json", f"{st}.json") for st in (*STAGE_FILES, "hessian")]
            copies += [(rd / "plots" / "train_curve.tsv", "train_curve.tsv"),
                       (rd / "train" / "provenance.json", "train_provenance.json"),
                       (rd / "artifact" / "provenance.json", "artifact_provenance.json")]
            for src, name in copies:
                if src.is_file():
                    shutil.copyfile(src, dest / name)
    return {"out": str(out_dir), "val_bpb": sub["val_bpb"], "val_bpb_std": sub["val_bpb_std"],
            "bytes_total": sub["bytes_total"], "track": sub["track"]}
