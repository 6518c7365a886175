"""Exact BPB evaluation: plain (non-overlapping windows), sliding window, and stateful SSM.

BPB = (sum of NLL over scored tokens / ln 2) / (sum of their bytes), both sums in float64 and all-reduced
across ranks. Bytes of a target come from the tokenizer's byte tables (golf.data.target_bytes).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from golf.data import ByteTables, target_bytes
from golf.errors import GolfError


def window_plan(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, first_scored) pairs. A window feeds tokens[start : start+seq_len] and predicts
    tokens[start+1 : start+seq_len+1]; it scores targets from index `first_scored` of the window on.

    Every target token (positions 1..n-1) is scored exactly once, with the most left context available:
    the first window scores all its targets; each later window scores only the targets past the previous
    window's end; a final window aligned to the end of the data scores the remaining tail."""
    n_targets = n_tokens - 1
    if n_targets < seq_len:
        raise GolfError(f"eval seq_len {seq_len} is longer than the validation set ({n_tokens} tokens); "
                        "use a smaller seq_len or more validation data")
    plan, scored_to = [], 0  # targets 1..scored_to are done
    start = 0
    while start + seq_len <= n_targets:
        end = start + seq_len  # last target index covered
        plan.append((start, scored_to - start))
        scored_to = end
        start += stride
    if scored_to < n_targets:
        start = n_targets - seq_len
        plan.append((start, scored_to - start))
    return plan


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _finish(sums: torch.Tensor, t0: float) -> dict:
    if _dist_info()[1] > 1:
        dist.all_reduce(sums)
    nll, n_bytes, n_tok = sums.tolist()
    if n_bytes <= 0:
        raise GolfError("evaluation scored no bytes (empty validation set?)")
    return {"val_loss": nll / n_tok, "val_bpb": nll / math.log(2) / n_bytes, "tokens": int(n_tok),
            "bytes": int(n_bytes), "eval_s": round(time.time() - t0, 3)}


@torch.no_grad()
def score_windows(model, tokens: torch.Tensor, tables: ByteTables, plan: list[tuple[int, int]], seq_len: int,
                  batch_seqs: int, device: torch.device) -> torch.Tensor:
    """float64 [sum NLL, sum bytes, count] over the plan's scored targets (this rank's share)."""
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    offsets = torch.arange(seq_len + 1)
    for i in range(0, len(plan), batch_seqs):
        chunk = plan[i:i + batch_seqs]
        starts = torch.tensor([s for s, _ in chunk])
        idx = starts[:, None] + offsets[None, :]  # (B, T+1)
        win = tokens[idx].to(device)
        x, y = win[:, :-1], win[:, 1:]  # (B, T)
        with _autocast(device):
            logits = model(x)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="none").view(y.shape)  # (B, T)
        first = torch.tensor([f for _, f in chunk], device=device)
        mask = torch.arange(seq_len, device=device)[None, :] >= first[:, None]  # (B, T)
        nbytes = target_bytes(x, y, tables)
        sums[0] += nll.double()[mask].sum()
        sums[1] += nbytes.double()[mask].sum()
        sums[2] += mask.sum()
    return sums


def eval_bpb(model, val_tokens: torch.Tensor, tables: ByteTables, seq_len: int, batch_seqs: int,
             stride: int | None = None, device: torch.device | str | None = None) -> dict:
    """Exact BPB of `model` on `val_tokens` (N,). stride None = plain non-overlapping windows."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    t0 = time.time()
    was_training = model.training
    model.eval()
    plan = window_plan(val_tokens.numel(), seq_len, stride or seq_len)
    rank, world = _dist_info()
    sums = score_windows(model, val_tokens, tables.to(device), plan[rank::world], seq_len, batch_seqs, device)
    model.train(was_training)
    out = _finish(sums, t0)
    out["windows"] = len(plan)
    return out


@torch.no_grad()
def eval_stateful(model, val_tokens: torch.Tensor, tables: ByteTables, seq_len: int, batch_seqs: int,
                  device: torch.device | str | None = None) -> dict:
    """Stateful SSM eval: the val stream is cut into `batch_seqs` contiguous segments (one per batch row);
    each segment is read in consecutive windows of seq_len with the SSM recurrent state carried across
    windows (attention layers see only the current window). Every target is scored once."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if not getattr(model, "supports_state", False):
        raise GolfError("stateful eval needs a model with SSM layers (layer_pattern without 'M')")
    t0 = time.time()
    was_training = model.training
    model.eval()
    tables = tables.to(device)
    n_targets = val_tokens.numel() - 1
    rows = max(1, min(batch_seqs, n_targets // seq_len))
    seg = n_targets // rows  # targets per segment; the remainder is scored by the last row below
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    rank, world = _dist_info()
    row_ids = list(range(rows))[rank::world]
    bounds = [(r * seg, (r + 1) * seg if r < rows - 1 else n_targets) for r in row_ids]
    if bounds:
        states = None
        common = min(e - s for s, e in bounds)  # every row has at least this many targets
        for off in range(0, common, seq_len):
            T = min(seq_len, common - off)
            win = torch.stack([val_tokens[s + off:s + off + T + 1] for s, _ in bounds]).to(device)  # (R, T+1)
            x, y = win[:, :-1], win[:, 1:]
            with _autocast(device):
                logits, states = model(x, states=states, return_states=True)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            sums[0] += nll.double().sum()
            sums[1] += target_bytes(x, y, tables).double().sum()
            sums[2] += y.numel()
        done = common
        # tails: rows longer than the common length continue alone with their own state
        for r, (s, e) in enumerate(bounds):
            pos = s + done
            st = None if states is None else _select_row(states, r)
            while pos < e:
                T = min(seq_len, e - pos)
                win = val_tokens[pos:pos + T + 1][None].to(device)
                x, y = win[:, :-1], win[:, 1:]
                with _autocast(device):
                    logits, st = model(x, states=st, return_states=True)
                nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                      reduction="none")
                sums[0] += nll.double().sum()
                sums[1] += target_bytes(x, y, tables).double().sum()
                sums[2] += y.numel()
                pos += T
    model.train(was_training)
    return _finish(sums, t0)


def _select_row(states: dict, r: int) -> dict:
    layers = []
    for st in states["layers"]:
        layers.append(None if st is None else tuple(t[r:r + 1] for t in st))
    return {"prev_token": states["prev_token"][r:r + 1], "layers": layers}
