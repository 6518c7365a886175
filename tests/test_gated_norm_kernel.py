"""golf's Triton gated RMSNorm (golf/gated_norm_kernel.py) against the PyTorch reference, on the CPU through
Triton's interpreter (TRITON_INTERPRET=1, tests/conftest.py): out and rstd against
golf.ssm.gated_rms_norm_reference, and dy, dz, dweight against torch.autograd through it. fp64 inputs compute
in fp64, so those cases compare at ~1e-12 relative: a wrong group mean, a missing weight or a wrong SiLU
derivative is off by orders of magnitude more. Shapes and tiles are small (rows not a multiple of the row
block, channels not a power of two, several row blocks per backward program) to keep the interpreter fast.
Strided inputs and outputs (the mixer's column slices of in_proj's output and gradient) are checked for values
and for the columns around them staying untouched. The last tests cover bench/gated_norm_bench.py's CPU side
(--help, the refusal without CUDA)."""

import re

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed: the interpreter parity tests need it")

from conftest import assert_close_scaled, bench_script

from golf.ssm import gated_rms_norm_reference

F64 = torch.float64
EPS = 1e-5
SENTINEL = -7.25  # what the columns around a strided output hold before and must hold after a call


@pytest.fixture(scope="module")
def device(gk):
    """Where the kernels run, and so the tests' tensors: the CPU in the interpreter, else the GPU."""
    return "cpu" if gk.interpreted() else "cuda"


def _inputs(seed, m, n, dtype=F64, wdtype=None, device="cpu"):
    """y, z, dout (M, N) and weight (N,): z of order 1 (SiLU's curvature matters), y and dout of order 1,
    weight around 1 with spread (a missing or misplaced weight shows)."""
    gen = torch.Generator().manual_seed(seed)
    y, z, dout = (torch.randn(m, n, generator=gen, dtype=F64) for _ in range(3))
    weight = 1 + 0.5 * torch.randn(n, generator=gen, dtype=F64)
    return (y.to(dtype).to(device), z.to(dtype).to(device), weight.to(wdtype or dtype).to(device),
            dout.to(dtype).to(device))


