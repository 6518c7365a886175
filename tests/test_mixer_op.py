"""golf::mamba_core (golf/mixer_op.py): the Mamba-2 mixer between its projections as one custom op, model.ssm_backend
"fused" under ssm_compile "opaque". On CPU: the mixer on the op against the reference mixer (float64, values and every
gradient, with and without a padded in_proj), torch.library.opcheck, the CUDA kernels' glue with stand-ins that follow
the libraries' contracts (each writing its part of the input gradient in place), the model compiled as one graph, and
the backend choice. On a CUDA machine with mamba-ssm and causal-conv1d: opcheck and the mixer against the reference
with the real kernels, eager and compiled, with either norm."""

import types

import pytest
import torch
from test_ssm import _mixer, _out_and_grads, assert_gpu_mixer_matches_reference, gpu_mixer_pair
from test_ssm_opaque import STAND_INS, assert_compiled_model_matches_reference, fake_libraries  # noqa: F401

from golf import mixer_op, ssm, ssm_ops
from golf.errors import GolfError
from golf.ssm import SSMKernels, resolve_ssm_backend, ssd_scan_reference

F64 = torch.float64
CORE = SSMKernels("fused", ssm_ops.scan, ssm_ops.norm, ssm_ops.conv, mixer_op.fused, compile_mode="opaque")
CORE_KEEP = SSMKernels("fused", ssm_ops.scan, ssm_ops.norm, ssm_ops.conv, mixer_op.core_call("mamba", "mamba_keep"),
                       compile_mode="opaque", scan_kernel="mamba_keep")


