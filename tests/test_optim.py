"""Muon / Newton–Schulz and the optimizer grouping (CPU, no data)."""

import dataclasses

import pytest
import torch

import golf.optim
from golf.config import TrainConfig, load_params
from golf.model import build_model
from golf.optim import Muon, build_adamw, build_optimizers, newton_schulz
from golf.param_groups import OPTIM_GROUPS
from tests.conftest import REPO


def _tiny_model():
    p = load_params(REPO / "params.yaml", [
        "data.vocab_size=512", "model.vocab_size=512", "model.d_model=32", "model.layer_pattern=MAM",
        "model.d_state=8", "model.expand=2.0", "model.headdim=16", "model.chunk_size=8", "model.num_heads=2",
        "model.num_kv_heads=1", "model.bigram_buckets=64", "model.bigram_dim=8", "model.tie_embeddings=false"])
    torch.manual_seed(0)
    return build_model(p.model, "cpu"), p.train


@pytest.mark.parametrize("shape", [(32, 128), (128, 32), (96, 256), (8, 512)])
def test_newton_schulz_rectangular_is_nearly_orthogonal(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    o = newton_schulz(g, steps=5)
    assert o.shape == g.shape and o.dtype == g.dtype
    s = torch.linalg.svdvals(o)
    # the published coefficients trade exactness for speed: singular values land in about [0.7, 1.2]
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh  # the exact nearest semi-orthogonal matrix
    cos = (o * polar).sum() / (o.norm() * polar.norm())
    assert cos > 0.97


def test_newton_schulz_square_needs_more_steps_for_tiny_singular_values():
    g = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    s5 = torch.linalg.svdvals(newton_schulz(g, steps=5))
    s10 = torch.linalg.svdvals(newton_schulz(g, steps=10))
    assert (s5 > 0.6).float().mean() > 0.9 and s5.max() < 1.25  # the bulk is in the band after 5 steps
    assert s10.min() > 0.6 and s10.max() < 1.25  # every direction after 10
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(12))


