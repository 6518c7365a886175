"""GQA attention: RoPE tables in fp32 whatever the model dtype (the anchor's bf16-position bug), GQA head
mapping and causality against a naive implementation, eager vs compiled loss, backend choice. The RoPE table
cache is tested in test_rope_cache.py, the flash4 path's custom op in test_attn_ops.py."""

import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from golf import attention, attn_ops
from golf.attention import GQAttention, apply_rope, resolve_attn_backend, rope_tables
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import build_model

TINY = {"vocab_size": 300, "d_model": 32, "layer_pattern": "AMA", "d_state": 8, "expand": 2.0, "headdim": 16,
        "chunk_size": 8, "num_heads": 4, "num_kv_heads": 2, "mlp_mult": 2.0, "bigram_buckets": 64, "bigram_dim": 8}


def _attn(seed=0, d=64, h=4, kv=2):
    torch.manual_seed(seed)
    a = GQAttention(d, h, kv, 10000.0)
    torch.nn.init.normal_(a.o_proj.weight, std=d ** -0.5)
    return a


def naive_attention(a: GQAttention, x: torch.Tensor) -> torch.Tensor:
    """Written out: per query head h, key/value head h // (H / Hkv); RoPE by explicit 2x2 rotations of the
    first R = a.rope_dims dims of each head (pairs i, i + R/2), the rest left as they are; no rotation at all
    when a.rope is false (NoPE)."""
    B, T, d = x.shape
    H, Hkv, D, R = a.num_heads, a.num_kv_heads, a.head_dim, a.rope_dims
    q = F.rms_norm((x @ a.q_proj.weight.T).view(B, T, H, D), (D,))
    k = F.rms_norm((x @ a.k_proj.weight.T).view(B, T, Hkv, D), (D,))
    v = (x @ a.v_proj.weight.T).view(B, T, Hkv, D)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    ang = pos * a.rope_base ** (-torch.arange(0, R, 2, dtype=torch.float64) / R)  # (T, R/2)
    c, s = ang.cos().to(x.dtype)[None, :, None], ang.sin().to(x.dtype)[None, :, None]

    def rot(t):
        t1, t2 = t[..., :R // 2], t[..., R // 2:R]
        return torch.cat([t1 * c + t2 * s, t2 * c - t1 * s, t[..., R:]], -1)

    if a.rope:
        q, k = rot(q), rot(k)
    q = q * a.q_gain[None, None, :, None]
    out = torch.empty(B, T, H, D, dtype=x.dtype)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for h in range(H):
        kh, vh = k[:, :, h // (H // Hkv)], v[:, :, h // (H // Hkv)]
        att = (q[:, :, h] @ kh.transpose(1, 2)) / math.sqrt(D)  # (B, T, T)
        out[:, :, h] = att.masked_fill(~mask, float("-inf")).softmax(-1) @ vh
    return out.reshape(B, T, d) @ a.o_proj.weight.T


def test_gqa_and_rope_match_the_written_out_definition():
    a = _attn().double()
    x = torch.randn(2, 19, 64, dtype=torch.float64)
    torch.testing.assert_close(a(x), naive_attention(a, x), rtol=1e-10, atol=1e-10)


def test_causal():
    a = _attn()
    x = torch.randn(1, 30, 64)
    y = a(x)
    x2 = x.clone()
    x2[:, 20:] = torch.randn(1, 10, 64)
    torch.testing.assert_close(a(x2)[:, :20], y[:, :20])
    assert not torch.allclose(a(x2)[:, 20:], y[:, 20:])


def test_rope_tables_are_fp32_and_exact_past_256():
    cos, sin = rope_tables(2048, 64, 10000.0, torch.device("cpu"))
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (2048, 32)
    pos = torch.arange(2048, dtype=torch.float64)
    torch.testing.assert_close(cos[:, 0].double(), torch.cos(pos), rtol=0, atol=1e-4)  # freq 1: angle = position
    x = torch.randn(1, 2048, 2, 64, dtype=torch.bfloat16)
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16


def _bf16_positions(seq_len, head_dim, base, device, offset=0, dtype=None):
    """The anchor's bug: positions and inverse frequencies materialized in bf16."""
    inv = (1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))).bfloat16()
    pos = torch.arange(offset, offset + seq_len, device=device).bfloat16()
    f = torch.outer(pos, inv)
    return f.cos().float(), f.sin().float()


def test_rope_stays_correct_when_the_model_is_cast_to_bf16(monkeypatch):
    a32 = _attn()
    x = torch.randn(2, 600, 64).bfloat16().float()  # inputs exactly representable in both
    ref = a32(x)[:, 256:]  # positions past 256: bf16 cannot hold them
    a16 = _attn().bfloat16()  # the cast meets the layer's cached tables
    assert a16.rope_cos.dtype == a16.rope_sin.dtype == torch.float32
    err = ((a16(x.bfloat16())[:, 256:].float() - ref).norm() / ref.norm()).item()
    monkeypatch.setattr(attention, "rope_tables", _bf16_positions)
    a16.reserve_positions(600)  # the forward reads cached tables: rebuilt here by the bf16-position version
    bad = ((a16(x.bfloat16())[:, 256:].float() - ref).norm() / ref.norm()).item()
    assert err < 0.03, err  # only bf16 rounding of activations
    assert bad > 3 * err, (bad, err)  # the check would catch bf16 positions