def _core_args(seed=0, dtype=F64, pad=4, b=2, t=19):
    """(zxbcdt, conv weight, conv bias, dt_bias, A, D, norm weight), headdim 4, 2 groups of d_state 4: d 16 (4 heads),
    conv_dim 32, zxbcdt 16 + 32 + 4 + pad wide (56 with the default pad: causal-conv1d's channel-last rows need
    strides that are multiples of 8, which the unpadded 52 is not)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=F64).to(dtype)

    return [randn(b, t, 52 + pad), randn(32, 4, scale=0.5), randn(32, scale=0.3), randn(4, scale=0.5), -rand(4) - 0.5,
            rand(4) + 0.5, rand(16) + 0.5]


HEADDIM, NGROUPS, CHUNK, EPS = 4, 2, 8, 1e-5


# --------------------------------------------------------------------------------------------------
# The op in the mixer, against the reference mixer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernels", [CORE, CORE_KEEP], ids=["mamba", "mamba_keep"])
@pytest.mark.parametrize("in_proj_multiple", [1, 8], ids=["unpadded", "padded"])
def test_mixer_on_the_core_op_matches_the_reference_mixer(in_proj_multiple, kernels):
    """Output and the gradient of every parameter and of the input, float64: the op reads z, xBC and dt around
    in_proj's padding and its backward fills the whole input gradient (the padding's with zeros)."""
    ref = _mixer(in_proj_multiple=in_proj_multiple)
    core = _mixer(in_proj_multiple=in_proj_multiple, kernels=kernels)
    core.load_state_dict(ref.state_dict())
    assert ref.in_proj_pad == (0 if in_proj_multiple == 1 else 4)
    u = torch.randn(2, 21, 16, dtype=F64, requires_grad=True)
    (y, g), (y_ref, g_ref) = _out_and_grads(core, u), _out_and_grads(ref, u)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(["input"] + [n for n, _ in ref.named_parameters()], g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)
    core_grads = dict(zip([n for n, _ in core.named_parameters()], g[1:]))
    if in_proj_multiple > 1:
        assert torch.count_nonzero(core_grads["in_proj.weight"][core.d_in_proj:]) == 0


def test_carried_state_takes_the_unfused_pieces():
    """Stateful calls (eval's carried windows) cannot go through the op: the mixer runs the triton path's opaque
    ops instead, and two windows with carried state equal one pass through the op."""
    core = _mixer(kernels=CORE)
    u = torch.randn(2, 21, 16, dtype=F64)
    with torch.no_grad():
        full = core(u)
        a, st = core(u[:, :9], return_state=True)
        b = core(u[:, 9:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scan_impl", mixer_op.SCAN_IMPLS)
def test_saved_outputs_are_not_differentiable(scan_impl):
    args = [t.requires_grad_() for t in _core_args()]
    out, *kept = torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, CHUNK, EPS, "mamba", scan_impl)
    assert out.requires_grad and not any(k.requires_grad for k in kept)
    assert all(k.numel() == 0 for k in kept[3:]) == (scan_impl == "mamba")


def test_kept_scan_internals_are_what_the_backward_would_recompute():
    """scan_impl "mamba_keep": dt (softplus'ed, zero past the end), its running log-decay per chunk, C·B per chunk
    and the state entering each chunk, which must equal the reference scan's final state over the tokens before
    that chunk (19 tokens in chunks of 8: the last chunk is ragged)."""
    zxbcdt, cw, cb, dt_bias, A, D, nw = _core_args()
    _, xBC, _, _, dA_cumsum, dt_sp, states, CB = torch.ops.golf.mamba_core(zxbcdt, cw, cb, dt_bias, A, D, nw, HEADDIM,
                                                                          NGROUPS, CHUNK, EPS, "mamba", "mamba_keep")
    b, t, _ = zxbcdt.shape
    x, B, C = xBC.split([16, 8, 8], dim=-1)
    x, B, C = x.reshape(b, t, 4, HEADDIM), B.reshape(b, t, NGROUPS, 4), C.reshape(b, t, NGROUPS, 4)
    dt = torch.nn.functional.softplus(zxbcdt[..., 48:52] + dt_bias)  # (b, t, h)
    assert dt_sp.shape == dA_cumsum.shape == (b, 4, 3, CHUNK) and states.shape == (b, 3, 4, HEADDIM, 4)
    torch.testing.assert_close(dt_sp.permute(0, 2, 3, 1).reshape(b, 24, 4)[:, :t], dt, rtol=1e-12, atol=0)
    assert torch.count_nonzero(dt_sp[:, :, -1, t - 16:]) == 0
    torch.testing.assert_close(dA_cumsum, torch.cumsum(dt_sp * A[:, None, None], -1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(CB[:, 1, 1, 2, 5], (C[:, 10, 1] * B[:, 13, 1]).sum(-1), rtol=1e-12, atol=1e-14)
    assert torch.count_nonzero(states[:, 0]) == 0
    for i in (1, 2):
        _, final = ssd_scan_reference(x[:, :i * CHUNK], zxbcdt[:, :i * CHUNK, 48:52], A, B[:, :i * CHUNK],
                                      C[:, :i * CHUNK], D, dt_bias, CHUNK)
        torch.testing.assert_close(states[:, i], final, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scan_impl", mixer_op.STATES_IN_X_DTYPE)
def test_bf16_scans_keep_the_states_in_x_dtype(scan_impl):
    """scan_impls "mamba_keep_xy_pass_bf16(_dt)": the op keeps the states entering each chunk in x's dtype (bf16
    here; mamba_keep's fp32 states rounded), every other output as mamba_keep's; its fake kernel says the same
    (opcheck, bf16 activations)."""
    args = [t.float() for t in _core_args(t=37)]
    args[0] = args[0].bfloat16()
    want = torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, 16, EPS, "mamba", "mamba_keep")
    got = torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, 16, EPS, "mamba", scan_impl)
    assert want[6].dtype == torch.float32 and got[6].dtype == torch.bfloat16 and want[6].abs().max() > 0
    assert torch.equal(got[6], want[6].bfloat16())
    for i in (0, 1, 2, 3, 4, 5, 7):
        assert torch.equal(got[i], want[i]), i
    torch.library.opcheck(*_flat(_opcheck_cases(dtype=torch.bfloat16, scan_impl=scan_impl)[0]))


def test_fused_call_refuses_what_the_op_does_not_compute():
    args = _core_args()
    with pytest.raises(ValueError, match="gated RMSNorm form"):
        mixer_op.fused(*args[:6], CHUNK, rmsnorm_weight=args[6], headdim=HEADDIM, ngroups=NGROUPS)  # norm before gate
    with pytest.raises(ValueError, match="norm_impl must be one of"):
        torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, CHUNK, EPS, "triton")
    with pytest.raises(ValueError, match="scan_impl must be one of"):
        mixer_op.core_call("mamba", "golf")
    with pytest.raises(ValueError, match=r"conv_impl must be one of \['causal_conv1d', 'golf'\], got 'cuda'"):
        torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, CHUNK, EPS, "mamba", "mamba", "cuda")
    with pytest.raises(ValueError, match="do not fit 4 heads of 4 and 3 groups"):
        torch.ops.golf.mamba_core(*args, HEADDIM, 3, CHUNK, EPS)


# --------------------------------------------------------------------------------------------------
# Registration: opcheck (schema, fake kernels, autograd, AOT dispatch)
# --------------------------------------------------------------------------------------------------


def _opcheck_cases(device="cpu", dtype=F64, norm_impl="mamba", scan_impl="mamba", conv_impl="causal_conv1d"):
    args = [t.to(device) for t in _core_args(dtype=dtype, t=37)]
    args = [args[0].to(dtype)] + [t.float() if dtype != F64 else t for t in args[1:]]  # fp32 parameters, as trained
    impls = (norm_impl, scan_impl, conv_impl)
    out, *kept = torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, 16, EPS, *impls)
    return [(torch.ops.golf.mamba_core.default,
             ([t.clone().requires_grad_() for t in args], HEADDIM, NGROUPS, 16, EPS, *impls)),
            (torch.ops.golf.mamba_core_bwd.default,
             (torch.randn_like(out), *args, *kept, HEADDIM, NGROUPS, 16, EPS, *impls))]


def _flat(case):
    op, args = case
    return op, (*args[0], *args[1:]) if isinstance(args[0], list) else args


@pytest.mark.parametrize("scan_impl,conv_impl", [*((s, "causal_conv1d") for s in mixer_op.SCAN_IMPLS),
                                                 ("mamba_keep_dA", "golf")])
@pytest.mark.parametrize("i", range(2))
def test_opcheck(i, scan_impl, conv_impl):
    torch.library.opcheck(*_flat(_opcheck_cases(scan_impl=scan_impl, conv_impl=conv_impl)[i]))


# --------------------------------------------------------------------------------------------------
# The CUDA kernels' glue, on CPU with stand-ins (tests/test_ssm_opaque.py) for mamba-ssm's and causal-conv1d's
# functions, which write into the buffers the glue passes them
# --------------------------------------------------------------------------------------------------


def _golf_norm_stand_ins():
    """golf's own norm kernels, run by Triton's interpreter (tests/conftest.py)."""
    pytest.importorskip("triton", reason="triton is not installed: golf's norm kernels need it")
    return mixer_op.golf_norm_kernels()


def _golf_conv_stand_ins():
    """golf's own conv kernels under the keys golf.ssm binds them to, run by Triton's interpreter."""
    pytest.importorskip("triton", reason="triton is not installed: golf's conv kernels need it")
    golf = ssm_ops.golf_conv_kernels()
    return {"golf_conv_fwd": golf["conv_fwd"], "golf_conv_bwd": golf["conv_bwd"]}


@pytest.mark.parametrize("norm_impl,conv_impl", [("mamba", "causal_conv1d"), ("golf", "causal_conv1d"),
                                                 ("golf", "golf")])
@pytest.mark.parametrize("pad", [0, 4])
def test_cuda_glue_matches_the_cpu_kernels(norm_impl, conv_impl, pad):
    """The glue with the libraries' stand-ins, golf's norm kernels or golf's conv kernels too (these two in Triton's
    interpreter): every output and gradient as the op's CPU kernel (golf's reference math); golf's conv backward
    writes dx into the input gradient's conv columns itself, around z's, dt's and the padding's."""
    fns = dict(STAND_INS) | (_golf_norm_stand_ins() if norm_impl == "golf" else {}) | (
        _golf_conv_stand_ins() if conv_impl == "golf" else {})
    args = _core_args(pad=pad)
    impls = (norm_impl, "mamba", conv_impl)
    glue = mixer_op.mamba_core_cuda(fns, *args, HEADDIM, NGROUPS, CHUNK, EPS, *impls)
    cpu = torch.ops.golf.mamba_core(*args, HEADDIM, NGROUPS, CHUNK, EPS)
    for name, a, b in zip(("out", "xBC", "y", "rstd"), glue, cpu):
        tol = 1e-6 if name == "rstd" and norm_impl == "mamba" else 1e-10  # mamba-ssm's rstd is fp32
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-2, msg=name)
        assert a.shape == b.shape and a.dtype == b.dtype and a.is_contiguous(), name
    dout = torch.randn_like(cpu[0])
    gglue = mixer_op.mamba_core_bwd_cuda(fns, dout, *args, *glue[1:], HEADDIM, NGROUPS, CHUNK, EPS, *impls)
    assert all(k.numel() == 0 for k in glue[4:])  # scan_impl "mamba" keeps nothing of the scan's
    gcpu = torch.ops.golf.mamba_core_bwd(dout, *args, *cpu[1:], HEADDIM, NGROUPS, CHUNK, EPS)
    for name, a, b in zip(("zxbcdt", "conv_w", "conv_b", "dt_bias", "A", "D", "norm_w"), gglue, gcpu):
        tol = 1e-9 if name == "zxbcdt" else 1e-6  # the libraries return parameter gradients as fp32 (stand-ins too)
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)
        assert a.shape == b.shape and a.dtype == b.dtype and a.is_contiguous(), name
    assert torch.count_nonzero(gglue[0][..., 52:]) == 0 and torch.count_nonzero(gglue[0][..., :52]) > 0


@pytest.mark.parametrize("norm_impl", ["mamba", "golf"])
def test_cuda_glue_writes_every_column_of_the_input_gradient(monkeypatch, norm_impl):
    """The backward allocates the gradient of zxbcdt uninitialized: each of its column ranges must be written by
    one of the kernels (or zeroed: with golf's norm, by its backward kernel). Filled with NaN first, none may
    survive, and the padding columns are exactly zero."""
    real_empty_like = torch.empty_like

    def nan_empty_like(t, *a, **k):
        return real_empty_like(t, *a, **k).fill_(float("nan"))

    fns = dict(STAND_INS) | (_golf_norm_stand_ins() if norm_impl == "golf" else {})
    args = _core_args(pad=4)
    fwd = mixer_op.mamba_core_cuda(fns, *args, HEADDIM, NGROUPS, CHUNK, EPS, norm_impl)
    monkeypatch.setattr(torch, "empty_like", nan_empty_like)
    grads = mixer_op.mamba_core_bwd_cuda(fns, torch.randn_like(fwd[0]), *args, *fwd[1:], HEADDIM, NGROUPS,
                                         CHUNK, EPS, norm_impl)
    assert not torch.isnan(grads[0]).any()
    assert (grads[0][..., -4:] == 0).all()


# --------------------------------------------------------------------------------------------------
# scan_impl "mamba_keep" with mamba-ssm's real Triton kernels in Triton's CPU interpreter: where mamba-ssm's Triton
# modules import (a development machine with its source on PYTHONPATH, e.g. PYTHONPATH=<mamba_ssm-2.3.2.post1 source>
# plus einops; CPU machines cannot install mamba-ssm, so CI skips these)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def mamba_interpreted(monkeypatch):
    """mamba-ssm's Triton entry points (golf.ssm._import_mamba_triton), made to run in the interpreter: no CUDA
    device to switch to or to ask for its SM count, and no driver to time autotune candidates with (every autotuned
    kernel keeps one config, its smallest)."""
    import os
    import sys
    from contextlib import nullcontext

    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs mamba-ssm's kernels in Triton's CPU interpreter: needs a machine without CUDA")
    found = ssm._import_mamba_triton()
    if found is None:
        pytest.skip("mamba-ssm's Triton modules do not import here (put mamba-ssm's source and einops on PYTHONPATH)")
    monkeypatch.setattr(torch.cuda, "device", lambda index: nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        multi_processor_count=4))
    for name, module in list(sys.modules.items()):
        if name.startswith("mamba_ssm.ops.triton") and module is not None:
            for obj in vars(module).values():
                if isinstance(getattr(obj, "configs", None), list) and hasattr(obj, "cache") and len(obj.configs) > 1:
                    smallest = min(obj.configs, key=lambda c: sum(v for v in c.kwargs.values() if isinstance(v, int)))
                    monkeypatch.setattr(obj, "configs", [smallest])
    return found


def _scan_inputs(gen):
    """The SSD scan's inputs for the interpreter tests below: 40 tokens in chunks of 16 (a ragged last chunk), 4 heads
    of 16 sharing one group of d_state 16, fp32 → x, dt (raw), A, B, C, D, dt_bias, chunk size."""
    b, t, h, p, g, n = 2, 40, 4, 16, 1, 16
    x, dt = torch.randn(b, t, h, p, generator=gen), torch.randn(b, t, h, generator=gen) - 1
    B, C = (torch.randn(b, t, g, n, generator=gen) * 0.5 for _ in range(2))
    A, D = -torch.rand(h, generator=gen) - 0.5, torch.rand(h, generator=gen) + 0.5
    return x, dt, A, B, C, D, torch.randn(h, generator=gen), 16


def test_mamba_keep_equals_mamba_ssms_combined_scan_in_the_interpreter(mamba_interpreted):
    """The kept-internals forward and backward (mamba-ssm's SSD pieces called one by one, the backward from the
    forward's chunk states) against mamba-ssm's own combined forward and backward, fp32, 40 tokens in chunks of 16
    (a ragged last chunk), 4 heads sharing one group: the same kernels in the same order give the same bits."""
    m = mamba_interpreted
    parts = mixer_op.ssd_parts(m["ssd_module"])["ssd_parts"]
    gen = torch.Generator().manual_seed(0)
    x, dt, A, B, C, D, dt_bias, L = _scan_inputs(gen)
    y_ref = m["scan_fwd"](x, dt, A, B, C, L, D=D, dt_bias=dt_bias, dt_softplus=True)[0]
    y, *kept = mixer_op._scan_fwd_keep(parts, x, dt, A, B, C, D, dt_bias, L)
    assert torch.equal(y, y_ref)
    dy = torch.randn(y.shape, generator=gen)
    dx_ref, ddt_ref, dA_ref, dB_ref, dC_ref, dD_ref, _, ddt_bias_ref, _ = m["scan_bwd"](
        dy, x, dt, A, B, C, y_ref, L, D=D, dt_bias=dt_bias, dt_softplus=True)
    dx, ddt, dB, dC = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(B), torch.empty_like(C)
    dA, dD, ddt_bias = mixer_op._scan_bwd_keep(parts, dy, x, dt, A, B, C, D, dt_bias, kept, dx, ddt, dB, dC)
    for name, a, r in (("dx", dx, dx_ref), ("ddt", ddt, ddt_ref), ("dA", dA, dA_ref), ("dB", dB, dB_ref),
                       ("dC", dC, dC_ref), ("dD", dD, dD_ref), ("ddt_bias", ddt_bias, ddt_bias_ref)):
        assert torch.equal(a, r), name
    # and both against golf's reference scan
    leaves = [v.clone().requires_grad_() for v in (x, dt, A, B, C, D, dt_bias)]
    y_gold, _ = ssd_scan_reference(*leaves, L)
    torch.testing.assert_close(y, y_gold, rtol=1e-5, atol=1e-5)
    for name, a, r in zip(("dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias"), (dx, ddt, dA, dB, dC, dD, ddt_bias),
                          torch.autograd.grad(y_gold, leaves, dy)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4, msg=name)


@pytest.mark.parametrize("sm_count", [4, 1000], ids=["one_split", "four_splits"])
def test_golf_state_parts_equal_mamba_ssms_functions_in_the_interpreter(mamba_interpreted, monkeypatch, sm_count):
    """golf/ssd_state_parts.py's host code for the states' parts of dB and dC (what ssd_parts binds) against
    mamba-ssm's _chunk_state_bwd_db and _chunk_scan_bwd_dC on the same inputs: the same bits, with one split of the
    heads (the stand-in device's 4 SMs: golf returns a view of it) and with four (1,000 SMs: both sum them)."""
    import sys

    m = mamba_interpreted
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        multi_processor_count=sm_count))
    parts = mixer_op.ssd_parts(m["ssd_module"])["ssd_parts"]
    theirs = {name: getattr(m["ssd_module"], name) for name in ("_chunk_state_bwd_db", "_chunk_scan_bwd_dC")}
    assert all(parts[name] is not fn for name, fn in theirs.items())  # golf's host code is what is bound
    assert all(sys.modules[fn.__module__].__name__.startswith("mamba_ssm") for fn in theirs.values())
    gen = torch.Generator().manual_seed(2)
    x, dt, A, B, C, D, dt_bias, L = _scan_inputs(gen)
    g = B.shape[2]
    y, dA_cumsum, dt_sp, states, _ = mixer_op._scan_fwd_keep(parts, x, dt, A, B, C, D, dt_bias, L)
    dy = torch.randn(y.shape, generator=gen)
    dstates = torch.randn(states.shape, generator=gen)
    for name, args in (("_chunk_state_bwd_db", (x, dt_sp, dA_cumsum, dstates)),
                       ("_chunk_scan_bwd_dC", (states.to(x.dtype), dA_cumsum, dy))):
        kw = {"B": B} if name == "_chunk_state_bwd_db" else {"C": C}
        got, want = parts[name](*args, ngroups=g, **kw), theirs[name](*args, ngroups=g, **kw)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape and torch.equal(a, b), name
        without = parts[name](*args, ngroups=g)  # no B (C): mamba-ssm's own function, its own return
        assert torch.equal(without, theirs[name](*args, ngroups=g))


def test_golf_chunk_bwd_replaces_mamba_ssms_kernels_in_the_interpreter(mamba_interpreted):
    """scan_impl "mamba_keep_dA", "mamba_keep_dx" and "mamba_keep_chunk": the kept-internals backward with golf's
    one kernel (golf/ssd_dcb_kernel.py) for the C·B gradient and the within-chunk log-decay gradient (and dx, ddt
    and dD; and the states' parts of dB, dC and the whole log-decay gradient), against the same backward with
    mamba-ssm's kernels, fp32, 40 tokens in chunks of 16 (a ragged last chunk), 4 heads in one group: every gradient
    equal to fp32 rounding (the same sums in another order), and the first two pieces themselves."""
    pytest.importorskip("triton", reason="triton is not installed: golf's kernel needs it")
    m = mamba_interpreted
    parts = mixer_op.ssd_parts(m["ssd_module"])["ssd_parts"]
    golf = mixer_op.golf_dcb_kernels()
    gen = torch.Generator().manual_seed(1)
    x, dt, A, B, C, D, dt_bias, L = _scan_inputs(gen)
    g = B.shape[2]
    y, *kept = mixer_op._scan_fwd_keep(parts, x, dt, A, B, C, D, dt_bias, L)
    dy = torch.randn(y.shape, generator=gen)
    dA_cumsum, dt_sp, _, CB = kept
    dcb, dda = golf["golf_dcb_ddA"](x, dt_sp, dA_cumsum, dy, CB)
    torch.testing.assert_close(dcb, parts["_chunk_scan_bwd_dcb"](x, dt_sp, dA_cumsum, dy, ngroups=g),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dda, parts["_chunk_scan_bwd_ddAcs_stable"](x, dt_sp, dA_cumsum, dy, CB),
                               rtol=1e-5, atol=1e-5)
    grads = {}
    for name, fns in (("mamba", ()), *((part, (golf[key], part)) for key, part in mixer_op.GOLF_BWD.values())):
        dx, ddt, dB, dC = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(B), torch.empty_like(C)
        dA, dD, ddt_bias = mixer_op._scan_bwd_keep(parts, dy, x, dt, A, B, C, D, dt_bias, kept, dx, ddt, dB, dC, *fns)
        grads[name] = (dx, ddt, dA, dB, dC, dD, ddt_bias)
    for impl in ("dA", "dx", "chunk"):
        for name, a, r in zip(("dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias"), grads[impl], grads["mamba"]):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"{impl}: {name}")


