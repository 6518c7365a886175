"""golf's fused Triton SSD kernels (golf/ssd_kernel.py) against the PyTorch reference, on the CPU through
Triton's interpreter (TRITON_INTERPRET=1): the forward's y and final state, and every gradient (x, dt, A, B, C,
D, dt_bias, initial_states) against torch.autograd through golf.ssm.ssd_scan_reference. The kernels compute in
fp64 for fp64 inputs, so most cases compare at ~1e-12 relative: a wrong decay, an off-by-one in the causal mask
or a missing term is off by orders of magnitude more. Small shapes keep the interpreter fast; one case uses the
production tiles (headdim 64, d_state 32, chunk 64). Every gradient test runs for both backward designs
(bwd="walk" and bwd="split") and the split forward (fwd="split"; the reference parity test for all four
pairings, the others with the split backward that reuses its states), and two compare the designs directly."""

import re

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from golf.ssm import ssd_reference, ssd_scan_reference

F64 = torch.float64
BWDS = ["walk", "split"]  # golf.ssd_kernel.BWDS, spelled out so that collection does not import triton
# (fwd, bwd) pairings: every one for the reference parity test, the three that matter elsewhere (the walk
# forward with either backward, and golf_split's split forward whose states the split backward reuses)
ALL_PAIRS = [(f, b) for f in ("walk", "split") for b in BWDS]
PAIRS = [("walk", "walk"), ("walk", "split"), ("split", "split")]
PAIR_IDS = {"argnames": "fwd,bwd", "ids": lambda v: v}


def _inputs(seed, b, l, h, p, g, n, dtype=F64, init=True):
    """Mamba-2-like inputs: dt = softplus(dt_raw + dt_bias) around 0.01-0.1, A in [-4, -0.5], so that
    the state decays by ~e^-1 to e^-10 across a chunk and what passes between chunks still matters."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=F64)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64)

    dt0 = torch.exp(rand(h) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(0.01))) + torch.log(
        torch.tensor(0.01)))
    t = {"x": randn(b, l, h, p), "dt": 0.5 * randn(b, l, h), "A": -(0.5 + 3.5 * rand(h)),
         "B": randn(b, l, g, n), "C": randn(b, l, g, n), "D": randn(h), "dt_bias": torch.log(torch.expm1(dt0)),
         "initial_states": randn(b, h, p, n) if init else None}
    return {k: (v.to(dtype) if v is not None else None) for k, v in t.items()}


def _loss_weights(seed, y_shape, final_shape):
    gen = torch.Generator().manual_seed(seed + 1000)
    return torch.randn(*y_shape, generator=gen, dtype=F64), torch.randn(*final_shape, generator=gen, dtype=F64)


def _run(fn, inputs, wy, wf, use_y=True, use_final=True, device="cpu"):
    """fn's y and final state, and the gradients of sum(y * wy) + sum(final * wf) w.r.t. every input, with
    the inputs on `device`; results on the CPU."""
    leaves = {k: v.detach().to(device).requires_grad_(True) for k, v in inputs.items() if v is not None}
    y, final = fn(**leaves)
    loss = 0
    if use_y:
        loss = loss + (y.to(F64) * wy.to(device)).sum()
    if use_final:
        loss = loss + (final.to(F64) * wf.to(device)).sum()
    loss.backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)).cpu() for k, v in leaves.items()}
    return y.detach().cpu(), final.detach().cpu(), grads  # no grad: the output does not depend on it (D, final)


def _reference(chunk):
    def fn(x, dt, A, B, C, D, dt_bias, initial_states=None):
        return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk, initial_states)
    return fn


def _kernel(sk, chunk, **opts):
    def fn(x, dt, A, B, C, D, dt_bias, initial_states=None):
        return sk.ssd_scan(x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, dt_softplus=True,
                           initial_states=initial_states, return_final_states=True, **opts)
    return fn


def _assert_close(name, got, want, tol):
    """max |got - want| within tol times the largest |want| (a relative error that ignores tiny entries)."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    scale = want.abs().max().item()
    err = (got.to(F64) - want.to(F64)).abs().max().item()
    assert err <= tol * max(scale, 1e-30), f"{name}: max abs error {err:.3e} vs magnitude {scale:.3e} (tol {tol})"


CASES = {
    # b, l, h, p, g, n, chunk, with initial state, head_sum
    "multi_chunk_with_init": (2, 128, 2, 16, 1, 16, 32, True, "atomic"),
    "no_init": (2, 96, 2, 16, 1, 16, 32, False, "atomic"),
    "ragged_length": (2, 100, 2, 16, 1, 16, 32, True, "atomic"),  # 100 = 3 chunks of 32 + 4
    "groups_head_sum": (2, 64, 4, 16, 2, 16, 16, True, "sum"),  # 2 heads per group, summed in PyTorch
    "groups_atomic": (1, 64, 4, 16, 2, 16, 16, True, "atomic"),
    "one_head_per_group": (1, 64, 2, 16, 2, 16, 32, True, "atomic"),  # nothing to sum: stored directly
    "odd_sizes": (2, 70, 3, 24, 1, 8, 24, True, "atomic"),  # headdim, d_state, chunk padded to 32, 16, 32
    "production_tiles": (1, 192, 2, 64, 1, 32, 64, True, "atomic"),  # headdim 64, d_state 32, chunk 64
}


