"""model.ssm_scan "golf": golf's own Triton SSD kernels (golf/ssd_kernel.py) as the triton path's scan, under
every model.ssm_compile mode. On CPU the kernels run in Triton's interpreter (tests/conftest.py): the setting's
config and backend choice (with stand-ins for mamba-ssm and causal-conv1d, as tests/test_ssm_opaque.py does),
the mixer and a small model with golf's scan against the reference path in float64 (outputs, every gradient,
carried state in and out), the opaque ops' adapters against the ops' CPU kernels (values, dtypes, shapes,
strides, the empty tensors), and the opaque mixer, eager and compiled as one graph, with golf's kernels running
inside the ops. Not on a CPU: Dynamo tracing into golf's Triton launches (ssm_compile "trace" compiled; in the
interpreter Dynamo would trace the interpreter itself), and the GPU-marked tests at the end (on a CUDA machine with
mamba-ssm: the mixer in every mode, eager and compiled, bf16 and fp32, against the reference; opcheck of the
scan ops running golf's kernels)."""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import pytest
import test_ssm_opaque
import torch

try:  # golf's kernels need triton; the tests that run them get it through the sk fixture
    import triton
    import triton.language as tl
except ImportError:
    triton = None
from test_ssm import (
    _mixer,
    _out_and_grads,
    assert_gpu_mixer_matches_reference,
    gpu_mixer_pair,
    stand_in_conv,
    stand_in_norm,
)
from test_ssm_opaque import _golf_ops, _opcheck_cases, _scan_args, _tiny_model, compile_capturing_graphs

from golf import ssm_ops
from golf.config import ConfigError, ModelConfig, field_choices, load_params
from golf.errors import GolfError
from golf.model import GolfLM, build_model
from golf.ssm import Mamba2Mixer, SSMKernels, resolve_ssm_backend

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
F64 = torch.float64
fake_libraries = test_ssm_opaque.fake_libraries  # the fixture: mamba-ssm and causal-conv1d as stand-ins


def _golf(sk, **options):
    """golf's kernels as golf.ssm_ops binds them; options (e.g. dot_dtype) go to the forward and backward."""
    return {"scan_fwd": functools.partial(sk.ssd_scan_fwd, **options),
            "scan_bwd": functools.partial(sk.ssd_scan_bwd, **options)}


# --------------------------------------------------------------------------------------------------
# The settings: model.ssm_scan and model.ssm_conv (tests/test_ssm_golf_conv.py), each choosing golf's own kernels
# --------------------------------------------------------------------------------------------------

# (setting, resolve_ssm_backend's keyword, its choices, the libraries' choice: the default)
SETTINGS = [("ssm_scan", "scan", ("mamba", "golf", "golf_split", "mamba_keep", "mamba_keep_dA", "mamba_keep_dx",
                                  "mamba_keep_chunk", "mamba_keep_xy", "mamba_keep_xy_pass", "mamba_keep_xy_pass_bf16",
                                  "mamba_keep_xy_pass_bf16_dt", "mamba_keep_golf", "mamba_keep_golf_overlap"),
             "mamba"),
            ("ssm_conv", "conv", ("causal_conv1d", "golf"), "causal_conv1d")]
SETTING_IDS = ["ssm_scan", "ssm_conv"]


@pytest.mark.parametrize("setting,kw,choices,default", SETTINGS, ids=SETTING_IDS)
def test_the_setting_loads_from_params_and_defaults_to_the_library(setting, kw, choices, default):
    assert field_choices(ModelConfig, setting) == choices
    assert getattr(ModelConfig(), setting) == default and getattr(load_params(PARAMS).model, setting) == default
    assert getattr(load_params(PARAMS, [f"model.{setting}=golf"]).model, setting) == "golf"


@pytest.mark.parametrize("setting,kw,choices,default", SETTINGS, ids=SETTING_IDS)
def test_a_bad_value_is_one_config_error(setting, kw, choices, default):
    with pytest.raises(ConfigError) as e:
        load_params(PARAMS, [f"model.{setting}=fast"])
    msg = str(e.value)
    assert f"'model.{setting}'" in msg and "params.yaml" in msg and f"expected one of {list(choices)}" in msg
    assert "\n" not in msg
    with pytest.raises(GolfError, match=re.escape(f"model.{setting} must be one of {list(choices)}, got 'fast'")):
        resolve_ssm_backend("auto", "cpu", **{kw: "fast"})  # direct callers bypass the config


