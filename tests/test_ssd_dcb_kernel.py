"""golf/ssd_dcb_kernel.py: the C·B gradient and the within-chunk log-decay gradient of the SSD backward in one
kernel (model.ssm_scan "mamba_keep_dA"). Its PyTorch twin against autograd of the within-chunk output it
differentiates; the kernel (Triton's CPU interpreter here, compiled on a GPU) against the twin; on a GPU with
mamba-ssm, against the two mamba-ssm functions it replaces."""

import json

import pytest
import torch

from golf.ssd_dcb_kernel import chunk_bwd_reference, dcb_ddA_reference


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


def _dx_inputs(b, t, h, g, p, n, size, dtype, device, seed=0):
    """_inputs plus B (b, t, g, n), dstates (b, chunks, h, p, n) and D (h,)."""
    x, dt, dA_cumsum, dout, CB = _inputs(b, t, h, g, p, size, torch.float64, "cpu", seed)
    gen = torch.Generator().manual_seed(seed + 1)
    B = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    dstates = torch.randn(b, dt.shape[2], h, p, n, generator=gen, dtype=torch.float64)
    D = torch.rand(h, generator=gen, dtype=torch.float64) + 0.5
    return tuple(v.to(device=device, dtype=dtype) for v in (x, dt, dA_cumsum, dout, CB, B, dstates, D))


