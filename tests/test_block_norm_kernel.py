"""golf's Triton residual glue, golf::add_mix_norm (golf/block_norm_kernel.py), against its PyTorch twin
golf.model.add_mix_norm_reference, on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
tests/conftest.py) or on a GPU: xm, h, out and rstd, and the gradients of every input through the op's autograd
against torch.autograd through the twin, for every combination of the optional pieces (y, skip, mix, keep_out,
norm_scale), in fp32 (tight) and bf16 (within bf16 rounding of the fp32 twin). Channels not a power of two and
row counts not a multiple of the row block; torch.library.opcheck of both ops; one ValueError line for bad
inputs. Shapes are small: the interpreter is slow."""

import itertools
import json
import re

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from conftest import assert_close_scaled, bench_script

from golf.model import add_mix_norm_reference, norm_eps

F32, BF16 = torch.float32, torch.bfloat16


@pytest.fixture(scope="module")
def device(bk):
    return "cpu" if bk.interpreted() else "cuda"


def _inputs(seed, shape, has_y, has_skip, has_mix, dtype=F32, pdtype=F32, device="cpu"):
    """x, y, s, skip, w, x0, mix (None where absent; has_y 2: y without s, the scale folded away): activations of
    order 1, parameters around 1 with spread (a missing or misplaced parameter shows), in `dtype` / `pdtype`."""
    gen = torch.Generator().manual_seed(seed)
    d = shape[-1]

    def act():
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    def par(*s):
        return (1 + 0.5 * torch.randn(*s, generator=gen)).to(pdtype).to(device)

    x = act()
    y, s = (act(), par(d)) if has_y else (None, None)
    if has_y == 2:
        s = None
    skip, w = (act(), par(d)) if has_skip else (None, None)
    x0, mix = (act(), par(2, d)) if has_mix else (None, None)
    return x, y, s, skip, w, x0, mix


