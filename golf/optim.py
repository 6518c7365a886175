"""Optimizers: Muon for 2-D block matrices (attention, MLP, Mamba in/out projections), AdamW for
embeddings and scalars.

Muon (K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
kellerjordan.github.io/posts/muon; reference code github.com/KellerJordan/Muon) is SGD with Nesterov
momentum whose update matrix is replaced by an approximation of its nearest semi-orthogonal matrix
U Vᵀ (from the SVD U S Vᵀ). The approximation is a quintic Newton–Schulz iteration
X ← a X + (b A + c A²) X with A = X Xᵀ; the coefficients (a, b, c) = (3.4445, -4.7750, 2.0315) are the
ones published in that post, chosen to push every singular value into roughly [0.7, 1.2] in 5 steps
rather than converge exactly to 1. The update is scaled by sqrt(max(1, rows/cols)), as in that
reference, so tall matrices get an RMS update comparable to square ones.

Groups (from `GolfLM.param_groups()`): "matrix" → Muon at lr_matrix, "mamba_matrix" → Muon at lr_mamba,
"embed" → AdamW at lr_embed, "scalar" → AdamW at lr_scalar. Weight decay is decoupled (p ← p·(1 − lr·wd),
lr as the schedule sets it) and per group (`weight_decays`): train.weight_decay_matrix for both Muon groups,
train.weight_decay_embed for the embeddings (each negative = train.weight_decay), train.weight_decay_scalar
for the scalars (norm gains, SSM dynamics A_log/D/dt_bias, conv weights), 0 by default: their scale is
meaningful. The compressed artifact's size tracks the weights' RMS, which decay keeps down.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer
from torch.profiler import record_function

from golf.param_groups import OPTIM_GROUPS

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalize a matrix, or each matrix of a stack (..., rows, cols): the result has
    g's singular vectors and singular values in about [0.7, 1.2]. Runs in bf16 on CUDA (the iteration
    tolerates it and it is ~2x faster), fp32 elsewhere, unless `dtype` is given. Returns g's dtype."""
    if g.ndim < 2:
        raise ValueError(f"newton_schulz expects a matrix or a stack of matrices, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFS
    dtype = dtype or (torch.bfloat16 if g.is_cuda else torch.float32)
    x = g.to(dtype).reshape(-1, *g.shape[-2:])  # (n, rows, cols)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:  # iterate on the wide orientation: the Gram matrix X Xᵀ is then the smaller one
        x = x.mT
    # Frobenius norm >= spectral norm, so every singular value starts <= 1
    x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        # three batched matmuls per step, the scalar terms folded into them: the optimizer runs eagerly, so
        # each op is a kernel launch the host pays for (a written-out form is tests/test_optim.py's reference)
        gram = torch.bmm(x, x.mT)  # (n, r, r), r = min(rows, cols)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A²
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A²) X
    if transposed:
        x = x.mT
    return x.reshape(g.shape).to(g.dtype)


