"""golf/ssd_xy_kernel.py: the SSD scan's chunk output y (forward) and its input gradient dx (backward), one program
per head, chunk and batch (model.ssm_scan "mamba_keep_xy"). The PyTorch twins against the whole scan's reference
and against the chunk-backward twin already checked against autograd; the kernels (Triton's CPU interpreter here,
compiled on a GPU) against the twins; on a GPU with mamba-ssm, against the two mamba-ssm functions they replace."""

import pytest
import torch

from golf.mixer_op import _scan_internals_reference
from golf.ssd_dcb_kernel import chunk_bwd_reference
from golf.ssd_xy_kernel import chunk_dx_reference, chunk_y_reference
from golf.ssm import ssd_scan_reference


def _y_inputs(b, t, h, g, p, n, size, dtype, device, seed=0):
    """(CB, x, dt, dA_cumsum, C, states, D) as mamba-ssm's forward hands them to _chunk_scan_fwd, made by
    golf.mixer_op._scan_internals_reference in fp64, and the raw (dt, A, B, dt_bias) they came from."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x, dt_raw, B, C = randn(b, t, h, p), randn(b, t, h), randn(b, t, g, n), randn(b, t, g, n)
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.1
    dt_bias, D = randn(h) * 0.5, torch.rand(h, generator=gen, dtype=torch.float64) + 0.5
    dA_cumsum, dt, states, CB = _scan_internals_reference(x, dt_raw, A, B, C, dt_bias, size)
    kept = tuple(v.to(device=device, dtype=dtype) for v in (CB, x, dt, dA_cumsum, C, states, D))
    return kept, (dt_raw, A, B, dt_bias)


def _dx_inputs(b, t, h, g, p, n, size, dtype, device, seed=0):
    """(x, dt, dA_cumsum, B, CB, dout, dstates, D) in mamba-ssm's _chunk_scan_chunk_state_bwd_dx order."""
    (CB, x, dt, dA_cumsum, _, _, D), (_, _, B, _) = _y_inputs(b, t, h, g, p, n, size, torch.float64, "cpu", seed)
    gen = torch.Generator().manual_seed(seed + 1)
    dout = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    dstates = torch.randn(b, dt.shape[2], h, p, n, generator=gen, dtype=torch.float64)
    return tuple(v.to(device=device, dtype=dtype) for v in (x, dt, dA_cumsum, B, CB, dout, dstates, D))


@pytest.mark.parametrize("t,h,g", [(64, 4, 1), (40, 4, 2)], ids=["whole_chunks", "ragged_two_groups"])
def test_y_reference_is_the_whole_scan(t, h, g):
    """chunk_y's twin, fed the internals mamba-ssm's forward keeps (the states entering each chunk, C·B, the
    running log-decays), gives the scan's output as golf.ssm.ssd_scan_reference computes it from the raw inputs,
    in fp64."""
    (CB, x, dt, dA_cumsum, C, states, D), (dt_raw, A, B, dt_bias) = _y_inputs(2, t, h, g, 8, 4, 16,
                                                                              torch.float64, "cpu")
    want, _ = ssd_scan_reference(x, dt_raw, A, B, C, D, dt_bias, 16)
    got = chunk_y_reference(CB, x, dt, dA_cumsum, C, states, D)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert states[:, 1:].abs().max() > 0.1  # the states' part is in the comparison


@pytest.mark.parametrize("t,h,g", [(64, 4, 1), (40, 4, 2)], ids=["whole_chunks", "ragged_two_groups"])
def test_dx_reference_is_the_chunk_backward_twins(t, h, g):
    """chunk_dx's twin gives chunk_bwd_reference's dx, ddt and dD (checked there against autograd), and without D
    the same dx less D dy and no dD."""
    x, dt, dA_cumsum, B, CB, dout, dstates, D = _dx_inputs(2, t, h, g, 8, 4, 16, torch.float64, "cpu")
    want = chunk_bwd_reference(x, dt, dA_cumsum, dout, CB, B, dstates, D)[2:]
    got = chunk_dx_reference(x, dt, dA_cumsum, B, CB, dout, dstates, D)
    for name, a, r in zip(("dx", "ddt", "dD"), got, want):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12, msg=name)
        assert r.abs().max() > 0.1, name
    dx, ddt, dD = chunk_dx_reference(x, dt, dA_cumsum, B, CB, dout, dstates)
    assert dD is None
    torch.testing.assert_close(dx, want[0] - D[:, None] * dout, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ddt, want[1], rtol=1e-12, atol=1e-12)


