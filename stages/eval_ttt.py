"""eval_ttt: legal score-first test-time training BPB of the packaged artifact."""

from __future__ import annotations

from golf.config import Params
from golf.eval_common import load_for_eval
from golf.stage_io import write_metrics
from golf.ttt import ttt_eval


def run(params: Params, seed: int) -> dict:
    from golf import provenance

    tc = params.ttt
    metrics: dict = {"enabled": tc.enabled}
    if tc.enabled:
        model, val, tables, device = load_for_eval(params, seed, tc.device, tc.max_tokens, tc.seq_len)
        base = ttt_eval(model, val, tables, tc, device, adapt=False)
        metrics.update(ttt_eval(model, val, tables, tc, device, adapt=True))
        metrics.update(no_adapt_val_loss=base["val_loss"], no_adapt_val_bpb=base["val_bpb"],
                       gain_bpb=base["val_bpb"] - metrics["val_bpb"])
        metrics["provenance"] = provenance.collect("eval_ttt", tc, {"seed": seed})
    write_metrics(params.run_dir(seed) / "metrics", metrics, "eval_ttt.json")
    return metrics
