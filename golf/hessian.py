"""Calibration for GPTQ: H = XᵀX of the inputs X (tokens, in) of every nn.Linear, over calibration tokens.

Forward hooks on every nn.Linear (attention q/k/v/o, MLP fc/proj, Mamba in_proj/out_proj, BigramHash
projection, an untied head) add XᵀX in float32 while calibration batches run through the model. H is a
sum, not a mean (GPTQ is invariant to its scale); the token and sequence counts go into the file's metadata.
Under torchrun each rank calibrates on its own disjoint share and H and the counts are all-reduced.

Calibration tokens come from the TRAIN shards (`calibration_shards` is the only place this module lists
shards, and it asks for split "train", a constant), or from sequences the model samples itself (source
"self", starting at BOS). Validation data is never read here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from golf.config import CalibConfig
from golf.data import BOS_ID, list_shards, read_shard_header
from golf.errors import GolfError
from golf.io import atomic_path
from golf.loaders import TokenLoader
from golf.progress import counted
from golf.runtime import autocast
from golf.runtime import rank_world as _dist_world

HESSIAN_FORMAT = "golf-hessian-1"


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


@contextlib.contextmanager
def _exact_fp32_matmul():
    """XᵀX must be accumulated in true fp32: training may have switched CUDA matmuls to TF32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """The model in eval mode for the block (calibration runs it as it is scored), its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str,
                     autocast_dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Run `batches` ((B, T) token tensors) through the model with hooks adding XᵀX per linear layer.

    Returns ({module name: H (in, in) float32, summed over all tokens and ranks}, total token count).
    The model runs in eval mode under autocast(`autocast_dtype`) on CUDA, as it does when it is scored."""
    device = torch.device(device)
    mods = linear_modules(model)
    if not mods:
        raise GolfError("calibration: the model has no nn.Linear layers to collect Hessians for")
    hess = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float32, device=device)
            for name, m in mods.items()}

    def make_hook(name: str):
        def hook(_module, inputs, _output):
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1]).float()  # (tokens, in)
            hess[name].addmm_(x.T, x)  # (in, in) += XᵀX
        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in mods.items()]
    n_tokens = 0
    try:
        with _eval_mode(model), _exact_fp32_matmul():
            for x in batches:
                x = x.to(device)
                with autocast(device, autocast_dtype):
                    model(x)
                n_tokens += x.numel()
    finally:
        for h in handles:
            h.remove()
    _, world = _dist_world()
    if world > 1:
        for name in sorted(hess):  # same order on every rank
            dist.all_reduce(hess[name])
        count = torch.tensor([n_tokens], dtype=torch.int64, device=device)
        dist.all_reduce(count)
        n_tokens = int(count.item())
    return hess, n_tokens


def _my_share(total: int, rank: int, world: int) -> int:
    """Sequences this rank calibrates on: `total` split as evenly as possible, earlier ranks +1."""
    return total // world + (1 if rank < total % world else 0)


def calibration_shards(data_dir: str | Path, tokens_needed: int) -> list[Path]:
    """The first TRAIN shards that together hold at least `tokens_needed` tokens (all of them if fewer).

    The split is a constant here and nowhere else in this module is a shard listed: calibration cannot
    read validation data, whatever the params say."""
    out, total = [], 0
    for shard in list_shards(data_dir, "train"):
        out.append(shard)
        total += read_shard_header(shard)
        if total >= tokens_needed:
            break
    return out


