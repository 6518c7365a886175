"""golf's Triton causal depthwise conv1d + bias + SiLU (golf/conv_kernel.py) against the PyTorch reference, on
the CPU through Triton's interpreter (TRITON_INTERPRET=1, tests/conftest.py): the output and every gradient (x,
weight, bias) against torch.autograd through golf.ssm.causal_conv_silu_reference on the zero-left-padded input
(what causal_conv1d_fn(x, weight, bias, activation="silu") computes). fp64 inputs compute in fp64, so those
cases compare at ~1e-12 relative: a tap off by one in time, a missing bias or a wrong SiLU derivative is off by
orders of magnitude more. Shapes are small and the walked rows fewer (so that T is not a multiple of them nor of
the four rows an iteration, C not a multiple of the channels, and several programs walk each sequence) to keep
the interpreter fast."""

import re

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from conftest import assert_close_scaled

from golf.ssm import causal_conv_silu_reference

F64 = torch.float64
SMALL = {"block_t": 8, "block_c": 8}  # a program walks 8 rows of 8 channels: T, C below span several of each


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




def _compare(ck, inputs, tol, **opts):
    x, weight, bias, dout = inputs
    got, ggot = _run(lambda *a: ck.causal_conv1d_silu(*a, **opts), x, weight, bias, dout)
    want, gwant = _run(_reference, x, weight, bias, dout)
    assert_close_scaled("out", got, want, tol)
    for name, g, r in zip(("dx", "dweight", "dbias"), ggot, gwant):
        if r is None:
            assert g is None, f"{name}: a gradient for an absent input"
        else:
            assert_close_scaled(name, g, r, tol)
    return got, ggot


