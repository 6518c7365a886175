"""The hybrid language model: token + BigramHash embeddings, a stack of Mamba-2 (`M`) and attention+MLP
(`A`) blocks in the order of `model.layer_pattern`, U-Net skips between the two halves, a tied head with
a logit softcap.

With layer_pattern `AAAAAAAAA`, MLP 2x and no BigramHash this is the challenge's naive baseline
(openai/parameter-golf train_gpt.py): 17,059,912 parameters, checked by tests/test_model.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from golf.attention import GQAttention, resolve_attn_backend
from golf.config import ModelConfig, section_from_dict, to_dict
from golf.errors import GolfError
from golf.io import atomic_path, read_json, write_json_atomic
from golf.ssm import Mamba2Mixer, resolve_ssm_backend

log = logging.getLogger(__name__)

SSM_DYNAMICS = ("A_log", "dt_bias", ".D", "conv1d.")


class QATLinear(nn.Linear):
    """nn.Linear with optional int-k fake quantization of its weight (straight-through gradient).

    The switch is a registered buffer, not a Python attribute: torch.compile traces `qat_on` as a tensor
    input, so flipping it changes the compiled function's output without a recompile and cannot be
    constant-folded away.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("qat_on", torch.zeros(()), persistent=False)
        self.register_buffer("qat_qmax", torch.full((), 31.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        scale = (w.detach().abs().amax(dim=1, keepdim=True) / self.qat_qmax).clamp_min(1e-8)  # (out, 1)
        w_q = torch.clamp(torch.round(w / scale), -self.qat_qmax, self.qat_qmax) * scale
        w = w + (w_q - w).detach() * self.qat_on  # straight-through: forward sees w_q when on
        return F.linear(x, w, self.bias)


class MLP(nn.Module):
    def __init__(self, d_model: int, mult: float):
        super().__init__()
        hidden = int(mult * d_model)
        self.fc = QATLinear(d_model, hidden)
        self.proj = QATLinear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)).square())  # relu²


class AttentionBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, attn_backend: str, flash_fn):
        super().__init__()
        d = cfg.d_model
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)]))  # (2, d): x vs x0
        self.attn = GQAttention(d, cfg.num_heads, cfg.num_kv_heads, cfg.rope_base, QATLinear, attn_backend,
                                flash_fn)
        self.mlp = MLP(d, cfg.mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))

    def forward(self, x, x0, state=None, return_state=False):
        x = self.resid_mix[0].to(x.dtype) * x + self.resid_mix[1].to(x.dtype) * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(F.rms_norm(x, (x.shape[-1],)))
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(F.rms_norm(x, (x.shape[-1],)))
        return (x, None) if return_state else x


class MambaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, ssm_backend: str, ssd_fn):
        super().__init__()
        d = cfg.d_model
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)]))
        self.mixer = Mamba2Mixer(d, cfg.d_state, cfg.d_conv, cfg.expand, cfg.headdim, cfg.ngroups,
                                 cfg.chunk_size, QATLinear, ssm_backend, ssd_fn)
        self.mixer_scale = nn.Parameter(torch.ones(d))

    def forward(self, x, x0, state=None, return_state=False):
        x = self.resid_mix[0].to(x.dtype) * x + self.resid_mix[1].to(x.dtype) * x0
        h = F.rms_norm(x, (x.shape[-1],))
        if return_state:
            y, new_state = self.mixer(h, state, return_state=True)
            return x + self.mixer_scale.to(x.dtype) * y, new_state
        return x + self.mixer_scale.to(x.dtype) * self.mixer(h, state)


class BigramHash(nn.Module):
    """Embedding of the (previous token, token) pair, hashed into `buckets` rows, projected to d_model."""

    def __init__(self, buckets: int, dim: int, d_model: int):
        super().__init__()
        self.buckets = buckets
        self.emb = nn.Embedding(buckets, dim)
        self.proj = QATLinear(dim, d_model)
        nn.init.normal_(self.emb.weight, std=0.01)
        nn.init.zeros_(self.proj.weight)

    def forward(self, ids: torch.Tensor, prev_first: torch.Tensor | None = None) -> torch.Tensor:
        """ids: (B, T); prev_first: (B,) token before ids[:, 0] (carried state) or None (→ bucket 0)."""
        prev = torch.roll(ids, 1, dims=1)
        first = prev_first if prev_first is not None else torch.full_like(ids[:, 0], -1)
        prev[:, 0] = first
        h = (prev * 1000003 + ids) % (self.buckets - 1) + 1  # bucket 0 = "no previous token"
        h = torch.where(prev < 0, torch.zeros_like(h), h)
        return self.proj(self.emb(h))  # (B, T, d_model)


