"""The training loop: wallclock budget with warmup/warmdown, EMA of weights, late QAT, gradient accumulation,
DDP under torchrun, atomic resumable checkpoints, exact pre-quant val BPB at the end.

Schedules run on the budget "progress" p in [0, 1]:
  * wallclock_s > 0: p = max(step / max_steps, elapsed / wallclock_s), elapsed measured by rank 0 and
    shared with every rank (so all ranks stop on the same step); warmdown and QAT follow elapsed time.
  * wallclock_s = 0: p = step / max_steps alone. This step-only schedule is what makes a run bit-for-bit
    reproducible on CPU (same seed → same weights, interrupted + resumed = uninterrupted); a time-driven
    schedule cannot be, since no two runs see the same clock.
Time that is not training is kept off the budget: the first step of every call (torch.compile, lazy
kernel and allocator initialisation: 3-5 s on CPU, minutes when compiling), checkpoint writes and the
profiler's own start and summary (train.profile_steps). The
challenge's script likewise runs warmup steps before starting its clock and stops it for validation.

With train.host_runahead (the default) the loop launches step k+1 before it reads step k's loss (PendingLoss),
so the host's kernel launches for the optimizer and the next forward overlap the device's work instead of
leaving it idle (bench/RESULTS.md, sixth block: 24-29 ms of idle device per hybrid step on one lent H200).
Budget decisions count the step still in flight at the last step's duration; a non-finite loss stops the run
one step later; every checkpoint, SIGTERM stop and the end of training first read all launched steps. Under
DDP the per-step all-reduce of loss and clock waits for the device, so ranks do not run ahead.

Checkpoints (runs/<seed>/ckpt/checkpoint.pt, written atomically every `checkpoint_every` steps, at the end,
and on SIGTERM) hold the model, EMA, optimizer and loader states, every RNG state, the step, the elapsed
budget and the curve, plus a fingerprint of everything that determines the run (seed, model and training
settings, world size, data). A rerun resumes from a checkpoint whose fingerprint matches and starts fresh,
with a warning naming what changed, from one that does not (e.g. after a params change under DVC, whose
`persist: true` keeps the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import random
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.profiler import record_function

from golf.config import ConfigError, Params, to_dict
from golf.data import TokenLoader, build_byte_tables, list_shards, load_tokens, tokenizer_path
from golf.errors import TrainingError
from golf.evaluate import autocast, eval_bpb
from golf.io import atomic_path, write_text_atomic
from golf.model import build_model, count_params, save_model
from golf.optim import Muon, build_optimizers
from golf.profiling import StepWindowProfiler
from golf.progress import note as progress_note

log = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
CKPT_FORMAT = 2
CURVE_HEADER = ("step", "tokens", "train_s", "lr_scale", "train_loss", "val_bpb")
# train settings that do not change the trajectory: a checkpoint stays resumable when only these differ
RESUME_FREE_KEYS = ("log_every", "checkpoint_every", "val_tokens", "compile", "device", "host_runahead",
                    "profile_steps", "profile_first_step")


# what torch.load of a damaged or foreign file raises
_UNREADABLE = (RuntimeError, OSError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError)


class TrainingInterrupted(TrainingError):
    """SIGTERM during training: a checkpoint was written; rerunning the same command resumes."""


# --------------------------------------------------------------------------------------------------
# Devices, processes, seeds
# --------------------------------------------------------------------------------------------------


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
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return info


def leave_distributed(info: DistInfo) -> None:
    """End a torchrun stage together: every rank waits here until all have arrived (so rank 0 has written its
    outputs), then the process group goes. Without the barrier a gloo rank could hang at exit once its peer
    had left (seen about one run in three on CPU). A no-op for a single process."""
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def init_stage_process(device_spec: str) -> tuple[DistInfo, torch.device]:
    """A stage's process setup: join torchrun's process group when launched under it, pick this rank's device
    from the config's device spec, and make it the current CUDA device (NCCL all-reduces run on it)."""
    dinfo = init_distributed(resolve_device(device_spec).type)
    device = resolve_device(device_spec, dinfo.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return dinfo, device


def enable_tf32() -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA, as training runs (bf16 autocast covers the rest); the
    bench scripts call it too, so that they time and compare what training runs."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_states(device: torch.device) -> dict:
    """Python, numpy, torch (and CUDA) RNG states as plain containers + tensors (loadable weights_only)."""
    py = random.getstate()
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    out = {"python": [py[0], list(py[1]), py[2]],
           "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_gauss), float(np_cached)],
           "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(states: dict, device: torch.device) -> None:
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, gauss, cached))
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