def _grads(fn, inputs, norm_scale, keep_out, cotangents):
    """fn's (out, xm, h) and the gradients of sum(h g_h + xm g_xm + out g_out) for every input present."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in inputs]
    out, xm, h = fn(*leaves, norm_scale, keep_out)
    g_h, g_xm, g_out = cotangents
    total = (h.float() * g_h).sum() + (xm.float() * g_xm).sum()
    if keep_out:
        total = total + (out.float() * g_out).sum()
    total.backward()
    return (out, xm, h), [None if t is None else t.grad for t in leaves]




NAMES = ("x", "y", "s", "skip", "w", "x0", "mix")
# every combination of the optional pieces (y with s, y alone, neither), keep_out and norm_scale
COMBOS = [dict(zip(("has_y", "has_skip", "has_mix", "keep_out"), c))
          for c in itertools.product((0, 1, 2), (0, 1), (0, 1), (0, 1))]


def _compare(bk, shape, combo, norm_scale, dtype, tol, seed=0, device="cpu"):
    inputs = _inputs(seed, shape, combo["has_y"], combo["has_skip"], combo["has_mix"], dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed + 100)
    cot = [torch.randn(*shape, generator=gen).to(device) for _ in range(3)]
    keep = bool(combo["keep_out"])
    got_outs, got_grads = _grads(bk.add_mix_norm, inputs, norm_scale, keep, cot)
    ref_inputs = [None if t is None else t.float() for t in inputs]  # the fp32 twin (bf16: the exact values)
    want_outs, want_grads = _grads(add_mix_norm_reference, ref_inputs, norm_scale, keep, cot)
    for name, g, w in zip(("out", "xm", "h"), got_outs, want_outs):
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == dtype, name
        assert_close_scaled(name, g, w, tol)
    for name, t, g, w in zip(NAMES, inputs, got_grads, want_grads):
        if t is None:
            continue
        assert g is not None and g.dtype == t.dtype, name
        assert_close_scaled("d" + name, g, w, tol)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join(("Y" if v == 2 else k[4]) if k.startswith("has")
                                                                 else "k" for k, v in c.items() if v) or "x_only")
def test_fp32_matches_reference_every_combination(bk, device, combo):
    _compare(bk, (37, 48), combo, 0.7 if combo["has_mix"] else 1.0, F32, 2e-6, device=device)


@pytest.mark.parametrize("shape", [(3, 11, 512), (1, 5), (2, 9, 48)])
def test_fp32_shapes(bk, device, shape):
    """Leading dims flattened to rows; d 512 (golf's d_model), 5 (one ragged tile), 48."""
    _compare(bk, shape, {"has_y": 1, "has_skip": 1, "has_mix": 1, "keep_out": 1}, 0.5, F32, 2e-6, device=device)


@pytest.mark.parametrize("combo", [{"has_y": 0, "has_skip": 0, "has_mix": 1, "keep_out": 1},
                                   {"has_y": 1, "has_skip": 1, "has_mix": 1, "keep_out": 1},
                                   {"has_y": 1, "has_skip": 0, "has_mix": 0, "keep_out": 1},
                                   {"has_y": 2, "has_skip": 0, "has_mix": 1, "keep_out": 0}])
def test_bf16_within_rounding(bk, device, combo):
    """bf16 activations, fp32 parameters (training's autocast): outputs and activation gradients in bf16
    within a few bf16 rounding steps of the fp32 twin on the same values; parameter gradients in fp32."""
    _compare(bk, (37, 48), combo, 0.7, BF16, 2e-2, device=device)


def test_norm_eps_is_rms_norms_default(bk, device):
    """F.rms_norm without eps uses the compute dtype's epsilon (fp32's for bf16 too, not bf16's 2^-7): tiny
    rows show the difference, and the kernel's h matches F.rms_norm there."""
    assert norm_eps(BF16) == norm_eps(F32) == torch.finfo(F32).eps
    assert norm_eps(torch.float64) == torch.finfo(torch.float64).eps
    for dtype in (F32, BF16):
        x = (1e-3 * torch.randn(7, 48)).to(dtype).to(device)
        _, _, h = bk.add_mix_norm(x)
        assert_close_scaled(f"h {dtype}", h.float(), F.rms_norm(x, (48,)).float(), 1e-2 if dtype == BF16 else 2e-6)


def test_launch_shapes_change_rounding_only(bk, device):
    """Rows are independent: outputs and gradients do not depend on block_m, num_warps, tiles or stages
    beyond the order of the parameter gradients' partial sums; each launch is bitwise repeatable."""
    x, y, s, skip, w, x0, mix = _inputs(5, (45, 24), 1, 1, 1, device=device)
    args = (x, y, s, skip, w, x0, mix, 0.5)
    base = bk.add_mix_norm_fwd_kernels(*args, True, block_m=1, num_warps=1)
    g = [torch.randn(45, 24).to(device) for _ in range(3)]
    one = {"block_m": 1, "num_warps": 1, "tiles": 1, "num_stages": 1}
    base_b = bk.add_mix_norm_bwd_kernels(*g, *args[:7], base[3], 0.5, **one)
    for bm, tiles, nw, stages in ((2, 3, 2, 1), (8, 1, 4, 3), (4, 5, 8, 2)):
        fwd = bk.add_mix_norm_fwd_kernels(*args, True, block_m=bm, num_warps=nw)
        for name, a, b in zip(("out", "xm", "h", "rstd"), fwd, base):
            assert_close_scaled(name, a, b, 1e-6)
        opts = {"block_m": bm, "tiles": tiles, "num_warps": nw, "num_stages": stages}
        got = bk.add_mix_norm_bwd_kernels(*g, *args[:7], fwd[3], 0.5, **opts)
        for name, a, b in zip(NAMES, got, base_b):
            assert_close_scaled("d" + name, a, b, 1e-5)
        again = bk.add_mix_norm_bwd_kernels(*g, *args[:7], fwd[3], 0.5, **opts)
        for a, b in zip(got, again):
            assert torch.equal(a, b), opts


def test_outputs_do_not_alias_and_out_is_written_only_when_asked(bk, device):
    x, y, s, _, _, x0, mix = _inputs(6, (9, 16), 1, 0, 1, device=device)
    op = torch.ops.golf.add_mix_norm
    out, xm, h, rstd = op(x, y, s, None, None, x0, mix, 1.0, False)
    assert out.shape == (0,) and xm.shape == h.shape == x.shape and rstd.shape == (9,) and rstd.dtype == F32
    out, *_ = op(x, y, s, None, None, None, None, 1.0, True)  # no mix: xm is out, out not written
    assert out.shape == (0,)
    out, xm, h = bk.add_mix_norm(x, x0=x0, mix=mix, keep_out=True)  # nothing to add: out is x itself
    assert out is x
    out, xm, _ = bk.add_mix_norm(x, y, s, keep_out=True)
    assert out is xm


def test_y_without_s_has_no_gradient_of_its_own(bk, device):
    """y without s (out = x + y): the backward op writes no dy (an empty tensor), and autograd hands y the
    gradient it hands x."""
    x, y, _, _, _, x0, mix = _inputs(10, (9, 16), 1, 0, 1, device=device)
    rstd = torch.ops.golf.add_mix_norm(x, y, None, None, None, x0, mix, 1.0, False)[3]
    g = [torch.randn(9, 16).to(device) for _ in range(3)]
    dx, dy, ds, *_ = torch.ops.golf.add_mix_norm_bwd(None, *g[1:], x, y, None, None, None, x0, mix, rstd, 1.0)
    assert dx.shape == x.shape and dy.shape == ds.shape == (0,)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, y, x0, mix)]
    _, xm, h = bk.add_mix_norm(leaves[0], leaves[1], None, None, None, leaves[2], leaves[3])
    ((h * g[0]).sum() + (xm * g[1]).sum()).backward()
    assert torch.equal(leaves[1].grad, leaves[0].grad)


