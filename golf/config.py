"""Typed configuration: one dataclass per params.yaml section, validated on load.

Every setting of the pipeline lives in params.yaml. `load_params(path)` reads it into `Params`, checking
each key's type and range; an unknown key, a wrong type or an out-of-range value raises `ConfigError`
with the file, the dotted key and what was expected. CLI overrides (`--set train.lr_matrix=0.02`) go
through the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError
from golf.param_groups import BIT_GROUPS


class ConfigError(GolfError, ValueError):
    """A params file or override that does not fit the schema. The message names the key and file."""


def _spec(default: Any, *, lo: float | None = None, hi: float | None = None,
          choices: tuple | None = None, doc: str = "") -> Any:
    """A dataclass field with validation metadata: inclusive bounds or a set of allowed values."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def field_choices(section: type, name: str) -> tuple:
    """The allowed values a section dataclass declares for one field (its _spec choices), so that code
    checking a value passed around the config (e.g. to a kernel resolver) uses the same list."""
    choices = {f.name: f for f in dataclasses.fields(section)}[name].metadata.get("choices")
    if choices is None:
        raise KeyError(f"{section.__name__}.{name} declares no choices")
    return choices


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    name: str = _spec("demo", doc="output folder data/<name>/")
    source: str = _spec("corpus", choices=("corpus", "fineweb", "shards"),
                        doc="corpus: jsonl/txt globs; fineweb: the challenge's export; shards: an existing folder")
    train_globs: list = _spec(["golf/demo_data/wiki_demo.jsonl.xz"], doc="corpus files for training (globs)")
    val_globs: list = _spec([], doc="corpus files for validation; empty = split off train_globs")
    val_fraction: float = _spec(0.05, lo=0.0, hi=0.5, doc="share of documents held out when val_globs is empty")
    split_seed: int = _spec(1337, doc="seed of the deterministic train/val split")
    text_field: str = _spec("text", doc="jsonl field holding the document text")
    txt_separator: str = _spec("\n\n\n", doc="document separator inside plain .txt files")
    max_docs: int = _spec(0, lo=0, doc="cap on documents read per split (0 = all)")
    tokenizer_model: str = _spec("", doc="an existing SentencePiece model; empty = train one")
    vocab_size: int = _spec(1024, lo=260, hi=65535, doc="tokenizer vocabulary (uint16 shards)")
    tokenizer_normalization: str = _spec("identity", choices=("identity", "nmt_nfkc"),
                                         doc="identity = byte-lossless (BPB counts the original bytes); "
                                             "nmt_nfkc = the challenge's recipe (NFKC, newlines to spaces)")
    tokenizer_train_bytes: int = _spec(40_000_000, lo=1, doc="text used to train the tokenizer")
    shard_tokens: int = _spec(100_000_000, lo=1024, doc="tokens per output shard")
    num_workers: int = _spec(0, lo=0, doc="tokenizer processes (0 = all cores)")
    fineweb_repo: str = _spec("willdepueoai/parameter-golf", doc="HF dataset repo of the official export")
    fineweb_local_dir: str = _spec("", doc="a local folder with the same layout as the HF export")
    fineweb_variant: str = _spec("sp1024", doc="tokenizer variant of the official export")
    fineweb_train_shards: int = _spec(10, lo=0, doc="train shards to fetch from the official export")
    shards_dir: str = _spec("", doc="source=shards: folder with fineweb_{train,val}_*.bin and tokenizer.model")


