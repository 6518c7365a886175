"""golf/ssd_dcb_kernel.py: the C·B gradient and the within-chunk log-decay gradient of the SSD backward in one
kernel (model.ssm_scan "mamba_keep_dA"). Its PyTorch twin against autograd of the within-chunk output it
differentiates; the kernel (Triton's CPU interpreter here, compiled on a GPU) against the twin; on a GPU with
mamba-ssm, against the two mamba-ssm functions it replaces."""

import json

import pytest
import torch

from golf.ssd_dcb_kernel import dcb_ddA_reference


def _inputs(b, t, h, g, p, size, dtype, device, seed=0):
    """x, dt (softplus'ed, zero past the end), dA_cumsum, dout, CB as mamba-ssm's forward keeps them, with a
    negative A so that the decays are <= 1."""
    gen = torch.Generator().manual_seed(seed)
    chunks = -(-t // size)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x, dout = randn(b, t, h, p), randn(b, t, h, p)
    dt = torch.nn.functional.softplus(randn(b, h, chunks * size))
    dt[..., t:] = 0.0
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.1
    dA_cumsum = (dt * A[:, None]).view(b, h, chunks, size).cumsum(-1)
    dt = dt.view(b, h, chunks, size)
    CB = randn(b, chunks, g, size, size)
    return tuple(v.to(device=device, dtype=dtype) for v in (x, dt, dA_cumsum, dout, CB))


def _within_chunk_y(x, dt, dA, CB, heads_per_group):
    """The SSD's within-chunk output y_i = sum_{j<=i} CB[i, j] exp(cs_i - cs_j) dt_j x_j with cs = cumsum(dA) over
    each chunk: (b, chunks, L, h, p) for x (b, chunks, L, h, p), dt, dA (b, h, chunks, L), CB (b, chunks, g, L, L)."""
    size = dt.shape[-1]
    cs = dA.cumsum(-1)
    pos = torch.arange(size)
    decay = torch.exp(cs[..., :, None] - cs[..., None, :]) * (pos[:, None] >= pos[None, :])  # (b, h, c, L, L)
    cb = CB.permute(0, 2, 1, 3, 4).repeat_interleave(heads_per_group, dim=1)  # (b, h, c, L, L)
    w = cb * decay * dt[..., None, :]
    return torch.einsum("bhcij,bcjhp->bcihp", w, x)


@pytest.mark.parametrize("t,h,g", [(64, 4, 1), (40, 4, 2)], ids=["whole_chunks", "ragged_two_groups"])
def test_reference_is_autograd_of_the_within_chunk_output(t, h, g):
    """The twin's dCB and ddA are the gradients, w.r.t. CB and the log-decay increments dA (cs = cumsum(dA)), of
    <dout, y_within> in fp64: the row-sum identity the kernel uses stands or falls with this formula."""
    b, p, size = 2, 8, 16
    x, dt, dA_cumsum, dout, CB = _inputs(b, t, h, g, p, size, torch.float64, "cpu")
    chunks = dt.shape[2]
    dA = torch.diff(dA_cumsum, dim=-1, prepend=torch.zeros_like(dA_cumsum[..., :1])).requires_grad_()
    CB_leaf = CB.clone().requires_grad_()
    pad = chunks * size - t
    xs = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)).view(b, chunks, size, h, p)
    dys = torch.nn.functional.pad(dout, (0, 0, 0, 0, 0, pad)).view(b, chunks, size, h, p)
    y = _within_chunk_y(xs, dt, dA, CB_leaf, h // g)
    (y * dys).sum().backward()
    dcb, dda = dcb_ddA_reference(x, dt, dA_cumsum, dout, CB)
    torch.testing.assert_close(dcb, CB_leaf.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dda, dA.grad, rtol=1e-10, atol=1e-10)
    assert dda.abs().max() > 0.1 and dcb.abs().max() > 0.1  # the comparison is not of zeros


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("t,h,g,p,size", [(64, 4, 1, 16, 16), (40, 4, 2, 12, 16), (70, 2, 1, 16, 32)],
                         ids=["whole_chunks", "ragged_two_groups_narrow_heads", "ragged_chunk_32"])
def test_kernel_matches_reference(dk, dtype, t, h, g, p, size):
    """The kernel (row sums minus column sums, then a reverse cumulative sum) against the twin (the rectangle
    summed directly): equal to rounding, exactly 0 at each chunk's first position and past a ragged end."""
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _inputs(2, t, h, g, p, size, dtype, device, seed=t)
    dcb, dda = dk.dcb_ddA(*inputs)
    want_dcb, want_dda = dcb_ddA_reference(*inputs)
    assert dcb.dtype == dda.dtype == dtype and dcb.shape == want_dcb.shape and dda.shape == want_dda.shape
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(dcb, want_dcb, rtol=tol, atol=tol)
    torch.testing.assert_close(dda, want_dda, rtol=tol, atol=tol * want_dda.abs().max().item())
    assert (dda[..., 0] == 0).all()
    tail = dda.shape[2] * size - t
    if tail:
        assert (dda[:, :, -1, size - tail:] == 0).all()


def test_kernel_bf16_within_rounding_of_fp64(dk):
    """bf16 inputs (the production dtype): fp32 products of bf16 operands, close to the fp64 twin of the same
    rounded inputs. The dots take bf16 operands on a GPU and fp32 ones in the interpreter, which miscomputes bf16
    dots (the same bf16 values, exact in fp32)."""
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _inputs(2, 64, 4, 1, 16, 16, torch.bfloat16, device)
    dcb, dda = dk.dcb_ddA(*inputs, dot_dtype=torch.float32 if dk.interpreted() else None)
    assert dcb.dtype == dda.dtype == torch.float32
    want_dcb, want_dda = dcb_ddA_reference(*(v.double() for v in inputs))
    torch.testing.assert_close(dcb.double(), want_dcb, rtol=1e-5, atol=1e-5 * want_dcb.abs().max().item())
    torch.testing.assert_close(dda.double(), want_dda, rtol=1e-5, atol=1e-5 * want_dda.abs().max().item())


@pytest.mark.parametrize("change,expected", [
    (lambda v: {**v, "x": v["x"][0]}, "x must be (batch, seqlen, nheads, headdim)"),
    (lambda v: {**v, "dt": v["dt"][:, :, :1]}, "dt has 1 chunks of 16 but seqlen 64 needs 4"),
    (lambda v: {**v, "CB": v["CB"][:, :, :, :8]}, "CB must be (batch, chunks, ngroups, L, L)"),
    (lambda v: {**v, "dout": v["dout"][:, :32]}, "dout must have shape"),
    (lambda v: {**v, "dout": v["dout"].double()}, "dout must have x's dtype"),
    (lambda v: {**v, "CB": v["CB"].to(torch.int32)}, "CB must be a float64/32/16 or bfloat16 tensor"),
])
def test_bad_input_is_one_clear_line(dk, change, expected):
    names = ("x", "dt", "dA_cumsum", "dout", "CB")
    device = "cpu" if dk.interpreted() else "cuda"
    values = dict(zip(names, _inputs(2, 64, 4, 1, 16, 16, torch.float32, device)))
    with pytest.raises(ValueError, match="^dcb_ddA: ") as e:
        dk.dcb_ddA(**{k: v for k, v in change(values).items()})
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_matches_mamba_ssm_on_gpu(dk, dtype):
    """Against what it replaces, mamba-ssm's _chunk_scan_bwd_dcb and _chunk_scan_bwd_ddAcs_stable, at the
    production head shapes (chunk 64, headdim 64, 12 heads in one group) on a short sequence."""
    from golf import ssm

    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here")
    from mamba_ssm.ops.triton import ssd_combined

    x, dt, dA_cumsum, dout, CB = _inputs(2, 512, 12, 1, 64, 64, dtype, "cuda")
    CB = CB.to(dtype)
    want_dcb = ssd_combined._chunk_scan_bwd_dcb(x, dt.float(), dA_cumsum.float(), dout, ngroups=1)
    want_dda = ssd_combined._chunk_scan_bwd_ddAcs_stable(x, dt.float(), dA_cumsum.float(), dout, CB)
    dcb, dda = dk.dcb_ddA(x, dt.float(), dA_cumsum.float(), dout, CB)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(dcb, want_dcb, rtol=tol, atol=tol * want_dcb.abs().max().item())
    torch.testing.assert_close(dda, want_dda, rtol=tol, atol=tol * want_dda.abs().max().item())


def test_bench_dry_run_checks_parity_and_writes_its_json(dk, tmp_path, capsys):
    """bench/ssd_dcb_bench.py on the CPU: golf's kernel in the interpreter against its twin, the JSON written."""
    from conftest import bench_script

    if not dk.interpreted():
        pytest.skip("the dry run is for a machine without CUDA (the GPU run needs mamba-ssm and a device call)")
    bench = bench_script("ssd_dcb_bench")
    out = tmp_path / "dcb.json"
    assert bench.main(["--device", "cpu", "--batch", "1", "--seqlen", "96", "--heads", "2", "--headdim", "16",
                       "--chunk", "32", "--reps", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["parity"]["golf"]) == {"dCB", "ddA"} and max(result["parity"]["golf"].values()) < 1e-5
    assert result["timing"]["golf"]["device_ms"] > 0 and result["errors"] == {}
    assert "| golf |" in capsys.readouterr().out


def test_bench_refuses_bad_sizes_in_one_line(capsys):
    from conftest import bench_script

    bench = bench_script("ssd_dcb_bench")
    with pytest.raises(SystemExit):
        bench.parse_args(["--heads", "12", "--groups", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("every size must be positive and --heads a multiple of --groups")