def _newton_schulz_written_out(g: torch.Tensor, steps: int) -> torch.Tensor:
    """The quintic iteration X <- a X + (b A + c A^2) X, A = X X^T, as the module doc writes it (fp32)."""
    a, b, c = golf.optim.NS_COEFFS
    x = g.float().mT if g.shape[-2] > g.shape[-1] else g.float()
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.mT if g.shape[-2] > g.shape[-1] else x


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (16, 16)])
def test_newton_schulz_matches_the_written_out_iteration(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(newton_schulz(g, steps=5), _newton_schulz_written_out(g, 5), rtol=1e-4, atol=1e-5)


def test_newton_schulz_of_a_stack_is_each_matrix_alone():
    gen = torch.Generator().manual_seed(4)
    for shape in [(3, 24, 40), (2, 40, 24)]:
        stack = torch.randn(*shape, generator=gen) * torch.tensor([1.0, 1e-3, 50.0][:shape[0]])[:, None, None]
        batched = newton_schulz(stack)
        for i in range(shape[0]):
            assert torch.allclose(batched[i], newton_schulz(stack[i]), rtol=1e-5, atol=1e-6)


def _muon_reference_step(params, bufs, lr, mom, ns_steps, wd, nesterov=True):
    """Muon one parameter at a time, as the algorithm is written (the batched optimizer must match it)."""
    with torch.no_grad():
        for p, buf in zip(params, bufs):
            buf.mul_(mom).add_(p.grad)
            update = p.grad + mom * buf if nesterov else buf
            update = newton_schulz(update, ns_steps)
            p.mul_(1 - lr * wd)
            p.add_(update, alpha=-lr * max(1.0, p.shape[0] / p.shape[1]) ** 0.5)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_batched_by_shape_equals_one_matrix_at_a_time(nesterov):
    gen = torch.Generator().manual_seed(5)
    shapes = [(16, 32), (32, 16), (16, 32), (8, 8), (32, 16), (16, 32)]  # three shapes, mixed order
    init = [torch.randn(*s, generator=gen) for s in shapes]
    fast = [torch.nn.Parameter(w.clone()) for w in init]
    ref = [torch.nn.Parameter(w.clone()) for w in init]
    ref_bufs = [torch.zeros_like(w) for w in init]
    opt = Muon(fast, lr=0.02, momentum=0.9, ns_steps=5, weight_decay=0.1, nesterov=nesterov)
    for _ in range(3):
        grads = [torch.randn(*s, generator=gen) for s in shapes]
        for p, q, g in zip(fast, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        _muon_reference_step(ref, ref_bufs, 0.02, 0.9, 5, 0.1, nesterov)
    for p, q, w in zip(fast, ref, init):
        assert not torch.equal(p.detach(), w)
        assert torch.allclose(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    for p, buf in zip(fast, ref_bufs):
        assert torch.allclose(opt.state[p]["momentum_buffer"], buf, rtol=1e-6, atol=1e-6)


def test_muon_reduces_a_quadratic():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(32, 64, generator=gen), torch.randn(16, 64, generator=gen)
    w = torch.nn.Parameter(torch.zeros(16, 32))
    opt = Muon([w], lr=0.05, momentum=0.9)

    def loss_fn():
        return ((w @ a - b) ** 2).mean()

    start = loss_fn().item()
    for step in range(60):
        for g in opt.param_groups:  # decay the lr: Muon's fixed-size steps otherwise hover around the optimum
            g["lr"] = 0.05 * (1 - step / 60)
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    best = torch.linalg.lstsq(a.T, b.T).solution.T  # least-squares optimum
    floor = ((best @ a - b) ** 2).mean().item()
    assert loss_fn().item() < floor + 0.1 * (start - floor)


def test_muon_weight_decay_is_decoupled_and_rejects_non_matrices():
    w = torch.nn.Parameter(torch.ones(4, 4))
    w.grad = torch.zeros(4, 4)  # no gradient signal: only the decay acts
    Muon([w], lr=0.1, weight_decay=0.5).step()
    assert torch.allclose(w.detach(), torch.full((4, 4), 1 - 0.1 * 0.5))
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.ones(4))], lr=0.1)