@dataclass
class ModelConfig:
    vocab_size: int = _spec(1024, lo=2, hi=65536)
    d_model: int = _spec(512, lo=8)
    layer_pattern: str = _spec("MMMMMMMMMMMMAAAMMM", doc="one letter a layer: M = Mamba-2 block, A = attention+MLP")
    # Mamba-2 mixer
    d_state: int = _spec(32, lo=1)
    d_conv: int = _spec(4, lo=1, hi=8)
    expand: float = _spec(1.5, lo=0.25, hi=8.0)
    headdim: int = _spec(64, lo=1)
    ngroups: int = _spec(1, lo=1)
    chunk_size: int = _spec(64, lo=1, doc="SSD chunk length")
    in_proj_multiple: int = _spec(1, lo=1, hi=256, doc="pad Mamba in_proj's output features with zero rows to a "
                                  "multiple of this (GEMM alignment; 1 = no padding)")
    # attention
    num_heads: int = _spec(8, lo=1)
    num_kv_heads: int = _spec(4, lo=1)
    rope_base: float = _spec(10000.0, lo=1.0)
    mlp_mult: float = _spec(3.0, lo=0.5, hi=16.0)
    rope_dims: int = _spec(0, lo=0, doc="partial RoPE: rotate only the first rope_dims dims of each attention head "
                                        "(even, <= d_model/num_heads; 0 = the whole head)")
    rope: bool = _spec(True, doc="RoPE in the attention layers; false: no positional encoding (NoPE), position "
                                 "then comes from the causal mask and, in a hybrid, the Mamba layers' recurrence")
    mlp_act: str = _spec("relu2", choices=("relu2", "leaky_relu2"),
                         doc="every MLP's activation: relu(x)^2, or leaky_relu(x, negative_slope 0.5)^2")
    mamba_mlp_mult: float = _spec(0.0, lo=0.0, hi=16.0, doc="each Mamba block also gets its own MLP after the mixer "
                                                             "(pre-norm residual, hidden = mult * d_model; 0 = none)")
    xsa: bool = _spec(False, doc="exclusive self-attention: every attention head's output loses its component along "
                                 "the token's own value vector (needs an attention layer)")
    ln_scale: bool = _spec(False, doc="multiply every block's pre-norm outputs by 1/sqrt(layer index + 1), layer "
                                      "index from 0 over model.layer_pattern (Mamba and attention blocks alike)")
    # embeddings / head
    bigram_buckets: int = _spec(2048, lo=0, doc="BigramHash buckets (0 = off)")
    bigram_dim: int = _spec(128, lo=0)
    smear_gate: bool = _spec(False, doc="SmearGate: each token embedding moves toward the previous token's by a "
                                        "learned per-channel share sigmoid(g), g starting at -4 (a 1.8% blend)")
    tie_embeddings: bool = _spec(True)
    logit_softcap: float = _spec(30.0, lo=0.0, doc="0 = no softcap")
    embed_grad: str = _spec("autograd", choices=("autograd", "sorted"),
                            doc="how training makes the token embedding's weight gradient: autograd's (under "
                                "torch.compile inductor's atomic adds, fused into the first norm's backward), or "
                                "sorted: ATen's embedding_dense_backward, which sorts the token ids and sums each "
                                "row's gradients in order, as golf's opaque op golf::embedding_grad "
                                "(golf/embed_grad.py); the same gradient, summed in another order")
    lm_loss: str = _spec("autograd", choices=("autograd", "fused"),
                         doc="how training differentiates its loss (the tied head, the softcap and the mean "
                             "cross-entropy): autograd through the PyTorch ops, or fused: the logits' gradient made "
                             "in the forward's pass over the logits and kept for the backward (golf/lm_loss.py), "
                             "which then reads them no more; the same function and gradients, only rounding differs")
    unet_skips: bool = _spec(True)
    residual_dtype: str = _spec("autocast", choices=("autocast", "fp32"),
                                doc="residual stream dtype under autocast: the autocast dtype (bf16, as the "
                                    "challenge's baseline runs it) or fp32 (twice the memory traffic)")
    # kernels
    ssm_backend: str = _spec("auto", choices=("auto", "triton", "fused", "reference"),
                             doc="auto = triton on CUDA when mamba-ssm imports; fused (conv, scan and gated norm in "
                                 "one op) also needs causal-conv1d")
    ssm_compile: str = _spec("disable", choices=("disable", "trace", "opaque"),
                             doc="under torch.compile, run the SSM kernels outside the graph (disable), let "
                                 "Dynamo trace into them (trace), or call them as golf's custom ops, one graph "
                                 "node each, so the model can compile as one graph (opaque; the fused path as one op "
                                 "for the whole mixer between its projections, golf/mixer_op.py)")
    gated_norm: str = _spec("kernel", choices=("kernel", "torch", "golf"),
                            doc="the Mamba mixer's gated RMSNorm: mamba-ssm's Triton kernel, the PyTorch expression "
                                "(golf.ssm.gated_rms_norm_reference) for torch.compile to fuse (triton path only), "
                                "or golf's own Triton kernels (golf/gated_norm_kernel.py; fused path under "
                                "ssm_compile opaque only); the reference path always uses the PyTorch expression")
    ssm_scan: str = _spec("mamba", choices=("mamba", "golf", "golf_split", "mamba_keep", "mamba_keep_dA",
                                            "mamba_keep_dx", "mamba_keep_chunk", "mamba_keep_xy",
                                            "mamba_keep_xy_pass", "mamba_keep_xy_pass_bf16",
                                            "mamba_keep_xy_pass_bf16_dt", "mamba_keep_golf",
                                            "mamba_keep_golf_overlap"),
                          doc="the Mamba mixer's SSD scan on the triton path, under every ssm_compile mode: "
                              "mamba-ssm's mamba_chunk_scan_combined, or golf's own fused Triton kernels "
                              "(golf/ssd_kernel.py, needs triton) with the forward and backward walking the chunks "
                              "(golf) or split over them (golf_split); the fused path is mamba-ssm's one op (golf: an "
                              "error), or under ssm_compile opaque golf's (golf/mixer_op.py), where mamba_keep keeps "
                              "mamba-ssm's forward internals (chunk states, C·B, dt's cumsum) for the backward instead "
                              "of recomputing them, and mamba_keep_dA does so with the backward's C·B and "
                              "within-chunk log-decay gradients from golf's one kernel (golf/ssd_dcb_kernel.py, "
                              "needs triton) instead of mamba-ssm's two, and mamba_keep_dx with dx, ddt and dD from "
                              "that kernel too instead of a third, and mamba_keep_chunk with every chunk-local piece "
                              "of the backward from it (also the states' parts of dB, dC and the log-decays' "
                              "gradient), and mamba_keep_xy as mamba_keep_dA with the chunk output y and dx, ddt and "
                              "dD from golf's per-head kernels (golf/ssd_xy_kernel.py) instead of mamba-ssm's two, and "
                              "mamba_keep_xy_pass as mamba_keep_xy with the states entering each chunk and the "
                              "gradients of those leaving them from golf's pass kernel (golf/ssd_kernel.py), one "
                              "launch each instead of mamba-ssm's two, and mamba_keep_xy_pass_bf16 as "
                              "mamba_keep_xy_pass with those states kept in x's dtype (bf16 in training: half their "
                              "traffic; the chunk-end log-decay gradient then reads bf16-rounded states), and "
                              "mamba_keep_xy_pass_bf16_dt with the gradients of dt, A and dt_bias from golf's one "
                              "kernel (golf/ssd_dt_kernel.py) instead of the sums and mamba-ssm's _chunk_cumsum_bwd, "
                              "and mamba_keep_golf with golf's two passes reading the forward's kept running "
                              "log-decay and dt instead of recomputing them from the raw dt, and "
                              "mamba_keep_golf_overlap with golf's C·B / within-chunk log-decay gradient kernel on a "
                              "second CUDA stream beside the backward's state pass; "
                              "the reference path always uses "
                              "golf.ssm.ssd_scan_reference (no effect there)")
    ssm_conv: str = _spec("causal_conv1d", choices=("causal_conv1d", "golf"),
                          doc="the Mamba mixer's causal depthwise conv + SiLU on the triton path, under every "
                              "ssm_compile mode: causal-conv1d's causal_conv1d_fn where it imports (else the "
                              "PyTorch conv), or golf's own Triton kernels (golf/conv_kernel.py, needs triton); on "
                              "the fused path, golf's one op (ssm_compile opaque) takes either, mamba-ssm's one op "
                              "only causal-conv1d's (golf: an error); the reference path always uses "
                              "golf.ssm.causal_conv_silu_reference (no effect there)")
    block_norm: str = _spec("torch", choices=("torch", "golf", "golf_fold"),
                            doc="each block's residual glue (the residual add of the sublayer before, the U-Net "
                                "skip add, resid_mix and the pre-norm; and the final norm): the PyTorch "
                                "expressions (torch.compile fuses them), or golf's own Triton kernels as one "
                                "custom op a pre-norm, golf::add_mix_norm (golf/block_norm_kernel.py, needs triton "
                                "on CUDA), the residual adds kept pending until the next norm; golf_fold: golf's "
                                "op with each sublayer's output scale (attn_scale, mlp_scale, mixer_scale) applied "
                                "through its last projection's weight rows instead of in the residual add, so the "
                                "op's backward writes no separate gradient for the sublayer's output; the same "
                                "function, only rounding differs; CPU tensors take its PyTorch twin")
    qk_rope: str = _spec("torch", choices=("torch", "golf"),
                         doc="the attention layers' per-head query/key RMSNorm, RoPE and query gain: the PyTorch "
                             "expressions (torch.compile fuses them), or golf's own Triton kernels as one custom op "
                             "a tensor, golf::qk_norm_rope (golf/qk_rope_kernel.py, needs triton on CUDA), each "
                             "element read and written once a direction; the same function, only rounding differs "
                             "(it rounds once, the expressions after the norm and the rotation); CPU tensors take "
                             "the PyTorch expressions; no effect with model.rope false")
    attn_backend: str = _spec("auto", choices=("auto", "flash", "flash4", "sdpa"),
                              doc="auto = flash-attn 3, else 2, where one imports on CUDA, else PyTorch SDPA; "
                                  "flash = one of those two or an error; flash4 = FlashAttention-4 (pip install "
                                  "flash-attn-4) as golf's custom op golf::flash4_attn (golf/attn_ops.py) or an "
                                  "error (a CPU device too), never picked by auto; sdpa = SDPA always. fp32 "
                                  "forwards run SDPA on every path")