class Muon(Optimizer):
    """Muon for 2-D parameters: momentum (Nesterov by default) → Newton–Schulz → scaled step.

    Parameters of one shape are orthogonalized together, as one stack through batched matmuls: the
    iteration acts on each matrix alone, so the result is the per-matrix one (tests/test_optim.py), with
    a few kernel launches per shape instead of per parameter (a 9-layer model has 54 matrices, 4 shapes).

    A group's lr and momentum may be 0-d tensors instead of floats (golf.optim_graph captures the step as a CUDA
    graph and feeds them from device memory); the arithmetic is the same, as tensor ops."""

    def __init__(self, params, lr: float, momentum: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0,
                 nesterov: bool = True):
        super().__init__(params, {"lr": lr, "momentum": momentum, "ns_steps": ns_steps,
                                  "weight_decay": weight_decay, "nesterov": nesterov})
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:  # a programming error in the grouping, not user input
                    raise ValueError(f"Muon handles 2-D matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            by_shape: dict[tuple, list[torch.nn.Parameter]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
            for (shape, _, _), ps in by_shape.items():
                grads = [p.grad for p in ps]
                bufs = [self._momentum_buffer(p) for p in ps]
                torch._foreach_mul_(bufs, mom)
                torch._foreach_add_(bufs, grads)
                if not group["nesterov"]:
                    updates = bufs
                elif isinstance(mom, torch.Tensor):  # foreach's alpha takes a number only
                    updates = torch._foreach_add(grads, torch._foreach_mul(bufs, mom))
                else:
                    updates = torch._foreach_add(grads, bufs, alpha=mom)
                ortho = newton_schulz(torch.stack(updates), group["ns_steps"])  # (n, rows, cols)
                scale = max(1.0, shape[0] / shape[1]) ** 0.5
                if group["weight_decay"]:
                    torch._foreach_mul_(ps, 1 - lr * group["weight_decay"])
                if isinstance(lr, torch.Tensor):
                    ortho.mul_(-lr * scale)
                    torch._foreach_add_(ps, list(ortho.unbind(0)))
                else:
                    torch._foreach_add_(ps, list(ortho.unbind(0)), alpha=-lr * scale)
        return loss

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        """p's momentum buffer, zeros at its first step (made once: a setdefault would build and drop a zero
        tensor, a fill launch, every step)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        return state["momentum_buffer"]


def build_optimizers(model, tcfg) -> list[Optimizer]:
    """Muon for each non-empty matrix group, one AdamW for embeddings + scalars (see the module doc).

    Every parameter must land in exactly one group; each param group keeps its base lr in `initial_lr`
    so the training loop can scale it by the schedule."""
    groups = model.param_groups()
    _check_partition(model, groups)
    wd = weight_decays(tcfg)
    opts: list[Optimizer] = []
    for key, lr in (("matrix", tcfg.lr_matrix), ("mamba_matrix", tcfg.lr_mamba)):
        params = [p for _, p in groups[key]]
        if params:
            opts.append(Muon(params, lr=lr, momentum=tcfg.muon_momentum, ns_steps=tcfg.muon_ns_steps,
                             weight_decay=wd[key]))
    adam_groups = [{"params": [p for _, p in groups["embed"]], "lr": tcfg.lr_embed, "weight_decay": wd["embed"]},
                   {"params": [p for _, p in groups["scalar"]], "lr": tcfg.lr_scalar, "weight_decay": wd["scalar"]}]
    adam_groups = [g for g in adam_groups if g["params"]]
    if adam_groups:
        opts.append(build_adamw(adam_groups, tcfg))
    for opt in opts:
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return opts


def weight_decays(tcfg) -> dict[str, float]:
    """The decoupled weight decay of each optimizer group (module doc): a negative per-group value means
    train.weight_decay, so configs that set only train.weight_decay train as before."""
    def pick(v: float) -> float:
        return tcfg.weight_decay if v < 0 else v

    matrix = pick(tcfg.weight_decay_matrix)
    return {"matrix": matrix, "mamba_matrix": matrix, "embed": pick(tcfg.weight_decay_embed),
            "scalar": tcfg.weight_decay_scalar}


def build_adamw(groups: list[dict], tcfg, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `groups`. On CUDA the fused kernel (the fast path: one multi-tensor launch per step, where
    the hybrid's 87 embedding and scalar tensors otherwise cost the host a dozen foreach launches and a Python
    loop over every tensor); elsewhere PyTorch's default, a per-tensor loop on CPU (the reference path, which
    the CPU tests' bit-exact runs use). `fused` forces one or the other (tests/test_optim.py compares them)."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"])
    # eps 1e-10: embeddings and gains see tiny second moments early on; the default 1e-8 would damp them
    return torch.optim.AdamW(groups, betas=(tcfg.adam_beta1, tcfg.adam_beta2), eps=1e-10, fused=fused)


def _check_partition(model, groups: dict) -> None:
    """Each trainable parameter in exactly one of the four groups (a silent miss would never train)."""
    unknown = set(groups) - set(OPTIM_GROUPS)
    if unknown:
        raise ValueError(f"param_groups() returned unknown group(s) {sorted(unknown)}; expected {OPTIM_GROUPS}")
    seen: dict[int, str] = {}
    for key in OPTIM_GROUPS:
        for name, p in groups.get(key, []):
            if id(p) in seen:
                raise ValueError(f"parameter {name!r} is in optimizer groups {seen[id(p)]!r} and {key!r}")
            seen[id(p)] = key
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"parameters in no optimizer group: {missing}")


def update_weights(model, opts, grad_clip: float, ema: list[torch.Tensor], ema_weight) -> None:
    """One step of golf.train.optimizer_step before it clears the gradients (what golf.optim_graph captures):
    clip the gradients to total norm grad_clip (> 0), step every optimizer, and move the fp32 EMA copy (`ema`, one
    tensor per parameter; empty = no EMA) toward the weights by ema_weight (1 - the EMA's decay: a float, or a 0-d
    tensor in a captured step)."""
    with record_function("golf/optimizer"):
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        for opt in opts:
            opt.step()
    if ema:
        # no detach needed; fp32 weights as they are (a .float() per tensor is one more op)
        with torch.no_grad(), record_function("golf/ema"):
            weights = [p if p.dtype == torch.float32 else p.float() for p in model.parameters()]
            if isinstance(ema_weight, torch.Tensor):  # foreach lerp takes a number: a tensor would be read (a sync)
                step = torch._foreach_sub(weights, ema)
                torch._foreach_mul_(step, ema_weight)
                torch._foreach_add_(ema, step)
            else:
                torch._foreach_lerp_(ema, weights, ema_weight)