def test_overlap_joins_the_second_stream_around_golfs_kernel(mamba_interpreted, monkeypatch):
    """scan_impl "mamba_keep_golf_overlap"'s backward with stand-in streams (the interpreter has no CUDA): the second
    stream waits for this one before golf's dCB / ddA kernel runs on it into buffers made here, and this stream waits
    for it before anything reads them; the gradients equal the in-turn path's bit for bit."""
    from contextlib import contextmanager

    events = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_stream(self, other):
            events.append(f"{self.name} waits {other.name}")

    main, side = Stream("main"), Stream("side")
    current = [main]

    @contextmanager
    def on(stream):
        current.append(stream)
        yield
        current.pop()

    monkeypatch.setattr(mixer_op, "_side_stream", lambda device: side)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", on)
    golf = mixer_op.golf_dcb_kernels()["golf_dcb_ddA"]

    def dcb_ddA(*args, out=None):
        events.append(f"dcb_ddA on {current[-1].name} into {'given' if out is not None else 'its own'} buffers")
        return golf(*args, out=out)

    fns = mixer_op.ssd_parts(mamba_interpreted["ssd_module"]) | mixer_op.golf_xy_kernels()
    parts = mixer_op._keep_parts(fns, "mamba_keep_golf_overlap", "bwd")
    real_bmm = parts["_bmm_chunk_bwd"]

    def bmm_chunk_bwd(*args, **kwargs):  # the first reader of dCB
        events.append("dCB read")
        return real_bmm(*args, **kwargs)

    parts["_bmm_chunk_bwd"] = bmm_chunk_bwd
    gen = torch.Generator().manual_seed(5)
    x, dt, A, B, C, D, dt_bias, L = _scan_inputs(gen)
    _, *kept = mixer_op._scan_fwd_keep(mixer_op._keep_parts(fns, "mamba_keep_golf_overlap", "fwd"), x, dt, A, B, C,
                                       D, dt_bias, L, read_kept=True)
    dy = torch.randn(x.shape, generator=gen)
    grads = {}
    for overlap in (False, True):
        events.clear()
        outs = [torch.empty_like(v) for v in (x, dt, B, C)]
        rest = mixer_op._scan_bwd_keep(parts, dy, x, dt, A, B, C, D, dt_bias, kept, *outs, dcb_ddA, "dA",
                                       read_kept=True, overlap=overlap)
        grads[overlap] = (*outs, *rest)
        if overlap:
            assert events == ["side waits main", "dcb_ddA on side into given buffers", "main waits side", "dCB read",
                              "dCB read"]
        else:
            assert events == ["dcb_ddA on main into its own buffers", "dCB read", "dCB read"]
    for a, r in zip(grads[True], grads[False]):
        assert torch.equal(a, r)


