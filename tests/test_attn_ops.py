"""model.attn_backend "flash4" (golf/attn_ops.py): FlashAttention-4 as the custom ops golf::flash4_attn and
golf::flash4_attn_bwd. On CPU (no CUDA, no FA4 needed): the ops' reference kernels against SDPA (out and the
gradients of q, k, v, GQA with 4 query / 2 KV heads, fp32 and bf16) and lse against torch.logsumexp,
torch.library.opcheck, the CUDA kernels' glue with stand-ins that follow FA4's call contracts, and the op inside
torch.compile(fullgraph=True) (a GQAttention layer and a small attention-only model with the flash4 path forced).
On a CUDA machine with flash-attn-4 (sm_90+): the op against SDPA in bf16, eager, compiled and under CUDA graphs,
and opcheck against the real kernels."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from golf import attn_ops
from golf.attention import GQAttention, resolve_attn_backend
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import build_model
from tests.test_ssm_opaque import _golf_ops, compile_capturing_graphs

F64 = torch.float64
B, T, H, HKV, D = 2, 37, 4, 2, 16  # GQA: query head h reads KV head h // 2


def _qkv(dtype=torch.float32, device="cpu", seed=0, shape=(B, T, H, HKV, D)):
    b, t, h, hkv, d = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, n, d, generator=gen).to(device, dtype) for n in (h, hkv, hkv))
    return q, k, v


def _sdpa(q, k, v):
    """(B, T, H, D): PyTorch SDPA, causal, GQA by enable_gqa, default scale 1/sqrt(D)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                          enable_gqa=True).transpose(1, 2)


def _out_and_grads(fn, q, k, v, dout):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    return out, torch.autograd.grad(out, (q, k, v), dout)


def _rel(a, b):
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _op(q, k, v):
    return attn_ops.flash_attn_func(q, k, v, causal=True)


# --------------------------------------------------------------------------------------------------
# The ops' CPU kernels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_matches_sdpa_values_and_gradients(dtype):
    """fp32: the op and SDPA agree to rounding. bf16: both against SDPA in fp32 on the same bf16 inputs, the op's
    relative error no more than SDPA's own bf16 error allows (the reference computes in fp32, rounds once)."""
    q, k, v = _qkv(dtype)
    dout = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(9)).to(dtype)
    out, grads = _out_and_grads(_op, q, k, v, dout)
    assert out.dtype == dtype and out.shape == (B, T, H, D) and out.is_contiguous()
    assert [g.dtype for g in grads] == [dtype] * 3 and [g.shape for g in grads] == [q.shape, k.shape, v.shape]
    if dtype == torch.float32:
        ref, ref_grads = _out_and_grads(_sdpa, q, k, v, dout)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        for name, a, b in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        return
    ref, ref_grads = _out_and_grads(_sdpa, *(t.float() for t in (q, k, v)), dout.float())
    low, low_grads = _out_and_grads(_sdpa, q, k, v, dout)  # SDPA's own bf16 error, for scale
    assert _rel(out, ref) < max(2 * _rel(low, ref), 5e-3), (_rel(out, ref), _rel(low, ref))
    for name, a, lo, r in zip("qkv", grads, low_grads, ref_grads):
        assert _rel(a, r) < max(2 * _rel(lo, r), 2e-2), (name, _rel(a, r), _rel(lo, r))


