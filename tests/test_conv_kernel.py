"""golf's Triton causal depthwise conv1d + bias + SiLU (golf/conv_kernel.py) against the PyTorch reference, on
the CPU through Triton's interpreter (TRITON_INTERPRET=1, tests/conftest.py): the output and every gradient (x,
weight, bias) against torch.autograd through golf.ssm.causal_conv_silu_reference on the zero-left-padded input
(what causal_conv1d_fn(x, weight, bias, activation="silu") computes). fp64 inputs compute in fp64, so those
cases compare at ~1e-12 relative: a tap off by one in time, a missing bias or a wrong SiLU derivative is off by
orders of magnitude more. Shapes are small and the tiles smaller (so that T and C are not multiples of them,
and the backward's programs walk several time tiles) to keep the interpreter fast. Every backward design
(conv_bwd's design "two_pass", "fused" with either shift of dpre, "gather" and "scratch", and "walk") runs the
parity cases, and the fused and walking ones are checked against the two-pass one at ~1e-12 in fp64."""

import re

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from golf.ssm import causal_conv_silu_reference

F64 = torch.float64
SMALL = {"block_t": 8, "block_c": 8, "tiles": 2}  # small tiles: T, C below span several of each
# the backward designs: causal_conv1d_silu's keywords for each, and conv_bwd's
BWD = {"two_pass": {"bwd_design": "two_pass"}, "fused_gather": {"bwd_design": "fused", "bwd_shift": "gather"},
       "fused_scratch": {"bwd_design": "fused", "bwd_shift": "scratch"}, "walk": {"bwd_design": "walk"}}
CONV_BWD = {"two_pass": {"design": "two_pass"}, "fused_gather": {"design": "fused", "shift": "gather"},
            "fused_scratch": {"design": "fused", "shift": "scratch"}, "walk": {"design": "walk"}}


@pytest.fixture(scope="module")
def device(ck):
    """Where golf's conv kernels run, and so the tests' tensors: the CPU in the interpreter, else the GPU."""
    return "cpu" if ck.interpreted() else "cuda"


def _inputs(seed, b, c, t, w, dtype=F64, wdtype=None, bias=True, row=None, offset=0, device="cpu"):
    """x as the mixer passes it: a (B, C, T) transpose view of channels [offset, offset + c) of a (B, T, row)
    tensor (row stride `row`, default c: contiguous channel-last); weight (C, W), bias (C,) or None. Pre-
    activations of order 1, so that SiLU's curvature matters."""
    gen = torch.Generator().manual_seed(seed)
    row = row or c
    base = torch.randn(b, t, row, generator=gen, dtype=F64)
    x = base[:, :, offset:offset + c].transpose(1, 2)  # (B, C, T), stride over channels 1, over time `row`
    weight = torch.randn(c, w, generator=gen, dtype=F64) / w ** 0.5
    b_ = 0.5 * torch.randn(c, generator=gen, dtype=F64) if bias else None
    dout = torch.randn(b, c, t, generator=gen, dtype=F64)
    wdtype = wdtype or dtype
    return (x.to(dtype).to(device), weight.to(wdtype).to(device),
            b_.to(wdtype).to(device) if bias else None, dout.to(device))


def _reference(x, weight, bias):
    """causal_conv1d_fn's math through golf.ssm's reference: zero-pad W - 1 steps on the left."""
    w = weight.shape[1]
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return causal_conv_silu_reference(F.pad(x, (w - 1, 0)), weight[:, None], bias)


def _run(fn, x, weight, bias, dout):
    """fn's output and the gradients of sum(out * dout) w.r.t. x, weight, bias (leaves keep x's strides)."""
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves)
    (out.to(F64) * dout.to(F64)).sum().backward()
    grads = [t.grad.detach().cpu() if t is not None else None for t in leaves]
    return out.detach().cpu(), grads


