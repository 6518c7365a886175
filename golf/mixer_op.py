"""model.ssm_backend "fused" under model.ssm_compile "opaque": the Mamba-2 mixer between its two projections as one
PyTorch custom operator, golf::mamba_core, with one backward operator, golf::mamba_core_bwd.

What the op computes (golf.ssm.Mamba2Mixer's forward between in_proj and out_proj, without carried state):
    zxbcdt (B, T, W) = [z (d) | xBC (conv_dim) | dt (H) | padding]          W >= d + conv_dim + H
    xBC' = SiLU(causal depthwise conv(xBC))  → [x (d) | B (G N) | C (G N)]
    y    = SSD(x, softplus(dt + dt_bias), A, B, C) + D x                         (the scan, in x's dtype)
    out  = RMSNorm(y * SiLU(z)) * norm_weight, per group of d / G channels       (in zxbcdt's dtype)

Why one op rather than golf.ssm_ops' op per kernel: there, the backward of in_proj's split assembles the gradient
of [z, xBC, dt] with a copy (an inductor kernel that also computes dz: 0.37 ms a layer call at 131,072 tokens on
an H200), and the gated norm runs as inductor kernels two to three times above their memory floor
(bench/RESULTS.md, 2026-12-01 tenth block: 1.30 ms a layer call for the norm and that copy together). Here the
backward allocates the gradient of zxbcdt once and each kernel writes its own columns in place, as mamba-ssm's
mamba_split_conv1d_scan_combined does (mamba_ssm/ops/triton/ssd_combined.py, 2.3.2.post1): the norm's backward
writes dz, the scan's backward ddt, the conv's backward dxBC; the padding columns are zeroed (with norm_impl "golf"
by golf's norm backward, in its launch). Unlike that function, the forward keeps the conv's output (an output of
the op, which autograd saves: one (B, T, conv_dim) tensor a layer) instead of recomputing the conv in backward.

With `scan_impl` "mamba_keep" (model.ssm_scan) the op calls mamba-ssm's SSD pieces one by one instead of its
combined forward and backward, and keeps what the combined backward recomputes (dt's per-chunk cumsum, C·B per
chunk and the states entering each chunk, in fp32: about 250 MB a layer call at 131,072 tokens) as outputs for its
backward. That backward then skips _chunk_cumsum_fwd, _bmm_chunk_fwd, _chunk_state_fwd and _state_passing_fwd
(bench/RESULTS.md tenth block: the latter two alone run 18 times a step for 9 mixers, about 2.1 ms of them the
backward's recompute). In Triton's CPU interpreter with mamba-ssm's own kernels its forward and backward equal
mamba-ssm's combined ones bit for bit in fp32 (tests/test_mixer_op.py, where mamba-ssm's source is importable).
`scan_impl` "mamba_keep_dA" is the same with the backward's C·B gradient and the within-chunk log-decay gradient
from golf's one kernel (golf/ssd_dcb_kernel.py) instead of mamba-ssm's _chunk_scan_bwd_dcb and
_chunk_scan_bwd_ddAcs_stable, which each recompute dy·xᵀ per head and chunk: the same sums in another order.
"mamba_keep_dx" has that kernel compute dx, ddt's chunk part and dD too, in place of
_chunk_scan_chunk_state_bwd_dx, which reads the same dy and C·B; "mamba_keep_chunk" the states' parts of dB and dC
and the whole log-decay gradient as well, in place of _chunk_state_bwd_db, _chunk_scan_bwd_dC and the cumulative
sums after them: every chunk-local piece of the backward in one launch, leaving mamba-ssm's state-gradient passes.
"mamba_keep_xy" is "mamba_keep_dA" with golf's kernels for the chunk output y (in place of _chunk_scan_fwd) and for
dx, ddt's chunk part and dD (in place of _chunk_scan_chunk_state_bwd_dx), one program per head, chunk and batch
each (golf/ssd_xy_kernel.py). "mamba_keep_xy_pass" is "mamba_keep_xy" with the two sequential recurrences as
golf's pass kernel runs them, one program per head and sequence walking the chunks (golf.ssd_kernel.chunk_states:
the states entering each chunk, in place of _chunk_state_fwd and _state_passing_fwd; chunk_state_grads: the
gradients of the states leaving them and of each chunk's end-to-end log-decay, in place of _chunk_scan_bwd_dstates
and _state_passing_bwd, whose bf16 copy of the states _chunk_scan_bwd_dC then does without: it casts the kept fp32
states to dy's dtype as it loads them). "mamba_keep_xy_pass_bf16" is "mamba_keep_xy_pass" with the states kept in
x's dtype (bf16 in training) instead of fp32: the four kernels that write or read them (the forward pass, the y
kernel, the backward pass and _chunk_scan_bwd_dC) move half the bytes, about 100 MB each a layer call at 131,072
tokens. y, dB and dC are unchanged, since each of those kernels rounds the states to bf16 as it loads them anyway;
what changes is the gradient of each chunk's end-to-end log-decay, exp(cs_last) <S_in, dS_out>, which now reads the
bf16-rounded S_in (mamba-ssm reads fp32 states there): one rounding of S_in in a sum over P N products, the
precision the other state terms of that gradient already have. "mamba_keep_xy_pass_bf16_dt" adds golf's one kernel
for the gradients of dt, A and dt_bias (golf/ssd_dt_kernel.py) in place of the sums, reversed cumulative sum and
_chunk_cumsum_bwd after the chunk kernels, about seven launches a layer call. "mamba_keep_golf" is that with golf's
two passes reading each chunk's running log-decay (and the forward pass its softplus'ed dt) from the forward's kept
dA_cumsum and dt (contiguous (b, h, chunks, L) rows) instead of recomputing them from the raw dt: a strided column
of zxbcdt's wide rows, a softplus, a cumsum and a reduction on the serial chain of each chunk's update.
"mamba_keep_golf_overlap" is that with golf's C·B / within-chunk log-decay gradient kernel (which reads only the
kept internals and dy) on a second CUDA stream, beside the backward pass and the chunk kernels after it: the pass
walks the chunks one after another in 768 programs at hybrid_12_b131k's shapes and leaves most of the device idle.

The op's kernels: on CUDA, the conv of `conv_impl` (model.ssm_conv): "causal_conv1d" (causal-conv1d's forward and
backward) or "golf" (golf's own, golf/conv_kernel.py, whose backward writes its dx straight into the input
gradient's columns as causal-conv1d's does), mamba-ssm's SSD scan forward and backward, and the gated norm of
`norm_impl`: "mamba" (mamba-ssm's layernorm_gated kernels) or "golf" (golf's own, golf/gated_norm_kernel.py), bound
by golf.ssm.resolve_ssm_backend through golf.ssm_ops.bind_cuda; on CPU, golf's reference math (golf.ssm), backward
by torch.autograd through it, so tests/test_mixer_op.py checks the op, its autograd and the CUDA glue (with
stand-ins that follow the libraries' contracts) without a GPU.

Training-only, like golf.ssm_ops (golf.package.TRAINING_ONLY): a model trained with it is scored with the same
math on any path.
"""