@pytest.mark.parametrize(argvalues=ALL_PAIRS, **PAIR_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_fp64_forward_and_gradients_match_reference(sk, device, case, fwd, bwd):
    b, l, h, p, g, n, chunk, init, head_sum = CASES[case]
    inputs = _inputs(len(case), b, l, h, p, g, n, init=init)
    wy, wf = _loss_weights(len(case), (b, l, h, p), (b, h, p, n))
    y, final, grads = _run(_kernel(sk, chunk, head_sum=head_sum, fwd=fwd, bwd=bwd), inputs, wy, wf,
                           device=device)
    y_ref, final_ref, grads_ref = _run(_reference(chunk), inputs, wy, wf)
    assert y.dtype == F64 and final.dtype == F64
    _assert_close("y", y, y_ref, 1e-12)
    _assert_close("final state", final, final_ref, 1e-12)
    assert grads.keys() == grads_ref.keys()
    for k in grads_ref:
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-10)


@pytest.mark.parametrize(argvalues=PAIRS, **PAIR_IDS)
@pytest.mark.parametrize("use_y,use_final", [(True, False), (False, True)], ids=["y_only", "final_only"])
def test_gradients_from_one_output_only(sk, device, use_y, use_final, fwd, bwd):
    """The backward with no gradient for the final state (dfinal None), or none for y (dy None)."""
    inputs = _inputs(5, 2, 96, 2, 16, 1, 16)
    wy, wf = _loss_weights(5, (2, 96, 2, 16), (2, 2, 16, 16))
    _, _, grads = _run(_kernel(sk, 32, fwd=fwd, bwd=bwd), inputs, wy, wf, use_y, use_final, device)
    _, _, grads_ref = _run(_reference(32), inputs, wy, wf, use_y, use_final)
    for k in grads_ref:
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-10)


@pytest.mark.parametrize(argvalues=PAIRS, **PAIR_IDS)
def test_strided_views_as_the_mixer_passes_them(sk, device, fwd, bwd):
    """x, B, C, dt as views into one packed (b, l, width) tensor, as Mamba2Mixer splits in_proj's output: the
    kernels read them through their strides (no copy), with the same result and gradients."""
    b, l, h, p, n = 2, 80, 2, 16, 16
    inputs = _inputs(17, b, l, h, p, 1, n)
    wy, wf = _loss_weights(17, (b, l, h, p), (b, h, p, n))
    packed = torch.cat([inputs["x"].reshape(b, l, h * p), inputs["B"].reshape(b, l, n),
                        inputs["C"].reshape(b, l, n), inputs["dt"], torch.zeros(b, l, 5, dtype=F64)], dim=-1)
    rest = {k: inputs[k] for k in ("A", "D", "dt_bias", "initial_states")}

    def views(fn):
        def run(packed, **rest):
            x, B, C, dt, _ = torch.split(packed, [h * p, n, n, h, 5], dim=-1)
            assert not x.is_contiguous() and not dt.is_contiguous()
            return fn(x=x.reshape(b, l, h, p), dt=dt, B=B.reshape(b, l, 1, n), C=C.reshape(b, l, 1, n), **rest)
        return run

    y, final, grads = _run(views(_kernel(sk, 32, fwd=fwd, bwd=bwd)), {"packed": packed} | rest, wy, wf,
                           device=device)
    y_ref, final_ref, grads_ref = _run(_reference(32), inputs, wy, wf)
    _assert_close("y", y, y_ref, 1e-12)
    _assert_close("final state", final, final_ref, 1e-12)
    want = torch.cat([grads_ref["x"].reshape(b, l, h * p), grads_ref["B"].reshape(b, l, n),
                      grads_ref["C"].reshape(b, l, n), grads_ref["dt"], torch.zeros(b, l, 5, dtype=F64)], dim=-1)
    _assert_close("d(packed)", grads["packed"], want, 1e-10)
    for k in rest:
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-10)


@pytest.mark.parametrize(argvalues=PAIRS, **PAIR_IDS)
def test_fp32_matches_fp64_reference(sk, device, fwd, bwd):
    """fp32 inputs (fp32 state and dots, as the kernels run on a GPU for fp32; the split stores its states in
    fp32) at the production tiles."""
    inputs = _inputs(7, 2, 128, 2, 64, 1, 32)
    wy, wf = _loss_weights(7, (2, 128, 2, 64), (2, 2, 64, 32))
    y, final, grads = _run(_kernel(sk, 64, fwd=fwd, bwd=bwd), {k: v.float() for k, v in inputs.items()}, wy, wf,
                           device=device)
    y_ref, final_ref, grads_ref = _run(_reference(64), inputs, wy, wf)
    assert y.dtype == torch.float32 and final.dtype == torch.float32
    _assert_close("y", y, y_ref, 2e-5)
    _assert_close("final state", final, final_ref, 2e-5)
    for k in grads_ref:
        assert grads[k].dtype == torch.float32, k
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-4)