# --------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------


def budget_progress(step: int, elapsed_s: float, max_steps: int, wallclock_s: float) -> float:
    """Share of the budget used, in [0, 1]: the larger of the step and the time share (time only when a
    wallclock budget is set, see the module doc)."""
    p = step / max_steps
    if wallclock_s > 0:
        p = max(p, elapsed_s / wallclock_s)
    return min(1.0, p)


def lr_scale(step: int, progress: float, warmup_steps: int, warmdown_frac: float) -> float:
    """Linear warmup over the first steps, flat, then linear decay to 0 over the last warmdown_frac."""
    scale = 1.0
    if warmup_steps and step < warmup_steps:
        scale = (step + 1) / warmup_steps
    if warmdown_frac > 0 and progress > 1 - warmdown_frac:
        scale = min(scale, max(0.0, (1 - progress) / warmdown_frac))
    return scale


def muon_momentum_at(step: int, momentum: float, warmup_steps: int, warmup_start: float) -> float:
    """Muon momentum at `step`: linear from warmup_start to momentum over warmup_steps, then constant. The
    challenge's train_gpt.py ramps 0.85 → 0.95 over 500 steps (openai/parameter-golf, Hyperparameters
    muon_momentum_warmup_*); 0 steps keeps the momentum constant."""
    if warmup_steps <= 0:
        return momentum
    frac = min(step / warmup_steps, 1.0)
    return (1 - frac) * warmup_start + frac * momentum


def ema_decay_at(step: int, ema_decay: float) -> float:
    """EMA decay warmed up as (1 + step) / (10 + step), capped at ema_decay. A fixed 0.997 over a run of
    a few hundred steps would keep ~45% of the random init (measured on the H200: pre-quant val BPB 2.14
    against a train loss of 2.43 nats)."""
    return min(ema_decay, (1 + step) / (10 + step))


def batch_layout(tcfg, world_size: int) -> tuple[int, int]:
    """(sequences per forward pass, accumulation steps) so that every optimizer step sees exactly
    batch_tokens tokens over all ranks. micro_batch_seqs is an upper bound (a memory cap): the loop uses
    the largest divisor of the per-rank batch that does not exceed it."""
    per_rank_tokens = tcfg.seq_len * world_size
    if tcfg.batch_tokens % per_rank_tokens:
        raise ConfigError(f"'train.batch_tokens' ({tcfg.batch_tokens}) must be a multiple of train.seq_len x "
                          f"ranks = {tcfg.seq_len} x {world_size} = {per_rank_tokens}")
    seqs = tcfg.batch_tokens // per_rank_tokens  # sequences per rank per optimizer step
    micro = max(d for d in range(1, min(seqs, tcfg.micro_batch_seqs) + 1) if seqs % d == 0)
    return micro, seqs // micro


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0
    qat_started_step: int = -1
    warmup_s: float = 0.0
    ckpt_s: float = 0.0
    resumed_from_step: int = -1
    curve: list = field(default_factory=list)