SHAPES = [(64, 4, 1, 16, 16, 16), (40, 4, 2, 12, 12, 16), (70, 2, 1, 16, 32, 32)]
SHAPE_IDS = ["whole_chunks", "ragged_two_groups_narrow", "ragged_chunk_32"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("t,h,g,p,n,size", SHAPES, ids=SHAPE_IDS)
def test_y_kernel_matches_reference(xk, dtype, t, h, g, p, n, size):
    device = "cpu" if xk.interpreted() else "cuda"
    inputs, _ = _y_inputs(2, t, h, g, p, n, size, dtype, device, seed=t)
    got, want = xk.chunk_y(*inputs), chunk_y_reference(*inputs)
    assert got.shape == want.shape == inputs[1].shape and got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())
    no_d = xk.chunk_y(*inputs[:-1])
    torch.testing.assert_close(no_d, chunk_y_reference(*inputs[:-1]), rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("t,h,g,p,n,size", SHAPES, ids=SHAPE_IDS)
def test_dx_kernel_matches_reference(xk, dtype, t, h, g, p, n, size):
    """dx written into the tensor given; ddt zero past a ragged end; without D, no dD."""
    device = "cpu" if xk.interpreted() else "cuda"
    inputs = _dx_inputs(2, t, h, g, p, n, size, dtype, device, seed=t)
    dx_given = torch.full_like(inputs[0], float("nan"))
    got = xk.chunk_dx(*inputs, dx=dx_given)
    want = chunk_dx_reference(*inputs)
    assert got[0] is dx_given
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name, a, r in zip(("dx", "ddt", "dD"), got, want):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item(), msg=name)
    tail = got[1].shape[2] * size - t
    if tail:
        assert (got[1][:, :, -1, size - tail:] == 0).all()
    dx, ddt, dD = xk.chunk_dx(*inputs[:-1])
    assert dD is None
    want_dx, want_ddt, _ = chunk_dx_reference(*inputs[:-1])
    torch.testing.assert_close(dx, want_dx, rtol=tol, atol=tol * want_dx.abs().max().item())
    torch.testing.assert_close(ddt, want_ddt, rtol=tol, atol=tol * want_ddt.abs().max().item())


@pytest.mark.parametrize("maxnreg", [0, 128])
def test_register_cap_is_the_same_function(xk, maxnreg):
    """Under a register cap (ptxas may meet it by spilling; the interpreter ignores it) or explicitly none: the same
    results as the twins."""
    device = "cpu" if xk.interpreted() else "cuda"
    inputs, _ = _y_inputs(2, 80, 4, 2, 16, 16, 32, torch.float32, device, seed=3)
    want = chunk_y_reference(*inputs)
    torch.testing.assert_close(xk.chunk_y(*inputs, maxnreg=maxnreg), want, rtol=2e-5,
                               atol=2e-5 * want.abs().max().item())
    inputs = _dx_inputs(2, 80, 4, 2, 16, 16, 32, torch.float32, device, seed=3)
    for name, a, r in zip(("dx", "ddt", "dD"), xk.chunk_dx(*inputs, maxnreg=maxnreg), chunk_dx_reference(*inputs)):
        torch.testing.assert_close(a, r, rtol=2e-5, atol=2e-5 * r.abs().max().item(), msg=name)


def test_kernels_read_strided_views(xk):
    """x, B and C as the mixer passes them: slices of one (b, T, d + 2 G N) conv output, rows 2 G N wider than
    the heads; dy a transposed copy. Results equal those of contiguous copies."""
    device = "cpu" if xk.interpreted() else "cuda"
    b, t, h, g, p, n, size = 2, 40, 4, 1, 12, 12, 16
    (CB, x, dt, cs, C, states, D), (_, _, B, _) = _y_inputs(b, t, h, g, p, n, size, torch.float64, device)
    B = B.to(device)  # the raw inputs stay on the CPU
    wide = torch.cat([x.flatten(2), B.flatten(2), C.flatten(2)], dim=-1)  # (b, t, h p + 2 g n)
    xv, Bv, Cv = wide.split([h * p, g * n, g * n], dim=-1)
    xv, Bv, Cv = xv.view(b, t, h, p), Bv.view(b, t, g, n), Cv.view(b, t, g, n)
    assert not xv.is_contiguous()
    torch.testing.assert_close(xk.chunk_y(CB, xv, dt, cs, Cv, states, D), xk.chunk_y(CB, x, dt, cs, C, states, D),
                               rtol=0, atol=0)
    dout = torch.randn(b, h, t, p, dtype=torch.float64, device=device).transpose(1, 2)
    dstates = torch.randn(b, dt.shape[2], h, p, n, dtype=torch.float64, device=device)
    got = xk.chunk_dx(xv, dt, cs, Bv, CB, dout, dstates, D)
    want = xk.chunk_dx(x, dt, cs, B, CB, dout.contiguous(), dstates, D)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=0, atol=0)


