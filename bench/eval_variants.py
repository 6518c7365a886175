"""Score one packaged artifact under several eval settings, timing each (bench/RESULTS.md; GPU, not CI).

Loads the model from ARTIFACT_DIR exactly as the eval stages do (golf.evaluate.load_eval_inputs) and the val
shard of DATA_DIR, then runs the variants below in order. Sliding variants differ in (seq_len, stride,
batch_seqs); TTT variants in their TTT settings and always start from a fresh copy of the artifact's model.
The first variant warms the kernels (Triton JIT/autotune) on a 64-window slice before any timing.

    python bench/eval_variants.py runs/1337/artifact data/sp1024      # JSON to $OUT/eval_variants.json
    MAX_TOKENS=9000 python bench/eval_variants.py ...                 # CPU dry run on a val prefix
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import TTTConfig
from golf.evaluate import eval_bpb, eval_stateful, load_eval_inputs
from golf.ttt import ttt_eval

# (seq_len, stride, batch_seqs)
SLIDING = [(2048, 2048, 64), (2048, 64, 64), (2048, 128, 64), (2048, 256, 64), (1024, 64, 64)]
STATEFUL = [(2048, 64), (1024, 64)]  # (seq_len, segments)
TTT = [{}, {"lr": 0.005}, {"lr": 0.01}, {"stride": 256}, {"lr": 0.005, "stride": 256},
       {"params": "norms", "lr": 0.01}]


def main() -> None:
    artifact, data = sys.argv[1], sys.argv[2]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    max_tokens = int(os.environ.get("MAX_TOKENS", "0"))  # 0 = the whole val set; a cap for a CPU dry run
    model, val, tables = load_eval_inputs(artifact, data, dev, max_tokens, 2048)
    device_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    out: dict = {"artifact": artifact, "val_tokens": int(val.numel()), "device": device_name,
                 "torch": torch.__version__, "kernel_paths": model.kernel_paths, "results": []}
    eval_bpb(model, val[:64 * 2048 + 1], tables, 2048, 64)  # warm-up, not recorded

    def record(kind: str, settings: dict, res: dict) -> None:
        row = {"kind": kind, **settings, "val_bpb": res["val_bpb"], "val_loss": res["val_loss"],
               "eval_s": res["eval_s"], "tokens": res["tokens"]}
        out["results"].append(row)
        print(json.dumps(row), flush=True)

    for seq, stride, bs in SLIDING:
        record("sliding", {"seq_len": seq, "stride": stride, "batch_seqs": bs},
               eval_bpb(model, val, tables, seq, bs, stride=stride))
    for seq, segs in STATEFUL:
        record("stateful", {"seq_len": seq, "segments": segs}, eval_stateful(model, val, tables, seq, segs))
    for change in TTT:
        cfg = dataclasses.replace(TTTConfig(), **change)
        fresh = copy.deepcopy(model)
        res = ttt_eval(fresh, val, tables, cfg, dev)
        record("ttt", dataclasses.asdict(cfg), res)
        del fresh
        torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "eval_variants.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
