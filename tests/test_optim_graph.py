"""train.optimizer_graph (golf/optim_graph.py): Muon with tensor lr and momentum against floats, the EMA with a tensor
weight, the graphed step's eager calls on a CPU against golf.train.optimizer_step bit for bit, its scalars in slot
order, the one-line error for a parameter without a gradient, and on a GPU the captured step against the eager one
over steps whose learning rates, momentum and EMA decay change."""

import copy
import dataclasses

import pytest
import torch

from golf.config import load_params
from golf.errors import TrainingError
from golf.model import build_model
from golf.optim import Muon, build_optimizers, update_weights
from golf.optim_graph import GraphedOptimizerStep, graphed_step_for
from golf.train import optimizer_step
from tests.conftest import REPO

TINY = ["data.vocab_size=512", "model.vocab_size=512", "model.d_model=32", "model.layer_pattern=MAM",
        "model.d_state=8", "model.expand=2.0", "model.headdim=16", "model.chunk_size=8", "model.num_heads=2",
        "model.num_kv_heads=1", "model.bigram_buckets=64", "model.bigram_dim=8", "model.tie_embeddings=false",
        "train.grad_clip=1.0"]


def _setup(device="cpu"):
    p = load_params(REPO / "params.yaml", TINY + ["model.ssm_backend=reference"] * (device == "cpu"))
    torch.manual_seed(0)
    model = build_model(p.model, device)
    opts = build_optimizers(model, p.train)
    ema = [q.detach().clone().float() for q in model.parameters()]
    return model, opts, ema, p.train


def _set_grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(p.device) * 0.1


def _schedule(opts, step):
    """Changing lrs and Muon momentum, as golf.train's apply_schedule sets them each step."""
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * (1.0 - 0.1 * step)
            if isinstance(opt, Muon):
                g["momentum"] = 0.85 + 0.02 * step


def _graphed_and_eager(device: str, steps: int):
    """A model stepped `steps` times through GraphedOptimizerStep and an eager twin through optimizer_step, on the
    same gradients, lrs, Muon momentum and EMA decay, each changing every step → (graphed, [(ours, twin's) weights
    and EMA tensors])."""
    model, opts, ema, tcfg = _setup(device)
    twin = copy.deepcopy(model)
    twin_opts, twin_ema = build_optimizers(twin, tcfg), [e.clone() for e in ema]
    graphed = GraphedOptimizerStep(model, opts, tcfg.grad_clip, ema)
    for step in range(steps):
        for m, o in ((model, opts), (twin, twin_opts)):
            _set_grads(m, step)
            _schedule(o, step)
        decay = 0.9 + 0.01 * step
        optimizer_step(model, opts, tcfg.grad_clip, ema, decay, graphed)
        optimizer_step(twin, twin_opts, tcfg.grad_clip, twin_ema, decay)
        assert all(q.grad is None for q in model.parameters())
    return graphed, [*zip(model.parameters(), twin.parameters(), strict=True), *zip(ema, twin_ema, strict=True)]


def test_muon_takes_tensor_lr_and_momentum():
    ps = [torch.nn.Parameter(torch.randn(16, 24, generator=torch.Generator().manual_seed(i))) for i in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    start = [p.detach().clone() for p in ps]
    a = Muon(ps, lr=0.02, momentum=0.9, weight_decay=0.1)
    b = Muon(qs, lr=0.02, momentum=0.9, weight_decay=0.1)
    for step in range(3):
        for p, q in zip(ps, qs, strict=True):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(10 + step))
            q.grad = p.grad.clone()
        a.step()
        b.param_groups[0]["lr"], b.param_groups[0]["momentum"] = torch.tensor(0.02), torch.tensor(0.9)
        b.step()
    for p, q, p0 in zip(ps, qs, start, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)  # fp32 scalars instead of Python floats
        assert (p - p0).abs().max() > 1e-3  # three real steps, not a no-op


def test_update_weights_takes_a_tensor_ema_weight():
    model, opts, ema, tcfg = _setup()
    twin, twin_ema = copy.deepcopy(model), [e.clone() for e in ema]
    twin_opts = build_optimizers(twin, tcfg)
    _set_grads(model, 1)
    _set_grads(twin, 1)
    update_weights(model, opts, 1.0, ema, 0.25)
    update_weights(twin, twin_opts, 1.0, twin_ema, torch.tensor(0.25))
    for e, f in zip(ema, twin_ema, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-6, atol=1e-7)


