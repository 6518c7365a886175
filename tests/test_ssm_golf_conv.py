"""model.ssm_conv "golf": golf's own Triton causal conv1d + SiLU kernels (golf/conv_kernel.py) as the triton
path's conv, under every model.ssm_compile mode. On CPU the kernels run in Triton's interpreter
(tests/conftest.py): the setting's config and backend choice (with stand-ins for mamba-ssm and causal-conv1d, as
tests/test_ssm_opaque.py does), the mixer with golf's conv against the reference path in float64 (outputs and
every gradient), the conv ops' CUDA kernels with kernel "golf" against the ops' CPU kernels (values, dtypes,
strides), and the opaque mixer, eager and compiled as one graph, with golf's kernels running inside the ops. Not
on a CPU: Dynamo tracing into golf's Triton launches (ssm_compile "trace" compiled), and the GPU-marked test at
the end (on a CUDA machine with mamba-ssm: the mixer in every mode against the reference)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import test_ssm_opaque
import torch
from test_ssm import _mixer, _out_and_grads, assert_gpu_mixer_matches_reference, gpu_mixer_pair
from test_ssm_golf_scan import (
    _assert_like,
    _assert_mixer_matches_reference,
    assert_opaque_mixer_compiles_with_golf,
)

from golf import ssm_ops
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import GolfLM
from golf.ssm import SSMKernels, resolve_ssm_backend

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
F64 = torch.float64
fake_libraries = test_ssm_opaque.fake_libraries  # the fixture: mamba-ssm and causal-conv1d as stand-ins


# --------------------------------------------------------------------------------------------------
# The backend choice (the setting's config, its reference-path and fused-path rules: tests/test_ssm_golf_scan.py,
# parametrized over model.ssm_scan and model.ssm_conv)
# --------------------------------------------------------------------------------------------------


def _is_golf_conv_fn(conv, ck) -> bool:
    return conv.func is ssm_ops.conv_golf_fn and conv.args == (ck.causal_conv1d_silu,)


@pytest.mark.parametrize("mode", ["disable", "trace"])
def test_triton_path_runs_golfs_conv_and_its_label_says_so(fake_libraries, ck, mode):
    k = resolve_ssm_backend("triton", "cuda", mode, "kernel", conv="golf")
    assert _is_golf_conv_fn(k.conv, ck) and k.conv_kernel == "golf" and k.compile_mode == mode
    assert k.scan is fake_libraries["scan"] and k.norm is fake_libraries["norm"]
    assert k.label == "triton+golf_conv"
    assert resolve_ssm_backend("auto", "cuda", mode, "torch", "mamba", "golf").label == "triton+golf_conv+torch_norm"
    both = resolve_ssm_backend("triton", "cuda", mode, "kernel", "golf", "golf")
    assert both.label == "triton+golf_scan+golf_conv" and _is_golf_conv_fn(both.conv, ck)
    default = resolve_ssm_backend("triton", "cuda", mode)  # the default is unchanged
    assert default.conv_kernel == "causal_conv1d" and default.label == "triton+causal_conv1d"


def test_golf_conv_needs_no_causal_conv1d(fake_libraries, ck, monkeypatch):
    """Where causal-conv1d is missing the default falls back to PyTorch's conv; golf's is set all the same."""
    monkeypatch.setattr("golf.ssm._import_causal_conv1d", lambda: None)
    monkeypatch.setattr("golf.ssm._import_causal_conv1d_ops", lambda: None)
    assert resolve_ssm_backend("triton", "cuda").label == "triton"
    assert resolve_ssm_backend("triton", "cuda", "trace", conv="golf").label == "triton+golf_conv"
    k = resolve_ssm_backend("triton", "cuda", "opaque", conv="golf")
    assert k.conv is ssm_ops.conv_golf and k.label == "triton+golf_conv+opaque"


def test_opaque_binds_golfs_kernels_to_the_conv_ops(fake_libraries, ck):
    """The conv ops' CUDA kernels get golf's forward and backward under their own keys; causal-conv1d's
    functions are not bound (nor needed)."""
    k = resolve_ssm_backend("auto", "cuda", "opaque", "kernel", conv="golf")
    assert (k.scan, k.norm, k.conv) == (ssm_ops.scan, ssm_ops.norm, ssm_ops.conv_golf)
    assert k.conv_kernel == "golf" and k.label == "triton+golf_conv+opaque"
    assert ssm_ops._CUDA["golf_conv_fwd"] is ck.conv_fwd and ssm_ops._CUDA["golf_conv_bwd"] is ck.conv_bwd
    assert "conv_fwd" not in ssm_ops._CUDA and "conv_bwd" not in ssm_ops._CUDA
    assert resolve_ssm_backend("triton", "cuda", "opaque", "torch", "golf", "golf").label == \
        "triton+golf_scan+golf_conv+torch_norm+opaque"
    assert resolve_ssm_backend("triton", "cuda", "opaque").label == "triton+causal_conv1d+opaque"  # unchanged


def test_the_model_and_doctor_record_the_golf_conv(fake_libraries, ck):
    """GolfLM passes model.ssm_conv to the resolver; its kernel_paths (train metrics and provenance) name it,
    and `golf doctor`'s conv row reads it from that label."""
    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="MM", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, bigram_buckets=0, bigram_dim=0, ssm_backend="triton", ssm_conv="golf")
    model = GolfLM(cfg, "cuda")  # built on the CPU; only the resolver is asked about CUDA
    assert model.kernel_paths == {"ssm": "triton+golf_conv", "attn": "none"}
    assert all(_is_golf_conv_fn(b.mixer.kernels.conv, ck) for b in model.blocks)
    from golf.doctor import _conv_why

    assert _conv_why("triton+golf_scan+golf_conv+opaque")[0] == "golf"
    assert _conv_why("triton+causal_conv1d")[0] == "causal_conv1d"
    assert _conv_why("fused+golf_norm+opaque")[0] == "causal_conv1d (inside golf::mamba_core)"  # golf/mixer_op.py
    assert _conv_why("fused+golf_norm+golf_conv+opaque")[0] == "golf (inside golf::mamba_core)"
    assert _conv_why("fused")[0] == "causal_conv1d (inside the fused op)"  # mamba-ssm's