def _assert_close(name, got, want, tol):
    """max |got - want| within tol times the largest |want|."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    scale = want.abs().max().item()
    err = (got.to(F64) - want.to(F64)).abs().max().item()
    assert err <= tol * max(scale, 1e-30), f"{name}: max |err| {err:.3e} > {tol:g} x max |want| {scale:.3e}"


def _compare(ck, inputs, tol, **opts):
    x, weight, bias, dout = inputs
    got, ggot = _run(lambda *a: ck.causal_conv1d_silu(*a, **opts), x, weight, bias, dout)
    want, gwant = _run(_reference, x, weight, bias, dout)
    _assert_close("out", got, want, tol)
    for name, g, r in zip(("dx", "dweight", "dbias"), ggot, gwant):
        if r is None:
            assert g is None, f"{name}: a gradient for an absent input"
        else:
            _assert_close(name, g, r, tol)
    return got, ggot


# (b, c, t, w, row, offset, bias, opts): T, C not multiples of the tiles; row > c: a slice of a wider tensor
CASES = {
    "w4_sliced_ragged": (2, 20, 37, 4, 52, 7, True, SMALL),
    "w4_contiguous_channel_last": (2, 16, 32, 4, None, 0, True, SMALL),
    "w3_no_bias": (1, 12, 29, 3, 40, 5, False, SMALL),
    "w2": (2, 9, 21, 2, None, 0, True, SMALL),
    "t_shorter_than_width": (2, 10, 2, 4, 24, 3, True, SMALL),
    "one_tile_per_program": (1, 24, 40, 4, 32, 8, True, {"block_t": 16, "block_c": 16, "tiles": 1}),
    "defaults": (1, 140, 70, 4, 160, 4, True, {}),  # the default tiles (64 x 128), C and T beyond one tile
}


def _spy_conv_bwd(ck, monkeypatch) -> list:
    """conv_bwd, as the autograd path calls it, wrapped to record each call's (design, shift)."""
    calls, real = [], ck.conv_bwd

    def spy(*args, **kw):
        calls.append((kw.get("design", "two_pass"), kw.get("shift", "gather")))
        return real(*args, **kw)

    monkeypatch.setattr(ck, "conv_bwd", spy)
    return calls


@pytest.mark.parametrize("bwd", list(BWD))
@pytest.mark.parametrize("case", list(CASES))
def test_fp64_matches_reference(ck, device, case, bwd, monkeypatch):
    b, c, t, w, row, offset, bias, opts = CASES[case]
    calls = _spy_conv_bwd(ck, monkeypatch)
    _compare(ck, _inputs(1, b, c, t, w, bias=bias, row=row, offset=offset, device=device), 1e-12, **opts,
             **BWD[bwd])
    want = CONV_BWD[bwd]
    assert calls == [(want["design"], want.get("shift", "gather"))]  # the backward asked for ran


def test_fp32_matches_reference(ck, device):
    _compare(ck, _inputs(2, 2, 20, 37, 4, dtype=torch.float32, row=52, offset=7, device=device), 1e-5, **SMALL)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_designs_fp64(ck, device, case):
    """conv_fwd's two designs, the walk (rows a program walks: block_t, at least four rows' loads an iteration,
    here T not a multiple of either) and the tiles, against the reference at ~1e-12 in fp64, out channel-last."""
    b, c, t, w, row, offset, bias, opts = CASES[case]
    x, weight, b_, _ = _inputs(13, b, c, t, w, bias=bias, row=row, offset=offset, device=device)
    want = _reference(x.cpu(), weight.cpu(), None if b_ is None else b_.cpu())
    launch = {k: v for k, v in opts.items() if k != "tiles"}
    for design in ck.FWD_DESIGNS:
        got = ck.conv_fwd(x, weight, b_, design=design, **launch)
        assert got.stride() == (c * t, 1, c)
        _assert_close(f"{design} out", got.cpu(), want, 1e-12)


@pytest.mark.parametrize("wdtype, bwd", [(torch.float32, "two_pass"), (torch.bfloat16, "two_pass"),
                                         (torch.float32, "fused_gather"), (torch.bfloat16, "fused_scratch"),
                                         (torch.float32, "walk")])