def test_lse_is_the_logsumexp_of_the_scaled_masked_scores():
    """Written out per query head h with its KV head h // (H / Hkv): lse (B, H, T) fp32, natural log."""
    q, k, v = _qkv(F64)
    _, lse = torch.ops.golf.flash4_attn(q, k, v)
    assert lse.shape == (B, H, T) and lse.dtype == torch.float32 and lse.is_contiguous()
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for h in range(H):
        s = q[:, :, h] @ k[:, :, h // (H // HKV)].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
        want = torch.logsumexp(s.masked_fill(~mask, float("-inf")), dim=-1)  # (B, T)
        torch.testing.assert_close(lse[:, h], want.float(), rtol=1e-6, atol=1e-6)


def test_lse_is_not_differentiable():
    """The backward op reads lse; no gradient flows back through it (FA4's backward is not asked for dlse)."""
    q, k, v = (t.requires_grad_(True) for t in _qkv())
    out, lse = torch.ops.golf.flash4_attn(q, k, v)
    assert out.requires_grad and not lse.requires_grad


def test_wrapper_refuses_non_causal_attention():
    with pytest.raises(ValueError, match="causal=True"):
        attn_ops.flash_attn_func(*_qkv(), causal=False)


def _opcheck_cases(device="cpu", dtype=F64):
    q, k, v = _qkv(dtype, device, shape=(2, 37, 4, 2, 64) if device == "cuda" else (B, T, H, HKV, D))
    out, lse = torch.ops.golf.flash4_attn(q, k, v)
    dout = torch.randn_like(out)
    return [(torch.ops.golf.flash4_attn.default, tuple(t.clone().requires_grad_(True) for t in (q, k, v))),
            (torch.ops.golf.flash4_attn_bwd.default, (q, k, v, out, lse, dout))]


@pytest.mark.parametrize("dtype", [F64, torch.bfloat16])
@pytest.mark.parametrize("i", range(2))
def test_opcheck(i, dtype):
    """Schema, fake kernels (shapes, dtypes, strides against the CPU kernel), autograd registration and AOT
    dispatch with dynamic shapes, per op."""
    op, args = _opcheck_cases(dtype=dtype)[i]
    torch.library.opcheck(op, args)


# --------------------------------------------------------------------------------------------------
# The CUDA kernels' glue, run on CPU with stand-ins for FA4's functions. Each stand-in follows its original's
# parameter names, return tuple, dtype and shape checks (flash-attn-4 4.0.0b36, flash_attn/cute/interface.py
# _flash_attn_fwd and _flash_attn_bwd) and computes with SDPA and torch.autograd.
# --------------------------------------------------------------------------------------------------


def stand_in_fwd(q, k, v, qv=None, *, softmax_scale=None, causal=False, return_lse=False, **rest):
    assert qv is None and not rest, rest
    assert q.dtype == k.dtype == v.dtype and v.dtype in (torch.float16, torch.bfloat16)
    assert all(t.is_contiguous() for t in (q, k, v)) and q.shape[2] % k.shape[2] == 0
    assert causal and return_lse and softmax_scale == pytest.approx(1 / math.sqrt(q.shape[-1]))
    out = _sdpa(q, k, v).contiguous()
    s = (q.float().transpose(1, 2) @ k.float().transpose(1, 2).repeat_interleave(q.shape[2] // k.shape[2], 1)
         .transpose(-1, -2)) * softmax_scale  # (B, H, T, T)
    t = q.shape[1]
    lse = torch.logsumexp(s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), -1)
    return out, lse.contiguous(), None, None, None  # out, lse (B, H, T) fp32, p, row_max, o_lo


def stand_in_bwd(q, k, v, out, dout, lse, softmax_scale=None, causal=False, softcap=0.0, **rest):
    assert not rest and causal and softcap == 0.0
    assert softmax_scale == pytest.approx(1 / math.sqrt(q.shape[-1]))
    assert q.dtype in (torch.float16, torch.bfloat16) and q.dtype == k.dtype == v.dtype == out.dtype == dout.dtype
    b, t, h, _ = q.shape
    assert out.shape == dout.shape == q.shape and lse.shape == (b, h, t) and lse.dtype == torch.float32
    _, grads = _out_and_grads(_sdpa, q, k, v, dout)
    return tuple(torch.empty_like(x).copy_(g) for x, g in zip((q, k, v), grads))


STAND_INS = {"fwd": stand_in_fwd, "bwd": stand_in_bwd}


def test_cuda_glue_with_stand_ins():
    """What the CUDA kernels pass FA4 and how they read its answers: against the CPU kernels (bf16, as the
    training step runs attention)."""
    q, k, v = _qkv(torch.bfloat16)
    out, lse = attn_ops.flash4_attn_cuda(STAND_INS, q, k, v)
    ref_out, ref_lse = torch.ops.golf.flash4_attn(q, k, v)
    assert (out.dtype, lse.dtype, out.shape, lse.shape) == (ref_out.dtype, ref_lse.dtype, ref_out.shape, ref_lse.shape)
    assert out.stride() == ref_out.stride() and lse.stride() == ref_lse.stride()
    assert _rel(out, ref_out) < 1e-2
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    dout = torch.randn_like(out).transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous gradient
    glue = attn_ops.flash4_attn_bwd_cuda(STAND_INS, q, k, v, out, lse, dout)
    cpu = torch.ops.golf.flash4_attn_bwd(q, k, v, ref_out, ref_lse, dout)
    for name, a, c in zip("qkv", glue, cpu):
        assert a.dtype == c.dtype and a.shape == c.shape and a.stride() == c.stride(), name
        assert _rel(a, c) < 2e-2, (name, _rel(a, c))


# --------------------------------------------------------------------------------------------------
# Inside torch.compile(fullgraph=True), on CPU
# --------------------------------------------------------------------------------------------------


def _flash4_layer(seed=0):
    """A bf16 GQAttention on the flash4 path with golf's op: built directly, since resolve_attn_backend refuses
    flash4 on a CPU device. On CPU the op runs its reference kernels, so this covers the layer's call, Dynamo and
    AOT autograd around the op (fake kernels, backward op), not FA4's kernels."""
    torch.manual_seed(seed)
    layer = GQAttention(64, H, HKV, 10000.0, backend="flash4", flash_fn=attn_ops.flash_attn_func)
    torch.nn.init.normal_(layer.o_proj.weight, std=64 ** -0.5)
    return layer.bfloat16()


def _layer_out_and_grads(layer, x):
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    gen = torch.Generator().manual_seed(3)
    loss = (y.float() * torch.randn(y.shape, generator=gen).to(y.device)).sum()  # the same weights on any device
    return y, torch.autograd.grad(loss, [x, *layer.parameters()])


def test_flash4_layer_is_one_graph_with_the_op_and_its_backward():
    """fullgraph=True: no graph break at the attention. AOT autograd's forward graph calls golf::flash4_attn once,
    its backward graph golf::flash4_attn_bwd once; the compiled layer's output and gradients equal eager's, and
    eager's equal the SDPA layer's to bf16 rounding."""
    layer = _flash4_layer()
    x = torch.randn(2, T, 64).bfloat16()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    assert _golf_ops(explained.graphs[0]) == ["golf.flash4_attn"]
    compiled, graphs = compile_capturing_graphs(layer)
    y, g = _layer_out_and_grads(compiled, x)
    assert _golf_ops(graphs["fw"]) == ["golf.flash4_attn.default"]
    assert _golf_ops(graphs["bw"]) == ["golf.flash4_attn_bwd.default"]
    torch._dynamo.reset()
    y_eager, g_eager = _layer_out_and_grads(layer, x)
    torch.testing.assert_close(y, y_eager, rtol=0, atol=0)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    layer.backend, layer._flash_fn = "sdpa", None
    y_sdpa, g_sdpa = _layer_out_and_grads(layer, x)
    assert _rel(y_eager, y_sdpa) < 2e-2
    for (name, _), a, b in zip([("x", None), *layer.named_parameters()], g_eager, g_sdpa):
        assert _rel(a, b) < 5e-2, (name, _rel(a, b))


def test_flash4_layer_compiles_with_inductor():
    """Inductor, the training compile's backend, lowers the op to a fallback kernel (an op argument whose name its
    create() also takes failed this for the SSM ops: tests/test_ssm_opaque.py). The compiled layer gives eager's
    output and gradients."""
    layer = _flash4_layer(1)
    x = torch.randn(1, 19, 64).bfloat16()
    y_ref, g_ref = _layer_out_and_grads(layer, x)
    torch._dynamo.reset()
    y, g = _layer_out_and_grads(torch.compile(layer, fullgraph=True), x)
    torch._dynamo.reset()
    assert _rel(y, y_ref) < 1e-2
    for a, b in zip(g, g_ref):
        assert _rel(a, b) < 3e-2


def test_model_with_flash4_forced_compiles_as_one_graph(monkeypatch):
    """A small attention-only GolfLM whose build is handed the flash4 path (resolve_attn_backend monkeypatched: it
    refuses flash4 on CPU), cast to bf16 so that attention takes the op: compiled with fullgraph=True (aot_eager),
    its loss and gradients equal eager's."""
    monkeypatch.setattr("golf.model.resolve_attn_backend", lambda requested, device: ("flash4",
                                                                                       attn_ops.flash_attn_func))
    cfg = ModelConfig(vocab_size=64, d_model=32, layer_pattern="AA", num_heads=4, num_kv_heads=2, bigram_buckets=16,
                      bigram_dim=8, attn_backend="flash4")
    torch.manual_seed(0)
    m = build_model(cfg, "cpu").bfloat16()
    assert m.kernel_paths["attn"] == "flash4"
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))

    def loss_and_grads(model):
        loss = model(ids, targets=ids)
        return loss.detach().float(), torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)

    torch._dynamo.reset()
    compiled, graphs = compile_capturing_graphs(m)
    loss, grads = loss_and_grads(compiled)
    assert _golf_ops(graphs["fw"]) == ["golf.flash4_attn.default"] * 2
    assert _golf_ops(graphs["bw"]) == ["golf.flash4_attn_bwd.default"] * 2
    torch._dynamo.reset()
    loss_eager, grads_eager = loss_and_grads(m)
    assert abs(loss.item() - loss_eager.item()) < 1e-2
    for (name, _), a, b in zip(m.named_parameters(), grads, grads_eager):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3, msg=name)