@pytest.mark.parametrize("pieces", ["all", "none", "y_only", "y_alone_mix"])
def test_opcheck(bk, device, pieces):
    """torch.library.opcheck of the forward op (schema, fake tensor, autograd registration, AOT dispatch) and
    of the backward op."""
    has = {"all": (1, 1, 1), "none": (0, 0, 0), "y_only": (1, 0, 0), "y_alone_mix": (2, 0, 1)}[pieces]
    inputs = _inputs(7, (2, 3, 16), *has, device=device)
    leaves = [None if t is None else t.requires_grad_(True) for t in inputs]
    torch.library.opcheck(torch.ops.golf.add_mix_norm.default, (*leaves, 0.5, pieces == "all"))
    rstd = torch.ops.golf.add_mix_norm(*inputs, 0.5, False)[3].detach()
    grads = [torch.randn(2, 3, 16).to(device) for _ in range(3)]
    if pieces != "all":
        grads[0] = None
    detached = [None if t is None else t.detach() for t in inputs]
    torch.library.opcheck(torch.ops.golf.add_mix_norm_bwd.default, (*grads, *detached, rstd, 0.5))


def test_cpu_outside_the_interpreter_takes_the_twin(bk, monkeypatch):
    """On CPU tensors without the interpreter the ops compute the twin's values (and gradients)."""
    monkeypatch.setattr(bk, "interpreted", lambda: False)
    inputs = _inputs(8, (5, 16), 1, 1, 1)
    cot = [torch.randn(5, 16) for _ in range(3)]
    got_outs, got_grads = _grads(bk.add_mix_norm, inputs, 0.5, True, cot)
    want_outs, want_grads = _grads(add_mix_norm_reference, inputs, 0.5, True, cot)
    for g, w in zip(got_outs, want_outs):
        assert torch.equal(g, w)
    for name, g, w in zip(NAMES, got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6, msg=name)