def _reference(y, z, weight, dout, group_size):
    """out, rstd and the gradients (dy, dz, dweight) of sum(out * dout) through golf.ssm's reference, computed
    in the dtype the reference picks for y (fp64 stays fp64); rstd from the same math, (M, G)."""
    n = y.shape[1]
    leaves = [t.detach().clone().requires_grad_(True) for t in (y, z, weight)]
    out = gated_rms_norm_reference(*leaves, n // group_size, EPS)
    (out.to(F64) * dout.to(F64)).sum().backward()
    g = (y.to(out.dtype) * F.silu(z.to(out.dtype))).unflatten(-1, (n // group_size, group_size))
    rstd = torch.rsqrt(g.square().mean(-1) + EPS)  # (M, G)
    return out.detach(), rstd, *(t.grad for t in leaves)




def _compare(gk, y, z, weight, dout, group_size, tol, ref=None, fwd=None, bwd=None):
    """Both kernels against the reference (computed on `ref`'s inputs when given, e.g. fp32 copies of bf16
    ones); returns the kernels' (out, rstd, dy, dz, dweight)."""
    out, rstd = gk.gated_rmsnorm_fwd(y, z, weight, EPS, group_size, **(fwd or {}))
    dy, dz, dw = gk.gated_rmsnorm_bwd(dout, y, z, weight, rstd, EPS, group_size, **(bwd or {}))
    want = _reference(*(ref or (y, z, weight, dout)), group_size)
    got = (out, rstd, dy, dz, dw)
    for name, g, w in zip(("out", "rstd", "dy", "dz", "dweight"), got, want):
        assert_close_scaled(name, g, w, tol)
    return got


# (m, n, groups, forward block_m, backward block_m, tiles): rows not a multiple of the row block; channels
# and group sizes not powers of two; backward programs walking several row blocks, the last partly or wholly
# past M
CASES = {
    "one_row": (1, 8, 1, 4, 4, 2),
    "rows_37_n64": (37, 64, 1, 8, 4, 2),
    "ragged_n24": (37, 24, 1, 4, 4, 3),
    "two_groups_n48": (37, 48, 2, 4, 2, 3),
    "three_groups_n24": (5, 24, 3, 2, 2, 1),
    "three_groups_n48_ragged_gs16": (37, 48, 3, 8, 8, 5),
    "defaults": (37, 48, 1, None, None, None),  # block_m 4096 // 64, 16 tiles: one backward program
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp64_matches_reference(gk, device, case):
    m, n, groups, bm_f, bm_b, tiles = CASES[case]
    bwd = {"block_m": bm_b} if tiles is None else {"block_m": bm_b, "tiles": tiles}
    out, rstd, dy, dz, dw = _compare(gk, *_inputs(1, m, n, device=device), n // groups, 1e-12,
                                     fwd={"block_m": bm_f}, bwd=bwd)
    assert (out.dtype, rstd.dtype, dy.dtype, dz.dtype, dw.dtype) == (F64,) * 5
    assert rstd.shape == (m, groups) and rstd.is_contiguous() and out.is_contiguous()


def test_fp32_matches_reference(gk, device):
    y, z, w, dout = _inputs(2, 37, 48, dtype=torch.float32, device=device)
    out, rstd, *_ = _compare(gk, y, z, w, dout, 24, 2e-6, fwd={"block_m": 4}, bwd={"block_m": 4, "tiles": 2})
    assert out.dtype == rstd.dtype == torch.float32


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_bf16_keeps_dtypes(gk, device, wdtype):
    """bf16 y, z, dout with fp32 (as in training) or bf16 weight: out, dy in y's dtype, dz in z's, dweight in
    weight's, rstd in fp32; values within bf16 rounding of the fp32 reference on the same inputs."""
    y, z, w, dout = _inputs(3, 37, 48, dtype=torch.bfloat16, wdtype=wdtype, device=device)
    ref = (y.float(), z.float(), w.float(), dout.float())
    out, rstd, dy, dz, dw = _compare(gk, y, z, w, dout, 48, 1e-2, ref=ref, fwd={"block_m": 4},
                                     bwd={"block_m": 4, "tiles": 2})
    bf = torch.bfloat16
    assert (out.dtype, rstd.dtype, dy.dtype, dz.dtype, dw.dtype) == (bf, torch.float32, bf, bf, wdtype)
    # rstd and (for an fp32 weight) dweight are never rounded to bf16: fp32 accuracy
    assert_close_scaled("rstd", rstd, _reference(*ref, 48)[1], 1e-5)
    if wdtype == torch.float32:
        assert_close_scaled("dweight", dw, _reference(*ref, 48)[4], 1e-5)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's numpy
def test_saturated_gate_stays_finite(gk, device):
    """z far out on both sides (sigmoid 0 or 1; exp(-z) overflows fp32 at z < -88): no inf or nan, and the
    reference's values, in fp32."""
    y, z, w, dout = _inputs(4, 9, 16, dtype=torch.float32, device=device)
    z[:, ::3] = 120.0
    z[:, 1::3] = -120.0
    _compare(gk, y, z, w, dout, 16, 2e-6, fwd={"block_m": 4}, bwd={"block_m": 4, "tiles": 2})


def _wide(t, width, offset, fill=None):
    """t's values as columns [offset, offset + n) of a wider (M, width) tensor (the mixer's z inside in_proj's
    (M, 1664) output); the other columns `fill` (default random)."""
    m, n = t.shape
    wide = torch.full((m, width), fill, dtype=t.dtype, device=t.device) if fill is not None else \
        torch.randn(m, width, dtype=F64).to(t.dtype).to(t.device)
    wide[:, offset:offset + n] = t
    return wide, wide[:, offset:offset + n]


@pytest.mark.parametrize("dtype", [F64, torch.bfloat16])
def test_strided_inputs_and_outputs_in_place(gk, device, dtype):
    """y, z, dout column slices of wider tensors, out, dy, dz column slices of sentinel-filled buffers: the
    values from contiguous tensors (bit for bit in the interpreter; compiled, the strides' alignment can
    change how a row's sum is split across threads, so within rounding), written into the slices alone (every
    column around
    them still the sentinel), and the returned tensors are those slices."""
    m, n, gs = 37, 24, 12
    y, z, w, dout = _inputs(5, m, n, dtype=dtype, device=device)
    _, ys = _wide(y, 40, 5)
    _, zs = _wide(z, 64, 16)  # row stride 64, as z's 1664 in the mixer
    _, ds = _wide(dout, 33, 9)
    assert ys.stride() == (40, 1) and zs.stride() == (64, 1) and ds.stride() == (33, 1)
    fwd, bwd = {"block_m": 8}, {"block_m": 4, "tiles": 2}
    out0, rstd0 = gk.gated_rmsnorm_fwd(y, z, w, EPS, gs, **fwd)
    dy0, dz0, dw0 = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd0, EPS, gs, **bwd)

    obuf, oview = _wide(torch.empty_like(y), 50, 11, fill=SENTINEL)
    out, rstd = gk.gated_rmsnorm_fwd(ys, zs, w, EPS, gs, out=oview, **fwd)
    ybuf, yview = _wide(torch.empty_like(y), 31, 0, fill=SENTINEL)
    zbuf, zview = _wide(torch.empty_like(z), 64, 40, fill=SENTINEL)  # the slice ends at the row's end
    dy, dz, dw = gk.gated_rmsnorm_bwd(ds, ys, zs, w, rstd, EPS, gs, dy=yview, dz=zview, **bwd)

    assert out.data_ptr() == oview.data_ptr() and dy.data_ptr() == yview.data_ptr()
    assert dz.data_ptr() == zview.data_ptr()
    exact = gk.interpreted()
    tol = 1e-13 if dtype == F64 else 1e-2  # bf16: one rounding step of the largest value
    for name, got, want in (("out", out, out0), ("rstd", rstd, rstd0), ("dy", dy, dy0), ("dz", dz, dz0),
                            ("dweight", dw, dw0)):
        if exact:
            assert torch.equal(got, want), name
        else:
            assert_close_scaled(name, got, want, tol)
    for name, buf, lo, hi in (("out", obuf, 11, 11 + n), ("dy", ybuf, 0, n), ("dz", zbuf, 40, 40 + n)):
        outside = torch.cat([buf[:, :lo], buf[:, hi:]], 1)
        assert outside.numel() and (outside == SENTINEL).all(), f"{name}: columns outside its slice written"
    if dtype == F64:
        _compare(gk, ys, zs, w, ds, gs, 1e-12, fwd=fwd, bwd=bwd)


@pytest.mark.parametrize("groups", [1, 2])
def test_backward_zeros_the_columns_passed_as_zero(gk, device, groups):
    """`zero` (the mixer's padding columns of in_proj's gradient: a column slice of the buffer dz is a slice of)
    is all zeros after the backward, whatever it held, with row blocks past M and several groups; the columns
    around it keep their values, and dy, dz, dweight are those of a call without it, bit for bit."""
    m, n = 37, 24
    y, z, w, dout = _inputs(12, m, n, device=device)
    _, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, n // groups)
    bwd = {"block_m": 4, "tiles": 2}
    want = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, n // groups, **bwd)
    buf = torch.full((m, 40), float("nan"), dtype=F64, device=device)  # dz in columns 3..27, padding 33..38
    got = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, n // groups, dz=buf[:, 3:3 + n], zero=buf[:, 33:38], **bwd)
    for name, a, b in zip(("dy", "dz", "dweight"), got, want):
        assert torch.equal(a, b), name
    assert (buf[:, 33:38] == 0).all()
    assert buf[:, :3].isnan().all() and buf[:, 27:33].isnan().all() and buf[:, 38:].isnan().all()


def test_rstd_of_any_strides(gk, device):
    """The backward reads rstd through its strides: a (G, M) tensor transposed gives the same gradients."""
    y, z, w, dout = _inputs(6, 21, 48, device=device)
    _, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, 16, block_m=4)
    rstd_t = rstd.t().contiguous().t()  # (M, G), strides (1, M)
    assert rstd_t.stride() == (1, 21)
    a = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, 16, block_m=4, tiles=2)
    b = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd_t, EPS, 16, block_m=4, tiles=2)
    for name, g, h in zip(("dy", "dz", "dweight"), a, b):
        assert torch.equal(g, h), name


