"""eval_sliding: exact BPB of the packaged artifact (never the training checkpoint: what is scored is what
would be submitted). Three numbers over the same val tokens: sliding window (params eval.stride, the headline
val_bpb), plain non-overlapping windows (plain_val_bpb), and stateful SSM eval (stateful_val_bpb; skipped with
a note for an attention-only model or eval.stateful: false). Writes runs/<seed>/metrics/eval_sliding.json and
eval_sliding.provenance.json beside it. Under torchrun the windows are split across ranks; rank 0 writes."""

from __future__ import annotations

from pathlib import Path

from golf import progress, provenance
from golf.config import Params
from golf.evaluate import eval_bpb, eval_stateful, load_eval_inputs
from golf.io import write_json_atomic
from golf.locks import locks_run_folder
from golf.runtime import init_stage_process, leave_distributed
from golf.stage_io import write_metrics


@locks_run_folder
def run(params: Params, seed: int | None, artifact: Path | None = None, metrics_dir: Path | None = None) -> dict:
    """`artifact` (a folder or model file) and `metrics_dir` replace runs/<seed>/artifact and runs/<seed>/metrics."""
    ec = params.eval
    dinfo, device = init_stage_process(ec.device)
    run_dir = params.run_dir(seed) if seed is not None else None  # None: an artifact given by path
    artifact = Path(artifact) if artifact is not None else run_dir / "artifact"
    model, val, tables = load_eval_inputs(artifact, params.data_dir(), device, ec.max_tokens, ec.seq_len)
    with progress.bars(f"eval seed {seed}" if seed is not None else "eval", enabled=dinfo.is_main) as bar:
        tracker = bar.tracker
        sliding = eval_bpb(model, val, tables, ec.seq_len, ec.batch_seqs, stride=ec.stride, device=device,
                           progress=tracker(f"sliding (stride {ec.stride}) windows"))
        plain = eval_bpb(model, val, tables, ec.seq_len, ec.batch_seqs, device=device,
                         progress=tracker("plain windows"))
        metrics = dict(sliding, stride=ec.stride, seq_len=ec.seq_len, plain_val_loss=plain["val_loss"],
                       plain_val_bpb=plain["val_bpb"], plain_eval_s=plain["eval_s"])
        if not ec.stateful:
            metrics["stateful_note"] = "not computed: eval.stateful is false"
        elif not model.supports_state:
            metrics["stateful_note"] = "not computed: attention-only model (no recurrent state to carry)"
        else:
            stateful = tracker("stateful (one pass)")
            st = eval_stateful(model, val, tables, ec.seq_len, ec.batch_seqs, device=device)
            stateful(1, 1)
            metrics.update(stateful_val_loss=st["val_loss"], stateful_val_bpb=st["val_bpb"],
                           stateful_eval_s=st["eval_s"], stateful_segments=st["segments"])
    if dinfo.is_main:  # rank 0 writes and reports
        metrics_dir = Path(metrics_dir) if metrics_dir is not None else run_dir / "metrics"
        write_json_atomic(metrics_dir / "eval_sliding.provenance.json", provenance.collect(
            "eval_sliding", ec, {"seed": seed, "artifact": str(artifact),
                                 "world_size": dinfo.world_size, "kernel_paths": model.kernel_paths,
                                 "device_used": str(device)}))
        write_metrics(metrics_dir, metrics, "eval_sliding.json")
    leave_distributed(dinfo)
    return metrics if dinfo.is_main else {}