@dataclass
class TrainConfig:
    seq_len: int = _spec(2048, lo=8)
    batch_tokens: int = _spec(524288, lo=8, doc="tokens per optimizer step, all ranks together")
    micro_batch_seqs: int = _spec(32, lo=1, doc="sequences per forward pass per rank")
    max_steps: int = _spec(20000, lo=1)
    wallclock_s: float = _spec(600.0, lo=0.0, doc="training budget in seconds (0 = steps only)")
    warmup_steps: int = _spec(20, lo=0)
    warmdown_frac: float = _spec(0.3, lo=0.0, hi=1.0, doc="final share of the budget with linear lr decay")
    lr_matrix: float = _spec(0.04, lo=0.0)
    lr_mamba: float = _spec(0.02, lo=0.0)
    lr_embed: float = _spec(0.05, lo=0.0)
    lr_scalar: float = _spec(0.04, lo=0.0)
    muon_momentum: float = _spec(0.95, lo=0.0, hi=1.0)
    muon_momentum_warmup_steps: int = _spec(0, lo=0, doc="ramp Muon's momentum from muon_momentum_warmup_start "
                                                          "to muon_momentum over these steps (0 = constant)")
    muon_momentum_warmup_start: float = _spec(0.85, lo=0.0, hi=1.0)
    muon_ns_steps: int = _spec(5, lo=1, hi=20)
    weight_decay: float = _spec(0.0, lo=0.0, doc="decoupled weight decay of the Muon matrices and the embeddings "
                                                  "(p <- p*(1 - lr*wd), lr as scheduled), unless a group's own key "
                                                  "below is set")
    weight_decay_matrix: float = _spec(-1.0, lo=-1.0, doc="the Muon matrices' decay (attention, MLP, bigram proj, "
                                                           "Mamba in_proj/out_proj); negative = train.weight_decay")
    weight_decay_embed: float = _spec(-1.0, lo=-1.0, doc="the embeddings' decay (tok_emb, bigram.emb, untied "
                                                          "lm_head); negative = train.weight_decay")
    weight_decay_scalar: float = _spec(0.0, lo=0.0, doc="the scalars' decay (gains, mixes, Mamba dynamics); 0 = "
                                                         "none, their scale is meaningful")
    adam_beta1: float = _spec(0.9, lo=0.0, hi=1.0)
    adam_beta2: float = _spec(0.95, lo=0.0, hi=1.0)
    grad_clip: float = _spec(0.0, lo=0.0, doc="0 = off")
    ema_decay: float = _spec(0.997, lo=0.0, hi=1.0, doc="0 = no EMA")
    qat_start_frac: float = _spec(0.85, lo=0.0, hi=1.0, doc="share of budget after which int6 fake-quant is on (1 = never)")
    qat_bits: int = _spec(6, lo=2, hi=8)
    val_tokens: int = _spec(0, lo=0, doc="val tokens for the pre-quant score (0 = all)")
    log_every: int = _spec(50, lo=1)
    checkpoint_every: int = _spec(500, lo=0, doc="0 = only at the end")
    compile: bool = _spec(True, doc="torch.compile on CUDA")
    compile_mode: str = _spec("default", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                              doc="torch.compile's mode; reduce-overhead replays the compiled graphs as CUDA graphs, "
                                  "which removes the host's kernel launches: it pays where the step is bound by "
                                  "them (the Mamba-MLP hybrid at 65,536 tokens a step with opaque SSM ops: 1.33M "
                                  "against 0.87M tok/s on one H200), not where the GPU is already busy (the same "
                                  "at 131,072 tokens: no change); bench/RESULTS.md 2026-12-01 tenth block")
    inductor_options: list = _spec([], doc="torch._inductor.config options for training's compile, each "
                                           "'dotted.key=value' (value as YAML), e.g. "
                                           "'triton.mix_order_reduction=false'; set process-wide while train() "
                                           "runs, only when training compiles (golf.inductor_options)")
    optimizer_graph: bool = _spec(False, doc="on CUDA, capture the optimizer step (clip, Muon, AdamW, EMA) as a CUDA "
                                             "graph at the third step and replay it from then on, against the eager "
                                             "step's ~270 launches (golf.optim_graph); measured no faster on an H200 "
                                             "(bench/RESULTS.md); needs every parameter's gradient every step; eager "
                                             "on a CPU")
    host_runahead: bool = _spec(True, doc="launch step k+1 before reading step k's loss, so the host's kernel "
                                          "launches overlap the GPU's work; the loss is checked one step late "
                                          "(false: read every step's loss before the next step)")
    profile_steps: int = _spec(0, lo=0, doc="profile this many of the loop's steps with torch.profiler (0 = off): "
                                            "kernel time by family, device busy share, host CUDA calls in "
                                            "runs/<seed>/train/profile.json; the profiler's start and summary are kept "
                                            "off the budget")
    profile_first_step: int = _spec(250, lo=1, doc="the first profiled step: after compile and autotuning, and with "
                                                   "the window clear of checkpoint steps (train.checkpoint_every)")
    profile_shapes: bool = _spec(False, doc="the profile also records every op's input shapes, so that its aten_ops "
                                            "name eager work by shape; costs host time in the profiled steps, which "
                                            "can then show a lower device-busy share")
    dtype: str = _spec("bf16", choices=("bf16", "fp32"))
    device: str = _spec("auto", doc="auto | cpu | cuda | cuda:N")
    carry_state: bool = _spec(False, doc="each batch row continues its own stream of the train shards and starts from "
                                         "the Mamba state (and BigramHash previous token) its last window ended "
                                         "with, detached, as the stateful eval reads; false = random windows from a "
                                         "zero state. Needs an M block")