def test_the_core_op_keeps_the_same_result_in_the_interpreter(mamba_interpreted):
    """golf::mamba_core's CUDA glue end to end with mamba-ssm's real scan kernels (the conv and norm are
    tests/test_ssm_opaque.py's stand-ins): scan_impl "mamba_keep" gives scan_impl "mamba"'s outputs and every
    gradient, bit for bit, in fp32."""
    m = mamba_interpreted
    fns = dict(STAND_INS) | {"scan_fwd": m["scan_fwd"], "scan_bwd": m["scan_bwd"]} | mixer_op.ssd_parts(
        m["ssd_module"])
    args = [a.float() for a in _core_args(pad=4, t=37)]
    outs = {impl: mixer_op.mamba_core_cuda(fns, *args, HEADDIM, NGROUPS, 16, EPS, "mamba", impl)
            for impl in ("mamba", "mamba_keep")}
    for a, r in zip(outs["mamba_keep"][:4], outs["mamba"][:4]):
        assert torch.equal(a, r)
    dout = torch.randn(outs["mamba"][0].shape, generator=torch.Generator().manual_seed(3))
    grads = {impl: mixer_op.mamba_core_bwd_cuda(fns, dout, *args, *outs[impl][1:], HEADDIM, NGROUPS, 16, EPS, "mamba",
                                                impl) for impl in ("mamba", "mamba_keep")}
    for name, a, r in zip(("zxbcdt", "conv_w", "conv_b", "dt_bias", "A", "D", "norm_w"), grads["mamba_keep"],
                          grads["mamba"]):
        assert torch.equal(a, r), name
    # golf's chunk-backward kernel in the op's glue: the same gradients to fp32 rounding
    fns |= mixer_op.golf_dcb_kernels()
    for impl in ("mamba_keep_dA", "mamba_keep_dx", "mamba_keep_chunk"):
        got = mixer_op.mamba_core_bwd_cuda(fns, dout, *args, *outs["mamba_keep"][1:], HEADDIM, NGROUPS, 16, EPS,
                                           "mamba", impl)
        for name, a, r in zip(("zxbcdt", "conv_w", "conv_b", "dt_bias", "A", "D", "norm_w"), got, grads["mamba"]):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"{impl}: {name}")
    # golf's y and dx kernels too ("mamba_keep_xy"), and golf's state passes ("mamba_keep_xy_pass"; with the
    # states in x's dtype, fp32 here, "mamba_keep_xy_pass_bf16"), and golf's dt-gradient kernel
    # ("mamba_keep_xy_pass_bf16_dt"), with the passes reading the kept dA_cumsum and dt ("mamba_keep_golf"): every
    # output and gradient to fp32 rounding
    fns |= mixer_op.golf_xy_kernels()
    for impl in ("mamba_keep_xy", "mamba_keep_xy_pass", *mixer_op.STATES_IN_X_DTYPE):
        xy = mixer_op.mamba_core_cuda(fns, *args, HEADDIM, NGROUPS, 16, EPS, "mamba", impl)
        for name, a, r in zip(("out", "xBC", "y", "rstd", "dA_cumsum", "dt", "states", "CB"), xy,
                              outs["mamba_keep"]):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"{impl}: {name}")
        got = mixer_op.mamba_core_bwd_cuda(fns, dout, *args, *xy[1:], HEADDIM, NGROUPS, 16, EPS, "mamba", impl)
        for name, a, r in zip(("zxbcdt", "conv_w", "conv_b", "dt_bias", "A", "D", "norm_w"), got, grads["mamba"]):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=f"{impl}: {name}")