@pytest.mark.parametrize("setting,kw,choices,default", SETTINGS, ids=SETTING_IDS)
def test_golf_kernels_have_no_effect_on_the_reference_path(setting, kw, choices, default):
    assert resolve_ssm_backend("reference", "cuda", **{kw: "golf"}) == SSMKernels()
    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="MA", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, num_heads=2, num_kv_heads=1, bigram_buckets=0, bigram_dim=0,
                      ssm_backend="reference", **{setting: "golf"})
    assert build_model(cfg, "cpu").kernel_paths["ssm"] == "reference"
    if not torch.cuda.is_available():  # "auto" on a CPU: the reference path, the setting inert
        assert resolve_ssm_backend("auto", "cpu", "opaque", **{kw: "golf"}) == SSMKernels()


@pytest.mark.parametrize("setting,kw,choices,default", SETTINGS, ids=SETTING_IDS)
def test_fused_with_golf_kernels_is_refused_everywhere(setting, kw, choices, default):
    """Before any import probe: the same one line on a CPU, from the model and from `golf doctor`."""
    refusal = f"model.{setting} 'golf' does not apply to model.ssm_backend 'fused'"
    with pytest.raises(GolfError, match=refusal) as e:
        resolve_ssm_backend("fused", "cpu", **{kw: "golf"})
    assert "\n" not in str(e.value) and f"{setting} '{default}'" in str(e.value)
    with pytest.raises(GolfError, match=refusal):
        build_model(ModelConfig(ssm_backend="fused", **{setting: "golf"}), "cpu")
    from golf.doctor import diagnose

    diag = diagnose(load_params(PARAMS, ["model.ssm_backend=fused", f"model.{setting}=golf", "train.device=cpu"]))
    [choice] = [p for p in diag.paths if p.part == "ssm"]
    assert choice.path == "error" and refusal in choice.why


# --------------------------------------------------------------------------------------------------
# The backend choice
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["disable", "trace"])
def test_triton_path_runs_golfs_scan_and_its_label_says_so(fake_libraries, sk, mode):
    k = resolve_ssm_backend("triton", "cuda", mode, "kernel", "golf")
    assert k.scan is sk.ssd_scan and k.norm is fake_libraries["norm"] and k.compile_mode == mode
    assert k.label == "triton+golf_scan+causal_conv1d"
    torch_norm = resolve_ssm_backend("auto", "cuda", mode, "torch", "golf")
    assert torch_norm.scan is sk.ssd_scan and torch_norm.label == "triton+golf_scan+causal_conv1d+torch_norm"
    mamba = resolve_ssm_backend("triton", "cuda", mode)  # the default is unchanged
    assert mamba.scan is fake_libraries["scan"] and mamba.label == "triton+causal_conv1d"


def test_opaque_binds_golfs_kernels_to_the_scan_ops(fake_libraries, sk):
    """The scan ops' CUDA kernels get golf's forward and backward; mamba-ssm's scan functions are not needed
    (its norm functions still are, for gated_norm "kernel")."""
    del fake_libraries["scan_fwd"], fake_libraries["scan_bwd"]
    k = resolve_ssm_backend("auto", "cuda", "opaque", "kernel", "golf")
    assert (k.scan, k.norm, k.conv) == (ssm_ops.scan_golf, ssm_ops.norm, ssm_ops.conv)
    assert k.label == "triton+golf_scan+causal_conv1d+opaque"
    assert ssm_ops._CUDA["golf_scan_fwd"] is sk.ssd_scan_fwd and ssm_ops._CUDA["golf_scan_bwd"] is sk.ssd_scan_bwd
    assert "scan_fwd" not in ssm_ops._CUDA
    assert resolve_ssm_backend("triton", "cuda", "opaque", "torch", "golf").label == \
        "triton+golf_scan+causal_conv1d+torch_norm+opaque"


