"""Exact BPB evaluation: plain (non-overlapping windows), sliding window, and stateful SSM.

BPB = (sum of NLL over scored tokens / ln 2) / (sum of their bytes), both sums in float64 and all-reduced
across ranks. Bytes of a target come from the tokenizer's byte tables (golf.data.target_bytes), so the
score does not depend on the tokenizer's vocabulary size.

Token indexing: the stream is tokens[0..N-1]; "target t" is tokens[t] predicted from tokens[<t], so the
targets are 1..N-1 (token 0 has no context and is never scored). A window (start) feeds
tokens[start : start+L] and predicts targets start+1 .. start+L; position j of the window is target start+1+j.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from golf.data import ByteTables, build_byte_tables, list_shards, load_tokens, target_bytes, tokenizer_path
from golf.errors import GolfError

Plan = list[tuple[int, int]]  # (window start, index in the window of its first scored target)


# --------------------------------------------------------------------------------------------------
# Window plans
# --------------------------------------------------------------------------------------------------


def span_plan(lo: int, hi: int, seq_len: int, stride: int) -> Plan:
    """Windows that score targets lo..hi (inclusive) exactly once, each with the most left context.

    Windows are min(seq_len, hi) tokens long and never read a token after target hi (TTT relies on this:
    a chunk is scored without looking past it). Each window scores the targets after the previous window's
    end, up to `stride` of them, so every scored target sees at least L - stride tokens of context; the
    first window may score more (all its targets have the maximum context the data allows, start 0), and
    the last is aligned to hi and scores only the remaining tail.
    """
    L = min(seq_len, hi)
    if not 1 <= lo <= hi:
        raise GolfError(f"empty target range {lo}..{hi}")
    if not 1 <= stride <= L:
        raise GolfError(f"eval stride must be between 1 and the window length {L}, got {stride}")
    plan: Plan = []
    scored = lo - 1  # targets <= scored are done
    end = max(lo - 1 + stride, L)  # a window ending before L would need a negative start
    while True:
        end = min(end, hi)
        start = end - L
        plan.append((start, scored - start))
        scored = end
        if end == hi:
            return plan
        end += stride


def window_plan(n_tokens: int, seq_len: int, stride: int) -> Plan:
    """The plan over a whole stream of n_tokens (targets 1..n_tokens-1), windows of exactly seq_len."""
    if n_tokens - 1 < seq_len:
        raise GolfError(f"eval seq_len {seq_len} is longer than the validation set ({n_tokens} tokens); "
                        "use a smaller seq_len or more validation data")
    return span_plan(1, n_tokens - 1, seq_len, stride)


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def autocast(device: torch.device, dtype: torch.dtype | None = torch.bfloat16):
    """Autocast to `dtype` on CUDA (bf16 unless told otherwise; the model returns fp32 logits either way);
    nothing on CPU or for dtype None / fp32. Training, calibration and every eval run the model through this."""
    if device.type == "cuda" and dtype is not None and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def score_windows(model, tokens: torch.Tensor, tables: ByteTables, plan: Plan, seq_len: int, batch_seqs: int,
                  device: torch.device, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """float64 [sum NLL, sum bytes, count] over the plan's scored targets (this call's windows only).

    `tokens` may live on the CPU or on `device`; `tables` must be on `device`. No host sync per batch: the
    sums stay on the device. no_grad rather than inference_mode: TTT trains the same model afterwards, and
    module caches built under inference_mode could not be saved for backward."""
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    if not plan:
        return sums
    offsets = torch.arange(seq_len + 1, device=tokens.device)
    # one host->device copy for the whole plan: a copy per batch would wait for the previous batch's forward
    all_starts = torch.tensor([s for s, _ in plan], device=tokens.device)  # (W,)
    all_first = torch.tensor([f for _, f in plan], device=device)  # (W,)
    for i in range(0, len(plan), batch_seqs):
        part = plan[i:i + batch_seqs]
        starts = all_starts[i:i + batch_seqs]  # (B,)
        win = tokens[starts[:, None] + offsets[None, :]].to(device, non_blocking=True)  # (B, L+1)
        x, y = win[:, :-1], win[:, 1:]  # (B, L)
        with autocast(device):
            logits = model(x)  # (B, L, V)
        # sliding windows score only their tail: skip the loss on positions no window of this batch scores
        f0 = min(f for _, f in part)
        logits, x_s, y_s = logits[:, f0:], x[:, f0:], y[:, f0:]  # (B, L-f0, ...)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y_s.reshape(-1),
                              reduction="none").view(y_s.shape)  # (B, L-f0) fp32
        keep = torch.arange(f0, seq_len, device=device)[None, :] >= all_first[i:i + batch_seqs, None]  # (B, L-f0)
        sums[0] += torch.where(keep, nll.double(), 0.0).sum()
        sums[1] += (target_bytes(x_s, y_s, tables) * keep).sum()
        sums[2] += keep.sum()
        if progress is not None:
            progress(len(part))
    return sums


def finish(sums: torch.Tensor, t0: float, reduce: bool = True) -> dict:
    """All-reduce [nll, bytes, count] across ranks and turn them into the metric dict."""
    if reduce and dist_info()[1] > 1:
        dist.all_reduce(sums)
    nll, n_bytes, n_tok = sums.tolist()
    if n_bytes <= 0 or n_tok <= 0:
        raise GolfError("evaluation scored no bytes (empty validation set, or only control tokens?)")
    return {"val_loss": nll / n_tok, "val_bpb": nll / math.log(2) / n_bytes, "tokens": int(n_tok),
            "bytes": int(n_bytes), "eval_s": round(time.time() - t0, 3)}


def _device_of(model, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def eval_bpb(model, val_tokens: torch.Tensor, tables: ByteTables, seq_len: int, batch_seqs: int,
             stride: int | None = None, device: torch.device | str | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Exact BPB of `model` on `val_tokens` (N,): every target 1..N-1 scored once.

    stride None (or seq_len) = plain non-overlapping windows; a smaller stride = sliding window. Under
    torchrun each rank scores an interleaved share of the windows and the float64 sums are all-reduced.
    progress(done_windows, total_windows) is called after each batch (this rank's windows)."""
    device = _device_of(model, device)
    t0 = time.time()
    plan = window_plan(val_tokens.numel(), seq_len, stride or seq_len)
    rank, world = dist_info()
    mine = plan[rank::world]
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], len(mine))

    was_training = model.training
    model.eval()
    try:
        sums = score_windows(model, val_tokens.to(device), tables.to(device), mine, seq_len, batch_seqs, device,
                             tick)
    finally:
        model.train(was_training)
    out = finish(sums, t0)
    out["windows"] = len(plan)
    return out


