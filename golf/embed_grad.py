"""The token embedding's weight gradient as PyTorch's own sorted reduction, opaque to torch.compile
(model.embed_grad "sorted"): the lookup stays an ordinary F.embedding that inductor fuses with what reads it, and
its backward calls ATen's embedding_dense_backward through one custom operator, golf::embedding_grad.

Why: inductor decomposes the lookup's backward into an accumulating index_put, which it lowers to atomic adds into
the (vocab, d) gradient: at hybrid_12_b131k's 131,072 tokens, d 512 and vocab 1,024 that is 67M fp32 atomics onto
512K addresses, many tokens on the same rows, fused with the first norm's backward into one kernel of 0.55 ms a
step on an H200 (bench/RESULTS.md 2026-12-02 twentieth block's profile). ATen's CUDA kernel for more than 3,072
indices sorts them and sums each row's run of gradients (PyTorch's aten/src/ATen/native/cuda/Embedding.cu and
EmbeddingBackwardKernel.cu): no atomics on hot rows, and the same sums in a fixed order (deterministic).

The gradient is the same function (tests/test_embed_grad.py checks it against autograd's); on a CPU the op runs
ATen's CPU kernel. Training-only: scoring never differentiates the embedding through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.library.custom_op("golf::embedding_grad", mutates_args=())
def embedding_grad(grad: Tensor, ids: Tensor, rows: int) -> Tensor:
    """The (rows, d) weight gradient of F.embedding(ids, weight) for grad (..., d) at the lookup's output."""
    return torch.ops.aten.embedding_dense_backward(grad.contiguous(), ids, rows, -1, False)


@embedding_grad.register_fake
def _(grad, ids, rows):
    return grad.new_empty(rows, grad.shape[-1])


class _SortedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return F.embedding(ids, weight)  # (..., d)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        return embedding_grad(grad, ids, ctx.rows), None


def embedding_sorted_grad(ids: Tensor, weight: Tensor) -> Tensor:
    """F.embedding(ids, weight), its weight gradient by golf::embedding_grad (module docstring)."""
    return _SortedEmbedding.apply(weight, ids)
