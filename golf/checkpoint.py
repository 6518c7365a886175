"""Training checkpoints: runs/<seed>/ckpt/checkpoint.pt, written atomically (a kill during the write keeps the
previous one). A checkpoint holds the model, EMA, optimizer and loader states, every RNG state, the step, the
elapsed budget and the curve, plus a fingerprint of everything that determines the run (seed, model and
training settings, world size, data). A rerun resumes from a checkpoint whose fingerprint matches and starts
fresh, with a warning naming what changed, from one that does not (e.g. after a params change under DVC, whose
`persist: true` keeps the folder). Loading is weights_only: a checkpoint is tensors and containers, never
arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from golf.config import Params, to_dict
from golf.errors import TrainingError
from golf.io import atomic_path

log = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
CKPT_FORMAT = 2
# train settings that do not change the trajectory: a checkpoint stays resumable when only these differ
RESUME_FREE_KEYS = ("log_every", "checkpoint_every", "val_tokens", "compile", "device", "host_runahead",
                    "optimizer_graph", "profile_steps", "profile_first_step")

# what torch.load of a damaged or foreign file raises
_UNREADABLE = (RuntimeError, OSError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError)


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
        # weights_only: a checkpoint is plain tensors and containers, never arbitrary pickled objects. Read onto
        # the CPU: the model, EMA and optimizers copy their states onto the training device as they load them
        # (torch.optim casts each state to its parameter's device), and the RNG and loader states must be CPU
        # tensors; reading onto the GPU held a second copy of everything there at once.
        blob = torch.load(path, map_location="cpu", weights_only=True)
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


def checkpoint_step(path: Path) -> str:
    """The step of the checkpoint on disk, for error messages ('none' when there is none)."""
    if not path.is_file():
        return "none"
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True)["state"]["step"])
    except _UNREADABLE:  # an error message must not fail on a bad file
        return "unreadable"


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


def resume_or_start(path: Path, model, ema, opts, loader, fingerprint: dict, device: torch.device) -> TrainState:
    """The state to train from: the checkpoint at `path` restored into model, EMA, optimizers, loader and RNGs
    when it exists and its fingerprint matches, else a fresh start (nothing restored)."""
    if path.is_file():
        return load_checkpoint(path, model, ema, opts, loader, fingerprint, device) or TrainState()
    return TrainState()
