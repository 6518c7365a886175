"""model.ssm_compile "opaque": the Mamba-2 mixer's kernels as PyTorch custom operators (torch.library), so
that torch.compile sees one op per call, with output shapes from a fake kernel and a backward op, compiles the
model around them as one graph, and CUDA graphs can capture them.

golf::ssd_scan (the SSD chunk scan with softplus(dt + dt_bias) and the D skip), golf::causal_conv1d_silu and
golf::gated_rmsnorm (norm_before_gate=False), each with a backward op. On CUDA they call the forward and
backward functions that the libraries' own autograd.Functions call (mamba_ssm.ops.triton.ssd_combined
MambaChunkScanCombinedFn, layernorm_gated LayerNormFn, causal_conv1d CausalConv1dFn), bound by
golf.ssm.resolve_ssm_backend; on CPU golf's reference math, backward by torch.autograd through it, so
tests/test_ssm_opaque.py checks the plumbing without a GPU. The scan ops' `impl` argument says whose
forward and backward their CUDA kernels call: mamba-ssm's, or golf's own (golf/ssd_kernel.py, model.ssm_scan
"golf" or "golf_split"; the split forward's per-chunk states do not reach golf_split's backward op, which
recomputes them, as golf::ssd_scan has no output for them; tests/test_ssm_golf_scan.py); the conv ops'
`impl` argument likewise: causal-conv1d's, or golf's own (golf/conv_kernel.py, model.ssm_conv "golf";
tests/test_ssm_golf_conv.py).

This module is training-only (golf.package.TRAINING_ONLY: artifacts do not ship it), so golf.ssm imports golf's
own scan and conv kernels through golf_scan_kernels() and golf_conv_kernels() here, which keeps
golf/ssd_kernel.py and golf/conv_kernel.py out of artifacts too.
An op's outputs are new tensors with the dtype and strides its fake kernel gives (an op cannot return None:
an absent final state is an empty tensor).
"""

# custom_op infers each op's schema from its annotations; typing.Optional is the spelling every torch 2.x reads
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch
from torch import Tensor

from golf.ssm import causal_conv_silu_reference, compute_dtype, gated_rms_norm_reference, ssd_scan_reference

# filled by bind_cuda(): {"scan_fwd", "scan_bwd"} from mamba-ssm, optionally {"norm_fwd", "norm_bwd"} and
# {"conv_fwd", "conv_bwd"} from causal-conv1d; {"golf_scan_fwd", "golf_scan_bwd"} or {"golf_split_scan_fwd",
# "golf_split_scan_bwd"} from golf.ssd_kernel; {"golf_conv_fwd", "golf_conv_bwd"} from golf.conv_kernel
_CUDA: dict = {}
SCAN_KERNELS = ("mamba", "golf", "golf_split")  # golf::ssd_scan's `impl` argument (model.ssm_scan)
CONV_KERNELS = ("causal_conv1d", "golf")  # golf::causal_conv1d_silu's `impl` argument (model.ssm_conv)


def bind_cuda(fns: dict) -> None:
    """The library functions the CUDA kernels below call (keys as in _CUDA's comment)."""
    _CUDA.update(fns)


def golf_scan_kernels(kernel: str = "golf") -> dict:
    """golf's own SSD kernels (model.ssm_scan "golf": the forward and backward walking the chunks, or
    "golf_split": both split over chunks, golf.ssd_kernel's fwd="split" and bwd="split"): {"scan": the
    autograd function with mamba_chunk_scan_combined's call, "scan_fwd", "scan_bwd": the forward and backward
    the opaque ops call}. "scan" passes the split forward's stored states to the split backward; the opaque
    ops do not (golf::ssd_scan's outputs are y and the final state), so there the split backward recomputes
    them (its first pass runs both recurrences). ImportError where triton is missing (golf.ssd_kernel imports
    it at module top)."""
    import golf.ssd_kernel as sk

    if kernel != "golf_split":  # the walks are ssd_kernel's defaults
        return {"scan": sk.ssd_scan, "scan_fwd": sk.ssd_scan_fwd, "scan_bwd": sk.ssd_scan_bwd}
    return {"scan": functools.partial(sk.ssd_scan, fwd="split", bwd="split"),
            "scan_fwd": functools.partial(sk.ssd_scan_fwd, fwd="split"),
            "scan_bwd": functools.partial(sk.ssd_scan_bwd, bwd="split")}