def test_bf16_within_rounding_of_fp64(xk):
    """bf16 inputs (the production dtype): y and dx leave in bf16, ddt in fp32, close to the fp64 twins of the same
    rounded inputs. The dots take bf16 operands on a GPU, fp32 ones in the interpreter (which miscomputes bf16
    dots; the decay-weighted C·B tile is then not rounded to bf16, as it is on a GPU and in mamba-ssm)."""
    device = "cpu" if xk.interpreted() else "cuda"
    dot = torch.float32 if xk.interpreted() else None
    inputs, _ = _y_inputs(2, 64, 4, 1, 16, 16, 16, torch.bfloat16, device)
    y = xk.chunk_y(*inputs, dot_dtype=dot)
    want = chunk_y_reference(*(v.double() for v in inputs))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), want, rtol=1e-2, atol=1e-2 * want.abs().max().item())
    inputs = _dx_inputs(2, 64, 4, 1, 16, 16, 16, torch.bfloat16, device)
    got = xk.chunk_dx(*inputs, dot_dtype=dot)
    want = chunk_dx_reference(*(v.double() for v in inputs))
    assert got[0].dtype == got[2].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    for name, a, r in zip(("dx", "ddt", "dD"), got, want):
        torch.testing.assert_close(a.double(), r, rtol=1e-2, atol=1e-2 * r.abs().max().item(), msg=name)


@pytest.mark.parametrize("change,expected", [
    (lambda v: {**v, "x": v["x"][0]}, "x must be (batch, seqlen, nheads, headdim)"),
    (lambda v: {**v, "dt": v["dt"][:, :, :1]}, "dt has 1 chunks of 16 but seqlen 64 needs 4"),
    (lambda v: {**v, "CB": v["CB"][:, :, :, :8]}, "CB must be (batch, chunks, ngroups, L, L)"),
    (lambda v: {**v, "C": v["C"][..., :3]}, "C must have shape (2, 64, 1, 16)"),
    (lambda v: {**v, "states": v["states"][:, :, :, :8]}, "states must be (batch, chunks, nheads, headdim, dstate) = (2, 4, 4, 16, n), got (2, 4, 4, 8, 16)"),
    (lambda v: {**v, "states": v["states"][..., :8]}, "C must have shape (2, 64, 1, 8), got (2, 64, 1, 16)"),
    (lambda v: {**v, "D": v["D"][:, None].expand(4, 16)}, "D must have shape (4,)"),
    (lambda v: {**v, "CB": v["CB"].to(torch.int32)}, "CB must be a float64/32/16 or bfloat16 tensor"),
    (lambda v: {**v, "num_warps": 3}, "num_warps must be a power of two from 1 to 16, got 3"),
    (lambda v: {**v, "maxnreg": 300}, "maxnreg must be None, 0 (no cap) or an int in [24, 255], got 300"),
])
def test_y_bad_input_is_one_clear_line(xk, change, expected):
    names = ("CB", "x", "dt", "dA_cumsum", "C", "states", "D")
    device = "cpu" if xk.interpreted() else "cuda"
    values = dict(zip(names, _y_inputs(2, 64, 4, 1, 16, 16, 16, torch.float32, device)[0]))
    with pytest.raises(ValueError, match="^chunk_y: ") as e:
        xk.chunk_y(**change(values))
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("change,expected", [
    (lambda v: {**v, "B": v["B"][..., :3]}, "B must have shape (2, 64, 1, 16)"),
    (lambda v: {**v, "dstates": v["dstates"][:, :2]}, "dstates must be (batch, chunks, nheads, headdim, dstate) = (2, 4, 4, 16, n)"),
    (lambda v: {**v, "dout": v["dout"][:, :32]}, "dout must have shape"),
    (lambda v: {**v, "dout": v["dout"].double()}, "dout must have x's dtype"),
    (lambda v: {**v, "dx": v["dx"].double()}, "dx must have x's dtype"),
])
def test_dx_bad_input_is_one_clear_line(xk, change, expected):
    names = ("x", "dt", "dA_cumsum", "B", "CB", "dout", "dstates", "D")
    device = "cpu" if xk.interpreted() else "cuda"
    values = dict(zip(names, _dx_inputs(2, 64, 4, 1, 16, 16, 16, torch.float32, device)))
    values["dx"] = torch.empty_like(values["x"])
    with pytest.raises(ValueError, match="^chunk_dx: ") as e:
        xk.chunk_dx(**change(values))
    assert expected in str(e.value) and "\n" not in str(e.value)