def test_golf_split_runs_the_split_backward_on_every_mode_beside_the_walk(fake_libraries, sk):
    """model.ssm_scan "golf_split": ssd_kernel's fwd="split" and bwd="split"; under opaque they are bound under
    their own keys, so a model built with "golf" in the same process keeps the walks."""
    k = resolve_ssm_backend("triton", "cuda", "trace", "kernel", "golf_split")
    assert k.scan.func is sk.ssd_scan and k.scan.keywords == {"fwd": "split", "bwd": "split"}
    assert k.label == "triton+golf_split_scan+causal_conv1d"
    walk = resolve_ssm_backend("auto", "cuda", "opaque", "kernel", "golf")
    split = resolve_ssm_backend("auto", "cuda", "opaque", "kernel", "golf_split")
    assert (walk.scan, split.scan) == (ssm_ops.scan_golf, ssm_ops.scan_golf_split)
    assert split.label == "triton+golf_split_scan+causal_conv1d+opaque"
    # the walks, still bound after the split's build
    assert ssm_ops._CUDA["golf_scan_fwd"] is sk.ssd_scan_fwd and ssm_ops._CUDA["golf_scan_bwd"] is sk.ssd_scan_bwd
    assert ssm_ops._CUDA["golf_split_scan_fwd"].func is sk.ssd_scan_fwd
    assert ssm_ops._CUDA["golf_split_scan_fwd"].keywords == {"fwd": "split"}
    assert ssm_ops._CUDA["golf_split_scan_bwd"].keywords == {"bwd": "split"}
    with pytest.raises(GolfError, match="model.ssm_scan 'golf_split' does not apply to model.ssm_backend 'fused'"):
        resolve_ssm_backend("fused", "cpu", scan="golf_split")


def test_the_model_records_the_golf_scan_in_its_kernel_paths(fake_libraries, sk):
    """GolfLM passes model.ssm_scan to the resolver; its kernel_paths (train metrics and provenance) name it."""
    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="MM", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, bigram_buckets=0, bigram_dim=0, ssm_backend="triton", ssm_scan="golf")
    model = GolfLM(cfg, "cuda")  # built on the CPU; only the resolver is asked about CUDA
    assert model.kernel_paths == {"ssm": "triton+golf_scan+causal_conv1d", "attn": "none"}
    assert all(b.mixer.kernels.scan is sk.ssd_scan for b in model.blocks)


def test_golf_scan_without_its_kernels_is_one_clear_error(fake_libraries, monkeypatch):
    """As where triton is missing (golf.ssd_kernel fails to import): never the mamba-ssm scan instead."""
    monkeypatch.setitem(sys.modules, "golf.ssd_kernel", None)
    for mode in ("disable", "opaque"):
        with pytest.raises(GolfError, match="model.ssm_scan is 'golf' but golf's Triton scan kernels do not import "
                                            "here") as e:
            resolve_ssm_backend("triton", "cuda", mode, scan="golf")
        assert "pip install triton" in str(e.value) and "\n" not in str(e.value)
    assert resolve_ssm_backend("triton", "cuda").scan is fake_libraries["scan"]  # mamba needs no golf kernels


# --------------------------------------------------------------------------------------------------
# The mixer and a model with golf's scan (disable / trace: golf.ssd_kernel.ssd_scan called as the scan)
# --------------------------------------------------------------------------------------------------


def _golf_kernels(sk, mode, with_conv_and_norm, scan="golf", **options):
    """The triton path with golf's scan as model.ssm_scan `scan` binds it (golf_scan_kernels), options (e.g.
    dot_dtype) passed to it."""
    fn = functools.partial(ssm_ops.golf_scan_kernels(scan)["scan"], **options)
    if with_conv_and_norm:  # the conv and norm as the libraries compute them (tests/test_ssm.py's stand-ins)
        return SSMKernels("triton", fn, stand_in_norm, stand_in_conv, compile_mode=mode, scan_kernel=scan)
    return SSMKernels("triton", fn, compile_mode=mode, scan_kernel=scan)  # PyTorch conv and norm


