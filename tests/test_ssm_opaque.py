"""model.ssm_compile "opaque" (golf/ssm_ops.py): the mixer's kernels as custom ops. On CPU: each op and its
backward against golf's reference math and torch.autograd through it (float64), torch.library.opcheck (schema,
fake kernels, autograd registration, AOT dispatch), the CUDA kernels' glue with stand-ins that follow
mamba-ssm's and causal-conv1d's contracts, the mixer and a small model compiled as one graph, carried state,
and the backend choice. On a CUDA machine with mamba-ssm: opcheck against the real kernels, and the opaque
mixer (eager, compiled, CUDA graphs) against the reference."""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_ssm import (
    _mixer,
    _out_and_grads,
    _rel,
    _ssd_inputs,
    assert_gpu_mixer_matches_reference,
    gpu_mixer_pair,
)

from golf import ssm, ssm_ops
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import build_model
from golf.ssm import (
    SSMKernels,
    causal_conv_silu_reference,
    gated_rms_norm_reference,
    resolve_ssm_backend,
    ssd_scan_reference,
)

F64 = torch.float64
OPAQUE = SSMKernels("triton", ssm_ops.scan, ssm_ops.norm, ssm_ops.conv, compile_mode="opaque")
OPAQUE_TORCH_NORM = SSMKernels("triton", ssm_ops.scan, None, ssm_ops.conv, compile_mode="opaque")


def _scan_args(seed=0, dtype=F64, **kw):
    """x, dt (raw), A, B, C, D, dt_bias and an initial state; h=4 heads, g=2 groups."""
    x, dt, A, B, C, s0 = _ssd_inputs(seed, **kw)
    gen = torch.Generator().manual_seed(seed + 1)
    h = x.shape[2]
    D, dt_bias = torch.rand(h, generator=gen, dtype=F64) + 0.5, torch.randn(h, generator=gen, dtype=F64)
    return [t.to(dtype) for t in (x, dt - 0.5, A, B, C, D, dt_bias, s0)]


def _grads(fn, inputs):
    """fn(*inputs) → tensors; the gradients of a fixed random projection of them w.r.t. every input."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*inputs)
    gen = torch.Generator().manual_seed(7)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=F64)).sum() for o in outs if o.numel())
    return outs, torch.autograd.grad(loss, inputs)


# --------------------------------------------------------------------------------------------------
# The ops against the reference (CPU kernels)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_init", [False, True])
@pytest.mark.parametrize("return_final", [False, True])
def test_scan_op_matches_reference_values_and_gradients(with_init, return_final):
    x, dt, A, B, C, D, dt_bias, s0 = _scan_args()
    args = [x, dt, A, B, C, D, dt_bias] + ([s0] if with_init else [])

    def op(*t):
        return ssm_ops.scan(*t[:5], 8, D=t[5], dt_bias=t[6], dt_softplus=True,
                            initial_states=t[7] if with_init else None, return_final_states=return_final)

    def ref(*t):
        y, final = ssd_scan_reference(*t[:7], 8, t[7] if with_init else None)
        return (y, final) if return_final else y

    (y_op, *fin_op), g_op = _grads(lambda *t: op(*t) if return_final else (op(*t),), args)
    (y_ref, *fin_ref), g_ref = _grads(lambda *t: ref(*t) if return_final else (ref(*t),), args)
    torch.testing.assert_close(y_op, y_ref, rtol=0, atol=0)
    assert y_op.is_contiguous() and y_op.dtype == F64
    if return_final:
        torch.testing.assert_close(fin_op[0], fin_ref[0], rtol=0, atol=0)
    for name, a, b in zip(["x", "dt", "A", "B", "C", "D", "dt_bias", "init"], g_op, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_scan_op_without_final_state_returns_an_empty_tensor():
    x, dt, A, B, C, D, dt_bias, _ = _scan_args()
    y, final = torch.ops.golf.ssd_scan(x, dt, A, B, C, D, dt_bias, None, 8, False)
    assert final.shape == (0,) and y.shape == x.shape


def test_scan_op_dtypes_as_under_bf16_autocast():
    """As the mixer calls it under autocast: bf16 activations, fp32 A/D/dt_bias and state. y comes back in
    bf16, the final state in fp32, every gradient in its input's dtype."""
    x, dt, A, B, C, D, dt_bias, s0 = _scan_args(dtype=torch.float32)
    args = [x.bfloat16(), dt.bfloat16(), A, B.bfloat16(), C.bfloat16(), D, dt_bias, s0]
    (y, final), grads = _grads(lambda *t: ssm_ops.scan(*t[:5], 8, D=t[5], dt_bias=t[6], dt_softplus=True,
                                                        initial_states=t[7], return_final_states=True), args)
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    assert [g.dtype for g in grads] == [t.dtype for t in args]
    y_ref, final_ref = ssd_scan_reference(*args[:7], 8, s0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=0)


