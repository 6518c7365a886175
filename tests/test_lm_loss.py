"""model.lm_loss "fused" (golf/lm_loss.py): the loss and the gradients of x and the head's weight against the
autograd path (F.linear, the softcap's tanh, F.cross_entropy), with and without the softcap, for a loss gradient
other than 1; in a whole model against model.lm_loss "autograd"; and that scoring never builds it."""

import pytest
import torch
from conftest import TINY_HYBRID

from golf.config import ModelConfig, field_choices
from golf.lm_loss import softcapped_cross_entropy_fused, softcapped_cross_entropy_reference
from golf.model import build_model, scoring_config


def _grads(fn, x, w, targets, cap, scale):
    xl, wl = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    loss = fn(xl, wl, targets, cap)
    (loss * scale).backward()
    return loss.detach(), xl.grad, wl.grad


@pytest.mark.parametrize("cap", [30.0, 2.0, 0.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_matches_autograd(cap, dtype):
    gen = torch.Generator().manual_seed(0)
    x = (2 * torch.randn(37, 24, generator=gen)).to(dtype)
    w = torch.randn(50, 24, generator=gen).to(dtype)
    targets = torch.randint(0, 50, (37,), generator=gen)
    got = _grads(softcapped_cross_entropy_fused, x, w, targets, cap, 0.37)
    want = _grads(softcapped_cross_entropy_reference, x, w, targets, cap, 0.37)
    for name, a, b in zip(("loss", "dx", "dw"), got, want):  # both compute the logits in fp32 (the model's .float())
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6, msg=name)


def test_fused_bf16_within_rounding():
    """bf16 x and weight (training's autocast): the loss in fp32 within bf16's rounding of the logits, the
    gradients in bf16 within a few bf16 steps of the fp32 path on the same values."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, generator=gen).bfloat16()
    w = torch.randn(40, 32, generator=gen).bfloat16()
    targets = torch.randint(0, 40, (64,), generator=gen)
    got = _grads(softcapped_cross_entropy_fused, x, w, targets, 30.0, 1.0)
    want = _grads(softcapped_cross_entropy_reference, x.double(), w.double(), targets, 30.0, 1.0)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.bfloat16
    for name, a, b in zip(("loss", "dx", "dw"), got, want):
        err = (a.double() - b).abs().max().item()
        assert err <= 2e-2 * b.abs().max().item(), f"{name}: {err:.3e}"


def test_fused_bf16_loss_scale_not_rounded():
    """A loss gradient that bf16 cannot hold (1/3, as gradient accumulation over three micro-batches gives): the bf16
    gradients are the scale-1 ones times 1/3, with no common bias (bf16's 1/3 is 0.33398, 0.2% high)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(256, 64, generator=gen).bfloat16()
    w = torch.randn(48, 64, generator=gen).bfloat16()
    targets = torch.randint(0, 48, (256,), generator=gen)
    one = _grads(softcapped_cross_entropy_fused, x, w, targets, 30.0, 1.0)
    third = _grads(softcapped_cross_entropy_fused, x, w, targets, 30.0, 1.0 / 3.0)
    for name, a, b in zip(("dx", "dw"), third[1:], one[1:]):
        a, b = a.double().flatten(), b.double().flatten()
        fitted_scale = (a @ b / (b @ b)).item()  # least squares a ≈ scale b: rounding noise averages out
        assert abs(3 * fitted_scale - 1) < 5e-4, f"{name}: gradients scaled by {fitted_scale:.6f}, not 1/3"


@pytest.mark.parametrize("tied", [True, False])
def test_model_fused_loss_matches_autograd(tied):
    """A whole model: the same loss and every parameter's gradient with model.lm_loss fused as with autograd (fp32),
    the head tied to the embedding or not; logits without targets are unchanged."""
    torch.manual_seed(0)
    ref = build_model(ModelConfig(**{**TINY_HYBRID, "tie_embeddings": tied}), "cpu")
    fused = build_model(ModelConfig(**{**TINY_HYBRID, "tie_embeddings": tied, "lm_loss": "fused"}), "cpu")
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused.load_state_dict(ref.state_dict())
    assert ref.fused_loss is None and fused.fused_loss is softcapped_cross_entropy_fused
    ids, targets = torch.randint(0, 300, (2, 16)), torch.randint(0, 300, (2, 16))
    losses = []
    for model in (ref, fused):
        loss = model(ids, targets=targets)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        assert torch.equal(fused(ids), ref(ids))


def test_choices_and_scoring():
    assert field_choices(ModelConfig, "lm_loss") == ("autograd", "fused")
    assert ModelConfig().lm_loss == "autograd"
    assert scoring_config(ModelConfig(**{**TINY_HYBRID, "lm_loss": "fused"})).lm_loss == "autograd"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_under_bf16_autocast_on_cuda():
    """On CUDA, compiled, under bf16 autocast as training runs it: the fused loss and the embedding's gradient within
    bf16 rounding of autograd's path."""
    torch.manual_seed(0)
    ref = build_model(ModelConfig(**TINY_HYBRID), "cuda")
    fused = build_model(ModelConfig(**{**TINY_HYBRID, "lm_loss": "fused"}), "cuda")
    fused.load_state_dict(ref.state_dict())
    ids, targets = torch.randint(0, 300, (4, 64), device="cuda"), torch.randint(0, 300, (4, 64), device="cuda")
    out = []
    for model in (ref, fused):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.compile(model)(ids, targets=targets)
        loss.backward()
        out.append((loss.detach(), model.tok_emb.weight.grad))
    assert abs(out[1][0].item() - out[0][0].item()) < 1e-2 * out[0][0].item()
    err = (out[1][1] - out[0][1]).abs().max().item()
    assert err <= 2e-2 * out[0][1].abs().max().item()