@pytest.mark.parametrize(argvalues=PAIRS, **PAIR_IDS)
def test_bf16_activations_keep_their_dtypes(sk, device, fwd, bwd):
    """bf16 x, B, C (fp32 dt, A, D, dt_bias), as the mixer calls the scan: y and dx, dB, dC come back in bf16,
    the final state in fp32, within bf16 rounding of the reference on the same bf16 inputs. The dots run in
    fp32 here: Triton's interpreter miscomputes bf16 tl.dot (it is exercised by bench/ssd_kernel_bench.py on a
    GPU against mamba-ssm)."""
    inputs = _inputs(9, 2, 96, 2, 16, 1, 16)
    for k in ("x", "B", "C"):
        inputs[k] = inputs[k].bfloat16()
    inputs["dt"], inputs["A"] = inputs["dt"].float(), inputs["A"].float()
    inputs["D"], inputs["dt_bias"] = inputs["D"].float(), inputs["dt_bias"].float()
    inputs["initial_states"] = inputs["initial_states"].float()
    wy, wf = _loss_weights(9, (2, 96, 2, 16), (2, 2, 16, 16))
    y, final, grads = _run(_kernel(sk, 32, dot_dtype=torch.float32, fwd=fwd, bwd=bwd), inputs, wy, wf,
                           device=device)
    y_ref, final_ref, grads_ref = _run(_reference(32), inputs, wy, wf)
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    _assert_close("y", y, y_ref, 1e-2)  # both round the same fp32 result to bf16: at most an ulp apart
    _assert_close("final state", final, final_ref, 1e-5)
    for k in grads_ref:
        assert grads[k].dtype == inputs[k].dtype, k
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-2 if inputs[k].dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize(argvalues=PAIRS, **PAIR_IDS)
def test_without_softplus_bias_and_skip_matches_ssd_reference(sk, device, fwd, bwd):
    """dt_softplus=False, no D, no dt_bias: the bare SSD scan, against ssd_reference with the same dt."""
    inputs = _inputs(11, 2, 80, 2, 16, 1, 16)
    dt = F.softplus(inputs["dt"])
    args = {k: inputs[k] for k in ("x", "A", "B", "C", "initial_states")} | {"dt": dt}
    wy, wf = _loss_weights(11, (2, 80, 2, 16), (2, 2, 16, 16))

    def kern(x, dt, A, B, C, initial_states):
        return sk.ssd_scan(x, dt, A, B, C, 32, initial_states=initial_states, return_final_states=True, fwd=fwd,
                           bwd=bwd)

    def ref(x, dt, A, B, C, initial_states):
        return ssd_reference(x, dt, A, B, C, 32, initial_states)

    y, final, grads = _run(kern, args, wy, wf, device=device)
    y_ref, final_ref, grads_ref = _run(ref, args, wy, wf)
    _assert_close("y", y, y_ref, 1e-12)
    _assert_close("final state", final, final_ref, 1e-12)
    for k in grads_ref:
        _assert_close(f"d{k}", grads[k], grads_ref[k], 1e-10)


@pytest.mark.parametrize("fwd", ["walk", "split"])
def test_returns_y_alone_without_final_states(sk, device, fwd):
    inputs = _inputs(13, 1, 64, 2, 16, 1, 16, init=False)
    on = {k: v.to(device) for k, v in inputs.items() if v is not None}
    y = sk.ssd_scan(on["x"], on["dt"], on["A"], on["B"], on["C"], 32, D=on["D"], dt_bias=on["dt_bias"],
                    dt_softplus=True, fwd=fwd).cpu()
    y_ref, _ = ssd_scan_reference(inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], inputs["D"],
                                  inputs["dt_bias"], 32)
    assert isinstance(y, torch.Tensor)
    _assert_close("y", y, y_ref, 1e-12)



WALK_VS_SPLIT = {
    # b, l, h, p, g, n, chunk, D, dt_bias and softplus, initial state, dfinal, head_sum
    "everything_groups_atomic": (1, 72, 4, 16, 2, 16, 16, True, True, True, "atomic"),  # 4 chunks + 8
    "everything_groups_sum": (2, 40, 4, 16, 2, 16, 16, True, True, True, "sum"),
    "bare_odd_sizes": (1, 70, 3, 24, 1, 8, 24, False, False, False, "atomic"),
    "one_partial_chunk": (2, 20, 2, 16, 1, 16, 32, True, True, True, "atomic"),  # a single chunk of 20 of 32
}


def _walk_vs_split_inputs(case, device):
    """WALK_VS_SPLIT[case]'s inputs on `device` (and the case's chunk, softplus, head_sum), with random dy and
    dfinal (None where the case has none) as autograd would pass them."""
    b, l, h, p, g, n, chunk, full, init, dfinal, head_sum = WALK_VS_SPLIT[case]
    t = _inputs(len(case), b, l, h, p, g, n, init=init)
    gen = torch.Generator().manual_seed(len(case) + 7)
    dy = torch.randn(b, l, h, p, generator=gen, dtype=F64).to(device)
    df = torch.randn(b, h, p, n, generator=gen, dtype=F64).to(device) if dfinal else None
    if not full:  # the bare scan: softplus'd dt, no D, no dt_bias
        t["dt"], t["D"], t["dt_bias"] = F.softplus(t["dt"]), None, None
    on = {k: (v.to(device) if v is not None else None) for k, v in t.items()}
    return on, dy, df, chunk, full, head_sum


def _forward(sk, on, chunk, full, fwd):
    """ssd_scan_fwd called directly with design fwd: (y, final state, states entering each chunk)."""
    return sk.ssd_scan_fwd(on["x"], on["dt"], on["A"], on["B"], on["C"], chunk, on["D"], on["dt_bias"], full,
                           on["initial_states"], return_final_states=True, return_states=True, fwd=fwd)


@pytest.mark.parametrize("case", list(WALK_VS_SPLIT))
def test_split_forward_matches_walk(sk, device, case):
    """ssd_scan_fwd called directly with each design: the split's state recurrence and per-chunk y are the
    walk's own math (in fp64 the split stores its states in fp64, its default dot dtype there), so y, the final
    state and the states entering each chunk agree to rounding, initial states, a ragged tail and the bare scan
    included."""
    on, _, _, chunk, full, _ = _walk_vs_split_inputs(case, device)
    for name, w, s in zip(["y", "final state", "states"], _forward(sk, on, chunk, full, "walk"),
                          _forward(sk, on, chunk, full, "split"), strict=True):
        assert s.dtype == w.dtype == F64 and s.shape == w.shape, name
        _assert_close(name, s.cpu(), w.cpu(), 1e-14)


