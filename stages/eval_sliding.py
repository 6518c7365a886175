"""eval_sliding: exact BPB of the packaged artifact: plain, sliding-window (stride), and stateful SSM."""

from __future__ import annotations

from golf.config import Params
from golf.eval_common import load_for_eval
from golf.evaluate import eval_bpb, eval_stateful
from golf.stage_io import write_metrics


def run(params: Params, seed: int) -> dict:
    from golf import provenance

    ec = params.eval
    model, val, tables, device = load_for_eval(params, seed, ec.device, ec.max_tokens, ec.seq_len)
    sliding = eval_bpb(model, val, tables, ec.seq_len, ec.batch_seqs, stride=ec.stride, device=device)
    plain = eval_bpb(model, val, tables, ec.seq_len, ec.batch_seqs, stride=None, device=device)
    metrics = dict(sliding, stride=ec.stride, seq_len=ec.seq_len, plain_val_loss=plain["val_loss"],
                   plain_val_bpb=plain["val_bpb"], plain_eval_s=plain["eval_s"])
    if ec.stateful and model.supports_state:
        st = eval_stateful(model, val, tables, ec.seq_len, ec.batch_seqs, device=device)
        metrics.update(stateful_val_loss=st["val_loss"], stateful_val_bpb=st["val_bpb"], stateful_eval_s=st["eval_s"])
    metrics["provenance"] = provenance.collect("eval_sliding", ec, {"seed": seed, "kernel_paths": model.kernel_paths})
    write_metrics(params.run_dir(seed) / "metrics", metrics, "eval_sliding.json")
    return metrics