def golf_conv_kernels() -> dict:
    """golf's own causal conv1d + SiLU kernels (model.ssm_conv "golf"): {"conv": causal_conv1d_fn's call as the
    mixer makes it (conv_golf_fn around golf.conv_kernel.causal_conv1d_silu), "conv_fwd", "conv_bwd": the
    forward and backward that function calls}. ImportError where triton is missing (golf.conv_kernel imports it
    at module top)."""
    import golf.conv_kernel as ck

    return {"conv": functools.partial(conv_golf_fn, ck.causal_conv1d_silu), "conv_fwd": ck.conv_fwd,
            "conv_bwd": ck.conv_bwd}


def conv_golf_fn(fn, x, weight, bias=None, activation=None):
    """causal_conv1d_fn(x, weight, bias, activation="silu") as the mixer calls it, on golf's kernels (fn:
    golf.conv_kernel.causal_conv1d_silu, bound by golf_conv_kernels): model.ssm_conv "golf" under ssm_compile
    "disable" and "trace"."""
    _silu_only(activation)
    return fn(x, weight, bias)


def _silu_only(activation) -> None:
    if activation != "silu":
        raise ValueError(f"golf::causal_conv1d_silu applies SiLU: pass activation='silu', got {activation!r}")


def _fwd_key(kernel: str) -> str:
    """The bound forward for golf's kernels: one key per design, so models built with either in one process
    keep their own."""
    return "golf_split_scan_fwd" if kernel == "golf_split" else "golf_scan_fwd"


def _bwd_key(kernel: str) -> str:
    """The bound backward for golf's kernels: as _fwd_key."""
    return "golf_split_scan_bwd" if kernel == "golf_split" else "golf_scan_bwd"


def _is_golf(kernel: str, choices: tuple[str, ...] = SCAN_KERNELS, op: str = "golf::ssd_scan") -> bool:
    """Whether an op's `kernel` names golf's kernels (else the library's, choices[0]: the scan ops' mamba-ssm,
    the conv ops' causal-conv1d); a ValueError for none of the choices."""
    if kernel not in choices:
        raise ValueError(f"{op}'s kernel must be one of {list(choices)}, got {kernel!r}")
    return kernel != choices[0]


def _is_golf_conv(kernel: str) -> bool:
    return _is_golf(kernel, CONV_KERNELS, "golf::causal_conv1d_silu")


def _cuda(key: str):
    if key not in _CUDA:
        raise RuntimeError(f"golf's opaque SSM ops on CUDA need {key!r}, bound when a model is built with "
                           "model.ssm_compile 'opaque' (golf.ssm.resolve_ssm_backend)")
    return _CUDA[key]


_AUTOGRAD_THREAD = ThreadPoolExecutor(1, thread_name_prefix="golf-ssm-ops-cpu-backward")