def test_eager_and_compiled_forward_give_the_same_loss():
    """torch.compile with backend="aot_eager": Dynamo tracing + AOT autograd (where a constant-folded dtype or
    switch would show) without Inductor's C++ code generation, which takes minutes on a 2-core CPU."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(**TINY))
    for n, p in m.named_parameters():
        if n.endswith(("o_proj.weight", "out_proj.weight", "mlp.proj.weight")):
            torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(0, 300, (2, 300))  # positions past 256
    compiled = torch.compile(m, backend="aot_eager")
    for autocast in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            eager = F.cross_entropy(m(ids)[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
            comp = F.cross_entropy(compiled(ids)[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
        assert abs(eager.item() - comp.item()) < (1e-3 if autocast else 1e-5), autocast
    m.bfloat16()  # a bf16-cast model, eager and compiled
    with torch.no_grad():
        e16 = F.cross_entropy(m(ids)[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
        c16 = F.cross_entropy(torch.compile(m, backend="aot_eager")(ids)[:, :-1].reshape(-1, 300),
                              ids[:, 1:].reshape(-1))
    assert abs(e16.item() - c16.item()) < 1e-2
    assert abs(e16.item() - eager.item()) < 0.05


def test_backend_choice_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have flash-attn")
    assert resolve_attn_backend("auto", "cpu") == ("sdpa", None)
    assert resolve_attn_backend("sdpa", "cpu") == ("sdpa", None)
    with pytest.raises(GolfError, match="attn_backend is 'flash'"):
        resolve_attn_backend("flash", "cpu")
    # flash4 likewise: FlashAttention-4 runs only on CUDA, so asking for it on a CPU device is an error that says
    # what is missing and how to install it (not a quiet SDPA); auto never picks it
    with pytest.raises(GolfError, match=r"attn_backend is 'flash4' but the device is not CUDA.*flash_attn\.cute.*"
                                        r"pip install flash-attn-4.*'auto' or 'sdpa'"):
        resolve_attn_backend("flash4", "cpu")


def test_flash4_on_cuda_without_flash_attn_4_says_how_to_install_it(monkeypatch):
    """(The device is only named: nothing runs on it.)"""
    monkeypatch.setattr(attention, "_import_flash", lambda module: None)
    with pytest.raises(GolfError, match=r"'flash4' but FlashAttention-4 \(flash_attn\.cute\) does not import on "
                                        r"this CUDA machine: install it with `pip install flash-attn-4`"):
        resolve_attn_backend("flash4", "cuda")


@pytest.fixture
def fake_fa4(tmp_path, monkeypatch):
    """A stand-in for FlashAttention-4's install on sys.path: flash_attn/cute/__init__.py with a flash_attn_func
    and no flash_attn/__init__.py, so flash_attn is a namespace package, as the flash-attn-4 wheel leaves it. The
    flash_attn modules imported meanwhile are dropped afterwards (any real ones restored)."""
    if attention.flash_installed("flash_attn"):
        pytest.skip("flash-attn 2 is installed here: its regular flash_attn package would shadow the namespace one")
    cute = tmp_path / "flash_attn" / "cute"
    cute.mkdir(parents=True)
    (cute / "__init__.py").write_text("def flash_attn_func(q, k, v, causal=False):\n    raise AssertionError\n")
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        del sys.modules[name]  # the stand-in's: monkeypatch then restores any real ones


def test_a_flash_attn_namespace_package_is_not_flash_attn_2(fake_fa4, caplog):
    """FlashAttention-4's flash_attn namespace package has no flash_attn_func: flash-attn 2 is simply not installed
    (no "found but failed to import" warning), while flash4 finds flash_attn.cute and, on a CUDA device, gets
    golf's custom op. (The device is only named here: nothing runs on it.)"""
    caplog.set_level(logging.WARNING, logger="golf.attention")
    assert not attention.flash_installed("flash_attn") and attention.flash_installed("flash_attn.cute")
    assert attention._import_flash("flash_attn") is None
    if not attention.flash_installed("flash_attn_interface"):  # else auto and flash would rightly pick FA3
        assert resolve_attn_backend("auto", "cuda") == ("sdpa", None)
        with pytest.raises(GolfError, match="attn_backend is 'flash'"):
            resolve_attn_backend("flash", "cuda")
    assert resolve_attn_backend("flash4", "cuda") == ("flash4", attn_ops.flash_attn_func)
    assert not caplog.records, [r.getMessage() for r in caplog.records]