def test_bf16_keeps_dtypes(ck, device, wdtype, bwd):
    """bf16 x with fp32 (as in training) or bf16 parameters: out and dx in bf16, dweight and dbias in the
    parameters' dtype, channel-last out; values within bf16 rounding of the fp32 reference on the same inputs."""
    x, weight, bias, dout = _inputs(3, 2, 20, 37, 4, dtype=torch.bfloat16, wdtype=wdtype, row=52, offset=7,
                                    device=device)
    got, (dx, dw, db) = _run(lambda *a: ck.causal_conv1d_silu(*a, **SMALL, **BWD[bwd]), x, weight, bias, dout)
    assert (got.dtype, dx.dtype, dw.dtype, db.dtype) == (torch.bfloat16, torch.bfloat16, wdtype, wdtype)
    want, (rdx, rdw, rdb) = _run(_reference, x.float(), weight.float(), bias.float(), dout)
    for name, g, r in (("out", got, want), ("dx", dx, rdx), ("dweight", dw, rdw), ("dbias", db, rdb)):
        _assert_close(name, g.float(), r, 2e-2)


def test_layout_and_strided_dout(ck, device):
    """out and dx are channel-last (stride over channels 1), whatever x's layout; conv_bwd takes a dout of any
    strides (here plain contiguous (B, C, T)) and gives the same gradients as with a channel-last one."""
    x, weight, bias, dout = _inputs(4, 2, 12, 19, 4, device=device)
    x_plain = x.contiguous()  # (B, C, T) contiguous: time is the fast axis
    for design in ck.FWD_DESIGNS:  # the walk copies x channel-last, the tiles read it as it is
        out = ck.conv_fwd(x_plain, weight, bias, design=design, block_t=8, block_c=8)
        assert out.stride() == (12 * 19, 1, 12)
        torch.testing.assert_close(out, ck.conv_fwd(x, weight, bias, design=design, block_t=8, block_c=8), rtol=0,
                                   atol=0)
    dout_cl = dout.transpose(1, 2).contiguous().transpose(1, 2)
    a = ck.conv_bwd(x_plain, weight, bias, dout.contiguous(), **SMALL)
    b = ck.conv_bwd(x, weight, bias, dout_cl, **SMALL)
    assert a[0].stride() == (12 * 19, 1, 12)
    for g, h in zip(a, b):
        torch.testing.assert_close(g, h, rtol=0, atol=0)


def _layouts(x, dout):
    """The same values as x and dout in layouts whose channels are not the contiguous axis (the backward copies
    them channel-last first): plain contiguous (B, C, T); channels strided by 2 (every other channel of a wider
    channel-last tensor); batch innermost ((T, C, B) contiguous, permuted)."""
    b, c, t = x.shape

    def every_other(v):
        wide = v.new_zeros(b, t, 2 * c)
        wide[:, :, ::2] = v.transpose(1, 2)
        return wide[:, :, ::2].transpose(1, 2)

    def batch_innermost(v):
        return v.permute(2, 1, 0).contiguous().permute(2, 1, 0)

    return {"bct_contiguous": (x.contiguous(), dout.contiguous()),
            "channel_stride_2": (every_other(x), every_other(dout)),
            "batch_innermost": (batch_innermost(x), batch_innermost(dout)),
            "x_only": (x.contiguous(), dout), "dout_only": (x, dout.contiguous())}


@pytest.mark.parametrize("layout", ["bct_contiguous", "channel_stride_2", "batch_innermost", "x_only", "dout_only"])
def test_backward_layouts_give_channel_last_results(ck, device, layout):
    """conv_bwd and the autograd path on x and dout whose channel stride is not 1 give bit for bit the results
    of channel-last ones (and so of the reference)."""
    x, weight, bias, dout = _inputs(8, 2, 12, 27, 4, row=20, offset=3, device=device)
    xo, do = _layouts(x, dout)[layout]
    assert torch.equal(xo, x) and torch.equal(do, dout)
    assert xo.stride(1) != 1 or do.stride(1) != 1  # at least one takes the copy
    want = ck.conv_bwd(x, weight, bias, dout, **SMALL)
    got = ck.conv_bwd(xo, weight, bias, do, **SMALL)
    assert got[0].stride() == (12 * 27, 1, 12)
    for g, h in zip(got, want):
        assert torch.equal(g, h)
    _compare(ck, (xo, weight, bias, do), 1e-12, **SMALL)