@dataclass
class CalibConfig:
    source: str = _spec("train", choices=("train", "self"), doc="train shards, or sequences the model samples")
    num_sequences: int = _spec(128, lo=1)
    seq_len: int = _spec(2048, lo=8)
    batch_seqs: int = _spec(16, lo=1)
    temperature: float = _spec(0.8, lo=0.0, doc="source=self sampling temperature")
    seed: int = _spec(0)
    reserve_s: float = _spec(20.0, lo=0.0, doc="seconds of train.wallclock_s left unused by training for the "
                                               "calibration (hessian + GPTQ), which the challenge counts inside the "
                                               "training budget; their measured sum over this fails the quantize "
                                               "stage (0 = no reserve, no check)")


@dataclass
class QuantConfig:
    bits: int = _spec(6, lo=2, hi=8, doc="block matrices")
    embed_bits: int = _spec(8, lo=2, hi=8)
    block_size: int = _spec(128, lo=1)
    damp_frac: float = _spec(0.01, lo=0.0, hi=1.0, doc="damping as a fraction of mean(diag H)")
    act_order: bool = _spec(True)
    clip_search: bool = _spec(True)
    clip_ratios: list = _spec([1.0, 0.95, 0.9, 0.85, 0.8, 0.75], doc="per-row clip candidates (fraction of max |w|)")
    clip_mode: str = _spec("search", choices=("search", "sigma"),
                           doc="search: each row keeps the best of clip_ratios (clip_search); sigma: each row is "
                               "clipped at clip_sigmas standard deviations of its weights (or its max |w| if less)")
    clip_sigmas: float = _spec(4.0, lo=0.1, doc="clip_mode sigma: the clip in row standard deviations")
    bits_mamba_in: int = _spec(0, lo=0, hi=8, doc="bit width of Mamba in_proj (0 = quant.bits); groups: "
                                                   "golf/param_groups.py")
    bits_mamba_out: int = _spec(0, lo=0, hi=8, doc="bit width of Mamba out_proj (0 = quant.bits)")
    bits_attn: int = _spec(0, lo=0, hi=8, doc="bit width of attention q/k/v/o (0 = quant.bits)")
    bits_mlp: int = _spec(0, lo=0, hi=8, doc="bit width of the MLPs (0 = quant.bits)")
    bits_other: int = _spec(0, lo=0, hi=8, doc="bit width of other quantized matrices, e.g. bigram proj "
                                                "(0 = quant.bits)")
    float_max_numel: int = _spec(65536, lo=0, doc="tensors this small stay float")
    float_dtype: str = _spec("fp16", choices=("fp16", "bf16", "fp32"))