def _bad(x, y, s, skip, w, x0, mix):
    """The cases of test_bad_inputs_one_clear_error: (what, args, message)."""
    return [
        ("x not a tensor", ([1.0], None, None, None, None, None, None, 1.0),
         "x must be a tensor of shape (..., channels >= 1), got shape ()"),
        ("x int", (x.to(torch.int32), None, None, None, None, None, None, 1.0),
         "x must be a float64/32/16 or bfloat16 tensor, got torch.int32"),
        ("s without y", (x, None, s, None, None, None, None, 1.0), "s is given without y: pass y with it, or neither"),
        ("mix without x0", (x, None, None, None, None, None, mix, 1.0),
         "mix is given without x0: pass both or neither"),
        ("y shape", (x, y[:, :8], s, None, None, None, None, 1.0), "y must have x's shape (5, 16), got (5, 8)"),
        ("skip shape", (x, None, None, skip[:3], w, None, None, 1.0),
         "skip must have x's shape (5, 16), got (3, 16)"),
        ("s shape", (x, y, s[:4], None, None, None, None, 1.0), "s must be (16,), got shape (4,)"),
        ("w shape", (x, None, None, skip, w[None], None, None, 1.0), "w must be (16,), got shape (1, 16)"),
        ("mix shape", (x, None, None, None, None, x0, mix[0], 1.0), "mix must be (2, 16), got shape (16,)"),
        ("x0 dtype", (x, None, None, None, None, x0.to(torch.int64), mix, 1.0),
         "x0 must be a float64/32/16 or bfloat16 tensor, got torch.int64"),
        ("y wider", (x.to(BF16), y, s, None, None, None, None, 1.0),
         "y's dtype torch.float32 is wider than x's torch.bfloat16: the outputs are in x's dtype"),
        ("norm_scale", (x, None, None, None, None, None, None, float("nan")),
         "norm_scale must be a finite number, got nan"),
    ]


BAD_IDS = [c[0] for c in _bad(*_inputs(0, (5, 16), 1, 1, 1))]


@pytest.mark.parametrize("what", BAD_IDS)
def test_bad_inputs_one_clear_error(bk, device, what):
    _, args, message = next(c for c in _bad(*_inputs(9, (5, 16), 1, 1, 1, device=device)) if c[0] == what)
    with pytest.raises(ValueError, match="^golf::add_mix_norm: " + re.escape(message) + "$"):
        bk.check_inputs(*args)
    if isinstance(args[0], torch.Tensor):
        with pytest.raises(ValueError, match=re.escape(message)):
            bk.add_mix_norm(*args)


# --------------------------------------------------------------------------------------------------
# bench/block_norm_bench.py on the CPU
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    return bench_script("block_norm_bench")


def test_bench_help_bytes_and_cpu_dry_run(bench, bk, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0 and "--rows" in capsys.readouterr().out
    # the decoder call: x, y, skip, x0 read and xm, h written forward; g_h, g_xm and the four inputs read, dx,
    # dy, dskip, dx0 written backward (+ rstd each way)
    b = bench.bytes_moved(bench.CASES["decoder"], rows=10, dim=8, act_bytes=2)
    assert b["fwd"] == 6 * 10 * 8 * 2 + 10 * 4
    assert b["bwd"] == 10 * 10 * 8 * 2 + 10 * 4
    if torch.cuda.is_available():
        return
    assert bench.main(["--rows", "64"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--rows", "8", "--dim", "16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "decoder" in text and out.is_file()


def test_bench_launch_sweep_times_each_setting_and_names_a_bad_entry(bench, bk, capsys, tmp_path):
    assert bench.parse_launches("8:8,4:4", 2) == [(8, 8), (4, 4)]
    with pytest.raises(SystemExit):
        bench.main(["--bwd-launch", "1:1:64", "--device", "cpu"])
    assert "'1:1:64'" in capsys.readouterr().err
    if torch.cuda.is_available():
        return
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--rows", "8", "--dim", "16", "--cases", "decoder,final",
                       "--fwd-launch", "4:1", "--bwd-launch", "1:1:4:1,2:2:2:2", "--json", str(out)]) == 0
    launch = json.loads(out.read_text())["launch"]
    assert [(r["way"], r["launch"]) for r in launch["decoder"]] == [("fwd", "4:1"), ("bwd", "1:1:4:1"),
                                                                    ("bwd", "2:2:2:2")]
    assert len(launch["final"]) == 3 and all(r["ms"] > 0 and r["floor_ms"] > 0 for r in launch["final"])
    assert "1:1:4:1" in capsys.readouterr().out
