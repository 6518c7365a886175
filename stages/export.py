"""export: a submission folder in the challenge's records format (README.md, submission.json, logs/)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from golf import provenance
from golf.config import Params, to_dict
from golf.io import atomic_dir, write_json_atomic, write_text_atomic
from golf.report import build_report


def run(params: Params, out_dir: Path) -> dict:
    summary = build_report(params, Path("reports"))
    report = json.loads(Path("reports/report.json").read_text())
    rows = report["rows"]
    metric = report["metric"]
    per_seed = {str(s): rows[str(s)][metric] if str(s) in rows else rows[s][metric] for s in params.seeds}
    prov = provenance.collect("export")
    sub = {
        "name": f"golf {params.model.layer_pattern} d{params.model.d_model}",
        "date": dt.date.today().isoformat(),
        "val_bpb": summary[f"{metric}_mean"],
        "val_bpb_metric": metric,
        "seeds": params.seeds,
        "per_seed_val_bpb": per_seed,
        "bytes_total": max(int(r["artifact_bytes"]) for r in rows.values()),
        "hardware": prov["device"],
        "versions": prov["versions"],
        "git": prov["git"],
    }
    with atomic_dir(out_dir) as tmp:
        write_json_atomic(tmp / "submission.json", sub)
        shutil.copyfile("reports/report.md", tmp / "report.md")
        for seed in params.seeds:
            rd = params.run_dir(seed)
            dest = tmp / "logs" / str(seed)
            dest.mkdir(parents=True)
            for f in list((rd / "metrics").glob("*.json")) + list((rd / "plots").glob("*.tsv")) + \
                    [rd / "train" / "provenance.json"]:
                if f.is_file():
                    shutil.copyfile(f, dest / f.name)
        write_json_atomic(tmp / "params.json", to_dict(params))
        write_text_atomic(tmp / "README.md", "\n".join([
            f"# {sub['name']}", "",
            "A Mamba-2 + GQA attention hybrid trained, GPTQ-quantized and LZMA-packaged with golf.", "",
            f"- val_bpb ({metric}, mean of {len(params.seeds)} seeds): {sub['val_bpb']:.5f}",
            f"- per seed: {', '.join(f'{s}: {v:.5f}' for s, v in per_seed.items())}",
            f"- artifact bytes (max over seeds): {sub['bytes_total']:,}",
            f"- code version: {prov['git']['commit']}", "",
            "Reproduce: `python cli.py pipeline` with params.json's settings as params.yaml.",
            "Per-seed metrics, training curves and provenance are in logs/.", ""]))
    return {"out": str(out_dir), "val_bpb": sub["val_bpb"], "bytes_total": sub["bytes_total"]}