def test_conv_op_matches_reference_and_is_channel_last():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 21, 48, generator=gen, dtype=F64).transpose(1, 2)  # (B, C, T), channel-last as in the mixer
    w, b = torch.randn(48, 4, generator=gen, dtype=F64), torch.randn(48, generator=gen, dtype=F64)
    (out,), g_op = _grads(lambda *t: (ssm_ops.conv(*t, activation="silu"),), [x, w, b])
    (ref,), g_ref = _grads(lambda x, w, b: (causal_conv_silu_reference(F.pad(x, (3, 0)), w[:, None], b),), [x, w, b])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.stride(1) == 1 and out.transpose(1, 2).is_contiguous()  # a (B, T, C) tensor, transposed
    for a, r in zip(g_op, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("group_size", [8, 4])
def test_norm_op_matches_reference(group_size):
    gen = torch.Generator().manual_seed(4)
    y, z = torch.randn(2, 7, 8, generator=gen, dtype=F64), torch.randn(2, 7, 12, generator=gen, dtype=F64)[..., 2:10]
    w = torch.rand(8, generator=gen, dtype=F64) + 0.5
    (out,), g_op = _grads(lambda y, z, w: (ssm_ops.norm(y, w, None, z=z, eps=1e-5, group_size=group_size,
                                                        norm_before_gate=False),), [y, z, w])
    (ref,), g_ref = _grads(lambda y, z, w: (gated_rms_norm_reference(y, z, w, 8 // group_size, 1e-5),), [y, z, w])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for a, r in zip(g_op, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    _, rstd = torch.ops.golf.gated_rmsnorm(y, z, w, 1e-5, group_size)  # group-major, as mamba-ssm's kernel
    g = (y * F.silu(z)).reshape(14, 8 // group_size, group_size)
    torch.testing.assert_close(rstd, (g.square().mean(-1) + 1e-5).rsqrt().t().reshape(-1).float())


def test_wrappers_refuse_calls_the_ops_do_not_compute():
    x, dt, A, B, C, D, dt_bias, _ = _scan_args()
    with pytest.raises(ValueError, match="dt_softplus=True"):
        ssm_ops.scan(x, dt, A, B, C, 8, D=D, dt_bias=dt_bias)
    with pytest.raises(ValueError, match="activation='silu'"):
        ssm_ops.conv(x[..., 0], torch.ones(4, 4), torch.ones(4))
    with pytest.raises(ValueError, match="norm_before_gate=False"):
        ssm_ops.norm(x, torch.ones(3), None, z=x)


def _opcheck_cases(device="cpu", dtype=F64):
    """(op, args) for every op: chunk 16 over 37 tokens, sizes the Triton kernels take."""
    x, dt, A, B, C, D, dt_bias, s0 = [t.to(device) for t in _scan_args(p=16, n=16)]
    low = (x.to(dtype), dt.to(dtype), A.float(), B.to(dtype), C.to(dtype), D.float(), dt_bias.float())
    gen = torch.Generator().manual_seed(5)
    xbc = torch.randn(2, 19, 56, generator=gen).to(device, dtype)[..., :48].transpose(1, 2)  # non-dense, channel-last
    cw, cb = torch.randn(48, 4, generator=gen).to(device), torch.randn(48, generator=gen).to(device)
    y, z = torch.randn(2, 7, 64, generator=gen).to(device, dtype), torch.randn(2, 7, 64, generator=gen).to(device, dtype)
    nw = torch.rand(64, generator=gen).to(device) + 0.5
    cases = [(torch.ops.golf.ssd_scan.default, (*[t.clone().requires_grad_() for t in low], init, 16, keep))
             for init, keep in ((None, False), (s0.float().clone().requires_grad_(), True))]
    cases += [(torch.ops.golf.ssd_scan_bwd.default, (x.to(dtype), None, *low, None, x.to(dtype), 16)),
              (torch.ops.golf.ssd_scan_bwd.default, (x.to(dtype), s0.float(), *low, s0.float(), x.to(dtype), 16)),
              (torch.ops.golf.causal_conv1d_silu.default, (xbc.detach().requires_grad_(), cw.clone().requires_grad_(),
                                                           cb.clone().requires_grad_())),
              (torch.ops.golf.causal_conv1d_silu_bwd.default, (xbc, cw, cb, torch.randn_like(xbc))),
              (torch.ops.golf.gated_rmsnorm.default, (y.clone().requires_grad_(), z.clone().requires_grad_(),
                                                      nw.clone().requires_grad_(), 1e-5, 32)),
              (torch.ops.golf.gated_rmsnorm_bwd.default,
               (torch.randn_like(y), y, z, nw, torch.ones(2 * 14, device=device), 1e-5, 32))]
    return cases


@pytest.mark.parametrize("i", range(8))
def test_opcheck(i):
    """Schema, fake kernels (shapes, dtypes, strides against the real CPU kernel), autograd registration
    and AOT dispatch with dynamic shapes, per op."""
    op, args = _opcheck_cases()[i]
    torch.library.opcheck(op, args)


# --------------------------------------------------------------------------------------------------
# The CUDA kernels' glue, run on CPU with stand-ins for the library functions they call. Each stand-in
# follows its original's signature, return tuple, dtypes and layout checks (mamba_ssm 2.3.2.post1
# ops/triton/ssd_combined.py and layernorm_gated.py, causal_conv1d 1.7.0 cpp_functions.py and
# csrc/causal_conv1d.cpp) and computes with golf's reference.
# --------------------------------------------------------------------------------------------------


def stand_in_scan_fwd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                      seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    assert z is None and seq_idx is None and dt_softplus and D is not None and dt_bias is not None
    y, final = ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk_size, initial_states)
    b, l, h, p = x.shape
    nchunks = math.ceil(l / chunk_size)
    # out, out_x (None without z), dt after softplus, dA_cumsum, states (chunk starts), final_states (fp32)
    return (y, None, torch.empty(b, h, nchunks, chunk_size), torch.empty(b, h, nchunks, chunk_size),
            torch.empty(b, nchunks, h, p, B.shape[-1]), final.float())


def stand_in_scan_bwd(dout, x, dt, A, B, C, out, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                      dfinal_states=None, seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), dx=None,
                      ddt=None, dB=None, dC=None, dz=None, recompute_output=False):
    assert out.shape == x.shape and z is None and dt_softplus and dout.shape == x.shape
    dx_out, ddt_out, dB_out, dC_out = dx, ddt, dB, dC
    inputs = (x, dt, A, B, C, D, dt_bias) + ((initial_states,) if initial_states is not None else ())
    (_, final), vjp = torch.func.vjp(lambda *t: ssd_scan_reference(*t[:7], chunk_size, *t[7:]), *inputs)
    g = vjp((dout, torch.zeros_like(final) if dfinal_states is None else dfinal_states.to(final.dtype)))
    dx, ddt, dA, dB, dC, dD, ddt_bias = g[:7]
    # dx, ddt, dB and dC go into the tensors passed in, which are returned (any strides: golf::mamba_core passes
    # column slices of wider buffers)
    dx, ddt, dB, dC = (out.copy_(v) if out is not None else v for out, v in ((dx_out, dx), (ddt_out, ddt),
                                                                              (dB_out, dB), (dC_out, dC)))
    # dA, dD and ddt_bias come back in fp32 (mamba-ssm allocates them so)
    return (dx, ddt, dA.float(), dB, dC, dD.float(), None, ddt_bias.float(), g[7] if len(g) > 7 else None)


def _check_channel_last(t, name):
    assert t.stride(2) == 1 or t.stride(1) == 1, name
    if t.stride(1) == 1 and t.stride(2) > 1:
        assert t.stride(2) % 8 == 0 and t.stride(0) % 8 == 0, f"causal_conv1d channel-last stride check ({name})"


def stand_in_conv_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation):
    _check_channel_last(x, "x")
    assert bias.dtype == weight.dtype and silu_activation and seq_idx is None and initial_states is None
    out.copy_(causal_conv_silu_reference(F.pad(x, (weight.shape[1] - 1, 0)), weight[:, None], bias))


def stand_in_conv_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, return_dinitial_states,
                      silu_activation):
    _check_channel_last(x, "x")
    if x.stride(1) == 1:  # the C++ makes dout channel-last itself, then checks its strides
        dout = dout if dout.stride(1) == 1 else dout.transpose(-1, -2).contiguous().transpose(-1, -2)
        _check_channel_last(dout, "dout")
        assert dx.stride(1) == 1
    _, vjp = torch.func.vjp(lambda *t: causal_conv_silu_reference(F.pad(t[0], (weight.shape[1] - 1, 0)),
                                                                  t[1][:, None], t[2]), x, weight, bias)
    gx, gw, gb = vjp(dout)
    dx.copy_(gx)
    return dx, gw.float().type_as(weight), gb.float().type_as(bias), None


def stand_in_norm_fwd(x, weight, bias, eps, z=None, out=None, group_size=None, norm_before_gate=True,
                      is_rms_norm=False):
    M, N = x.shape
    assert x.stride(-1) == 1 and z.stride(-1) == 1 and weight.stride(-1) == 1 and out.stride(-1) == 1
    assert bias is None and is_rms_norm and not norm_before_gate
    out.copy_(gated_rms_norm_reference(x, z, weight, N // group_size, eps))
    g = (x.float() * F.silu(z.float())).reshape(M, N // group_size, group_size)
    return out, None, (g.square().mean(-1) + eps).rsqrt().t().reshape(-1)  # Rstd[group * M + row]


def stand_in_norm_bwd(dy, x, weight, bias, eps, mean, rstd, z=None, group_size=None, norm_before_gate=True,
                      is_rms_norm=False, recompute_output=False, dz=None, out=None):
    M, N = x.shape
    assert x.stride(-1) == 1 and dy.stride(-1) == 1 and z.stride(-1) == 1 and dy.shape == (M, N)
    assert rstd.shape == (M * N // group_size,) and rstd.dtype == torch.float32 and mean is None
    assert dz is None or (dz.shape == z.shape and dz.stride(-1) == 1)
    _, vjp = torch.func.vjp(lambda *t: gated_rms_norm_reference(*t, N // group_size, eps), x, z, weight)
    dx, gz, dw = vjp(dy)
    return torch.empty_like(x).copy_(dx), dw.to(weight.dtype), None, (torch.empty_like(z) if dz is None else dz).copy_(gz)


STAND_INS = {"scan_fwd": stand_in_scan_fwd, "scan_bwd": stand_in_scan_bwd, "conv_fwd": stand_in_conv_fwd,
             "conv_bwd": stand_in_conv_bwd, "norm_fwd": stand_in_norm_fwd, "norm_bwd": stand_in_norm_bwd}


def _same(a, b):
    """Equal values, dtype, shape and strides: what an op's fake kernel promised for both."""
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.stride() == b.stride(), (a.stride(), b.stride())


@pytest.mark.parametrize("with_init", [False, True])
def test_cuda_scan_glue_with_stand_ins(with_init):
    x, dt, A, B, C, D, dt_bias, s0 = _scan_args(dtype=torch.float32)
    init = s0 if with_init else None
    args = (x, dt, A, B, C, D, dt_bias, init, 8, True)
    for a, b in zip(ssm_ops.ssd_scan_mamba(STAND_INS, *args), torch.ops.golf.ssd_scan(*args)):
        _same(a, b)
    dy, dfinal = torch.randn_like(x), torch.randn_like(s0)
    bwd = (dy, dfinal, x, dt, A, B, C, D, dt_bias, init, x, 8)
    glue, cpu = ssm_ops.ssd_scan_bwd_mamba(STAND_INS, *bwd), torch.ops.golf.ssd_scan_bwd(*bwd)
    for a, b in zip(glue, cpu):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.dtype == b.dtype and a.stride() == b.stride()


@pytest.mark.parametrize("row", [56, 52])  # a slice of a wider row, stride 56 (in place) or 52 (copied)
def test_cuda_conv_glue_with_stand_ins(row):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 19, row, generator=gen)[..., :48].transpose(1, 2)  # (B, C, T) channel-last, non-dense
    w, b = torch.randn(48, 4, generator=gen), torch.randn(48, generator=gen)
    _same(ssm_ops.causal_conv1d_silu_cuda(STAND_INS, x, w, b), torch.ops.golf.causal_conv1d_silu(x, w, b))
    dout = torch.randn(2, 19, 48, generator=gen).transpose(1, 2)
    for a, c in zip(ssm_ops.causal_conv1d_silu_bwd_cuda(STAND_INS, x, w, b, dout),
                    torch.ops.golf.causal_conv1d_silu_bwd(x, w, b, dout)):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
        assert a.stride() == c.stride() and a.dtype == c.dtype


def test_cuda_norm_glue_with_stand_ins():
    gen = torch.Generator().manual_seed(8)
    y = torch.randn(2, 7, 16, generator=gen)
    z = torch.randn(2, 7, 24, generator=gen)[..., 4:20]  # a slice of zxbcdt, as in the mixer
    w = torch.rand(16, generator=gen) + 0.5
    for a, b in zip(ssm_ops.gated_rmsnorm_cuda(STAND_INS, y, z, w, 1e-5, 8),
                    torch.ops.golf.gated_rmsnorm(y, z, w, 1e-5, 8)):
        _same(a, b)
    dy, rstd = torch.randn_like(y), torch.ops.golf.gated_rmsnorm(y, z, w, 1e-5, 8)[1]
    for a, b in zip(ssm_ops.gated_rmsnorm_bwd_cuda(STAND_INS, dy, y, z, w, rstd, 1e-5, 8),
                    torch.ops.golf.gated_rmsnorm_bwd(dy, y, z, w, rstd, 1e-5, 8)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.stride() == b.stride() and a.dtype == b.dtype


# --------------------------------------------------------------------------------------------------
# The mixer and a model with the opaque kernels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernels", [OPAQUE, OPAQUE_TORCH_NORM], ids=["norm_op", "torch_norm"])
@pytest.mark.parametrize("multiple", [1, 64])
def test_opaque_mixer_matches_reference(kernels, multiple):
    ref = _mixer(in_proj_multiple=multiple)
    op = _mixer(kernels=kernels, in_proj_multiple=multiple)
    op.load_state_dict(ref.state_dict())
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    y_ref, g_ref = _out_and_grads(ref, u)
    y_op, g_op = _out_and_grads(op, u)
    torch.testing.assert_close(y_op, y_ref, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip([("input", None), *ref.named_parameters()], g_op, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_opaque_mixer_carries_state_through_the_scan_op():
    """Stateful calls (the reference conv, the scan op with an initial state in and the final state out)
    give the one-pass output, and the gradient reaches the carried state."""
    ref, op = _mixer(), _mixer(kernels=OPAQUE)
    u = torch.randn(2, 29, 16, dtype=F64)
    full = ref(u)
    a, st = op(u[:, :13], return_state=True)
    assert st[1].dtype == F64 and st[1].shape == (2, op.nheads, op.headdim, op.d_state)
    b, st2 = op(u[:, 13:], state=st, return_state=True)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-10, atol=1e-10)
    _, st_ref = ref(u, return_state=True)
    torch.testing.assert_close(st2[1], st_ref[1], rtol=1e-10, atol=1e-10)
    conv_s, ssm_s = (t.detach().requires_grad_(True) for t in st)
    g_op = torch.autograd.grad(op(u[:, 13:], state=(conv_s, ssm_s)).square().sum(), ssm_s)[0]
    ssm_s2 = ssm_s.detach().requires_grad_(True)
    g_ref = torch.autograd.grad(ref(u[:, 13:], state=(conv_s.detach(), ssm_s2)).square().sum(), ssm_s2)[0]
    torch.testing.assert_close(g_op, g_ref, rtol=1e-10, atol=1e-10)


def _golf_ops(gm: torch.fx.GraphModule) -> list[str]:
    return sorted(str(n.target) for n in gm.graph.nodes if n.op == "call_function" and str(n.target).startswith("golf."))


def compile_capturing_graphs(m: torch.nn.Module) -> tuple[Callable, dict]:
    """torch.compile(m, fullgraph=True) through AOT autograd, keeping its FX graphs: (compiled, graphs), graphs
    getting "fw" and "bw" on the compiled module's first forward and backward."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def capture(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = gm
            return make_boxed_func(gm.forward)
        return compiler

    torch._dynamo.reset()
    return torch.compile(m, backend=aot_autograd(fw_compiler=capture("fw"), bw_compiler=capture("bw")),
                         fullgraph=True), graphs


@pytest.mark.parametrize("multiple", [1, 64], ids=["xBC_copied", "xBC_in_place"])
def test_opaque_mixer_is_one_graph_with_one_node_per_kernel_call(multiple):
    """Dynamo's one graph calls each op once; AOT autograd's forward graph has the three ops, its backward
    graph the three backward ops (and neither anything of the kernels' insides). A padded in_proj (xBC to the
    conv in place) keeps the one graph."""
    m = _mixer(kernels=OPAQUE, in_proj_multiple=multiple)
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(u)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    assert _golf_ops(explained.graphs[0]) == ["golf.causal_conv1d_silu", "golf.gated_rmsnorm", "golf.ssd_scan"]
    compiled, graphs = compile_capturing_graphs(m)
    y = compiled(u)
    y.square().sum().backward()
    assert _golf_ops(graphs["fw"]) == ["golf.causal_conv1d_silu.default", "golf.gated_rmsnorm.default",
                                       "golf.ssd_scan.default"]
    assert _golf_ops(graphs["bw"]) == ["golf.causal_conv1d_silu_bwd.default", "golf.gated_rmsnorm_bwd.default",
                                       "golf.ssd_scan_bwd.default"]
    torch._dynamo.reset()


@pytest.mark.parametrize("multiple", [1, 64], ids=["xBC_copied", "xBC_in_place"])
def test_opaque_mixer_compiles_with_inductor(multiple):
    """Inductor, the training compile's backend, lowers each op to a fallback kernel whose own create() takes an
    argument named `kernel`: an op argument of that name failed the lowering ("got multiple values for argument
    'kernel'") on the H200, and does so on the CPU too. The compiled mixer's output and gradients equal eager's."""
    m = _mixer(kernels=OPAQUE, in_proj_multiple=multiple)
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    y_ref, g_ref = _out_and_grads(m, u)
    torch._dynamo.reset()
    y, g = _out_and_grads(torch.compile(m, fullgraph=True), u)
    torch._dynamo.reset()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for (name, _), a, b in zip([("input", None), *m.named_parameters()], g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


def _tiny_model(kernels: SSMKernels | None, seed=0, in_proj_multiple=1):
    """A small M/A/M model in float64 with every weight non-zero; `kernels` replaces its mixers' kernels
    (the model is built on the reference path, so its CPU check lets it run here)."""
    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="MAM", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, num_heads=2, num_kv_heads=1, bigram_buckets=16, bigram_dim=8,
                      ssm_backend="reference", in_proj_multiple=in_proj_multiple)
    torch.manual_seed(seed)
    m = build_model(cfg, "cpu").double()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.normal_(std=0.2)
    for blk in m.blocks:
        if kernels is not None and hasattr(blk, "mixer"):
            blk.mixer.kernels = kernels
    return m


def test_opaque_model_compiles_as_one_graph_and_matches_eager():
    assert_compiled_model_matches_reference(OPAQUE)


def assert_compiled_model_matches_reference(kernels: SSMKernels, in_proj_multiple: int = 1) -> None:
    """fullgraph=True with AOT autograd (the fake kernels and backward ops in the joint graph): the compiled
    loss and gradients of a small model on `kernels` equal the eager reference model's, and so do its outputs with
    carried state."""
    ref, op = _tiny_model(None, in_proj_multiple=in_proj_multiple), _tiny_model(kernels, in_proj_multiple=in_proj_multiple)
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    loss_ref = ref(ids, targets=ids)
    g_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(op, fullgraph=True, backend="aot_eager")
    loss = compiled(ids, targets=ids)
    g = torch.autograd.grad(loss, list(op.parameters()))
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip(ref.named_parameters(), g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    with torch.no_grad():  # carried states through the model (eval's stateful path), eager
        _, states = op(ids[:, :10], return_states=True)
        _, states_ref = ref(ids[:, :10], return_states=True)
        torch.testing.assert_close(op(ids[:, 10:], states=states), ref(ids[:, 10:], states=states_ref),
                                   rtol=1e-10, atol=1e-10)
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------
# The backend choice
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_libraries(monkeypatch):
    """mamba-ssm and causal-conv1d present (stand-ins), a fresh table of bound CUDA functions."""
    fake = {"scan": object(), "norm": object(), "fused": object(), **{k: STAND_INS[k] for k in
                                                                      ("scan_fwd", "scan_bwd", "norm_fwd", "norm_bwd")}}
    monkeypatch.setattr(ssm, "_import_mamba_triton", lambda: fake)
    monkeypatch.setattr(ssm, "_import_causal_conv1d", lambda: object())
    monkeypatch.setattr(ssm, "_import_causal_conv1d_ops", lambda: {k: STAND_INS[k] for k in ("conv_fwd", "conv_bwd")})
    monkeypatch.setattr(ssm_ops, "_CUDA", {})
    return fake


def test_opaque_backend_binds_the_library_functions(fake_libraries):
    k = resolve_ssm_backend("auto", "cuda", "opaque", "kernel")
    assert (k.scan, k.conv, k.norm, k.compile_mode) == (ssm_ops.scan, ssm_ops.conv, ssm_ops.norm, "opaque")
    assert k.label == "triton+causal_conv1d+opaque"
    assert ssm_ops._CUDA == STAND_INS
    torch_norm = resolve_ssm_backend("triton", "cuda", "opaque", "torch")
    assert torch_norm.norm is None and torch_norm.label == "triton+causal_conv1d+torch_norm+opaque"
    assert resolve_ssm_backend("triton", "cuda", "trace").label == "triton+causal_conv1d"  # other modes unchanged


def test_opaque_backend_refusals_and_fallbacks(fake_libraries, monkeypatch):
    del fake_libraries["scan_bwd"]
    with pytest.raises(GolfError, match=r"internal functions \(scan_bwd missing"):
        resolve_ssm_backend("triton", "cuda", "opaque")
    fake_libraries["scan_bwd"] = STAND_INS["scan_bwd"]
    monkeypatch.setattr(ssm, "_import_causal_conv1d_ops", lambda: None)  # causal-conv1d without cpp_functions
    assert resolve_ssm_backend("triton", "cuda", "opaque").label == "triton+opaque"  # the PyTorch conv


def test_opaque_on_cpu_is_the_reference_path():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the kernels")
    assert resolve_ssm_backend("auto", "cpu", "opaque") == SSMKernels()
    assert resolve_ssm_backend("auto", "cpu", "opaque").label == "reference"


def test_an_unbound_cuda_kernel_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(ssm_ops, "_CUDA", {})
    with pytest.raises(RuntimeError, match="'scan_fwd', bound when a model is built with model.ssm_compile 'opaque'"):
        ssm_ops._cuda("scan_fwd")


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with mamba-ssm)
# --------------------------------------------------------------------------------------------------


def _cuda_opaque(gated_norm="kernel") -> SSMKernels:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    try:
        return resolve_ssm_backend("triton", "cuda", "opaque", gated_norm)
    except GolfError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("i", range(8))
def test_opcheck_on_gpu(i, dtype):
    """The fake kernels against mamba-ssm's and causal-conv1d's real outputs (shapes, dtypes, strides)."""
    _cuda_opaque()
    op, args = _opcheck_cases("cuda", dtype)[i]
    tol = 1e-3 if dtype == torch.float32 else 3e-2  # AOT vs eager runs of kernels with atomic adds
    torch.library.opcheck(op, args, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("gated_norm", ["kernel", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("multiple", [1, 64])
# compiled first: on a fresh GPU machine each case compiles Triton kernels from cold caches, and the compiled
# cases are the ones a time-limited device call must reach (the eager ones run every training step's kernels too)
@pytest.mark.parametrize("compiled", [True, False])
def test_opaque_mixer_matches_reference_on_gpu(gated_norm, dtype, multiple, compiled):
    kernels = _cuda_opaque(gated_norm)
    ref, op = gpu_mixer_pair(kernels, multiple)
    torch._dynamo.reset()
    run = torch.compile(op, fullgraph=True) if compiled else op
    assert_gpu_mixer_matches_reference(ref, op, run, dtype)
    torch._dynamo.reset()


@pytest.mark.gpu
# the triton path's op per kernel, and the fused path's one op per mixer (golf/mixer_op.py) with golf's norm kernels
@pytest.mark.parametrize("backend,gated_norm", [("triton", "torch"), ("fused", "golf")])
def test_opaque_model_under_cuda_graphs_matches_eager_on_gpu(backend, gated_norm):
    """The whole model compiled as one graph with CUDA graphs (train.compile_mode reduce-overhead): three
    training-like steps give the eager loss and gradients."""
    kernels = _cuda_opaque("torch")
    if backend == "fused":
        try:
            kernels = resolve_ssm_backend("fused", "cuda", "opaque", gated_norm)
        except GolfError as e:
            pytest.skip(str(e))
    cfg = ModelConfig(vocab_size=256, d_model=128, layer_pattern="MAM", d_state=32, expand=2.0, headdim=32,
                      chunk_size=64, num_heads=4, num_kv_heads=2, bigram_buckets=64, bigram_dim=16,
                      ssm_backend=backend, ssm_compile="opaque", gated_norm=gated_norm, in_proj_multiple=64)
    torch.manual_seed(0)
    model = build_model(cfg, "cuda")
    assert model.kernel_paths["ssm"].endswith("+opaque") and kernels.compile_mode == "opaque"
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(std=0.05)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    gen = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(4):  # warm-up, recording, then replays of the CUDA graphs
        ids = torch.randint(0, 256, (4, 256), device="cuda", generator=gen)
        out = {}
        for name, m in (("eager", model), ("graphs", compiled)):
            torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(ids, targets=ids)
            out[name] = (loss.detach().clone(), torch.autograd.grad(loss, list(model.parameters())))
        assert abs(float(out["graphs"][0]) - float(out["eager"][0])) < 1e-2
        for (n, _), a, b in zip(model.named_parameters(), out["graphs"][1], out["eager"][1]):
            assert _rel(a, b) < 5e-2, n
    torch._dynamo.reset()