# --------------------------------------------------------------------------------------------------
# The real kernels (CUDA machine with flash-attn-4)
# --------------------------------------------------------------------------------------------------


def _fa4_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: golf::flash4_attn's CUDA kernels call FlashAttention-4")
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("FlashAttention-4's backward needs sm_90 or newer: "
                    f"this device is sm_{''.join(map(str, torch.cuda.get_device_capability()))}")
    try:
        path, fn = resolve_attn_backend("flash4", "cuda")
    except GolfError as e:
        pytest.skip(f"flash-attn-4 (flash_attn.cute) is not importable here: {e}")
    assert path == "flash4" and fn is attn_ops.flash_attn_func
    return fn


@pytest.mark.gpu
def test_fa4_signatures_match_the_stand_ins():
    """The parameters golf's glue passes by position and name are FA4's (the installed version's)."""
    _fa4_or_skip()
    fwd = inspect.signature(attn_ops.fa4_kernels()["fwd"]).parameters
    bwd = list(inspect.signature(attn_ops.fa4_kernels()["bwd"]).parameters)
    assert list(fwd)[:3] == ["q", "k", "v"] and {"softmax_scale", "causal", "return_lse"} <= set(fwd)
    assert bwd[:8] == ["q", "k", "v", "out", "dout", "lse", "softmax_scale", "causal"]


