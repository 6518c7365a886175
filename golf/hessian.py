"""Calibration: H = XᵀX of the inputs of every linear layer, over calibration tokens.

Calibration tokens come from the TRAIN shards (or from sequences the model samples itself); this module
never lists validation shards.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from golf.config import CalibConfig
from golf.data import BOS_ID, TokenLoader, list_shards
from golf.io import atomic_path


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def collect_hessians(model: nn.Module, batches, device: torch.device) -> tuple[dict[str, torch.Tensor], int]:
    """Run `batches` (iterable of (B, T) token tensors) through the model with forward hooks that add
    XᵀX (float32, (in, in)) per linear layer. Returns the Hessians (summed, not averaged) and the token count."""
    mods = linear_modules(model)
    hess = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float32, device=device)
            for name, m in mods.items()}
    handles = []

    def make_hook(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()  # (B*T, in)
            hess[name].addmm_(x.T, x)
        return hook

    for name, m in mods.items():
        handles.append(m.register_forward_hook(make_hook(name)))
    n_tokens = 0
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    try:
        for x in batches:
            x = x.to(device)
            with autocast:
                model(x)
            n_tokens += x.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for h in hess.values():
            dist.all_reduce(h)
        count = torch.tensor([n_tokens], dtype=torch.float64, device=device)
        dist.all_reduce(count)
        n_tokens = int(count.item())
    return hess, n_tokens


def train_batches(data_dir: Path, cfg: CalibConfig, rank: int = 0, world: int = 1):
    """Calibration batches drawn from the training shards only."""
    loader = TokenLoader(list_shards(data_dir, "train"), cfg.seq_len, cfg.batch_seqs, rank, world, seed=cfg.seed)
    n_batches = -(-cfg.num_sequences // (cfg.batch_seqs * world))
    for _ in range(n_batches):
        yield loader.next_batch()[0]


@torch.no_grad()
def sampled_batches(model: nn.Module, cfg: CalibConfig, device: torch.device, rank: int = 0, world: int = 1):
    """Calibration batches the model writes itself: start at BOS, sample at cfg.temperature."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)
    n_batches = -(-cfg.num_sequences // (cfg.batch_seqs * world))
    model.eval()
    for _ in range(n_batches):
        seq = torch.full((cfg.batch_seqs, 1), BOS_ID, dtype=torch.long, device=device)
        while seq.shape[1] < cfg.seq_len:
            logits = model(seq)[:, -1].float()  # (B, V)
            if cfg.temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / cfg.temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            seq = torch.cat([seq, nxt], dim=1)
        yield seq


def save_hessians(path: Path, hess: dict[str, torch.Tensor], n_tokens: int, n_sequences: int) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.cpu().contiguous() for k, v in hess.items()}, str(tmp),
                  metadata={"tokens": str(n_tokens), "sequences": str(n_sequences), "format": "golf-hessian-1"})


def load_hessians(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    from golf.errors import GolfError

    if not Path(path).is_file():
        raise GolfError(f"Hessians {str(path)!r} not found (run the hessian stage first)")
    out = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out, meta


def calibrate(model: nn.Module, data_dir: Path, cfg: CalibConfig, device: torch.device) -> tuple[dict, dict]:
    t0 = time.time()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
        else (0, 1)
    batches = train_batches(data_dir, cfg, rank, world) if cfg.source == "train" \
        else sampled_batches(model, cfg, device, rank, world)
    hess, n_tokens = collect_hessians(model, batches, device)
    info = {"layers": len(hess), "tokens": n_tokens, "samples": n_tokens // cfg.seq_len, "source": cfg.source,
            "secs": round(time.time() - t0, 3)}
    return hess, info
