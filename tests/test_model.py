import pytest
import torch

from golf.attention import apply_rope, rope_tables
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import build_model, count_params
from golf.ssm import resolve_ssm_backend

TINY = dict(vocab_size=300, d_model=32, layer_pattern="MAMM", d_state=8, expand=2.0, headdim=16, chunk_size=8,
            num_heads=2, num_kv_heads=1, mlp_mult=2.0, bigram_buckets=64, bigram_dim=8)


def test_model_state_carry_equals_one_pass_for_ssm_only():
    torch.manual_seed(0)
    m = build_model(ModelConfig(**{**TINY, "layer_pattern": "MMM"})).double()
    ids = torch.randint(0, 300, (2, 40))
    full = m(ids)
    a, st = m(ids[:, :17], return_states=True)
    b, _ = m(ids[:, 17:], states=st, return_states=True)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-7, atol=1e-7)


def test_parameter_counts_of_the_two_reference_configs():
    base = ModelConfig(layer_pattern="AAAAAAAAA", mlp_mult=2.0, bigram_buckets=0, bigram_dim=0)
    assert count_params(build_model(base)) == 17_059_912  # the challenge baseline's own count
    seed = ModelConfig()
    d, di, n, h = 512, 768, 32, 12
    mamba = d * (2 * di + 2 * n + h) + (di + 2 * n) * 5 + 3 * h + di + di * d + 3 * d  # in, conv, A/dt/D, norm, out, mix+scale
    attn = 2 * d * d + 2 * d * 256 + 8 + 2 * 3 * d * d + 4 * d  # qkvo, q_gain, mlp 3x, mix + 2 scales
    expected = 15 * mamba + 3 * attn + 1024 * d + 2048 * 128 + 128 * d + 9 * d
    assert count_params(build_model(seed)) == expected == 26_316_532


def test_param_groups_partition_every_parameter():
    m = build_model(ModelConfig(**TINY))
    groups = m.param_groups()
    ids = [id(p) for g in groups.values() for _, p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    assert all(".mixer." in n for n, _ in groups["mamba_matrix"]) and groups["mamba_matrix"]
    assert {n.rsplit(".", 1)[-1] for n, _ in groups["scalar"]} >= {"A_log", "dt_bias", "D"}


def test_qat_switch_works_under_compile_without_constant_folding():
    torch.manual_seed(0)
    m = build_model(ModelConfig(**{**TINY, "layer_pattern": "A"}))
    for p in m.parameters():  # non-zero outputs everywhere so fake-quant is visible
        torch.nn.init.normal_(p, std=0.2)
    ids = torch.randint(0, 300, (2, 16))
    compiled = torch.compile(m, backend="aot_eager")
    with torch.no_grad():
        off = compiled(ids)
        m.set_qat(True, 3)
        on = compiled(ids)
        eager_on = m(ids)
        m.set_qat(False)
        off_again = compiled(ids)
    assert not torch.allclose(on, off)
    torch.testing.assert_close(on, eager_on)
    torch.testing.assert_close(off_again, off)


def test_rope_tables_stay_fp32_and_eager_equals_compiled_in_bf16():
    cos, sin = rope_tables(2048, 64, 10000.0, torch.device("cpu"))
    assert cos.dtype == torch.float32
    pos = torch.arange(2048, dtype=torch.float32)
    assert torch.allclose(cos[:, 0], torch.cos(pos))  # position 1999 is exact, not rounded to bf16
    x = torch.randn(1, 2048, 2, 64, dtype=torch.bfloat16)
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16
    torch.manual_seed(0)
    m = build_model(ModelConfig(**{**TINY, "layer_pattern": "AA"}))
    ids = torch.randint(0, 300, (2, 300))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        eager = torch.nn.functional.cross_entropy(m(ids)[:, :-1].reshape(-1, 300), ids[:, 1:].reshape(-1))
        comp = torch.nn.functional.cross_entropy(torch.compile(m, backend="aot_eager")(ids)[:, :-1].reshape(-1, 300),
                                                 ids[:, 1:].reshape(-1))
    assert abs(eager.item() - comp.item()) < 1e-3


def test_requested_fast_path_missing_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the kernels")
    with pytest.raises(GolfError, match="ssm_backend is 'triton'"):
        resolve_ssm_backend("triton", "cpu")
    with pytest.raises(GolfError, match="attn_backend is 'flash'"):
        build_model(ModelConfig(**{**TINY, "attn_backend": "flash"}))
    assert build_model(ModelConfig(**TINY)).kernel_paths == {"ssm": "reference", "attn": "sdpa"}
