"""The Mamba-2 mixer: chunked SSD vs a naive recurrence, the whole mixer vs a step-by-step version, carried
state, fp32 dynamics under a bf16 cast, the kernel choice, the fast-path glue (with CPU stand-ins that follow
mamba-ssm's / causal-conv1d's signatures) and, on a CUDA machine, the real kernels vs the reference."""

import logging
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import golf.model
from golf import ssm
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.param_groups import MAMBA_DYNAMICS
from golf.ssm import (
    Mamba2Mixer,
    SSMKernels,
    gated_rms_norm_reference,
    resolve_ssm_backend,
    ssd_reference,
)

F64 = torch.float64


def _ssd_inputs(seed, b=2, l=37, h=4, p=3, g=2, n=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=F64)
    dt = torch.rand(b, l, h, generator=gen, dtype=F64)
    A = -torch.rand(h, generator=gen, dtype=F64) * 2
    B = torch.randn(b, l, g, n, generator=gen, dtype=F64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=F64)
    s0 = torch.randn(b, h, p, n, generator=gen, dtype=F64)
    return x, dt, A, B, C, s0


def ssd_naive(x, dt, A, B, C, initial_state=None):
    """Step-by-step recurrence (slow): the oracle for the chunked scan. Shapes as in ssd_reference."""
    b, l, h, p = x.shape
    g = B.shape[2]
    B = B.repeat_interleave(h // g, dim=2)
    C = C.repeat_interleave(h // g, dim=2)
    state = initial_state if initial_state is not None else x.new_zeros(b, h, p, B.shape[-1])
    ys = []
    for t in range(l):
        da = torch.exp(dt[:, t] * A)  # (b, h)
        state = state * da[..., None, None] + torch.einsum("bhp,bhn->bhpn", x[:, t] * dt[:, t, :, None], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("chunk", [1, 4, 8, 16, 64])  # 37 tokens: never a multiple of the chunk (but 1)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_ssd_matches_naive_recurrence(chunk, with_state):
    x, dt, A, B, C, s0 = _ssd_inputs(chunk)
    init = s0 if with_state else None
    y, fin = ssd_reference(x, dt, A, B, C, chunk, init)
    y2, fin2 = ssd_naive(x, dt, A, B, C, init)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fin, fin2, rtol=1e-10, atol=1e-10)


def _mixer(ngroups=2, d_conv=4, seed=0, **kw):
    torch.manual_seed(seed)
    m = Mamba2Mixer(16, 4, d_conv, 2.0, 8, ngroups, 8, **kw).double()  # d_inner 32, 4 heads, conv_dim 48
    for p in m.parameters():  # non-trivial values everywhere (out_proj is not zero-initialized here)
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=0.3)
    with torch.no_grad():
        m.D.uniform_(0.5, 1.5)
        m.norm_weight.uniform_(0.5, 1.5)
        m.conv1d.bias.normal_(std=0.3)
    return m


def naive_mixer(m: Mamba2Mixer, u: torch.Tensor) -> torch.Tensor:
    """The mixer written out token by token from its definition (module docstring of golf/ssm.py)."""
    b, T, _ = u.shape
    H, P, G, N, W = m.nheads, m.headdim, m.ngroups, m.d_state, m.d_conv
    zxbcdt = u @ m.in_proj.weight.T
    z, xBC, dt = zxbcdt.split([m.d_inner, m.conv_dim, H], dim=-1)
    w = m.conv1d.weight[:, 0, :]  # (conv_dim, W); tap W-1 multiplies the current token
    conv = torch.zeros_like(xBC)
    for t in range(T):
        for j in range(W):
            if t - (W - 1 - j) >= 0:
                conv[:, t] += w[:, j] * xBC[:, t - (W - 1 - j)]
    xBC = F.silu(conv + m.conv1d.bias)
    x, Bm, Cm = xBC.split([m.d_inner, G * N, G * N], dim=-1)
    A = -torch.exp(m.A_log)
    dts = F.softplus(dt + m.dt_bias)  # (b, T, H)
    state = u.new_zeros(b, H, P, N)
    ys = []
    for t in range(T):
        xt = x[:, t].reshape(b, H, P)
        Bt = Bm[:, t].reshape(b, G, N).repeat_interleave(H // G, dim=1)  # head h reads group h // (H/G)
        Ct = Cm[:, t].reshape(b, G, N).repeat_interleave(H // G, dim=1)
        state = state * torch.exp(dts[:, t] * A)[..., None, None] + (dts[:, t, :, None] * xt)[..., None] * Bt[:, :, None]
        ys.append((state * Ct[:, :, None]).sum(-1) + m.D[:, None] * xt)  # (b, H, P)
    y = torch.stack(ys, 1).reshape(b, T, -1) * F.silu(z)
    yg = y.reshape(b, T, G, -1)
    y = (yg / torch.sqrt(yg.pow(2).mean(-1, keepdim=True) + ssm.NORM_EPS)).reshape(b, T, -1) * m.norm_weight
    return y @ m.out_proj.weight.T


@pytest.mark.parametrize("ngroups,d_conv", [(1, 4), (2, 4), (2, 2)])
def test_reference_mixer_matches_step_by_step_definition(ngroups, d_conv):
    m = _mixer(ngroups, d_conv)
    u = torch.randn(2, 21, 16, dtype=F64)
    torch.testing.assert_close(m(u), naive_mixer(m, u), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("split", [1, 2, 8, 13, 28])  # 1, 2 < d_conv - 1: the conv state spans both windows
def test_mixer_state_carry_equals_one_pass(split):
    m = _mixer()
    u = torch.randn(2, 29, 16, dtype=F64)
    full = m(u)
    a, st = m(u[:, :split], return_state=True)
    assert st[0].shape == (2, m.conv_dim, 3) and st[1].shape == (2, m.nheads, m.headdim, m.d_state)
    b = m(u[:, split:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-10, atol=1e-10)
    # three pieces carry the same way
    c1, s1 = m(u[:, :5], return_state=True)
    c2, s2 = m(u[:, 5:17], state=s1, return_state=True)
    c3 = m(u[:, 17:], state=s2)
    torch.testing.assert_close(torch.cat([c1, c2, c3], 1), full, rtol=1e-10, atol=1e-10)


def test_dynamics_stay_fp32_when_the_mixer_is_cast_to_bf16():
    torch.manual_seed(0)
    m = Mamba2Mixer(32, 8, 4, 2.0, 16, 1, 8)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    m.bfloat16()
    for n, p in m.named_parameters():
        if n in MAMBA_DYNAMICS:
            assert p.dtype == torch.float32, n
            assert torch.equal(p, before[n]), n  # restored bit for bit, never rounded through bf16
        else:
            assert p.dtype == torch.bfloat16, n
    u = torch.randn(2, 20, 32)
    with torch.no_grad():
        y16 = m(u.bfloat16())
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16.float()).all()
    m.double()  # a cast up is not blocked
    assert all(p.dtype == F64 for p in m.parameters())


def test_gated_norm_is_per_group():
    y, z = torch.randn(3, 8, dtype=F64), torch.randn(3, 8, dtype=F64)
    w = torch.ones(8, dtype=F64)
    two = gated_rms_norm_reference(y, z, w, ngroups=2)
    g = (y * F.silu(z))[:, :4]
    torch.testing.assert_close(two[:, :4], g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + ssm.NORM_EPS))
    assert not torch.allclose(two, gated_rms_norm_reference(y, z, w, ngroups=1))


def test_backend_choice_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the kernels")
    assert resolve_ssm_backend("auto", "cpu") == SSMKernels()
    assert resolve_ssm_backend("reference", "cpu").label == "reference"
    with pytest.raises(GolfError, match="ssm_backend is 'triton'"):
        resolve_ssm_backend("triton", "cpu")
    with pytest.raises(GolfError, match="ssm_backend is 'fused'"):
        resolve_ssm_backend("fused", "cpu")


# --------------------------------------------------------------------------------------------------
# The narrow import of mamba-ssm's Triton modules
# --------------------------------------------------------------------------------------------------


def _fake_mamba(root, init_error: str):
    pkg = root / "mamba_ssm"
    (pkg / "ops" / "triton").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise ImportError({init_error!r})\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "ssd_combined.py").write_text(textwrap.dedent("""
        def mamba_chunk_scan_combined(*a, **k): return "scan"
        def mamba_split_conv1d_scan_combined(*a, **k): return "fused"
    """))
    (pkg / "ops" / "triton" / "layernorm_gated.py").write_text("def rmsnorm_fn(*a, **k): return 'norm'\n")


@pytest.fixture
def clean_mamba_modules(monkeypatch, tmp_path):
    saved = {k: v for k, v in sys.modules.items() if k == "mamba_ssm" or k.startswith("mamba_ssm.")}
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for k in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
        del sys.modules[k]
    sys.modules.update(saved)


def test_triton_modules_import_without_the_package_init(clean_mamba_modules):
    # mamba-ssm <= 2.3.2.post1 without its CUDA extension: the package __init__ fails on selective_scan_cuda
    _fake_mamba(clean_mamba_modules, "No module named 'selective_scan_cuda'")
    fns = ssm._import_mamba_triton()
    assert fns is not None and fns["scan"]() == "scan" and fns["fused"]() == "fused" and fns["norm"]() == "norm"


def test_other_mamba_import_errors_mean_not_available(clean_mamba_modules, caplog):
    _fake_mamba(clean_mamba_modules, "No module named 'einops'")
    with caplog.at_level(logging.WARNING, logger="golf.ssm"):
        assert ssm._import_mamba_triton() is None
    assert "einops" in caplog.text


# --------------------------------------------------------------------------------------------------
# Fast-path glue, checked on CPU with stand-ins that follow the libraries' documented signatures
# --------------------------------------------------------------------------------------------------


def stand_in_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                  cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    """mamba_chunk_scan_combined's contract: softplus(dt + dt_bias), scan, + D x, output in x's dtype."""
    assert z is None and seq_idx is None and A.shape == (x.shape[2],) and D.shape == (x.shape[2],)
    dt = dt + dt_bias
    dt = F.softplus(dt) if dt_softplus else dt
    y, fin = ssd_reference(x, dt, A, B, C, chunk_size, initial_states)
    y = (y + x * D[:, None]).to(x.dtype)
    return (y, fin) if return_final_states else y


def stand_in_norm(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """layernorm_gated.rmsnorm_fn with norm_before_gate=False: RMSNorm(x * silu(z)) per group."""
    assert bias is None and not norm_before_gate
    return gated_rms_norm_reference(x, z, weight, x.shape[-1] // group_size, eps)


def stand_in_conv(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                  final_states_out=None, activation=None):
    """causal_conv1d_fn: x (B, C, T); channel-last input needs strides divisible by 8 (the real check)."""
    assert weight.ndim == 2 and activation == "silu"
    if x.stride(1) == 1:
        assert x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "causal_conv1d channel-last stride check"
    W = weight.shape[1]
    return F.silu(F.conv1d(F.pad(x, (W - 1, 0)), weight[:, None], bias, groups=x.shape[1]))


def stand_in_fused(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=None,
                   seq_idx=None, dt_limit=(0.0, float("inf")), return_final_states=False, activation="silu",
                   rmsnorm_weight=None, rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None,
                   ngroups=1, norm_before_gate=True):
    """mamba_split_conv1d_scan_combined: zxbcdt = [z, xBC, dt] (no extra MLP part), norm, optional out_proj."""
    H = A.shape[0]
    dim = H * headdim
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    z, xBC, dt = zxbcdt.split([dim, dim + 2 * ngroups * dstate, H], dim=-1)
    xBC = stand_in_conv(xBC.contiguous().transpose(1, 2), conv1d_weight, conv1d_bias,
                        activation=activation).transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    b, T = x.shape[:2]
    y = stand_in_scan(x.reshape(b, T, H, headdim), dt, A, B.reshape(b, T, ngroups, dstate),
                      C.reshape(b, T, ngroups, dstate), chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)
    y = stand_in_norm(y.reshape(b, T, dim), rmsnorm_weight, None, z=z, eps=rmsnorm_eps,
                      group_size=dim // ngroups, norm_before_gate=norm_before_gate)
    return y if outproj_weight is None else F.linear(y, outproj_weight, outproj_bias)


def _out_and_grads(m, u):
    """m(u) and the gradients of sum(m(u)²) w.r.t. u and every parameter of m, in named_parameters order."""
    y = m(u)
    return y, torch.autograd.grad(y.square().sum(), [u, *m.parameters()])


@pytest.mark.parametrize("kernels", [
    SSMKernels("triton", stand_in_scan, stand_in_norm),
    SSMKernels("triton", stand_in_scan, stand_in_norm, stand_in_conv),
    SSMKernels("fused", stand_in_scan, stand_in_norm, stand_in_conv, stand_in_fused),
], ids=["triton", "triton+causal_conv1d", "fused"])
def test_fast_path_glue_matches_reference(kernels):
    ref = _mixer()
    fast = _mixer(kernels=kernels)
    fast.load_state_dict(ref.state_dict())
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    y_ref, g_ref = _out_and_grads(ref, u)
    y_fast, g_fast = _out_and_grads(fast, u)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    a, st = fast(u[:, :11], return_state=True)  # stateful calls take the unfused pieces
    b = fast(u[:, 11:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), y_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("levers", [{}, {"xsa": True, "smear_gate": True, "ln_scale": True, "rope_dims": 4,
                                        "mlp_act": "leaky_relu2", "mamba_mlp_mult": 2.0}], ids=["plain", "levers"])
@pytest.mark.parametrize("in_proj_multiple", [1, 8], ids=["xBC_copied", "xBC_in_place"])
def test_traced_hybrid_model_is_one_graph(monkeypatch, in_proj_multiple, levers):
    """A whole hybrid model (Mamba and attention blocks, U-Net skips, BigramHash; then with every architecture
    lever on) under ssm_compile "trace" with traceable stand-in kernels: Dynamo captures the forward and the
    loss as one graph, with QAT off and on. Before, a padded in_proj broke it at every Mamba layer (10 graphs for
    hybrid_seed_fit on 2026-11-30)."""
    kernels = SSMKernels("triton", stand_in_scan, stand_in_norm, stand_in_conv, compile_mode="trace")
    monkeypatch.setattr(golf.model, "resolve_ssm_backend", lambda *args, **kwargs: kernels)
    cfg = ModelConfig(vocab_size=300, d_model=32, layer_pattern="MMAMMA", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, num_heads=2, num_kv_heads=1, bigram_buckets=64, bigram_dim=8,
                      in_proj_multiple=in_proj_multiple, **levers)
    m = golf.model.GolfLM(cfg).double()
    m.kernel_paths = {**m.kernel_paths, "ssm": "reference"}  # the stand-ins run on the CPU
    ids = torch.randint(0, 300, (2, 24))
    for qat in (False, True):
        m.set_qat(qat, 6)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(m)(ids, targets=ids)
        assert explained.graph_count == 1 and explained.graph_break_count == 0, (qat, explained.break_reasons)


@pytest.mark.parametrize("multiple,in_place", [(1, False), (8, True), (64, True)])
def test_xbc_goes_to_causal_conv1d_in_place_only_when_aligned(multiple, in_place):
    """causal-conv1d reads xBC where in_proj wrote it when the row stride and xBC's start are multiples of 8
    (in_proj padded), and gets a contiguous copy otherwise (row stride 84 unpadded)."""
    seen = []

    def recording_conv(x, *args, **kwargs):
        seen.append((x.stride(2), x.untyped_storage().data_ptr()))
        return stand_in_conv(x, *args, **kwargs)

    m = _mixer(kernels=SSMKernels("triton", stand_in_scan, stand_in_norm, recording_conv),
               in_proj_multiple=multiple)
    u = torch.randn(2, 27, 16, dtype=F64)
    zxbcdt = m.in_proj(u)
    m._mix(zxbcdt, -torch.exp(m.A_log), None, False)
    (row_stride, storage), = seen
    assert (storage == zxbcdt.untyped_storage().data_ptr()) == in_place
    assert row_stride == (zxbcdt.shape[-1] if in_place else m.conv_dim)


@pytest.mark.parametrize("multiple", [8, 64])
@pytest.mark.parametrize("kernels", [
    SSMKernels(),
    SSMKernels("triton", stand_in_scan, stand_in_norm, stand_in_conv),
    SSMKernels("fused", stand_in_scan, stand_in_norm, stand_in_conv, stand_in_fused),
], ids=["reference", "triton+causal_conv1d", "fused"])
def test_padded_in_proj_is_the_same_mixer(kernels, multiple):
    plain = _mixer(kernels=kernels)
    padded = _mixer(kernels=kernels, in_proj_multiple=multiple)
    n = plain.d_in_proj  # 2*32 + 2*2*4 + 4 = 84
    assert padded.in_proj.weight.shape == (-(-n // multiple) * multiple, 16) and padded.in_proj_pad > 0
    with torch.no_grad():
        for (name, p), q in zip(plain.named_parameters(), padded.parameters()):
            q.zero_()
            q[:n].copy_(p) if name == "in_proj.weight" else q.copy_(p)
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    y, g = _out_and_grads(plain, u)
    # with multiple 8 the stand-in conv's stride check passes on xBC in place (row stride 88)
    y_pad, g_pad = _out_and_grads(padded, u)
    torch.testing.assert_close(y_pad, y, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip([("input", None), *plain.named_parameters()], g_pad, g):
        if name == "in_proj.weight":
            assert torch.count_nonzero(a[n:]) == 0  # the padding rows get exactly no gradient
            a = a[:n]
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    a, st = padded(u[:, :11], return_state=True)
    b = padded(u[:, 11:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_proj_multiple", [1, 8], ids=["xBC_copied", "xBC_in_place"])
@pytest.mark.parametrize("mode,graphs", [("disable", "several"), ("trace", "one")])
def test_ssm_compile_mode_keeps_kernels_out_of_the_graph_or_traces_them(mode, graphs, in_proj_multiple):
    """model.ssm_compile with traceable stand-in kernels: "disable" breaks the graph at every kernel call,
    "trace" compiles the mixer as one graph; both give the eager output and gradients exactly. With in_proj
    padded to a multiple of 8, xBC goes to the conv in place, and deciding that must not break the graph
    (Tensor.storage_offset() did, once per Mamba layer: H200, 2026-11-30)."""
    kernels = SSMKernels("triton", stand_in_scan, stand_in_norm, stand_in_conv, compile_mode=mode)
    m = _mixer(kernels=kernels, in_proj_multiple=in_proj_multiple)
    u = torch.randn(2, 27, 16, dtype=F64, requires_grad=True)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(u)
    if graphs == "one":
        assert explained.graph_count == 1 and explained.graph_break_count == 0
    else:
        assert explained.graph_break_count >= 3  # conv, scan, norm
    torch._dynamo.reset()
    y, g = _out_and_grads(torch.compile(m, backend="aot_eager"), u)  # the compiled module shares m's parameters
    y_eager, g_eager = _out_and_grads(m, u)
    torch.testing.assert_close(y, y_eager, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_ssm_compile_mode_is_checked():
    with pytest.raises(GolfError, match="ssm_compile"):
        resolve_ssm_backend("auto", "cpu", "fullgraph")
    with pytest.raises(GolfError, match="model.gated_norm must be one of"):
        resolve_ssm_backend("auto", "cpu", "disable", "apex")


def test_gated_norm_torch_leaves_the_triton_path_without_a_norm_kernel(monkeypatch):
    """With stand-ins for mamba-ssm and causal-conv1d (so this runs on CPU): gated_norm "torch" keeps the
    Triton scan and drops only the norm kernel, the label says so, and the fused path refuses it."""
    fake = {"scan": object(), "norm": object(), "fused": object()}
    conv = object()
    monkeypatch.setattr(ssm, "_import_mamba_triton", lambda: fake)
    monkeypatch.setattr(ssm, "_import_causal_conv1d", lambda: conv)
    kernel = resolve_ssm_backend("triton", "cuda", "trace", "kernel")
    torch_norm = resolve_ssm_backend("triton", "cuda", "trace", "torch")
    assert kernel.norm is fake["norm"] and kernel.label == "triton+causal_conv1d"
    assert torch_norm.norm is None and torch_norm.scan is fake["scan"] and torch_norm.conv is conv
    assert torch_norm.label == "triton+causal_conv1d+torch_norm"
    assert resolve_ssm_backend("fused", "cuda", "trace", "kernel").fused is fake["fused"]
    with pytest.raises(GolfError, match="gated_norm 'torch' does not apply to model.ssm_backend 'fused'"):
        resolve_ssm_backend("fused", "cuda", "trace", "torch")


def test_padded_in_proj_starts_at_zero_in_the_model():
    from golf.config import ModelConfig
    from golf.model import build_model

    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="MA", d_state=8, expand=2.0, headdim=16,
                      chunk_size=8, num_heads=2, num_kv_heads=1, bigram_buckets=0, bigram_dim=0,
                      in_proj_multiple=64, ssm_backend="reference")
    w = build_model(cfg, "cpu").blocks[0].mixer.in_proj.weight  # 2*64 + 2*8 + 4 = 148 rows → 192
    assert w.shape == (192, 32) and torch.count_nonzero(w[148:]) == 0 and torch.count_nonzero(w[:148]) > 0


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with mamba-ssm)
# --------------------------------------------------------------------------------------------------


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("path, gated_norm", [("triton", "kernel"), ("fused", "kernel"), ("triton", "torch")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("multiple", [1, 64])  # 64: padded in_proj, xBC passed to causal-conv1d in place
def test_fast_kernels_match_reference_on_gpu(path, gated_norm, dtype, multiple):
    try:
        kernels = resolve_ssm_backend(path, "cuda", gated_norm=gated_norm)
    except GolfError as e:
        pytest.skip(str(e))
    ref, fast = gpu_mixer_pair(kernels, multiple)
    assert_gpu_mixer_matches_reference(ref, fast, fast, dtype)


def gpu_mixer_pair(kernels: SSMKernels, in_proj_multiple: int = 64) -> tuple[Mamba2Mixer, Mamba2Mixer]:
    """(reference, fast): the production mixer shape (d_model 256 here, d_state 32, expand 1.5, headdim 64, chunk
    64) on CUDA, on the reference path and on `kernels`, with the same weights (out_proj non-zero)."""
    torch.manual_seed(0)
    ref = Mamba2Mixer(256, 32, 4, 1.5, 64, 1, 64, in_proj_multiple=in_proj_multiple).cuda()
    fast = Mamba2Mixer(256, 32, 4, 1.5, 64, 1, 64, kernels=kernels, in_proj_multiple=in_proj_multiple).cuda()
    torch.nn.init.normal_(ref.out_proj.weight, std=0.02)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def assert_gpu_mixer_matches_reference(ref: Mamba2Mixer, fast: Mamba2Mixer, run, dtype: torch.dtype) -> None:
    """`fast` (same weights as `ref`, run through `run`: itself or a compiled wrapper) against the reference
    mixer on CUDA: output, input gradient and every parameter's gradient of mean(y²), under bf16 autocast when
    dtype is bfloat16; then a window run in two pieces with carried state against one pass."""
    u = torch.randn(2, 300, 256, device="cuda")
    res = {}
    for name, m, call in (("ref", ref, ref), ("fast", fast, run)):
        x = u.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = call(x)
        y.float().square().mean().backward()
        res[name] = (y.detach(), x.grad, {n: p.grad.clone() for n, p in m.named_parameters()})
    tol = 2e-3 if dtype == torch.float32 else 3e-2
    assert _rel(res["fast"][0], res["ref"][0]) < tol
    assert _rel(res["fast"][1], res["ref"][1]) < tol
    for n in ("in_proj.weight", "out_proj.weight", "A_log", "dt_bias", "D", "conv1d.weight", "norm_weight"):
        assert _rel(res["fast"][2][n], res["ref"][2][n]) < 5 * tol, n
    with torch.no_grad():  # carried state on the fast path
        full = fast(u)
        a, st = fast(u[:, :137], return_state=True)
        b = fast(u[:, 137:], state=st)
    assert _rel(torch.cat([a, b], 1), full) < 1e-3


def test_autotune_choices_are_read_from_loaded_mamba_modules(monkeypatch):
    """Autotuner-like objects (a `configs` list, a filled `cache` dict) in mamba-ssm's Triton modules are
    reported once each, with key and config as text; untouched kernels and other modules are left out."""
    import types

    class FakeAutotuner:
        def __init__(self, cache):
            self.configs, self.cache = ["c1", "c2"], cache

    class FakeConfig:
        def __str__(self):
            return "BLOCK_SIZE_M: 64, num_warps: 4, num_stages: 3"

    ran = FakeAutotuner({(2048, 64, "torch.bfloat16"): FakeConfig()})
    scan = types.ModuleType("mamba_ssm.ops.triton.ssd_chunk_scan")
    scan._chunk_scan_fwd_kernel = ran
    scan._chunk_scan_bwd_dx_kernel = FakeAutotuner({})  # never launched: no choice to report
    scan.helper = object()
    combined = types.ModuleType("mamba_ssm.ops.triton.ssd_combined")
    combined._chunk_scan_fwd_kernel = ran  # imported from the module above: the same kernel
    other = types.ModuleType("some_other_lib")
    other.kernel = FakeAutotuner({1: "x"})
    for m in (scan, combined, other):
        monkeypatch.setitem(sys.modules, m.__name__, m)
    assert ssm.ssm_autotune_choices() == {
        "mamba_ssm.ops.triton.ssd_chunk_scan._chunk_scan_fwd_kernel":
            {"(2048, 64, 'torch.bfloat16')": "BLOCK_SIZE_M: 64, num_warps: 4, num_stages: 3"}}