def test_launch_shapes_change_rounding_only(gk, device):
    """Rows are independent: out, rstd, dy and dz do not depend on block_m, tiles, num_warps or num_stages
    beyond the order of a row's sums (bit for bit in the interpreter; on a GPU the warps split a row's
    reduction), nor does dweight beyond its partial sums' order; and each launch is bitwise repeatable (no
    atomics)."""
    y, z, w, dout = _inputs(7, 45, 24, device=device)
    base_out, base_rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, 24, block_m=1, num_warps=1)
    one = {"block_m": 1, "tiles": 1, "num_warps": 1, "num_stages": 1}
    base = gk.gated_rmsnorm_bwd(dout, y, z, w, base_rstd, EPS, 24, **one)
    for bm, tiles, nw, stages in ((2, 3, 2, 1), (8, 1, 4, 3), (4, 5, 8, 2), (64, 16, 4, 3)):
        out, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, 24, block_m=bm, num_warps=nw)
        assert_close_scaled("out", out, base_out, 1e-14)
        assert_close_scaled("rstd", rstd, base_rstd, 1e-14)
        opts = {"block_m": bm, "tiles": tiles, "num_warps": nw, "num_stages": stages}
        got = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, 24, **opts)
        for name, g, h in zip(("dy", "dz", "dweight"), got, base):
            assert_close_scaled(name, g, h, 1e-13)
        again = gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, 24, **opts)
        for g, h in zip(got, again):
            assert torch.equal(g, h), opts