class GolfLM(nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        ssm_path, ssd_fn = resolve_ssm_backend(cfg.ssm_backend, device) if "M" in cfg.layer_pattern \
            else ("none", None)
        attn_path, flash_fn = resolve_attn_backend(cfg.attn_backend, device) if "A" in cfg.layer_pattern \
            else ("none", None)
        self.kernel_paths = {"ssm": ssm_path, "attn": attn_path}
        log.info("kernel paths: %s", self.kernel_paths)
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, d) if cfg.bigram_buckets else None
        self.blocks = nn.ModuleList(
            MambaBlock(cfg, ssm_path, ssd_fn) if kind == "M" else AttentionBlock(cfg, attn_path, flash_fn)
            for kind in cfg.layer_pattern)
        n = len(self.blocks)
        self.num_encoder = n // 2
        self.num_skips = min(self.num_encoder, n - self.num_encoder) if cfg.unet_skips else 0
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, d)) if self.num_skips else None
        self.lm_head = None if cfg.tie_embeddings else QATLinear(d, cfg.vocab_size)
        for name, p in self.named_parameters():  # zero-init each block's output projection
            if name.endswith(("o_proj.weight", "mlp.proj.weight", "out_proj.weight")):
                nn.init.zeros_(p)

    # ----------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, states: dict | None = None, return_states: bool = False):
        """input_ids (B, T) → logits (B, T, V) fp32. With return_states, also the recurrent state to
        carry into the next window (SSM layers; attention layers see only the current window)."""
        x = self.tok_emb(input_ids)  # (B, T, d)
        if self.bigram is not None:
            x = x + self.bigram(input_ids, None if states is None else states["prev_token"])
        x = F.rms_norm(x, (x.shape[-1],))
        x0 = x
        layer_states = states["layers"] if states is not None else [None] * len(self.blocks)
        new_states = []
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder and self.num_skips and skips and i - self.num_encoder < self.num_skips:
                x = x + self.skip_weights[i - self.num_encoder].to(x.dtype) * skips.pop()
            if return_states:
                x, st = block(x, x0, layer_states[i], return_state=True)
                new_states.append(st)
            else:
                x = block(x, x0, layer_states[i])
            if i < self.num_encoder:
                skips.append(x)
        x = F.rms_norm(x, (x.shape[-1],))
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, w.to(x.dtype)).float()  # (B, T, V)
        if self.cfg.logit_softcap > 0:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        if return_states:
            return logits, {"prev_token": input_ids[:, -1], "layers": new_states}
        return logits

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @property
    def supports_state(self) -> bool:
        return "M" in self.cfg.layer_pattern

    # ----------------------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Optimizer groups: block matrices (Muon), Mamba projections (Muon, own lr), embeddings and
        scalars/dynamics (Adam). Every parameter lands in exactly one group."""
        groups: dict[str, list] = {"matrix": [], "mamba_matrix": [], "embed": [], "scalar": []}
        for name, p in self.named_parameters():
            if name in ("tok_emb.weight", "bigram.emb.weight"):
                groups["embed"].append((name, p))
            elif p.ndim == 2 and name.endswith(("in_proj.weight", "out_proj.weight")) and ".mixer." in name:
                groups["mamba_matrix"].append((name, p))
            elif p.ndim == 2 and name.endswith(".weight") and "skip_weights" not in name \
                    and "resid_mix" not in name:
                groups["matrix"].append((name, p))
            else:
                groups["scalar"].append((name, p))
        return groups

    def set_qat(self, enabled: bool, bits: int = 6) -> None:
        for m in self.modules():
            if isinstance(m, QATLinear):
                m.qat_on.fill_(1.0 if enabled else 0.0)
                m.qat_qmax.fill_(float(2 ** (bits - 1) - 1))


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> GolfLM:
    return GolfLM(cfg, device).to(device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model: GolfLM, cfg: ModelConfig, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json_atomic(out_dir / "config.json", to_dict(cfg))


def load_model_config(path: str | Path) -> ModelConfig:
    raw = read_json(path, "model config", GolfError)
    return section_from_dict(ModelConfig, raw, str(path))


def load_model(model_dir: str | Path, device: torch.device | str = "cpu") -> GolfLM:
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg = load_model_config(model_dir / "config.json")
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise GolfError(f"model weights {str(weights)!r} not found (run the train stage first)")
    model = build_model(cfg, device)
    model.load_state_dict(load_file(str(weights), device=str(device)))
    return model
