import pytest
import torch

from golf.attention import apply_rope, rope_tables
from golf.config import ModelConfig
from golf.errors import GolfError
from golf.model import build_model, count_params
from golf.ssm import Mamba2Mixer, resolve_ssm_backend, ssd_naive, ssd_reference

TINY = dict(vocab_size=300, d_model=32, layer_pattern="MAMM", d_state=8, expand=2.0, headdim=16, chunk_size=8,
            num_heads=2, num_kv_heads=1, mlp_mult=2.0, bigram_buckets=64, bigram_dim=8)


@pytest.mark.parametrize("chunk", [1, 4, 8, 64])
def test_chunked_ssd_matches_naive_recurrence(chunk):
    g = torch.Generator().manual_seed(chunk)
    b, l, h, p, grp, n = 2, 37, 4, 3, 2, 5
    x = torch.randn(b, l, h, p, generator=g, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=g, dtype=torch.float64)
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 2
    B = torch.randn(b, l, grp, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, l, grp, n, generator=g, dtype=torch.float64)
    s0 = torch.randn(b, h, p, n, generator=g, dtype=torch.float64)
    y, fin = ssd_reference(x, dt, A, B, C, chunk, s0)
    y2, fin2 = ssd_naive(x, dt, A, B, C, s0)
    torch.testing.assert_close(y, y2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fin, fin2, rtol=1e-10, atol=1e-10)


def test_mixer_state_carry_equals_one_pass():
    torch.manual_seed(0)
    m = Mamba2Mixer(16, 4, 4, 2.0, 8, 1, 8).double()
    u = torch.randn(2, 29, 16, dtype=torch.float64)
    full = m(u)
    a, st = m(u[:, :13], return_state=True)
    b = m(u[:, 13:], state=st)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-9, atol=1e-9)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_ssd_matches_reference_on_gpu():
    path, fn = resolve_ssm_backend("auto", "cuda")
    if path != "triton":
        pytest.skip("mamba-ssm not installed")
    torch.manual_seed(0)
    ref = Mamba2Mixer(64, 16, 4, 2.0, 32, 1, 16).cuda()
    fast = Mamba2Mixer(64, 16, 4, 2.0, 32, 1, 16, backend="triton", ssd_fn=fn).cuda()
    fast.load_state_dict(ref.state_dict())
    u = torch.randn(2, 100, 64, device="cuda")
    torch.testing.assert_close(fast(u), ref(u), rtol=1e-2, atol=1e-3)
