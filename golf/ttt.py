"""Legal score-first test-time training (TTT).

The validation stream is cut into chunks of `ttt.chunk_tokens` targets, in order. Chunk i is first scored
with the current weights under no_grad (its loss and bytes are final; the windows may read the tokens
before the chunk as context, never a token after it), and only then used for SGD steps, which can only
help chunks i+1, i+2, .... No token is adapted on before it has been scored; there is a single pass and
the last chunk is scored but not trained on.

Under torchrun: every rank holds the same weights. Each rank scores an interleaved share of the chunk's
windows (the float64 sums are all-reduced at the end), and each adaptation batch is split across ranks:
each rank backpropagates the summed loss of its sequences divided by the batch's global token count, the
gradients are all-reduced (sum), so every rank takes the same step as a single process would (up to float
summation order) and the weights stay identical.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from golf.config import TTTConfig
from golf.data import ByteTables
from golf.errors import GolfError
from golf.evaluate import autocast, dist_info, finish, score_windows, span_plan
from golf.param_groups import TTT_SUBSETS, ttt_subset


def adapt_params(model, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters TTT updates, ttt.params `which` of golf.param_groups.TTT_SUBSETS."""
    if which not in TTT_SUBSETS:
        raise GolfError(f"ttt.params: expected one of {', '.join(TTT_SUBSETS)}, got {which!r}")
    chosen = [(n, p) for n, p in model.named_parameters() if ttt_subset(n, which)]
    if not chosen:
        raise GolfError(f"ttt.params {which!r} selects no parameters of this model")
    return chosen


def chunk_lr(cfg: TTTConfig, i: int, n_adapted: int) -> float:
    """The learning rate for adapting on chunk i of the n_adapted chunks that are adapted on (every chunk but the
    last): ttt.lr throughout, or with lr_schedule "cosine" a half cosine from ttt.lr at the first chunk down to 0
    after the last, so early chunks move the weights most and later ones only refine them."""
    if cfg.lr_schedule == "constant" or n_adapted <= 0:
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * i / n_adapted))


def chunk_bounds(n_targets: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """(first, last) target of each chunk, inclusive, in stream order (targets are 1..n_targets)."""
    return [(c + 1, min(c + chunk_tokens, n_targets)) for c in range(0, n_targets, chunk_tokens)]


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks in one collective (one flat buffer, not one call per
    parameter). A rank whose share of a batch was empty contributes zeros."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # (sum of numel,) fp32
    dist.all_reduce(flat)
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _adapt_on_chunk(model, opt, params: list[torch.nn.Parameter], tokens: torch.Tensor, lo: int, hi: int,
                    cfg: TTTConfig, device: torch.device, events: list | None) -> int:
    """SGD on targets lo..hi only (already scored): sequences of min(seq_len, chunk) tokens laid end to end
    from the chunk's start; a tail shorter than one sequence is not trained on. Returns the step count."""
    rank, world = dist_info()
    L = min(cfg.seq_len, hi - lo + 1)
    starts = list(range(lo - 1, hi - L + 1, L))  # inputs tokens[s:s+L], targets s+1..s+L <= hi
    offsets = torch.arange(L + 1, device=tokens.device)
    starts_t = torch.tensor(starts, device=tokens.device)  # one host->device copy per chunk
    steps = 0
    model.train()
    for _ in range(cfg.epochs):
        for b in range(0, len(starts), cfg.batch_seqs):
            batch = starts[b:b + cfg.batch_seqs]
            mine = starts_t[b:b + cfg.batch_seqs][rank::world]  # this rank's share of the batch
            opt.zero_grad(set_to_none=False)
            if mine.numel():
                win = tokens[mine[:, None] + offsets].to(device)  # (b, L+1)
                with autocast(device):
                    logits = model(win[:, :-1])  # (b, L, V)
                # summed over this rank's tokens / the whole batch's tokens: the all-reduced sum is the mean
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1),
                                       reduction="sum") / (len(batch) * L)
                loss.backward()
            if world > 1:
                _all_reduce_grads(params)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            steps += 1
            if events is not None:
                events.append(("adapt", batch[0] + 1, batch[-1] + L))
    model.eval()
    return steps


def ttt_eval(model, val_tokens: torch.Tensor, tables: ByteTables, cfg: TTTConfig, device: torch.device,
             adapt: bool = True, events: list | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Score-first TTT BPB over val_tokens (N,); adapts `model` IN PLACE (pass a copy to keep the original).

    adapt=False scores the same windows without any update: the non-adapted baseline over the same tokens.
    `events`, if given, receives ("score" | "adapt", first_target, last_target) in the order they happen
    (global target indices, inclusive) for audits. progress(done_chunks, total_chunks) after each chunk."""
    t0 = time.time()
    n_targets = val_tokens.numel() - 1
    if n_targets < 1:
        raise GolfError("TTT eval needs at least two validation tokens")
    stride = cfg.stride or cfg.seq_len
    if stride > cfg.seq_len:
        raise GolfError(f"ttt.stride must be <= ttt.seq_len ({cfg.seq_len}), got {cfg.stride}")
    rank, world = dist_info()
    tokens = val_tokens.to(device)
    tables = tables.to(device)
    chosen = adapt_params(model, cfg.params) if adapt else []
    params = [p for _, p in chosen]
    grad_before = {n: p.requires_grad for n, p in model.named_parameters()}
    if adapt:  # only the chosen parameters need gradients
        ids = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in ids)
        for p in params:  # zero (not None) grads: every rank all-reduces every tensor, even with no batch share
            p.grad = torch.zeros_like(p)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if adapt else None
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    chunks = chunk_bounds(n_targets, cfg.chunk_tokens)
    steps = 0
    model.eval()
    try:
        for i, (lo, hi) in enumerate(chunks):
            # 1. score the chunk with the current weights; these numbers are final
            plan = span_plan(lo, hi, cfg.seq_len, min(stride, hi))
            sums += score_windows(model, tokens, tables, plan[rank::world], min(cfg.seq_len, hi), cfg.batch_seqs,
                                  device)
            if events is not None:
                events.append(("score", lo, hi))
            # 2. only now adapt on it; the last chunk would help nothing later
            if adapt and i < len(chunks) - 1:
                for group in opt.param_groups:
                    group["lr"] = chunk_lr(cfg, i, len(chunks) - 1)
                steps += _adapt_on_chunk(model, opt, params, tokens, lo, hi, cfg, device, events)
            if progress is not None:
                progress(i + 1, len(chunks))
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(grad_before[n])
            p.grad = None
        model.eval()
    out = finish(sums, t0)
    out.update(chunks=len(chunks), adapt_steps=steps, adapted_params=sum(p.numel() for p in params))
    return out