CAP_BYTES = 16_000_000  # the challenge's limit on code + compressed model


@dataclass
class PackageConfig:
    compressor: str = _spec("lzma", choices=("lzma", "zstd", "brotli", "auto"),
                            doc="auto: every compressor with and without byte planes, the smallest kept")
    byte_planes: bool = _spec(False, doc="store each multi-byte tensor as byte planes (all low bytes, then all "
                                         "high bytes) before compressing; auto tries both")
    target_bytes: int = _spec(0, lo=0, doc="when the artifact is over this, zero the cheapest quantized +-1 codes "
                                           "(Hessian-weighted) until it fits (0 = off)")
    cap_bytes: int = _spec(CAP_BYTES, lo=1)
    compare_compressors: bool = _spec(True, doc="also record zstd-22 and brotli-11 sizes")
    segments: int = _spec(16, lo=1, hi=256, doc="compress the container as this many byte ranges at once, one per "
                                                "core (at least 1 MiB each, so a small model stays one stream); "
                                                "the bytes do not depend on the machine")


@dataclass
class EvalConfig:
    seq_len: int = _spec(2048, lo=8)
    stride: int = _spec(64, lo=1)
    batch_seqs: int = _spec(32, lo=1)
    max_tokens: int = _spec(0, lo=0, doc="cap on val tokens (0 = all); for quick checks only")
    stateful: bool = _spec(True, doc="also report stateful SSM eval")
    device: str = _spec("auto")


