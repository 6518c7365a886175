"""model.qk_rope "golf" (GQAttention with golf::qk_norm_rope, golf/qk_rope_kernel.py) against the "torch" path it
must equal: the same loss and parameter gradients on small hybrids (full and partial RoPE, MHA and GQA), in fp32.
On a machine without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, tests/conftest.py); with
the interpreter off a CPU model takes the torch path itself. The GPU test compiles both paths."""

import pytest
import torch
from conftest import TINY_HYBRID, assert_same_loss_and_grads, loss_and_grads

from golf.config import ModelConfig, field_choices
from golf.model import build_model, resolve_qk_rope, scoring_config

pytest.importorskip("triton", reason="triton is not installed: golf's query/key kernels need it")

VARIANTS = {"MAMA_gqa": {}, "AMA_partial_mha": {"layer_pattern": "AMA", "rope_dims": 8, "num_kv_heads": 2},
            "MAMA_block_norm_fold": {"block_norm": "golf_fold"}}


def _pair(variant: str, device: str = "cpu", seed: int = 0):
    """(torch path, golf path) models with the same random parameters (moved off their init, so the zero-initialized
    projections pass gradients to the attention's inputs)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY_HYBRID, **VARIANTS[variant]})
    ref = build_model(cfg, device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    golf = build_model(ModelConfig(**{**TINY_HYBRID, **VARIANTS[variant], "qk_rope": "golf"}), device)
    golf.load_state_dict(ref.state_dict())
    return ref, golf






@pytest.mark.parametrize("variant", list(VARIANTS))
def test_golf_path_matches_torch_path(variant, qk):
    ref, golf = _pair(variant)
    assert golf.kernel_paths["attn"].endswith("+golf_qk_rope") and ref.kernel_paths["attn"] == "sdpa"
    ids = torch.randint(0, 300, (2, 16))
    targets = torch.randint(0, 300, (2, 16))
    loss, grads = loss_and_grads(golf, ids, targets)
    assert_same_loss_and_grads(*loss_and_grads(ref, ids, targets), loss, grads, 2e-5)
    gains = [n for n in grads if n.endswith("attn.q_gain")]
    assert gains and all(grads[n].abs().max() > 0 for n in gains)


def test_resolve_choices_and_scoring(monkeypatch):
    assert field_choices(ModelConfig, "qk_rope") == ("torch", "golf")
    assert ModelConfig().qk_rope == "torch"
    assert resolve_qk_rope("torch", "cpu") is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert resolve_qk_rope("golf", "cpu") is None  # a CPU outside the interpreter: the torch path
    model = build_model(ModelConfig(**{**TINY_HYBRID, "qk_rope": "golf"}), "cpu")
    assert model.kernel_paths["attn"] == "sdpa"
    assert scoring_config(ModelConfig(**{**TINY_HYBRID, "qk_rope": "golf"})).qk_rope == "torch"


def test_nope_layers_take_the_torch_path(qk):
    """model.rope false: no rotation, so nothing for the op to do; the layers keep their own norm."""
    model = build_model(ModelConfig(**{**TINY_HYBRID, "rope": False, "qk_rope": "golf"}), "cpu")
    assert model.kernel_paths["attn"] == "sdpa"
    assert all(b.attn.qk_rope is None for b in model.blocks if hasattr(b, "attn"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_golf_path_matches_compiled_torch_path_on_cuda():
    """On CUDA, both paths under torch.compile: the same loss and gradients in fp32, close under bf16 autocast,
    and the op adds no graph break."""
    ref, golf = _pair("MAMA_gqa", device="cuda")
    ids = torch.randint(0, 300, (4, 64), device="cuda")
    targets = torch.randint(0, 300, (4, 64), device="cuda")
    eager = loss_and_grads(golf, ids, targets)
    ref_c, golf_c = torch.compile(ref), torch.compile(golf)
    assert_same_loss_and_grads(*loss_and_grads(ref_c, ids, targets), *loss_and_grads(golf_c, ids, targets), 1e-4)
    assert_same_loss_and_grads(*eager, *loss_and_grads(golf_c, ids, targets), 1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_ref, loss = ref_c(ids, targets=targets), golf_c(ids, targets=targets)
    assert abs(loss.item() - loss_ref.item()) < 1e-2 * abs(loss_ref.item())
    torch._dynamo.reset()
    assert torch._dynamo.explain(golf)(ids, targets=targets).graph_break_count == \
        torch._dynamo.explain(ref)(ids, targets=targets).graph_break_count
