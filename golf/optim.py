"""Optimizers: Muon for 2-D block matrices, Adam for embeddings and scalars.

Muon (Jordan et al. 2024, github.com/KellerJordan/Muon): SGD-momentum whose update is replaced by its
nearest semi-orthogonal matrix, computed with a quintic Newton–Schulz iteration. The coefficients
(3.4445, -4.7750, 2.0315) and the max(1, rows/cols)^0.5 update scale are those of that reference.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalize a 2-D matrix (singular values pushed into ~[0.7, 1.2])."""
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16) if g.is_cuda else g.float()
    transposed = x.shape[0] > x.shape[1]
    if transposed:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows)
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.T
    return x.to(g.dtype)


class Muon(Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0,
                 nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                buf = self.state[p].setdefault("momentum", torch.zeros_like(g))
                buf.mul_(group["momentum"]).add_(g)
                update = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                update = newton_schulz(update, group["ns_steps"])
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def build_optimizers(model, tcfg) -> list[Optimizer]:
    """One Muon per matrix group (block matrices, Mamba projections), one AdamW for embeddings + scalars.
    Each param group remembers its base lr in `initial_lr` so the schedule can scale it."""
    groups = model.param_groups()
    opts: list[Optimizer] = []
    for key, lr in (("matrix", tcfg.lr_matrix), ("mamba_matrix", tcfg.lr_mamba)):
        params = [p for _, p in groups[key]]
        if params:
            opts.append(Muon(params, lr=lr, momentum=tcfg.muon_momentum, ns_steps=tcfg.muon_ns_steps,
                             weight_decay=tcfg.weight_decay))
    adam_groups = [{"params": [p for _, p in groups["embed"]], "lr": tcfg.lr_embed},
                   {"params": [p for _, p in groups["scalar"]], "lr": tcfg.lr_scalar}]
    adam_groups = [g for g in adam_groups if g["params"]]
    if adam_groups:
        opts.append(torch.optim.AdamW(adam_groups, betas=(tcfg.adam_beta1, tcfg.adam_beta2), eps=1e-10,
                                      weight_decay=0.0, fused=False))
    for opt in opts:
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return opts