# custom_op infers each op's schema from its annotations
import functools
import sys

import torch
from torch import Tensor

from golf.ssm import KEEP_SCANS, compute_dtype, gated_rms_norm_reference, ssd_scan_reference
from golf.ssm_ops import (
    CONV_KERNELS,
    _autograd,
    _channel_last,
    _conv_reference,
    _cuda,
    _like,
    _new_channel_last,
)

CONV_IMPLS = CONV_KERNELS  # golf::mamba_core's `conv_impl` argument (model.ssm_conv): causal-conv1d's or golf's
NORM_IMPLS = ("mamba", "golf")  # golf::mamba_core's `norm_impl` argument (model.gated_norm "kernel" / "golf")
# its `scan_impl` argument (model.ssm_scan): mamba-ssm's combined scan, its pieces with the forward's internals kept
# for the backward, or the same with golf's kernel for the C·B and within-chunk log-decay gradients (and dx too, and
# the states' parts of dB, dC and the log-decays' gradient too)
SCAN_IMPLS = ("mamba", *KEEP_SCANS)
# the scan_impls with golf's chunk-backward kernel: its bind_cuda key (golf_dcb_kernels) and the part it computes
GOLF_BWD = {"mamba_keep_dA": ("golf_dcb_ddA", "dA"), "mamba_keep_dx": ("golf_chunk_bwd", "dx"),
            "mamba_keep_chunk": ("golf_chunk_bwd", "chunk"), "mamba_keep_xy": ("golf_dcb_ddA", "dA"),
            "mamba_keep_xy_pass": ("golf_dcb_ddA", "dA"), "mamba_keep_xy_pass_bf16": ("golf_dcb_ddA", "dA"),
            "mamba_keep_xy_pass_bf16_dt": ("golf_dcb_ddA", "dA"), "mamba_keep_golf": ("golf_dcb_ddA", "dA"),
            "mamba_keep_golf_overlap": ("golf_dcb_ddA", "dA")}
# the scan_impls with golf's chunk-output and input-gradient kernels (golf_xy_kernels), golf's state passes and
# golf's dt-gradient kernel: the SSD piece each bind_cuda key stands for, by direction (the "golf_*" pieces replace
# two or more of mamba-ssm's each, _scan_fwd_keep and _scan_bwd_keep)
_XY = {"fwd": {"_chunk_scan_fwd": "golf_chunk_y"}, "bwd": {"_chunk_scan_chunk_state_bwd_dx": "golf_chunk_dx"}}
_PASS = {"fwd": _XY["fwd"] | {"golf_chunk_states": "golf_chunk_states"},
         "bwd": _XY["bwd"] | {"golf_chunk_state_grads": "golf_chunk_state_grads"}}
_PASS_DT = {"fwd": _PASS["fwd"], "bwd": _PASS["bwd"] | {"golf_dt_grads": "golf_dt_grads"}}
GOLF_XY = {"mamba_keep_xy": _XY, "mamba_keep_xy_pass": _PASS, "mamba_keep_xy_pass_bf16": _PASS,
           "mamba_keep_xy_pass_bf16_dt": _PASS_DT, "mamba_keep_golf": _PASS_DT, "mamba_keep_golf_overlap": _PASS_DT}
# the scan_impls that keep the states entering each chunk in x's dtype rather than the compute dtype
STATES_IN_X_DTYPE = ("mamba_keep_xy_pass_bf16", "mamba_keep_xy_pass_bf16_dt", "mamba_keep_golf",
                     "mamba_keep_golf_overlap")
# the scan_impls whose golf passes read the kept dA_cumsum and dt instead of the raw dt
PASSES_READ_KEPT = ("mamba_keep_golf", "mamba_keep_golf_overlap")
# the scan_impls that run golf's dCB / ddA kernel on a second stream beside the backward pass (on CUDA)
OVERLAP_DCB = ("mamba_keep_golf_overlap",)
_SIDE_STREAMS: dict = {}  # device -> the second stream, made once outside any CUDA graph capture
# mamba-ssm's SSD pieces that scan_impl "mamba_keep" calls one by one (ssd_chunk_state.py, ssd_state_passing.py,
# ssd_bmm.py, ssd_chunk_scan.py, ssd_combined.py, 2.3.2.post1), bound as one dict under "ssd_parts"
SSD_PARTS = ("_chunk_cumsum_fwd", "_chunk_cumsum_bwd", "_chunk_state_fwd", "_chunk_state_bwd_db", "_state_passing_fwd",
             "_state_passing_bwd", "_bmm_chunk_fwd", "_bmm_chunk_bwd", "_chunk_scan_fwd", "_chunk_scan_bwd_dstates",
             "_chunk_scan_bwd_dC", "_chunk_scan_bwd_dcb", "_chunk_scan_bwd_ddAcs_stable",
             "_chunk_scan_chunk_state_bwd_dx")


def _sizes(zxbcdt: Tensor, conv_weight: Tensor, D: Tensor, headdim: int, ngroups: int) -> tuple[int, int, int, int]:
    """(d, conv_dim, H, N): the widths of z, xBC and dt in zxbcdt, and the state size, from the parameters."""
    nheads = D.shape[0]
    d, conv_dim = nheads * headdim, conv_weight.shape[0]
    d_state = (conv_dim - d) // (2 * ngroups)
    if conv_dim != d + 2 * ngroups * d_state or zxbcdt.shape[-1] < d + conv_dim + nheads:
        raise ValueError(f"golf::mamba_core: zxbcdt's last dim {zxbcdt.shape[-1]} and conv_weight's {conv_dim} "
                         f"channels do not fit {nheads} heads of {headdim} and {ngroups} groups of B, C")
    return d, conv_dim, nheads, d_state


