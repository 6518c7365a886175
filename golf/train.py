"""The training loop: wallclock budget with warmup/warmdown, EMA of weights, late QAT, gradient accumulation,
DDP under torchrun, resumable checkpoints (golf/checkpoint.py), exact pre-quant val BPB at the end.

Schedules run on the budget "progress" p in [0, 1]:
  * wallclock_s > 0: p = max(step / max_steps, elapsed / wallclock_s), elapsed measured by rank 0 and
    shared with every rank (so all ranks stop on the same step); warmdown and QAT follow elapsed time.
  * wallclock_s = 0: p = step / max_steps alone. This step-only schedule is what makes a run bit-for-bit
    reproducible on CPU (same seed → same weights, interrupted + resumed = uninterrupted); a time-driven
    schedule cannot be, since no two runs see the same clock.
Time that is not training is kept off the budget: the first step of every call (torch.compile, lazy
kernel and allocator initialisation: 3-5 s on CPU, minutes when compiling), checkpoint writes and the
profiler's own start and summary (train.profile_steps). The challenge's script likewise runs warmup steps
before starting its clock and stops it for validation.

With train.host_runahead (the default) the loop launches step k+1 before it reads step k's loss (PendingLoss),
so the host's kernel launches for the optimizer and the next forward overlap the device's work instead of
leaving the device idle between steps (measured on one H200: bench/RESULTS.md). Budget decisions count the
step still in flight at the last step's duration; a non-finite loss stops the run one step later; every
checkpoint, SIGTERM stop and the end of training first read all launched steps. Under DDP the per-step
all-reduce of loss and clock waits for the device, so ranks do not run ahead.

With train.carry_state each batch row continues its own stream of the train data (golf.loaders.StreamLoader) and
starts from the recurrent state its previous window ended with (CarriedStreams): the Mamba blocks' conv and SSM
states and the BigramHash previous token, detached, so the gradient stays within a window (truncated backprop
through time). Each micro batch of a step has its own rows and states; a checkpoint holds every rank's states and
the streams' positions, so a resumed run continues as the uninterrupted one would.

Checkpoints are written every `checkpoint_every` steps, at the end and on SIGTERM. Training's global torch
settings (TF32 on CUDA, deterministic algorithms on CPU, train.inductor_options when compiling) hold only while
train() runs (golf.runtime, golf.inductor_options).
"""

from __future__ import annotations

import contextlib
import math
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from golf.checkpoint import (
    CKPT_NAME,
    TrainState,
    checkpoint_step,
    resume_or_start,
    run_fingerprint,
    save_checkpoint,
)
from golf.config import ConfigError, Params
from golf.data import build_byte_tables, list_shards, load_tokens, tokenizer_path
from golf.errors import TrainingError
from golf.evaluate import eval_bpb
from golf.gptq import qat_module_bits
from golf.inductor_options import apply_inductor_options, kept_inductor_options, resolve_inductor_options
from golf.io import write_text_atomic
from golf.loaders import StreamLoader, TokenLoader
from golf.model import build_model, count_params, save_model
from golf.optim import Muon, build_optimizers, update_weights
from golf.optim_graph import GraphedOptimizerStep, graphed_step_for
from golf.profiling import StepWindowProfiler, compiled_graph_stats
from golf.progress import note as progress_note
from golf.runtime import (
    DistInfo,
    autocast,
    init_stage_process,
    leave_distributed,
    matmul_settings,
    seed_everything,
    training_precision,
)
from golf.ssm import Mamba2Mixer

CURVE_HEADER = ("step", "tokens", "train_s", "lr_scale", "train_loss", "val_bpb")


