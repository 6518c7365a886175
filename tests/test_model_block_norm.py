"""model.block_norm "golf" and "golf_fold" (GolfLM._blocks_golf with golf::add_mix_norm, golf/block_norm_kernel.py;
"golf_fold" with the sublayers' output scales applied through their last projections) against the "torch" path
they must equal: the same loss, logits, carried states and parameter gradients on small hybrids (attention and
Mamba blocks, U-Net skips, model.ln_scale, Mamba blocks with their own MLP), in fp32.

On a machine without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, tests/conftest.py), so
these compare golf's kernels inside the whole model, within fp32 rounding; with the interpreter off the golf
path takes the PyTorch twin (golf.model.add_mix_norm_reference), which spells out the torch path's own ops, so
there the two paths agree bit for bit. The GPU test compiles both paths with torch.compile on CUDA."""

import dataclasses

import pytest
import torch
from conftest import TINY_HYBRID, assert_same_loss_and_grads, loss_and_grads

from golf.config import ModelConfig
from golf.model import GolfLM, add_mix_norm_reference, build_model, resolve_block_norm

# (layer_pattern, unet_skips, ln_scale, mamba_mlp_mult, smear_gate): 2 + 2 blocks with 2 skips; attention
# first with LN scale; 2 + 3 blocks (a decoder block without a skip); Mamba blocks with MLPs; no skips at all
VARIANTS = {
    "MAMA": ("MAMA", True, False, 0.0, False),
    "AMMA_ln_scale": ("AMMA", True, True, 0.0, True),
    "MMAMM_odd": ("MMAMM", True, False, 0.0, False),
    "MAMA_mamba_mlp_ln_scale": ("MAMA", True, True, 2.0, False),
    "AMMA_no_skips": ("AMMA", False, False, 2.0, False),
}


def _config(variant: str, block_norm: str) -> ModelConfig:
    pattern, unet, ln_scale, mamba_mlp, smear = VARIANTS[variant]
    return ModelConfig(**{**TINY_HYBRID, "layer_pattern": pattern, "unet_skips": unet, "ln_scale": ln_scale,
                          "mamba_mlp_mult": mamba_mlp, "smear_gate": smear, "block_norm": block_norm})