def _assert_mixer_matches_reference(ref, fast, device):
    """fast (same weights as ref): output and every gradient of one pass, then two windows with the state
    carried (train.carry_state, stateful eval) against one pass: output, final state, and the gradients that
    reach the carried state in and leave through the final state out."""
    u = torch.randn(2, 27, 16, dtype=F64, generator=torch.Generator().manual_seed(1)).to(device).requires_grad_()
    y_ref, g_ref = _out_and_grads(ref, u)
    y, g = _out_and_grads(fast, u)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for (name, _), a, b in zip([("input", None), *ref.named_parameters()], g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
    u = u.detach()
    a, st = fast(u[:, :11], return_state=True)
    assert st[1].dtype == F64 and st[1].shape == (2, fast.nheads, fast.headdim, fast.d_state)
    b, st2 = fast(u[:, 11:], state=st, return_state=True)
    _, st_ref = ref(u, return_state=True)
    torch.testing.assert_close(torch.cat([a, b], 1), y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st2[1], st_ref[1], rtol=1e-10, atol=1e-10)
    grads = []
    for m in (fast, ref):
        conv_s, ssm_s = st[0].detach(), st[1].detach().requires_grad_(True)
        out, (_, final) = m(u[:, 11:], state=(conv_s, ssm_s), return_state=True)
        grads.append(torch.autograd.grad(out.square().sum() + final.square().sum(), ssm_s)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode, libs, scan", [("disable", True, "golf"), ("trace", False, "golf"),
                                              ("trace", True, "golf_split")],
                         ids=["disable+libs", "trace+torch", "golf_split+trace+libs"])
def test_mixer_with_golfs_scan_matches_reference(sk, device, mode, libs, scan):
    """golf_split: the split forward's states kept for the split backward, through a ragged last chunk (T 27,
    chunk 8), with the state carried in and out."""
    ref = _mixer().to(device)
    fast = _mixer(kernels=_golf_kernels(sk, mode, libs, scan)).to(device)
    fast.load_state_dict(ref.state_dict())
    _assert_mixer_matches_reference(ref, fast, device)


@pytest.mark.parametrize("T", [32, 27], ids=["whole_chunks", "ragged"])
@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried_state"])
def test_golf_split_mixer_under_bf16_autocast(sk, device, T, carried):
    """As training runs it: bf16 autocast, headdim and d_state 16, chunk 16, in_proj padded to 64, batch 3;
    T a multiple of the chunk or not; a carried state in (fp32) and the final state out, or neither. Output,
    input, state and every parameter gradient within bf16's rounding of the reference mixer's (fp32 dots: the
    interpreter cannot run bf16 ones)."""
    def mixer(kernels=None):
        torch.manual_seed(0)
        m = Mamba2Mixer(32, 16, 4, 1.5, 16, 1, 16, kernels=kernels, in_proj_multiple=64).to(device)
        torch.nn.init.normal_(m.out_proj.weight, std=0.1)
        return m

    ref = mixer()
    fast = mixer(_golf_kernels(sk, "trace", False, "golf_split", dot_dtype=torch.float32))
    fast.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(T)
    u = torch.randn(3, T, 32, generator=gen)
    state = (torch.randn(3, ref.conv_dim, 3, generator=gen), torch.randn(3, ref.nheads, 16, 16, generator=gen))
    res = {}
    for name, m in (("ref", ref), ("fast", fast)):
        x = u.clone().to(device).requires_grad_(True)
        s0 = state[1].clone().to(device).requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = m(x, state=(state[0].to(device), s0) if carried else None, return_state=carried)
        y, final = (out[0], out[1][1]) if carried else (out, None)
        # golf's final state is fp32 (the reference's einsums run in bf16 under autocast)
        assert y.dtype == torch.bfloat16 and (final is None or m is ref or final.dtype == torch.float32)
        loss = y.float().square().mean() + (final.square().mean() if carried else 0)
        loss.backward()
        res[name] = [y, x.grad, *(p.grad for p in m.parameters())] + ([final, s0.grad] if carried else [])
    names = ["y", "input", *(n for n, _ in ref.named_parameters())] + (["final", "initial_state"] if carried else [])
    for name, a, b in zip(names, res["fast"], res["ref"]):
        assert a.dtype == b.dtype or name == "final", name
        rel = float((a.double() - b.double()).norm() / b.double().norm())
        assert rel < 3e-2, (name, rel)