class TrainingInterrupted(TrainingError):
    """SIGTERM during training: a checkpoint was written; rerunning the same command resumes."""


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
# The loop
# --------------------------------------------------------------------------------------------------


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(params: Params, seed: int, out_dir: Path, ckpt_dir: Path, curve_path: Path,
          progress_cb: Callable | None = None, stop_after_steps: int | None = None,
          clock: Callable[[], float] = time.monotonic) -> dict:
    """Train one seed; write the EMA weights to out_dir (rank 0) and return the metrics.

    progress_cb(step, loss, tok_per_s, progress) is called on rank 0 after every step. `stop_after_steps`
    ends this call after that many steps with a checkpoint, as an interruption would (tests); `clock` is
    the budget clock (tests pass a fake one). torch's global settings are as they were when this returns."""
    dinfo, device = init_stage_process(params.train.device)
    # kept_inductor_options: what compile_for_training sets for train.inductor_options is put back on return
    with training_precision(device), kept_inductor_options(params.train.inductor_options):
        loop = TrainLoop(params, seed, ckpt_dir / CKPT_NAME, dinfo, device, progress_cb, clock)
        stopped_at = loop.run(stop_after_steps)
        if stopped_at is not None:
            return {"interrupted_at_step": stopped_at}
        return loop.finish(out_dir, curve_path)