def _file_digest(path: Path, edge: int = 1 << 20) -> str:
    """Size + first and last MiB of a file: catches a different shard or tokenizer without reading GBs."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(edge))
        if size > edge:
            f.seek(max(edge, size - edge))
            h.update(f.read(edge))
    return h.hexdigest()[:16]


def run_fingerprint(params: Params, seed: int, world_size: int, micro: int, accum: int,
                    data_files: list[Path]) -> dict:
    """Everything that determines the training trajectory (JSON-able; stored in the checkpoint)."""
    train = {k: v for k, v in to_dict(params.train).items() if k not in RESUME_FREE_KEYS}
    return {"format": CKPT_FORMAT, "seed": seed, "world_size": world_size, "micro_batch_seqs": micro,
            "grad_accum": accum, "model": to_dict(params.model), "train": train,
            "data": {p.name: _file_digest(p) for p in data_files}}


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def save_checkpoint(path: Path, model, ema, opts, loader, state: TrainState, fingerprint: dict,
                    device: torch.device) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint in place."""
    blob = {
        "fingerprint": fingerprint,
        "model": model.state_dict(), "ema": ema, "opts": [o.state_dict() for o in opts],
        # every rank draws the same window starts from the same generator (see TokenLoader), so rank 0's
        # loader state is every rank's
        "loader": loader.state_dict(), "rng": rng_states(device),
        "state": {"step": state.step, "elapsed_s": state.elapsed_s, "tokens": state.tokens,
                  "qat_started_step": state.qat_started_step, "warmup_s": state.warmup_s,
                  "ckpt_s": state.ckpt_s},
        "curve": state.curve,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: Path, model, ema, opts, loader, fingerprint: dict,
                    device: torch.device) -> TrainState | None:
    """Restore everything from `path`; None (nothing restored) when its fingerprint differs."""
    try:
        # weights_only: a checkpoint is plain tensors and containers, never arbitrary pickled objects
        blob = torch.load(path, map_location=device, weights_only=True)
        saved_fp = blob.get("fingerprint", {}) if isinstance(blob, dict) else None  # {}: an older format
        if saved_fp is None:
            raise TypeError("not a checkpoint mapping")
    except _UNREADABLE as e:
        reason = (str(e).strip().splitlines() or [""])[0][:160]  # torch's unpickling errors run for lines
        raise TrainingError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {reason}); delete "
                            "it to start this seed over") from None
    if saved_fp != fingerprint:
        changes = _diff(saved_fp, fingerprint)
        log.warning("checkpoint %s is from a different run (%s); starting over", path, "; ".join(changes[:8]))
        return None
    model.load_state_dict(blob["model"])
    for e, saved in zip(ema, blob["ema"]):
        e.copy_(saved)
    for o, saved in zip(opts, blob["opts"]):
        o.load_state_dict(saved)
    loader.load_state_dict(blob["loader"])
    set_rng_states(blob["rng"], device)
    s = blob["state"]
    return TrainState(step=s["step"], elapsed_s=s["elapsed_s"], tokens=s["tokens"],
                      qat_started_step=s["qat_started_step"], warmup_s=s["warmup_s"], ckpt_s=s["ckpt_s"],
                      resumed_from_step=s["step"], curve=[list(r) for r in blob["curve"]])


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@contextlib.contextmanager
def _sigterm_flag():
    """While training, SIGTERM (a scheduler's preemption, `kill`) only sets a flag: the loop finishes its
    step, writes a checkpoint and stops. Only the main thread can own a signal handler."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def train(params: Params, seed: int, out_dir: Path, ckpt_dir: Path, curve_path: Path,
          progress_cb: Callable | None = None, stop_after_steps: int | None = None,
          clock: Callable[[], float] = time.monotonic) -> dict:
    """Train one seed; write the EMA weights to out_dir (rank 0) and return the metrics.

    progress_cb(step, loss, tok_per_s, progress) is called on rank 0 after every step. `stop_after_steps`
    ends this call after that many steps with a checkpoint, as an interruption would (tests); `clock` is
    the budget clock (tests pass a fake one)."""
    tcfg = params.train
    dinfo, device = init_stage_process(tcfg.device)
    det_before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        enable_tf32()
    else:
        torch.use_deterministic_algorithms(True)
    try:
        return _train(params, seed, out_dir, ckpt_dir, curve_path, progress_cb, stop_after_steps, clock,
                      dinfo, device)
    finally:
        torch.use_deterministic_algorithms(det_before)


def _train(params, seed, out_dir, ckpt_dir, curve_path, progress_cb, stop_after_steps, clock, dinfo, device):
    tcfg, mcfg = params.train, params.model
    micro, accum = batch_layout(tcfg, dinfo.world_size)
    seed_everything(seed)  # identical init on every rank
    model = build_model(mcfg, device)
    opts = build_optimizers(model, tcfg)
    ema = [p.detach().clone().float() for p in model.parameters()] if tcfg.ema_decay > 0 else []

    train_files = list_shards(params.data_dir(), "train")  # never the val shards
    loader = TokenLoader(train_files, tcfg.seq_len, micro, dinfo.rank, dinfo.world_size, seed=seed)
    fingerprint = run_fingerprint(params, seed, dinfo.world_size, micro, accum,
                                  train_files + [tokenizer_path(params.data_dir())])
    ckpt_path = ckpt_dir / CKPT_NAME
    state = TrainState()
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, model, ema, opts, loader, fingerprint, device) or TrainState()
    if state.qat_started_step >= 0:
        model.set_qat(True, tcfg.qat_bits)

    def checkpoint() -> None:
        """Rank 0 writes; the write time is kept off the budget (t_start moves forward by it)."""
        nonlocal t_start, saved_step
        if saved_step == state.step:
            return
        # A finite loss does not prove the update that followed it was finite: never replace the last good
        # checkpoint with broken weights (checked on every rank, which hold the same weights, so all stop).
        norms = torch.stack([torch.linalg.vector_norm(p.detach().float()) for p in model.parameters()])
        if not bool(torch.isfinite(norms).all()):
            raise TrainingError(f"non-finite weights after step {state.step}; the last good checkpoint ({ckpt_path}, "
                                f"step {_ckpt_step(ckpt_path)}) is kept. Lower the learning rates (train.lr_*).")
        if not dinfo.is_main:
            return
        t0 = clock()
        save_checkpoint(ckpt_path, model, ema, opts, loader, state, fingerprint, device)
        dt = clock() - t0
        t_start += dt
        state.ckpt_s += dt
        saved_step = state.step

    net = model
    if dinfo.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    net = compile_for_training(net, tcfg, device)
    amp = autocast(device, torch.bfloat16 if tcfg.dtype == "bf16" else None)
    tokens_per_step = accum * micro * tcfg.seq_len * dinfo.world_size

    steps_this_call = 0
    saved_step = state.step if state.resumed_from_step >= 0 else -1  # the checkpoint on disk is this state
    t_start = clock() - state.elapsed_s  # the budget clock's origin: elapsed time survives a resume
    elapsed = state.elapsed_s  # rank 0's, shared by every rank: when the last read step's loss was ready
    inflight: list[LaunchedStep] = []  # launched, loss not yet read; oldest first
    step_s = 0.0  # duration of the last step read in steady state: the estimate for each step still in flight

    def read_oldest(steady: bool) -> bool:
        """Read the oldest in-flight step's loss (waits for that step's backward only), advance the budget
        clock, log it; True when a rank asked to stop."""
        nonlocal t_start, elapsed, step_s
        done = inflight.pop(0)
        with record_function("golf/read_loss"):  # the host waiting for that step's backward
            loss_local = done.loss.value()
        now = clock()
        if done.t_first is not None:  # a call's first step compiles and warms up: keep it off the budget
            state.warmup_s = round(state.warmup_s + now - done.t_first, 3)
            t_start += now - done.t_first
        loss_val, new_elapsed, stop_req = _sync_step(loss_local, now - t_start, sigterm["set"], dinfo, device)
        if not math.isfinite(loss_val):
            raise TrainingError(
                f"non-finite training loss ({loss_val}) at step {done.step}; the last good checkpoint "
                f"({ckpt_path}, step {_ckpt_step(ckpt_path)}) is kept. Lower the learning rates "
                "(train.lr_*) or check the data.")
        if steady:
            step_s = max(0.0, new_elapsed - elapsed)
        elapsed = state.elapsed_s = new_elapsed
        if done.step % tcfg.log_every == 0 or done.step == 1:
            state.curve.append([done.step, done.tokens, round(elapsed, 3), round(done.lr_scale, 6),
                                round(loss_val, 6), ""])
        if progress_cb is not None and dinfo.is_main:
            progress_cb(done.step, loss_val, done.tokens / max(elapsed, 1e-9),
                        budget_progress(done.step, elapsed, tcfg.max_steps, tcfg.wallclock_s))
        return stop_req

    def interrupted() -> TrainingInterrupted:
        return TrainingInterrupted(f"training interrupted by SIGTERM after step {state.step}; checkpoint "
                                   f"{ckpt_path} written, rerun the same command to resume")

    def drain() -> bool:
        stop_req = False
        while inflight:
            stop_req |= read_oldest(steady=False)
        return stop_req

    # train.profile_steps: torch.profiler over a window of the loop's own steps (rank 0), summary in the metrics
    window = StepWindowProfiler(tcfg.profile_first_step, tcfg.profile_steps if dinfo.is_main else 0, device,
                                clock=clock)
    with _sigterm_flag() as sigterm, contextlib.closing(window):
        while True:
            budget_elapsed = elapsed + len(inflight) * step_s  # when the steps in flight should be done
            if state.step >= tcfg.max_steps or (tcfg.wallclock_s > 0 and budget_elapsed >= tcfg.wallclock_s):
                break
            progress = budget_progress(state.step, budget_elapsed, tcfg.max_steps, tcfg.wallclock_s)
            if tcfg.qat_start_frac < 1.0 and progress >= tcfg.qat_start_frac and state.qat_started_step < 0:
                model.set_qat(True, tcfg.qat_bits)  # flips a buffer: the compiled graph sees it, no recompile
                state.qat_started_step = state.step
            scale = lr_scale(state.step, progress, tcfg.warmup_steps, tcfg.warmdown_frac)
            muon_mom = muon_momentum_at(state.step, tcfg.muon_momentum, tcfg.muon_momentum_warmup_steps,
                                        tcfg.muon_momentum_warmup_start)
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * scale
                    if isinstance(opt, Muon):
                        g["momentum"] = muon_mom

            t_start += window.before_step(state.step + 1)  # the profiler's own time is off the budget
            t_first = clock() if steps_this_call == 0 else None
            # launched, not waited for: the update goes in before the loss is checked, and a non-finite loss
            # stops the run when it is read (the checkpoint's own weight check keeps a bad update off disk)
            loss = train_step(net, model, loader, accum, amp, device, opts, tcfg.grad_clip, ema,
                              ema_decay_at(state.step, tcfg.ema_decay))
            state.step += 1
            steps_this_call += 1
            state.tokens += tokens_per_step
            inflight.append(LaunchedStep(state.step, state.tokens, scale, loss, t_first))
            stop_req = False
            while len(inflight) > loss_read_lag(tcfg.host_runahead, first_of_call=steps_this_call == 1):
                stop_req |= read_oldest(steady=True)
            due = tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0
            last_of_call = stop_after_steps is not None and steps_this_call >= stop_after_steps
            if stop_req or due or last_of_call:
                stop_req |= drain()  # a checkpoint holds every launched step, each read and checked
                checkpoint()
            if stop_req:
                raise interrupted()
            if last_of_call:
                return {"interrupted_at_step": state.step}
        if drain():  # SIGTERM while the last steps were in flight: stop here, as after any other step
            checkpoint()
            raise interrupted()
    if not state.curve or state.curve[-1][0] != state.step:
        state.curve.append([state.step, state.tokens, round(state.elapsed_s, 3), "", "", ""])
    checkpoint()
    progress_note(f"final validation after step {state.step} (EMA weights, val shards)")
    metrics = _finish(params, model, ema, state, micro, accum, dinfo, device)
    if window.summary is not None:
        metrics["profile"] = window.summary
    if dinfo.is_main:
        save_model(model, mcfg, out_dir)
        _write_curve(curve_path, state.curve)
    del net  # the DDP wrapper's reducer holds the process group: it goes first
    leave_distributed(dinfo)
    return metrics


def _sync_step(loss: float, elapsed: float, stop: bool, dinfo: DistInfo, device) -> tuple[float, float, bool]:
    """One all-reduce per step: the mean loss, rank 0's elapsed time and any rank's stop request, so
    every rank takes the same decisions (stopping on different steps would hang the others)."""
    if dinfo.world_size == 1:
        return loss, elapsed, stop
    t = torch.tensor([loss, elapsed if dinfo.is_main else 0.0, float(stop)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t[0].item() / dinfo.world_size, t[1].item(), t[2].item() > 0


def _ckpt_step(path: Path) -> str:
    """The step of the checkpoint on disk, for error messages ('none' when there is none)."""
    if not path.is_file():
        return "none"
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True)["state"]["step"])
    except _UNREADABLE:  # an error message must not fail on a bad file
        return "unreadable"


class PendingLoss:
    """A step's loss on its way to the host: on CUDA it is copied into pinned memory behind the step's backward
    and `value()` waits for that copy alone, not for the work queued after it (an optimizer step, the next
    step's kernels), which `.item()` would wait for too. Elsewhere the value is there already (kept as a copy).
    Either way the value is the loss when it was captured, whatever later writes to that tensor."""

    def __init__(self, loss: torch.Tensor):  # a 0-d tensor
        self.event = None
        if loss.is_cuda:
            self.host = torch.empty((), dtype=loss.dtype, pin_memory=True)
            self.host.copy_(loss.detach(), non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = loss.detach().clone()

    def value(self) -> float:
        if self.event is not None:
            self.event.synchronize()
        return float(self.host)


def loss_read_lag(host_runahead: bool, first_of_call: bool) -> int:
    """How many launched steps may stay unread after launching one: 1 with host_runahead, so the host queues
    step k+1 while the device runs step k; 0 without it, and for a call's first step, whose compile and
    warm-up time must be measured when it ends."""
    return 1 if host_runahead and not first_of_call else 0


@dataclass
class LaunchedStep:
    """A training step whose kernels are launched and whose loss is not read yet."""
    step: int  # the step count after it (1 = the first step)
    tokens: int  # tokens seen after it
    lr_scale: float
    loss: PendingLoss
    t_first: float | None  # launch time when it is its call's first step (compile, warm-up), else None


def compile_for_training(net, tcfg, device: torch.device):
    """`net` under torch.compile (train.compile_mode) when train.compile is on and the device is CUDA, else as it
    is: the CPU runs stay eager (the reference path, bit-exact tests)."""
    if not (tcfg.compile and device.type == "cuda"):
        return net
    return torch.compile(net, mode=None if tcfg.compile_mode == "default" else tcfg.compile_mode)


def train_step(net, model, loader, accum: int, amp, device, opts, grad_clip: float, ema: list[torch.Tensor],
               ema_decay: float) -> PendingLoss:
    """Launch one optimizer step (forward_backward, then optimizer_step) without waiting for the device; the
    loss is read later through the returned PendingLoss."""
    loss = PendingLoss(forward_backward(net, model, loader, accum, amp, device))
    optimizer_step(model, opts, grad_clip, ema, ema_decay)
    return loss


def forward_backward(net, model, loader, accum: int, amp, device) -> torch.Tensor:
    """One step's gradients: `accum` micro-batches from `loader` through `net` (the model, or its DDP /
    compiled wrapper) under `amp`, each loss scaled by 1/accum so the gradients sum to the step's mean.
    Under DDP the gradients are all-reduced on the last micro-batch only. Returns the step's mean loss as a
    device tensor (reading it waits for the GPU)."""
    loss_sum = torch.zeros((), device=device)
    for i in range(accum):
        with record_function("golf/batch"):  # host-side ranges, named in train.profile_steps' summary
            x, y = loader.next_batch()  # (B, T), (B, T)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = contextlib.nullcontext() if i == accum - 1 or net is model or not hasattr(net, "no_sync") \
            else net.no_sync()
        with sync:
            with amp, record_function("golf/forward"):
                loss = net(x, targets=y) / accum  # mean cross-entropy, fp32
            with record_function("golf/backward"):
                loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def optimizer_step(model, opts, grad_clip: float, ema: list[torch.Tensor], ema_decay: float) -> None:
    """Clip (grad_clip > 0), step every optimizer, clear the gradients, and move the fp32 EMA copy
    (`ema`, one tensor per parameter; empty = no EMA) toward the weights by 1 - ema_decay."""
    with record_function("golf/optimizer"):
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
    if ema:
        # no detach needed; fp32 weights as they are (a .float() per tensor is one more op)
        with torch.no_grad(), record_function("golf/ema"):
            weights = [p if p.dtype == torch.float32 else p.float() for p in model.parameters()]
            torch._foreach_lerp_(ema, weights, 1 - ema_decay)


def _finish(params, model, ema, state: TrainState, micro: int, accum: int, dinfo: DistInfo, device) -> dict:
    """Swap in the EMA weights (what is saved and scored), QAT off, exact BPB on the val shards."""
    tcfg = params.train
    if ema:
        with torch.no_grad():
            for p, e in zip(model.parameters(), ema):
                p.copy_(e.to(p.dtype))
    model.set_qat(False)
    val_tokens = load_tokens(list_shards(params.data_dir(), "val"), tcfg.val_tokens)
    tables = build_byte_tables(tokenizer_path(params.data_dir()), params.model.vocab_size)
    val = eval_bpb(model, val_tokens, tables, min(tcfg.seq_len, val_tokens.numel() - 1), micro, device=device)
    if state.curve:
        state.curve[-1][-1] = round(val["val_bpb"], 6)
    train_s = state.elapsed_s
    return {
        "steps": state.step, "tokens": state.tokens, "train_s": round(train_s, 3),
        "tok_per_s": round(state.tokens / max(train_s, 1e-9), 1), "val_loss": val["val_loss"],
        "val_bpb": val["val_bpb"], "val_tokens": val["tokens"], "peak_mem_mb": round(_peak_mem_mb(device), 1),
        "kernel_paths": model.kernel_paths, "qat_started_step": state.qat_started_step,
        "params": count_params(model), "warmup_s": state.warmup_s, "ckpt_s": round(state.ckpt_s, 3),
        "resumed_from_step": state.resumed_from_step, "world_size": dinfo.world_size,
        "micro_batch_seqs": micro, "grad_accum": accum,
    }


def _write_curve(path: Path, curve: list) -> None:
    lines = ["\t".join(CURVE_HEADER)] + ["\t".join(str(v) for v in row) for row in curve]
    write_text_atomic(path, "\n".join(lines) + "\n")