def _autograd(fn, inputs: tuple, cotangents: tuple) -> list[Tensor]:
    """The gradients of fn's outputs (weighted by cotangents; an output whose cotangent is None is left out)
    w.r.t. inputs, by torch.autograd, for the CPU backward kernels. An op's kernel runs with autograd's
    dispatch keys excluded (thread-local state torch sets around it), so nothing would be recorded there;
    a worker thread starts from the default state. (torch.func.vjp would run in place, but breaks under the
    dispatch modes torch.library.opcheck runs kernels in.)"""
    def work():
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        outs = fn(*leaves)
        pairs = [(o, c.to(o.dtype)) for o, c in zip(outs, cotangents) if c is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, [c for _, c in pairs], allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    return _AUTOGRAD_THREAD.submit(work).result()


def _like(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """t (a gradient or an output) as a contiguous tensor of `dtype`: what the fake kernels promise."""
    return t.to(dtype or t.dtype).contiguous()


# --------------------------------------------------------------------------------------------------
# SSD scan: x (b, l, h, p), dt (b, l, h) before softplus, A, D, dt_bias (h,), B, C (b, l, g, n),
# initial_state (b, h, p, n) or None → y (b, l, h, p) in x's dtype, final state (b, h, p, n) in
# compute_dtype(x) when return_final_state, else an empty tensor. impl: "mamba", "golf" or "golf_split", whose
# kernels the CUDA kernels call (SCAN_KERNELS); the CPU kernels are golf's reference for all
# --------------------------------------------------------------------------------------------------


def _final(final: Tensor, keep: bool, x: Tensor) -> Tensor:
    return _like(final, compute_dtype(x)) if keep else x.new_empty(0, dtype=compute_dtype(x))


@torch.library.custom_op("golf::ssd_scan", mutates_args=(), device_types="cpu")
def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, dt_bias: Tensor,
             initial_state: Optional[Tensor], chunk_size: int,  # noqa: UP045
             return_final_state: bool, impl: str = "mamba") -> tuple[Tensor, Tensor]:
    y, final = ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk_size, initial_state)
    return _like(y), _final(final, return_final_state, x)


@ssd_scan.register_fake
def _(x, dt, A, B, C, D, dt_bias, initial_state, chunk_size, return_final_state, impl="mamba"):
    b, _, h, p = x.shape
    shape = (b, h, p, B.shape[-1]) if return_final_state else (0,)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(shape, dtype=compute_dtype(x))


def ssd_scan_mamba(fns: dict, x, dt, A, B, C, D, dt_bias, initial_state, chunk_size, return_final_state):
    """The CUDA kernel, with mamba-ssm's functions passed in (tests pass stand-ins)."""
    # _mamba_chunk_scan_combined_fwd → out, out_x (None without z), dt, dA_cumsum, states, final_states
    y, _, _, _, _, final = fns["scan_fwd"](x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
                                           initial_states=initial_state, dt_softplus=True)[:6]
    return _like(y), _final(final, return_final_state, x)


def ssd_scan_golf(fns: dict, x, dt, A, B, C, D, dt_bias, initial_state, chunk_size, return_final_state):
    """The CUDA kernel with golf's forward (golf.ssd_kernel.ssd_scan_fwd, either design) passed in: the same
    outputs."""
    # ssd_scan_fwd → y, final state (None unless asked for), states entering each chunk (None: not asked for; the
    # op has no output to carry the split forward's to the backward op, which recomputes them)
    y, final, _ = fns["scan_fwd"](x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                                  initial_states=initial_state, return_final_states=return_final_state)
    return _like(y), _final(final, return_final_state, x)


@ssd_scan.register_kernel("cuda")
def _ssd_scan_cuda(x, dt, A, B, C, D, dt_bias, initial_state, chunk_size, return_final_state, impl="mamba"):
    if _is_golf(impl):
        return ssd_scan_golf({"scan_fwd": _cuda(_fwd_key(impl))}, x, dt, A, B, C, D, dt_bias, initial_state,
                             chunk_size, return_final_state)
    return ssd_scan_mamba({"scan_fwd": _cuda("scan_fwd")}, x, dt, A, B, C, D, dt_bias, initial_state,
                          chunk_size, return_final_state)