def _mamba_ssm():
    from golf import ssm

    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here")
    from mamba_ssm.ops.triton import ssd_chunk_scan, ssd_combined

    return ssd_chunk_scan, ssd_combined


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_matches_mamba_ssm_on_gpu(xk, dtype):
    """Against what they replace, mamba-ssm's _chunk_scan_fwd and _chunk_scan_chunk_state_bwd_dx, at the production
    head shapes (chunk 64, headdim 64, d_state 32, 12 heads in one group) on a short sequence: the kept internals in
    fp32 as mamba-ssm's forward makes them, bf16 dstates as the kept-internals backward passes them."""
    ssd_chunk_scan, ssd_combined = _mamba_ssm()
    (CB, x, dt, cs, C, states, D), _ = _y_inputs(2, 512, 12, 1, 64, 32, 64, dtype, "cuda")
    CB, dt, cs, states, D = CB.float(), dt.float(), cs.float(), states.float(), D.float()
    want = ssd_chunk_scan._chunk_scan_fwd(CB, x, dt, cs, C, states, D=D)[0]
    got = xk.chunk_y(CB, x, dt, cs, C, states, D)
    tol = 3e-3 if dtype == torch.float32 else 1e-2  # fp32: mamba-ssm's dots round to TF32 on a GPU, golf's do not
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol * want.abs().max().item())
    x, dt, cs, B, CB, dout, dstates, D = _dx_inputs(2, 512, 12, 1, 64, 32, 64, dtype, "cuda")
    dt, cs, CB, D = dt.float(), cs.float(), CB.float(), D.float()
    want = ssd_combined._chunk_scan_chunk_state_bwd_dx(x, dt, cs, B, CB, dout, dstates, D=D)
    got = xk.chunk_dx(x, dt, cs, B, CB, dout, dstates, D)
    for name, a, r in zip(("dx", "ddt", "dD"), got, want):
        torch.testing.assert_close(a.float(), r.float(), rtol=tol, atol=tol * r.abs().max().item(), msg=name)


def test_bench_dry_run_checks_parity_and_writes_its_json(xk, tmp_path, capsys):
    """bench/ssd_xy_bench.py on the CPU: golf's kernels in the interpreter against their twins, a one-launch sweep,
    the JSON written."""
    import json

    from conftest import bench_script

    if not xk.interpreted():
        pytest.skip("the dry run is for a machine without CUDA (the GPU run needs mamba-ssm and a device call)")
    bench = bench_script("ssd_xy_bench")
    out = tmp_path / "xy.json"
    assert bench.main(["--device", "cpu", "--batch", "1", "--seqlen", "96", "--heads", "2", "--headdim", "16",
                       "--chunk", "32", "--dstate", "16", "--reps", "1", "--sweep", "--warps", "2",
                       "--maxnreg", "0,128", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["parity"]["golf y"]) == {"y"} and set(result["parity"]["golf dx"]) == {"dx", "ddt", "dD"}
    assert max(max(v.values()) for v in result["parity"].values()) < 1e-5
    assert all(result["timing"][k]["device_ms"] > 0 and result["timing"][k]["floor_ms"] > 0 for k in result["parity"])
    assert [(r["num_warps"], r["maxnreg"]) for r in result["sweep"]["y"]] == [(2, None), (2, 128)]
    assert all(r["max_rel_err"] < 1e-5 for r in result["sweep"]["dx"])
    assert result["errors"] == {} and "| golf dx |" in capsys.readouterr().out


def test_bench_refuses_bad_sizes_in_one_line(capsys):
    from conftest import bench_script

    bench = bench_script("ssd_xy_bench")
    with pytest.raises(SystemExit):
        bench.parse_args(["--heads", "12", "--groups", "5"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "every size must be positive and --heads a multiple of --groups")
    with pytest.raises(SystemExit):
        bench.parse_args(["--warps", "4,0"])
    assert "expected positive integers separated by commas, got '4,0'" in capsys.readouterr().err
