"""train.optimizer_graph: the optimizer step (gradient clipping, Muon, AdamW, the EMA) captured once as a CUDA graph
and replayed every step.

Why: run eagerly the step is about 270 small kernel launches (hybrid_12_b131k: Newton–Schulz's batched matmuls and
the copies before them, foreach updates, fused AdamW, the EMA), and on an H200 the device idles 2–6 us between two
of them even with the host ahead: 0.84 ms a step (bench/RESULTS.md, 2026-12-02 nineteenth block, item 1). Inside a
graph the gap between kernels is about 1 us or less.

Measured (bench/RESULTS.md, 2026-12-02 twentieth block): the idle time shrinks by about 0.7 ms a hybrid_12_b131k
step, but the device time grows by as much (the optimizer's foreach kernels +0.3 ms, the gradients' copies
0.05 ms, and about 1% on most large kernels), so the step is no faster; on the Mamba-MLP b65k config it is 0.7 ms
slower. Off in every config.

What a replay needs: every tensor it reads or writes at the address it had at capture. Parameters, optimizer
states and the EMA stay put. Gradients do not (the backward allocates them, zero_grad frees them), so each step
first copies them into static buffers (one multi-tensor copy, ~0.05 ms for 19M fp32 values). The learning rates,
Muon's momentum and the EMA's weight change every step: the captured step reads them from one small device tensor,
which each step refreshes from the floats the loop set in the optimizers' param_groups (one host-to-device copy).
Fused AdamW takes a tensor lr (its capture only needs the group's `capturable` flag); Muon takes tensor lr and
momentum (golf.optim.Muon).

Call 1 runs eagerly (the optimizers create their state); call 2 runs eagerly on the capture's own stream, so that
cuBLAS and the caching allocator have set up there before a capture; call 3 captures, and every call from 3 on
replays. All are real steps. On a CPU every call runs eagerly: there is nothing to capture.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from golf.errors import TrainingError
from golf.optim import Muon, update_weights


def graphed_step_for(model, opts, tcfg, ema: list[torch.Tensor], device: torch.device
                     ) -> GraphedOptimizerStep | None:
    """The training loop's optimizer step under train.optimizer_graph: a GraphedOptimizerStep on CUDA when the
    setting is on, else None (golf.train.optimizer_step then steps eagerly)."""
    if tcfg.optimizer_graph and device.type == "cuda":
        return GraphedOptimizerStep(model, opts, tcfg.grad_clip, ema)
    return None


class GraphedOptimizerStep:
    """golf.train.optimizer_step(model, opts, grad_clip, ema, ema_decay) as a call `graphed(ema_decay)`, replayed
    from a CUDA graph from the third call on (module docstring). Needs every trainable parameter's gradient at every
    step: the graph updates them all, where the eager step skips a parameter without one."""

    def __init__(self, model, opts, grad_clip: float, ema: list[torch.Tensor]):
        self.model, self.opts, self.grad_clip, self.ema = model, opts, grad_clip, ema
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # where the step runs: a capture needs CUDA; elsewhere every call is eager
        self.device = self.named[0][1].device if self.named else torch.device("cpu")
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream: torch.cuda.Stream | None = None
        self.static_grads: list[torch.Tensor] = []
        # the per-step values the capture reads from device memory: (param group, key) for each, then the EMA weight
        self.slots = [(g, key) for opt in opts for g in opt.param_groups
                      for key in (("lr", "momentum") if isinstance(opt, Muon) else ("lr",))]
        self.scalars: torch.Tensor | None = None

    @property
    def replaying(self) -> bool:
        """Whether the step has been captured (and every call now replays it)."""
        return self.graph is not None

    def scalar_values(self, ema_decay: float) -> list[float]:
        """This step's values for the captured step's scalars, in slot order: what the loop set in param_groups
        (each lr, each Muon group's momentum), then the EMA's weight 1 - ema_decay."""
        return [float(g[key]) for g, key in self.slots] + [1.0 - ema_decay]

    def __call__(self, ema_decay: float) -> None:
        self.calls += 1
        if self.device.type != "cuda" or self.calls == 1:
            self._eager(ema_decay)
            return
        grads = self._grads()
        if self.calls == 2:  # a real step on the capture's stream first (module docstring)
            self.stream = torch.cuda.Stream(self.device)
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                update_weights(self.model, self.opts, self.grad_clip, self.ema, 1 - ema_decay)
            torch.cuda.current_stream().wait_stream(self.stream)
            for g in grads:  # read on the side stream: not reused before that work is done
                g.record_stream(self.stream)
            self.model.zero_grad(set_to_none=True)
            return
        if self.graph is None:
            self._capture(grads)
        with record_function("golf/optimizer"):  # the range the eager step's host time goes under
            torch._foreach_copy_(self.static_grads, grads)
            staged = torch.tensor(self.scalar_values(ema_decay), dtype=torch.float32).pin_memory()
            self.scalars.copy_(staged, non_blocking=True)
            self.graph.replay()
        self.model.zero_grad(set_to_none=True)

    def _eager(self, ema_decay: float) -> None:
        update_weights(self.model, self.opts, self.grad_clip, self.ema, 1 - ema_decay)
        self.model.zero_grad(set_to_none=True)

    def _grads(self) -> list[torch.Tensor]:
        missing = [n for n, p in self.named if p.grad is None]
        if missing:
            raise TrainingError(f"train.optimizer_graph: parameter(s) {missing[:5]} got no gradient this step; the "
                                "captured optimizer step updates every parameter every step. Set "
                                "train.optimizer_graph false for a model with parameters a step may not reach.")
        return [p.grad for _, p in self.named]

    def _capture(self, grads: list[torch.Tensor]) -> None:
        """Record update_weights on static gradient buffers, with the slots' values read from `scalars`."""
        device = grads[0].device
        self.static_grads = [torch.empty_like(g) for g in grads]
        self.scalars = torch.zeros(len(self.slots) + 1, dtype=torch.float32, device=device)
        floats = [g[key] for g, key in self.slots]
        for i, (g, key) in enumerate(self.slots):
            g[key] = self.scalars[i]  # a 0-d view: the captured kernels read its address
        flagged = [g for opt in self.opts if not isinstance(opt, Muon) for g in opt.param_groups]
        was_capturable = [g.get("capturable", False) for g in flagged]
        for g in flagged:  # fused AdamW: the same kernel; the flag lets step() be captured
            g["capturable"] = True
        for (_, p), s in zip(self.named, self.static_grads, strict=True):
            p.grad = s
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: another thread's CUDA calls (a loader, a profiler) do not void this capture
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                update_weights(self.model, self.opts, self.grad_clip, self.ema, self.scalars[-1])
        finally:
            for (g, key), v in zip(self.slots, floats, strict=True):
                g[key] = v  # the loop sets floats each step; the graph keeps reading `scalars`
            for g, was in zip(flagged, was_capturable, strict=True):
                g["capturable"] = was  # as it was, in checkpoints too: only the capture asks
            for _, p in self.named:
                p.grad = None
        self.graph = graph
