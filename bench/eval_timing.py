"""Eval-stage timing on the GPU (bench/RESULTS.md): sliding-window (stride 64) and score-first TTT over
2.5M validation-sized tokens with the seed hybrid at seq 2048. Weights and tokens are random: this times the
work, it does not score anything.   python bench/eval_timing.py [config]"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params
from golf.data import ByteTables
from golf.evaluate import eval_bpb, eval_stateful
from golf.model import build_model
from golf.ttt import ttt_eval


def main() -> None:
    p = load_params(sys.argv[1] if len(sys.argv) > 1 else "configs/hybrid_seed.yaml")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(p.model, dev)
    V = p.model.vocab_size
    tables = ByteTables(torch.randint(1, 4, (V,)).to(torch.int16), torch.rand(V) < 0.5, torch.arange(V) < 4)
    toks = torch.randint(0, V, (2_510_053,))
    res = {"device": torch.cuda.get_device_name(0), "tokens": toks.numel(), "kernel_paths": model.kernel_paths}
    for name, fn in (
        ("plain", lambda: eval_bpb(model, toks, tables, p.eval.seq_len, p.eval.batch_seqs, device=dev)),
        ("sliding", lambda: eval_bpb(model, toks, tables, p.eval.seq_len, p.eval.batch_seqs, stride=p.eval.stride,
                                     device=dev)),
        ("stateful", lambda: eval_stateful(model, toks, tables, p.eval.seq_len, p.eval.batch_seqs, device=dev)),
        ("ttt", lambda: ttt_eval(model, toks, tables, p.ttt, dev)),
    ):
        torch.cuda.synchronize()
        t0 = time.time()
        try:
            fn()
            torch.cuda.synchronize()
            res[f"{name}_s"] = round(time.time() - t0, 2)
        except Exception as e:  # noqa: BLE001 -- report and continue with the next mode
            res[f"{name}_error"] = repr(e)
        print(name, res.get(f"{name}_s", res.get(f"{name}_error")), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "eval_timing.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