@pytest.mark.parametrize("case", list(WALK_VS_SPLIT))
def test_split_backward_matches_walk(sk, device, case):
    """ssd_scan_bwd called directly (random dy and dfinal, as autograd would pass them) with each design, and
    the split given the split forward's states (as ssd_scan passes them with fwd and bwd "split"): the same
    per-chunk math from the same state and state gradient, so in fp64 the three agree to rounding (they sum dA
    and dD in different orders, and the split carries its state gradients through memory), far closer than any
    is to the reference; the same outputs are None."""
    on, dy, df, chunk, full, head_sum = _walk_vs_split_inputs(case, device)

    def bwd(design, states=None):
        return sk.ssd_scan_bwd(dy, df, on["x"], on["dt"], on["A"], on["B"], on["C"], chunk, on["D"], on["dt_bias"],
                               full, on["initial_states"], head_sum, bwd=design, states=states)

    states = _forward(sk, on, chunk, full, "split")[2]
    names = ["dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias", "dinitial_states"]
    for name, w, s, r in zip(names, bwd("walk"), bwd("split"), bwd("split", states), strict=True):
        assert (w is None) == (s is None) == (r is None), name
        if w is not None:
            assert s.dtype == w.dtype == r.dtype == F64, name
            _assert_close(name, s.cpu(), w.cpu(), 1e-13)
            _assert_close(f"{name} (the forward's states)", r.cpu(), w.cpu(), 1e-13)


@pytest.mark.parametrize(argvalues=ALL_PAIRS, **PAIR_IDS)
def test_split_backward_reuses_the_split_forwards_states(sk, device, monkeypatch, fwd, bwd):
    """Through ssd_scan: the split backward's first pass runs both recurrences (role None: roles 0 and 1)
    unless the forward was the split too, whose stored S_in it then takes (role 1 alone); the split forward runs
    role 0 alone. The walks launch no pass."""
    launches = []
    real = sk._pass
    monkeypatch.setattr(sk, "_pass", lambda role, *a: launches.append(role) or real(role, *a))
    inputs = _inputs(3, 1, 40, 2, 16, 1, 16)
    wy, wf = _loss_weights(3, (1, 40, 2, 16), (1, 2, 16, 16))
    _run(_kernel(sk, 16, fwd=fwd, bwd=bwd), inputs, wy, wf, device=device)
    want = {"split": [0], "walk": []}[fwd] + {("split", "split"): [1], ("walk", "split"): [None]}.get((fwd, bwd), [])
    assert launches == want


@pytest.mark.parametrize("fwd", ["walk", "split"])
def test_split_with_bf16_stored_states(sk, device, fwd):
    """The split's states and state gradients stored in bf16 (its default for bf16 inputs, where they are also
    the dots' operands) with fp32 inputs and dots at the production tiles: the stores round and the loads widen
    (the interpreter cannot run bf16 dots, so this is the part of the bf16 path it can check), and the result
    stays within bf16's rounding of the reference; with the split forward too, its y reads the bf16 S_in and
    its final state (fp32, from registers) does not round."""
    inputs = _inputs(19, 2, 128, 2, 64, 1, 32)
    wy, wf = _loss_weights(19, (2, 128, 2, 64), (2, 2, 64, 32))
    y, final, grads = _run(_kernel(sk, 64, fwd=fwd, bwd="split", states_dtype=torch.bfloat16),
                           {k: v.float() for k, v in inputs.items()}, wy, wf, device=device)
    y_ref, final_ref, grads_ref = _run(_reference(64), inputs, wy, wf)
    assert final.dtype == torch.float32
    _assert_close("y", y, y_ref, 2e-2 if fwd == "split" else 2e-5)
    _assert_close("final state", final, final_ref, 2e-5)
    errs = {}
    for k in grads_ref:
        _assert_close(f"d{k}", grads[k], grads_ref[k], 2e-2)
        errs[k] = ((grads[k].double() - grads_ref[k]).abs().max() / grads_ref[k].abs().max()).item()
    # the stored rounding is visible where the states enter (not a silent fp32 store): dC reads S_in, dB dS_out
    assert errs["C"] > 1e-4 and errs["B"] > 1e-4, errs