# --------------------------------------------------------------------------------------------------
# Stateful SSM eval
# --------------------------------------------------------------------------------------------------


def _stateful_step(model, tokens, pos: list[int], T: int, states, tables, device, sums):
    """Score targets pos[r]+1 .. pos[r]+T of each row r with the carried states; return the new states."""
    win = torch.stack([tokens[p:p + T + 1] for p in pos])  # (R, T+1), on the device already
    x, y = win[:, :-1], win[:, 1:]  # (R, T)
    with autocast(device):
        logits, states = model(x, states=states, return_states=True)  # (R, T, V)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    sums[0] += nll.double().sum()
    sums[1] += target_bytes(x, y, tables).sum()
    sums[2] += y.numel()
    return states


@torch.no_grad()
def eval_stateful(model, val_tokens: torch.Tensor, tables: ByteTables, seq_len: int, batch_seqs: int,
                  device: torch.device | str | None = None) -> dict:
    """Stateful SSM eval. The stream is cut into up to `batch_seqs` contiguous segments (one per batch row,
    for parallelism); each segment is read in consecutive non-overlapping windows of seq_len with the SSM
    recurrent states (and the BigramHash previous token) carried from window to window, so SSM layers see
    the whole segment while attention layers see only the current window. Every target is scored once;
    each segment's first window starts without state. Under torchrun the segments are split across ranks.
    Raises GolfError for a model without recurrent layers (check `model.supports_state` first)."""
    device = _device_of(model, device)
    if not getattr(model, "supports_state", False):
        raise GolfError("stateful eval needs a model with SSM layers (layer_pattern has no 'M')")
    t0 = time.time()
    was_training = model.training
    model.eval()
    tables = tables.to(device)
    tokens = val_tokens.to(device)  # windows are sliced on the device: no host copy per step
    n_targets = val_tokens.numel() - 1
    if n_targets < seq_len:
        raise GolfError(f"eval seq_len {seq_len} is longer than the validation set ({val_tokens.numel()} tokens)")
    rows = max(1, min(batch_seqs, n_targets // seq_len))
    seg = n_targets // rows  # targets per segment; the last segment also takes the remainder
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    rank, world = dist_info()
    bounds = [(r * seg, (r + 1) * seg if r < rows - 1 else n_targets) for r in range(rows)][rank::world]
    try:
        if bounds:
            # all rows together while every row has tokens left, then the longer rows alone
            common = min(e - s for s, e in bounds)
            states = None
            for off in range(0, common, seq_len):
                T = min(seq_len, common - off)
                states = _stateful_step(model, tokens, [s + off for s, _ in bounds], T, states, tables,
                                        device, sums)
            for r, (s, e) in enumerate(bounds):
                st, pos = _select_row(states, r), s + common
                while pos < e:
                    T = min(seq_len, e - pos)
                    st = _stateful_step(model, tokens, [pos], T, st, tables, device, sums)
                    pos += T
    finally:
        model.train(was_training)
    out = finish(sums, t0)
    out["segments"] = rows
    return out


def _select_row(states: dict, r: int) -> dict:
    """Row r of a batched state (every state tensor has the batch first)."""
    layers = [None if st is None else tuple(t[r:r + 1] for t in st) for st in states["layers"]]
    return {"prev_token": states["prev_token"][r:r + 1], "layers": layers}


# --------------------------------------------------------------------------------------------------
# Stage inputs
# --------------------------------------------------------------------------------------------------


def load_eval_inputs(artifact_dir: str | Path, data_dir: str | Path, device: torch.device, max_tokens: int,
                     seq_len: int, key: str = "eval.seq_len"):
    """(model, val tokens, byte tables) for an eval stage: the model ONLY from the packaged artifact (what
    is scored is what would be submitted), the val shards (max_tokens cap, 0 = all), the tokenizer's bytes."""
    from golf.artifact import load_model_from_artifact
    from golf.errors import ArtifactError

    artifact_dir = Path(artifact_dir)
    if not artifact_dir.exists():  # a folder or its model file (open_artifact takes either)
        raise ArtifactError(f"artifact {str(artifact_dir)!r} not found (run the package stage first)")
    model = load_model_from_artifact(artifact_dir, device)
    val = load_tokens(list_shards(data_dir, "val"), max_tokens)
    if val.numel() - 1 < seq_len:
        raise GolfError(f"{key} = {seq_len} is longer than the validation set ({val.numel()} tokens in "
                        f"{Path(data_dir) / 'fineweb_val_*.bin'}, max_tokens cap {max_tokens or 'none'}): "
                        "lower the seq_len or use more validation data")
    tables = build_byte_tables(tokenizer_path(data_dir), model.cfg.vocab_size)
    return model, val, tables
