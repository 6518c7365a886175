"""The training loss with its logit gradient made in the forward pass (model.lm_loss "fused"): the tied LM head,
the logit softcap and the mean cross-entropy as one autograd function whose forward also computes the gradient of
the loss with respect to the logits and keeps it (bf16) for the backward, which is then two matrix products.

Why: under torch.compile the loss's forward reads the (tokens, vocab) logits once for their log-sum-exp, and its
backward reads them again to make their gradient (the softmax less the one-hot target, through the softcap's
tanh), 0.17 + 0.25 ms of hybrid_12_b131k's step on an H200 at 131,072 tokens and vocab 1,024 (bench/RESULTS.md,
2026-12-02 twentieth block's profile). The gradient depends on nothing the backward brings but the loss's own
gradient, a scalar: here one pass over each row gives the loss and the gradient together, and the scalar scales the
small matrices instead of the big one (grad_x = g (go W), grad_W = go (g^T x)).

What it computes, for x (N, d) and the head's weight W (V, d) in the compute dtype, targets (N,) in [0, V) (golf's
batches have no ignored positions), cap > 0 the softcap (0: none):
    logits = x W^T in fp32,  z = cap tanh(logits / cap),  lse = logsumexp(z),  loss = mean(lse - z[target])
    g = (softmax(z) - onehot(target)) (1 - (z / cap)^2) / N       (kept in x's dtype, as autograd's path casts it
                                                                   for the head's backward matmuls)
The same function as GolfLM's autograd path (F.linear, tanh, F.cross_entropy), with the same roundings on the way
to the matmuls; tests/test_lm_loss.py checks the loss and both gradients against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softcapped_cross_entropy_reference(x: Tensor, w: Tensor, targets: Tensor, cap: float) -> Tensor:
    """GolfLM's autograd path: logits = F.linear(x, w) in fp32, softcapped, F.cross_entropy (mean) → loss ()."""
    logits = F.linear(x, w).float()  # (N, V)
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return F.cross_entropy(logits, targets)


class _FusedSoftcapCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, targets: Tensor, cap: float) -> Tensor:
        logits = F.linear(x, w).float()  # (N, V)
        z = cap * torch.tanh(logits / cap) if cap > 0 else logits
        lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (N, 1)
        onehot = torch.arange(z.shape[-1], device=z.device)[None, :] == targets[:, None]  # (N, V)
        loss = (lse.squeeze(1) - torch.where(onehot, z, 0.0).sum(-1)).mean()
        g = torch.exp(z - lse) - onehot.to(z.dtype)  # dloss/dz a row, before the mean
        if cap > 0:
            g = g * (1 - (z / cap).square())  # through the softcap's tanh
        ctx.save_for_backward(x, w, (g / z.shape[0]).to(x.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        x, w, g = ctx.saved_tensors  # g (N, V): the logits' gradient for a loss gradient of 1
        # The scalar multiplies each product's result in fp32, then the result is rounded once more to x's dtype:
        # rounding the scalar itself to bf16 would scale every gradient by the same wrong factor (1/3 → 0.33398).
        gx = ((g @ w).float() * grad_loss).to(x.dtype)  # (N, d)
        gw = ((g.t() @ x).float() * grad_loss).to(w.dtype)  # (V, d)
        return gx, gw, None, None


def softcapped_cross_entropy_fused(x: Tensor, w: Tensor, targets: Tensor, cap: float) -> Tensor:
    """softcapped_cross_entropy_reference's loss, with the logits' gradient made in the forward (module docstring).
    x (N, d), w (V, d) in one dtype, targets (N,) int64 in [0, V)."""
    return _FusedSoftcapCrossEntropy.apply(x, w, targets, float(cap))