@torch.library.custom_op("golf::ssd_scan_bwd", mutates_args=(), device_types="cpu")
def ssd_scan_bwd(dy: Tensor, dfinal: Optional[Tensor], x: Tensor, dt: Tensor, A: Tensor, B: Tensor,  # noqa: UP045
                 C: Tensor, D: Tensor, dt_bias: Tensor, initial_state: Optional[Tensor],  # noqa: UP045
                 y: Tensor, chunk_size: int,
                 impl: str = "mamba") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients for x, dt, A, B, C, D, dt_bias and the initial state (empty without one). y is the forward's
    output (mamba-ssm's backward takes it; golf's recomputes what it needs from the inputs)."""
    inputs = (x, dt, A, B, C, D, dt_bias) + ((initial_state,) if initial_state is not None else ())
    grads = _autograd(lambda *t: ssd_scan_reference(*t[:7], chunk_size, *t[7:]), inputs, (dy, dfinal))
    return _scan_grads(grads, inputs, x)


def _scan_grads(grads, inputs, x):
    out = tuple(_like(g, t.dtype) for g, t in zip(grads, inputs))
    return out if len(out) == 8 else (*out, x.new_empty(0, dtype=compute_dtype(x)))


@ssd_scan_bwd.register_fake
def _(dy, dfinal, x, dt, A, B, C, D, dt_bias, initial_state, y, chunk_size, impl="mamba"):
    inputs = (x, dt, A, B, C, D, dt_bias) + ((initial_state,) if initial_state is not None else ())
    return _scan_grads([torch.empty_like(t, memory_format=torch.contiguous_format) for t in inputs], inputs, x)


def ssd_scan_bwd_mamba(fns: dict, dy, dfinal, x, dt, A, B, C, D, dt_bias, initial_state, y, chunk_size):
    # _mamba_chunk_scan_combined_bwd → dx, ddt, dA, dB, dC, dD, dz (None without z), ddt_bias, dinitial_states
    dx, ddt, dA, dB, dC, dD, _, ddt_bias, dinit = fns["scan_bwd"](
        dy, x, dt, A, B, C, y, chunk_size, D=D, dt_bias=dt_bias, initial_states=initial_state,
        dfinal_states=dfinal, dt_softplus=True)
    inputs = (x, dt, A, B, C, D, dt_bias) + ((initial_state,) if initial_state is not None else ())
    grads = (dx, ddt, dA, dB, dC, dD, ddt_bias) + ((dinit,) if initial_state is not None else ())
    return _scan_grads(grads, inputs, x)


def ssd_scan_bwd_golf(fns: dict, dy, dfinal, x, dt, A, B, C, D, dt_bias, initial_state, y, chunk_size):
    """The CUDA kernel with golf's backward (golf.ssd_kernel.ssd_scan_bwd) passed in; y is not read."""
    # ssd_scan_bwd → dx, ddt, dA, dB, dC, dD, ddt_bias, dinitial_states (None without initial states), each in
    # its input's dtype; dfinal may be None (no gradient reaches the final state)
    grads = fns["scan_bwd"](dy, dfinal, x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                            initial_states=initial_state)
    inputs = (x, dt, A, B, C, D, dt_bias) + ((initial_state,) if initial_state is not None else ())
    return _scan_grads(grads[:len(inputs)], inputs, x)


@ssd_scan_bwd.register_kernel("cuda")
def _ssd_scan_bwd_cuda(dy, dfinal, x, dt, A, B, C, D, dt_bias, initial_state, y, chunk_size, impl="mamba"):
    if _is_golf(impl):
        return ssd_scan_bwd_golf({"scan_bwd": _cuda(_bwd_key(impl))}, dy, dfinal, x, dt, A, B, C, D, dt_bias,
                                 initial_state, y, chunk_size)
    return ssd_scan_bwd_mamba({"scan_bwd": _cuda("scan_bwd")}, dy, dfinal, x, dt, A, B, C, D, dt_bias,
                              initial_state, y, chunk_size)


def _ssd_setup(ctx, inputs, output):
    x, dt, A, B, C, D, dt_bias, initial_state, chunk_size, _, impl = inputs
    ctx.save_for_backward(x, dt, A, B, C, D, dt_bias, initial_state, output[0])
    ctx.chunk_size, ctx.impl = chunk_size, impl
    ctx.set_materialize_grads(False)  # an unused final state gets no zero gradient


def _ssd_backward(ctx, dy, dfinal):
    x, dt, A, B, C, D, dt_bias, initial_state, y = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(y)
    if dfinal is not None and dfinal.numel() == 0:
        dfinal = None
    g = torch.ops.golf.ssd_scan_bwd(dy, dfinal, x, dt, A, B, C, D, dt_bias, initial_state, y, ctx.chunk_size,
                                    ctx.impl)
    return (*g[:7], g[7] if initial_state is not None else None, None, None, None)


ssd_scan.register_autograd(_ssd_backward, setup_context=_ssd_setup)