def test_golf_conv_without_its_kernels_is_one_clear_error(fake_libraries, monkeypatch):
    """As where triton is missing (golf.conv_kernel fails to import): never causal-conv1d's conv instead."""
    monkeypatch.setitem(sys.modules, "golf.conv_kernel", None)
    for mode in ("disable", "trace", "opaque"):
        with pytest.raises(GolfError, match="model.ssm_conv is 'golf' but golf's Triton conv kernels do not import "
                                            "here") as e:
            resolve_ssm_backend("triton", "cuda", mode, conv="golf")
        assert "pip install triton" in str(e.value) and "\n" not in str(e.value)
    assert resolve_ssm_backend("triton", "cuda").label == "triton+causal_conv1d"  # the default needs no golf kernels


def test_golfs_conv_calls_refuse_other_activations(ck):
    x, w, b = torch.randn(1, 8, 5, dtype=F64), torch.randn(8, 4, dtype=F64), torch.randn(8, dtype=F64)
    fn = ssm_ops.golf_conv_kernels()["conv"]
    torch.testing.assert_close(fn(x, w, b, activation="silu"), ck.causal_conv1d_silu(x, w, b), rtol=0, atol=0)
    for call in (fn, ssm_ops.conv_golf, ssm_ops.conv):
        for activation in (None, "relu"):
            with pytest.raises(ValueError, match=f"applies SiLU: pass activation='silu', got {activation!r}"):
                call(x, w, b, activation=activation)
    with pytest.raises(ValueError, match=r"kernel must be one of \['causal_conv1d', 'golf'\], got 'triton'"):
        ssm_ops.conv(x, w, b, activation="silu", kernel="triton")


# --------------------------------------------------------------------------------------------------
# The mixer with golf's conv (disable / trace: golf.conv_kernel.causal_conv1d_silu called as the conv)
# --------------------------------------------------------------------------------------------------


def _golf_conv_kernels(mode):
    """The triton path with golf's conv and PyTorch's scan and norm (scan, norm None), as resolved."""
    return SSMKernels("triton", conv=ssm_ops.golf_conv_kernels()["conv"], compile_mode=mode, conv_kernel="golf")


