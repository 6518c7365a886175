"""Training throughput of one config on one GPU: the real model, optimizers, torch.compile, bf16
autocast and the training loop's own step (golf.train.train_step: forward_backward + optimizer_step, EMA
included, each loss read as the loop reads it, one step late with train.host_runahead), on random tokens so
that no data preparation is needed. `--tokens pinned` / `--tokens pageable` feed the step from golf.data's
TokenLoader instead (over a synthetic shard written to a temporary folder), as the training loop does, with
the batches in page-locked or ordinary host memory. Compare variants with --set, one process each:

    python bench/train_throughput.py configs/baseline_attn.yaml --steps 12 --set model.residual_dtype=fp32

Prints one JSON line and writes it to $OUT/throughput_<label>.json: first step (compile + warm-up) seconds,
steady ms/step and tokens/s over the timed steps (after WARMUP_STEPS untimed ones), peak memory, and the SM clock
and power draw nvidia-smi sampled over the timed steps (gpu_clock, golf.gpu_samples: lent machines differ).
`--profile-steps K` then runs K more steps under torch.profiler and adds where the compiled step's device time
goes: milliseconds per step by kernel family (GEMMs, attention, the SSD scan, causal conv, gated norm, inductor's
fused kernels, eager elementwise, optimizer foreach kernels, copies), the top kernels by name, the share of wall
time the device was busy and the host's CUDA runtime calls (golf.profiling; the training loop profiles itself with
train.profile_steps). On a machine without CUDA it reports CPU op times instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.config import load_params
from golf.data import write_shard
from golf.gpu_samples import ClockSamples
from golf.io import write_text_atomic
from golf.loaders import TokenLoader
from golf.model import build_model, count_params
from golf.optim import build_optimizers
from golf.optim_graph import graphed_step_for
from golf.profiling import StepWindowProfiler, compiled_graph_stats
from golf.runtime import autocast, enable_tf32, seed_everything
from golf.train import batch_layout, compile_for_training, compiles, ema_decay_at, loss_read_lag, train_step


class RandomTokens:
    """Stands in for golf.loaders.TokenLoader: next_batch() → (x, y), each (micro, seq_len) int64 on `device`."""

    def __init__(self, vocab: int, micro: int, seq_len: int, device: torch.device):
        self.vocab, self.shape, self.device = vocab, (micro, seq_len), device

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.randint(0, self.vocab, (self.shape[0], self.shape[1] + 1), device=self.device)
        return seq[:, :-1], seq[:, 1:]


class HostBatches:
    """golf.loaders.TokenLoader over one synthetic shard of 8M random tokens in `folder`: the training loop's own
    host-side batch path (memory-mapped windows widened to int64, then forward_backward's host-to-device copy
    from pageable memory), or with `pinned` each batch copied into page-locked memory first, which lets that
    copy be queued without the wait for the stream that a pageable source costs (CUDA runtime docs, "API
    synchronization behavior"). On 2026-11-29 the two stepped alike (RESULTS, seventh block)."""

    def __init__(self, folder: Path, vocab: int, micro: int, seq_len: int, pinned: bool):
        shard = folder / "fineweb_train_000000.bin"
        write_shard(shard, np.random.default_rng(0).integers(0, vocab, 1 << 23).astype(np.uint16))
        self.loader, self.pinned = TokenLoader([shard], seq_len, micro, seed=0), pinned

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.loader.next_batch()  # (B, T), (B, T) int64 in pageable memory
        return (x.pin_memory(), y.pin_memory()) if self.pinned else (x, y)


def profile_steps(step, first_index: int, steps: int, device: torch.device, record_shapes: bool = False,
                  trace_path: str | None = None) -> dict:
    """Run `steps` more training steps under torch.profiler (golf.profiling: device kernels by family, device
    busy share and idle gaps, the host's CUDA runtime calls and the ATen ops' own kernel time on CUDA; CPU ops'
    self time otherwise); record_shapes: train.profile_shapes; trace_path: the window's Chrome trace too."""
    window = StepWindowProfiler(first_index, steps, device, record_shapes=record_shapes, trace_path=trace_path)
    for i in range(steps):
        window.before_step(first_index + i)
        step(first_index + i)
    window.close()  # all its steps launched: waits for the device, then summarizes
    return window.summary


# Steps run before the clock starts. The first compiles; under compile_mode reduce-overhead the second records the
# step's CUDA graphs; with train.optimizer_graph the second runs the optimizer on its capture stream and the third
# captures it (golf.optim_graph). Timing from the fourth keeps every one-off cost out of ms_per_step.
WARMUP_STEPS = 3


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=12, help="timed steps after 2 untimed ones")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="params override, e.g. train.compile=false")
    ap.add_argument("--label", default="")
    ap.add_argument("--profile-steps", type=int, default=0, help="then profile this many more steps (0: none)")
    ap.add_argument("--trace", default="", help="with --profile-steps: write the profiled steps' Chrome trace "
                    "to this file (gzipped when it ends .gz)")
    ap.add_argument("--tokens", choices=("random", "pinned", "pageable"), default="random",
                    help="batches drawn on the device (random), or by TokenLoader in pinned / pageable host memory")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.profile_steps < 0:
        ap.error(f"--steps must be >= 1 and --profile-steps >= 0, got {args.steps} and {args.profile_steps}")
    if args.trace and not args.profile_steps:
        ap.error(f"--trace {args.trace!r} needs --profile-steps >= 1: the trace is of the profiled steps")
    if args.trace and Path(args.trace).exists():
        ap.error(f"--trace {args.trace!r}: the file exists; name a new one")
    if args.tokens == "pinned" and not torch.cuda.is_available():
        ap.error("--tokens pinned needs CUDA (page-locked batches serve host-to-device copies); use pageable")
    params = load_params(args.config, args.sets)
    tcfg = params.train
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        enable_tf32()
    seed_everything(0)
    model = build_model(params.model, device)
    opts = build_optimizers(model, tcfg)
    ema = [p.detach().clone().float() for p in model.parameters()] if tcfg.ema_decay > 0 else []
    graphed = graphed_step_for(model, opts, tcfg, ema, device)  # train.optimizer_graph, as golf.train
    micro, accum = batch_layout(tcfg, 1)
    shard_dir = None if args.tokens == "random" else tempfile.TemporaryDirectory()  # the synthetic shard's
    if shard_dir is None:
        loader = RandomTokens(params.model.vocab_size, micro, tcfg.seq_len, device)
    else:
        loader = HostBatches(Path(shard_dir.name), params.model.vocab_size, micro, tcfg.seq_len,
                             pinned=args.tokens == "pinned")
    net = compile_for_training(model, tcfg, device)
    amp = autocast(device, torch.bfloat16 if tcfg.dtype == "bf16" else None)

    inflight: list = []  # PendingLoss of launched steps, as in golf.train's loop

    def step(i: int) -> float:
        """Launch step i and read the loss the training loop would read now: step i's, or with
        train.host_runahead the one before it (so the host queues step i while the device runs step i-1)."""
        inflight.append(train_step(net, model, loader, accum, amp, device, opts, tcfg.grad_clip, ema,
                                   ema_decay_at(i, tcfg.ema_decay), graphed))
        loss = float("nan")
        while len(inflight) > loss_read_lag(tcfg.host_runahead, first_of_call=i == 0):
            loss = inflight.pop(0).value()
        return loss

    t0 = time.perf_counter()
    step(0)
    first_s = time.perf_counter() - t0
    for i in range(1, WARMUP_STEPS):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with ClockSamples(device) as clock:  # the SM clock the timed steps ran at (golf.gpu_samples says why)
        t0 = time.perf_counter()
        for i in range(args.steps):
            loss = step(WARMUP_STEPS + i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s = (time.perf_counter() - t0) / args.steps
    tokens = accum * micro * tcfg.seq_len
    out = {"label": args.label or Path(args.config).stem, "config": args.config, "sets": args.sets,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "kernel_paths": model.kernel_paths, "params": count_params(model), "micro": micro, "accum": accum,
           "tokens_per_step": tokens, "token_source": args.tokens, "host_runahead": tcfg.host_runahead,
           "optimizer_graph": graphed is not None and graphed.replaying,
           "first_step_s": round(first_s, 2),
           "ms_per_step": round(step_s * 1e3, 2),
           "tok_per_s": round(tokens / step_s), "last_loss": round(loss, 4),
           "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
           "gpu_clock": clock.summary()}
    if compiles(tcfg, device):
        out["compiled_graphs"] = compiled_graph_stats()
    if args.profile_steps:
        out["profile"] = profile_steps(step, WARMUP_STEPS + args.steps, args.profile_steps, device,
                                       tcfg.profile_shapes, trace_path=args.trace or None)
    if shard_dir is not None:
        shard_dir.cleanup()
    print(json.dumps(out))
    if os.environ.get("OUT"):
        # the device returns only files named with [A-Za-z0-9_.-]: a label's '=' and spaces become '-'
        file_label = re.sub(r"[^A-Za-z0-9_.-]", "-", out["label"])
        write_text_atomic(Path(os.environ["OUT"], f"throughput_{file_label}.json"), json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