@dataclass
class TTTConfig:
    enabled: bool = _spec(True)
    chunk_tokens: int = _spec(32768, lo=16)
    seq_len: int = _spec(2048, lo=8)
    stride: int = _spec(0, lo=0, doc="scoring stride inside a chunk (0 = non-overlapping windows)")
    lr: float = _spec(0.002, lo=0.0)
    momentum: float = _spec(0.9, lo=0.0, hi=1.0)
    epochs: int = _spec(1, lo=1)
    batch_seqs: int = _spec(16, lo=1)
    params: str = _spec("all", choices=("all", "norms", "ssm", "mlp", "dynamics", "dynamics_norms"),
                        doc="which parameters adapt (dynamics: the Mamba mixers' A_log, dt_bias, D and conv)")
    lr_schedule: str = _spec("constant", choices=("constant", "cosine"),
                             doc="cosine: the learning rate falls from ttt.lr to 0 over the adapted chunks")
    grad_clip: float = _spec(1.0, lo=0.0)
    max_tokens: int = _spec(0, lo=0)
    score_no_adapt: bool = _spec(True, doc="also score the same windows without adaptation (no_adapt_val_bpb, gain_bpb): "
                                           "one more pass over val; with eval's seq_len and stride it equals "
                                           "eval_sliding's val_bpb")
    device: str = _spec("auto")


@dataclass
class ReportConfig:
    reference: str = _spec("", doc="another run's runs/ folder, or a JSON of per-seed BPBs; empty = none")
    reference_bpb: float = _spec(0.0, lo=0.0, doc="a fixed reference BPB (0 = unused)")
    margin_nats: float = _spec(0.005, lo=0.0, doc="required win in val_loss nats/token (the challenge's 0.005); "
                                                  "tested in BPB as margin_nats / ln 2 * tokens / bytes")
    metric: str = _spec("eval_sliding", choices=("train", "quant", "eval_sliding", "eval_ttt"),
                        doc="which BPB the t-test compares")
    alpha: float = _spec(0.01, lo=0.0, hi=1.0, doc="significance level of the verdict (the challenge asks p < 0.01)")
    name: str = _spec("", doc="export: submission name (empty = derived from the model settings)")
    author: str = _spec("", doc="export: submission.json author")
    github_id: str = _spec("", doc="export: submission.json github_id")
    blurb: str = _spec("", doc="export: one-paragraph description for submission.json")


@dataclass
class LaunchConfig:
    """How many processes run the distributed stages (train, hessian, eval_sliding, eval_ttt).

    With more than one process in total, `python cli.py <stage>` relaunches itself under PyTorch's torchrun
    (golf/launch.py), so the same command, and the same DVC stage, runs on one GPU or on several."""
    nproc_per_node: int = _spec(1, lo=1, doc="processes per node, one per GPU (1 = a plain single process)")
    nnodes: int = _spec(1, lo=1, doc="nodes; above 1 every node runs the same command and meets at rdzv_endpoint")
    rdzv_endpoint: str = _spec("", doc="host:port of the c10d rendezvous; needed when nnodes > 1")
    rdzv_id: str = _spec("golf", doc="rendezvous id shared by the nodes of one launch")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass
