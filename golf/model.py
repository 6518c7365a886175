"""The hybrid language model: token + BigramHash embeddings, a stack of Mamba-2 (`M`, with an MLP of its own
when model.mamba_mlp_mult > 0) and attention+MLP (`A`) blocks in the order of `model.layer_pattern`, U-Net
skips between the two halves, a tied head with a logit softcap. Options off by default: SmearGate on the token
embeddings (model.smear_gate), XSA in the attention layers (model.xsa, golf.attention.exclude_self_value),
depth-damped pre-norms (model.ln_scale).

With layer_pattern `AAAAAAAAA`, MLP 2x and no BigramHash this is the challenge's naive baseline
(openai/parameter-golf train_gpt.py): 17,059,912 parameters, checked by tests/test_model.py.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from golf.attention import GQAttention, resolve_attn_backend
from golf.config import ModelConfig, section_from_dict, to_dict
from golf.errors import GolfError
from golf.io import atomic_path, read_json, write_json_atomic
from golf.param_groups import OPTIM_GROUPS, optim_group
from golf.ssm import Mamba2Mixer, SSMKernels, resolve_ssm_backend

log = logging.getLogger(__name__)

SMEAR_GATE_INIT = -4.0  # model.smear_gate's initial gate logit: sigmoid(-4) = 0.018, nearly no blend


def pre_norm(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A block's pre-norm: rms_norm over the channels, times `scale` (model.ln_scale's 1/sqrt(layer + 1); 1.0
    when off, and then no multiply at all, so the default model computes exactly what it did before)."""
    h = F.rms_norm(x, (x.shape[-1],))
    return h if scale == 1.0 else h * scale


def ln_scale_factor(cfg: ModelConfig, layer_idx: int) -> float:
    """model.ln_scale: the pre-norm factor of the block at `layer_idx` (0-based over model.layer_pattern)."""
    return 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0


def norm_eps(dtype: torch.dtype) -> float:
    """F.rms_norm's eps when none is given, for inputs of `dtype`: the machine epsilon of the dtype it computes
    in (fp32's 1.19e-7 for bf16, fp16 and fp32; fp64's for fp64), as torch's _fused_rms_norm picks it."""
    return torch.finfo(torch.promote_types(dtype, torch.float32)).eps


def add_mix_norm_reference(x, y=None, s=None, skip=None, w=None, x0=None, mix=None, norm_scale: float = 1.0,
                           keep_out: bool = False):
    """model.block_norm's residual glue written with PyTorch ops in x's dtype, exactly as the blocks spell it
    out under "torch": out = x + s y (the residual add of the sublayer before; without y, x; y without s, x + y:
    the scale folded into the sublayer's last projection, model.block_norm "golf_fold"), + w skip (a U-Net
    skip add, without skip none), xm = mix[0] out + mix[1] x0 (a block's resid_mix; without mix, out), h =
    pre_norm(xm, norm_scale). Returns (out or None unless keep_out, xm, h). golf::add_mix_norm
    (golf/block_norm_kernel.py) computes the same in one kernel; the model calls this twin where the kernels
    cannot run (CPU tensors outside Triton's interpreter)."""
    out = x
    if y is not None:
        out = out + (y if s is None else s.to(out.dtype) * y)
    if skip is not None:
        out = out + w.to(out.dtype) * skip
    xm = out if mix is None else mix[0].to(out.dtype) * out + mix[1].to(out.dtype) * x0
    return (out if keep_out else None), xm, pre_norm(xm, norm_scale)


def resolve_block_norm(choice: str, device: torch.device | str):
    """model.block_norm: the function a "golf" model's blocks call for their glue, with
    add_mix_norm_reference's signature (None for "torch": the blocks' own expressions). On a CUDA device, or
    anywhere Triton's interpreter is on (TRITON_INTERPRET=1: the tests), golf::add_mix_norm (its CUDA kernels;
    on CPU the interpreted kernels); elsewhere the PyTorch twin, without importing triton. A GolfError where
    the kernels do not import on CUDA."""
    if choice == "torch":
        return None
    if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return add_mix_norm_reference
    try:
        from golf import block_norm_kernel
    except ImportError as e:
        raise GolfError(f"model.block_norm is '{choice}' but golf's Triton kernels do not import here ({e}): they "
                        "need triton (`pip install triton`) and golf/block_norm_kernel.py; use model.block_norm "
                        "'torch'") from None
    return block_norm_kernel.add_mix_norm