# --------------------------------------------------------------------------------------------------
# The model compiled as one graph, and the backend choice
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernels", [CORE, CORE_KEEP], ids=["mamba", "mamba_keep"])
def test_hybrid_model_on_the_core_op_compiles_as_one_graph(kernels):
    """A small hybrid with every mixer on golf::mamba_core (in_proj padded) compiles with fullgraph=True (one graph:
    no break at the op) and gives the reference model's loss, gradients and carried-state outputs."""
    assert_compiled_model_matches_reference(kernels, in_proj_multiple=8)


def test_fused_opaque_binds_the_core_op(fake_libraries):  # noqa: F811 (the fixture)
    k = resolve_ssm_backend("fused", "cuda", "opaque", "kernel")
    assert (k.path, k.fused, k.scan, k.conv, k.norm) == ("fused", mixer_op.fused, ssm_ops.scan, ssm_ops.conv,
                                                          ssm_ops.norm)
    assert k.label == "fused+opaque"
    assert {"conv_fwd", "conv_bwd", "scan_fwd", "scan_bwd", "norm_fwd", "norm_bwd"} <= set(ssm_ops._CUDA)
    assert {*mixer_op._bound_keys("fwd", "mamba", "mamba"), *mixer_op._bound_keys("bwd", "mamba", "mamba")} <= set(
        ssm_ops._CUDA)  # what the op's CUDA kernels will ask for
    assert resolve_ssm_backend("fused", "cuda", "trace", "kernel").label == "fused"  # mamba-ssm's own op