def test_mixer_with_golfs_scan_in_fp32(sk, device):
    """fp32 throughout (fp32 dots, as on a GPU with dot_dtype unset): within fp32 rounding of the reference."""
    ref = _mixer().to(device).float()
    fast = _mixer(kernels=_golf_kernels(sk, "disable", True)).to(device).float()
    fast.load_state_dict(ref.state_dict())
    u = torch.randn(2, 27, 16, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
    y_ref, g_ref = _out_and_grads(ref, u)
    y, g = _out_and_grads(fast, u)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for (name, _), a, b in zip([("input", None), *ref.named_parameters()], g, g_ref):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_model_with_golfs_scan_matches_reference(sk, device):
    """A small M/A/M model (tests/test_ssm_opaque.py): loss and every parameter's gradient, then the stateful
    eval's carried states through the whole model."""
    ref, fast = _tiny_model(None).to(device), _tiny_model(_golf_kernels(sk, "disable", False)).to(device)
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1)).to(device)
    loss_ref, loss = ref(ids, targets=ids), fast(ids, targets=ids)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    g = torch.autograd.grad(loss, list(fast.parameters()))
    for (name, _), a, b in zip(ref.named_parameters(), g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    with torch.no_grad():
        _, states = fast(ids[:, :10], return_states=True)
        _, states_ref = ref(ids[:, :10], return_states=True)
        torch.testing.assert_close(fast(ids[:, 10:], states=states), ref(ids[:, 10:], states=states_ref),
                                   rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# opaque: the scan ops' adapters for golf's kernels against the ops' CPU kernels (golf's reference)
# --------------------------------------------------------------------------------------------------


def _assert_like(a, b, tol, name):
    """Same dtype, shape and strides (what the fake kernels promise), values within tol."""
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), (name, a.dtype, b.dtype,
                                                                                     a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


GRADS = ["x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state"]


@pytest.mark.parametrize("with_init", [False, True])
@pytest.mark.parametrize("with_final", [False, True])
def test_golf_adapters_match_the_ops_cpu_kernels(sk, device, with_init, with_final):
    """Forward: y and the final state (an empty tensor without return_final_state). Backward from dy and, with
    the final state out, its gradient (None otherwise, as the op's autograd passes it): every gradient, the
    initial state's empty without one."""
    x, dt, A, B, C, D, dt_bias, s0 = _scan_args(p=16, n=16)
    init = s0 if with_init else None
    args = (x, dt, A, B, C, D, dt_bias, init, 8, with_final)
    to = functools.partial(_to, device)
    golf, ref = ssm_ops.ssd_scan_golf(_golf(sk), *to(args)), torch.ops.golf.ssd_scan(*args)
    for name, a, b in zip(["y", "final"], golf, ref):
        _assert_like(a.cpu(), b, 1e-11, name)
    assert golf[1].shape == (s0.shape if with_final else (0,))
    gen = torch.Generator().manual_seed(3)
    dy, dfinal = torch.randn(x.shape, generator=gen, dtype=F64), torch.randn(s0.shape, generator=gen, dtype=F64)
    bwd = (dy, dfinal if with_final else None, x, dt, A, B, C, D, dt_bias, init, ref[0], 8)
    golf, ref = ssm_ops.ssd_scan_bwd_golf(_golf(sk), *to(bwd)), torch.ops.golf.ssd_scan_bwd(*bwd)
    assert len(golf) == 8
    for name, a, b in zip(GRADS, golf, ref):
        _assert_like(a.cpu(), b, 1e-9, name)
    assert (golf[7].numel() == 0) == (not with_init)


def _to(device, tensors):
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in tensors)


def _assert_like_normwise(a, b, tol, name):
    """Same dtype, shape and strides as _assert_like, values within tol of b in norm (relative)."""
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), (name, a.dtype, b.dtype,
                                                                                     a.shape, b.shape)
    rel = float((a.double() - b.double()).norm() / b.double().norm())
    assert rel < tol, (name, rel)


