"""GolfLM: parameter counts of the two reference configurations, optimizer groups, QAT under compile, carried
state, bf16 casts, U-Net skips, BigramHash, save/load."""

import json
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from golf.config import ModelConfig, load_params
from golf.errors import GolfError
from golf.model import QATLinear, build_model, count_params, load_model, save_model
from golf.param_groups import MAMBA_DYNAMICS

TINY = {"vocab_size": 300, "d_model": 32, "layer_pattern": "MAMM", "d_state": 8, "expand": 2.0, "headdim": 16,
        "chunk_size": 8, "num_heads": 2, "num_kv_heads": 1, "mlp_mult": 2.0, "bigram_buckets": 64, "bigram_dim": 8}
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def analytic_count(c: ModelConfig) -> int:
    """Parameters from the architecture's definition (not from the module tree)."""
    d = c.d_model
    di = int(c.expand * d)
    H, G, N, W = di // c.headdim, c.ngroups, c.d_state, c.d_conv
    conv_dim = di + 2 * G * N
    mamba = (d * (2 * di + 2 * G * N + H)  # in_proj → z, x, B, C, dt
             + conv_dim * W + conv_dim  # depthwise conv weight + bias
             + 3 * H  # A_log, dt_bias, D (one per head)
             + di  # gated-norm weight
             + di * d  # out_proj
             + 2 * d + d)  # resid_mix (2, d) + mixer_scale
    if c.mamba_mlp_mult > 0:
        mamba += 2 * d * int(c.mamba_mlp_mult * d) + d  # its own MLP fc + proj, mlp_scale
    hd = d // c.num_heads
    kv = c.num_kv_heads * hd
    hidden = int(c.mlp_mult * d)
    attn = (d * d + 2 * d * kv + d * d  # q, k, v, o
            + c.num_heads  # q_gain
            + 2 * d * hidden  # relu² MLP fc + proj
            + 2 * d + 2 * d)  # resid_mix + attn_scale + mlp_scale
    n = len(c.layer_pattern)
    skips = min(n // 2, n - n // 2) * d if c.unet_skips else 0
    bigram = c.bigram_buckets * c.bigram_dim + c.bigram_dim * d if c.bigram_buckets else 0
    head = 0 if c.tie_embeddings else c.vocab_size * d
    return (c.layer_pattern.count("M") * mamba + c.layer_pattern.count("A") * attn + skips
            + c.vocab_size * d + bigram + head)


def test_the_challenge_baseline_has_its_exact_parameter_count():
    p = load_params(REPO_CONFIGS / "baseline_attn.yaml")
    assert p.model.layer_pattern == "AAAAAAAAA" and p.model.bigram_buckets == 0
    n = count_params(build_model(p.model))
    assert n == analytic_count(p.model) == 17_059_912  # openai/parameter-golf train_gpt.py's logged count


def test_the_seed_hybrid_parameter_count():
    p = load_params(REPO_CONFIGS / "hybrid_seed.yaml")
    c = p.model
    assert (c.layer_pattern, c.d_model, c.d_state, c.expand, c.headdim, c.mlp_mult, c.bigram_buckets) == \
        ("MMMMMMMMMMMMAAAMMM", 512, 32, 1.5, 64, 3.0, 2048)
    assert count_params(build_model(c)) == analytic_count(c)
    assert count_params(build_model(ModelConfig(**TINY))) == analytic_count(ModelConfig(**TINY))
    untied = ModelConfig(**{**TINY, "tie_embeddings": False, "unet_skips": False, "ngroups": 2})
    assert count_params(build_model(untied)) == analytic_count(untied)


def test_param_groups_partition_every_parameter():
    m = build_model(ModelConfig(**{**TINY, "tie_embeddings": False}))
    groups = m.param_groups()
    ids = [id(p) for g in groups.values() for _, p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    names = {k: {n for n, _ in v} for k, v in groups.items()}
    assert names["mamba_matrix"] == {f"blocks.{i}.mixer.{w}.weight" for i in (0, 2, 3) for w in ("in_proj", "out_proj")}
    assert names["embed"] == {"tok_emb.weight", "bigram.emb.weight", "lm_head.weight"}
    assert {"blocks.1.attn.q_proj.weight", "blocks.1.mlp.fc.weight", "bigram.proj.weight"} <= names["matrix"]
    assert all(p.ndim == 2 for _, p in groups["matrix"])
    assert {n.rsplit(".", 1)[-1] for n in names["scalar"]} >= {"A_log", "dt_bias", "D", "skip_weights", "q_gain"}
    assert "blocks.0.mixer.conv1d.weight" in names["scalar"]


def _randomized(cfg: dict, seed=0, std=0.2):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(**cfg))
    for p in m.parameters():  # non-zero outputs everywhere so fake-quant is visible
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=std)
    return m