class TrainLoop:
    """One call of training for one seed. Everything the loop decides on is an attribute:

    state        step, tokens, elapsed budget, curve: what a checkpoint saves (golf.checkpoint.TrainState)
    t_start      the budget clock's origin: elapsed = clock() - t_start; moved forward by the time kept off
                 the budget (a call's first step, checkpoint writes, the profiler's own work)
    elapsed      rank 0's elapsed budget when the last read step's loss was ready, shared by every rank
    inflight     launched steps whose loss is not read yet, oldest first
    step_s       duration of the last step read in steady state: the estimate for each step still in flight
    saved_step   the step of the checkpoint on disk (-1: none from this run)
    steps_this_call, sigterm (set by the SIGTERM handler while run() is inside its loop)
    """

    def __init__(self, params: Params, seed: int, ckpt_path: Path, dinfo: DistInfo, device: torch.device,
                 progress_cb: Callable | None = None, clock: Callable[[], float] = time.monotonic):
        self.params, self.tcfg, self.dinfo, self.device = params, params.train, dinfo, device
        self.ckpt_path, self.progress_cb, self.clock = ckpt_path, progress_cb, clock
        tcfg = self.tcfg
        self.micro, self.accum = batch_layout(tcfg, dinfo.world_size)
        seed_everything(seed)  # identical init on every rank
        self.model = build_model(params.model, device)
        self.opts = build_optimizers(self.model, tcfg)
        self.ema = [p.detach().clone().float() for p in self.model.parameters()] if tcfg.ema_decay > 0 else []
        self.graphed = graphed_step_for(self.model, self.opts, tcfg, self.ema, device)  # train.optimizer_graph
        train_files = list_shards(params.data_dir(), "train")  # never the val shards
        if tcfg.carry_state:  # the streams and their states are what a checkpoint saves as the loader's state
            self.loader = CarriedStreams(StreamLoader(train_files, tcfg.seq_len, self.micro, self.accum, dinfo.rank,
                                                      dinfo.world_size, seed=seed), self.model, dinfo, device)
        else:
            self.loader = TokenLoader(train_files, tcfg.seq_len, self.micro, dinfo.rank, dinfo.world_size, seed=seed)
        self.fingerprint = run_fingerprint(params, seed, dinfo.world_size, self.micro, self.accum,
                                           train_files + [tokenizer_path(params.data_dir())])
        self.state: TrainState = resume_or_start(ckpt_path, self.model, self.ema, self.opts, self.loader,
                                                 self.fingerprint, device)
        self.qat_bits = qat_module_bits(self.model, tcfg.qat_bits, params.quant)  # each linear at its stored width
        if self.state.qat_started_step >= 0:
            self.model.set_qat(True, tcfg.qat_bits, self.qat_bits)
        self.matmul = matmul_settings()  # what this run's matmuls use (provenance)

        # with carried state the model runs inside StatefulLoss, so that the loss stays in the compiled graph
        net = StatefulLoss(self.model) if tcfg.carry_state else self.model
        if dinfo.world_size > 1:
            # broadcast_buffers off: every rank sets its buffers alike (RoPE tables, QAT switches), and DDP
            # would otherwise resend them all from rank 0 before each forward (the RoPE tables alone ~0.5 MiB
            # per attention layer)
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        self.net = compile_for_training(net, tcfg, device)
        self.amp = autocast(device, torch.bfloat16 if tcfg.dtype == "bf16" else None)
        self.tokens_per_step = self.accum * self.micro * tcfg.seq_len * dinfo.world_size

        self.steps_this_call = 0
        self.saved_step = self.state.step if self.state.resumed_from_step >= 0 else -1
        self.t_start = clock() - self.state.elapsed_s  # elapsed time survives a resume
        self.elapsed = self.state.elapsed_s
        self.inflight: list[LaunchedStep] = []
        self.step_s = 0.0
        self.sigterm = {"set": False}
        # train.profile_steps: torch.profiler over a window of the loop's own steps (rank 0), summary in the metrics
        self.window = StepWindowProfiler(tcfg.profile_first_step, tcfg.profile_steps if dinfo.is_main else 0,
                                         device, clock=clock, record_shapes=tcfg.profile_shapes)

    # ---- one step's schedule ------------------------------------------------------------------------

    def apply_schedule(self, progress: float) -> float:
        """QAT on once progress reaches qat_start_frac; learning rates and Muon momentum for the next step.
        Returns the lr scale."""
        tcfg, state = self.tcfg, self.state
        if tcfg.qat_start_frac < 1.0 and progress >= tcfg.qat_start_frac and state.qat_started_step < 0:
            self.model.set_qat(True, tcfg.qat_bits, self.qat_bits)  # flips a buffer: the compiled graph sees it, no recompile
            state.qat_started_step = state.step
        scale = lr_scale(state.step, progress, tcfg.warmup_steps, tcfg.warmdown_frac)
        muon_mom = muon_momentum_at(state.step, tcfg.muon_momentum, tcfg.muon_momentum_warmup_steps,
                                    tcfg.muon_momentum_warmup_start)
        for opt in self.opts:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * scale
                if isinstance(opt, Muon):
                    g["momentum"] = muon_mom
        return scale

    # ---- reading launched steps -----------------------------------------------------------------------

    def read_oldest(self, steady: bool) -> bool:
        """Read the oldest in-flight step's loss (waits for that step's backward only), advance the budget
        clock, log it; True when a rank asked to stop."""
        tcfg, state = self.tcfg, self.state
        done = self.inflight.pop(0)
        with record_function("golf/read_loss"):  # the host waiting for that step's backward
            loss_local = done.loss.value()
        now = self.clock()
        if done.t_first is not None:  # a call's first step compiles and warms up: keep it off the budget
            state.warmup_s = round(state.warmup_s + now - done.t_first, 3)
            self.t_start += now - done.t_first
        loss_val, new_elapsed, stop_req = _sync_step(loss_local, now - self.t_start, self.sigterm["set"],
                                                     self.dinfo, self.device)
        if not math.isfinite(loss_val):
            raise TrainingError(
                f"non-finite training loss ({loss_val}) at step {done.step}; the last good checkpoint "
                f"({self.ckpt_path}, step {checkpoint_step(self.ckpt_path)}) is kept. Lower the learning rates "
                "(train.lr_*) or check the data.")
        if steady:
            self.step_s = max(0.0, new_elapsed - self.elapsed)
        self.elapsed = state.elapsed_s = new_elapsed
        if done.step % tcfg.log_every == 0 or done.step == 1:
            state.curve.append([done.step, done.tokens, round(self.elapsed, 3), round(done.lr_scale, 6),
                                round(loss_val, 6), ""])
        if self.progress_cb is not None and self.dinfo.is_main:
            self.progress_cb(done.step, loss_val, done.tokens / max(self.elapsed, 1e-9),
                             budget_progress(done.step, self.elapsed, tcfg.max_steps, tcfg.wallclock_s))
        return stop_req

    def drain(self) -> bool:
        stop_req = False
        while self.inflight:
            stop_req |= self.read_oldest(steady=False)
        return stop_req

    # ---- checkpoints --------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Rank 0 writes; the write time is kept off the budget (t_start moves forward by it)."""
        state = self.state
        if self.saved_step == state.step:
            return
        # A finite loss does not prove the update that followed it was finite: never replace the last good
        # checkpoint with broken weights (checked on every rank, which hold the same weights, so all stop).
        norms = torch.stack([torch.linalg.vector_norm(p.detach().float()) for p in self.model.parameters()])
        if not bool(torch.isfinite(norms).all()):
            raise TrainingError(f"non-finite weights after step {state.step}; the last good checkpoint "
                                f"({self.ckpt_path}, step {checkpoint_step(self.ckpt_path)}) is kept. Lower the "
                                "learning rates (train.lr_*).")
        if isinstance(self.loader, CarriedStreams):
            self.loader.gather()  # every rank's carried states to rank 0 (a collective: before ranks part)
        if not self.dinfo.is_main:
            return
        t0 = self.clock()
        save_checkpoint(self.ckpt_path, self.model, self.ema, self.opts, self.loader, state, self.fingerprint,
                        self.device)
        dt = self.clock() - t0
        self.t_start += dt
        state.ckpt_s += dt
        self.saved_step = state.step

    def interrupted(self) -> TrainingInterrupted:
        return TrainingInterrupted(f"training interrupted by SIGTERM after step {self.state.step}; checkpoint "
                                   f"{self.ckpt_path} written, rerun the same command to resume")

    # ---- the loop -----------------------------------------------------------------------------------

    def run(self, stop_after_steps: int | None = None) -> int | None:
        """Step until the budget is spent; the step count when `stop_after_steps` ended the call early (a
        checkpoint is written), else None. SIGTERM raises TrainingInterrupted after a checkpoint."""
        tcfg, state = self.tcfg, self.state
        with _sigterm_flag(self.sigterm), contextlib.closing(self.window):
            while True:
                budget_elapsed = self.elapsed + len(self.inflight) * self.step_s  # when the steps in flight end
                if state.step >= tcfg.max_steps or (tcfg.wallclock_s > 0 and budget_elapsed >= tcfg.wallclock_s):
                    break
                scale = self.apply_schedule(budget_progress(state.step, budget_elapsed, tcfg.max_steps,
                                                            tcfg.wallclock_s))
                self.t_start += self.window.before_step(state.step + 1)  # the profiler's own time is off the budget
                t_first = self.clock() if self.steps_this_call == 0 else None
                # launched, not waited for: the update goes in before the loss is checked, and a non-finite loss
                # stops the run when it is read (the checkpoint's own weight check keeps a bad update off disk)
                loss = train_step(self.net, self.model, self.loader, self.accum, self.amp, self.device, self.opts,
                                  tcfg.grad_clip, self.ema, ema_decay_at(state.step, tcfg.ema_decay), self.graphed)
                state.step += 1
                self.steps_this_call += 1
                state.tokens += self.tokens_per_step
                self.inflight.append(LaunchedStep(state.step, state.tokens, scale, loss, t_first))
                stop_req = False
                while len(self.inflight) > loss_read_lag(tcfg.host_runahead,
                                                         first_of_call=self.steps_this_call == 1):
                    stop_req |= self.read_oldest(steady=True)
                due = tcfg.checkpoint_every and state.step % tcfg.checkpoint_every == 0
                last_of_call = stop_after_steps is not None and self.steps_this_call >= stop_after_steps
                if stop_req or due or last_of_call:
                    stop_req |= self.drain()  # a checkpoint holds every launched step, each read and checked
                    self.checkpoint()
                if stop_req:
                    raise self.interrupted()
                if last_of_call:
                    return state.step
            if self.drain():  # SIGTERM while the last steps were in flight: stop here, as after any other step
                self.checkpoint()
                raise self.interrupted()
        return None

    def finish(self, out_dir: Path, curve_path: Path) -> dict:
        """After the budget: the last checkpoint, the EMA weights scored and (rank 0) saved, the curve written,
        the process group left. Returns the metrics."""
        state = self.state
        if not state.curve or state.curve[-1][0] != state.step:
            state.curve.append([state.step, state.tokens, round(state.elapsed_s, 3), "", "", ""])
        self.checkpoint()
        progress_note(f"final validation after step {state.step} (EMA weights, val shards)")
        metrics = _finish(self.params, self.model, self.ema, state, self.micro, self.accum, self.dinfo,
                          self.device)
        if self.window.summary is not None:
            metrics["profile"] = self.window.summary
        metrics["matmul"] = self.matmul
        metrics["optimizer_graph"] = self.graphed is not None and self.graphed.replaying  # replayed, not just asked
        if self.dinfo.is_main:
            save_model(self.model, self.params.model, out_dir)
            _write_curve(curve_path, state.curve)
        self.net = None  # the DDP wrapper's reducer holds the process group: it goes first
        leave_distributed(self.dinfo)
        return metrics