# Run in a fresh interpreter without TRITON_INTERPRET (this one's kernels are interpreted, and torch reads a
# kernel's writes from the TTIR Triton compiles it to): every launch of the forward and backward designs, with and
# without the optional tensors (whose absent ones the launchers replace with x), recorded instead of run, then put
# through torch.compile's own analysis of what each launch writes. On a machine without a GPU driver a stand-in
# names an sm_90 target: TTIR generation needs only Triton's front end.
_WRITES_SCRIPT = r"""
import json, logging, sys
import torch, triton
from torch._higher_order_ops import triton_kernel_wrap as tkw
try:
    triton.runtime.driver.active.get_current_target()
except RuntimeError:  # no GPU driver here
    from triton.backends.compiler import GPUTarget

    class StandIn:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    triton.runtime.driver.set_active(StandIn())
failed = []  # torch logs a failed analysis and then takes every argument as written
logging.getLogger(tkw.__name__).addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: failed.append(
    r.getMessage())})(logging.WARNING))
import golf.ssd_kernel as sk

launches = []


class Recorder:
    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            kwargs.pop("num_warps")
            launches.append((self.kernel, {**dict(zip(self.kernel.arg_names, args)), **kwargs}))
        return launch


for name in ("_ssd_fwd_kernel", "_ssd_fwd_chunk_kernel", "_ssd_bwd_kernel", "_ssd_bwd_pass_kernel",
             "_ssd_bwd_chunk_kernel"):
    setattr(sk, name, Recorder(getattr(sk, name)))
gen = torch.Generator().manual_seed(0)
b, l, h, p, g, n = 2, 24, 4, 16, 2, 16  # l not a multiple of the chunk (16): a ragged last chunk
x, dy = (torch.randn(b, l, h, p, generator=gen).bfloat16() for _ in range(2))
dt = torch.randn(b, l, h, generator=gen).bfloat16()
B, C = (torch.randn(b, l, g, n, generator=gen).bfloat16() for _ in range(2))
A, D, dt_bias = -torch.rand(h, generator=gen), torch.rand(h, generator=gen), torch.rand(h, generator=gen)
init, dfinal = (torch.randn(b, h, p, n, generator=gen) for _ in range(2))
kw = dict(D=D, dt_bias=dt_bias, dt_softplus=True)
calls = []
for with_opt in (False, True):
    opt = init if with_opt else None
    for fwd in ("walk", "split"):
        calls.append((f"fwd={fwd} opt={with_opt}", lambda fwd=fwd: sk.ssd_scan_fwd(
            x, dt, A, B, C, 16, initial_states=opt, return_final_states=with_opt, fwd=fwd, **kw)))
    states = torch.zeros(b, 2, h, p, n, dtype=torch.bfloat16)  # the split forward's S_in
    for bwd, st in (("walk", None), ("split", None), ("split", states)):
        calls.append((f"bwd={bwd} states={st is not None} opt={with_opt}", lambda bwd=bwd, st=st: sk.ssd_scan_bwd(
            dy, dfinal if with_opt else None, x, dt, A, B, C, 16, initial_states=opt, bwd=bwd, states=st, **kw)))
    inputs = {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "dt_bias": dt_bias, "dy": dy, "init": init,
              "dfinal": dfinal, "states": states}
    for label, call in calls[-5:]:
        launches.clear()
        call()
        for kernel, args in launches:
            if hasattr(tkw, "identify_accessed_tensors"):
                writes = [d.name for d in tkw.identify_accessed_tensors(kernel, args, {}).read_writes.writes]
            else:  # torch before the analysis of reads
                writes = tkw.identify_mutated_tensors(kernel, args, {})
            for arg in writes:
                hit = [k for k, t in inputs.items() if args[arg] is t]
                print(json.dumps([label, kernel.fn.__name__, arg, hit]))
if failed:
    sys.exit("the analysis failed: " + failed[0])
"""