def test_golf_norm_binds_golf_kernels_in_the_core_op_only(fake_libraries):  # noqa: F811
    pytest.importorskip("triton", reason="triton is not installed: golf's norm kernels need it")
    k = resolve_ssm_backend("fused", "cuda", "opaque", "golf")
    assert k.fused.keywords == {"norm_impl": "golf", "scan_impl": "mamba"} and k.label == "fused+golf_norm+opaque"
    assert {"golf_norm_fwd", "golf_norm_bwd"} <= set(ssm_ops._CUDA)
    assert {*mixer_op._bound_keys("fwd", "golf", "mamba"), *mixer_op._bound_keys("bwd", "golf", "mamba")} <= set(
        ssm_ops._CUDA)
    for backend, mode in (("fused", "trace"), ("triton", "opaque"), ("auto", "opaque")):
        with pytest.raises(GolfError, match="gated_norm 'golf' runs golf's norm kernels inside golf::mamba_core"):
            resolve_ssm_backend(backend, "cuda", mode, "golf")


def test_mamba_keep_binds_the_ssd_parts_in_the_core_op_only(fake_libraries):  # noqa: F811
    fake_libraries["ssd_module"] = types.SimpleNamespace(**{name: object() for name in mixer_op.SSD_PARTS})
    k = resolve_ssm_backend("fused", "cuda", "opaque", "kernel", "mamba_keep")
    assert k.fused.keywords == {"norm_impl": "mamba", "scan_impl": "mamba_keep"}
    assert k.label == "fused+keep_states+opaque" and k.scan is ssm_ops.scan  # carried-state calls: the plain scan
    assert set(ssm_ops._CUDA["ssd_parts"]) == set(mixer_op.SSD_PARTS)
    assert {*mixer_op._bound_keys("fwd", "mamba", "mamba_keep"), *mixer_op._bound_keys("bwd", "mamba", "mamba_keep")
            } <= set(ssm_ops._CUDA)
    for backend, mode in (("fused", "trace"), ("triton", "opaque"), ("auto", "opaque")):
        with pytest.raises(GolfError, match="mamba_keep"):
            resolve_ssm_backend(backend, "cuda", mode, "kernel", "mamba_keep")
    del fake_libraries["ssd_module"]._chunk_scan_bwd_dcb
    with pytest.raises(GolfError, match=r"SSD pieces by name \(_chunk_scan_bwd_dcb missing"):
        resolve_ssm_backend("fused", "cuda", "opaque", "kernel", "mamba_keep")


@pytest.mark.parametrize("scan,key,label", [("mamba_keep_dA", "golf_dcb_ddA", "golf_dA"),
                                            ("mamba_keep_dx", "golf_chunk_bwd", "golf_dx"),
                                            ("mamba_keep_chunk", "golf_chunk_bwd", "golf_chunk"),
                                            ("mamba_keep_xy", "golf_dcb_ddA", "golf_xy"),
                                            ("mamba_keep_xy_pass", "golf_dcb_ddA", "golf_xy_pass"),
                                            ("mamba_keep_xy_pass_bf16", "golf_dcb_ddA", "golf_xy_pass_bf16"),
                                            ("mamba_keep_xy_pass_bf16_dt", "golf_dcb_ddA", "golf_xy_pass_bf16_dt"),
                                            ("mamba_keep_golf", "golf_dcb_ddA", "golf_ssd"),
                                            ("mamba_keep_golf_overlap", "golf_dcb_ddA", "golf_ssd_overlap")])