def train_batches(data_dir: str | Path, cfg: CalibConfig, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """This rank's calibration batches (B, T) of random training windows, cfg.num_sequences over all ranks.
    Only as many shards are loaded as give ~4x the tokens needed (one shard of a full export, usually)."""
    need = max(4 * cfg.num_sequences * (cfg.seq_len + 1), 1 << 20)
    loader = TokenLoader(calibration_shards(data_dir, need), cfg.seq_len, cfg.batch_seqs, rank, world,
                         seed=cfg.seed)
    left = _my_share(cfg.num_sequences, rank, world)
    while left > 0:
        x = loader.next_batch()[0][:left]  # (B, T)
        left -= x.shape[0]
        yield x


@torch.no_grad()
def sampled_batches(model: nn.Module, cfg: CalibConfig, device: torch.device | str, rank: int = 0, world: int = 1,
                    autocast_dtype: torch.dtype | None = None) -> Iterator[torch.Tensor]:
    """Calibration batches (B, T) the model writes itself: from BOS, sampling at cfg.temperature (0 = greedy).

    Each new token re-runs the whole prefix (attention layers carry no cache), so a sequence costs
    O(seq_len²) token-forwards: ~seq_len/2 times the cost of calibrating on training text."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    left = _my_share(cfg.num_sequences, rank, world)
    with _eval_mode(model):
        while left > 0:
            b = min(cfg.batch_seqs, left)
            seq = torch.full((b, 1), BOS_ID, dtype=torch.long, device=device)  # (B, 1)
            while seq.shape[1] < cfg.seq_len:
                with autocast(device, autocast_dtype):
                    logits = model(seq)[:, -1].float()  # (B, V)
                if cfg.temperature <= 0:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    probs = torch.softmax(logits / cfg.temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=gen)  # (B, 1)
                seq = torch.cat([seq, nxt], dim=1)
            left -= b
            yield seq


@torch.no_grad()
def warm_up(model: nn.Module, cfg: CalibConfig, device: torch.device | str,
            autocast_dtype: torch.dtype | None = None, rank: int = 0, world: int = 1) -> float:
    """One untimed forward of all-zero tokens at the first calibration batch's shape, in eval mode under the
    calibration's autocast, no hooks: whatever the eval-mode model compiles at its first call (golf's Triton
    kernels, FA4's where it runs) compiles here. Timed inside, hybrid_12_b131k's first batch took 18 s on a cold
    H200 and the other seven well under 1 s together (bench/RESULTS.md twenty-third block). The training loop
    keeps its first step's compile off the budget the same way (train.warmup_s); no data is read. Returns the
    seconds it took."""
    device = torch.device(device)
    b = min(cfg.batch_seqs, _my_share(cfg.num_sequences, rank, world))
    if b < 1:
        return 0.0
    t0 = time.time()
    with _eval_mode(model), autocast(device, autocast_dtype):
        model(torch.zeros(b, cfg.seq_len, dtype=torch.long, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return round(time.time() - t0, 3)


def calibrate(model: nn.Module, data_dir: str | Path, cfg: CalibConfig, device: torch.device | str,
              autocast_dtype: torch.dtype | None = None,
              progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Hessians of every linear layer over cfg.num_sequences calibration sequences (all ranks together).
    Returns (hessians, info) with info = layers, samples (sequences), tokens, secs, warmup_s, source, seq_len:
    secs (what calib.reserve_s is checked against) starts after `warm_up`, whose seconds are warmup_s.
    progress(sequences done, this rank's sequences) is called after each batch."""
    rank, world = _dist_world()
    warmup_s = warm_up(model, cfg, device, autocast_dtype, rank, world)
    t0 = time.time()
    if cfg.source == "train":
        batches = train_batches(data_dir, cfg, rank, world)
    elif cfg.source == "self":
        batches = sampled_batches(model, cfg, device, rank, world, autocast_dtype)
    else:
        raise GolfError(f"calib.source {cfg.source!r}: expected 'train' or 'self'")
    if progress is not None:
        batches = counted(batches, _my_share(cfg.num_sequences, rank, world), progress)
    hess, n_tokens = collect_hessians(model, batches, device, autocast_dtype)
    info = {"layers": len(hess), "samples": n_tokens // cfg.seq_len, "tokens": n_tokens, "source": cfg.source,
            "seq_len": cfg.seq_len, "world_size": world, "secs": round(time.time() - t0, 3), "warmup_s": warmup_s}
    return hess, info


def save_hessians(path: str | Path, hess: dict[str, torch.Tensor], n_tokens: int, n_sequences: int,
                  source: str = "train", secs: float | None = None) -> None:
    """safetensors keyed by module name (atomic), the counts (and the calibration's seconds) in its metadata."""
    from safetensors.torch import save_file

    meta = {"format": HESSIAN_FORMAT, "tokens": str(n_tokens), "sequences": str(n_sequences), "source": source}
    if secs is not None:
        meta["secs"] = repr(float(secs))
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in hess.items()}, str(tmp), metadata=meta)


def load_hessians(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(hessians, metadata) of a hessian-stage output; GolfError naming the file if it is missing or foreign."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GolfError(f"Hessians {str(path)!r} not found (run the hessian stage first)")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            out = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a file handle, not a dict)
    except Exception as e:  # noqa: BLE001 (safetensors raises its own error type for a corrupt file)
        raise GolfError(f"Hessians {str(path)!r} cannot be read: {e}") from None
    if meta.get("format") != HESSIAN_FORMAT:
        raise GolfError(f"Hessians {str(path)!r}: format {meta.get('format')!r}, expected {HESSIAN_FORMAT!r}")
    for k, h in out.items():
        if h.ndim != 2 or h.shape[0] != h.shape[1] or h.dtype != torch.float32:
            raise GolfError(f"Hessians {str(path)!r}: {k!r} is {h.dtype} {list(h.shape)}, expected a square fp32 matrix")
    return out, meta


def calibration_budget(hessian_s: float | None, gptq_s: float, reserve_s: float, wallclock_s: float) -> dict:
    """The challenge counts calibration inside the training budget: the train stage leaves calib.reserve_s of
    train.wallclock_s unused, and hessian + GPTQ seconds must fit in it. Returns the record for the metrics, with
    unused_s, the reserve's seconds that neither training nor calibration used (what a smaller reserve would give
    back to training); GolfError when they do not fit (checked only with a reserve and a wallclock budget)."""
    rec = {"hessian_s": hessian_s, "gptq_s": round(gptq_s, 3), "reserve_s": reserve_s,
           "checked": reserve_s > 0 and wallclock_s > 0}
    if hessian_s is not None:
        rec["calib_s"] = round(hessian_s + gptq_s, 3)
    if rec["checked"]:
        if hessian_s is None:
            raise GolfError("the Hessians record no calibration seconds (an older hessian stage): run the hessian "
                            "stage again so that calib.reserve_s can be checked")
        if rec["calib_s"] > reserve_s:
            raise GolfError(f"calibration took {rec['calib_s']:.1f} s (hessian {hessian_s:.1f} s + GPTQ {gptq_s:.1f} s), "
                            f"over calib.reserve_s = {reserve_s:g} s of the training budget: raise calib.reserve_s "
                            "or calibrate on fewer sequences (calib.num_sequences)")
        rec["unused_s"] = round(reserve_s - rec["calib_s"], 3)
    return rec