# (b, c, t, w, row, offset, bias, launch): T, C not multiples of the launch; row > c: a slice of a wider tensor;
# programs of one row, of two, and longer than T; T shorter than W
CASES = {
    "w4_sliced_ragged": (2, 20, 37, 4, 52, 7, True, SMALL),
    "w4_contiguous_channel_last": (2, 16, 32, 4, None, 0, True, SMALL),
    "w3_no_bias": (1, 12, 29, 3, 40, 5, False, SMALL),
    "w2": (2, 9, 21, 2, None, 0, True, SMALL),
    "t_shorter_than_width": (2, 10, 2, 4, 24, 3, True, SMALL),
    "one_row_a_program": (1, 12, 11, 4, 20, 3, True, {"block_t": 1, "block_c": 8}),
    "two_rows_a_program": (2, 12, 23, 3, 20, 3, False, {"block_t": 2, "block_c": 8}),
    "program_longer_than_t": (2, 12, 19, 2, 20, 3, True, {"block_t": 32, "block_c": 8}),
    "defaults": (1, 140, 70, 4, 160, 4, True, {}),  # the default launches, C and T beyond one program's
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp64_matches_reference(ck, device, case):
    b, c, t, w, row, offset, bias, launch = CASES[case]
    _compare(ck, _inputs(1, b, c, t, w, bias=bias, row=row, offset=offset, device=device), 1e-12, **launch)


def test_fp32_matches_reference(ck, device):
    _compare(ck, _inputs(2, 2, 20, 37, 4, dtype=torch.float32, row=52, offset=7, device=device), 1e-5, **SMALL)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_bf16_keeps_dtypes(ck, device, wdtype):
    """bf16 x with fp32 (as in training) or bf16 parameters: out and dx in bf16, dweight and dbias in the
    parameters' dtype, channel-last out; values within bf16 rounding of the fp32 reference on the same inputs."""
    x, weight, bias, dout = _inputs(3, 2, 20, 37, 4, dtype=torch.bfloat16, wdtype=wdtype, row=52, offset=7,
                                    device=device)
    got, (dx, dw, db) = _run(lambda *a: ck.causal_conv1d_silu(*a, **SMALL), x, weight, bias, dout)
    assert (got.dtype, dx.dtype, dw.dtype, db.dtype) == (torch.bfloat16, torch.bfloat16, wdtype, wdtype)
    want, (rdx, rdw, rdb) = _run(_reference, x.float(), weight.float(), bias.float(), dout)
    for name, g, r in (("out", got, want), ("dx", dx, rdx), ("dweight", dw, rdw), ("dbias", db, rdb)):
        assert_close_scaled(name, g.float(), r, 2e-2)


def test_layout_and_strided_dout(ck, device):
    """out and dx are channel-last (stride over channels 1), whatever x's layout; conv_fwd and conv_bwd take x
    and dout of any strides (here plain contiguous (B, C, T), copied channel-last first) and give bit for bit
    what channel-last ones give."""
    x, weight, bias, dout = _inputs(4, 2, 12, 19, 4, device=device)
    x_plain = x.contiguous()  # (B, C, T) contiguous: time is the fast axis
    out = ck.conv_fwd(x_plain, weight, bias, **SMALL)
    assert out.stride() == (12 * 19, 1, 12)
    torch.testing.assert_close(out, ck.conv_fwd(x, weight, bias, **SMALL), rtol=0, atol=0)
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


@pytest.mark.parametrize("block_t", [1, 4, 8, 64])
def test_dx_does_not_depend_on_the_rows_a_program_walks(ck, device, block_t):
    """dx[t] is the same sum of the same four dpre rows whichever program stores it: bit for bit across block_t in
    the interpreter; compiled, within fp64 rounding (on an H200 on 2026-12-02, block_t 1 differed from 16 in the
    last bits: the compiler contracts the sum into fused multiply-adds differently for another tile shape). The
    weight gradients (summed per program, then over programs) within fp64 rounding."""
    x, weight, bias, dout = _inputs(9, 2, 20, 45, 4, row=28, offset=5, device=device)
    want = ck.conv_bwd(x, weight, bias, dout, block_t=16, block_c=8)
    got = ck.conv_bwd(x, weight, bias, dout, block_t=block_t, block_c=8)
    if ck.interpreted():
        assert torch.equal(got[0], want[0])
    else:
        assert_close_scaled("dx", got[0], want[0], 1e-14)
    for name, g, h in zip(("dweight", "dbias"), got[1:], want[1:]):
        assert_close_scaled(name, g, h, 1e-12)


def test_weight_grads_deterministic(ck, device):
    """dweight and dbias are per-program partial sums reduced by golf.sum_kernel, not atomics: bitwise repeatable."""
    x, weight, bias, dout = _inputs(5, 2, 12, 21, 4, dtype=torch.float32, device=device)
    a = ck.conv_bwd(x, weight, bias, dout.float(), **SMALL)
    b = ck.conv_bwd(x, weight, bias, dout.float(), **SMALL)
    for g, h in zip(a, b):
        assert torch.equal(g, h)


def test_empty_sequence(ck, device):
    x, weight, bias, dout = _inputs(6, 2, 8, 1, 4, device=device)
    x0, d0 = x[..., :0], dout[..., :0]
    assert ck.conv_fwd(x0, weight, bias).shape == (2, 8, 0)
    dx, dw, db = ck.conv_bwd(x0, weight, bias, d0)
    assert dx.shape == (2, 8, 0) and dw.shape == (8, 4) and db.shape == (8,) and not dw.any() and not db.any()


def test_dx_into_a_slice_of_a_wider_buffer(ck, device):
    """conv_bwd(dx=...) writes dx through any row stride: into channels [5, 17) of a (B, T, 24) buffer, the
    other channels left as they were, the values bit for bit those of a freshly allocated dx; x a slice of a
    wider tensor and dout plain (B, C, T) (time the fast axis, so copied channel-last first)."""
    x, weight, bias, dout = _inputs(11, 2, 12, 23, 4, row=28, offset=5, device=device)
    dout = dout.contiguous()
    want = ck.conv_bwd(x, weight, bias, dout, **SMALL)
    buf = torch.full((2, 23, 24), 7.0, dtype=x.dtype, device=device)  # (B, T, row)
    view = buf[:, :, 5:17].transpose(1, 2)  # (B, C, T), stride over channels 1, over time 24
    got = ck.conv_bwd(x, weight, bias, dout, dx=view, **SMALL)
    assert got[0].data_ptr() == view.data_ptr() and got[0].stride() == (23 * 24, 1, 24)
    for g, h in zip(got, want):
        assert torch.equal(g, h)
    assert (buf[:, :, :5] == 7.0).all() and (buf[:, :, 17:] == 7.0).all()
    assert_close_scaled("dx", got[0].cpu(), _run(_reference, x, weight, bias, dout)[1][0], 1e-12)


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


def test_bad_launch(ck, device):
    x, weight, bias, dout = _inputs(7, 2, 8, 16, 4, device=device)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_t must be a power of two, got 12")):
        ck.causal_conv1d_silu(x, weight, bias, block_t=12)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: dout must have x's shape (2, 8, 16)")):
        ck.conv_bwd(x, weight, bias, dout[..., :3])
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_t must be a power of two, got 0")):
        ck.conv_bwd(x, weight, bias, dout, block_t=0)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: block_c must be a power of two, got 48")):
        ck.conv_fwd(x, weight, bias, block_c=48)
    with pytest.raises(ValueError, match=re.escape("causal_conv1d_silu: num_warps must be a positive int, got 0")):
        ck.causal_conv1d_silu(x, weight, bias, num_warps=0)


def _error_line(fn, *args, **kw) -> str:
    """The message of the ValueError fn raises, checked to be one line."""
    with pytest.raises(ValueError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_bad_dx_one_clear_error(ck, device):
    """A dx buffer of the wrong layout or dtype: one ValueError line naming it and what it takes."""
    x, weight, bias, dout = _inputs(7, 2, 8, 16, 4, device=device)
    cases = [
        (torch.empty(2, 8, 16, dtype=x.dtype, device=device),
         (f"dx must be a (2, 8, 16) torch.float64 tensor on {x.device} with channel stride 1, got (2, 8, 16) "
          f"torch.float64 on {x.device}, strides (128, 16, 1)")),
        (torch.empty(2, 16, 8, device=device).transpose(1, 2),
         (f"dx must be a (2, 8, 16) torch.float64 tensor on {x.device} with channel stride 1, got (2, 8, 16) "
          "torch.float32")),
    ]
    for dx, message in cases:
        msg = _error_line(ck.conv_bwd, x, weight, bias, dout, dx=dx)
        assert msg.startswith("causal_conv1d_silu: " + message), msg


def test_cpu_tensors_need_the_interpreter(ck):
    if ck.interpreted():
        pytest.skip("the interpreter runs CPU tensors")
    x, weight, bias, _ = _inputs(7, 2, 8, 16, 4)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        ck.causal_conv1d_silu(x, weight, bias)


def _spy(ck, monkeypatch, name) -> list:
    """ck.<name> (conv_fwd or conv_bwd), as the autograd path and the bench call it, wrapped to record each call's
    block_t (None: the kernel's default)."""
    calls, real = [], getattr(ck, name)

    def spy(*args, **kw):
        calls.append(kw.get("block_t"))
        return real(*args, **kw)

    monkeypatch.setattr(ck, name, spy)
    return calls


def test_bench_script_dry_run(ck, device, tmp_path, monkeypatch):
    """bench/conv_kernel_bench.py end to end at tiny fp32 shapes (on the CPU: its --device cpu dry run in the
    interpreter), with the PyTorch reference standing in for causal_conv1d_fn: golf's kernels pass the parity
    gate against both and are timed, for both row strides, and the JSON says so, with the backward also timed
    alone, writing dx into the slice of a wider buffer it is given (device time over 2 calls, not 20, to keep the
    interpreter's share short); --launch-to sends the launch variants to one kernel, the other keeping its own."""
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
    out = tmp_path / "bench.json"
    rc = bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--t", "20", "--c", "12",
                     "--row-strides", "12,20", "--block-t", "16", "--block-c", "16", "--json", str(out)])
    result = json.loads(out.read_text())
    assert rc == 0, result["errors"]
    for row in ("12", "20"):
        golf, base = f"golf row={row}", f"causal_conv1d row={row}"
        for errs in (result["parity_vs_reference"][golf], result["parity_vs_causal_conv1d"][golf]):
            assert set(errs) == {"out", "dx", "dweight", "dbias"} and max(errs.values()) < 1e-5, errs
        for name in (golf, base):
            times = result["timing"][name]
            assert set(times) == {"fwd_ms", "fwd_bwd_ms", "fwd_device_ms", "fwd_bwd_device_ms", "bwd_alone_device_ms"}
            assert min(times["fwd_device_ms"], times["fwd_bwd_device_ms"], times["bwd_alone_device_ms"]) > 0
    assert result["floor"]["fwd_bwd_bytes"] > result["floor"]["fwd_bytes"] > 0
    fwd_calls, bwd_calls = _spy(ck, monkeypatch, "conv_fwd"), _spy(ck, monkeypatch, "conv_bwd")
    for to in ("bwd", "fwd"):
        fwd_calls.clear(), bwd_calls.clear()
        rc = bench.main(["--device", device, "--dtype", "fp32", "--b", "1", "--t", "20", "--c", "12", "--row-strides",
                         "20", "--launch-to", to, "--block-t", "4,8", "--block-c", "16", "--num-warps", "1",
                         "--json", str(out)])
        result = json.loads(out.read_text())
        assert rc == 0, result["errors"]
        for bt in (4, 8):
            name = f"golf row=20 bt{bt} bc16 w1"
            assert max(result["parity_vs_reference"][name].values()) < 1e-5
            assert result["timing"][name]["bwd_alone_device_ms"] > 0
        assert set(fwd_calls) == ({None} if to == "bwd" else {4, 8}), (to, set(fwd_calls))
        assert set(bwd_calls) == ({None} if to == "fwd" else {4, 8}), (to, set(bwd_calls))
    assert bench.main(["--device", device, "--row-strides", "8"]) == 2  # narrower than C: refused up front
    assert bench.main(["--device", device, "--block-t", "4,x"]) == 2  # not a list of ints: refused too