def test_golf_chunk_bwd_binds_beside_the_ssd_parts(fake_libraries, scan, key, label):  # noqa: F811
    pytest.importorskip("triton", reason="triton is not installed: golf's kernel needs it")
    fake_libraries["ssd_module"] = types.SimpleNamespace(**{name: object() for name in mixer_op.SSD_PARTS})
    k = resolve_ssm_backend("fused", "cuda", "opaque", "golf", scan)
    assert k.fused.keywords == {"norm_impl": "golf", "scan_impl": scan}
    assert k.label == f"fused+golf_norm+keep_states+{label}+opaque"
    assert key in mixer_op._bound_keys("bwd", "golf", scan) and key not in mixer_op._bound_keys("fwd", "golf", scan)
    assert {*mixer_op._bound_keys("fwd", "golf", scan), *mixer_op._bound_keys("bwd", "golf", scan)} <= set(
        ssm_ops._CUDA)
    with pytest.raises(GolfError, match=f"'{scan}' keeps the SSD forward's internals"):
        resolve_ssm_backend("triton", "cuda", "opaque", "kernel", scan)


@pytest.mark.parametrize("scan,fwd_swaps,bwd_swaps", [
    ("mamba_keep_xy", {"_chunk_scan_fwd"}, {"_chunk_scan_chunk_state_bwd_dx"}),
    ("mamba_keep_xy_pass", {"_chunk_scan_fwd", "golf_chunk_states"},
     {"_chunk_scan_chunk_state_bwd_dx", "golf_chunk_state_grads"}),
    ("mamba_keep_xy_pass_bf16", {"_chunk_scan_fwd", "golf_chunk_states"},
     {"_chunk_scan_chunk_state_bwd_dx", "golf_chunk_state_grads"}),
    ("mamba_keep_xy_pass_bf16_dt", {"_chunk_scan_fwd", "golf_chunk_states"},
     {"_chunk_scan_chunk_state_bwd_dx", "golf_chunk_state_grads", "golf_dt_grads"}),
    ("mamba_keep_golf", {"_chunk_scan_fwd", "golf_chunk_states"},
     {"_chunk_scan_chunk_state_bwd_dx", "golf_chunk_state_grads", "golf_dt_grads"})])
def test_golf_xy_kernels_bind_in_place_of_ssd_parts(fake_libraries, scan, fwd_swaps, bwd_swaps):  # noqa: F811
    """model.ssm_scan "mamba_keep_xy": golf's y kernel bound for the forward, its dx kernel for the backward, each
    standing in for the one mamba-ssm piece it replaces in what the op's kernels call; "mamba_keep_xy_pass" adds
    golf's two state passes under their own names (the glue calls them in place of two mamba-ssm pieces each),
    "mamba_keep_xy_pass_bf16" the same, and "mamba_keep_xy_pass_bf16_dt" golf's dt-gradient kernel too; every other
    impl keeps mamba-ssm's pieces."""
    pytest.importorskip("triton", reason="triton is not installed: golf's kernels need it")
    fake_libraries["ssd_module"] = types.SimpleNamespace(**{name: object() for name in mixer_op.SSD_PARTS})
    resolve_ssm_backend("fused", "cuda", "opaque", "golf", scan)
    fwd, bwd = (mixer_op._bound_keys(way, "golf", scan) for way in ("fwd", "bwd"))
    assert "golf_chunk_y" in fwd and "golf_chunk_dx" in bwd and "golf_chunk_dx" not in fwd
    fns = {k: ssm_ops._CUDA[k] for k in {*fwd, *bwd}}
    parts = {way: mixer_op._keep_parts(fns, scan, way) for way in ("fwd", "bwd")}
    assert parts["fwd"]["_chunk_scan_fwd"] is fns["golf_chunk_y"]
    assert parts["bwd"]["_chunk_scan_chunk_state_bwd_dx"] is fns["golf_chunk_dx"]
    mamba = fake_libraries["ssd_module"]
    for way, swaps in (("fwd", fwd_swaps), ("bwd", bwd_swaps)):
        assert {name for name, fn in parts[way].items() if fn is not getattr(mamba, name, None)} == swaps
        assert mixer_op._keep_parts(fns, "mamba_keep_dA", way) == fns["ssd_parts"]


def test_the_side_stream_is_for_cuda_only():
    """model.ssm_scan "mamba_keep_golf_overlap" off CUDA (the tests' stand-ins, the interpreter): no second stream,
    so the backward runs its kernels in turn (the interpreter test above checks that path's gradients)."""
    assert mixer_op._side_stream(torch.device("cpu")) is None
    assert "mamba_keep_golf_overlap" in mixer_op.OVERLAP_DCB and set(mixer_op.OVERLAP_DCB) <= set(
        mixer_op.PASSES_READ_KEPT)


