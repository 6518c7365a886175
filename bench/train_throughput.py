"""Training throughput of one config on one GPU (issue 7): the real model, optimizers, torch.compile, bf16
autocast and the training loop's own step (golf.train.forward_backward + optimizer_step, EMA included), on
random tokens so that no data preparation is needed. Compare variants with --set, one process each:

    python bench/train_throughput.py configs/baseline_attn.yaml --steps 12 --set model.residual_dtype=fp32

Prints one JSON line and writes it to $OUT/throughput_<label>.json: first step (compile + warm-up) seconds,
steady ms/step and tokens/s over the timed steps, peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params
from golf.evaluate import autocast
from golf.model import build_model, count_params
from golf.optim import build_optimizers
from golf.train import batch_layout, ema_decay_at, forward_backward, optimizer_step, seed_everything


class RandomTokens:
    """Stands in for golf.data.TokenLoader: next_batch() → (x, y), each (micro, seq_len) int64 on `device`."""

    def __init__(self, vocab: int, micro: int, seq_len: int, device: torch.device):
        self.vocab, self.shape, self.device = vocab, (micro, seq_len), device

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.randint(0, self.vocab, (self.shape[0], self.shape[1] + 1), device=self.device)
        return seq[:, :-1], seq[:, 1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=12, help="timed steps after 2 untimed ones")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. train.compile=false")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    params = load_params(args.config, args.sets)
    tcfg = params.train
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(0)
    model = build_model(params.model, device)
    opts = build_optimizers(model, tcfg)
    ema = [p.detach().clone().float() for p in model.parameters()] if tcfg.ema_decay > 0 else []
    micro, accum = batch_layout(tcfg, 1)
    loader = RandomTokens(params.model.vocab_size, micro, tcfg.seq_len, device)
    net = torch.compile(model) if tcfg.compile and device.type == "cuda" else model
    amp = autocast(device, torch.bfloat16 if tcfg.dtype == "bf16" else None)

    def step(i: int) -> float:
        loss = forward_backward(net, model, loader, accum, amp, device).item()  # waits for the device
        optimizer_step(model, opts, tcfg.grad_clip, ema, ema_decay_at(i, tcfg.ema_decay))
        return loss

    t0 = time.perf_counter()
    step(0)
    first_s = time.perf_counter() - t0
    step(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(2 + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / args.steps
    tokens = accum * micro * tcfg.seq_len
    out = {"label": args.label or Path(args.config).stem, "config": args.config, "sets": args.sets,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "kernel_paths": model.kernel_paths, "params": count_params(model), "micro": micro, "accum": accum,
           "tokens_per_step": tokens, "first_step_s": round(first_s, 2), "ms_per_step": round(step_s * 1e3, 2),
           "tok_per_s": round(tokens / step_s), "last_loss": round(loss, 4),
           "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}
    print(json.dumps(out))
    if os.environ.get("OUT"):
        # the device returns only files named with [A-Za-z0-9_.-]: a label's '=' and spaces become '-'
        file_label = re.sub(r"[^A-Za-z0-9_.-]", "-", out["label"])
        Path(os.environ["OUT"], f"throughput_{file_label}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