@pytest.mark.gpu
@pytest.mark.parametrize("i", range(2))
def test_opcheck_on_gpu(i):
    """The fake kernels against FA4's real outputs (shapes, dtypes, strides), bf16."""
    _fa4_or_skip()
    op, args = _opcheck_cases("cuda", torch.bfloat16)[i]
    torch.library.opcheck(op, args, rtol=2e-2, atol=2e-2)  # eager vs AOT runs of a backward with atomic adds


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 1024, 8, 4, 64), (2, 512, 4, 2, 128)], ids=["h8_kv4_d64", "h4_kv2_d128"])
@pytest.mark.parametrize("compiled", [False, True])
def test_op_matches_sdpa_on_gpu(shape, compiled):
    """bf16 out and gradients of q, k, v: FA4 through the op, eager or inside torch.compile(fullgraph=True)
    (Inductor), against SDPA in fp32 on the same inputs, with an error no larger than SDPA's own in bf16 allows."""
    _fa4_or_skip()
    q, k, v = _qkv(torch.bfloat16, "cuda", shape=shape)
    dout = torch.randn_like(q)
    torch._dynamo.reset()
    fn = torch.compile(_op, fullgraph=True) if compiled else _op
    out, grads = _out_and_grads(fn, q, k, v, dout)
    torch._dynamo.reset()
    lse = torch.ops.golf.flash4_attn(q, k, v)[1]
    ref, ref_grads = _out_and_grads(_sdpa, q.float(), k.float(), v.float(), dout.float())
    low, low_grads = _out_and_grads(_sdpa, q, k, v, dout)
    assert out.dtype == torch.bfloat16 and lse.shape == (shape[0], shape[2], shape[1]) and lse.dtype == torch.float32
    assert _rel(out, ref) < max(2 * _rel(low, ref), 1e-2), (_rel(out, ref), _rel(low, ref))
    for name, a, lo, r in zip("qkv", grads, low_grads, ref_grads):
        assert _rel(a, r) < max(2 * _rel(lo, r), 2e-2), (name, _rel(a, r), _rel(lo, r))
    _, ref_lse = attn_ops.attention_reference(q.float(), k.float(), v.float())
    torch.testing.assert_close(lse, ref_lse, rtol=1e-3, atol=2e-2)


@pytest.mark.gpu
def test_flash4_layer_under_cuda_graphs_matches_eager_on_gpu():
    """A GQAttention layer on the flash4 path compiled with CUDA graphs (train.compile_mode reduce-overhead):
    warm-up, recording and replays give eager's output and gradients."""
    fn = _fa4_or_skip()
    torch.manual_seed(0)
    layer = GQAttention(512, 8, 4, 10000.0, backend="flash4", flash_fn=fn).cuda().bfloat16()
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, mode="reduce-overhead")
    gen = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(4):
        x = torch.randn(4, 256, 512, device="cuda", generator=gen).bfloat16()
        torch.compiler.cudagraph_mark_step_begin()
        y, g = _layer_out_and_grads(compiled, x)
        y_ref, g_ref = _layer_out_and_grads(layer, x)
        assert _rel(y, y_ref) < 1e-2
        for (name, _), a, b in zip([("x", None), *layer.named_parameters()], g, g_ref):
            assert _rel(a, b) < 5e-2, name
    torch._dynamo.reset()

