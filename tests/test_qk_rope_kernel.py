"""golf's Triton query/key preparation, golf::qk_norm_rope (golf/qk_rope_kernel.py): each head's RMSNorm, its
RoPE and the query gain in one op, against its PyTorch twin (qk_norm_rope_reference) and against the torch path
golf.attention.GQAttention spells out (F.rms_norm, apply_rope, the gain), on the CPU through Triton's interpreter
(TRITON_INTERPRET=1, tests/conftest.py) or on a GPU: y, and the gradients of x and the gain, for full and partial
RoPE, with and without the gain, rows not a multiple of the row block, in fp32 (tight) and bf16 (within bf16
rounding); torch.library.opcheck of both ops; one ValueError line for bad inputs. Shapes are small: the
interpreter is slow."""

import re

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from conftest import assert_close_scaled, bench_script

from golf.attention import norm_rope_gain, rope_tables

F32, BF16 = torch.float32, torch.bfloat16


@pytest.fixture(scope="module")
def device(qk):
    return "cpu" if qk.interpreted() else "cuda"


def _inputs(seed, shape, rope_dims, gain, dtype=F32, device="cpu", table_rows=None):
    """x (..., T, H, D) of order 1 with a spread of row norms, cos and sin for rope_dims (table_rows >= T rows),
    the gain (H,) around 1.5 or None."""
    gen = torch.Generator().manual_seed(seed)
    T, H, _ = shape[-3:]
    x = (torch.randn(*shape, generator=gen) * (0.5 + torch.rand(*shape[:-1], 1, generator=gen))).to(dtype)
    cos, sin = rope_tables(table_rows or T, rope_dims, 10000.0, None)  # (T', R/2) fp32
    g = (1.5 + 0.3 * torch.randn(H, generator=gen)) if gain else None
    return x.to(device), cos.to(device), sin.to(device), None if g is None else g.to(device)


def _grads(fn, x, cos, sin, gain, dy):
    xl = x.detach().clone().requires_grad_(True)
    gl = None if gain is None else gain.detach().clone().requires_grad_(True)
    y = fn(xl, cos, sin, gl)
    (y.float() * dy).sum().backward()
    return y, xl.grad, None if gl is None else gl.grad




def _torch_path(x, cos, sin, gain):
    """GQAttention's own expressions (golf.attention.norm_rope_gain, model.qk_rope "torch") on x (B, T, H, D)."""
    T = x.shape[-3]
    return norm_rope_gain(x, cos[:T], sin[:T], gain)