class Params:
    seeds: list = _spec([1337, 42, 2024])
    runs_dir: str = _spec("runs")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    package: PackageConfig = field(default_factory=PackageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def data_dir(self) -> Path:
        return Path("data") / self.data.name

    def run_dir(self, seed: int) -> Path:
        check_seed(seed, "--seed")
        return Path(self.runs_dir) / str(seed)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

_INT64 = 2 ** 63


def _short(value: Any) -> str:
    """repr of a value for an error line, cut to 80 characters (a crafted value must not flood the terminal)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"  # repr may refuse it
    try:
        text = repr(value)
    except ValueError:  # an integer inside a list, past Python's digit limit
        return "a value holding an integer too long to print"
    return text if len(text) <= 80 else text[:77] + "..."


def check_seed(seed: Any, key: str = "seed", source: str = "the command line") -> None:
    """A run seed must be an integer that torch and numpy accept as a seed: 0 <= seed < 2**63."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _INT64:
        raise ConfigError(f"{key!r} in {source}: expected a seed in 0..2**63-1, got {_short(seed)}")


def check_plain_name(value: str, key: str, source: str) -> None:
    """A setting used as one folder or file name: no separators, no '..', not empty, not hidden."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value or value.startswith("."):
        raise ConfigError(f"{key!r} in {source}: expected a plain folder name (no '/', '..', leading '.' or "
                          f"absolute path), got {value!r}")


def _coerce(value: Any, typ: type, key: str, source: str) -> Any:
    """Check one value against a field type. ints are accepted for floats; bools never for numbers."""
    where = f"{key!r} in {source}"
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ConfigError(f"{where}: expected a number within 64 bits, got {_short(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {_short(value)}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        if not -_INT64 <= value < _INT64:
            raise ConfigError(f"{where}: expected a 64-bit integer, got {_short(value)}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_short(value)}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        return value
    if typ is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        return list(value)
    raise ConfigError(f"{where}: unsupported field type {typ}")  # a schema bug, not user input


def _check_range(value: Any, meta: dict, key: str, source: str) -> None:
    where = f"{key!r} in {source}"
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: expected one of {list(choices)}, got {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: expected a value >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: expected a value <= {hi}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'top level'!r} in {source}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        names = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"unknown key(s) {names} in {source}; expected keys of {prefix or 'top level'}: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        typ = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, raw[name], key + ".", source)
        else:
            typ = typing.get_origin(typ) or typ
            if isinstance(typ, types.UnionType):  # pragma: no cover - not used by the schema
                raise ConfigError(f"{key}: union types unsupported")
            value = _coerce(raw[name], typ, key, source)
            _check_range(value, dict(f.metadata), key, source)
            kwargs[name] = value
    return cls(**kwargs)


def _cross_checks(p: Params, source: str) -> None:
    """Constraints between keys that single-key checks cannot see."""
    m = p.model
    if not m.layer_pattern or set(m.layer_pattern) - {"M", "A"}:
        raise ConfigError(f"'model.layer_pattern' in {source}: expected a non-empty string of 'M' and 'A', "
                          f"got {m.layer_pattern!r}")
    if m.num_heads % m.num_kv_heads:
        raise ConfigError(f"'model.num_kv_heads' in {source}: must divide model.num_heads "
                          f"({m.num_heads}), got {m.num_kv_heads}")
    if m.d_model % m.num_heads:
        raise ConfigError(f"'model.num_heads' in {source}: must divide model.d_model ({m.d_model}), "
                          f"got {m.num_heads}")
    if "A" in m.layer_pattern and (m.d_model // m.num_heads) % 2:
        raise ConfigError(f"'model.num_heads' in {source}: head dim d_model/num_heads must be even for RoPE")
    if not m.rope and m.rope_dims:
        raise ConfigError(f"'model.rope_dims' in {source}: applies only with model.rope true (RoPE on); expected 0 "
                          f"with model.rope false, got {m.rope_dims}")
    if m.rope_dims % 2 or m.rope_dims > m.d_model // m.num_heads:
        raise ConfigError(f"'model.rope_dims' in {source}: expected an even number <= the attention head dim "
                          f"d_model/num_heads ({m.d_model // m.num_heads}), or 0 for all, got {m.rope_dims}")
    if 0 < m.mamba_mlp_mult and int(m.mamba_mlp_mult * m.d_model) < 1:
        raise ConfigError(f"'model.mamba_mlp_mult' in {source}: expected 0 (off) or a multiple giving at least one "
                          f"hidden unit (mult * d_model >= 1, d_model {m.d_model}), got {m.mamba_mlp_mult}")
    if m.xsa and "A" not in m.layer_pattern:
        raise ConfigError(f"'model.xsa' in {source}: XSA acts on attention layers, but model.layer_pattern "
                          f"{m.layer_pattern!r} has no 'A'; set model.xsa to false")
    d_inner = m.expand * m.d_model
    if "M" in m.layer_pattern:
        if d_inner != int(d_inner):
            raise ConfigError(f"'model.expand' in {source}: expand * d_model must be an integer, got {d_inner}")
        if int(d_inner) % m.headdim:
            raise ConfigError(f"'model.headdim' in {source}: must divide d_inner = expand*d_model "
                              f"({int(d_inner)}), got {m.headdim}")
    if (m.bigram_buckets > 0) != (m.bigram_dim > 0):
        raise ConfigError(f"'model.bigram_dim' in {source}: bigram_buckets and bigram_dim must both be 0 "
                          f"or both be positive, got {m.bigram_buckets} and {m.bigram_dim}")
    if p.data.vocab_size != m.vocab_size:
        raise ConfigError(f"'model.vocab_size' in {source}: must equal data.vocab_size "
                          f"({p.data.vocab_size}), got {m.vocab_size}")
    if not p.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in p.seeds):
        raise ConfigError(f"'seeds' in {source}: expected a non-empty list of integers, got {_short(p.seeds)}")
    for s in p.seeds:
        check_seed(s, "seeds", source)
    check_plain_name(p.data.name, "data.name", source)
    if not p.runs_dir or ".." in Path(p.runs_dir).parts:
        raise ConfigError(f"'runs_dir' in {source}: expected a folder path without '..', got {p.runs_dir!r}")
    for key in (f"bits_{g}" for g in BIT_GROUPS):
        if getattr(p.quant, key) == 1:  # found at load time, not after training, when quantize would refuse it
            raise ConfigError(f"'quant.{key}' in {source}: 1 bit leaves no levels; expected 0 (= quant.bits) or 2..8")
    if len(set(p.seeds)) != len(p.seeds):
        raise ConfigError(f"'seeds' in {source}: seeds must be distinct, got {p.seeds!r}")
    if p.launch.nnodes > 1 and not p.launch.rdzv_endpoint:
        raise ConfigError(f"'launch.rdzv_endpoint' in {source}: launch.nnodes is {p.launch.nnodes}, so the nodes "
                          "need a rendezvous address (host:port reachable from every node)")
    if p.launch.rdzv_endpoint and ":" not in p.launch.rdzv_endpoint:
        raise ConfigError(f"'launch.rdzv_endpoint' in {source}: expected host:port, got {p.launch.rdzv_endpoint!r}")
    if p.train.carry_state and "M" not in m.layer_pattern:
        raise ConfigError(f"'train.carry_state' in {source}: carries the Mamba blocks' recurrent state, but "
                          f"model.layer_pattern {m.layer_pattern!r} has no 'M' block (attention has no state to carry)")
    _check_inductor_options(p.train.inductor_options, source)  # a list's entries: _build checks only the list
    if p.eval.stride > p.eval.seq_len:
        raise ConfigError(f"'eval.stride' in {source}: must be <= eval.seq_len ({p.eval.seq_len}), "
                          f"got {p.eval.stride}")


def train_budget_s(p: Params) -> float:
    """The training loop's wallclock budget: train.wallclock_s less calib.reserve_s, the time the calibration
    (hessian + GPTQ) may take inside the challenge's training budget. 0 (steps only) stays 0."""
    if p.train.wallclock_s <= 0 or p.calib.reserve_s <= 0:
        return p.train.wallclock_s
    if p.calib.reserve_s >= p.train.wallclock_s:
        raise ConfigError(f"'calib.reserve_s': must be below train.wallclock_s ({p.train.wallclock_s:g} s), got "
                          f"{p.calib.reserve_s:g}")
    return p.train.wallclock_s - p.calib.reserve_s


def params_from_dict(raw: Any, source: str = "<dict>") -> Params:
    p = _build(Params, raw, "", source)
    _cross_checks(p, source)
    return p


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two fixes. Floats: its YAML 1.1 resolver reads `3e-4` (no dot) as a
    string; here any decimal with an exponent is a float, as in YAML 1.2. Mappings: a repeated key (or
    section) is an error naming it and its line, where PyYAML keeps the last one silently."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short(key)} (first on line {seen[key]})", key_node.start_mark)
                if isinstance(key, (str, int, float, bool)):
                    seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_ParamsLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
    [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE), list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse params YAML with _ParamsLoader; errors keep PyYAML's types (YAMLError, or ValueError for an
    integer past Python's 4,300-digit conversion limit)."""
    return yaml.load(text, Loader=_ParamsLoader)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` → (["section", "key"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form section.key=value")
    key, value = text.split("=", 1)
    path = [k for k in key.strip().split(".") if k]
    if not path:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"override {_short(text)}: value is not valid YAML ({_one_line(e)})") from None
    return path, parsed


_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def split_inductor_option(entry: Any, source: str = "the train settings") -> tuple[str, Any]:
    """One train.inductor_options entry, 'dotted.key=value', as (key, value parsed as YAML). Only the form is
    checked here; whether torch has the option and takes the value is golf.inductor_options' business (this
    module stays free of torch)."""
    where = f"'train.inductor_options' in {source}: entry {_short(entry)}"
    expected = "expected 'dotted.key=value', e.g. 'triton.mix_order_reduction=false'"
    if not isinstance(entry, str) or "=" not in entry:
        raise ConfigError(f"{where}: {expected}")
    key, text = entry.split("=", 1)
    key = key.strip()
    if not _OPTION_KEY.fullmatch(key):
        problem = "empty key" if not key else f"key {_short(key)} is not a dotted name"
        raise ConfigError(f"{where}: {problem}; {expected}")
    try:
        value = yaml_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"{where}: expected a YAML value after '=' ({_one_line(e)})") from None
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text.strip()  # YAML 1.2 booleans only: yes/no/on/off stay words, which a bool option refuses
    return key, value


def _check_inductor_options(entries: list, source: str) -> None:
    """Every entry has the form key=value, and no option is set twice (the later one would win unseen)."""
    seen: dict[str, Any] = {}
    for entry in entries:
        key, _ = split_inductor_option(entry, source)
        if key in seen:
            raise ConfigError(f"'train.inductor_options' in {source}: {key!r} is set twice ({_short(seen[key])} "
                              f"and {_short(entry)}); expected each option once")
        seen[key] = entry


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found")
    try:
        raw = yaml_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"params file {str(path)!r} is not UTF-8 text: {e}") from None
    except (yaml.YAMLError, ValueError) as e:
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {_one_line(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params file {str(path)!r}: expected a mapping of sections at the top level")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load and validate a params file, then apply `section.key=value` overrides (also validated)."""
    raw = load_raw(path)
    source = str(path)
    for ov in overrides or []:
        keys, value = parse_override(ov)
        node = raw
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {ov!r}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
        source = f"{path} (with overrides)"
    return params_from_dict(raw, source)


def to_dict(obj: Any) -> dict:
    """A plain dict of a config dataclass (for provenance and config.json)."""
    return dataclasses.asdict(obj)


def section_from_dict(cls: type, raw: dict, source: str) -> Any:
    """Rebuild one section (e.g. ModelConfig from a checkpoint's config.json), validated."""
    return _build(cls, raw, "", source)
