"""Eval-stage speed: plain, sliding-window (stride 64), stateful and score-first TTT eval of a seed-config model
over ~2.5M tokens (vocab 1024, seq 2048). Weights and tokens are random: this times the work, it does not score
anything meaningful. Prints seconds and tokens/s per mode; writes eval_speed.json to $OUT when set.

    python bench/eval_speed.py                                   # configs/hybrid_seed.yaml on cuda
    python bench/eval_speed.py --tokens 20000 --device cpu --config params.yaml   # a smoke run
"""

from __future__ import annotations

import argparse
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


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/hybrid_seed.yaml")
    ap.add_argument("--tokens", type=int, default=2_500_000, help="val tokens to score")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default="plain,sliding,stateful,ttt")
    ap.add_argument("--set", action="append", default=[], help="params override, e.g. eval.batch_seqs=128")
    args = ap.parse_args()
    p = load_params(args.config, args.set)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(p.model, dev).eval()
    with torch.no_grad():  # random non-zero output projections, so every layer does real work
        for q in model.parameters():
            if q.ndim == 2 and q.abs().sum() == 0:
                q.normal_(0.0, 0.02)
    V = p.model.vocab_size
    tables = ByteTables(torch.randint(1, 4, (V,)).to(torch.int16), torch.rand(V) < 0.5, torch.arange(V) < 4)
    toks = torch.randint(0, V, (args.tokens + 1,))
    ec, tc = p.eval, p.ttt
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "config": args.config,
           "tokens": args.tokens, "vocab": V, "seq_len": ec.seq_len, "stride": ec.stride,
           "eval_batch_seqs": ec.batch_seqs, "ttt_config": {"chunk_tokens": tc.chunk_tokens, "seq_len": tc.seq_len,
                                                           "batch_seqs": tc.batch_seqs, "epochs": tc.epochs},
           "kernel_paths": model.kernel_paths}
    runs = {
        "plain": lambda t: eval_bpb(model, t, tables, ec.seq_len, ec.batch_seqs, device=dev),
        "sliding": lambda t: eval_bpb(model, t, tables, ec.seq_len, ec.batch_seqs, stride=ec.stride, device=dev),
        "stateful": lambda t: eval_stateful(model, t, tables, ec.seq_len, ec.batch_seqs, device=dev),
        "ttt": lambda t: ttt_eval(model, t, tables, tc, dev),  # adapts the random model in place: fine here
    }
    warm = toks[: max(ec.seq_len, tc.seq_len) * 2 + 1]
    for name in args.modes.split(","):
        fn = runs[name]
        try:
            fn(warm)  # kernel compilation / autotuning off the clock
            _sync(dev)
            t0 = time.perf_counter()
            out = fn(toks)
            _sync(dev)
            secs = time.perf_counter() - t0
            res[name] = {"s": round(secs, 2), "tok_per_s": round(out["tokens"] / secs), "scored": out["tokens"]}
        except Exception as e:  # noqa: BLE001 - report the failure and time the next mode
            res[name] = {"error": repr(e)}
        print(f"{name:9s} {res[name]}", flush=True)
    if dev.type == "cuda":
        res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "eval_speed.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
