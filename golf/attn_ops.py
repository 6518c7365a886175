"""model.attn_backend "flash4": FlashAttention-4's causal attention as PyTorch custom operators (torch.library).

FlashAttention-4 (PyPI `flash-attn-4`, `from flash_attn.cute import flash_attn_func`) is the only flash-attn that
installs on the H200 image, and it beat SDPA (which runs cuDNN's attention there) at golf's shapes
(bench/attn_kernel_bench.py on an H200, 2026-12-01: 64 x 2048 tokens, 8 query / 4 KV heads of 64, forward + backward 2.52 ms against SDPA's 2.83,
forward alone 0.71 against 0.66; 4 / 2 heads of 128: 2.13 against 2.20; max relative error against an fp32
reference 0.0048, SDPA's 0.0068). But its autograd.Function is plain Python around CuTe DSL kernels that compile
at their first call: inside golf's torch.compile'd training step Dynamo would break the graph at every attention
layer (and try to trace FA4's host code), and CUDA graphs could not capture the step whole. As custom ops,
torch.compile sees one node per call, with output shapes from a fake kernel and a backward op, compiles the
model around them as one graph, and CUDA graphs can capture them (as golf/ssm_ops.py does for the Mamba kernels).

golf::flash4_attn(q, k, v) -> (out, lse) and golf::flash4_attn_bwd(q, k, v, out, lse, dout) -> (dq, dk, dv):
causal softmax(q kᵀ / sqrt(D)) v, q (B, T, H, D), k and v (B, T, Hkv, D) with H a multiple of Hkv, query head
h reading KV head h // (H / Hkv) (SDPA's enable_gqa grouping and flash-attn's). out is (B, T, H, D) in q's dtype,
lse (B, H, T) fp32 is the natural-log logsumexp of each query's scaled, masked scores, which the backward reads
(it is not differentiable: no gradient flows back through it). On CUDA the ops call the forward and backward
that FA4's FlashAttnFunc calls (flash_attn.cute.interface._flash_attn_fwd / _flash_attn_bwd, bound lazily by
fa4_kernels(); written against flash-attn-4 4.0.0b36), bf16/fp16 only; on CPU golf's reference math in plain
PyTorch (attention_reference, and the flash backward's formulas from out and lse), so tests/test_attn_ops.py
checks the plumbing without a GPU.

This module is training-only (golf.package.TRAINING_ONLY: artifacts do not ship it). golf.attention imports it
for "flash4"; an artifact trained with flash4 is scored with model.attn_backend "auto" (golf.artifact).
"""

import functools
import math

import torch
from torch import Tensor


@functools.cache
def fa4_kernels() -> dict:
    """{"fwd", "bwd"}: FlashAttention-4's forward and backward (flash_attn.cute.interface), imported at the first
    CUDA call. ImportError where flash-attn-4 is not installed (golf.attention.resolve_attn_backend refuses
    "flash4" there first)."""
    from flash_attn.cute import interface

    return {"fwd": interface._flash_attn_fwd, "bwd": interface._flash_attn_bwd}


def softmax_scale(q: Tensor) -> float:
    """1 / sqrt(D), the scale GQAttention attends with (SDPA's default, FA4's default without qv)."""
    return 1.0 / math.sqrt(q.shape[-1])


def _like(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """t as a contiguous tensor of `dtype`: what the fake kernels promise."""
    return t.to(dtype or t.dtype).contiguous()


def _heads_first(t: Tensor, groups: int, dtype: torch.dtype) -> Tensor:
    """(B, T, Hkv, D) -> (B, Hkv * groups, T, D) in `dtype`, each KV head repeated for its `groups` query heads
    (query head h reads KV head h // groups); groups 1 for q itself."""
    return t.to(dtype).transpose(1, 2).repeat_interleave(groups, dim=1)


def _scores(q: Tensor, k: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, int]:
    """Scaled causal scores (B, H, T, T) in `dtype` (-inf above the diagonal), the repeated keys (B, H, T, D), and
    the query heads per KV head."""
    g = q.shape[2] // k.shape[2]
    qh, kh = _heads_first(q, 1, dtype), _heads_first(k, g, dtype)  # (B, H, T, D) each
    T = q.shape[1]
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T): key j <= query i
    s = (qh @ kh.transpose(-1, -2)) * softmax_scale(q)  # (B, H, T, T)
    return s.masked_fill(~keep, float("-inf")), kh, g