def resolve_qk_rope(choice: str, device: torch.device | str):
    """model.qk_rope: the function the attention layers call for their queries' and keys' per-head norm, RoPE and
    gain, (x, cos, sin, gain or None) -> y, or None for "torch" (GQAttention's own expressions). On a CUDA device,
    or anywhere Triton's interpreter is on (TRITON_INTERPRET=1: the tests), golf::qk_norm_rope
    (golf/qk_rope_kernel.py); elsewhere None, the torch path, without importing triton. A GolfError where the
    kernels do not import on CUDA."""
    if choice == "torch" or (torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1"):
        return None
    try:
        from golf import qk_rope_kernel
    except ImportError as e:
        raise GolfError(f"model.qk_rope is 'golf' but golf's Triton kernels do not import here ({e}): they need "
                        "triton (`pip install triton`) and golf/qk_rope_kernel.py; use model.qk_rope 'torch'") from None
    return qk_rope_kernel.qk_norm_rope


def resolve_lm_loss(choice: str):
    """model.lm_loss: golf.lm_loss.softcapped_cross_entropy_fused for "fused" (imported only then: a training-only
    module, not shipped), None for "autograd"."""
    if choice == "autograd":
        return None
    from golf.lm_loss import softcapped_cross_entropy_fused

    return softcapped_cross_entropy_fused


def resolve_embed_grad(choice: str):
    """model.embed_grad: golf.embed_grad.embedding_sorted_grad for "sorted" (imported only then: a training-only
    module, not shipped), None for "autograd" (the token embedding's own call)."""
    if choice == "autograd":
        return None
    from golf.embed_grad import embedding_sorted_grad

    return embedding_sorted_grad


def residual_mlp_golf(mlp: nn.Module, mlp_scale: nn.Parameter, pending: tuple, norm_scale: float, add_mix_norm,
                      fold_scale: bool = False):
    """model.block_norm "golf": a pre-norm residual MLP on the pending stream `pending` = (x, y, s), i.e.
    x + s y not yet added: one add_mix_norm completes the add and norms it; returns the new pending stream
    (x + s y, mlp(h), mlp_scale), or with fold_scale ("golf_fold") (x + s y, mlp(h) with mlp_scale folded into its
    last projection, None)."""
    _, x, h = add_mix_norm(*pending, norm_scale=norm_scale)
    if fold_scale:
        return x, mlp(h, out_scale=mlp_scale), None
    return x, mlp(h), mlp_scale


class QATLinear(nn.Linear):
    """nn.Linear with optional int-k fake quantization of its weight (straight-through gradient).

    Fake quant: per output row, scale = max|w| / qmax with qmax = 2^(bits-1) - 1, w_q = round(w / scale) *
    scale (the symmetric per-row grid golf.gptq stores). The switch is a registered buffer, not a Python
    attribute: torch.compile traces `qat_on` as a tensor input, so flipping it changes the compiled
    function's output without a recompile and cannot be constant-folded away.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bits: int = 6):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("qat_on", torch.zeros((), dtype=torch.bool), persistent=False)
        self.register_buffer("qat_qmax", torch.empty(()), persistent=False)
        self.set_bits(bits)

    def set_bits(self, bits: int) -> None:
        self.qat_qmax.fill_(float(2 ** (bits - 1) - 1))

    def fake_quant_weight(self) -> torch.Tensor:
        """The weight the forward uses: w_q when QAT is on (gradient straight through to w), else w."""
        w = self.weight
        qmax = self.qat_qmax.to(w.dtype)
        scale = (w.detach().abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-8)  # (out, 1)
        w_q = torch.clamp(torch.round(w.detach() / scale), -qmax, qmax) * scale
        # w_q + (w - w) is exactly w_q in the forward and has gradient 1 with respect to w
        return torch.where(self.qat_on, w_q + (w - w.detach()), w)

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., in) → (..., out); out_scale (out,) scales each output channel through the weight's rows:
        F.linear(x, diag(out_scale) w_q), the same function as out_scale * F.linear(x, w_q) (model.block_norm
        "golf_fold" folds a block's sublayer scale here, so that its residual add needs no scale of its own)."""
        w = self.fake_quant_weight()  # (out, in)
        if out_scale is not None:
            w = out_scale.to(w.dtype)[:, None] * w
        return F.linear(x, w, self.bias)


class MLP(nn.Module):
    """proj(act(fc(x))), hidden = int(mult * d_model). act (model.mlp_act): relu2 = relu(h)², the challenge
    baseline's; leaky_relu2 = leaky_relu(h, 0.5)², which keeps a gradient (and a small positive output) for
    negative pre-activations."""

    def __init__(self, d_model: int, mult: float, act: str = "relu2"):
        super().__init__()
        hidden = int(mult * d_model)
        self.fc = QATLinear(d_model, hidden)
        self.proj = QATLinear(hidden, d_model)
        if act not in ("relu2", "leaky_relu2"):
            raise ValueError(f"MLP: act must be relu2 or leaky_relu2, got {act!r}")
        self.act = act

    def forward(self, x: torch.Tensor, out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """out_scale (d_model,): scales the output channels through proj's weight (QATLinear.forward)."""
        h = self.fc(x)  # (..., hidden)
        h = F.relu(h) if self.act == "relu2" else F.leaky_relu(h, negative_slope=0.5)
        return self.proj(h.square()) if out_scale is None else self.proj(h.square(), out_scale=out_scale)


class AttentionBlock(nn.Module):
    """Pre-norm residual attention, then a pre-norm residual MLP; `layer_idx` (its place in
    model.layer_pattern) sets model.ln_scale's factor on both pre-norms."""

    def __init__(self, cfg: ModelConfig, attn_backend: str, flash_fn, layer_idx: int = 0, qk_rope=None):
        super().__init__()
        d = cfg.d_model
        self.norm_scale = ln_scale_factor(cfg, layer_idx)  # a plain float: no state-dict entry
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)]))  # (2, d): x vs x0
        self.attn = GQAttention(d, cfg.num_heads, cfg.num_kv_heads, cfg.rope_base, QATLinear, attn_backend,
                                flash_fn, cfg.rope_dims, cfg.xsa, cfg.rope, qk_rope)
        self.mlp = MLP(d, cfg.mlp_mult, cfg.mlp_act)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        # model.block_norm "golf_fold": forward_golf scales the sublayers' outputs through their last projections
        self.fold_scale = cfg.block_norm == "golf_fold"

    def forward(self, x, x0, state=None, return_state=False):
        x = self.resid_mix[0].to(x.dtype) * x + self.resid_mix[1].to(x.dtype) * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(pre_norm(x, self.norm_scale))
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(pre_norm(x, self.norm_scale))
        return (x, None) if return_state else x

    def forward_golf(self, pending, x0, add_mix_norm, skip=None, skip_weight=None, keep_in=False, state=None,
                     return_state=False):
        """model.block_norm "golf" (GolfLM._blocks_golf): forward's math on the pending stream (x, y, s) = x + s y
        (y, s None: x), with the U-Net skip add (skip, skip_weight) folded into the first pre-norm. Returns (the
        block's input, x + s y [+ w skip], when keep_in else None; the block's output as a pending stream; None,
        attention carries no state)."""
        x_in, xm, h = add_mix_norm(*pending, skip, skip_weight, x0, self.resid_mix, self.norm_scale, keep_in)
        fold = self.fold_scale
        pending = (xm, self.attn(h, out_scale=self.attn_scale), None) if fold else \
            (xm, self.attn(h), self.attn_scale)
        return x_in, residual_mlp_golf(self.mlp, self.mlp_scale, pending, self.norm_scale, add_mix_norm, fold), None


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba-2 mixer; with model.mamba_mlp_mult > 0 also a pre-norm residual MLP after it
    (as in an attention block; per token, so it adds nothing to the carried state). `layer_idx` sets
    model.ln_scale's factor on both pre-norms."""

    def __init__(self, cfg: ModelConfig, kernels: SSMKernels, layer_idx: int = 0):
        super().__init__()
        d = cfg.d_model
        self.norm_scale = ln_scale_factor(cfg, layer_idx)
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(d), torch.zeros(d)]))
        self.mixer = Mamba2Mixer(d, cfg.d_state, cfg.d_conv, cfg.expand, cfg.headdim, cfg.ngroups,
                                 cfg.chunk_size, QATLinear, kernels, cfg.in_proj_multiple)
        self.mixer_scale = nn.Parameter(torch.ones(d))
        self.fold_scale = cfg.block_norm == "golf_fold"  # as AttentionBlock's
        # None when off: no parameters and no draws from the init RNG, so the default model is unchanged
        self.mlp = MLP(d, cfg.mamba_mlp_mult, cfg.mlp_act) if cfg.mamba_mlp_mult > 0 else None
        self.mlp_scale = nn.Parameter(torch.ones(d)) if self.mlp is not None else None

    def forward(self, x, x0, state=None, return_state=False):
        x = self.resid_mix[0].to(x.dtype) * x + self.resid_mix[1].to(x.dtype) * x0
        h = pre_norm(x, self.norm_scale)
        if return_state:
            y, new_state = self.mixer(h, state, return_state=True)
        else:
            y, new_state = self.mixer(h, state), None
        x = x + self.mixer_scale.to(x.dtype) * y
        if self.mlp is not None:
            x = x + self.mlp_scale.to(x.dtype) * self.mlp(pre_norm(x, self.norm_scale))
        return (x, new_state) if return_state else x

    def forward_golf(self, pending, x0, add_mix_norm, skip=None, skip_weight=None, keep_in=False, state=None,
                     return_state=False):
        """model.block_norm "golf": as AttentionBlock.forward_golf, with the mixer (and its carried state) in
        place of attention, and the MLP only with model.mamba_mlp_mult > 0."""
        x_in, xm, h = add_mix_norm(*pending, skip, skip_weight, x0, self.resid_mix, self.norm_scale, keep_in)
        out_scale = self.mixer_scale if self.fold_scale else None
        if return_state:
            y, new_state = self.mixer(h, state, return_state=True, out_scale=out_scale)
        else:
            y, new_state = self.mixer(h, state, out_scale=out_scale), None
        pending = (xm, y, None if self.fold_scale else self.mixer_scale)
        if self.mlp is not None:
            pending = residual_mlp_golf(self.mlp, self.mlp_scale, pending, self.norm_scale, add_mix_norm,
                                        self.fold_scale)
        return x_in, pending, new_state


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
        kernels = (resolve_ssm_backend(cfg.ssm_backend, device, cfg.ssm_compile, cfg.gated_norm, cfg.ssm_scan,
                                       cfg.ssm_conv)
                   if "M" in cfg.layer_pattern else None)
        attn_path, flash_fn = resolve_attn_backend(cfg.attn_backend, device) if "A" in cfg.layer_pattern \
            else ("none", None)
        # model.qk_rope "golf": golf::qk_norm_rope where its kernels run (resolve_qk_rope); None: the torch path
        qk_rope = resolve_qk_rope(cfg.qk_rope, device) if "A" in cfg.layer_pattern and cfg.rope else None
        self.kernel_paths = {"ssm": kernels.label if kernels else "none",
                             "attn": attn_path + ("+golf_qk_rope" if qk_rope is not None else "")}
        # model.block_norm "golf": golf::add_mix_norm or its PyTorch twin (resolve_block_norm); None for "torch"
        self.add_mix_norm = resolve_block_norm(cfg.block_norm, device)
        # model.lm_loss "fused": the training loss with its logits' gradient made in the forward; None: autograd's
        self.fused_loss = resolve_lm_loss(cfg.lm_loss)
        # model.embed_grad "sorted": the token lookup with golf/embed_grad.py's backward; None: nn.Embedding's
        self.embed_lookup = resolve_embed_grad(cfg.embed_grad)
        log.info("kernel paths on %s: %s (requested ssm=%s, attn=%s)", device, self.kernel_paths,
                 cfg.ssm_backend, cfg.attn_backend)
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, d) if cfg.bigram_buckets else None
        # model.smear_gate: per-channel gate logits (d,); None when off (no parameter, no init draw)
        self.smear_gate = nn.Parameter(torch.full((d,), SMEAR_GATE_INIT)) if cfg.smear_gate else None
        self.blocks = nn.ModuleList(
            MambaBlock(cfg, kernels, i) if kind == "M" else AttentionBlock(cfg, attn_path, flash_fn, i, qk_rope)
            for i, kind in enumerate(cfg.layer_pattern))
        n = len(self.blocks)
        self.num_encoder = n // 2
        self.num_skips = min(self.num_encoder, n - self.num_encoder) if cfg.unet_skips else 0
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, d)) if self.num_skips else None
        self.lm_head = None if cfg.tie_embeddings else QATLinear(d, cfg.vocab_size)
        for name, p in self.named_parameters():  # zero-init each block's output projection
            if name.endswith(("o_proj.weight", "mlp.proj.weight", "out_proj.weight")):
                nn.init.zeros_(p)

    # ----------------------------------------------------------------------------------------------
    def smear(self, emb: torch.Tensor, prev_first: torch.Tensor | None) -> torch.Tensor:
        """SmearGate (model.smear_gate): e_t <- e_t + sigmoid(g) * (e_{t-1} - e_t) on the token embeddings
        emb (B, T, d), before BigramHash is added and the stream is normed; g (d,) starts at SMEAR_GATE_INIT,
        so the model starts next to the one without the gate, and sigmoid keeps each channel a convex blend of
        the two tokens. e_{-1} is the embedding of prev_first (B,), the carried token before the window
        (states["prev_token"]); with none (or a negative id) position 0 keeps its own embedding.

        The idea is the Parameter Golf records' SmearGate (openai/parameter-golf,
        records/track_10min_16mb/2026-03-19_OrthoInit_Int6_MLP3x_BigramHash_SmearGate). Those blend the normed
        sum of token and bigram embeddings, start at sigmoid(0) = a half blend, and blend position 0 with
        zeros; here the blend is on the token embedding alone, so that one carried token id gives the previous
        position's input exactly and a window run in pieces scores as in one pass."""
        if prev_first is None:
            first = emb[:, :1]  # (B, 1, d): no previous token, no blend
        else:
            carried = self.tok_emb(prev_first.clamp_min(0))  # (B, d)
            first = torch.where((prev_first >= 0)[:, None], carried.to(emb.dtype), emb[:, 0])[:, None]
        prev = torch.cat([first, emb[:, :-1]], dim=1)  # (B, T, d): e_{t-1}
        g = torch.sigmoid(self.smear_gate).to(emb.dtype)  # (d,)
        return emb + g * (prev - emb)

    def forward(self, input_ids: torch.Tensor, states: dict | None = None, return_states: bool = False,
                targets: torch.Tensor | None = None):
        """input_ids (B, T) → logits (B, T, V) fp32, softcapped; with `targets` (B, T) the mean cross-entropy
        instead, so that a compiled model compiles the softcap and the loss into the same graph.

        Under autocast with model.residual_dtype "autocast" the residual stream between blocks is in the
        autocast dtype (bf16), as in the challenge's baseline; with "fp32", or without autocast, it keeps the
        embedding's dtype.

        With return_states=True returns (logits, states) to pass as `states` with the next window of the
        same rows: states = {"prev_token": (B,) last token (BigramHash's and SmearGate's left context),
        "layers": one entry per block: (conv_state (B, conv_dim, d_conv-1), ssm_state (B, H, P, N)) for M
        blocks, None for A blocks, which see only the current window}. Running a sequence in pieces with
        carried states gives the one-pass logits exactly for an M-only model (tests/test_model.py;
        tests/test_seed_features.py with SmearGate and LN scale on)."""
        if not input_ids.is_cuda and self.kernel_paths["ssm"] not in ("reference", "none"):
            raise GolfError(f"this model was built with the {self.kernel_paths['ssm']} SSM path but got a "
                            f"{input_ids.device} tensor; rebuild it with model.ssm_backend=reference to run there")
        prev_first = None if states is None else states["prev_token"]
        # (B, T, d); model.embed_grad "sorted": the weight gradient by ATen's sorted reduction (golf/embed_grad.py)
        x = self.tok_emb(input_ids) if self.embed_lookup is None else self.embed_lookup(input_ids, self.tok_emb.weight)
        if self.smear_gate is not None:
            x = self.smear(x, prev_first)
        if self.bigram is not None:
            x = x + self.bigram(input_ids, prev_first)
        x = F.rms_norm(x, (x.shape[-1],))
        dev = x.device.type
        if self.cfg.residual_dtype == "autocast" and torch.is_autocast_enabled(dev):
            x = x.to(torch.get_autocast_dtype(dev))  # bf16 stream: every block's elementwise traffic halves
        x0 = x
        layer_states = states["layers"] if states is not None else [None] * len(self.blocks)
        blocks = self._blocks_torch if self.add_mix_norm is None else self._blocks_golf
        x, new_states = blocks(x, x0, layer_states, return_states)
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        if targets is not None and self.fused_loss is not None and not return_states:
            # model.lm_loss "fused": the loss and its logits' gradient in one pass (golf/lm_loss.py), in the dtype
            # autocast would run the head in
            dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
            return self.fused_loss(x.reshape(-1, x.shape[-1]).to(dt), w.to(dt), targets.reshape(-1),
                                   self.cfg.logit_softcap)
        logits = F.linear(x, w.to(x.dtype)).float()  # (B, T, V)
        if self.cfg.logit_softcap > 0:
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        if targets is not None:
            if return_states:
                raise ValueError("GolfLM.forward: targets and return_states are exclusive")
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if return_states:
            return logits, {"prev_token": input_ids[:, -1], "layers": new_states}
        return logits

    def _blocks_torch(self, x, x0, layer_states, return_states):
        """model.block_norm "torch": the blocks with the U-Net skips, then the final norm → (x, new_states)."""
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
        return x, new_states

    def _blocks_golf(self, x, x0, layer_states, return_states):
        """model.block_norm "golf": _blocks_torch's function with each block's glue in self.add_mix_norm calls.
        The stream is kept pending, (x, y, s) standing for x + s y, and completed by the next pre-norm's call
        (the final norm's last). A U-Net skip needs its encoder block's output itself: the next block's call
        writes it (keep_in), except after the last encoder block, whose output is the first decoder block's
        input and skip at once, added here."""
        pending = (x, None, None)
        new_states, skips = [], []
        first_kept = self.num_encoder - self.num_skips  # the encoder blocks whose outputs the skips read
        for i, block in enumerate(self.blocks):
            skip = skip_weight = None
            if i >= self.num_encoder and self.num_skips and skips and i - self.num_encoder < self.num_skips:
                skip, skip_weight = skips.pop(), self.skip_weights[i - self.num_encoder]
            keep_in = first_kept < i < self.num_encoder  # block i - 1's output feeds a skip
            x_in, pending, st = block.forward_golf(pending, x0, self.add_mix_norm, skip, skip_weight, keep_in,
                                                   layer_states[i], return_states)
            if keep_in:
                skips.append(x_in)
            if return_states:
                new_states.append(st)
            if i == self.num_encoder - 1 and self.num_skips:
                x, y, s = pending
                pending = (x + (y if s is None else s.to(x.dtype) * y), None, None)
                skips.append(pending[0])
        _, _, h = self.add_mix_norm(*pending)
        return h, new_states

    @property
    def supports_state(self) -> bool:
        return "M" in self.cfg.layer_pattern

    # ----------------------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Optimizer groups (golf.param_groups.optim_group): every parameter in exactly one."""
        groups: dict[str, list] = {g: [] for g in OPTIM_GROUPS}
        for name, p in self.named_parameters():
            groups[optim_group(name, p.ndim)].append((name, p))
        return groups

    def set_qat(self, enabled: bool, bits: int = 6, module_bits: dict[str, int] | None = None) -> None:
        """Switch int-`bits` fake quantization of every block linear on or off (in place, buffers only: a
        compiled model sees the change without recompiling). `module_bits` gives some linears (by module
        name) their own width, as quant.bits_<group> stores them (golf.gptq.qat_module_bits)."""
        module_bits = module_bits or {}
        for name, m in self.named_modules():
            if isinstance(m, QATLinear):
                b = module_bits.get(name, bits)
                if not 2 <= b <= 8:
                    raise ValueError(f"set_qat: bits must be in 2..8, got {b} for {name or 'the model'}")
                m.qat_on.fill_(bool(enabled))
                m.set_bits(b)


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