@pytest.mark.parametrize("block_t, tiles, t", [(8, 1, 45), (8, 3, 45), (8, 5, 45), (4, 4, 29), (16, 2, 15)])
def test_tiles_per_program_exact_fp64(ck, device, block_t, tiles, t):
    """The backward's first kernel walking several time tiles per program, with T not a multiple of the tile nor
    of a program's span (the last program's last tile partly past T; with 5 tiles of 8 rows over 45, its last
    four wholly past): fp64 gradients at ~1e-12 of the reference; dx does not depend on tiles (its kernel reads
    dpre only), bit for bit."""
    opts = {"block_t": block_t, "block_c": 8, "tiles": tiles, "bwd_design": "two_pass"}
    inputs = _inputs(9, 2, 20, t, 4, row=28, offset=5, device=device)
    _compare(ck, inputs, 1e-12, **opts)
    x, weight, bias, dout = inputs
    bwd = {"block_t": block_t, "block_c": 8, "tiles": tiles, "design": "two_pass"}
    dx, _, _ = ck.conv_bwd(x, weight, bias, dout, **bwd)
    dx1, _, _ = ck.conv_bwd(x, weight, bias, dout, **{**bwd, "tiles": 1})
    assert torch.equal(dx, dx1)


@pytest.mark.parametrize("bwd", ["two_pass", "fused_scratch", "walk"])
def test_weight_grads_deterministic(ck, device, bwd):
    """dweight and dbias are per-program partial sums reduced in PyTorch, not atomics: bitwise repeatable."""
    x, weight, bias, dout = _inputs(5, 2, 12, 21, 4, dtype=torch.float32, device=device)
    a = ck.conv_bwd(x, weight, bias, dout.float(), **SMALL, **CONV_BWD[bwd])
    b = ck.conv_bwd(x, weight, bias, dout.float(), **SMALL, **CONV_BWD[bwd])
    for g, h in zip(a, b):
        assert torch.equal(g, h)


@pytest.mark.parametrize("bwd", list(CONV_BWD))
def test_empty_sequence(ck, device, bwd):
    x, weight, bias, dout = _inputs(6, 2, 8, 1, 4, device=device)
    x0, d0 = x[..., :0], dout[..., :0]
    assert ck.conv_fwd(x0, weight, bias).shape == (2, 8, 0)
    dx, dw, db = ck.conv_bwd(x0, weight, bias, d0, **CONV_BWD[bwd])
    assert dx.shape == (2, 8, 0) and dw.shape == (8, 4) and db.shape == (8,) and not dw.any() and not db.any()


# (w, bias, t, block_t, tiles) for the fused backward, which owns block_t - (w - 1) rows of each tile: T not a
# multiple of that stride nor of the tile; programs walking several tiles, the last one's last tiles wholly past
# T; T shorter than the tile; a tile of exactly W rows (one owned row each)
FUSED = {
    "w4_three_tiles_ragged": (4, True, 47, 8, 3),
    "w3_no_bias": (3, False, 23, 8, 2),
    "w2_tiles_past_t": (2, True, 19, 4, 3),
    "t_below_tile": (4, True, 6, 16, 2),
    "one_owned_row": (4, True, 9, 4, 4),
}


@pytest.mark.parametrize("case", list(FUSED))
def test_fused_equals_two_pass_fp64(ck, device, case):
    """The fused backward, both shifts, against the two-pass one in fp64 (x a slice of a wider tensor at a channel
    offset, C not a multiple of block_c): dx, dweight and dbias within ~1e-12, dx channel-last, dbias None without
    a bias."""
    w, bias, t, block_t, tiles = FUSED[case]
    x, weight, b_, dout = _inputs(10, 1, 12, t, w, bias=bias, row=20, offset=3, device=device)
    opts = {"block_t": block_t, "block_c": 8, "tiles": tiles}
    want = ck.conv_bwd(x, weight, b_, dout, design="two_pass", **opts)
    for shift in ck.SHIFTS:
        got = ck.conv_bwd(x, weight, b_, dout, design="fused", shift=shift, **opts)
        assert got[0].stride() == (12 * t, 1, 12)
        for name, g, h in zip(("dx", "dweight", "dbias"), got, want):
            if h is None:
                assert g is None, f"{shift} {name}: a gradient for an absent bias"
            else:
                _assert_close(f"{shift} {name}", g, h, 1e-12)