def test_no_rows(gk, device):
    y, z, w, dout = _inputs(8, 3, 16, device=device)
    out, rstd = gk.gated_rmsnorm_fwd(y[:0], z[:0], w, EPS, 8)
    assert out.shape == (0, 16) and rstd.shape == (0, 2)
    dy, dz, dw = gk.gated_rmsnorm_bwd(dout[:0], y[:0], z[:0], w, rstd, EPS, 8)
    assert dy.shape == dz.shape == (0, 16) and dw.shape == (16,) and not dw.any()


def _bad(y, z, w, d, r):
    """The cases of test_bad_inputs_one_clear_error: (what, op, call args, message)."""
    fwd, bwd = "gated_rmsnorm_fwd", "gated_rmsnorm_bwd"
    wide = torch.zeros(y.shape[0], 2 * y.shape[1], dtype=y.dtype, device=y.device)
    return [
        ("y 3-d", fwd, (y[None], z, w, EPS, 8),
         "y must be a 2-D (rows, channels) tensor, got shape (1, 5, 16)"),
        ("z shape", fwd, (y, z[:, :8], w, EPS, 8),
         "z must be a 2-D (rows, channels) = (5, 16) tensor, got shape (5, 8)"),
        ("y last stride", fwd, (wide[:, ::2], z, w, EPS, 8),
         "y must have unit stride along its last dim (any row stride), got strides (32, 2)"),
        ("z transposed", fwd, (y, z.t().contiguous().t(), w, EPS, 8),
         "z must have unit stride along its last dim (any row stride), got strides (1, 5)"),
        ("weight shape", fwd, (y, z, w[:4], EPS, 8), "weight must be (16,), got shape (4,)"),
        ("group size", fwd, (y, z, w, EPS, 6), "group_size 6 does not divide the 16 channels"),
        ("group size 0", fwd, (y, z, w, EPS, 0), "group_size must be a positive int, got 0"),
        ("group size float", fwd, (y, z, w, EPS, 8.0), "group_size must be a positive int, got 8.0"),
        ("eps", fwd, (y, z, w, -1.0, 8), "eps must be a finite number >= 0, got -1.0"),
        ("dtype", fwd, (y.to(torch.int32), z, w, EPS, 8),
         "y must be a float64/32/16 or bfloat16 tensor, got torch.int32"),
        ("out shape", fwd, (y, z, w, EPS, 8, y[:, :4]),
         "out must be a 2-D (rows, channels) = (5, 16) tensor, got shape (5, 4)"),
        ("out dtype", fwd, (y, z, w, EPS, 8, torch.empty_like(y, dtype=torch.float32)),
         f"out must have y's dtype {y.dtype}, got torch.float32"),
        ("out rows overlap", fwd, (y, z, w, EPS, 8, wide[:, :16].as_strided((5, 16), (8, 1))),
         "out's rows overlap (row stride 8 < 16 channels)"),
        ("dout shape", bwd, (d[:3], y, z, w, r, EPS, 8),
         "dout must be a 2-D (rows, channels) = (5, 16) tensor, got shape (3, 16)"),
        ("rstd shape", bwd, (d, y, z, w, r[:, :1], EPS, 8),
         "rstd must be (rows, groups) = (5, 2), got shape (5, 1)"),
        ("rstd dtype", bwd, (d, y, z, w, r.to(torch.int64), EPS, 8),
         "rstd must be a float64/32/16 or bfloat16 tensor, got torch.int64"),
        ("dz last stride", bwd, (d, y, z, w, r, EPS, 8, None, wide[:, ::2]),
         "dz must have unit stride along its last dim (any row stride), got strides (32, 2)"),
        ("dy dtype", bwd, (d, y, z, w, r, EPS, 8, torch.empty_like(y, dtype=torch.bfloat16)),
         f"dy must have y's dtype {y.dtype}, got torch.bfloat16"),
        ("zero rows", bwd, (d, y, z, w, r, EPS, 8, None, None, wide[:3, :4]),
         "zero must be a 2-D (rows, channels) = (5, 4) tensor, got shape (3, 4)"),
    ]