def attention_reference(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out (B, T, H, D) in q's dtype, lse (B, H, T) fp32): causal GQA attention in at least fp32, explicit
    softmax with the KV heads repeated."""
    dt = torch.promote_types(q.dtype, torch.float32)
    s, _, g = _scores(q, k, dt)  # (B, H, T, T)
    lse = torch.logsumexp(s, dim=-1)  # (B, H, T)
    out = torch.exp(s - lse[..., None]) @ _heads_first(v, g, dt)  # (B, H, T, D)
    return out.transpose(1, 2).to(q.dtype), lse.float()


def attention_reference_bwd(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                            dout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) in q's, k's, v's dtypes, by the flash backward's formulas in at least fp32: P = exp(S - lse)
    from the forward's lse, dV = Pᵀ dO, dS = P (dO Vᵀ - rowsum(dO * O)), dQ = scale dS K, dK = scale dSᵀ Q, with
    dK and dV summed over the query heads of each KV head."""
    B, T, _, D = q.shape
    Hkv = k.shape[2]
    dt = torch.promote_types(q.dtype, torch.float32)
    s, kh, g = _scores(q, k, dt)  # (B, H, T, T), (B, H, T, D)
    p = torch.exp(s - lse.to(dt)[..., None])  # (B, H, T, T), 0 above the diagonal
    do, o = _heads_first(dout, 1, dt), _heads_first(out, 1, dt)  # (B, H, T, D) each
    dv = p.transpose(-1, -2) @ do  # (B, H, T, D), per query head
    delta = (do * o).sum(-1, keepdim=True)  # (B, H, T, 1)
    ds = p * (do @ _heads_first(v, g, dt).transpose(-1, -2) - delta) * softmax_scale(q)  # (B, H, T, T)
    dq = ds @ kh  # (B, H, T, D)
    dk = ds.transpose(-1, -2) @ _heads_first(q, 1, dt)  # (B, H, T, D), per query head

    def per_kv(t: Tensor) -> Tensor:  # (B, H, T, D) -> (B, T, Hkv, D), summed over each KV head's g query heads
        return t.view(B, Hkv, g, T, D).sum(2).transpose(1, 2)

    return _like(dq.transpose(1, 2), q.dtype), _like(per_kv(dk), k.dtype), _like(per_kv(dv), v.dtype)


# --------------------------------------------------------------------------------------------------
# Forward: q (B, T, H, D), k, v (B, T, Hkv, D) -> out (B, T, H, D) in q's dtype, lse (B, H, T) fp32
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("golf::flash4_attn", mutates_args=(), device_types="cpu")
def flash4_attn(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    out, lse = attention_reference(q, k, v)
    return _like(out), _like(lse)


@flash4_attn.register_fake
def _(q, k, v):
    B, T, H, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(B, H, T, dtype=torch.float32)


def flash4_attn_cuda(fns: dict, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    # _flash_attn_fwd(q, k, v, ..., softmax_scale, causal, ..., return_lse, ...) -> out (B, T, H, D) in q's dtype,
    # lse (B, H, T) fp32 (allocated because return_lse=True), then p, row_max, o_lo (None outside MLA)
    out, lse, *_ = fns["fwd"](q.contiguous(), k.contiguous(), v.contiguous(), softmax_scale=softmax_scale(q),
                              causal=True, return_lse=True)
    return _like(out), _like(lse)


@flash4_attn.register_kernel("cuda")
def _(q, k, v):
    return flash4_attn_cuda(fa4_kernels(), q, k, v)


# --------------------------------------------------------------------------------------------------
# Backward: the forward's inputs, out and lse, and dout (B, T, H, D) -> dq, dk, dv (contiguous, their inputs'
# dtypes)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("golf::flash4_attn_bwd", mutates_args=(), device_types="cpu")
def flash4_attn_bwd(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    dout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return attention_reference_bwd(q, k, v, out, lse, dout)


@flash4_attn_bwd.register_fake
def _(q, k, v, out, lse, dout):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def flash4_attn_bwd_cuda(fns: dict, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                         dout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # _flash_attn_bwd(q, k, v, out, dout, lse, softmax_scale, causal, softcap, ...) -> dq, dk, dv shaped like q, k,
    # v in q's dtype (it asserts q, k, v, out and dout share one 16-bit dtype and lse is (B, H, T) fp32)
    dq, dk, dv = fns["bwd"](q.contiguous(), k.contiguous(), v.contiguous(), out.contiguous(),
                            dout.to(out.dtype).contiguous(), lse.contiguous(), softmax_scale=softmax_scale(q),
                            causal=True)
    return _like(dq, q.dtype), _like(dk, k.dtype), _like(dv, v.dtype)


@flash4_attn_bwd.register_kernel("cuda")
def _(q, k, v, out, lse, dout):
    return flash4_attn_bwd_cuda(fa4_kernels(), q, k, v, out, lse, dout)


def _setup(ctx, inputs, output):
    q, k, v = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    if dout is None:  # out unused: no gradient for q, k, v
        return None, None, None
    return tuple(torch.ops.golf.flash4_attn_bwd(q, k, v, out, lse, dout))


flash4_attn.register_autograd(_backward, setup_context=_setup)


def flash_attn_func(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    """flash_attn_func(q, k, v, causal=True) as GQAttention calls it: out (B, T, H, D) of golf::flash4_attn."""
    if not causal:
        raise ValueError("golf::flash4_attn is causal attention: pass causal=True")
    return torch.ops.golf.flash4_attn(q, k, v)[0]
