"""GQAttention's cached RoPE tables: the forward gives what inline tables give, the tables stay fp32 through
16-bit casts (rebuilt, never rounded), grow for a longer T, never enter the state dict, are not mutated while
torch.compile traces a longer T, keep the table math out of a compiled graph, and compile_for_training fills
them for train.seq_len."""

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import golf.train
from golf import attention
from golf.attention import ROPE_CACHE_POSITIONS, GQAttention, apply_rope, reserve_rope_positions, rope_tables
from golf.config import ModelConfig, TrainConfig
from golf.model import build_model

TINY = {"vocab_size": 300, "d_model": 32, "layer_pattern": "AMA", "d_state": 8, "expand": 2.0, "headdim": 16,
        "chunk_size": 8, "num_heads": 4, "num_kv_heads": 2, "mlp_mult": 2.0, "bigram_buckets": 64, "bigram_dim": 8}
CPU = torch.device("cpu")
N = ROPE_CACHE_POSITIONS  # what a new layer's tables cover
TABLE_OPS = {"cos", "sin", "pow", "arange", "outer"}


def _attn(rope_dims=0, rope=True, seed=0):
    """4 query heads of 16 dims, 2 KV heads: tables of 8 frequencies."""
    torch.manual_seed(seed)
    a = GQAttention(64, 4, 2, 10000.0, rope_dims=rope_dims, rope=rope)
    nn.init.normal_(a.o_proj.weight, std=64 ** -0.5)
    return a


def _inline_forward(a: GQAttention, x: torch.Tensor) -> torch.Tensor:
    """GQAttention.forward (SDPA path) with the tables computed by rope_tables(T, ...) on the spot, as the
    forward did before the cache."""
    B, T, _ = x.shape
    q = F.rms_norm(a.q_proj(x).view(B, T, a.num_heads, a.head_dim), (a.head_dim,))  # (B, T, H, D)
    k = F.rms_norm(a.k_proj(x).view(B, T, a.num_kv_heads, a.head_dim), (a.head_dim,))  # (B, T, Hkv, D)
    v = a.v_proj(x).view(B, T, a.num_kv_heads, a.head_dim)
    cos, sin = rope_tables(T, a.rope_dims, a.rope_base, x.device, dtype=q.dtype)  # (T, R/2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q = q * a.q_gain.to(q.dtype)[None, None, :, None]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True, enable_gqa=True).transpose(1, 2)
    return a.o_proj(out.reshape(B, T, -1))