CASES = [  # (shape (B, T, H, D), rope_dims, gain, table rows)
    ((2, 7, 3, 16), 16, True, None),
    ((1, 9, 2, 16), 16, False, 12),  # the tables longer than T: their first T rows
    ((2, 5, 3, 24), 8, True, None),  # partial RoPE: 16 channels pass through
    ((3, 11, 4, 64), 64, True, None),  # golf's head dim; 132 rows, not a multiple of the row block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}_r{c[1]}{'_gain' if c[2] else ''}")
def test_fp32_matches_twin_and_torch_path(qk, device, case):
    shape, rope_dims, gain, rows = case
    x, cos, sin, g = _inputs(0, shape, rope_dims, gain, device=device, table_rows=rows)
    dy = torch.randn(*shape, generator=torch.Generator().manual_seed(10)).to(device)
    got = _grads(qk.qk_norm_rope, x, cos, sin, g, dy)
    for want_fn in (qk.qk_norm_rope_reference, _torch_path):
        want = _grads(want_fn, x, cos, sin, g, dy)
        for name, a, b in zip(("y", "dx", "dgain"), got, want):
            if b is None:
                assert a is None, name
                continue
            assert_close_scaled(f"{want_fn.__name__} {name}", a, b, 3e-6)


def test_bf16_within_rounding(qk, device):
    """bf16 x with fp32 tables and gain (training's autocast): y and dx within a few bf16 steps of the fp32 torch
    path on the same values, the gain's gradient in fp32."""
    x, cos, sin, g = _inputs(1, (2, 13, 4, 64), 64, True, dtype=BF16, device=device)
    dy = torch.randn(2, 13, 4, 64, generator=torch.Generator().manual_seed(11)).to(device)
    y, dx, dg = _grads(qk.qk_norm_rope, x, cos, sin, g, dy)
    assert y.dtype == dx.dtype == BF16 and dg.dtype == F32
    want = _grads(_torch_path, x.float(), cos, sin, g, dy)
    for name, a, b in zip(("y", "dx", "dgain"), (y, dx, dg), want):
        assert_close_scaled(name, a.float(), b, 2e-2)


def test_launch_shapes_change_nothing_but_the_launch(qk, device):
    """Rows are independent: y, rstd and dx do not depend on block_m or num_warps (bit for bit); the gain's
    gradient is a torch sum over the rows' dot products, also the same."""
    x, cos, sin, g = _inputs(2, (2, 9, 3, 16), 16, True, device=device)
    dy = torch.randn(2, 9, 3, 16, generator=torch.Generator().manual_seed(12)).to(device)
    base = qk.qk_norm_rope_fwd_kernels(x, cos, sin, g)
    base_b = qk.qk_norm_rope_bwd_kernels(dy, x, cos, sin, g, base[1])
    for bm, nw in ((1, 1), (4, 2), (128, 8)):
        fwd = qk.qk_norm_rope_fwd_kernels(x, cos, sin, g, block_m=bm, num_warps=nw)
        bwd = qk.qk_norm_rope_bwd_kernels(dy, x, cos, sin, g, fwd[1], block_m=bm, num_warps=nw)
        for a, b in zip((*fwd, *bwd), (*base, *base_b)):
            assert torch.equal(a, b), (bm, nw)


def test_non_contiguous_x_is_read_as_its_values(qk, device):
    """An x that is a view with other strides (a transpose of a contiguous tensor) gives the values of its
    contiguous copy."""
    x, cos, sin, g = _inputs(3, (2, 6, 3, 16), 16, True, device=device)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # x's values and shape (T 6, H 3), other strides
    assert not xt.is_contiguous()
    torch.testing.assert_close(qk.qk_norm_rope(xt, cos, sin, g), qk.qk_norm_rope(xt.contiguous(), cos, sin, g),
                               rtol=0, atol=0)


@pytest.mark.parametrize("gain", [True, False])
def test_opcheck(qk, device, gain):
    """torch.library.opcheck of the forward op (schema, fake tensor, autograd registration, AOT dispatch) and of
    the backward op."""
    x, cos, sin, g = _inputs(4, (2, 5, 3, 16), 16, gain, device=device)
    xl = x.requires_grad_(True)
    gl = None if g is None else g.requires_grad_(True)
    torch.library.opcheck(torch.ops.golf.qk_norm_rope.default, (xl, cos, sin, gl))
    rstd = torch.ops.golf.qk_norm_rope(x, cos, sin, g)[1].detach()
    dy = torch.randn(2, 5, 3, 16, generator=torch.Generator().manual_seed(13)).to(device)
    torch.library.opcheck(torch.ops.golf.qk_norm_rope_bwd.default,
                          (dy, x.detach(), cos, sin, None if g is None else g.detach(), rstd))


def test_cpu_outside_the_interpreter_takes_the_twin(qk, monkeypatch):
    """On CPU tensors without the interpreter the ops compute the twin's values, and its gradients by the
    backward's formulas (autograd through the twin sums in another order: within fp32 rounding)."""
    monkeypatch.setattr(qk, "interpreted", lambda: False)
    x, cos, sin, g = _inputs(5, (2, 4, 3, 16), 8, True)
    dy = torch.randn(2, 4, 3, 16, generator=torch.Generator().manual_seed(5))
    got = _grads(qk.qk_norm_rope, x, cos, sin, g, dy)
    want = _grads(qk.qk_norm_rope_reference, x, cos, sin, g, dy)
    assert torch.equal(got[0], want[0])
    for name, a, b in zip(("dx", "dgain"), got[1:], want[1:]):
        assert_close_scaled(name, a, b, 1e-5)


def _bad(x, cos, sin, g):
    return [
        ("x 2-D", (x[0, 0], cos, sin, g),
         "x must be a tensor of shape (..., positions, heads, head_dim), got shape (3, 16)"),
        ("x int", (x.to(torch.int32), cos, sin, g), "x must be a float64/32/16 or bfloat16 tensor, got torch.int32"),
        ("cos short", (x, cos[:3], sin, g), "cos must be (positions >= 5, rotated pairs 1..8), got shape (3, 8)"),
        ("sin wide", (x, cos, torch.cat([sin, sin], 1), g),
         "sin must be (positions >= 5, rotated pairs 1..8), got shape (5, 16)"),
        ("cos sin differ", (x, cos, sin[:, :4], g), "cos and sin must have one shape, got (5, 8) and (5, 4)"),
        ("gain shape", (x, cos, sin, g[:2]), "gain must be (3,), one a head, got shape (2,)"),
    ]


BAD_IDS = [c[0] for c in _bad(*_inputs(0, (2, 5, 3, 16), 16, True))]


@pytest.mark.parametrize("what", BAD_IDS)
def test_bad_inputs_one_clear_error(qk, device, what):
    _, args, message = next(c for c in _bad(*_inputs(6, (2, 5, 3, 16), 16, True, device=device)) if c[0] == what)
    with pytest.raises(ValueError, match="^golf::qk_norm_rope: " + re.escape(message) + "$"):
        qk.check_inputs(*args)
    if args[0].dim() >= 3 and args[0].is_floating_point():
        with pytest.raises(ValueError, match=re.escape(message)):
            qk.qk_norm_rope(*args)


# --------------------------------------------------------------------------------------------------
# bench/qk_rope_bench.py on the CPU
# --------------------------------------------------------------------------------------------------


def test_bench_cpu_dry_run(qk, capsys, tmp_path):
    """The bench's dry run: both sides timed on tiny shapes, each within fp32 rounding of the fp32 expressions, the
    JSON on stdout and in --json; a bad size is one argparse error."""
    if not qk.interpreted():
        pytest.skip("the dry run is the CPU's: it needs Triton's interpreter, and this machine compiles for CUDA")
    import json

    bench = bench_script("qk_rope_bench")
    out = bench.main(["--dry-run", "--launches", "1x1,64x8", "--json", str(tmp_path / "qk.json")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert json.loads((tmp_path / "qk.json").read_text()) == out
    assert set(out["sides"]) == {"golf", "torch_compile", "golf_1x1", "golf_64x8"}
    assert out["bytes_fwd_bwd"] == 5 * (64 + 32) * 16 * 4
    assert (qk.BLOCK_M, qk.NUM_WARPS) == (32, 4)  # put back after the launch sweep
    for side in out["sides"].values():
        assert side["ms_fwd_bwd"] > 0 and max(side["rel_err"].values()) < 1e-5
    for bad in (["--rope-dims", "7"], ["--launches", "3x4"], ["--launches", "32"]):
        with pytest.raises(SystemExit):
            bench.main(["--dry-run", *bad])