# --------------------------------------------------------------------------------------------------
# Causal depthwise conv + SiLU: x (B, C, T) → (B, C, T) in x's dtype, channel-last (a transposed
# contiguous (B, T, C), as the mixer uses it); weight (C, W), bias (C,) of one dtype. impl: "causal_conv1d" or
# "golf", whose kernels the CUDA kernels call (CONV_KERNELS); the CPU kernels are golf's reference for both
# --------------------------------------------------------------------------------------------------


def _channel_last(t: Tensor) -> Tensor:
    """(B, C, T) with C the fastest dimension and strides divisible by 8, as causal-conv1d needs; t itself
    when it already is."""
    if t.stride(1) == 1 and t.stride(0) % 8 == 0 and t.stride(2) % 8 == 0 and t.storage_offset() % 8 == 0:
        return t
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _new_channel_last(x: Tensor) -> Tensor:
    b, c, t = x.shape
    return x.new_empty(b, t, c).transpose(1, 2)


def _conv_reference(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return causal_conv_silu_reference(torch.nn.functional.pad(x, (weight.shape[-1] - 1, 0)), weight[:, None], bias)


@torch.library.custom_op("golf::causal_conv1d_silu", mutates_args=(), device_types="cpu")
def causal_conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor, impl: str = "causal_conv1d") -> Tensor:
    return _new_channel_last(x).copy_(_conv_reference(x, weight, bias))


@causal_conv1d_silu.register_fake
def _(x, weight, bias, impl="causal_conv1d"):
    return _new_channel_last(x)


def causal_conv1d_silu_cuda(fns: dict, x, weight, bias):
    x = _channel_last(x)
    out = _new_channel_last(x)
    fns["conv_fwd"](x=x, weight=weight, bias=bias, seq_idx=None, initial_states=None, out=out,
                    final_states_out=None, silu_activation=True)
    return out


def causal_conv1d_silu_golf(fns: dict, x, weight, bias):
    """The CUDA kernel with golf's forward (golf.conv_kernel.conv_fwd, any strides) passed in: the same output,
    channel-last in x's dtype."""
    return fns["conv_fwd"](x, weight, bias)


@causal_conv1d_silu.register_kernel("cuda")
def _causal_conv1d_silu_cuda(x, weight, bias, impl="causal_conv1d"):
    if _is_golf_conv(impl):
        return causal_conv1d_silu_golf({"conv_fwd": _cuda("golf_conv_fwd")}, x, weight, bias)
    return causal_conv1d_silu_cuda({"conv_fwd": _cuda("conv_fwd")}, x, weight, bias)