# (w, bias, t, block_t) for the walking backward, which walks block_t rows a program four at a time and three rows
# past them: T not a multiple of block_t; a program of one row; a program longer than T; T shorter than W
WALK = {
    "w4_ragged": (4, True, 45, 8),
    "w4_one_row_a_program": (4, True, 11, 1),
    "w3_no_bias_rows_of_two": (3, False, 23, 2),
    "w2_program_past_t": (2, True, 19, 32),
    "t_below_width": (4, True, 3, 4),
}


@pytest.mark.parametrize("case", list(WALK))
def test_walk_equals_two_pass_fp64(ck, device, case):
    """The walking backward against the two-pass one in fp64 (x a slice of a wider tensor at a channel offset, C
    not a multiple of block_c, two sequences): dx, dweight and dbias within ~1e-12, dx channel-last."""
    w, bias, t, block_t = WALK[case]
    x, weight, b_, dout = _inputs(12, 2, 12, t, w, bias=bias, row=20, offset=3, device=device)
    want = ck.conv_bwd(x, weight, b_, dout, design="two_pass", block_t=8, block_c=8)
    got = ck.conv_bwd(x, weight, b_, dout, design="walk", block_t=block_t, block_c=8)
    assert got[0].stride() == (12 * t, 1, 12)
    for name, g, h in zip(("dx", "dweight", "dbias"), got, want):
        if h is None:
            assert g is None, f"{name}: a gradient for an absent bias"
        else:
            _assert_close(name, g, h, 1e-12)


@pytest.mark.parametrize("bwd", ["two_pass", "fused_gather", "walk"])  # the shifts share the fused kernel's dx store
def test_dx_into_a_slice_of_a_wider_buffer(ck, device, bwd):
    """conv_bwd(dx=...) writes dx through any row stride: into channels [5, 17) of a (B, T, 24) buffer, the
    other channels left as they were, the values bit for bit those of a freshly allocated dx; x a slice of a
    wider tensor and dout plain (B, C, T) (time the fast axis, so copied channel-last first)."""
    x, weight, bias, dout = _inputs(11, 2, 12, 23, 4, row=28, offset=5, device=device)
    dout = dout.contiguous()
    opts = {**SMALL, **CONV_BWD[bwd]}
    want = ck.conv_bwd(x, weight, bias, dout, **opts)
    buf = torch.full((2, 23, 24), 7.0, dtype=x.dtype, device=device)  # (B, T, row)
    view = buf[:, :, 5:17].transpose(1, 2)  # (B, C, T), stride over channels 1, over time 24
    got = ck.conv_bwd(x, weight, bias, dout, dx=view, **opts)
    assert got[0].data_ptr() == view.data_ptr() and got[0].stride() == (23 * 24, 1, 24)
    for g, h in zip(got, want):
        assert torch.equal(g, h)
    assert (buf[:, :, :5] == 7.0).all() and (buf[:, :, 17:] == 7.0).all()
    _assert_close("dx", got[0].cpu(), _run(_reference, x, weight, bias, dout)[1][0], 1e-12)


BAD = [
    ("x", lambda x, w, b: (x[0], w, b), "x must be (batch, channels, seqlen), got shape (8, 16)"),
    ("weight shape", lambda x, w, b: (x, w[:4], b), "weight must be (channels, width) = (8, W), got shape (4, 4)"),
    ("weight 3-d", lambda x, w, b: (x, w[:, None], b), "weight must be (channels, width) = (8, W), got shape (8, 1, 4)"),
    ("width", lambda x, w, b: (x, torch.cat([w, w], 1), b), "width must be one of [2, 3, 4], got 8"),
    ("bias", lambda x, w, b: (x, w, b[:3]), "bias must be None or (8,), got shape (3,)"),
    ("dtype", lambda x, w, b: (x.to(torch.int32), w, b), "x must be a float64/32/16 or bfloat16 tensor, got torch.int32"),
]