@contextlib.contextmanager
def _sigterm_flag(flag: dict):
    """While training, SIGTERM (a scheduler's preemption, `kill`) only sets flag["set"]: the loop finishes its
    step, writes a checkpoint and stops. Only the main thread can own a signal handler."""
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


def _sync_step(loss: float, elapsed: float, stop: bool, dinfo: DistInfo, device) -> tuple[float, float, bool]:
    """One all-reduce per step: the mean loss, rank 0's elapsed time and any rank's stop request, so
    every rank takes the same decisions (stopping on different steps would hang the others)."""
    if dinfo.world_size == 1:
        return loss, elapsed, stop
    t = torch.tensor([loss, elapsed if dinfo.is_main else 0.0, float(stop)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t[0].item() / dinfo.world_size, t[1].item(), t[2].item() > 0


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


def compiles(tcfg, device: torch.device) -> bool:
    """Whether training runs the model under torch.compile: train.compile on a CUDA device. CPU runs stay eager
    (the reference path, bit-exact tests)."""
    return tcfg.compile and device.type == "cuda"


def compile_for_training(net, tcfg, device: torch.device):
    """`net` under torch.compile (train.compile_mode) when training compiles (`compiles`), else as it is. Before
    compiling, every attention layer in `net` caches its RoPE tables for train.seq_len positions, so that the
    compiled graph reads them instead of computing them inline (golf.attention.GQAttention.reserve_positions).

    train.inductor_options are checked against torch._inductor.config in either case (a misspelt option fails on
    CPU too) and set only when compiling, on torch._inductor.config itself (torch.compile's options= cannot go
    with mode=), process-wide and left set: torch.compile compiles lazily, at the first step's forward and
    backward and at any recompile later in the run, each reading the config then. train() puts them back when
    it returns. Details in golf.inductor_options."""
    from golf.attention import reserve_rope_positions

    options = resolve_inductor_options(tcfg.inductor_options)
    if not compiles(tcfg, device):
        return net
    apply_inductor_options(options)
    reserve_rope_positions(net, tcfg.seq_len)
    return torch.compile(net, mode=None if tcfg.compile_mode == "default" else tcfg.compile_mode)


def train_step(net, model, loader, accum: int, amp, device, opts, grad_clip: float, ema: list[torch.Tensor],
               ema_decay: float, graphed: GraphedOptimizerStep | None = None) -> PendingLoss:
    """Launch one optimizer step (forward_backward, then optimizer_step) without waiting for the device; the
    loss is read later through the returned PendingLoss."""
    loss = PendingLoss(forward_backward(net, model, loader, accum, amp, device))
    optimizer_step(model, opts, grad_clip, ema, ema_decay, graphed)
    return loss


def forward_backward(net, model, loader, accum: int, amp, device) -> torch.Tensor:
    """One step's gradients: `accum` micro-batches from `loader` through `net` (the model, or its DDP /
    compiled wrapper) under `amp`, each loss scaled by 1/accum so the gradients sum to the step's mean.
    Under DDP the gradients are all-reduced on the last micro-batch only. Returns the step's mean loss as a
    device tensor (reading it waits for the GPU). A CarriedStreams `loader` (train.carry_state) goes to
    forward_backward_carried."""
    if isinstance(loader, CarriedStreams):
        return forward_backward_carried(net, loader, accum, amp, device)
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


def forward_backward_carried(net, streams: CarriedStreams, accum: int, amp, device) -> torch.Tensor:
    """forward_backward with carried state: `net` wraps StatefulLoss; each micro batch takes its rows' states
    from `streams` and hands back the states its rows end with, once its backward is done."""
    loss_sum = torch.zeros((), device=device)
    for i in range(accum):
        with record_function("golf/batch"):
            x, y, states = streams.next_batch()  # (B, T), (B, T) on the device; states as GolfLM.forward takes them
        sync = contextlib.nullcontext() if i == accum - 1 or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with amp, record_function("golf/forward"):
                loss, new_states = net(x, y, states)
                loss = loss / accum
            with record_function("golf/backward"):
                loss.backward()
        streams.keep(new_states)
        loss_sum += loss.detach()
    return loss_sum


class StatefulLoss(nn.Module):
    """The model's mean cross-entropy from carried states: (x (B, T), targets (B, T), states) → (loss, the
    states after the last position). GolfLM.forward returns states only with logits, so the loss is taken here,
    inside whatever compiles or wraps this module (DDP, torch.compile), as GolfLM's own `targets` path does it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, targets: torch.Tensor, states: dict):
        logits, new_states = self.model(x, states=states, return_states=True)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss, new_states


def _flat_states(states: dict) -> list[torch.Tensor]:
    """GolfLM.forward's `states` as one list: the previous token (B,), then each M block's conv and SSM state."""
    return [states["prev_token"]] + [t for layer in states["layers"] if layer is not None for t in layer]


class CarriedStreams:
    """A StreamLoader and the recurrent state each of this rank's rows carries from one window to the next.

    One state per micro batch, in GolfLM.forward's `states` layout: {"prev_token": (B,) int64, -1 = none (the
    BigramHash's "no previous token", as a fresh window has), "layers": per block, (conv_state (B, conv_dim,
    d_conv-1), ssm_state (B, H, P, N)) for an M block, None for an A block}. The tensors are fixed fp32 / int64
    buffers, zero at the start: every step passes tensors of the same shapes, dtypes and strides (one compiled
    graph, no recompile on step 2), and a zero state gives what no state gives (a zero-padded conv, a scan from
    zero). `keep` copies a micro batch's returned states into them after its backward (the copy detaches: no
    gradient crosses steps); `next_batch` zeroes the rows whose stream restarts, outside any compiled region,
    deciding on the loader's host-side flags, never on tensor values.

    Checkpointing: `gather()` (every rank) collects the states of all streams on rank 0, ordered by stream; its
    state_dict() is the loader's plus those; load_state_dict() gives each rank back its own rows.
    """

    def __init__(self, loader: StreamLoader, model: nn.Module, dinfo: DistInfo, device: torch.device):
        self.loader, self.dinfo, self.device = loader, dinfo, device
        B = loader.batch_seqs
        self.states = []
        for _ in range(loader.accum):
            layers = []
            for block in model.blocks:
                m = getattr(block, "mixer", None)
                layers.append(None if not isinstance(m, Mamba2Mixer) else (
                    torch.zeros(B, m.conv_dim, m.d_conv - 1, device=device),  # (B, conv_dim, W-1)
                    torch.zeros(B, m.nheads, m.headdim, m.d_state, device=device)))  # (B, H, P, N)
            self.states.append({"prev_token": torch.full((B,), -1, dtype=torch.int64, device=device),
                                "layers": layers})
        self.micro = 0  # the micro batch whose states next_batch handed out last
        self.gathered: list[torch.Tensor] | None = None

    @property
    def batches_drawn(self) -> int:
        return self.loader.batches_drawn

    def _flat(self, micro: int) -> list[torch.Tensor]:
        return _flat_states(self.states[micro])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """x, y (B, T) on the device and the states this micro batch's rows start from (zero where a stream
        starts or restarts)."""
        self.micro = self.loader.batches_drawn % self.loader.accum
        x, y, restart = self.loader.next_batch()  # (B, T), (B, T), (B,) bool
        if bool(restart.any()):  # host-side flags; row indices, not a mask: a masked write would wait on the GPU
            rows = restart.nonzero().flatten().to(self.device, non_blocking=True)
            with torch.no_grad():
                for t in self._flat(self.micro):
                    t.index_fill_(0, rows, -1 if t.dtype == torch.int64 else 0)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), self.states[self.micro]

    def keep(self, new_states: dict) -> None:
        """The states the last micro batch's rows ended with: copied (detached, in fp32) into its buffers."""
        with torch.no_grad():
            for buf, t in zip(self._flat(self.micro), _flat_states(new_states), strict=True):
                if buf.shape != t.shape:  # a shape bug would otherwise broadcast silently
                    raise TrainingError(f"carried state of shape {tuple(t.shape)}, expected {tuple(buf.shape)}")
                buf.copy_(t.detach())

    def gather(self) -> None:
        """Every stream's states on rank 0 (self.gathered, one tensor per state tensor, streams first in
        StreamLoader's order: micro batch, rank, row). A collective under DDP: every rank calls it."""
        world = self.dinfo.world_size
        per_micro = []
        for micro in range(self.loader.accum):
            parts = []
            for t in self._flat(micro):
                if world > 1:
                    got = [torch.empty_like(t) for _ in range(world)]
                    dist.all_gather(got, t.contiguous())
                    t = torch.cat(got)  # (world * B, ...): rank-major, as StreamLoader numbers the streams
                parts.append(t.cpu())  # a copy, on the host: the device keeps no second set of states
            per_micro.append(parts)
        self.gathered = [torch.cat(ts) for ts in zip(*per_micro, strict=True)]  # (num_streams, ...) each

    def state_dict(self) -> dict:
        if self.gathered is None:
            raise TrainingError("CarriedStreams.state_dict() before gather()")
        return {"streams": self.loader.state_dict(), "states": self.gathered}

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state["streams"])
        for micro in range(self.loader.accum):
            mine = self.loader.rows(micro)
            with torch.no_grad():
                for buf, saved in zip(self._flat(micro), state["states"], strict=True):
                    buf.copy_(saved[mine])