def test_fake_quant_grid_and_straight_through_gradient():
    lin = QATLinear(16, 8)
    x = torch.randn(4, 16)
    lin.qat_on.fill_(True)
    lin.qat_qmax.fill_(31.0)
    wq = lin.fake_quant_weight()
    scale = lin.weight.detach().abs().amax(1, keepdim=True) / 31
    codes = wq.detach() / scale
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)  # on the int6 grid
    assert codes.abs().max() <= 31 + 1e-4 and not torch.equal(wq, lin.weight)
    lin(x).square().sum().backward()
    w_const = wq.detach().clone().requires_grad_(True)
    (x @ w_const.T).square().sum().backward()
    torch.testing.assert_close(lin.weight.grad, w_const.grad)  # gradient at w_q, passed straight to w


def test_qat_switch_works_under_compile_without_recompiling():
    m = _randomized({**TINY, "layer_pattern": "AM"})
    ids = torch.randint(0, 300, (2, 16))
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(m, backend=counter)
    with torch.no_grad():
        off = compiled(ids)
        m.set_qat(True, 3)
        on = compiled(ids)
        eager_on = m(ids)
        m.set_qat(False)
        off_again = compiled(ids)
        eager_off = m(ids)
    assert counter.frame_count == 1  # the switch is a tensor input: no recompile
    assert not torch.allclose(on, off)
    assert torch.equal(on, eager_on)  # exactly the eager fake-quant output
    assert torch.equal(off_again, off) and torch.equal(off, eager_off)


@pytest.mark.parametrize("mamba_mlp_mult", [0.0, 2.0])
def test_model_state_carry_equals_one_pass_for_ssm_only(mamba_mlp_mult):
    m = _randomized({**TINY, "layer_pattern": "MMM", "mamba_mlp_mult": mamba_mlp_mult}, std=0.1).double()
    assert (m.blocks[0].mlp is not None) == (mamba_mlp_mult > 0)
    ids = torch.randint(0, 300, (2, 40))
    full = m(ids)
    a, st = m(ids[:, :17], return_states=True)
    b, st2 = m(ids[:, 17:], states=st, return_states=True)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=1e-10, atol=1e-10)
    assert len(st2["layers"]) == 3 and torch.equal(st2["prev_token"], ids[:, -1])


def test_hybrid_states_have_none_for_attention_layers():
    m = build_model(ModelConfig(**TINY))
    _, st = m(torch.randint(0, 300, (2, 10)), return_states=True)
    assert st["layers"][1] is None and all(s is not None for i, s in enumerate(st["layers"]) if i != 1)


def test_bf16_cast_keeps_dynamics_fp32_and_runs():
    m = _randomized(TINY, std=0.05)
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        ref = m(ids)
        m.bfloat16()
        out = m(ids)
    for n, p in m.named_parameters():
        assert p.dtype == (torch.float32 if n.rsplit(".mixer.", 1)[-1] in MAMBA_DYNAMICS else torch.bfloat16), n
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


def test_unet_skips_wire_encoder_outputs_to_the_decoder():
    cfg = {**TINY, "layer_pattern": "MMAMM"}  # 2 encoder, 3 decoder layers, 2 skips
    m = _randomized(cfg, std=0.1)
    assert m.skip_weights.shape == (2, 32)
    plain = build_model(ModelConfig(**{**cfg, "unet_skips": False}))
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "skip_weights"})
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert not torch.allclose(m(ids), plain(ids))
        m.skip_weights.zero_()
        torch.testing.assert_close(m(ids), plain(ids))