def _assert_adapters_keep_the_ops_dtypes(fns, device, bf16_dots: bool) -> None:
    """test_golf_adapters_keep_the_ops_dtypes_under_bf16_autocast's checks, with golf's functions `fns`.

    With fp32 dots (the interpreter) y is within 3e-2 of the CPU kernel's and the final state within 1e-4,
    elementwise. With bf16 dots (a GPU: tl.dot takes x's dtype) each dot rounds its operands to bf16's 8
    significant bits (unit roundoff 2^-8 = 3.9e-3): the in-chunk weights and the carried state read out into y
    (x, B, C are bf16 inputs already, exact), x * dt * decay into the state. Each term of a sum is then off by up
    to 3.9e-3 of itself, and an entry that is a sum with cancellation by much more than that of its own value,
    so elementwise tolerances that held for fp32 dots (the final state within ~1e-6 there) cannot be met: with
    the dots emulated in the interpreter (test below) y needed rtol = atol = 6.1e-2 and the final state
    1.7e-2. There y and the final state are compared in norm, as the gradients are, within the same 3e-2: the
    emulated run's were 8.1e-3 and 3.3e-3. Dtypes, shapes and strides (what the fake kernels promise) are
    checked exactly either way."""
    x, dt, A, B, C, D, dt_bias, s0 = _scan_args(dtype=torch.float32, p=16, n=16)
    args = (x.bfloat16(), dt.bfloat16(), A, B.bfloat16(), C.bfloat16(), D, dt_bias, s0, 8, True)
    golf, ref = ssm_ops.ssd_scan_golf(fns, *_to(device, args)), torch.ops.golf.ssd_scan(*args)
    assert golf[0].dtype == torch.bfloat16 and golf[1].dtype == torch.float32
    for name, a, b in zip(["y", "final"], golf, ref):
        if bf16_dots:
            _assert_like_normwise(a.cpu(), b, 3e-2, name)
        else:
            _assert_like(a.cpu(), b, 3e-2 if name == "y" else 1e-4, name)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).bfloat16()
    bwd = (dy, None, *args[:8], ref[0], 8)
    golf, ref = ssm_ops.ssd_scan_bwd_golf(fns, *_to(device, bwd)), torch.ops.golf.ssd_scan_bwd(*bwd)
    assert [g.dtype for g in golf] == [t.dtype for t in args[:8]]
    for name, a, b in zip(GRADS, golf, ref):
        _assert_like_normwise(a.cpu(), b, 3e-2, name)


def test_golf_adapters_keep_the_ops_dtypes_under_bf16_autocast(sk, device):
    """As the mixer calls the op under autocast: bf16 x, dt, B, C; fp32 A, D, dt_bias and state. y comes back in
    bf16, the final state in fp32, every gradient in its input's dtype, within bf16 rounding of the CPU kernels.
    fp32 dots in the interpreter, which miscomputes bf16 tl.dot (tests/test_ssd_kernel.py); bf16 dots on a GPU,
    with the tolerances _assert_adapters_keep_the_ops_dtypes derives for them."""
    fns = _golf(sk, dot_dtype=torch.float32) if device == "cpu" else _golf(sk)
    _assert_adapters_keep_the_ops_dtypes(fns, device, bf16_dots=device != "cpu")


if triton is not None:
    @triton.jit
    def _mm_bf16_dots(a, b, ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
        """golf.ssd_kernel._mm as a GPU computes it for bf16 inputs, in the interpreter (whose bf16 tl.dot is
        wrong): the operands rounded to bf16, products and their sums in fp32 (bf16 x bf16 products are exact
        in fp32). Called with DOT fp32 (dot_dtype=torch.float32)."""
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), out_dtype=ACC,
                      input_precision="ieee")


def test_golf_adapters_under_bf16_autocast_with_bf16_dots_emulated(sk, device, monkeypatch):
    """The GPU side of the test above on the CPU: golf's kernels with bf16 dots emulated meet the tolerances
    derived for them; they would fail the fp32 dots' elementwise ones (y first)."""
    if device != "cpu":
        pytest.skip("a GPU runs the real bf16 dots: test_golf_adapters_keep_the_ops_dtypes_under_bf16_autocast")
    monkeypatch.setattr(sk, "_mm", _mm_bf16_dots)
    fns = _golf(sk, dot_dtype=torch.float32)
    _assert_adapters_keep_the_ops_dtypes(fns, device, bf16_dots=True)
    with pytest.raises(AssertionError, match="^y$"):  # assert_close's message: the name
        _assert_adapters_keep_the_ops_dtypes(fns, device, bf16_dots=False)


