"""eval_ttt: legal score-first test-time training BPB of the packaged artifact (golf/ttt.py): each chunk of
the val stream is scored with the current weights, then adapted on. Also scores the same windows with no
adaptation (no_adapt_val_bpb), so gain_bpb is TTT's effect alone; ttt.score_no_adapt false skips that pass.
Writes runs/<seed>/metrics/eval_ttt.json (+ eval_ttt.provenance.json); with ttt.enabled false it writes
{"enabled": false}. Under torchrun every rank keeps identical weights (gradients all-reduced); rank 0 writes."""

from __future__ import annotations

from pathlib import Path

from golf import progress, provenance
from golf.config import Params
from golf.evaluate import load_eval_inputs
from golf.io import write_json_atomic
from golf.launch import is_main_process
from golf.locks import locks_run_folder
from golf.runtime import init_stage_process, leave_distributed
from golf.stage_io import write_metrics
from golf.ttt import ttt_eval


@locks_run_folder
def run(params: Params, seed: int | None, artifact: Path | None = None, metrics_dir: Path | None = None) -> dict:
    """`artifact` (a folder or model file) and `metrics_dir` replace runs/<seed>/artifact and runs/<seed>/metrics."""
    tc = params.ttt
    run_dir = params.run_dir(seed) if seed is not None else None  # None: an artifact given by path
    artifact = Path(artifact) if artifact is not None else run_dir / "artifact"
    metrics_dir = Path(metrics_dir) if metrics_dir is not None else run_dir / "metrics"
    if not tc.enabled:
        metrics = {"enabled": False, "note": "ttt.enabled is false"}
        if is_main_process():
            write_metrics(metrics_dir, metrics, "eval_ttt.json")
        return metrics
    dinfo, device = init_stage_process(tc.device)
    model, val, tables = load_eval_inputs(artifact, params.data_dir(), device, tc.max_tokens, tc.seq_len,
                                          key="ttt.seq_len")
    with progress.bars(f"ttt seed {seed}" if seed is not None else "ttt", enabled=dinfo.is_main) as bar:
        tracker = bar.tracker
        base = (ttt_eval(model, val, tables, tc, device, adapt=False, progress=tracker("no-adapt chunks"))
                if tc.score_no_adapt else None)
        res = ttt_eval(model, val, tables, tc, device, adapt=True, progress=tracker("score-first TTT chunks"))
    metrics = dict(enabled=True, **res, chunk_tokens=tc.chunk_tokens, seq_len=tc.seq_len,
                   stride=tc.stride or tc.seq_len, params=tc.params, lr=tc.lr, epochs=tc.epochs)
    if base is not None:
        metrics.update(no_adapt_val_loss=base["val_loss"], no_adapt_val_bpb=base["val_bpb"],
                       no_adapt_eval_s=base["eval_s"], gain_bpb=base["val_bpb"] - res["val_bpb"])
    else:
        metrics["no_adapt_note"] = "not scored: ttt.score_no_adapt is false"
    if dinfo.is_main:  # rank 0 writes and reports
        write_json_atomic(metrics_dir / "eval_ttt.provenance.json", provenance.collect(
            "eval_ttt", tc, {"seed": seed, "artifact": str(artifact), "world_size": dinfo.world_size,
                             "kernel_paths": model.kernel_paths, "device_used": str(device)}))
        write_metrics(metrics_dir, metrics, "eval_ttt.json")
    leave_distributed(dinfo)
    return metrics if dinfo.is_main else {}