def test_golf_xy_kernels_are_called_as_mamba_ssms_pieces():
    """golf_xy_kernels' functions take the arguments golf.mixer_op passes mamba-ssm's _chunk_scan_fwd and
    _chunk_scan_chunk_state_bwd_dx, and return what those return (y with out_x None; dx, ddt, dD), equal to golf's
    twins in fp64 (the kernels in Triton's interpreter here)."""
    pytest.importorskip("triton", reason="triton is not installed: golf's kernels need it")
    from golf import ssd_xy_kernel as xk

    if not xk.interpreted() and not torch.cuda.is_available():
        pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: Triton's kernels cannot run here")
    device = "cpu" if xk.interpreted() else "cuda"
    fns = mixer_op.golf_xy_kernels()
    gen = torch.Generator().manual_seed(4)
    x, dt, A, B, C, D, dt_bias, L = (v.double().to(device) if torch.is_tensor(v) else v for v in _scan_inputs(gen))
    dA_cumsum, dt_sp, states, CB = mixer_op._scan_internals_reference(x, dt, A, B, C, dt_bias, L)
    y, out_x = fns["golf_chunk_y"](CB, x, dt_sp, dA_cumsum, C, states, D=D)
    assert out_x is None
    torch.testing.assert_close(y, xk.chunk_y_reference(CB, x, dt_sp, dA_cumsum, C, states, D), rtol=1e-12,
                               atol=1e-12)
    dy, dstates = torch.randn_like(x), torch.randn_like(states)
    dx = torch.empty_like(x)
    got = fns["golf_chunk_dx"](x, dt_sp, dA_cumsum, B, CB, dy, dstates, D=D, dx=dx)
    assert got[0] is dx
    for a, r in zip(got, xk.chunk_dx_reference(x, dt_sp, dA_cumsum, B, CB, dy, dstates, D)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_golf_conv_binds_in_the_core_op(fake_libraries, monkeypatch):  # noqa: F811
    """model.ssm_conv "golf" under the fused op: golf's conv kernels inside golf::mamba_core and in the carried-state
    pieces beside it, with no causal-conv1d needed; mamba-ssm's own fused op refuses it."""
    pytest.importorskip("triton", reason="triton is not installed: golf's conv kernels need it")
    fake_libraries["ssd_module"] = types.SimpleNamespace(**{name: object() for name in mixer_op.SSD_PARTS})
    monkeypatch.setattr(ssm, "_import_causal_conv1d", lambda: None)
    monkeypatch.setattr(ssm, "_import_causal_conv1d_ops", lambda: None)
    k = resolve_ssm_backend("fused", "cuda", "opaque", "golf", "mamba_keep_dA", "golf")
    assert k.fused.keywords == {"norm_impl": "golf", "scan_impl": "mamba_keep_dA", "conv_impl": "golf"}
    assert k.label == "fused+golf_norm+keep_states+golf_dA+golf_conv+opaque" and k.conv is ssm_ops.conv_golf
    keys = {*mixer_op._bound_keys("fwd", "golf", "mamba_keep_dA", "golf"),
            *mixer_op._bound_keys("bwd", "golf", "mamba_keep_dA", "golf")}
    assert {"golf_conv_fwd", "golf_conv_bwd"} <= keys <= set(ssm_ops._CUDA) and "conv_bwd" not in keys
    from golf.doctor import _conv_why

    assert _conv_why(k.label)[0] == "golf (inside golf::mamba_core)"
    with pytest.raises(GolfError, match="model.ssm_conv 'golf' does not apply to model.ssm_backend 'fused' outside "
                                        "ssm_compile 'opaque'"):
        resolve_ssm_backend("fused", "cuda", "trace", "kernel", "mamba", "golf")


def test_fused_opaque_needs_the_conv_functions(fake_libraries, monkeypatch):  # noqa: F811
    monkeypatch.setattr(ssm, "_import_causal_conv1d_ops", lambda: None)
    with pytest.raises(GolfError, match="calls causal-conv1d's cpp_functions"):
        resolve_ssm_backend("fused", "cuda", "opaque")


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with mamba-ssm and causal-conv1d)
# --------------------------------------------------------------------------------------------------


def _cuda_core(gated_norm="kernel", scan="mamba", conv="causal_conv1d") -> SSMKernels:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    try:
        return resolve_ssm_backend("fused", "cuda", "opaque", gated_norm, scan, conv)
    except GolfError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("scan_impl", ["mamba", "mamba_keep"])
@pytest.mark.parametrize("norm_impl", ["mamba", "golf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("i", range(2))
def test_opcheck_on_gpu(i, dtype, norm_impl, scan_impl):
    _cuda_core("kernel" if norm_impl == "mamba" else "golf", scan_impl)
    tol = 1e-3 if dtype == torch.float32 else 3e-2  # AOT vs eager runs of kernels with atomic adds
    torch.library.opcheck(*_flat(_opcheck_cases("cuda", dtype, norm_impl, scan_impl)[i]), rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("scan", ["mamba", "mamba_keep"])
@pytest.mark.parametrize("gated_norm", ["kernel", "golf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("multiple", [1, 64])
@pytest.mark.parametrize("compiled", [True, False])
def test_core_mixer_matches_reference_on_gpu(gated_norm, dtype, multiple, compiled, scan):
    kernels = _cuda_core(gated_norm, scan)
    ref, op = gpu_mixer_pair(kernels, multiple)
    torch._dynamo.reset()
    run = torch.compile(op, fullgraph=True) if compiled else op
    assert_gpu_mixer_matches_reference(ref, op, run, dtype)
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("scan", ["mamba_keep_dA", "mamba_keep_xy", "mamba_keep_xy_pass", "mamba_keep_xy_pass_bf16",
                                  "mamba_keep_xy_pass_bf16_dt", "mamba_keep_golf", "mamba_keep_golf_overlap"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("compiled", [True, False])
def test_core_mixer_with_golf_conv_matches_reference_on_gpu(dtype, compiled, scan):
    """hybrid_12_b131k's op settings with golf's conv kernels (model.ssm_conv "golf") inside, padded in_proj; with
    golf's chunk-backward kernel, with its y and dx kernels too, with its state passes as well, with the states kept
    in bf16 and with its dt-gradient kernel."""
    kernels = _cuda_core("golf", scan, "golf")
    ref, op = gpu_mixer_pair(kernels, 64)
    torch._dynamo.reset()
    run = torch.compile(op, fullgraph=True) if compiled else op
    assert_gpu_mixer_matches_reference(ref, op, run, dtype)
    torch._dynamo.reset()