def test_no_launch_writes_an_input_as_torch_compile_reads_it():
    """Under model.ssm_compile "trace" torch.compile traces the kernels' launches and reads what each writes
    from its compiled code (a store counts even where it cannot run); an input it takes as written is cloned
    before the launch and the clone put in its place after it, an extra copy of x per launch, in the forward
    a write to an input of the autograd.Function and to the view of the conv's output it is. The split pass
    kernel, launched for one role, was compiled with both roles' stores (the role came from the grid), and the
    other role's states pointer is x: the split forward "wrote" x, and the split backward given the forward's
    states wrote x. Every launch writes only its own outputs."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", _WRITES_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    writes = [json.loads(line) for line in res.stdout.splitlines()]
    assert len({w[0] for w in writes}) == 10, writes  # every call launched and was analysed
    assert [w for w in writes if w[3]] == [], "launches that write an input"
    outputs = {"_ssd_fwd_kernel": {"y_ptr", "final_ptr", "states_ptr"}, "_ssd_fwd_chunk_kernel": {"y_ptr"},
               "_ssd_bwd_pass_kernel": {"states_ptr", "dstates_ptr", "dinit_ptr", "final_ptr"},
               "_ssd_bwd_kernel": {"dx_ptr", "ddt_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr", "dinit_ptr"},
               "_ssd_bwd_chunk_kernel": {"dx_ptr", "ddt_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr"}}
    assert all(w[2] in outputs[w[1]] for w in writes), writes


BAD_INPUTS = [
    ({"x": torch.zeros(2, 64, 2)}, "x must be (batch, seqlen, nheads, headdim)"),
    ({"B": torch.zeros(2, 64, 3, 16, dtype=F64)}, "B must be (batch, seqlen, ngroups, dstate)"),
    ({"C": torch.zeros(2, 64, 1, 8, dtype=F64)}, "C must have shape (2, 64, 1, 16)"),
    ({"dt": torch.zeros(2, 63, 2, dtype=F64)}, "dt must have shape (2, 64, 2)"),
    ({"D": torch.zeros(2, 16, dtype=F64)}, "D must have shape (2,)"),
    ({"initial_states": torch.zeros(2, 2, 16, 8, dtype=F64)}, "initial_states must have shape (2, 2, 16, 16)"),
    ({"A": torch.zeros(2, dtype=torch.int64)}, "A must be a float64/32/16 or bfloat16 tensor"),
    ({"chunk_size": 0}, "chunk_size must be a positive int"),
    ({"head_sum": "tree"}, "head_sum must be one of"),
    ({"dot_dtype": torch.int8}, "dot_dtype must be None, 'tf32' or one of"),
    ({"bwd": "tree"}, "bwd must be one of ['walk', 'split']"),
    ({"fwd": "tree"}, "fwd must be one of ['walk', 'split'], got 'tree'"),
    ({"states_dtype": torch.bfloat16}, "states_dtype must be None or, with fwd='split' or bwd='split', one of"),
    ({"bwd": "split", "states_dtype": torch.int8}, "states_dtype must be None or, with fwd='split' or "),
    ({"fwd": "split", "states_dtype": torch.int8}, "states_dtype must be None or, with fwd='split' or "),
]


@pytest.mark.parametrize("change,message", BAD_INPUTS, ids=["+".join(c) for c, _ in BAD_INPUTS])
@pytest.mark.parametrize("compiled", [False, True], ids=["as_here", "as_on_cuda"])
def test_bad_input_is_one_clear_error(sk, monkeypatch, change, message, compiled):
    """Each bad input gets its own one-line error, the same on every machine: as_on_cuda runs with compiled
    kernels (interpreted() False, as on a CUDA machine) and the CPU tensors they refuse, so every value check
    has to come before the device check for its own message to be the first."""
    if compiled:
        monkeypatch.setattr(sk, "interpreted", lambda: False)
    args = {k: v for k, v in _inputs(1, 2, 64, 2, 16, 1, 16).items()} | {"chunk_size": 32, "dt_softplus": True}
    args |= change
    with pytest.raises(ValueError, match="ssd_scan: " + re.escape(message)):
        sk.ssd_scan(**args)


def test_bad_backward_option_of_ssd_scan_bwd(sk):
    inputs = _inputs(1, 1, 32, 2, 16, 1, 16)
    args = (inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], 32)
    with pytest.raises(ValueError, match=re.escape("ssd_scan: bwd must be one of ['walk', 'split'], got 'tree'")):
        sk.ssd_scan_bwd(None, None, *args, bwd="tree")
    states = torch.zeros(1, 1, 2, 16, 16, dtype=F64)  # the split forward's S_in: the split backward's only
    with pytest.raises(ValueError, match=re.escape("ssd_scan: states (the split forward's S_in) must be a "
                                                   "(1, 1, 2, 16, 16) tensor on cpu, with bwd='split'; got "
                                                   "(1, 1, 2, 16, 16) on cpu with bwd='walk'")):
        sk.ssd_scan_bwd(None, None, *args, bwd="walk", states=states)
    with pytest.raises(ValueError, match=re.escape("got (1, 2, 2, 16, 16) on cpu with bwd='split'")):
        sk.ssd_scan_bwd(None, None, *args, bwd="split", states=torch.zeros(1, 2, 2, 16, 16, dtype=F64))
    with pytest.raises(ValueError, match=re.escape("ssd_scan: fwd must be one of ['walk', 'split'], got 'tree'")):
        sk.ssd_scan_fwd(*args, fwd="tree")


def test_cpu_tensors_outside_the_interpreter_are_refused(sk, monkeypatch):
    """Compiled (not interpreted) kernels on CPU tensors: one clear error instead of a Triton crash."""
    monkeypatch.setattr(sk, "interpreted", lambda: False)
    args = _inputs(1, 1, 32, 2, 16, 1, 16)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        sk.ssd_scan(**args, chunk_size=32)


def test_bench_script_dry_run(sk, device, tmp_path, monkeypatch):
    """bench/ssd_kernel_bench.py end to end at tiny fp32 shapes (on the CPU: its --device cpu dry run in the
    interpreter), with the PyTorch reference standing in for mamba-ssm's scan: golf's kernel passes the parity
    gate against both and is timed (wall and device time), and the JSON says so; a device fault midway still
    leaves a JSON with what was measured before it."""
    import importlib.util
    import json
    from pathlib import Path

    from golf import ssm

    def mamba_stand_in(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False):
        return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, chunk_size)[0]

    monkeypatch.setattr(ssm, "_import_mamba_triton", lambda: {"scan": mamba_stand_in})
    path = Path(__file__).resolve().parents[1] / "bench" / "ssd_kernel_bench.py"
    spec = importlib.util.spec_from_file_location("ssd_kernel_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    rc = bench.main(["--device", device, "--dtype", "fp32", "--b", "2", "--l", "80", "--h", "2", "--p", "16",
                     "--n", "16", "--chunk", "32", "--num-warps", "4", "--json", str(out)])
    result = json.loads(out.read_text())
    assert rc == 0, result["errors"]
    golf = ["golf atomic w4 bwd=walk", "golf atomic w4 bwd=split"]
    for name in golf:  # both backward designs by default, each gated on parity and timed
        for errs in (result["parity_vs_reference"][name], result["parity_vs_mamba"][name]):
            assert set(errs) == {"y", "x", "dt", "A", "B", "C", "D", "dt_bias"} and max(errs.values()) < 1e-4, errs
        assert set(result["timing"][name]) == {"fwd_ms", "fwd_bwd_ms", "fwd_device_ms", "fwd_bwd_device_ms"}
        assert result["timing"][name]["fwd_device_ms"] > 0 and result["timing"][name]["fwd_bwd_device_ms"] > 0
    assert set(result["timing"]) == {"mamba-ssm", *golf}
    assert bench.main(["--device", device, "--bwds", "walk,scan"]) == 2  # an unknown design: refused up front
    assert bench.main(["--device", device, "--fwds", "tree"]) == 2
    out3 = tmp_path / "split.json"  # golf_split's pairing: the split forward, its states to the split backward
    assert bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--l", "32", "--h", "1", "--p", "16",
                       "--n", "16", "--chunk", "16", "--num-warps", "4", "--fwds", "split", "--bwds", "split",
                       "--json", str(out3)]) == 0
    split = json.loads(out3.read_text())
    assert set(split["timing"]) == {"mamba-ssm", "golf atomic w4 fwd=split bwd=split"}
    assert max(split["parity_vs_reference"]["golf atomic w4 fwd=split bwd=split"].values()) < 1e-4

    def device_fault(*args, **kwargs):  # what a CUDA fault does to every call after it
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(bench, "floor_ms", device_fault)  # the first call after the parity phase
    out2 = tmp_path / "fault.json"
    assert bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--l", "32", "--h", "1", "--p", "16",
                       "--n", "16", "--chunk", "32", "--num-warps", "4", "--bwds", "walk", "--json", str(out2)]) == 1
    fault = json.loads(out2.read_text())  # written anyway, with the parity measured before the fault
    assert "illegal memory access" in fault["errors"]["fatal"]
    assert set(fault["parity_vs_reference"]) == {"mamba-ssm", "golf atomic w4 bwd=walk"} and not fault["timing"]
    assert result["floor"]["fwd_bwd_bytes"] > result["floor"]["fwd_bytes"] > 0


def _pass_inputs(b, l, h, g, p, n, chunk, seed=0):
    """fp64 (x, raw dt, A, B, C, dt_bias) and the outputs' gradient dy, with the internals the kept-states scan
    keeps (golf.mixer_op._scan_internals_reference: dA_cumsum, dt, the states entering each chunk, C·B)."""
    from golf.mixer_op import _scan_internals_reference

    t = _inputs(seed, b, l, h, p, g, n, init=False)
    dy = torch.randn(b, l, h, p, generator=torch.Generator().manual_seed(seed + 7), dtype=F64)
    kept = _scan_internals_reference(t["x"], t["dt"], t["A"], t["B"], t["C"], t["dt_bias"], chunk)
    return t, dy, kept


@pytest.mark.parametrize("l,h,g,chunk", [(64, 4, 1, 16), (40, 4, 2, 16), (70, 2, 1, 32)],
                         ids=["whole_chunks", "ragged_two_groups", "ragged_chunk_32"])
def test_chunk_states_are_the_kept_states(sk, device, l, h, g, chunk):
    """chunk_states (model.ssm_scan "mamba_keep_xy_pass"): the state entering each chunk, in fp64, equal to the
    states mamba-ssm's _chunk_state_fwd + _state_passing_fwd give as golf's twin computes them; stored fp32 for
    bf16 inputs by default."""
    t, _, (cs, dt_sp, want, _) = _pass_inputs(2, l, h, g, 12, 16, chunk, seed=l)
    args = (t["x"].to(device), t["dt"].to(device), t["A"].to(device), t["B"].to(device), chunk)
    got = sk.chunk_states(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True)
    assert got.dtype == F64 and want[:, 1:].abs().max() > 0.1
    torch.testing.assert_close(got.cpu(), want, rtol=1e-11, atol=1e-11)
    # reading the kept running log-decay and dt ("mamba_keep_golf") instead of recomputing them: the same states
    kept = sk.chunk_states(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True, dA_cumsum=cs.to(device),
                           dt_chunks=dt_sp.to(device))
    torch.testing.assert_close(kept.cpu(), want, rtol=1e-11, atol=1e-11)
    # under a register cap (ptxas may spill to meet it; the interpreter ignores it): the same states
    capped = sk.chunk_states(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True, dA_cumsum=cs.to(device),
                             dt_chunks=dt_sp.to(device), maxnreg=64)
    torch.testing.assert_close(capped.cpu(), want, rtol=1e-11, atol=1e-11)
    low = sk.chunk_states(*(t[k].to(device=device, dtype=torch.bfloat16) for k in ("x", "dt", "A", "B")), chunk,
                          dt_bias=t["dt_bias"].to(device), dt_softplus=True)
    assert low.dtype == torch.float32


@pytest.mark.parametrize("l,h,g,chunk", [(64, 4, 1, 16), (40, 4, 2, 16)], ids=["whole_chunks", "ragged_two_groups"])
def test_chunk_state_grads_are_autograd_of_the_outputs(sk, device, l, h, g, chunk):
    """chunk_state_grads: the gradient of <dy, y> w.r.t. the state leaving each chunk, and with the states given
    w.r.t. each chunk's end-to-end log-decay a_c in S_out(c) = exp(a_c) S_in(c) + (the chunk's own part), by
    autograd through the chunk recurrence and golf.ssd_xy_kernel's y twin, fp64. Zero for the last chunk (no final
    state's gradient) and the first chunk's log-decay (no initial state)."""
    from golf.ssd_xy_kernel import chunk_y_reference

    p, n = 12, 16
    t, dy, (dA_cumsum, dt_sp, states, CB) = _pass_inputs(2, l, h, g, p, n, chunk, seed=l)
    chunks = dA_cumsum.shape[2]
    a = dA_cumsum[..., -1].clone().requires_grad_()  # (b, h, c): used by the recurrence only
    own = states[:, 1:] - torch.exp(dA_cumsum[:, :, :-1, -1]).permute(0, 2, 1)[..., None, None] * states[:, :-1]
    s_in, s_out = [torch.zeros_like(states[:, 0])], []
    for c in range(chunks):
        nxt = torch.exp(a[:, :, c])[..., None, None] * s_in[-1] + (own[:, c] if c + 1 < chunks else 0)
        nxt.retain_grad()
        s_out.append(nxt)
        s_in.append(nxt)
    y = chunk_y_reference(CB, t["x"], dt_sp, dA_cumsum, t["C"], torch.stack(s_in[:-1], 1))
    torch.testing.assert_close(torch.stack(s_in[:-1], 1), states, rtol=1e-12, atol=1e-12)  # the recurrence rebuilt
    (y * dy).sum().backward()
    # (b, c, h, p, n); the last chunk's S_out is read by nothing (no final state): zero, and its own part is not
    # in the kept states, so the recurrence above leaves it out
    want = torch.stack([s.grad if s.grad is not None else torch.zeros_like(s) for s in s_out], 1)
    args = (dy.to(device), t["dt"].to(device), t["A"].to(device), t["C"].to(device), chunk)
    got, dda = sk.chunk_state_grads(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True,
                                    states=states.to(device))
    assert got.dtype == F64 and want[:, :-1].abs().max() > 0.1
    torch.testing.assert_close(got.cpu(), want, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(dda.cpu(), a.grad, rtol=1e-11, atol=1e-11)
    assert (got[:, -1] == 0).all() and (dda[:, :, 0] == 0).all() and a.grad[:, :, 1:].abs().max() > 0.1
    alone, none = sk.chunk_state_grads(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True)
    assert none is None
    torch.testing.assert_close(alone, got, rtol=0, atol=0)
    # reading the kept running log-decay ("mamba_keep_golf") instead of recomputing it from the raw dt
    kept, kept_dda = sk.chunk_state_grads(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True,
                                          states=states.to(device), dA_cumsum=dA_cumsum.to(device))
    torch.testing.assert_close(kept.cpu(), want, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(kept_dda.cpu(), a.grad, rtol=1e-11, atol=1e-11)
    capped, capped_dda = sk.chunk_state_grads(*args, dt_bias=t["dt_bias"].to(device), dt_softplus=True,
                                              states=states.to(device), dA_cumsum=dA_cumsum.to(device), maxnreg=80)
    torch.testing.assert_close(capped.cpu(), want, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(capped_dda.cpu(), a.grad, rtol=1e-11, atol=1e-11)
    with pytest.raises(ValueError, match=r"^ssd_scan: maxnreg must be None, 0 \(no cap\) or an int in \[24, 255\], "
                                         r"got 12$"):
        sk.chunk_state_grads(*args, maxnreg=12)


def test_states_kept_in_bf16_round_once_and_move_the_log_decay_gradient_little(sk, device):
    """model.ssm_scan "mamba_keep_xy_pass_bf16": chunk_states with states_dtype bf16 stores the fp32 states rounded
    once (within one bf16 step of the fp32 result: compiled Triton rounds to nearest, its interpreter toward zero),
    and chunk_state_grads given those bf16 states computes the
    chunk-end log-decay gradient from them exactly as from their fp32 copy: the only change from fp32 states is that
    one rounding of S_in, which here moves that gradient by under 1% of its largest value (bf16's step is 0.4%)
    and leaves dS_out alone."""
    t, dy, _ = _pass_inputs(2, 64, 4, 1, 12, 16, 16, seed=5)
    low = {k: t[k].to(device=device, dtype=torch.bfloat16) for k in ("x", "dt", "B", "C")}
    A, dt_bias = t["A"].to(device), t["dt_bias"].to(device)
    common = {"dt_bias": dt_bias, "dt_softplus": True}
    full = sk.chunk_states(low["x"], low["dt"], A, low["B"], 16, **common)  # fp32
    half = sk.chunk_states(low["x"], low["dt"], A, low["B"], 16, states_dtype=torch.bfloat16, **common)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert ((half.float() - full).abs() <= full.abs() * 2 ** -7).all() and full[:, 1:].abs().max() > 0.1  # 1 step
    assert not torch.equal(half.float(), full)  # rounded: fp32 states are not all bf16 numbers
    dy16 = dy.to(device=device, dtype=torch.bfloat16)
    ds_full, dda_full = sk.chunk_state_grads(dy16, low["dt"], A, low["C"], 16, states=full, **common)
    ds_half, dda_half = sk.chunk_state_grads(dy16, low["dt"], A, low["C"], 16, states=half, **common)
    _, dda_upcast = sk.chunk_state_grads(dy16, low["dt"], A, low["C"], 16, states=half.float(), **common)
    assert torch.equal(ds_half, ds_full) and torch.equal(dda_half, dda_upcast)
    err = (dda_half - dda_full).abs().max() / dda_full.abs().max()
    assert 0 < err < 1e-2, err


def test_chunk_state_passes_refuse_bad_input_in_one_line(sk, device):
    t, dy, (_, _, states, _) = _pass_inputs(2, 64, 4, 1, 12, 16, 16)
    t = {k: v.to(device) for k, v in t.items() if v is not None}
    with pytest.raises(ValueError, match=r"^ssd_scan: states must be a \(2, 4, 4, 12, 16\) tensor on") as e:
        sk.chunk_state_grads(dy.to(device), t["dt"], t["A"], t["C"], 16, states=states[:, :2].to(device))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^ssd_scan: states must be a float64/32/16 or bfloat16 tensor, got "
                                         r"torch.int32$"):
        sk.chunk_state_grads(dy.to(device), t["dt"], t["A"], t["C"], 16, states=states.to(device, torch.int32))
    with pytest.raises(ValueError, match=r"^ssd_scan: states_dtype must be None or one of .*, got torch.int8$"):
        sk.chunk_states(t["x"], t["dt"], t["A"], t["B"], 16, states_dtype=torch.int8)
    with pytest.raises(ValueError, match=r"^ssd_scan: chunk_size must be a positive int, got 0$"):
        sk.chunk_states(t["x"], t["dt"], t["A"], t["B"], 0)
    cs, dt_sp = (v.to(device) for v in _pass_inputs(2, 64, 4, 1, 12, 16, 16)[2][:2])
    with pytest.raises(ValueError, match=r"^ssd_scan: dA_cumsum and dt_chunks come together, or neither$"):
        sk.chunk_states(t["x"], t["dt"], t["A"], t["B"], 16, dA_cumsum=cs)
    with pytest.raises(ValueError, match=r"^ssd_scan: dt_chunks must have shape \(2, 4, 4, 16\), got \(2, 4, 2, 16\)$"):
        sk.chunk_states(t["x"], t["dt"], t["A"], t["B"], 16, dA_cumsum=cs, dt_chunks=dt_sp[:, :, :2])
    with pytest.raises(ValueError, match=r"^ssd_scan: dA_cumsum must have shape \(2, 4, 4, 16\)"):
        sk.chunk_state_grads(dy.to(device), t["dt"], t["A"], t["C"], 16, dA_cumsum=cs[..., :8])