def test_every_parameter_in_exactly_one_group_and_optimizer():
    model, tcfg = _tiny_model()
    groups = model.param_groups()
    assert set(groups) == set(OPTIM_GROUPS)
    ids = [id(p) for key in OPTIM_GROUPS for _, p in groups[key]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    names = {key: {n for n, _ in groups[key]} for key in OPTIM_GROUPS}
    assert any("in_proj" in n for n in names["mamba_matrix"]) and any("out_proj" in n for n in names["mamba_matrix"])
    assert any(n.endswith("A_log") for n in names["scalar"]) and any("conv1d" in n for n in names["scalar"])
    assert "tok_emb.weight" in names["embed"]

    tcfg = dataclasses.replace(tcfg, lr_matrix=0.011, lr_mamba=0.022, lr_embed=0.033, lr_scalar=0.044)
    opts = build_optimizers(model, tcfg)
    owner = {}
    for opt in opts:
        for g in opt.param_groups:
            assert g["initial_lr"] == g["lr"]
            for p in g["params"]:
                assert id(p) not in owner
                owner[id(p)] = (type(opt).__name__, g["lr"])
    assert set(owner) == {id(p) for p in model.parameters()}
    expected = {"matrix": ("Muon", 0.011), "mamba_matrix": ("Muon", 0.022), "embed": ("AdamW", 0.033),
                "scalar": ("AdamW", 0.044)}
    for key, want in expected.items():
        assert all(owner[id(p)] == want for _, p in groups[key]), key


def test_a_parameter_missing_from_the_groups_is_an_error():
    model, _ = _tiny_model()
    full = model.param_groups()
    dropped = {k: v[1:] if k == "scalar" else v for k, v in full.items()}
    model.param_groups = lambda: dropped
    with pytest.raises(ValueError, match="no optimizer group"):
        build_optimizers(model, TrainConfig())
    twice = {k: v + full["scalar"][:1] if k == "embed" else v for k, v in full.items()}
    model.param_groups = lambda: twice
    with pytest.raises(ValueError, match="groups 'embed' and 'scalar'|groups 'scalar' and 'embed'"):
        build_optimizers(model, TrainConfig())


def test_fused_adamw_matches_the_reference_loop():
    """The fused AdamW kernel (CUDA's fast path, run here on CPU) and PyTorch's per-tensor loop take the same
    steps: two groups with their own lr and weight decay, lr changed between steps as the schedule does."""
    model, tcfg = _tiny_model()
    tcfg = dataclasses.replace(tcfg, lr_embed=0.05, lr_scalar=0.02)
    groups = model.param_groups()
    copies = {}
    for fused in (False, True):
        params = {n: torch.nn.Parameter(p.detach().clone()) for key in ("embed", "scalar") for n, p in groups[key]}
        opt = build_adamw([{"params": [params[n] for n, _ in groups["embed"]], "lr": 0.05, "weight_decay": 0.1},
                           {"params": [params[n] for n, _ in groups["scalar"]], "lr": 0.02, "weight_decay": 0.0}],
                          tcfg, fused=fused)
        assert opt.defaults["fused"] is fused
        gen = torch.Generator().manual_seed(0)
        for step in range(4):
            for g in opt.param_groups:
                g["lr"] *= 0.9
            for p in params.values():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        copies[fused] = params
    moved = 0
    for n, p in copies[False].items():
        torch.testing.assert_close(copies[True][n], p, rtol=1e-5, atol=1e-6, msg=n)
        moved += int(not torch.equal(p, dict(groups["embed"] + groups["scalar"])[n]))
    assert moved == len(copies[False])  # every tensor took steps


def test_weight_decay_per_group_is_decoupled_and_follows_the_schedule():
    """Each group decays at its own rate, p <- p*(1 - lr*wd) with the lr the schedule set; a negative group
    value falls back to train.weight_decay (old configs: matrices and embeddings, never the scalars)."""
    from golf.optim import weight_decays

    _, tcfg = _tiny_model()
    old = dataclasses.replace(tcfg, weight_decay=0.3)
    assert weight_decays(old) == {"matrix": 0.3, "mamba_matrix": 0.3, "embed": 0.3, "scalar": 0.0}
    tcfg = dataclasses.replace(tcfg, weight_decay=0.3, weight_decay_matrix=0.5, weight_decay_embed=0.25,
                               weight_decay_scalar=0.125, lr_matrix=0.1, lr_mamba=0.2, lr_embed=0.4, lr_scalar=0.8)
    model, _ = _tiny_model()
    groups = model.param_groups()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opts = build_optimizers(model, tcfg)
    sched = 0.5  # what the training loop does to every group's lr
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * sched
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Muon's update of a zero gradient is zero; Adam's is 0/(0+eps) = 0
    for opt in opts:
        opt.step()
    want = {"matrix": 1 - 0.1 * sched * 0.5, "mamba_matrix": 1 - 0.2 * sched * 0.5,
            "embed": 1 - 0.4 * sched * 0.25, "scalar": 1 - 0.8 * sched * 0.125}
    for key, factor in want.items():
        assert groups[key]
        for n, p in groups[key]:
            torch.testing.assert_close(p.detach(), before[n] * factor, msg=n)


def test_grad_clip_bounds_the_global_gradient_norm():
    """train.grad_clip: the optimizer step sees gradients of total norm grad_clip when they were larger."""
    from golf.train import optimizer_step

    model, _ = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = 10 * torch.randn(p.shape, generator=gen)
    optimizer_step(model, [sgd], 0.5, [], 0.0)
    step = torch.sqrt(sum(((before[n] - p.detach()) ** 2).sum() for n, p in model.named_parameters()))
    assert step.item() == pytest.approx(0.5, rel=1e-4)