def test_tensor_scalars_are_never_read_back_to_the_host():
    """What a CUDA graph captures may not read a tensor's value on the host (aten._local_scalar_dense, .item(): a
    sync, which a capture refuses): Muon with tensor lr and momentum and the EMA with a tensor weight dispatch none.
    (AdamW runs fused on CUDA, whose tensor lr PyTorch documents as capturable; on a CPU it is another kernel.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ScalarReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.reads += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    model, opts, ema, _ = _setup()
    muon = [o for o in opts if isinstance(o, Muon)]
    for opt in muon:
        for g in opt.param_groups:
            g["lr"], g["momentum"] = torch.tensor(0.02), torch.tensor(0.9)
    _set_grads(model, 0)
    with ScalarReads() as mode:
        update_weights(model, muon, 0.0, ema, torch.tensor(0.01))
    assert mode.reads == 0
    with ScalarReads() as mode:  # the probe sees a read where there is one
        torch.tensor(0.5).item()
    assert mode.reads == 1


def test_graphed_step_runs_eagerly_on_a_cpu_bit_for_bit():
    graphed, pairs = _graphed_and_eager("cpu", 3)
    assert not graphed.replaying and graphed.calls == 3
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


def test_scalars_follow_the_param_groups_then_the_ema_weight():
    model, opts, ema, tcfg = _setup()
    graphed = GraphedOptimizerStep(model, opts, tcfg.grad_clip, ema)
    _schedule(opts, 2)
    want = []
    for opt in opts:
        for g in opt.param_groups:
            want += [g["lr"], g["momentum"]] if isinstance(opt, Muon) else [g["lr"]]
    assert graphed.scalar_values(0.99) == pytest.approx(want + [0.01])
    assert len(graphed.slots) == len(want) and sum(isinstance(o, Muon) for o in opts) >= 1


def test_a_parameter_without_a_gradient_gets_one_line():
    model, opts, ema, tcfg = _setup()
    graphed = GraphedOptimizerStep(model, opts, tcfg.grad_clip, ema)
    _set_grads(model, 0)
    name, p = graphed.named[1]
    p.grad = None
    with pytest.raises(TrainingError, match=rf"optimizer_graph: parameter\(s\) \['{name}'\] got no gradient"):
        graphed._grads()


def test_the_loop_graphs_the_step_only_on_cuda_with_the_setting_on():
    model, opts, ema, tcfg = _setup()
    on = dataclasses.replace(tcfg, optimizer_graph=True)
    assert graphed_step_for(model, opts, tcfg, ema, torch.device("cuda")) is None  # the setting off
    assert graphed_step_for(model, opts, on, ema, torch.device("cpu")) is None  # nothing to capture on a CPU
    graphed = graphed_step_for(model, opts, on, ema, torch.device("cuda"))
    assert isinstance(graphed, GraphedOptimizerStep) and graphed.grad_clip == tcfg.grad_clip and graphed.ema is ema

def test_the_setting_parses_and_leaves_a_checkpoint_resumable():
    from golf.checkpoint import RESUME_FREE_KEYS

    assert load_params(REPO / "params.yaml", ["train.optimizer_graph=true"]).train.optimizer_graph is True
    assert load_params(REPO / "params.yaml").train.optimizer_graph is False
    assert "optimizer_graph" in RESUME_FREE_KEYS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graphs capture only there")
def test_captured_step_matches_the_eager_one_on_gpu():
    """Six steps with changing lrs, momentum and EMA decay: calls 1-2 eager, 3 captures, 3-6 replay; the weights
    and the EMA agree with an eager twin's. Not bit for bit: the graph's lrs and momentum are fp32 tensors, and
    Muon's Nesterov sum with a tensor momentum rounds twice (mul, then add) where the float path's alpha-add
    rounds once. On CUDA the Newton-Schulz iteration runs in bf16, so such an fp32 ulp can flip a bf16 rounding
    there and move a Muon matrix's update by about a bf16 ulp of it: 7.8e-5 at most on an H200 (2026-12-02), on
    weights that moved by far more (asserted), while the AdamW parameters checked matched bit for bit."""
    start = [q.detach().clone() for q in _setup("cuda")[0].parameters()]  # the same seed: the twins' start
    graphed, pairs = _graphed_and_eager("cuda", 6)
    torch.cuda.synchronize()
    assert graphed.replaying and graphed.calls == 6
    muon = {id(q) for opt in graphed.opts if isinstance(opt, Muon) for g in opt.param_groups for q in g["params"]}
    n = len(start)
    is_muon = [id(ours) in muon for ours, _ in pairs[:n]] * 2  # the EMA follows the parameters' order
    assert any(is_muon) and not all(is_muon)
    for i, ((ours, theirs), m) in enumerate(zip(pairs, is_muon, strict=True)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=3e-4 if m else 1e-5)
        if m and i < n:
            assert (theirs - start[i]).abs().max() > 10 * 3e-4  # the tolerance is small against the steps taken
    for opt in graphed.opts:  # the loop's floats are back in param_groups (the graph reads its own scalars)
        assert all(not isinstance(g["lr"], torch.Tensor) for g in opt.param_groups)