@torch.library.custom_op("golf::causal_conv1d_silu_bwd", mutates_args=(), device_types="cpu")
def causal_conv1d_silu_bwd(x: Tensor, weight: Tensor, bias: Tensor, dout: Tensor,
                           impl: str = "causal_conv1d") -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for x (channel-last like the forward's output), weight and bias."""
    dx, dw, db = _autograd(lambda *t: (_conv_reference(*t),), (x, weight, bias), (dout,))
    return _new_channel_last(x).copy_(dx), _like(dw, weight.dtype), _like(db, bias.dtype)


@causal_conv1d_silu_bwd.register_fake
def _(x, weight, bias, dout, impl="causal_conv1d"):
    return _new_channel_last(x), torch.empty_like(weight, memory_format=torch.contiguous_format), \
        torch.empty_like(bias, memory_format=torch.contiguous_format)


def causal_conv1d_silu_bwd_cuda(fns: dict, x, weight, bias, dout):
    x = _channel_last(x)
    # causal_conv1d.cpp_functions.causal_conv1d_bwd_function(x, weight, bias, dout, seq_idx, initial_states,
    # dfinal_states, dx, return_dinitial_states, silu_activation) → dx, dweight, dbias, dinitial_states
    dx, dw, db, _ = fns["conv_bwd"](x, weight, bias, _channel_last(dout), None, None, None, _new_channel_last(x),
                                    False, True)
    return dx, _like(dw, weight.dtype), _like(db, bias.dtype)


def causal_conv1d_silu_bwd_golf(fns: dict, x, weight, bias, dout):
    """The CUDA kernel with golf's backward (golf.conv_kernel.conv_bwd, any strides) passed in."""
    # conv_bwd → dx (channel-last, x's dtype), dweight (a transposed view), dbias, in their parameters' dtypes
    dx, dw, db = fns["conv_bwd"](x, weight, bias, dout)
    return dx, _like(dw, weight.dtype), _like(db, bias.dtype)


@causal_conv1d_silu_bwd.register_kernel("cuda")
def _causal_conv1d_silu_bwd_cuda(x, weight, bias, dout, impl="causal_conv1d"):
    if _is_golf_conv(impl):
        return causal_conv1d_silu_bwd_golf({"conv_bwd": _cuda("golf_conv_bwd")}, x, weight, bias, dout)
    return causal_conv1d_silu_bwd_cuda({"conv_bwd": _cuda("conv_bwd")}, x, weight, bias, dout)


def _conv_setup(ctx, inputs, output):
    x, weight, bias, impl = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.impl = impl


def _conv_backward(ctx, dout):
    return (*torch.ops.golf.causal_conv1d_silu_bwd(*ctx.saved_tensors, dout, ctx.impl), None)


causal_conv1d_silu.register_autograd(_conv_backward, setup_context=_conv_setup)


# --------------------------------------------------------------------------------------------------
# Gated RMSNorm: x, z (..., N) → RMSNorm(x * SiLU(z)) per group of group_size channels, times weight (N,):
# out like x (contiguous, x's dtype) and rstd (G * M,) fp32, M = rows, ordered group-major as mamba-ssm's
# kernel writes it (its backward reads it)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("golf::gated_rmsnorm", mutates_args=(), device_types="cpu")
def gated_rmsnorm(x: Tensor, z: Tensor, weight: Tensor, eps: float, group_size: int) -> tuple[Tensor, Tensor]:
    n = x.shape[-1]
    out = gated_rms_norm_reference(x, z, weight, n // group_size, eps)
    g = (x.float() * torch.nn.functional.silu(z.float())).reshape(-1, n // group_size, group_size)  # (M, G, gs)
    rstd = torch.rsqrt(g.square().mean(-1) + eps)  # (M, G)
    return _like(out), rstd.t().reshape(-1).contiguous()


@gated_rmsnorm.register_fake
def _(x, z, weight, eps, group_size):
    return torch.empty_like(x, memory_format=torch.contiguous_format), \
        x.new_empty(x.numel() // group_size, dtype=torch.float32)


def _rows(t: Tensor) -> Tensor:
    """(..., N) → (M, N) with unit stride along N, as mamba-ssm's norm kernels need (a view when possible)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def gated_rmsnorm_cuda(fns: dict, x, z, weight, eps, group_size):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    # layernorm_gated._layer_norm_fwd(x, weight, bias, eps, z, out, group_size, norm_before_gate, is_rms_norm)
    # → out, mean (None for RMSNorm), rstd
    _, _, rstd = fns["norm_fwd"](_rows(x), weight.contiguous(), None, eps, z=_rows(z), out=out.view(-1, x.shape[-1]),
                                 group_size=group_size, norm_before_gate=False, is_rms_norm=True)
    return out, rstd


@gated_rmsnorm.register_kernel("cuda")
def _(x, z, weight, eps, group_size):
    return gated_rmsnorm_cuda({"norm_fwd": _cuda("norm_fwd")}, x, z, weight, eps, group_size)


@torch.library.custom_op("golf::gated_rmsnorm_bwd", mutates_args=(), device_types="cpu")
def gated_rmsnorm_bwd(dy: Tensor, x: Tensor, z: Tensor, weight: Tensor, rstd: Tensor, eps: float,
                      group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for x, z (contiguous, their dtypes) and weight."""
    n = x.shape[-1]
    dx, dz, dw = _autograd(lambda *t: (gated_rms_norm_reference(*t, n // group_size, eps),), (x, z, weight), (dy,))
    return _like(dx, x.dtype), _like(dz, z.dtype), _like(dw, weight.dtype)


@gated_rmsnorm_bwd.register_fake
def _(dy, x, z, weight, rstd, eps, group_size):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, z, weight))


def gated_rmsnorm_bwd_cuda(fns: dict, dy, x, z, weight, rstd, eps, group_size):
    # layernorm_gated._layer_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z, group_size, norm_before_gate,
    # is_rms_norm) → dx, dw, db (None without bias), dz
    dx, dw, _, dz = fns["norm_bwd"](_rows(dy), _rows(x), weight.contiguous(), None, eps, None, rstd, _rows(z),
                                    group_size, False, True)
    return _like(dx.reshape(x.shape), x.dtype), _like(dz.reshape(z.shape), z.dtype), _like(dw, weight.dtype)


@gated_rmsnorm_bwd.register_kernel("cuda")
def _(dy, x, z, weight, rstd, eps, group_size):
    return gated_rmsnorm_bwd_cuda({"norm_bwd": _cuda("norm_bwd")}, dy, x, z, weight, rstd, eps, group_size)


def _norm_setup(ctx, inputs, output):
    x, z, weight, eps, group_size = inputs
    ctx.save_for_backward(x, z, weight, output[1])
    ctx.eps, ctx.group_size = eps, group_size
    ctx.set_materialize_grads(False)  # rstd is never used: no zero gradient for it


def _norm_backward(ctx, dy, _drstd):
    x, z, weight, rstd = ctx.saved_tensors
    dx, dz, dw = torch.ops.golf.gated_rmsnorm_bwd(dy, x, z, weight, rstd, ctx.eps, ctx.group_size)
    return dx, dz, dw, None, None


gated_rmsnorm.register_autograd(_norm_backward, setup_context=_norm_setup)


# --------------------------------------------------------------------------------------------------
# The mixer's calls (golf.ssm.SSMKernels), with the libraries' signatures as golf uses them
# --------------------------------------------------------------------------------------------------


def scan(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False, initial_states=None,
         return_final_states=False, kernel="mamba"):
    """mamba_chunk_scan_combined as the mixer calls it (D, dt_bias, dt_softplus; no z, seq_idx) as golf::ssd_scan,
    on CUDA with mamba-ssm's kernels, or golf's own with kernel="golf" (or "golf_split")."""
    if D is None or dt_bias is None or not dt_softplus:
        raise ValueError("golf::ssd_scan computes softplus(dt + dt_bias) and the D skip: pass D, dt_bias and "
                         "dt_softplus=True")
    _is_golf(kernel)
    y, final = torch.ops.golf.ssd_scan(x, dt, A, B, C, D, dt_bias, initial_states, chunk_size, return_final_states,
                                       kernel)
    return (y, final) if return_final_states else y


def scan_golf(*args, **kwargs):
    """scan with golf's own kernels on CUDA (model.ssm_scan "golf")."""
    return scan(*args, kernel="golf", **kwargs)


def scan_golf_split(*args, **kwargs):
    """scan with golf's own kernels on CUDA, the forward and backward split over chunks (model.ssm_scan
    "golf_split"; the backward op recomputes the states the forward op stored, golf_scan_kernels)."""
    return scan(*args, kernel="golf_split", **kwargs)


def conv(x, weight, bias, activation=None, kernel="causal_conv1d"):
    """causal_conv1d_fn(x, weight, bias, activation="silu") as golf::causal_conv1d_silu, on CUDA with
    causal-conv1d's kernels, or golf's own with kernel="golf"."""
    _silu_only(activation)
    _is_golf_conv(kernel)
    return torch.ops.golf.causal_conv1d_silu(x, weight, bias, kernel)


def conv_golf(*args, **kwargs):
    """conv with golf's own kernels on CUDA (model.ssm_conv "golf")."""
    return conv(*args, kernel="golf", **kwargs)


def norm(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """layernorm_gated.rmsnorm_fn with z, no bias and norm_before_gate=False as golf::gated_rmsnorm."""
    if bias is not None or z is None or norm_before_gate:
        raise ValueError("golf::gated_rmsnorm is RMSNorm(x * SiLU(z)) * weight: pass z, no bias and "
                         "norm_before_gate=False")
    return torch.ops.golf.gated_rmsnorm(x, z, weight, eps, group_size or x.shape[-1])[0]