def optimizer_step(model, opts, grad_clip: float, ema: list[torch.Tensor], ema_decay: float,
                   graphed: GraphedOptimizerStep | None = None) -> None:
    """Clip (grad_clip > 0), step every optimizer, clear the gradients, and move the fp32 EMA copy
    (`ema`, one tensor per parameter; empty = no EMA) toward the weights by 1 - ema_decay. With `graphed`
    (train.optimizer_graph on CUDA) the same step replays as a CUDA graph (golf.optim_graph)."""
    if graphed is not None:
        graphed(ema_decay)
        return
    update_weights(model, opts, grad_clip, ema, 1 - ema_decay)
    model.zero_grad(set_to_none=True)


def _finish(params, model, ema, state: TrainState, micro: int, accum: int, dinfo: DistInfo, device) -> dict:
    """Swap in the EMA weights (what is saved and scored), QAT off, exact BPB on the val shards. A compiled
    run also records Dynamo's graphs and graph breaks (golf.profiling.compiled_graph_stats), before the eager
    evaluation."""
    tcfg = params.train
    compiled = compiled_graph_stats() if compiles(tcfg, device) else None
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
        "micro_batch_seqs": micro, "grad_accum": accum, "compiled_graphs": compiled,
    }


def _write_curve(path: Path, curve: list) -> None:
    lines = ["\t".join(CURVE_HEADER)] + ["\t".join(str(v) for v in row) for row in curve]
    write_text_atomic(path, "\n".join(lines) + "\n")
