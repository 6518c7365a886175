"""Legal score-first test-time training (TTT).

The validation stream is cut into chunks, in order. Chunk i is first scored with the current weights
(no_grad; its loss and bytes are final), and only then used for optimizer steps, which can only help
chunks i+1, i+2, .... No token is ever adapted on before it has been scored; there is a single pass.
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from golf.config import TTTConfig
from golf.data import ByteTables
from golf.errors import GolfError
from golf.evaluate import _autocast, score_windows, window_plan


def adapt_params(model, which: str) -> list[torch.nn.Parameter]:
    """The parameters TTT updates: all, norms (1-D gains/scales), ssm (Mamba mixers) or mlp."""
    chosen = []
    for name, p in model.named_parameters():
        if which == "all" or (which == "norms" and p.ndim == 1) or (which == "ssm" and ".mixer." in name) \
                or (which == "mlp" and ".mlp." in name):
            chosen.append(p)
    if not chosen:
        raise GolfError(f"ttt.params {which!r} selects no parameters of this model")
    return chosen


def ttt_eval(model, val_tokens: torch.Tensor, tables: ByteTables, cfg: TTTConfig, device: torch.device,
             adapt: bool = True, events: list | None = None) -> dict:
    """Score-first TTT over val_tokens (N,). `events`, if given, receives ("score" | "adapt", first_target,
    last_target) tuples in the order they happen (global target indices, inclusive), for audits/tests."""
    t0 = time.time()
    n_targets = val_tokens.numel() - 1
    if n_targets < 1:
        raise GolfError("TTT eval needs at least two validation tokens")
    tables = tables.to(device)
    params = adapt_params(model, cfg.params) if adapt else []
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if adapt else None
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    C = cfg.chunk_tokens
    for c0 in range(0, n_targets, C):
        seg = val_tokens[c0:min(c0 + C, n_targets) + 1]  # targets c0+1 .. c0+len(seg)-1
        L = min(cfg.seq_len, seg.numel() - 1)
        # 1. score the chunk with the current weights
        model.eval()
        plan = window_plan(seg.numel(), L, cfg.stride or L)
        sums += score_windows(model, seg, tables, plan, L, cfg.batch_seqs, device)
        if events is not None:
            events.append(("score", c0 + 1, c0 + seg.numel() - 1))
        # 2. only now adapt on it (the last chunk helps nothing later: skip it)
        if not adapt or c0 + C >= n_targets or seg.numel() - 1 < L:
            continue
        model.train()
        n_seq = (seg.numel() - 1) // L
        xs = seg[: n_seq * L].view(n_seq, L)
        ys = seg[1: n_seq * L + 1].view(n_seq, L)
        for _ in range(cfg.epochs):
            for b in range(0, n_seq, cfg.batch_seqs):
                x, y = xs[b:b + cfg.batch_seqs].to(device), ys[b:b + cfg.batch_seqs].to(device)
                with _autocast(device):
                    logits = model(x)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:  # every rank adapts on the same chunk: average grads, keep weights identical
                    for p in params:
                        if p.grad is not None:
                            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if events is not None:
                    events.append(("adapt", c0 + 1 + b * L, c0 + min(b + cfg.batch_seqs, n_seq) * L))
    model.eval()
    # Under torchrun every rank scores the whole stream and adapts identically (gradients averaged), so the
    # sums are already global: no all-reduce of them.
    nll, n_bytes, n_tok = sums.tolist()
    return {"val_loss": nll / n_tok, "val_bpb": nll / math.log(2) / n_bytes, "tokens": int(n_tok),
            "bytes": int(n_bytes), "eval_s": round(time.time() - t0, 3)}
