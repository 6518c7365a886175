"""model.embed_grad "sorted" (golf/embed_grad.py): the token embedding's weight gradient by ATen's sorted reduction
through golf::embedding_grad, against autograd's, alone (repeated and unused rows, any leading shape) and in a whole
model, eager and compiled; the op's schema and fake tensor by torch.library.opcheck; scoring never builds it."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_HYBRID

from golf.config import ModelConfig, field_choices
from golf.embed_grad import embedding_sorted_grad
from golf.model import build_model, scoring_config


@pytest.mark.parametrize("shape", [(3, 17), (5,), (2, 3, 4)])
def test_matches_autograd(shape):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(11, 6, generator=gen)
    ids = torch.randint(0, 7, shape, generator=gen)  # rows 7..10 unused, most used many times
    grad = torch.randn(*shape, 6, generator=gen)
    got_w = weight.clone().requires_grad_(True)
    out = embedding_sorted_grad(ids, got_w)
    out.backward(grad)
    want_w = weight.clone().requires_grad_(True)
    want = F.embedding(ids, want_w)
    want.backward(grad)
    assert torch.equal(out, want)
    torch.testing.assert_close(got_w.grad, want_w.grad, rtol=1e-6, atol=1e-6)
    assert got_w.grad[7:].abs().max() == 0


def test_opcheck():
    gen = torch.Generator().manual_seed(1)
    torch.library.opcheck(torch.ops.golf.embedding_grad.default,
                          (torch.randn(4, 9, 5, generator=gen), torch.randint(0, 6, (4, 9), generator=gen), 6))


@pytest.mark.parametrize("compiled", [False, True])
def test_model_sorted_grad_matches_autograd(compiled):
    """A whole model (tied head, so the embedding's gradient also gets the head's): the same loss and gradients;
    compiled, in one graph."""
    torch.manual_seed(0)
    ref = build_model(ModelConfig(**TINY_HYBRID), "cpu")
    golf = build_model(ModelConfig(**{**TINY_HYBRID, "embed_grad": "sorted"}), "cpu")
    golf.load_state_dict(ref.state_dict())
    ids, targets = torch.randint(0, 300, (2, 16)), torch.randint(0, 300, (2, 16))
    grads = []
    for model in (ref, golf):
        run = torch.compile(model) if compiled else model
        loss = run(ids, targets=targets)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6, msg=name)
    if compiled:
        torch._dynamo.reset()
        assert torch._dynamo.explain(golf)(ids, targets=targets).graph_break_count == 0


def test_choices_and_scoring():
    assert field_choices(ModelConfig, "embed_grad") == ("autograd", "sorted")
    assert ModelConfig().embed_grad == "autograd"
    assert build_model(ModelConfig(**TINY_HYBRID), "cpu").embed_lookup is None
    assert scoring_config(ModelConfig(**{**TINY_HYBRID, "embed_grad": "sorted"})).embed_grad == "autograd"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_as_cuda_graphs_on_cuda():
    """On CUDA under torch.compile's reduce-overhead mode (the step replayed as CUDA graphs, as hybrid_12_b131k
    trains): ATen's sorted reduction captures, and three steps' gradients match autograd's path, fp32."""
    torch.manual_seed(0)
    ref = build_model(ModelConfig(**TINY_HYBRID), "cuda")
    golf = build_model(ModelConfig(**{**TINY_HYBRID, "embed_grad": "sorted"}), "cuda")
    golf.load_state_dict(ref.state_dict())
    runs = {id(m): torch.compile(m, mode="reduce-overhead") for m in (ref, golf)}
    for _ in range(3):
        ids, targets = torch.randint(0, 300, (4, 64), device="cuda"), torch.randint(0, 300, (4, 64), device="cuda")
        grads = []
        for model in (ref, golf):
            model.zero_grad(set_to_none=True)
            runs[id(model)](ids, targets=targets).backward()
            grads.append(model.tok_emb.weight.grad.clone())
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