def test_bigram_hash_sees_the_previous_token_and_carries_it():
    m = _randomized({**TINY, "layer_pattern": "A"})
    ids = torch.randint(0, 300, (1, 8))
    ids2 = ids.clone()
    ids2[0, 3] = (ids[0, 3] + 1) % 300
    emb = m.bigram(ids)
    changed = (m.bigram(ids2) - emb).abs().sum(-1)[0] > 0
    assert changed.tolist() == [False, False, False, True, True, False, False, False]  # tokens 3 and 4 only
    carried = m.bigram(ids[:, 4:], prev_first=ids[:, 3])
    torch.testing.assert_close(carried, emb[:, 4:])


def test_a_model_trained_on_the_gpu_only_paths_loads_on_the_cpu(tmp_path):
    """The quantize stage loads the trained model on the CPU: the training-only kernel paths (golf::mamba_core with
    its kept scan internals and golf's norm kernels, golf's residual glue, FlashAttention-4), which need CUDA, give
    way to scoring_config's, the same function. Training with them and then quantizing once failed here on the
    H200 (2026-12-01: 'model.ssm_backend is 'fused' but it needs a CUDA device')."""
    from tests.test_post_train_stages import GPU_ONLY as gpu_only

    m = _randomized(TINY, std=0.05)
    save_model(m, ModelConfig(**TINY, **gpu_only), tmp_path / "m")
    assert {k: json.loads((tmp_path / "m" / "config.json").read_text())[k] for k in gpu_only} == gpu_only
    with pytest.raises(GolfError, match="ssm_backend is 'fused'"):
        build_model(ModelConfig(**TINY, **gpu_only), "cpu")  # what load_model did before
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m", "cpu")(ids), m(ids))


def test_save_load_roundtrip_and_errors(tmp_path):
    m = _randomized(TINY, std=0.05)
    cfg = ModelConfig(**TINY)
    save_model(m, cfg, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["layer_pattern"] == "MAMM"
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m")(ids), m(ids))
    other = tmp_path / "other"
    save_model(m, cfg, other)
    (other / "config.json").write_text(json.dumps({**TINY, "d_model": 64, "headdim": 32}))
    with pytest.raises(GolfError, match="do not match"):
        load_model(other)
    (other / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GolfError, match="not a readable safetensors"):
        load_model(other)
    (other / "model.safetensors").unlink()
    with pytest.raises(GolfError, match="not found"):
        load_model(other)


def test_requested_fast_paths_missing_are_errors():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have the kernels")
    with pytest.raises(GolfError, match="ssm_backend is 'triton'"):
        build_model(ModelConfig(**{**TINY, "ssm_backend": "triton"}))
    with pytest.raises(GolfError, match="attn_backend is 'flash'"):
        build_model(ModelConfig(**{**TINY, "attn_backend": "flash"}))
    assert build_model(ModelConfig(**TINY)).kernel_paths == {"ssm": "reference", "attn": "sdpa"}
    assert build_model(ModelConfig(**{**TINY, "layer_pattern": "AA"})).kernel_paths["ssm"] == "none"


@pytest.mark.parametrize("residual_dtype, expected", [("autocast", torch.bfloat16), ("fp32", torch.float32)])
def test_residual_stream_dtype_under_autocast(residual_dtype, expected):
    """Every block receives the stream in the configured dtype under bf16 autocast (CPU autocast stands in
    for CUDA's); without autocast the stream stays fp32 whatever the setting."""
    m = _randomized({**TINY, "residual_dtype": residual_dtype}, std=0.05)
    ids = torch.randint(0, 300, (2, 24))
    seen: list[torch.dtype] = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype)) for b in m.blocks]
    with torch.no_grad():
        ref = m(ids)
        assert seen == [torch.float32] * len(m.blocks)
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(ids)
    for h in hooks:
        h.remove()
    assert seen == [expected] * len(m.blocks)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


def test_forward_with_targets_is_the_mean_cross_entropy_of_the_logits():
    m = _randomized(TINY, std=0.05)
    ids, targets = torch.randint(0, 300, (2, 24)), torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        logits = m(ids)
        loss = m(ids, targets=targets)
        with pytest.raises(ValueError, match="exclusive"):
            m(ids, targets=targets, return_states=True)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), targets.reshape(-1))
    assert loss.shape == () and torch.allclose(loss, expected, rtol=1e-6, atol=1e-6)