def test_scan_ops_cuda_kernels_dispatch_on_kernel(sk, device, monkeypatch):
    """The ops' CUDA kernels (called here on CPU tensors) run golf's functions for kernel "golf", mamba-ssm's
    bound ones for "mamba", and refuse anything else."""
    monkeypatch.setattr(ssm_ops, "_CUDA", {"golf_scan_fwd": sk.ssd_scan_fwd, "golf_scan_bwd": sk.ssd_scan_bwd})
    x, dt, A, B, C, D, dt_bias, s0 = _to(device, _scan_args(p=16, n=16))
    args = (x, dt, A, B, C, D, dt_bias, s0, 8, True)
    for a, b in zip(ssm_ops._ssd_scan_cuda(*args, "golf"), ssm_ops.ssd_scan_golf(_golf(sk), *args)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bwd = (torch.ones_like(x), None, x, dt, A, B, C, D, dt_bias, s0, x, 8)
    for a, b in zip(ssm_ops._ssd_scan_bwd_cuda(*bwd, "golf"), ssm_ops.ssd_scan_bwd_golf(_golf(sk), *bwd)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    monkeypatch.setitem(ssm_ops._CUDA, "golf_split_scan_fwd", functools.partial(sk.ssd_scan_fwd, fwd="split"))
    monkeypatch.setitem(ssm_ops._CUDA, "golf_split_scan_bwd", functools.partial(sk.ssd_scan_bwd, bwd="split"))
    split = ssm_ops._ssd_scan_cuda(*args, "golf_split")
    for a, b in zip(split, sk.ssd_scan_fwd(*args[:5], 8, D=D, dt_bias=dt_bias, dt_softplus=True, initial_states=s0,
                                           return_final_states=True, fwd="split")):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    split = ssm_ops._ssd_scan_bwd_cuda(*bwd, "golf_split")
    for a, b in zip(split, sk.ssd_scan_bwd(*bwd[:2], *bwd[2:7], 8, D=D, dt_bias=dt_bias, dt_softplus=True,
                                           initial_states=s0, bwd="split")):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="need 'scan_fwd'"):  # mamba-ssm's, which are not bound here
        ssm_ops._ssd_scan_cuda(*args, "mamba")
    with pytest.raises(RuntimeError, match="need 'scan_bwd'"):
        ssm_ops._ssd_scan_bwd_cuda(*bwd, "mamba")
    with pytest.raises(ValueError, match=r"kernel must be one of \['mamba', 'golf', 'golf_split'\], got 'triton'"):
        ssm_ops._ssd_scan_cuda(*args, "triton")
    with pytest.raises(ValueError, match="kernel must be one of"):
        ssm_ops.scan(x, dt, A, B, C, 8, D=D, dt_bias=dt_bias, dt_softplus=True, kernel="triton")


# --------------------------------------------------------------------------------------------------
# opaque: the mixer with golf's kernels inside the scan ops
# --------------------------------------------------------------------------------------------------


def _opaque_golf(device):
    """The opaque path with golf's scan; the conv and norm ops on a CPU (their CPU kernels are the reference),
    PyTorch's on a GPU (their CUDA kernels would need mamba-ssm and causal-conv1d bound)."""
    cpu = device == "cpu"
    return SSMKernels("triton", ssm_ops.scan_golf, ssm_ops.norm if cpu else None, ssm_ops.conv if cpu else None,
                      compile_mode="opaque", scan_kernel="golf")


@pytest.fixture
def golf_in_the_scan_ops(sk, device, monkeypatch):
    """The scan ops run their CUDA kernels with golf's functions bound. On a CPU, where the ops' CPU kernels are
    the reference, those CUDA kernels stand in for them (the ops' table of device kernels, restored after the
    test), so that golf's kernels run inside the ops in the interpreter."""
    monkeypatch.setattr(ssm_ops, "_CUDA", {"golf_scan_fwd": sk.ssd_scan_fwd, "golf_scan_bwd": sk.ssd_scan_bwd})
    calls = []  # (op, its kernel argument) per call on a CPU
    if device == "cpu":
        for op, kernel in ((ssm_ops.ssd_scan, ssm_ops._ssd_scan_cuda),
                           (ssm_ops.ssd_scan_bwd, ssm_ops._ssd_scan_bwd_cuda)):
            monkeypatch.setitem(op._backend_fns, "cpu",
                                lambda *a, _op=op, _k=kernel, **kw: calls.append((_op, a[-1])) or _k(*a, **kw))
    return calls


def test_opaque_mixer_runs_golfs_kernels_in_the_ops(golf_in_the_scan_ops, device):
    ref = _mixer().to(device)
    op = _mixer(kernels=_opaque_golf(device)).to(device)
    op.load_state_dict(ref.state_dict())
    _assert_mixer_matches_reference(ref, op, device)
    if device == "cpu":  # forward and backward went through the CUDA kernels, each call with kernel "golf"
        assert set(golf_in_the_scan_ops) == {(ssm_ops.ssd_scan, "golf"), (ssm_ops.ssd_scan_bwd, "golf")}


def assert_opaque_mixer_compiles_with_golf(kernels: SSMKernels, device, ops: tuple[str, str]) -> None:
    """fullgraph=True with AOT autograd: the mixer with `kernels` (opaque, golf's kernels bound) compiles to a
    forward graph calling ops[0] with kernel "golf" and a backward graph calling ops[1] with it (the op's
    autograd passes it on), and the compiled output and gradients are the eager reference mixer's."""
    ref = _mixer().to(device)
    op = _mixer(kernels=kernels).to(device)
    op.load_state_dict(ref.state_dict())
    compiled, graphs = compile_capturing_graphs(op)
    u = torch.randn(2, 27, 16, dtype=F64, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_()
    y, g = _out_and_grads(compiled, u)
    y_ref, g_ref = _out_and_grads(ref, u)
    torch._dynamo.reset()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for (name, _), a, b in zip([("input", None), *ref.named_parameters()], g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
    for kind, name in zip(("fw", "bw"), ops):
        [node] = [n for n in graphs[kind].graph.nodes if str(n.target) == name]
        assert node.args[-1] == "golf", (kind, node.args)
        assert name in _golf_ops(graphs[kind])


def test_opaque_mixer_with_golf_compiles_as_one_graph(golf_in_the_scan_ops, device):
    """The scan ops: golf.ssd_scan forward, golf.ssd_scan_bwd backward (assert_opaque_mixer_compiles_with_golf)."""
    assert_opaque_mixer_compiles_with_golf(_opaque_golf(device), device,
                                           ("golf.ssd_scan.default", "golf.ssd_scan_bwd.default"))
    if device == "cpu":
        assert set(golf_in_the_scan_ops) == {(ssm_ops.ssd_scan, "golf"), (ssm_ops.ssd_scan_bwd, "golf")}


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with mamba-ssm)
# --------------------------------------------------------------------------------------------------


def _cuda_golf(mode: str, gated_norm: str = "kernel", scan: str = "golf") -> SSMKernels:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    try:
        return resolve_ssm_backend("triton", "cuda", mode, gated_norm, scan)
    except GolfError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("mode, compiled", [("disable", False), ("disable", True), ("trace", True),
                                            ("opaque", False), ("opaque", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_golf_scan_mixer_matches_reference_on_gpu(mode, compiled, dtype):
    """The production mixer shape (headdim 64, d_state 32, chunk 64, in_proj padded to 64) with golf's scan in
    each model.ssm_compile mode; compiled as one graph under "opaque", with graph breaks allowed otherwise."""
    kernels = _cuda_golf(mode)
    assert kernels.label.startswith("triton+golf_scan")
    ref, fast = gpu_mixer_pair(kernels)
    torch._dynamo.reset()
    run = torch.compile(fast, fullgraph=mode == "opaque") if compiled else fast
    assert_gpu_mixer_matches_reference(ref, fast, run, dtype)
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["trace", "opaque"])
def test_golf_split_mixer_compiled_matches_reference_on_gpu(mode):
    """model.ssm_scan "golf_split" as hybrid_seed_fit trains it (ssm_compile "trace", compiled, bf16 autocast,
    the PyTorch gated norm), and under "opaque" as one graph: the production mixer shape against the reference.
    hybrid_seed_fit's compiled training step with it exited with code 1 on an H200 at c7b76a3, its traceback lost
    (bench/results/2026-11-30_cc7b76a3_golf_kernels_step)."""
    kernels = _cuda_golf(mode, "torch", "golf_split")
    assert kernels.label.startswith("triton+golf_split_scan")
    ref, fast = gpu_mixer_pair(kernels)
    torch._dynamo.reset()
    assert_gpu_mixer_matches_reference(ref, fast, torch.compile(fast, fullgraph=mode == "opaque"), torch.bfloat16)
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("i", range(4))  # tests/test_ssm_opaque.py's cases of golf::ssd_scan and its backward
def test_golf_scan_ops_opcheck_on_gpu(i, dtype):
    """The scan ops' fake kernels against golf's kernels' real outputs (shapes, dtypes, strides)."""
    _cuda_golf("opaque", "torch")
    op, args = _opcheck_cases("cuda", dtype)[i]
    tol = 1e-3 if dtype == torch.float32 else 3e-2  # AOT vs eager runs of kernels with atomic adds
    torch.library.opcheck(op, (*args, "golf"), rtol=tol, atol=tol)