def scoring_config(cfg: ModelConfig) -> ModelConfig:
    """cfg with its training-only kernel paths replaced by the paths that compute the same function on any machine:
    what the stages after training (Hessian calibration on the GPU, quantization on the CPU) and the artifact's
    scoring build. Each replaced path is a speed setting of the training step; the comments say why each is the
    same function."""
    # model.ssm_compile only shapes how training compiles; "opaque" needs golf/ssm_ops.py, which artifacts
    # do not ship (golf.package.TRAINING_ONLY): these call the same kernels directly. model.ssm_scan "golf"
    # / "golf_split" is golf's own SSD kernels, reached through ssm_ops too: scoring runs mamba-ssm's scan, the
    # same function (bench/ssd_kernel_bench.py checks their parity), and no artifact carries the kernels' code.
    # model.ssm_conv "golf" (golf's own conv kernels, also reached through ssm_ops): scoring runs causal-conv1d's
    # conv where it imports (else PyTorch's), the same function (bench/conv_kernel_bench.py checks their parity)
    # model.attn_backend "flash4" is FlashAttention-4 through golf/attn_ops.py (not shipped either): scoring takes
    # "auto"'s kernel on the scoring machine, the same attention (bench/attn_kernel_bench.py checks their parity).
    # model.ssm_backend "fused" packages the triton path's kernels as one op (mamba-ssm's, or golf/mixer_op.py's,
    # not shipped, with gated_norm "golf": golf's own norm kernels inside it): scoring takes "auto", the same
    # mixer on any machine (tests/test_mixer_op.py and test_ssm.py check the paths' parity on a GPU).
    # model.ssm_scan "mamba_keep*" keeps the forward's internals for golf::mamba_core's backward (golf's chunk
    # kernel among them): the forward is mamba-ssm's scan.
    # model.block_norm "golf" is golf's residual-glue kernels (golf/block_norm_kernel.py, not shipped): scoring
    # takes "torch", the same function (tests/test_model_block_norm.py checks their parity)
    # model.qk_rope "golf" is golf's query/key kernels (golf/qk_rope_kernel.py, not shipped): scoring takes
    # "torch", the same function (tests/test_qk_rope_kernel.py checks their parity)
    # model.lm_loss "fused" and model.embed_grad "sorted" change only how training differentiates (golf/lm_loss.py,
    # golf/embed_grad.py, not shipped)
    return replace(cfg, ssm_scan="mamba", ssm_conv="causal_conv1d", block_norm="torch", qk_rope="torch",
                   lm_loss="autograd", embed_grad="autograd",
                   ssm_backend="auto" if cfg.ssm_backend == "fused" else cfg.ssm_backend,
                   gated_norm="kernel" if cfg.gated_norm == "golf" else cfg.gated_norm,
                   ssm_compile="disable" if cfg.ssm_compile == "opaque" else cfg.ssm_compile,
                   attn_backend="auto" if cfg.attn_backend == "flash4" else cfg.attn_backend)


def load_model(model_dir: str | Path, device: torch.device | str = "cpu") -> GolfLM:
    """Rebuild a GolfLM from save_model's folder (config.json + model.safetensors) with scoring_config's kernel
    paths (a model trained with golf::mamba_core or FlashAttention-4 loads on the CPU too); GolfError naming the
    file when either is missing, unreadable or does not match the config."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    cfg = load_model_config(model_dir / "config.json")
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise GolfError(f"model weights {str(weights)!r} not found (run the train stage first)")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise GolfError(f"model weights {str(weights)!r} are not a readable safetensors file: {e}") from None
    model = build_model(scoring_config(cfg), device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise GolfError(f"model weights {str(weights)!r} do not match {str(model_dir / 'config.json')!r}: "
                        f"{str(e).splitlines()[0]}") from None
    return model