@pytest.mark.parametrize("mode", ["disable", "trace"])
def test_mixer_with_golfs_conv_matches_reference(ck, device, mode):
    ref = _mixer().to(device)
    fast = _mixer(kernels=_golf_conv_kernels(mode)).to(device)
    fast.load_state_dict(ref.state_dict())
    _assert_mixer_matches_reference(ref, fast, device)


def test_mixer_passes_xbc_to_golfs_conv_in_place(ck, device):
    """golf's kernels take any strides: xBC goes in as its view of in_proj's output (row stride 84, which
    causal-conv1d's path copies out), and in fp32 the output is within rounding of the reference mixer's."""
    seen = []

    def spy(x, weight, bias, activation=None):
        seen.append(x.stride())
        return ssm_ops.conv_golf_fn(ck.causal_conv1d_silu, x, weight, bias, activation)

    ref = _mixer().to(device).float()
    fast = _mixer(kernels=SSMKernels("triton", conv=spy, conv_kernel="golf")).to(device).float()
    fast.load_state_dict(ref.state_dict())
    u = torch.randn(2, 27, 16, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
    y_ref, g_ref = _out_and_grads(ref, u)
    y, g = _out_and_grads(fast, u)
    assert seen == [(27 * 84, 1, 84)] and fast.d_in_proj == 84
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip([("input", None), *ref.named_parameters()], g, g_ref):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------------
# opaque: the conv ops' CUDA kernels with golf's functions, against the ops' CPU kernels (golf's reference)
# --------------------------------------------------------------------------------------------------


def _conv_args(device, dtype=F64, wdtype=None, row=56):
    """x as the mixer passes it (a channel-last slice of a wider row), weight (C, 4), bias, dout."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 19, row, generator=gen, dtype=F64)[..., 3:51].transpose(1, 2)  # (B, 48, T), non-dense
    w, b = torch.randn(48, 4, generator=gen, dtype=F64) / 2, 0.5 * torch.randn(48, generator=gen, dtype=F64)
    dout = torch.randn(2, 19, 48, generator=gen, dtype=F64).transpose(1, 2)
    wdtype = wdtype or dtype
    return x.to(device, dtype), w.to(device, wdtype), b.to(device, wdtype), dout.to(device, dtype)


@pytest.fixture
def golf_bound(ck, monkeypatch):
    monkeypatch.setattr(ssm_ops, "_CUDA", {"golf_conv_fwd": ck.conv_fwd, "golf_conv_bwd": ck.conv_bwd})


@pytest.mark.parametrize("dtype, wdtype, tol", [(F64, F64, 1e-12), (torch.float32, torch.float32, 1e-5),
                                                (torch.bfloat16, torch.float32, 1e-2)], ids=["fp64", "fp32", "bf16"])
def test_conv_ops_cuda_kernels_run_golfs_functions(golf_bound, device, dtype, wdtype, tol):
    """kernel "golf": output channel-last in x's dtype, gradients in their inputs' dtypes (bf16 x with fp32
    parameters, as under autocast), with the strides the CPU kernels (and the fake kernels) give."""
    x, w, b, dout = _conv_args(device, dtype, wdtype)
    got = ssm_ops._causal_conv1d_silu_cuda(x, w, b, "golf")
    want = torch.ops.golf.causal_conv1d_silu(x.cpu(), w.cpu(), b.cpu())
    assert got.stride() == (19 * 48, 1, 48)
    _assert_like(got.cpu(), want, tol, "out")
    got = ssm_ops._causal_conv1d_silu_bwd_cuda(x, w, b, dout, "golf")
    want = torch.ops.golf.causal_conv1d_silu_bwd(x.cpu(), w.cpu(), b.cpu(), dout.cpu())
    assert [g.dtype for g in got] == [dtype, wdtype, wdtype]
    for name, a, c in zip(["dx", "dweight", "dbias"], got, want):
        _assert_like(a.cpu(), c, tol, name)


def test_conv_ops_cuda_kernels_dispatch_on_kernel(golf_bound, device):
    """causal-conv1d's functions are not bound here: kernel "causal_conv1d" asks for them; others are refused."""
    x, w, b, dout = _conv_args(device)
    with pytest.raises(RuntimeError, match="need 'conv_fwd'"):
        ssm_ops._causal_conv1d_silu_cuda(x, w, b, "causal_conv1d")
    with pytest.raises(RuntimeError, match="need 'conv_bwd'"):
        ssm_ops._causal_conv1d_silu_bwd_cuda(x, w, b, dout, "causal_conv1d")
    with pytest.raises(ValueError, match=r"kernel must be one of \['causal_conv1d', 'golf'\], got 'mamba'"):
        ssm_ops._causal_conv1d_silu_cuda(x, w, b, "mamba")
    with pytest.raises(ValueError, match="kernel must be one of"):
        ssm_ops._causal_conv1d_silu_bwd_cuda(x, w, b, dout, "mamba")


# --------------------------------------------------------------------------------------------------
# opaque: the mixer with golf's kernels inside the conv ops
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def golf_in_the_conv_ops(golf_bound, device, monkeypatch):
    """The conv ops run their CUDA kernels with golf's functions bound. On a CPU, where the ops' CPU kernels are
    the reference, those CUDA kernels stand in for them (the ops' table of device kernels, restored after the
    test), so that golf's kernels run inside the ops in the interpreter."""
    calls = []  # (op, its kernel argument) per call on a CPU
    if device == "cpu":
        for op, kernel in ((ssm_ops.causal_conv1d_silu, ssm_ops._causal_conv1d_silu_cuda),
                           (ssm_ops.causal_conv1d_silu_bwd, ssm_ops._causal_conv1d_silu_bwd_cuda)):
            monkeypatch.setitem(op._backend_fns, "cpu",
                                lambda *a, _op=op, _k=kernel, **kw: calls.append((_op, a[-1])) or _k(*a, **kw))
    return calls


OPAQUE_GOLF_CONV = SSMKernels("triton", conv=ssm_ops.conv_golf, compile_mode="opaque", conv_kernel="golf")
GOLF_CALLS = {(ssm_ops.causal_conv1d_silu, "golf"), (ssm_ops.causal_conv1d_silu_bwd, "golf")}


def test_opaque_mixer_runs_golfs_conv_in_the_ops(golf_in_the_conv_ops, device):
    ref = _mixer().to(device)
    op = _mixer(kernels=OPAQUE_GOLF_CONV).to(device)
    op.load_state_dict(ref.state_dict())
    _assert_mixer_matches_reference(ref, op, device)
    if device == "cpu":  # forward and backward went through the CUDA kernels, each call with kernel "golf"
        assert set(golf_in_the_conv_ops) == GOLF_CALLS


def test_opaque_mixer_with_golf_conv_compiles_as_one_graph(golf_in_the_conv_ops, device):
    """The conv ops: golf.causal_conv1d_silu forward, its _bwd backward (assert_opaque_mixer_compiles_with_golf)."""
    assert_opaque_mixer_compiles_with_golf(OPAQUE_GOLF_CONV, device, ("golf.causal_conv1d_silu.default",
                                                                      "golf.causal_conv1d_silu_bwd.default"))
    if device == "cpu":
        assert set(golf_in_the_conv_ops) == GOLF_CALLS


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with mamba-ssm)
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("mode, compiled", [("disable", False), ("disable", True), ("trace", True),
                                            ("opaque", False), ("opaque", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_golf_conv_mixer_matches_reference_on_gpu(mode, compiled, dtype):
    """The production mixer shape (headdim 64, d_state 32, chunk 64, in_proj padded to 64) with golf's conv in
    each model.ssm_compile mode; compiled as one graph under "opaque", with graph breaks allowed otherwise."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    try:
        kernels = resolve_ssm_backend("triton", "cuda", mode, "kernel", "mamba", "golf")
    except GolfError as e:
        pytest.skip(str(e))
    assert "+golf_conv" in kernels.label
    ref, fast = gpu_mixer_pair(kernels)
    torch._dynamo.reset()
    run = torch.compile(fast, fullgraph=mode == "opaque") if compiled else fast
    assert_gpu_mixer_matches_reference(ref, fast, run, dtype)
    torch._dynamo.reset()
