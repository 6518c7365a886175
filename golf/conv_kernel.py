"""golf's own Triton kernels for the Mamba-2 mixer's causal depthwise conv1d + bias + SiLU, forward and backward.
`causal_conv1d_silu(x, weight, bias)` has the call of causal-conv1d's causal_conv1d_fn(x, weight, bias,
activation="silu") as golf.ssm.Mamba2Mixer makes it (no seq_idx, initial or final states); model.ssm_conv "golf"
selects it on the triton path (golf.ssm.resolve_ssm_backend; golf::causal_conv1d_silu under ssm_compile
"opaque"). bench/conv_kernel_bench.py times it against causal_conv1d_fn on a CUDA device (not yet run).

What it computes, per batch b, channel c and time t (W the kernel width, x zero before t = 0, exactly
golf.ssm.causal_conv_silu_reference on F.pad(x, (W - 1, 0))):
    pre[t] = bias[c] + sum_{k<W} w[c, k] x[t - (W - 1 - k)]
    out[t] = silu(pre[t]) = pre[t] sigmoid(pre[t])                     stored in x's dtype
Backward, for dout = dL/dout:
    dpre[t]   = dout[t] silu'(pre[t]),  silu'(p) = s (1 + p (1 - s)),  s = sigmoid(p)
    dx[t]     = sum_{k<W} w[c, k] dpre[t + (W - 1 - k)]                 (the transposed conv; dpre = 0 at t >= T)
    dw[c, k]  = sum_{b,t} dpre[t] x[t - (W - 1 - k)]
    dbias[c]  = sum_{b,t} dpre[t]
All arithmetic in fp32 (fp64 for fp64 x, so that the tests compare exactly), whatever x's, weight's and bias's
dtypes; out and dx in x's dtype, dweight and dbias in their parameter's dtype.

Layout. x (B, C, T) may have any strides (they are passed to the kernels), but the fast one is channel-last:
a transpose view of a (B, T, C) tensor, stride over channels 1, over time C or wider (the mixer's xBC is a
slice of in_proj's output, row stride 1664 at the production shapes). Channels are then the contiguous axis of
every load. out and dx are allocated channel-last contiguous ((B, T, C) transposed), as causal-conv1d's are.

Forward: grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B); each program loads the W time-shifted
(BLOCK_T, BLOCK_C) tiles of x it needs (rows t - W + 1 .. t; the overlapping rows come from L1/L2, so DRAM
sees x about once), adds the W taps and the bias, applies SiLU and stores. Nothing is saved for backward but
the inputs (x, weight, bias): the backward recomputes pre.

Backward: grid (cdiv(T, BLOCK_T * tiles), cdiv(C, BLOCK_C), B); each program walks `tiles` consecutive time
tiles. For a tile of rows t it needs dpre at rows t + j, j = 0 .. W - 1: it recomputes pre (and dpre) for each
of the W shifts from shifted loads of x and dout (2W - 1 distinct x tiles, W dout tiles, again mostly cache
hits), so SiLU's sigmoid is evaluated W times per element (compute the memory-bound kernel can afford; a
register tile cannot be shifted along time in Triton, and storing dpre would cost DRAM bytes). dx is stored
once. dweight and dbias are accumulated per program in registers over its tiles and written as partial sums
to a (B * time-groups, W + 1, C) buffer in the compute dtype, summed in PyTorch: deterministic (no atomics;
the same bits run to run), and small (at the production shapes, 64 * 4 * 5 * 832 fp32 = 4.3 MB against the
218 MB of one bf16 activation).

Limits. W (the width) 2, 3 or 4, as causal-conv1d. No seq_idx, initial_states, return_final_states or
activations other than SiLU. Runs on CUDA tensors, or on CPU tensors under Triton's interpreter
(TRITON_INTERPRET=1 set before triton is first imported; tests/conftest.py). Checked only in the interpreter
(tests/test_conv_kernel.py); compiling it, GPU parity against causal_conv1d_fn and its timing are
bench/conv_kernel_bench.py's, not yet run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

WIDTHS = (2, 3, 4)
_TL_DTYPES = {torch.float64: tl.float64, torch.float32: tl.float32, torch.bfloat16: tl.bfloat16,
              torch.float16: tl.float16}


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _pre(x_base, w_base, bias, t, c, cmask, T, sx_c, sx_t, sw_c, sw_k, W: tl.constexpr, ACC: tl.constexpr):
    """pre = bias + sum_k w[:, k] x[t - (W - 1 - k)] on the (BT, BC) tile of rows t, channels c (zero-padded
    before t = 0; rows at or past T read zeros too)."""
    acc = tl.zeros((t.shape[0], c.shape[0]), dtype=ACC) + bias[None, :]
    for k in tl.static_range(W):
        ts = t - (W - 1 - k)  # (BT,)
        m = ((ts >= 0) & (ts < T))[:, None] & cmask[None, :]
        xv = tl.load(x_base + ts[:, None] * sx_t + c[None, :] * sx_c, mask=m, other=0.0).to(ACC)  # (BT, BC)
        wk = tl.load(w_base + c * sw_c + k * sw_k, mask=cmask, other=0.0).to(ACC)  # (BC,)
        acc += wk[None, :] * xv
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr,
                     T, C,
                     sx_b, sx_c, sx_t, sw_c, sw_k, so_b, so_c, so_t,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                     ACC: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)  # (BT,)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros((BC,), dtype=ACC)
    pre = _pre(x_ptr + b * sx_b, w_ptr, bias, t, c, cmask, T, sx_c, sx_t, sw_c, sw_k, W, ACC)  # (BT, BC)
    out = pre / (1.0 + tl.exp(-pre))
    m = (t < T)[:, None] & cmask[None, :]
    tl.store(out_ptr + b * so_b + t[:, None] * so_t + c[None, :] * so_c, out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, dx_ptr, part_ptr,
                     T, C, tiles,
                     sx_b, sx_c, sx_t, sw_c, sw_k, sd_b, sd_c, sd_t, sdx_b, sdx_c, sdx_t, sp_r, sp_k,
                     W: tl.constexpr, BW: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr,
                     BC: tl.constexpr, ACC: tl.constexpr):
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)  # (BC,)
    cmask = c < C
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros((BC,), dtype=ACC)
    x_base = x_ptr + b * sx_b
    d_base = dout_ptr + b * sd_b
    kk = tl.arange(0, BW)  # (BW,) tap index of the dweight tile
    dw = tl.zeros((BW, BC), dtype=ACC)  # partial dweight, transposed: [k, c]
    db = tl.zeros((BC,), dtype=ACC)
    for i in range(tiles):
        t = (pid_g * tiles + i) * BT + tl.arange(0, BT)  # (BT,)
        dx = tl.zeros((BT, BC), dtype=ACC)
        for j in tl.static_range(W):  # dpre at rows t + j, which dx[t] takes with tap W - 1 - j
            s = t + j
            pre = _pre(x_base, w_ptr, bias, s, c, cmask, T, sx_c, sx_t, sw_c, sw_k, W, ACC)  # (BT, BC)
            m = (s < T)[:, None] & cmask[None, :]
            dout = tl.load(d_base + s[:, None] * sd_t + c[None, :] * sd_c, mask=m, other=0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-pre))
            dpre = dout * sig * (1.0 + pre * (1.0 - sig))  # 0 where s >= T (dout masked to 0)
            wk = tl.load(w_ptr + c * sw_c + (W - 1 - j) * sw_k, mask=cmask, other=0.0).to(ACC)  # (BC,)
            dx += wk[None, :] * dpre
            if j == 0:  # this tile's own dpre: its share of dweight and dbias
                db += tl.sum(dpre, axis=0)
                for k in tl.static_range(W):
                    ts = t - (W - 1 - k)
                    mx = ((ts >= 0) & (ts < T))[:, None] & cmask[None, :]
                    xv = tl.load(x_base + ts[:, None] * sx_t + c[None, :] * sx_c, mask=mx, other=0.0).to(ACC)
                    dw += tl.where(kk[:, None] == k, tl.sum(dpre * xv, axis=0)[None, :], 0.0)
        m = (t < T)[:, None] & cmask[None, :]
        tl.store(dx_ptr + b * sdx_b + t[:, None] * sdx_t + c[None, :] * sdx_c, dx.to(dx_ptr.dtype.element_ty),
                 mask=m)
    row = b * tl.num_programs(0) + pid_g
    p_base = part_ptr + row * sp_r
    tl.store(p_base + kk[:, None] * sp_k + c[None, :], dw, mask=(kk < W)[:, None] & cmask[None, :])
    tl.store(p_base + W * sp_k + c, db, mask=cmask)


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether this module's kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return isinstance(_conv_fwd_kernel, InterpretedFunction)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32  # as golf.ssm.compute_dtype


def _check(x, weight, bias, dout=None) -> None:
    """One ValueError line for the first input that is not what the kernels take."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"causal_conv1d_silu: x must be (batch, channels, seqlen), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    _, c, _ = x.shape
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] != c:
        raise ValueError(f"causal_conv1d_silu: weight must be (channels, width) = ({c}, W), got shape "
                         f"{tuple(getattr(weight, 'shape', ()))}")
    if weight.shape[1] not in WIDTHS:
        raise ValueError(f"causal_conv1d_silu: width must be one of {list(WIDTHS)}, got {weight.shape[1]}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c,)):
        raise ValueError(f"causal_conv1d_silu: bias must be None or ({c},), got shape "
                         f"{tuple(getattr(bias, 'shape', ()))}")
    if dout is not None and tuple(dout.shape) != tuple(x.shape):
        raise ValueError(f"causal_conv1d_silu: dout must have x's shape {tuple(x.shape)}, got {tuple(dout.shape)}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("dout", dout)):
        if t is None:
            continue
        if t.dtype not in _TL_DTYPES:
            raise ValueError(f"causal_conv1d_silu: {name} must be a float64/32/16 or bfloat16 tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"causal_conv1d_silu: {name} is on {t.device} but x is on {x.device}: one device for all")
    if x.device.type != "cuda" and not interpreted():
        raise ValueError(f"causal_conv1d_silu: the Triton kernels need CUDA tensors (x is on {x.device}); on a CPU "
                         "they run only in Triton's interpreter (TRITON_INTERPRET=1 before triton is imported)")


def _check_blocks(block_t, block_c, tiles) -> None:
    for name, v in (("block_t", block_t), ("block_c", block_c)):
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"causal_conv1d_silu: {name} must be a power of two, got {v!r}")
    if not isinstance(tiles, int) or tiles < 1:
        raise ValueError(f"causal_conv1d_silu: tiles must be a positive int, got {tiles!r}")


def _new_channel_last(x: torch.Tensor) -> torch.Tensor:
    b, c, t = x.shape
    return x.new_empty(b, t, c).transpose(1, 2)  # (B, C, T), stride over channels 1


def conv_fwd(x, weight, bias=None, *, block_t=64, block_c=128, num_warps=4):
    """out = silu(causal depthwise conv1d(x, weight) + bias): x (B, C, T) (channel-last for speed; any
    strides), weight (C, W) with W in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype, channel-last."""
    _check_blocks(block_t, block_c, 1)
    _check(x, weight, bias)
    bsz, c, t = x.shape
    out = _new_channel_last(x)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(t, block_t), triton.cdiv(c, block_c), bsz)
    _conv_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        t, c,
        *x.stride(), *weight.stride(), *out.stride(),
        W=weight.shape[1], HAS_BIAS=bias is not None, BT=block_t, BC=block_c, ACC=_TL_DTYPES[_compute_dtype(x)],
        num_warps=num_warps)
    return out