@pytest.mark.parametrize("what, change, message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_one_clear_error(ck, device, what, change, message):
    x, weight, bias, _ = _inputs(7, 2, 8, 16, 4, device=device)
    with pytest.raises(ValueError, match="causal_conv1d_silu: " + re.escape(message)):
        ck.causal_conv1d_silu(*change(x, weight, bias))


def test_bad_tiles(ck, device):
    x, weight, bias, dout = _inputs(7, 2, 8, 16, 4, device=device)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_t must be a power of two, got 12")):
        ck.causal_conv1d_silu(x, weight, bias, block_t=12)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: dout must have x's shape (2, 8, 16)")):
        ck.conv_bwd(x, weight, bias, dout[..., :3])
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: tiles must be a positive int, got 0")):
        ck.causal_conv1d_silu(x, weight, bias, tiles=0)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: tiles must be a positive int, got 2.0")):
        ck.conv_bwd(x, weight, bias, dout, tiles=2.0)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_t must be a power of two, got 0")):
        ck.conv_bwd(x, weight, bias, dout, design="walk", block_t=0)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_c must be a power of two, got 48")):
        ck.causal_conv1d_silu(x, weight, bias, block_c=48)


def _error_line(fn, *args, **kw) -> str:
    """The message of the ValueError fn raises, checked to be one line."""
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_bad_design_one_clear_error(ck, device):
    """A bad design, shift, fused tile or dx buffer: one ValueError line naming the argument and what it takes,
    from conv_bwd and (before any kernel runs) from causal_conv1d_silu."""
    x, weight, bias, dout = _inputs(7, 2, 8, 16, 4, device=device)
    designs, shifts = "['two_pass', 'fused', 'walk']", "['gather', 'scratch']"
    cases = [
        ((ck.conv_bwd, x, weight, bias, dout), {"design": "fusd"}, f"design must be one of {designs}, got 'fusd'"),
        ((ck.conv_fwd, x, weight, bias), {"design": "walking"},
         "fwd design must be one of ['walk', 'tile'], got 'walking'"),
        ((ck.causal_conv1d_silu, x, weight, bias), {"fwd_design": None},
         "fwd_design must be one of ['walk', 'tile'], got None"),
        ((ck.conv_bwd, x, weight, bias, dout), {"design": "fused", "shift": "smem"},
         f"shift must be one of {shifts}, got 'smem'"),
        ((ck.causal_conv1d_silu, x, weight, bias), {"bwd_design": "one_pass"},
         f"bwd_design must be one of {designs}, got 'one_pass'"),
        ((ck.causal_conv1d_silu, x, weight, bias), {"bwd_design": "fused", "bwd_shift": None},
         f"bwd_shift must be one of {shifts}, got None"),
        ((ck.conv_bwd, x, weight, bias, dout), {"design": "fused", "block_t": 2},
         ("block_t must be >= the width 4 for the fused backward (it owns block_t - (W - 1) rows of each tile), "
          "got 2")),
        ((ck.causal_conv1d_silu, x, weight, bias), {"bwd_design": "fused", "block_t": 2},
         "block_t must be >= the width 4 for the fused backward"),
        ((ck.conv_bwd, x, weight, bias, dout), {"dx": torch.empty(2, 8, 16, dtype=x.dtype, device=device)},
         (f"dx must be a (2, 8, 16) torch.float64 tensor on {x.device} with channel stride 1, got (2, 8, 16) "
          f"torch.float64 on {x.device}, strides (128, 16, 1)")),
        ((ck.conv_bwd, x, weight, bias, dout), {"dx": torch.empty(2, 16, 8, device=device).transpose(1, 2)},
         (f"dx must be a (2, 8, 16) torch.float64 tensor on {x.device} with channel stride 1, got (2, 8, 16) "
          "torch.float32")),
    ]
    for (fn, *args), kw, message in cases:
        msg = _error_line(fn, *args, **kw)
        assert msg.startswith("causal_conv1d_silu: " + message), (kw, msg)
    # the two-pass design takes no shift, but a bad one is still refused rather than ignored
    msg = _error_line(ck.conv_bwd, x, weight, bias, dout, shift="roll")
    assert msg == f"causal_conv1d_silu: shift must be one of {shifts}, got 'roll'"


def test_cpu_tensors_need_the_interpreter(ck):
    if ck.interpreted():
        pytest.skip("the interpreter runs CPU tensors")
    x, weight, bias, _ = _inputs(7, 2, 8, 16, 4)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        ck.causal_conv1d_silu(x, weight, bias)


def test_bench_script_dry_run(ck, device, tmp_path, monkeypatch):
    """bench/conv_kernel_bench.py end to end at tiny fp32 shapes (on the CPU: its --device cpu dry run in the
    interpreter), with the PyTorch reference standing in for causal_conv1d_fn: golf's kernel, with each backward
    design of --bwd-design, passes the parity gate against both and is timed, for both row strides, and the JSON
    says so, with each backward also timed alone, writing dx into the slice of a wider buffer it is given (device
    time over 2 calls, not 20, to keep the interpreter's share short)."""
    import functools
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "conv_kernel_bench.py"
    spec = importlib.util.spec_from_file_location("conv_kernel_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def stand_in(x, weight, bias=None, activation=None):
        assert activation == "silu"
        return _reference(x, weight, bias)

    def stand_in_bwd(x, weight, bias, dout, dx):
        dx.copy_(_run(_reference, x, weight, bias, dout)[1][0])

    monkeypatch.setattr(bench, "import_causal_conv1d", lambda: (stand_in, stand_in_bwd))
    monkeypatch.setattr(bench, "device_ms", functools.partial(bench.device_ms, reps=2))
    calls = _spy_conv_bwd(ck, monkeypatch)
    out = tmp_path / "bench.json"
    designs = ["two_pass", "fused_gather", "fused_scratch", "walk"]
    rc = bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--t", "20", "--c", "12",
                     "--row-strides", "12,20", "--block-t", "16", "--block-c", "16", "--tiles", "1",
                     "--bwd-design", ",".join(designs), "--json", str(out)])
    result = json.loads(out.read_text())
    assert rc == 0, result["errors"]
    for row in ("12", "20"):
        golf = [f"golf row={row} {d}" for d in designs]
        for name in golf:
            for errs in (result["parity_vs_reference"][name], result["parity_vs_causal_conv1d"][name]):
                assert set(errs) == {"out", "dx", "dweight", "dbias"} and max(errs.values()) < 1e-5, errs
        assert set(result["timing"]) >= {*golf, f"causal_conv1d row={row}"}
        for name in (*golf, f"causal_conv1d row={row}"):
            times = result["timing"][name]
            assert set(times) == {"fwd_ms", "fwd_bwd_ms", "fwd_device_ms", "fwd_bwd_device_ms", "bwd_alone_device_ms"}
            assert min(times["fwd_device_ms"], times["fwd_bwd_device_ms"], times["bwd_alone_device_ms"]) > 0
    assert result["floor"]["fwd_bwd_bytes"] > result["floor"]["fwd_bytes"] > 0
    assert set(calls) == {("two_pass", "gather"), ("fused", "gather"), ("fused", "scratch"), ("walk", "gather")}
    # --launch-to fwd or bwd: the launch reaches that kernel alone (the other keeps its own), through autograd and,
    # for the backward, in the backward-alone timing
    real_fwd, fwd_calls = ck.conv_fwd, []
    monkeypatch.setattr(ck, "conv_fwd", lambda *a, **kw: fwd_calls.append(kw) or real_fwd(*a, **kw))
    for to in ("bwd", "fwd"):
        calls.clear(), fwd_calls.clear()
        rc = bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--t", "20", "--c", "12", "--row-strides",
                         "20", "--bwd-design", "walk", "--launch-to", to, "--block-t", "4,8", "--block-c", "16",
                         "--num-warps", "1", "--json", str(out)])
        result = json.loads(out.read_text())
        assert rc == 0, result["errors"]
        for bt in (4, 8):
            name = f"golf row=20 bt{bt} bc16 tiles8 w1"
            assert max(result["parity_vs_reference"][name].values()) < 1e-5
            assert result["timing"][name]["bwd_alone_device_ms"] > 0
        assert set(calls) == {("walk", "gather")}
        launched = {kw.get("block_t") for kw in fwd_calls}
        assert launched == ({None} if to == "bwd" else {4, 8}), (to, launched)
    assert bench.main(["--device", device, "--row-strides", "8"]) == 2  # narrower than C: refused up front
    assert bench.main(["--device", device, "--bwd-design", "two_pass,fused"]) == 2  # not a design: refused too