@pytest.mark.parametrize("t,h,g", [(64, 4, 1), (40, 4, 2)], ids=["whole_chunks", "ragged_two_groups"])
def test_chunk_bwd_reference_is_autograd_of_the_chunk_outputs(t, h, g):
    """The twin's dx, ddt and dD are the gradients, w.r.t. x, dt as a factor and D, of <dout, y_within + D x> +
    <dstates, S_contrib>, S_contrib the chunk's own part of the state it passes on (sum_j exp(cs_last - cs_j) dt_j
    x_j ⊗ B_j), in fp64: what mamba-ssm's _chunk_scan_chunk_state_bwd_dx computes."""
    b, p, n, size = 2, 8, 4, 16
    x, dt, dA_cumsum, dout, CB, B, dstates, D = _dx_inputs(b, t, h, g, p, n, size, torch.float64, "cpu")
    chunks = dt.shape[2]
    pad = chunks * size - t
    x_leaf, dt_leaf, D_leaf = (v.clone().requires_grad_() for v in (x, dt, D))
    dA = torch.diff(dA_cumsum, dim=-1, prepend=torch.zeros_like(dA_cumsum[..., :1]))

    def chunked(v):
        return torch.nn.functional.pad(v, (0, 0, 0, 0, 0, pad)).view(b, chunks, size, v.shape[2], v.shape[3])

    xs, dys, bs = chunked(x_leaf), chunked(dout), chunked(B).repeat_interleave(h // g, dim=3)
    y = _within_chunk_y(xs, dt_leaf, dA, CB, h // g) + D_leaf[:, None] * xs
    cs = dA.cumsum(-1)
    w = torch.exp(cs[..., -1:] - cs) * dt_leaf  # (b, h, c, L)
    s_contrib = torch.einsum("bhcj,bcjhp,bcjhn->bchpn", w, xs, bs)
    ((y * dys).sum() + (s_contrib * dstates).sum()).backward()
    _, _, dx, ddt, dD = chunk_bwd_reference(x, dt, dA_cumsum, dout, CB, B, dstates, D)
    torch.testing.assert_close(dx, x_leaf.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddt, dt_leaf.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dD, D_leaf.grad, rtol=1e-10, atol=1e-10)
    assert min(dx.abs().max(), ddt.abs().max(), dD.abs().max()) > 0.1  # the comparison is not of zeros


def _states_inputs(b, t, h, g, p, n, size, dtype, device, seed=0):
    """_dx_inputs plus C (b, t, g, n), states_in (b, chunks, h, p, n) and ddA_chunk_end (b, h, chunks)."""
    base = _dx_inputs(b, t, h, g, p, n, size, torch.float64, "cpu", seed)
    chunks = base[1].shape[2]
    gen = torch.Generator().manual_seed(seed + 2)
    C = torch.randn(b, t, g, n, generator=gen, dtype=torch.float64)
    states_in = torch.randn(b, chunks, h, p, n, generator=gen, dtype=torch.float64)
    chunk_end = torch.randn(b, h, chunks, generator=gen, dtype=torch.float64)
    return tuple(v.to(device=device, dtype=dtype) for v in (*base, C, states_in, chunk_end))


@pytest.mark.parametrize("t,h,g", [(64, 4, 1), (40, 4, 2)], ids=["whole_chunks", "ragged_two_groups"])
def test_chunk_bwd_states_reference_is_autograd_of_the_chunk_outputs(t, h, g):
    """With the states' part: dB, dC and the whole increments' gradient ddA are the gradients, w.r.t. B, C and dA,
    of <dout, y_within + D x + y_from_state> + <dstates, S_contrib> + <ddA_chunk_end, cs_last>, y_from_state_i =
    exp(cs_i) states_in C_i (the state entering the chunk read by its outputs), in fp64: what mamba-ssm's
    _chunk_state_bwd_db and _chunk_scan_bwd_dC give with the log-decay sums _mamba_chunk_scan_combined_bwd does."""
    b, p, n, size = 2, 8, 4, 16
    x, dt, dA_cumsum, dout, CB, B, dstates, D, C, states_in, chunk_end = _states_inputs(b, t, h, g, p, n, size,
                                                                                      torch.float64, "cpu")
    chunks = dt.shape[2]
    pad = chunks * size - t
    x_leaf, dt_leaf, B_leaf, C_leaf = (v.clone().requires_grad_() for v in (x, dt, B, C))
    dA = torch.diff(dA_cumsum, dim=-1, prepend=torch.zeros_like(dA_cumsum[..., :1])).requires_grad_()

    def chunked(v):
        return torch.nn.functional.pad(v, (0, 0, 0, 0, 0, pad)).view(b, chunks, size, v.shape[2], v.shape[3])

    xs, dys = chunked(x_leaf), chunked(dout)
    bs, cs_ = (chunked(v).repeat_interleave(h // g, dim=3) for v in (B_leaf, C_leaf))
    cs = dA.cumsum(-1)
    y = _within_chunk_y(xs, dt_leaf, dA, CB, h // g) + D[:, None] * xs
    y = y + torch.einsum("bhci,bcihn,bchpn->bcihp", torch.exp(cs), cs_, states_in)
    s_contrib = torch.einsum("bhcj,bcjhp,bcjhn->bchpn", torch.exp(cs[..., -1:] - cs) * dt_leaf, xs, bs)
    ((y * dys).sum() + (s_contrib * dstates).sum() + (chunk_end * cs[..., -1]).sum()).backward()
    got = chunk_bwd_reference(x, dt, dA_cumsum, dout, CB, B, dstates, D, C, states_in, chunk_end)
    for name, a, r in zip(("ddA", "dx", "ddt", "dB", "dC"), (got[1], got[2], got[3], got[5], got[6]),
                          (dA.grad, x_leaf.grad, dt_leaf.grad, B_leaf.grad, C_leaf.grad)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=name)
        assert r.abs().max() > 0.1, name  # the comparison is not of zeros


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("t,h,g,p,n,size", [(64, 4, 1, 16, 16, 16), (40, 4, 2, 12, 12, 16), (70, 2, 1, 16, 32, 32)],
                         ids=["whole_chunks", "ragged_two_groups_narrow", "ragged_chunk_32"])
def test_chunk_bwd_states_kernel_matches_reference(dk, dtype, t, h, g, p, n, size):
    """chunk_bwd with the states' part (dB, dC and the whole ddA beside the rest) against its twin."""
    device = "cpu" if dk.interpreted() else "cuda"
    x, dt, dA_cumsum, dout, CB, B, dstates, D, C, states_in, chunk_end = _states_inputs(2, t, h, g, p, n, size,
                                                                                      dtype, device, seed=t)
    got = dk.chunk_bwd(x, dt, dA_cumsum, dout, CB, B, dstates, D, C=C, states_in=states_in,
                       ddA_chunk_end=chunk_end)
    want = chunk_bwd_reference(x, dt, dA_cumsum, dout, CB, B, dstates, D, C, states_in, chunk_end)
    tol = 1e-12 if dtype == torch.float64 else 5e-5
    assert len(got) == len(want) == 7
    for name, a, r in zip(("dCB", "ddA", "dx", "ddt", "dD", "dB", "dC"), got, want):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item(), msg=name)


@pytest.mark.parametrize("split", [1, 2])
def test_dcb_ddA_writes_into_out(dk, split):
    """dcb_ddA(out=(dCB, ddA)) (golf.mixer_op's "mamba_keep_golf_overlap" allocates them on one stream and runs the
    kernel on another): the same values, written into the tensors given, also where a head split adds into dCB
    (which it zeroes first); a wrong buffer is one line."""
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _inputs(2, 40, 4, 1, 12, 16, torch.float64, device, seed=split)
    launch = dk.Launch(num_warps=4, num_stages=1, head_split=split)
    want = dk.dcb_ddA(*inputs, launch=launch)
    out = tuple(torch.full_like(w, float("nan")) for w in want)
    got = dk.dcb_ddA(*inputs, launch=launch, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12 * r.abs().max().item())
    with pytest.raises(ValueError, match=r"^dcb_ddA: out must be two contiguous torch.float64 tensors on") as e:
        dk.dcb_ddA(*inputs, out=(out[0].float(), out[1]))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("h,g,split,maxnreg", [(4, 1, 2, None), (4, 1, 4, None), (4, 2, 2, None), (4, 1, 1, 128)])
def test_head_split_launch_matches_reference(dk, h, g, split, maxnreg):
    """Several programs sharing a group's heads, their dCB, dB and dC sums added with atomics, or one program a group
    under a register cap (which ptxas may meet by spilling; the interpreter ignores it): the same results as the
    twin, for each part (dA alone, with dx, with the states)."""
    device = "cpu" if dk.interpreted() else "cuda"
    x, dt, cs, dout, CB, B, dstates, D, C, states_in, chunk_end = _states_inputs(2, 40, h, g, 12, 12, 16,
                                                                               torch.float64, device, seed=split)
    launch = dk.Launch(num_warps=4, num_stages=2, head_split=split, maxnreg=maxnreg)
    names = ("dCB", "ddA", "dx", "ddt", "dD", "dB", "dC")
    states = {"C": C, "states_in": states_in, "ddA_chunk_end": chunk_end}
    for got, want in ((dk.dcb_ddA(x, dt, cs, dout, CB, launch=launch), dcb_ddA_reference(x, dt, cs, dout, CB)),
                      (dk.chunk_bwd(x, dt, cs, dout, CB, B, dstates, D, launch=launch),
                       chunk_bwd_reference(x, dt, cs, dout, CB, B, dstates, D)),
                      (dk.chunk_bwd(x, dt, cs, dout, CB, B, dstates, D, **states, launch=launch),
                       chunk_bwd_reference(x, dt, cs, dout, CB, B, dstates, D, *states.values()))):
        assert len(got) == len(want)
        for name, a, r in zip(names, got, want):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12 * r.abs().max().item(), msg=name)
            assert r.abs().max() > 0.1, name  # the comparison is not of zeros


@pytest.mark.parametrize("launch,expected", [
    (lambda dk: dk.Launch(4, 3, 3), "head_split divides the 4 heads of a group and whose maxnreg"),
    (lambda dk: dk.Launch(0, 3, 1), "launch must be a Launch of positive ints"),
    (lambda dk: (4, 3, 1), "launch must be a Launch of positive ints"),
    (lambda dk: dk.Launch(8, 1, 1, 16), "maxnreg is None or in [24, 255], got Launch(num_warps=8, "),
])
def test_bad_launch_is_one_clear_line(dk, launch, expected):
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _inputs(2, 64, 4, 1, 16, 16, torch.float32, device)
    with pytest.raises(ValueError, match="^dcb_ddA: ") as e:
        dk.dcb_ddA(*inputs, launch=launch(dk))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_chunk_bwd_states_come_together(dk):
    device = "cpu" if dk.interpreted() else "cuda"
    x, dt, dA_cumsum, dout, CB, B, dstates, D, C, states_in, _ = _states_inputs(2, 64, 4, 1, 16, 16, 16,
                                                                              torch.float32, device)
    with pytest.raises(ValueError, match="^chunk_bwd: C, states_in and ddA_chunk_end come together"):
        dk.chunk_bwd(x, dt, dA_cumsum, dout, CB, B, dstates, D, C=C, states_in=states_in)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("t,h,g,p,n,size", [(64, 4, 1, 16, 16, 16), (40, 4, 2, 12, 12, 16), (70, 2, 1, 16, 32, 32)],
                         ids=["whole_chunks", "ragged_two_groups_narrow", "ragged_chunk_32"])
def test_chunk_bwd_kernel_matches_reference(dk, dtype, t, h, g, p, n, size):
    """chunk_bwd (dx, ddt, dD beside dCB, ddA in one launch) against its twin; dx written into the tensor given."""
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _dx_inputs(2, t, h, g, p, n, size, dtype, device, seed=t)
    dx_given = torch.full_like(inputs[0], float("nan"))
    got = dk.chunk_bwd(*inputs, dx=dx_given)
    want = chunk_bwd_reference(*inputs)
    assert got[2] is dx_given
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name, a, r in zip(("dCB", "ddA", "dx", "ddt", "dD"), got, want):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item(), msg=name)
    tail = got[3].shape[2] * size - t
    if tail:  # ddt past a ragged end
        assert (got[3][:, :, -1, size - tail:] == 0).all()


def test_chunk_bwd_bf16_within_rounding_of_fp64(dk):
    """dx and dD leave in bf16; on a GPU ddt's dots also take bf16 operands (C·B times the decays, and B), as
    mamba-ssm's do, where the interpreter's take fp32 ones."""
    device = "cpu" if dk.interpreted() else "cuda"
    inputs = _dx_inputs(2, 64, 4, 1, 16, 16, 16, torch.bfloat16, device)
    got = dk.chunk_bwd(*inputs, dot_dtype=torch.float32 if dk.interpreted() else None)
    want = chunk_bwd_reference(*(v.double() for v in inputs))
    for name, a, r in zip(("dCB", "ddA", "dx", "ddt", "dD"), got, want):
        tol = 1e-2 if name in ("dx", "dD") or (name == "ddt" and not dk.interpreted()) else 1e-5
        torch.testing.assert_close(a.double(), r, rtol=tol, atol=tol * r.abs().max().item(), msg=name)


@pytest.mark.parametrize("change,expected", [
    (lambda v: {**v, "B": v["B"][:, :, :, :3].repeat(1, 1, 2, 1)}, "B must have shape (2, 64, 1, 3)"),
    (lambda v: {**v, "dstates": v["dstates"][..., :8]}, "dstates must have shape"),
    (lambda v: {**v, "D": v["D"][:, None].expand(4, 16)}, "D must have shape (4,)"),
    (lambda v: {**v, "dx": v["dx"].double()}, "dx must have x's dtype"),
])
def test_chunk_bwd_bad_input_is_one_clear_line(dk, change, expected):
    names = ("x", "dt", "dA_cumsum", "dout", "CB", "B", "dstates", "D")
    device = "cpu" if dk.interpreted() else "cuda"
    values = dict(zip(names, _dx_inputs(2, 64, 4, 1, 16, 16, 16, torch.float32, device)))
    values["dx"] = torch.empty_like(values["x"])
    with pytest.raises(ValueError, match="^chunk_bwd: ") as e:
        dk.chunk_bwd(**change(values))
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
    tol = 3e-3  # mamba-ssm's dots round fp32 operands to TF32 on a GPU (golf's do not); bf16 operands are exact
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
    assert set(result["parity"]["golf dcb_ddA"]) == {"dCB", "ddA"}
    assert set(result["parity"]["golf chunk_bwd"]) == {"dCB", "ddA", "dx", "ddt", "dD"}
    assert set(result["parity"]["golf chunk_bwd + states"]) == {"dCB", "ddA", "dx", "ddt", "dD", "dB", "dC"}
    assert max(max(v.values()) for v in result["parity"].values()) < 1e-5
    assert all(result["timing"][k]["device_ms"] > 0 for k in result["parity"])
    assert result["errors"] == {} and "| golf chunk_bwd + states |" in capsys.readouterr().out


def test_bench_dry_run_sweeps_register_caps(dk, tmp_path):
    """--sweep over the parts and register caps asked for: one entry a launch, each checked against the twin."""
    from conftest import bench_script

    if not dk.interpreted():
        pytest.skip("the dry run is for a machine without CUDA (the GPU run needs mamba-ssm and a device call)")
    bench = bench_script("ssd_dcb_bench")
    out = tmp_path / "sweep.json"
    assert bench.main(["--device", "cpu", "--batch", "1", "--seqlen", "64", "--heads", "2", "--headdim", "16",
                       "--chunk", "32", "--reps", "1", "--sweep", "--parts", "dA", "--warps", "4", "--stages", "1",
                       "--splits", "1", "--maxnreg", "0,128", "--json", str(out)]) == 0
    sweep = json.loads(out.read_text())["sweep"]
    assert list(sweep) == ["dA"]
    assert [r["launch"] for r in sweep["dA"]] == [[4, 1, 1, None], [4, 1, 1, 128]]
    assert all(r["max_rel_err"] < 1e-5 and r["device_ms"] > 0 for r in sweep["dA"])


@pytest.mark.parametrize("args, message", [
    (["--maxnreg", "0,300"], "expected register caps in [24, 255] or 0 (none) separated by commas, got '0,300'"),
    (["--parts", "dA,dy"], "--parts 'dA,dy': expected names of dA, dx, chunk separated by commas"),
])
def test_bench_refuses_bad_sweep_args_in_one_line(args, message, capsys):
    from conftest import bench_script

    bench = bench_script("ssd_dcb_bench")
    with pytest.raises(SystemExit):
        bench.parse_args(args)
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_bench_refuses_bad_sizes_in_one_line(capsys):
    from conftest import bench_script

    bench = bench_script("ssd_dcb_bench")
    with pytest.raises(SystemExit):
        bench.parse_args(["--heads", "12", "--groups", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("every size must be positive and --heads a multiple of --groups")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunk_bwd_matches_mamba_ssm_on_gpu(dk, dtype):
    """chunk_bwd's dx, ddt and dD against mamba-ssm's _chunk_scan_chunk_state_bwd_dx at the production head shapes
    (chunk 64, headdim 64, d_state 32, 12 heads in one group), bf16 dstates as the kept-internals backward passes."""
    from golf import ssm

    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here")
    from mamba_ssm.ops.triton import ssd_combined

    x, dt, dA_cumsum, dout, CB, B, dstates, D = _dx_inputs(2, 512, 12, 1, 64, 32, 64, dtype, "cuda")
    dt, dA_cumsum, D = dt.float(), dA_cumsum.float(), D.float()
    want_dx, want_ddt, want_dD = ssd_combined._chunk_scan_chunk_state_bwd_dx(x, dt, dA_cumsum, B, CB, dout, dstates,
                                                                             D=D)
    _, _, dx, ddt, dD = dk.chunk_bwd(x, dt, dA_cumsum, dout, CB, B, dstates, D)
    tol = 3e-3 if dtype == torch.float32 else 1e-2  # fp32: mamba-ssm's dots round to TF32 on a GPU, golf's do not
    for name, a, r in (("dx", dx, want_dx), ("ddt", ddt, want_ddt), ("dD", dD, want_dD)):
        torch.testing.assert_close(a.float(), r.float(), rtol=tol, atol=tol * r.abs().max().item(), msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunk_bwd_states_matches_mamba_ssm_on_gpu(dk):
    """With the states' part, bf16 at the production head shapes: dB, dC and the whole ddA against mamba-ssm's
    _chunk_state_bwd_db, _chunk_scan_bwd_dC and the sums golf.mixer_op._scan_bwd_keep adds to them."""
    from golf import ssm

    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here")
    from mamba_ssm.ops.triton import ssd_chunk_scan, ssd_chunk_state, ssd_combined

    x, dt, cs, dy, CB, B, dstates, D, C, states_in, chunk_end = _states_inputs(2, 512, 12, 1, 64, 32, 64,
                                                                               torch.bfloat16, "cuda")
    dt, cs, D, chunk_end = dt.float(), cs.float(), D.float(), chunk_end.float()
    dB, dda_next = ssd_chunk_state._chunk_state_bwd_db(x, dt, cs, dstates, B=B, ngroups=1)
    dC, dda_prev = ssd_chunk_scan._chunk_scan_bwd_dC(states_in, cs, dy, C=C, ngroups=1)
    dda_prev[..., -1] += chunk_end
    dda = ssd_combined._chunk_scan_bwd_ddAcs_stable(x, dt, cs, dy, CB)
    dda += dda_next + dda_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    got = dk.chunk_bwd(x, dt, cs, dy, CB, B, dstates, D, C=C, states_in=states_in, ddA_chunk_end=chunk_end)
    for name, a, r in (("ddA", got[1], dda), ("dB", got[5], dB), ("dC", got[6], dC)):
        torch.testing.assert_close(a.float(), r.float(), rtol=1e-2, atol=1e-2 * r.abs().max().item(), msg=name)