BAD_IDS = [c[0] for c in _bad(*(torch.zeros(5, 16, dtype=F64),) * 4, torch.zeros(5, 2, dtype=F64))]


@pytest.mark.parametrize("what", BAD_IDS)
def test_bad_inputs_one_clear_error(gk, device, what):
    y, z, w, dout = _inputs(9, 5, 16, device=device)
    _, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, 8)
    _, op, args, message = next(c for c in _bad(y, z, w, dout, rstd) if c[0] == what)
    with pytest.raises(ValueError, match=f"^{op}: " + re.escape(message) + "$"):
        getattr(gk, op)(*args)


def test_bad_launch_options(gk, device):
    y, z, w, dout = _inputs(9, 5, 16, device=device)
    _, rstd = gk.gated_rmsnorm_fwd(y, z, w, EPS, 8)
    fwd, bwd = "gated_rmsnorm_fwd: ", "gated_rmsnorm_bwd: "
    with pytest.raises(ValueError, match=re.escape(fwd + "block_m must be a power of two, got 3")):
        gk.gated_rmsnorm_fwd(y, z, w, EPS, 8, block_m=3)
    warps = "num_warps must be a power of two from 1 to 32, got 6"
    with pytest.raises(ValueError, match=re.escape(fwd + warps)):
        gk.gated_rmsnorm_fwd(y, z, w, EPS, 8, num_warps=6)
    with pytest.raises(ValueError, match=re.escape(bwd + "tiles must be a positive int, got 0")):
        gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, 8, tiles=0)
    with pytest.raises(ValueError, match=re.escape(bwd + "num_stages must be a positive int, got 0")):
        gk.gated_rmsnorm_bwd(dout, y, z, w, rstd, EPS, 8, num_stages=0)


def test_cpu_tensors_need_the_interpreter(gk, monkeypatch):
    """Outside the interpreter, CPU tensors are refused with one line rather than handed to a GPU kernel."""
    monkeypatch.setattr(gk, "interpreted", lambda: False)
    y, z, w, _ = _inputs(10, 4, 8)
    with pytest.raises(ValueError, match="gated_rmsnorm_fwd: the Triton kernels need CUDA tensors"):
        gk.gated_rmsnorm_fwd(y, z, w, EPS, 8)


# --------------------------------------------------------------------------------------------------
# bench/gated_norm_bench.py on the CPU
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    return bench_script("gated_norm_bench")


def test_bench_help_and_cpu_refusal(bench, capsys):
    """--help works anywhere; without CUDA the bench stops with one line; bad shapes are refused up front."""
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0 and "--rows" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--dim", "768", "--groups", "5"])
    assert "--groups 5 does not divide --dim 768" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--z-row-stride", "700"])
    assert "--z-row-stride 700 is narrower than --dim 768" in capsys.readouterr().err
    if torch.cuda.is_available():
        return
    assert bench.main(["--rows", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: gated_norm_bench.py needs a CUDA device (none is visible here)"]


def test_bench_bytes_count_each_tensor_once(bench):
    """The floor's bytes: the forward reads y, z and writes out (+ rstd), the backward reads dout, y, z
    (+ rstd) and writes dy, dz."""
    b = bench.bytes_moved(rows=10, dim=8, groups=2, act_bytes=2)
    assert b["fwd"] == 3 * 10 * 8 * 2 + 10 * 2 * 4
    assert b["bwd"] == 5 * 10 * 8 * 2 + 10 * 2 * 4