def _pair(variant: str, device: str = "cpu", seed: int = 0, choice: str = "golf") -> tuple[GolfLM, GolfLM]:
    """(torch path, `choice` path) models with the same random parameters: every parameter, the zero-initialized
    output projections, resid_mix, the scales and skip weights too, moved off its init so that every piece of
    the glue shows in the output and gradients."""
    torch.manual_seed(seed)
    ref = build_model(_config(variant, "torch"), device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    golf = build_model(_config(variant, choice), device)
    golf.load_state_dict(ref.state_dict())
    return ref, golf






@pytest.mark.parametrize("choice", ["golf", "golf_fold"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_golf_path_matches_torch_path(variant, choice):
    """Loss and every parameter's gradient, fp32: within rounding (the kernels' fp32 order of operations; with
    golf_fold also the scales' product with the weights)."""
    ref, golf = _pair(variant, choice=choice)
    assert ref.add_mix_norm is None and golf.add_mix_norm is not None
    ids = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    loss, grads = loss_and_grads(golf, ids, targets)
    assert_same_loss_and_grads(*loss_and_grads(ref, ids, targets), loss, grads, 2e-5)
    for name in ("blocks.0.resid_mix", "blocks.1.resid_mix", "blocks.0.mixer_scale", "blocks.1.attn_scale",
                 "blocks.1.mlp_scale", "tok_emb.weight"):
        if name in grads:  # the glue's parameters and the stream's start get real gradients
            assert grads[name].abs().max() > 0, name
    if ref.num_skips:
        assert grads["skip_weights"].abs().max() > 0


@pytest.mark.parametrize("choice", ["golf", "golf_fold"])
def test_return_states_path_matches(choice):
    """return_states: the same logits and the same carried states, block for block, and a window run in two
    pieces with carried state equals the torch path's."""
    ref, golf = _pair("MAMA_mamba_mlp_ln_scale", seed=1, choice=choice)
    ids = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        a_ref, st_ref = ref(ids[:, :11], return_states=True)
        a, st = golf(ids[:, :11], return_states=True)
        torch.testing.assert_close(a, a_ref, rtol=1e-5, atol=1e-5)
        assert len(st["layers"]) == len(st_ref["layers"]) == 4
        for got, want in zip(st["layers"], st_ref["layers"]):
            assert (got is None) == (want is None)
            if want is not None:
                for g, w in zip(got, want):
                    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        b_ref, _ = ref(ids[:, 11:], states=st_ref, return_states=True)
        b, _ = golf(ids[:, 11:], states=st, return_states=True)
        torch.testing.assert_close(b, b_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["MAMA", "MMAMM_odd"])
def test_cpu_fallback_is_the_torch_path_bit_for_bit(variant, monkeypatch):
    """Outside Triton's interpreter a CPU model takes the PyTorch twin, which spells out the torch path's own
    ops: the loss and the gradients agree exactly, and triton is not needed."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ref, golf = _pair(variant, seed=2)
    assert golf.add_mix_norm is add_mix_norm_reference
    ids = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    loss_ref, grads_ref = loss_and_grads(ref, ids, targets)
    loss, grads = loss_and_grads(golf, ids, targets)
    assert torch.equal(loss, loss_ref)
    for name, g in grads_ref.items():
        assert torch.equal(grads[name], g), name


def test_fold_scale_writes_no_scale_into_the_residual_add(monkeypatch):
    """golf_fold: every block's sublayer outputs reach golf::add_mix_norm without a scale (the scale is in the
    projection), and the scale's gradient still comes through the projection's weight."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    _, fold = _pair("MAMA_mamba_mlp_ln_scale", seed=4, choice="golf_fold")
    calls = []

    def spy(x, y=None, s=None, *rest, **kw):
        calls.append((y is not None, s is not None))
        return add_mix_norm_reference(x, y, s, *rest, **kw)

    fold.add_mix_norm = spy
    ids = torch.randint(0, 300, (2, 16))
    _, grads = loss_and_grads(fold, ids, torch.randint(0, 300, (2, 16)))
    # two pre-norms a block (the Mamba blocks have MLPs) and the final norm; no y at the first call, nor after the
    # last encoder block, whose output the skip keeps (completed in the model)
    assert len(calls) == 2 * 4 + 1 and calls.count((False, False)) == 2 and calls.count((True, False)) == 7
    assert all(grads[f"blocks.{i}.{n}"].abs().max() > 0 for i, n in ((0, "mixer_scale"), (1, "attn_scale"),
                                                                     (1, "mlp_scale"), (2, "mlp_scale")))


@pytest.mark.parametrize("choice", ["golf", "golf_fold"])
def test_bf16_autocast_stream_agrees_within_rounding(choice):
    """Under bf16 autocast (the residual stream bf16, as in training) the golf path keeps fp32 inside its glue:
    the loss agrees within bf16 rounding of the torch path's."""
    ref, golf = _pair("AMMA_ln_scale", seed=3, choice=choice)
    ids = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ref = ref(ids, targets=targets)
        loss = golf(ids, targets=targets)
    assert abs(loss.item() - loss_ref.item()) < 1e-2 * abs(loss_ref.item())


def test_resolve_block_norm_choices(monkeypatch):
    assert resolve_block_norm("torch", "cpu") is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert resolve_block_norm("golf", "cpu") is add_mix_norm_reference
    assert resolve_block_norm("golf_fold", "cpu") is add_mix_norm_reference
    assert dataclasses.fields(ModelConfig)  # the setting is declared with its choices
    from golf.config import field_choices

    assert field_choices(ModelConfig, "block_norm") == ("torch", "golf", "golf_fold")
    assert ModelConfig().block_norm == "torch"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant, choice", [("MAMA", "golf"), ("AMMA_ln_scale", "golf"),
                                             ("MAMA_mamba_mlp_ln_scale", "golf"), ("AMMA_ln_scale", "golf_fold")])
def test_compiled_golf_path_matches_compiled_torch_path_on_cuda(variant, choice):
    """On CUDA, both paths under torch.compile: the same loss and gradients in fp32 (the op's CUDA kernels),
    close under bf16 autocast, and the op adds no graph break (one graph node per call)."""
    ref, golf = _pair(variant, device="cuda", choice=choice)
    ids = torch.randint(0, 300, (4, 64), device="cuda")
    targets = torch.randint(0, 300, (4, 64), device="cuda")
    eager = loss_and_grads(golf, ids, targets)
    ref_c, golf_c = torch.compile(ref), torch.compile(golf)
    want = loss_and_grads(ref_c, ids, targets)
    assert_same_loss_and_grads(*want, *loss_and_grads(golf_c, ids, targets), 1e-4)
    assert_same_loss_and_grads(*eager, *loss_and_grads(golf_c, ids, targets), 1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_ref, loss = ref_c(ids, targets=targets), golf_c(ids, targets=targets)
    assert abs(loss.item() - loss_ref.item()) < 1e-2 * abs(loss_ref.item())
    torch._dynamo.reset()
    breaks_ref = torch._dynamo.explain(ref)(ids, targets=targets).graph_break_count
    breaks = torch._dynamo.explain(golf)(ids, targets=targets).graph_break_count
    assert breaks == breaks_ref