def _split(t: Tensor, d: int, conv_dim: int, nheads: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B, T, W) → views z (B, T, d), xBC (B, T, conv_dim), dt (B, T, H) and the padding (B, T, W - d - conv_dim - H)."""
    return t.split([d, conv_dim, nheads, t.shape[-1] - d - conv_dim - nheads], dim=-1)


def _core_reference(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups, chunk_size, eps):
    """golf's reference math for the op: (out, xBC', y) as the module docstring defines them."""
    b, t, _ = zxbcdt.shape
    d, conv_dim, nheads, n = _sizes(zxbcdt, conv_weight, D, headdim, ngroups)
    z, xBC, dt, _ = _split(zxbcdt, d, conv_dim, nheads)
    xBC = _conv_reference(xBC.transpose(1, 2), conv_weight, conv_bias).transpose(1, 2)  # (B, T, conv_dim)
    x, B, C = xBC.split([d, ngroups * n, ngroups * n], dim=-1)
    y, _ = ssd_scan_reference(x.reshape(b, t, nheads, headdim), dt, A, B.reshape(b, t, ngroups, n),
                              C.reshape(b, t, ngroups, n), D, dt_bias, chunk_size)  # (B, T, H, P)
    y = y.reshape(b, t, d)
    return gated_rms_norm_reference(y, z, norm_weight, ngroups, eps), xBC, y


def _rstd_reference(y: Tensor, z: Tensor, ngroups: int, eps: float) -> Tensor:
    """The norm's 1/rms per row and group, (G * M,) in the compute dtype (fp32; fp64 for fp64), group-major
    (mamba-ssm's layout)."""
    ct = compute_dtype(y)
    g = (y.to(ct) * torch.nn.functional.silu(z.to(ct))).reshape(-1, ngroups, y.shape[-1] // ngroups)  # (M, G, gs)
    return torch.rsqrt(g.square().mean(-1) + eps).t().reshape(-1).contiguous()


def _check_impls(norm_impl: str, scan_impl: str, conv_impl: str = "causal_conv1d") -> None:
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"golf::mamba_core's conv_impl must be one of {list(CONV_IMPLS)}, got {conv_impl!r}")
    if norm_impl not in NORM_IMPLS:
        raise ValueError(f"golf::mamba_core's norm_impl must be one of {list(NORM_IMPLS)}, got {norm_impl!r}")
    if scan_impl not in SCAN_IMPLS:
        raise ValueError(f"golf::mamba_core's scan_impl must be one of {list(SCAN_IMPLS)}, got {scan_impl!r}")


def _scan_internals_reference(x, dt, A, B, C, dt_bias, chunk_size):
    """What scan_impl "mamba_keep" keeps from the forward for the backward, as mamba-ssm's forward computes it, in
    the compute dtype: dA_cumsum and dt (B, H, c, L) (dt = softplus(dt + dt_bias), zero past the sequence's end, and
    its running sum times A within each chunk), the state entering each chunk (B, c, H, P, N) and C·B within each
    chunk (B, c, G, L, L). x (B, T, H, P), dt (B, T, H), B, C (B, T, G, N)."""
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    ct = compute_dtype(x)
    c = -(-t // chunk_size)
    pad = c * chunk_size - t
    dts = torch.nn.functional.pad(torch.nn.functional.softplus(dt.to(ct) + dt_bias.to(ct)), (0, 0, 0, pad))
    dts = dts.reshape(b, c, chunk_size, h).permute(0, 3, 1, 2)  # (B, H, c, L)
    dA_cumsum = torch.cumsum(dts * A.to(ct)[:, None, None], dim=-1)
    Bc, Cc = (torch.nn.functional.pad(m.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, c, chunk_size, g, n) for m in (B, C))
    CB = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)  # (B, c, G, L, L)
    xd = torch.nn.functional.pad(x.to(ct), (0, 0, 0, 0, 0, pad)).reshape(b, c, chunk_size, h, p)
    decay_to_end = torch.exp(dA_cumsum[..., -1:] - dA_cumsum) * dts  # (B, H, c, L)
    Bh = Bc.repeat_interleave(h // g, dim=3)  # (B, c, L, H, N)
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_to_end, xd)  # each chunk's own contribution
    states, s = [], x.new_zeros(b, h, p, n, dtype=ct)
    for i in range(c):
        states.append(s)
        s = torch.exp(dA_cumsum[:, :, i, -1])[..., None, None] * s + chunk_states[:, i]
    return dA_cumsum, dts, torch.stack(states, 1), CB


# --------------------------------------------------------------------------------------------------
# Forward: → out (B, T, d) in zxbcdt's dtype, xBC' (B, T, conv_dim) the conv's output, y (B, T, d) the scan's
# output, rstd (G * B * T,) in the compute dtype, and with scan_impl "mamba_keep" the scan's internals
# (_scan_internals_reference: dA_cumsum, dt, states, CB), else four empty tensors. All but out are for the
# backward (autograd saves them); the mixer reads out
# --------------------------------------------------------------------------------------------------

_CORE_OUTPUTS = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("golf::mamba_core", mutates_args=(), device_types="cpu")
def mamba_core(zxbcdt: Tensor, conv_weight: Tensor, conv_bias: Tensor, dt_bias: Tensor, A: Tensor, D: Tensor,
               norm_weight: Tensor, headdim: int, ngroups: int, chunk_size: int, eps: float,
               norm_impl: str = "mamba", scan_impl: str = "mamba", conv_impl: str = "causal_conv1d") -> _CORE_OUTPUTS:
    _check_impls(norm_impl, scan_impl, conv_impl)
    out, xBC, y = _core_reference(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups,
                                  chunk_size, eps)
    b, t, d = y.shape
    rstd = _rstd_reference(y.reshape(-1, d), zxbcdt[..., :d].reshape(-1, d), ngroups, eps)
    if scan_impl == "mamba":
        kept = [zxbcdt.new_empty(0, dtype=compute_dtype(zxbcdt)) for _ in range(4)]  # one each: outputs may not alias
    else:
        _, conv_dim, nheads, n = _sizes(zxbcdt, conv_weight, D, headdim, ngroups)
        x, B, C = xBC.split([d, ngroups * n, ngroups * n], dim=-1)
        kept = [*_scan_internals_reference(x.reshape(b, t, nheads, headdim), _split(zxbcdt, d, conv_dim, nheads)[2],
                                           A, B.reshape(b, t, ngroups, n), C.reshape(b, t, ngroups, n), dt_bias,
                                           chunk_size)]
        if scan_impl in STATES_IN_X_DTYPE:  # rounded as the CUDA kernel stores them
            kept[2] = kept[2].to(x.dtype)
    return (_like(out), _like(xBC), _like(y), rstd, *(_like(k) for k in kept))


@mamba_core.register_fake
def _(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups, chunk_size, eps,
      norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    b, t, _ = zxbcdt.shape
    d, conv_dim, nheads, n = _sizes(zxbcdt, conv_weight, D, headdim, ngroups)
    new, ct = zxbcdt.new_empty, compute_dtype(zxbcdt)
    c = -(-t // chunk_size)
    if scan_impl == "mamba":
        kept = [new(0, dtype=ct) for _ in range(4)]
    else:
        st = zxbcdt.dtype if scan_impl in STATES_IN_X_DTYPE else ct
        kept = [new(b, nheads, c, chunk_size, dtype=ct), new(b, nheads, c, chunk_size, dtype=ct),
                new(b, c, nheads, headdim, n, dtype=st), new(b, c, ngroups, chunk_size, chunk_size, dtype=ct)]
    return (new(b, t, d), new(b, t, conv_dim), new(b, t, d), new(ngroups * b * t, dtype=ct), *kept)


def _keep_parts(fns: dict, scan_impl: str, way: str) -> dict:
    """The SSD pieces the kept-internals scan calls in one direction (way "fwd" or "bwd"): mamba-ssm's (fns
    "ssd_parts"), with golf's kernels in place of those GOLF_XY names for scan_impl."""
    swaps = GOLF_XY.get(scan_impl, {}).get(way, {})
    return fns["ssd_parts"] | {part: fns[key] for part, key in swaps.items()}


def _scan_fwd_keep(parts: dict, x, dt, A, B, C, D, dt_bias, chunk_size, states_dtype=None, read_kept=False):
    """mamba-ssm's SSD forward (_mamba_chunk_scan_combined_fwd's steps) with its internals kept: → y (B, T, H, P),
    dA_cumsum, dt (B, H, c, L), the states entering each chunk (B, c, H, P, N) and CB (B, c, G, L, L), all fp32 but
    y. The states stay fp32 rather than the forward's bf16, as the backward's recompute makes them: the chunk
    scan casts them to C's dtype as it loads them, so y is unchanged. states_dtype (golf's pass only): the states'
    stored dtype instead (STATES_IN_X_DTYPE); read_kept (golf's pass only): it reads dA_cumsum and dt as
    _chunk_cumsum_fwd made them (PASSES_READ_KEPT)."""
    p, n = x.shape[-1], B.shape[-1]
    dA_cumsum, dt_sp = parts["_chunk_cumsum_fwd"](dt, A, chunk_size, dt_bias=dt_bias, dt_softplus=True)
    if "golf_chunk_states" in parts:  # one launch: golf.ssd_kernel.chunk_states, from the raw dt or the kept cumsum
        kept_cs = {"dA_cumsum": dA_cumsum, "dt_chunks": dt_sp} if read_kept else {}
        states = parts["golf_chunk_states"](x, dt, A, B, chunk_size, dt_bias=dt_bias, dt_softplus=True,
                                            states_dtype=states_dtype, **kept_cs)
    else:
        chunk_states = parts["_chunk_state_fwd"](B, x, dt_sp, dA_cumsum, states_in_fp32=True)  # (B, c, H, P, N)
        states, _ = parts["_state_passing_fwd"](chunk_states.flatten(-2), dA_cumsum[:, :, :, -1])  # (B, c, H, P N)
        states = states.unflatten(-1, (p, n))
    CB = parts["_bmm_chunk_fwd"](C, B, chunk_size, output_dtype=torch.float32)
    y, _ = parts["_chunk_scan_fwd"](CB, x, dt_sp, dA_cumsum, C, states, D=D)
    return y, dA_cumsum, dt_sp, states, CB


def mamba_core_cuda(fns: dict, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups,
                    chunk_size, eps, norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    """The CUDA kernel, with the libraries' functions passed in (tests pass stand-ins): "conv_fwd"
    (causal_conv1d.cpp_functions._causal_conv1d_fwd_cpp) or with conv_impl "golf" "golf_conv_fwd"
    (golf.conv_kernel.conv_fwd); "scan_fwd" (mamba-ssm's _mamba_chunk_scan_combined_fwd),
    or with scan_impl "mamba_keep" "ssd_parts" (SSD_PARTS by name); "norm_fwd" (mamba-ssm's
    layernorm_gated._layer_norm_fwd) or "golf_norm_fwd" (golf.gated_norm_kernel.gated_rmsnorm_fwd)."""
    _check_impls(norm_impl, scan_impl, conv_impl)
    b, t, _ = zxbcdt.shape
    d, conv_dim, nheads, n = _sizes(zxbcdt, conv_weight, D, headdim, ngroups)
    if conv_dim % 8 and conv_impl == "causal_conv1d":
        raise ValueError(f"golf::mamba_core on CUDA needs conv_dim (d + 2 G N) a multiple of 8 for causal-conv1d's "
                         f"channel-last layout, got {conv_dim}")
    z, xBC_in, dt, _ = _split(zxbcdt, d, conv_dim, nheads)
    if conv_impl == "golf":  # any strides in; out (B, conv_dim, T) channel-last, i.e. (B, T, conv_dim) contiguous
        xBC = fns["golf_conv_fwd"](xBC_in.transpose(1, 2), conv_weight, conv_bias).transpose(1, 2)
    else:
        xBC = zxbcdt.new_empty(b, t, conv_dim)  # channel-last (B, conv_dim, T) once transposed, as causal-conv1d wants
        fns["conv_fwd"](x=_channel_last(xBC_in.transpose(1, 2)), weight=conv_weight, bias=conv_bias, seq_idx=None,
                        initial_states=None, out=xBC.transpose(1, 2), final_states_out=None, silu_activation=True)
    x, B, C = xBC.split([d, ngroups * n, ngroups * n], dim=-1)
    heads, groups = (b, t, nheads, headdim), (b, t, ngroups, n)
    if scan_impl == "mamba":
        # _mamba_chunk_scan_combined_fwd → out, out_x (None without z), dt, dA_cumsum, states, final_states
        y = fns["scan_fwd"](x.view(heads), dt, A, B.view(groups), C.view(groups), chunk_size, D=D, dt_bias=dt_bias,
                            dt_softplus=True)[0]
        kept = [zxbcdt.new_empty(0, dtype=compute_dtype(zxbcdt)) for _ in range(4)]  # one each: outputs may not alias
    else:
        y, *kept = _scan_fwd_keep(_keep_parts(fns, scan_impl, "fwd"), x.view(heads), dt, A, B.view(groups),
                                  C.view(groups), D, dt_bias, chunk_size,
                                  x.dtype if scan_impl in STATES_IN_X_DTYPE else None, scan_impl in PASSES_READ_KEPT)
    y = _like(y).view(b, t, d)
    out = zxbcdt.new_empty(b, t, d)
    if norm_impl == "mamba":
        # _layer_norm_fwd(x, weight, bias, eps, z, out, group_size, norm_before_gate, is_rms_norm) → out, mean, rstd
        _, _, rstd = fns["norm_fwd"](y.view(b * t, d), norm_weight.contiguous(), None, eps, z=z.reshape(b * t, d),
                                     out=out.view(b * t, d), group_size=d // ngroups, norm_before_gate=False,
                                     is_rms_norm=True)
    else:
        # gated_rmsnorm_fwd(y, z, weight, eps, group_size, out) → out, rstd (M, G): stored group-major like mamba-ssm's
        _, rstd = fns["golf_norm_fwd"](y.view(b * t, d), z.reshape(b * t, d), norm_weight, eps, d // ngroups,
                                       out=out.view(b * t, d))
        rstd = rstd.t().reshape(-1)
    rstd = rstd.to(compute_dtype(zxbcdt)).contiguous()  # mamba-ssm's is fp32 for every input
    return (out, xBC, y, rstd, *kept)


def _bound_keys(way: str, norm_impl: str, scan_impl: str, conv_impl: str = "causal_conv1d") -> tuple[str, ...]:
    """The golf.ssm_ops.bind_cuda keys of the functions the op's CUDA kernel calls in one direction (way: "fwd" or
    "bwd") for these impls."""
    golf = (GOLF_BWD[scan_impl][0],) if way == "bwd" and scan_impl in GOLF_BWD else ()
    golf += tuple(GOLF_XY.get(scan_impl, {}).get(way, {}).values())
    return (f"conv_{way}" if conv_impl == "causal_conv1d" else f"golf_conv_{way}",
            f"scan_{way}" if scan_impl == "mamba" else "ssd_parts",
            f"norm_{way}" if norm_impl == "mamba" else f"golf_norm_{way}") + golf


@mamba_core.register_kernel("cuda")
def _(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups, chunk_size, eps,
      norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    fns = {k: _cuda(k) for k in _bound_keys("fwd", norm_impl, scan_impl, conv_impl)}
    return mamba_core_cuda(fns, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, headdim, ngroups,
                           chunk_size, eps, norm_impl, scan_impl, conv_impl)


# --------------------------------------------------------------------------------------------------
# Backward: → the gradients of zxbcdt (zeros in its padding columns), conv_weight, conv_bias, dt_bias, A, D and
# norm_weight, each in its input's dtype
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("golf::mamba_core_bwd", mutates_args=(), device_types="cpu")
def mamba_core_bwd(dout: Tensor, zxbcdt: Tensor, conv_weight: Tensor, conv_bias: Tensor, dt_bias: Tensor, A: Tensor,
                   D: Tensor, norm_weight: Tensor, xBC: Tensor, y: Tensor, rstd: Tensor, dA_cumsum: Tensor,
                   dt_sp: Tensor, states: Tensor, CB: Tensor, headdim: int, ngroups: int, chunk_size: int, eps: float,
                   norm_impl: str = "mamba", scan_impl: str = "mamba", conv_impl: str = "causal_conv1d"
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_impls(norm_impl, scan_impl, conv_impl)
    inputs = (zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight)
    grads = _autograd(lambda *a: _core_reference(*a, headdim, ngroups, chunk_size, eps)[:1], inputs, (dout,))
    return tuple(_like(g, t.dtype) for g, t in zip(grads, inputs))


@mamba_core_bwd.register_fake
def _(dout, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, xBC, y, rstd, dA_cumsum, dt_sp, states, CB,
      headdim, ngroups, chunk_size, eps, norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight))


def _side_stream(device: torch.device):
    """The second CUDA stream of OVERLAP_DCB's scans for `device`, made on first use; None where it does not exist
    yet and a CUDA graph is being captured (a capture runs after eager warm-up calls, which make it), or off CUDA:
    then the kernels run in turn."""
    if device.type != "cuda":
        return None
    stream = _SIDE_STREAMS.get(device)
    if stream is None and not torch.cuda.is_current_stream_capturing():
        stream = _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return stream


def _scan_bwd_keep(parts: dict, dy, x, dt, A, B, C, D, dt_bias, kept, dx, ddt, dB, dC, golf=None, golf_part=None,
                   read_kept=False, overlap=False):
    """mamba-ssm's SSD backward (_mamba_chunk_scan_combined_bwd's steps) from the forward's kept internals instead
    of recomputing them (its _chunk_cumsum_fwd, _bmm_chunk_fwd, _chunk_state_fwd and _state_passing_fwd): writes dx,
    ddt (the raw dt's), dB and dC into the tensors passed in; → dA, dD, ddt_bias. No initial or final states.
    golf, golf_part (GOLF_BWD): golf's chunk-backward kernel (golf/ssd_dcb_kernel.py) in place of mamba-ssm's
    _chunk_scan_bwd_dcb and _chunk_scan_bwd_ddAcs_stable ("dA": golf.ssd_dcb_kernel.dcb_ddA), of those and
    _chunk_scan_chunk_state_bwd_dx ("dx": chunk_bwd), or of those, _chunk_state_bwd_db, _chunk_scan_bwd_dC and the
    log-decay sums after them ("chunk": chunk_bwd with the states). read_kept: golf's backward pass reads the kept
    dA_cumsum instead of recomputing it from the raw dt (PASSES_READ_KEPT). overlap (with golf_part "dA"): golf's
    kernel runs on a second stream (_side_stream) from the start, beside everything up to the products with dCB,
    into buffers allocated on this stream (OVERLAP_DCB)."""
    dA_cumsum, dt_sp, states, CB = kept
    n, g = B.shape[-1], B.shape[2]
    side = _side_stream(dy.device) if overlap and golf_part == "dA" else None
    if side is not None:  # it reads only the kept internals and dy, all ready now
        main = torch.cuda.current_stream(dy.device)
        b, _, chunks, size = dA_cumsum.shape
        dCB = torch.empty(b, chunks, g, size, size, dtype=dA_cumsum.dtype, device=dy.device)
        ddA = torch.empty_like(dA_cumsum)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            golf(x, dt_sp, dA_cumsum, dy, CB, out=(dCB, ddA))
    if "golf_chunk_state_grads" in parts:  # one launch, golf.ssd_kernel.chunk_state_grads: dy, the raw dt or the cumsum
        dstates, ddA_chunk_end = parts["golf_chunk_state_grads"](dy, dt, A, C, dA_cumsum.shape[-1], dt_bias=dt_bias,
                                                                 dt_softplus=True, states=states,
                                                                 dA_cumsum=dA_cumsum if read_kept else None)
        states_lo = states  # the kernels that read it cast it to dy's dtype as they load it
    else:
        # the gradient of the state entering each chunk from the outputs that read it, then passed back across chunks
        dstates = parts["_chunk_scan_bwd_dstates"](C, dA_cumsum, dy, dtype=states.dtype)  # (B, c, H, P, N)
        dstates, ddA_chunk_end, _, states_lo = parts["_state_passing_bwd"](
            states.flatten(-2), dA_cumsum[:, :, :, -1], dstates.flatten(-2), has_initial_states=False,
            dstates_dtype=x.dtype, states_dtype=x.dtype)
        dstates, states_lo = dstates.unflatten(-1, (-1, n)), states_lo.unflatten(-1, (-1, n))
    # the chunk-local pieces: dx, ddt, dD, C·B's gradient and the within-chunk log-decay gradient ...
    if golf_part in ("dx", "chunk"):
        states_part = {"C": C, "states_in": states_lo, "ddA_chunk_end": ddA_chunk_end} if golf_part == "chunk" else {}
        dCB, ddA, _, ddt_sp, dD, *states_grads = golf(x, dt_sp, dA_cumsum, dy, CB, B, dstates, D, dx=dx, **states_part)
    else:
        _, ddt_sp, dD = parts["_chunk_scan_chunk_state_bwd_dx"](x, dt_sp, dA_cumsum, B, CB, dy, dstates, D=D, dx=dx)
        if golf_part == "dA" and side is None:
            dCB, ddA = golf(x, dt_sp, dA_cumsum, dy, CB)  # (B, c, G, L, L), (B, H, c, L)
        elif golf_part != "dA":
            dCB = parts["_chunk_scan_bwd_dcb"](x, dt_sp, dA_cumsum, dy, ngroups=g)
            ddA = parts["_chunk_scan_bwd_ddAcs_stable"](x, dt_sp, dA_cumsum, dy, CB)
    # ... and the states' parts of dB and dC, with the log-decays' gradient from the chunk-end decays (passed back as
    # a reverse cumsum) and the states' (golf's "chunk" part adds those into ddA itself)
    if golf_part == "chunk":
        dB_state, dC_state = states_grads
    else:
        dB_state, ddA_next = parts["_chunk_state_bwd_db"](x, dt_sp, dA_cumsum, dstates, B=B, ngroups=g)
        dC_state, ddA_prev = parts["_chunk_scan_bwd_dC"](states_lo, dA_cumsum, dy, C=C, ngroups=g)
    if side is not None:
        main.wait_stream(side)  # dCB and ddA written
    dCB = dCB.to(CB.dtype)
    parts["_bmm_chunk_bwd"](C, dCB, residual=dB_state, out=dB)  # dB = the states' part + C-weighted dCB
    parts["_bmm_chunk_bwd"](B, dCB.transpose(-1, -2), residual=dC_state, out=dC)
    if "golf_dt_grads" in parts:  # one launch: the log-decay sums below and _chunk_cumsum_bwd (golf/ssd_dt_kernel.py)
        _, dA, ddt_bias = parts["golf_dt_grads"](ddA, ddA_next, ddA_prev, ddA_chunk_end, ddt_sp, dt, A,
                                                 dt_bias=dt_bias, dt_softplus=True, ddt=ddt)
        return dA, dD, ddt_bias
    if golf_part != "chunk":
        ddA_prev[..., -1].add_(ddA_chunk_end)  # add_ on the view: `+=` on a subscript also copies it back onto itself
        ddA += ddA_next + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    _, dA, ddt_bias = parts["_chunk_cumsum_bwd"](ddA, ddt_sp, dt, A, dt_bias=dt_bias, dt_softplus=True, ddt=ddt)
    return dA, dD, ddt_bias


def mamba_core_bwd_cuda(fns: dict, dout, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, xBC, y, rstd,
                        dA_cumsum, dt_sp, states, CB, headdim, ngroups, chunk_size, eps, norm_impl="mamba",
                        scan_impl="mamba", conv_impl="causal_conv1d"):
    """The CUDA kernel, with the libraries' functions passed in: "norm_bwd" (mamba-ssm's _layer_norm_bwd) or
    "golf_norm_bwd" (golf.gated_norm_kernel.gated_rmsnorm_bwd); "scan_bwd" (mamba-ssm's
    _mamba_chunk_scan_combined_bwd), or with scan_impl "mamba_keep" "ssd_parts" (and for GOLF_BWD's impls golf's
    kernel under its key); "conv_bwd" (causal_conv1d.cpp_functions.causal_conv1d_bwd_function) or with conv_impl
    "golf" "golf_conv_bwd" (golf.conv_kernel.conv_bwd); each writing its part of dzxbcdt in place."""
    _check_impls(norm_impl, scan_impl, conv_impl)
    b, t, _ = zxbcdt.shape
    d, conv_dim, nheads, n = _sizes(zxbcdt, conv_weight, D, headdim, ngroups)
    z, xBC_in, dt, _ = _split(zxbcdt, d, conv_dim, nheads)
    dzxbcdt = torch.empty_like(zxbcdt, memory_format=torch.contiguous_format)
    dz, dxBC_in, ddt, dpad = _split(dzxbcdt, d, conv_dim, nheads)
    # in_proj's padding columns are never read: their gradient is exactly zero (golf's norm backward writes it)
    dpad = dpad.reshape(b * t, dpad.shape[-1])
    dout = dout.reshape(b * t, d)
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()  # e.g. an expanded gradient of a sum
    if norm_impl == "mamba":
        # _layer_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z, group_size, norm_before_gate, is_rms_norm,
        # recompute_output, dz) → dx, dw, db (None without bias), dz (the one passed in)
        dy, dnorm_w, _, _ = fns["norm_bwd"](dout, y.view(b * t, d),
                                            norm_weight.contiguous(), None, eps, None, rstd.float(), z.reshape(b * t, d),
                                            d // ngroups, False, True, dz=dz.reshape(b * t, d))[:4]
        dpad.zero_()
    else:
        # gated_rmsnorm_bwd(dout, y, z, weight, rstd (M, G), eps, group_size, dz=, zero=) → dy, dz, dweight, with
        # `zero` filled with zeros in the same launch
        dy, _, dnorm_w = fns["golf_norm_bwd"](dout, y.view(b * t, d), z.reshape(b * t, d), norm_weight,
                                              rstd.view(ngroups, b * t).t().contiguous(), eps, d // ngroups,
                                              dz=dz.reshape(b * t, d), zero=dpad if dpad.shape[-1] else None)
    x, B, C = xBC.split([d, ngroups * n, ngroups * n], dim=-1)
    dxBC = torch.empty_like(xBC)  # the gradient of the conv's output, for the conv's backward
    dx, dB, dC = dxBC.split([d, ngroups * n, ngroups * n], dim=-1)
    heads, groups = (b, t, nheads, headdim), (b, t, ngroups, n)
    if scan_impl == "mamba":
        # _mamba_chunk_scan_combined_bwd(dout, x, dt, A, B, C, out, chunk_size, D, z, dt_bias, initial_states,
        # dfinal_states, seq_idx, dt_softplus, dt_limit, dx, ddt, dB, dC) → dx, ddt, dA, dB, dC, dD, dz, ddt_bias,
        # dinit, writing dx, ddt, dB and dC into the tensors passed in
        _, _, dA, _, _, dD, _, ddt_bias, _ = fns["scan_bwd"](
            dy.view(heads), x.view(heads), dt, A, B.view(groups), C.view(groups), y.view(heads), chunk_size, D=D,
            dt_bias=dt_bias, dt_softplus=True, dx=dx.view(heads), ddt=ddt, dB=dB.view(groups), dC=dC.view(groups))
    else:
        dA, dD, ddt_bias = _scan_bwd_keep(_keep_parts(fns, scan_impl, "bwd"), dy.view(heads), x.view(heads), dt,
                                          A, B.view(groups), C.view(groups), D, dt_bias,
                                          (dA_cumsum, dt_sp, states, CB), dx.view(heads), ddt, dB.view(groups),
                                          dC.view(groups),
                                          *((fns[GOLF_BWD[scan_impl][0]], GOLF_BWD[scan_impl][1])
                                            if scan_impl in GOLF_BWD else ()),
                                          read_kept=scan_impl in PASSES_READ_KEPT, overlap=scan_impl in OVERLAP_DCB)
    dx_in = dxBC_in.transpose(1, 2)  # (B, conv_dim, T), a view into dzxbcdt: stride over channels 1
    if conv_impl == "golf":
        # conv_bwd(x, weight, bias, dout, dx=) → dx (the one passed in: any row stride), dweight, dbias
        _, dconv_w, dconv_b = fns["golf_conv_bwd"](xBC_in.transpose(1, 2), conv_weight, conv_bias,
                                                   dxBC.transpose(1, 2), dx=dx_in)
    else:
        # causal_conv1d_bwd_function(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx,
        # return_dinitial_states, silu_activation) → dx (the one passed in), dweight, dbias, dinitial_states. It
        # writes dx in place where zxbcdt's rows suit its channel-last layout (widths and offsets multiples of 8, as
        # with model.in_proj_multiple 64), else into a buffer copied over
        dx_conv = dx_in if _channel_last(dx_in) is dx_in else _new_channel_last(dx_in)
        _, dconv_w, dconv_b, _ = fns["conv_bwd"](_channel_last(xBC_in.transpose(1, 2)), conv_weight, conv_bias,
                                                 dxBC.transpose(1, 2), None, None, None, dx_conv, False, True)
        if dx_conv is not dx_in:
            dx_in.copy_(dx_conv)
    grads = (dconv_w, dconv_b, ddt_bias, dA, dD, dnorm_w)
    params = (conv_weight, conv_bias, dt_bias, A, D, norm_weight)
    return (dzxbcdt, *(_like(g, p.dtype) for g, p in zip(grads, params)))


@mamba_core_bwd.register_kernel("cuda")
def _(dout, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, xBC, y, rstd, dA_cumsum, dt_sp, states, CB,
      headdim, ngroups, chunk_size, eps, norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    fns = {k: _cuda(k) for k in _bound_keys("bwd", norm_impl, scan_impl, conv_impl)}
    return mamba_core_bwd_cuda(fns, dout, zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight, xBC, y, rstd,
                               dA_cumsum, dt_sp, states, CB, headdim, ngroups, chunk_size, eps, norm_impl, scan_impl,
                               conv_impl)


def _core_setup(ctx, inputs, output):
    *tensors, headdim, ngroups, chunk_size, eps, norm_impl, scan_impl, conv_impl = inputs
    kept_for_backward = output[1:]  # xBC', y, rstd and the scan's internals
    ctx.save_for_backward(*tensors, *kept_for_backward)
    ctx.args = (headdim, ngroups, chunk_size, eps, norm_impl, scan_impl, conv_impl)
    ctx.mark_non_differentiable(*kept_for_backward)
    ctx.set_materialize_grads(False)


def _core_backward(ctx, dout, *_kept_grads):
    saved = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(saved[8])  # like y
    grads = torch.ops.golf.mamba_core_bwd(dout, *saved, *ctx.args)
    return (*grads, *(None for _ in ctx.args))


mamba_core.register_autograd(_core_backward, setup_context=_core_setup)


def fused(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, rmsnorm_weight=None, rmsnorm_eps=1e-6,
          headdim=None, ngroups=1, norm_before_gate=True, norm_impl="mamba", scan_impl="mamba",
          conv_impl="causal_conv1d"):
    """mamba_split_conv1d_scan_combined as the mixer calls it (the gated norm, norm_before_gate=False; no out_proj,
    initial or final states, seq_idx) as golf::mamba_core: out (B, T, d). zxbcdt may carry padding columns after
    dt (the mixer's in_proj_multiple): the op reads around them, no copy."""
    if rmsnorm_weight is None or norm_before_gate or headdim is None:
        raise ValueError("golf::mamba_core is the gated RMSNorm form: pass rmsnorm_weight, headdim and "
                         "norm_before_gate=False")
    return torch.ops.golf.mamba_core(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, rmsnorm_weight, headdim,
                                     ngroups, chunk_size, rmsnorm_eps, norm_impl, scan_impl, conv_impl)[0]


def core_call(norm_impl: str = "mamba", scan_impl: str = "mamba", conv_impl: str = "causal_conv1d"):
    """`fused` with the op's kernel choices bound (golf.ssm._opaque_fused_kernels: model.gated_norm, model.ssm_scan,
    model.ssm_conv); the plain `fused` for the libraries' kernels throughout."""
    _check_impls(norm_impl, scan_impl, conv_impl)
    if (norm_impl, scan_impl, conv_impl) == ("mamba", "mamba", "causal_conv1d"):
        return fused
    chosen = {"norm_impl": norm_impl, "scan_impl": scan_impl} | (
        {"conv_impl": conv_impl} if conv_impl != "causal_conv1d" else {})
    return functools.partial(fused, **chosen)


def golf_norm_kernels() -> dict:
    """golf's own gated-norm kernels for golf::mamba_core (model.gated_norm "golf"): {"golf_norm_fwd",
    "golf_norm_bwd"}. ImportError where triton is missing (golf.gated_norm_kernel imports it at module top)."""
    import golf.gated_norm_kernel as nk

    return {"golf_norm_fwd": nk.gated_rmsnorm_fwd, "golf_norm_bwd": nk.gated_rmsnorm_bwd}


def golf_dcb_kernels() -> dict:
    """golf's chunk-backward kernel for golf::mamba_core_bwd (GOLF_BWD): {"golf_dcb_ddA"} (model.ssm_scan
    "mamba_keep_dA": the C·B and within-chunk log-decay gradients) and {"golf_chunk_bwd"} ("mamba_keep_dx": dx, ddt
    and dD too; "mamba_keep_chunk": with the states' parts as well). ImportError where triton is missing
    (golf.ssd_dcb_kernel imports it at module top)."""
    import golf.ssd_dcb_kernel as dk

    return {"golf_dcb_ddA": dk.dcb_ddA, "golf_chunk_bwd": dk.chunk_bwd}


def golf_xy_kernels() -> dict:
    """golf's chunk-output and input-gradient kernels for golf::mamba_core (GOLF_XY, model.ssm_scan
    "mamba_keep_xy"), called as the mamba-ssm pieces they replace: {"golf_chunk_y": _chunk_scan_fwd's call and
    return (y, out_x None), "golf_chunk_dx": _chunk_scan_chunk_state_bwd_dx's}, and golf's state passes
    ("mamba_keep_xy_pass"): {"golf_chunk_states": golf.ssd_kernel.chunk_states, "golf_chunk_state_grads":
    chunk_state_grads}, and golf's dt-gradient kernel ("mamba_keep_xy_pass_bf16_dt"): {"golf_dt_grads":
    golf.ssd_dt_kernel.dt_grads}. ImportError where triton is missing (golf.ssd_xy_kernel, golf.ssd_kernel and
    golf.ssd_dt_kernel import it at module top)."""
    import golf.ssd_dt_kernel as tk
    import golf.ssd_kernel as sk
    import golf.ssd_xy_kernel as xk

    def chunk_scan_fwd(CB, x, dt, dA_cumsum, C, states, D=None):
        return xk.chunk_y(CB, x, dt, dA_cumsum, C, states, D), None

    return {"golf_chunk_y": chunk_scan_fwd, "golf_chunk_dx": xk.chunk_dx, "golf_chunk_states": sk.chunk_states,
            "golf_chunk_state_grads": sk.chunk_state_grads, "golf_dt_grads": tk.dt_grads}


def ssd_parts(ssd_combined) -> dict:
    """{"ssd_parts": {name: function}} for scan_impl "mamba_keep": SSD_PARTS from mamba-ssm's ssd_combined module,
    which defines or imports every one (2.3.2.post1); a KeyError names those missing (golf.ssm turns it into a
    GolfError). The states' parts of dB and dC run golf's host code over mamba-ssm's kernels
    (golf/ssd_state_parts.py: the same bits without a copy over a size-1 dimension) where the modules that define
    those functions have their kernels; elsewhere (another mamba-ssm, the tests' stand-ins) mamba-ssm's own."""
    missing = [name for name in SSD_PARTS if not hasattr(ssd_combined, name)]
    if missing:
        raise KeyError(", ".join(missing))
    parts = {name: getattr(ssd_combined, name) for name in SSD_PARTS}
    modules = [sys.modules.get(getattr(parts[name], "__module__", "")) for name in ("_chunk_state_bwd_db",
                                                                                     "_chunk_scan_bwd_dC")]
    try:
        from golf.ssd_state_parts import state_part_functions  # imports triton, as mamba-ssm's modules do

        parts |= state_part_functions(*modules)
    except AttributeError:
        pass  # not mamba-ssm 2.3.2.post1's modules: its functions as they are
    return {"ssd_parts": parts}
