"""The training loop: wallclock budget with warmdown, EMA, late QAT, gradient accumulation, DDP under
torchrun, atomic resumable checkpoints, exact pre-quant val BPB at the end.

Schedules run on "progress" in [0, 1]: with a wallclock budget, progress = max(step/max_steps,
elapsed/wallclock_s); with wallclock_s = 0 it is step/max_steps alone, which makes a run bit-for-bit
reproducible on CPU (time-driven schedules cannot be).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from golf.config import Params
from golf.data import TokenLoader, build_byte_tables, list_shards, load_tokens, tokenizer_path
from golf.errors import TrainingError
from golf.evaluate import eval_bpb
from golf.io import atomic_path
from golf.model import build_model, count_params, save_model
from golf.optim import build_optimizers

CKPT_NAME = "checkpoint.pt"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain `python` run is a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return info


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def lr_scale(step: int, progress: float, warmup_steps: int, warmdown_frac: float) -> float:
    """Linear warmup over the first steps, flat, then linear decay to 0 over the last warmdown_frac."""
    scale = 1.0
    if warmup_steps and step < warmup_steps:
        scale = (step + 1) / warmup_steps
    if warmdown_frac > 0 and progress > 1 - warmdown_frac:
        scale = min(scale, max(0.0, (1 - progress) / warmdown_frac))
    return scale


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    qat_started_step: int = -1
    compile_s: float = 0.0
    curve: list = field(default_factory=list)


def _ckpt_save(path: Path, model, ema, opts, loader, state: TrainState) -> None:
    blob = {
        "model": model.state_dict(), "ema": ema, "opts": [o.state_dict() for o in opts],
        "loader": loader.state_dict(), "torch_rng": torch.get_rng_state(),
        "state": {"step": state.step, "elapsed_s": state.elapsed_s, "tokens": state.tokens,
                  "qat_started_step": state.qat_started_step},
        "curve": state.curve,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _ckpt_load(path: Path, model, ema, opts, loader, device) -> TrainState:
    # weights_only: a checkpoint is plain tensors and containers, never arbitrary pickled objects
    blob = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(blob["model"])
    for e, saved in zip(ema, blob["ema"]):
        e.copy_(saved)
    for o, saved in zip(opts, blob["opts"]):
        o.load_state_dict(saved)
    loader.load_state_dict(blob["loader"])
    torch.set_rng_state(blob["torch_rng"].cpu())
    s = blob["state"]
    return TrainState(s["step"], s["elapsed_s"], s["tokens"], s["qat_started_step"], list(blob["curve"]))


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(params: Params, seed: int, out_dir: Path, ckpt_dir: Path, curve_path: Path,
          progress_cb=None, stop_after_steps: int | None = None) -> dict:
    """Train one seed; returns metrics. `stop_after_steps` ends the process-local run early after that
    many steps in this call (with a checkpoint), as an interruption would; used by tests."""
    tcfg, mcfg = params.train, params.model
    device = resolve_device(tcfg.device)
    dinfo = init_distributed(device.type)
    device = resolve_device(tcfg.device, dinfo.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True)
    seed_everything(seed)  # identical init on every rank
    model = build_model(mcfg, device)
    opts = build_optimizers(model, tcfg)
    ema = [p.detach().clone().float() for p in model.parameters()] if tcfg.ema_decay > 0 else []

    micro = tcfg.micro_batch_seqs
    per_micro = tcfg.seq_len * micro * dinfo.world_size
    accum = max(1, tcfg.batch_tokens // per_micro)
    loader = TokenLoader(list_shards(params.data_dir(), "train"), tcfg.seq_len, micro, dinfo.rank,
                         dinfo.world_size, seed=seed)
    ckpt_path = ckpt_dir / CKPT_NAME
    state = TrainState()
    if ckpt_path.is_file():
        state = _ckpt_load(ckpt_path, model, ema, opts, loader, device)
        if state.qat_started_step >= 0:
            model.set_qat(True, tcfg.qat_bits)

    net = model
    if dinfo.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    if tcfg.compile and device.type == "cuda":
        net = torch.compile(net)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and tcfg.dtype == "bf16"
                else contextlib.nullcontext())

    def progress_of(step: int, elapsed: float) -> float:
        p = step / tcfg.max_steps
        if tcfg.wallclock_s > 0:
            p = max(p, elapsed / tcfg.wallclock_s)
        return min(1.0, p)

    steps_this_call = 0
    t_resume = time.time() - state.elapsed_s
    while True:
        elapsed = time.time() - t_resume
        progress = progress_of(state.step, elapsed)
        if state.step >= tcfg.max_steps or (tcfg.wallclock_s > 0 and elapsed >= tcfg.wallclock_s):
            break
        if tcfg.qat_start_frac < 1.0 and progress >= tcfg.qat_start_frac and state.qat_started_step < 0:
            model.set_qat(True, tcfg.qat_bits)
            state.qat_started_step = state.step
        scale = lr_scale(state.step, progress, tcfg.warmup_steps, tcfg.warmdown_frac)
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * scale
        t_step0 = time.time()
        loss_sum = torch.zeros((), device=device)
        for _ in range(accum):
            x, y = loader.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                logits = net(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)) / accum
            loss.backward()
            loss_sum += loss.detach()
        if dinfo.world_size > 1:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        loss_val = loss_sum.item()
        if not math.isfinite(loss_val):
            raise TrainingError(f"non-finite training loss ({loss_val}) at step {state.step + 1}; the last good "
                                f"checkpoint ({ckpt_path}, step {state.step}) is kept. Lower the learning "
                                "rates or check the data.")
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        if ema:
            # Warm the EMA up: a fixed 0.997 over a run of a few hundred steps would keep ~45% of the random
            # initial weights (measured on the H200: pre-quant val BPB 2.14 against a train loss of 2.43
            # nats). The effective decay grows from 0.1 towards ema_decay as (1 + step) / (10 + step).
            decay = min(tcfg.ema_decay, (1 + state.step) / (10 + state.step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in model.parameters()], 1 - decay)
        state.step += 1
        steps_this_call += 1
        if steps_this_call == 1 and net is not model and tcfg.compile:
            # Compilation happens in the first step of a call: keep it off the training budget, as the
            # challenge's script does by warming up before it starts its clock.
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compile_s = time.time() - t_step0
            t_resume += compile_s
            state.compile_s = round(compile_s, 2)
        state.tokens += accum * per_micro
        state.elapsed_s = time.time() - t_resume
        if state.step % tcfg.log_every == 0 or state.step == 1:
            state.curve.append([state.step, state.tokens, round(state.elapsed_s, 3), round(scale, 5),
                                round(loss_val, 5), ""])
        if progress_cb is not None and dinfo.is_main:
            progress_cb(state.step, loss_val, state.tokens / max(state.elapsed_s, 1e-9), progress)
        if tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0 and dinfo.is_main:
            _ckpt_save(ckpt_path, model, ema, opts, loader, state)
        if stop_after_steps is not None and steps_this_call >= stop_after_steps:
            if dinfo.is_main:
                _ckpt_save(ckpt_path, model, ema, opts, loader, state)
            return {"interrupted_at_step": state.step}

    if dinfo.is_main:
        _ckpt_save(ckpt_path, model, ema, opts, loader, state)
    train_s = state.elapsed_s
    # the saved (and scored) weights are the EMA weights
    if ema:
        with torch.no_grad():
            for p, e in zip(model.parameters(), ema):
                p.copy_(e.to(p.dtype))
    model.set_qat(False)
    val_tokens = load_tokens(list_shards(params.data_dir(), "val"), tcfg.val_tokens)
    tables = build_byte_tables(tokenizer_path(params.data_dir()), mcfg.vocab_size)
    val = eval_bpb(model, val_tokens, tables, min(tcfg.seq_len, val_tokens.numel() - 1), micro, device=device)
    if state.curve:
        state.curve[-1][-1] = round(val["val_bpb"], 6)
    metrics = {
        "steps": state.step, "tokens": state.tokens, "train_s": round(train_s, 3),
        "tok_per_s": round(state.tokens / max(train_s, 1e-9), 1), "val_loss": val["val_loss"],
        "val_bpb": val["val_bpb"], "val_tokens": val["tokens"], "peak_mem_mb": round(_peak_mem_mb(device), 1),
        "kernel_paths": model.kernel_paths, "qat_started_step": state.qat_started_step,
        "params": count_params(model), "compile_s": state.compile_s, "world_size": dinfo.world_size, "grad_accum": accum,
    }
    if dinfo.is_main:
        save_model(model, mcfg, out_dir)
        _write_curve(curve_path, state.curve)
    return metrics


def _write_curve(path: Path, curve: list) -> None:
    from golf.io import write_text_atomic

    lines = ["step\ttokens\ttrain_s\tlr_scale\ttrain_loss\tval_bpb"]
    lines += ["\t".join(str(v) for v in row) for row in curve]
    write_text_atomic(path, "\n".join(lines) + "\n")