@pytest.mark.parametrize("rope_dims", [0, 8])  # the whole head (16), partial RoPE
def test_the_cached_forward_equals_inline_tables(rope_dims):
    """Exact: the cache is rope_tables(n, ...) and row t of it is computed from the same fp32 position and
    inverse frequencies, by the same ops, as row t of rope_tables(T, ...)."""
    a = _attn(rope_dims)
    x = torch.randn(2, 19, 64)
    with torch.no_grad():
        out = a(x)
        ref = _inline_forward(a, x)
    assert a.rope_cos.shape == (N, a.rope_dims // 2)
    cos, sin = rope_tables(19, a.rope_dims, 10000.0, CPU)
    assert torch.equal(a.rope_cos[:19], cos) and torch.equal(a.rope_sin[:19], sin)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("cast", [lambda m: m.bfloat16(), lambda m: m.half(), lambda m: m.to(torch.float16)],
                         ids=["bfloat16", "half", "to_float16"])
def test_tables_stay_fp32_through_16_bit_casts(cast):
    """Equal to fresh fp32 tables bit for bit: a round trip through 16 bits would not be (checked below)."""
    a = _attn()
    cast(a)
    assert a.q_proj.weight.dtype in (torch.bfloat16, torch.float16)  # the cast did happen
    cos, sin = rope_tables(N, 16, 10000.0, CPU)
    assert a.rope_cos.dtype == a.rope_sin.dtype == torch.float32
    assert torch.equal(a.rope_cos, cos) and torch.equal(a.rope_sin, sin)
    assert not torch.equal(cos.bfloat16().float(), cos) and not torch.equal(cos.half().float(), cos)
    cast(a)  # a second cast of a cast model
    assert a.rope_cos.dtype == torch.float32 and torch.equal(a.rope_cos, cos)


def test_double_and_float_rebuild_the_tables_in_their_precision():
    a = _attn()
    a.double()
    assert a.rope_cos.dtype == torch.float64
    assert torch.equal(a.rope_cos, rope_tables(N, 16, 10000.0, CPU, dtype=torch.float64)[0])
    a.float()  # rebuilt in fp32, not rounded from the fp64 tables
    assert torch.equal(a.rope_sin, rope_tables(N, 16, 10000.0, CPU)[1])


def test_a_device_move_moves_the_tables():
    a = _attn()
    a.to("meta")
    assert a.rope_cos.device.type == a.rope_sin.device.type == "meta"
    assert a.rope_cos.shape == (N, 8) and a.rope_cos.dtype == torch.float32


def test_an_eager_forward_grows_the_cache():
    a = _attn()
    assert a.rope_cos.shape == (N, 8)  # ROPE_CACHE_POSITIONS from the start
    with torch.no_grad():
        a(torch.randn(1, N + 5, 64))
    assert a.rope_cos.shape == a.rope_sin.shape == (N + 5, 8)
    assert torch.equal(a.rope_cos, rope_tables(N + 5, 16, 10000.0, CPU)[0])
    with torch.no_grad():
        a(torch.randn(1, 5, 64))
    a.reserve_positions(3)
    assert a.rope_cos.shape == (N + 5, 8)  # never shrinks
    a.reserve_positions(N + 9)
    assert a.rope_cos.shape == (N + 9, 8) and torch.equal(a.rope_sin, rope_tables(N + 9, 16, 10000.0, CPU)[1])


def test_a_cache_grown_under_inference_mode_still_trains():
    a = _attn()
    with torch.inference_mode():
        a(torch.randn(1, N + 1, 64))
    assert a.rope_cos.shape[0] == N + 1
    a(torch.randn(1, N + 1, 64)).sum().backward()  # an inference tensor could not be saved for backward
    assert a.q_proj.weight.grad is not None


def test_the_tables_never_enter_the_state_dict():
    a = _attn()
    expected = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_gain"}
    assert set(a.state_dict()) == expected
    a.reserve_positions(N + 50)
    assert set(a.state_dict()) == expected and set(_attn(rope=False).state_dict()) == expected
    torch.manual_seed(0)
    m = build_model(ModelConfig(**TINY))
    keys = list(m.state_dict())
    reserve_rope_positions(m, N + 64)
    assert list(m.state_dict()) == keys and not any("rope" in k for k in keys)
    assert sum(n.endswith(("attn.rope_cos", "attn.rope_sin")) for n, _ in m.named_buffers()) == 4  # 2 A layers
    build_model(ModelConfig(**TINY)).load_state_dict(m.state_dict(), strict=True)


def test_nope_layers_hold_no_tables():
    a = _attn(rope=False)
    a.reserve_positions(30)
    a.bfloat16()
    assert a.rope_cos is None and a.rope_sin is None
    assert a(torch.randn(1, 7, 64).bfloat16()).shape == (1, 7, 64)


def test_a_longer_T_while_compiling_is_computed_inline_without_touching_the_buffers(monkeypatch):
    a = _attn()
    cos, sin = a.rope_cos, a.rope_sin
    calls = []
    real = attention.rope_tables
    monkeypatch.setattr(attention, "rope_tables", lambda T, *args, **kw: calls.append(T) or real(T, *args, **kw))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(1, N + 12, 64)
    with torch.no_grad():
        out = a(x)
        assert calls == [N + 12] and a.rope_cos is cos and a.rope_sin is sin and cos.shape == (N, 8)
        a(x[:, :N])  # within the cache: its rows, no table computation
        assert calls == [N + 12]
        monkeypatch.setattr(attention, "rope_tables", real)
        assert torch.equal(out, _inline_forward(a, x))


def _table_ops_in_compiled_graph(a: GQAttention, x: torch.Tensor) -> set[str]:
    """The names of the ops Dynamo captured for a(x) (no Inductor: the backend records the FX graph and runs
    it as it is) that build RoPE tables."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(a, backend=capture, fullgraph=True)(x)
        torch.testing.assert_close(out, _inline_forward(a, x), rtol=1e-6, atol=1e-6)
    names = set()
    for gm in graphs:
        for node in gm.graph.nodes:
            if node.op == "call_method":
                names.add(node.target)
            elif node.op == "call_function":
                names.add({operator.pow: "pow"}.get(node.target, getattr(node.target, "__name__", "")))
    return names & TABLE_OPS


def test_a_warm_cache_keeps_the_table_math_out_of_the_compiled_graph():
    x = torch.randn(1, N + 8, 64)
    warm = _attn()
    warm.reserve_positions(N + 8)
    assert _table_ops_in_compiled_graph(warm, x) == set()
    assert _table_ops_in_compiled_graph(warm, x[:, :24]) == set()
    cold = _attn()  # a cache shorter than T: traced inline, as every forward was before the cache
    assert {"cos", "sin", "pow"} <= _table_ops_in_compiled_graph(cold, x)
    assert cold.rope_cos.shape == (N, 8)  # tracing did not grow it
    torch._dynamo.reset()


def test_compile_for_training_reserves_train_seq_len(monkeypatch):
    monkeypatch.setattr(golf.train.torch, "compile", lambda net, mode=None: net)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY))
    net = nn.ModuleDict({"wrapped": model})  # the trainer's wrappers (StatefulLoss, DDP) hold the model inside
    attn = [m for m in model.modules() if isinstance(m, GQAttention)]
    assert len(attn) == 2 and all(m.rope_cos.shape[0] == N for m in attn)
    tcfg = TrainConfig(compile=True, seq_len=N + 48)
    golf.train.compile_for_training(net, tcfg, torch.device("cpu"))
    assert all(m.rope_cos.shape[0] == N for m in attn)  # eager on CPU: nothing compiled, nothing reserved
    golf.train.compile_for_training(net, TrainConfig(compile=False, seq_len=N + 48), torch.device("cuda"))
    assert all(m.rope_cos.shape[0] == N for m in attn)
    golf.train.compile_for_training(net, tcfg, torch.device("cuda"))
    for m in attn:
        assert m.rope_cos.shape == m.rope_sin.shape == (N + 48, 4)  # head_dim 8: 4 frequencies
        assert torch.equal(m.rope_cos, rope_tables(N + 48, 8, m.rope_base, CPU)[0])