def conv_bwd(x, weight, bias, dout, *, block_t=64, block_c=128, tiles=8, num_warps=4):
    """(dx, dweight, dbias) of sum(out * dout) for out = conv_fwd(x, weight, bias): dx (B, C, T) in x's dtype,
    channel-last; dweight (C, W) and dbias (C,) in their parameter's dtype (None for an absent bias), reduced
    in the compute dtype. tiles: time tiles of block_t rows walked by one program (module docstring)."""
    _check_blocks(block_t, block_c, tiles)
    _check(x, weight, bias, dout)
    bsz, c, t = x.shape
    w = weight.shape[1]
    acc = _compute_dtype(x)
    dx = _new_channel_last(x)
    groups = triton.cdiv(t, block_t * tiles)
    part = torch.zeros(bsz * groups, w + 1, c, dtype=acc, device=x.device)  # [row, k, c]; row W is dbias
    if dx.numel():
        grid = (groups, triton.cdiv(c, block_c), bsz)
        _conv_bwd_kernel[grid](
            x, weight, bias if bias is not None else weight, dout, dx, part,
            t, c, tiles,
            *x.stride(), *weight.stride(), *dout.stride(), *dx.stride(), part.stride(0), part.stride(1),
            W=w, BW=triton.next_power_of_2(w), HAS_BIAS=bias is not None, BT=block_t, BC=block_c,
            ACC=_TL_DTYPES[acc], num_warps=num_warps)
    red = part.sum(0)  # (W + 1, C), deterministic
    dweight = red[:w].t().to(weight.dtype)
    dbias = red[w].to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------


class _ConvSiluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, opts):
        ctx.save_for_backward(x, weight, bias)
        ctx.opts = opts
        fwd = {k: v for k, v in opts.items() if k != "tiles"}
        return conv_fwd(x, weight, bias, **fwd)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = conv_bwd(x, weight, bias, dout, **ctx.opts)
        return dx, dweight, dbias, None


def causal_conv1d_silu(x, weight, bias=None, *, block_t=64, block_c=128, tiles=8, num_warps=4):
    """causal_conv1d_fn(x, weight, bias, activation="silu") as golf's mixer calls it, on golf's kernels,
    differentiable w.r.t. x, weight and bias. x (B, C, T) (a channel-last view for speed), weight (C, W) with W
    in 2..4, bias (C,) or None. Returns (B, C, T) in x's dtype, channel-last. block_t, block_c: the tile;
    tiles: time tiles per backward program; num_warps: per program (module docstring)."""
    _check_blocks(block_t, block_c, tiles)
    _check(x, weight, bias)
    opts = {"block_t": block_t, "block_c": block_c, "tiles": tiles, "num_warps": num_warps}
    return _ConvSiluFn.apply(x, weight, bias, opts)
