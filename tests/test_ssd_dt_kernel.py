"""golf/ssd_dt_kernel.py: the SSD backward's last step, from the log-decays' gradient pieces to the gradients of the
raw dt, A and dt_bias, in one launch. The PyTorch twin against golf.mixer_op's glue and mamba-ssm's
_chunk_cumsum_bwd written out with torch ops; the kernel (Triton's CPU interpreter here, compiled on a GPU)
against the twin, fp64 to ~1e-12; with mamba-ssm's source importable, against the glue and mamba-ssm's real
_chunk_cumsum_bwd in the interpreter; on a GPU with mamba-ssm, against them at the production shapes."""

import json
import os
from contextlib import nullcontext

import pytest
import torch
from conftest import triton_kernels

from golf import ssm
from golf.ssd_dt_kernel import dt_grads_reference

F64 = torch.float64


@pytest.fixture(scope="module")
def tk():
    """golf.ssd_dt_kernel, interpreted on the CPU or compiled for a CUDA device."""
    return triton_kernels("ssd_dt_kernel", "dt-gradient")


def _device(tk) -> str:
    return "cpu" if tk.interpreted() else "cuda"


def _inputs(b, t, h, size, dtype=F64, device="cpu", seed=0, softplus=True, bias=True, dt_dtype=None) -> dict:
    """dt_grads's keyword inputs: the gradient pieces in `dtype` (the compute dtype), raw dt in dt_dtype (default
    `dtype`) with a few tokens far past softplus's threshold (v > 20) and, as randn gives them, some below 0 (which
    the clamp catches when softplus is off)."""
    gen = torch.Generator().manual_seed(seed)
    chunks = -(-t // size)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=F64)

    dt = randn(b, t, h) * 2
    dt.view(-1)[::7] += 30  # v > 20: softplus is v itself there and its derivative 1
    values = {"ddA": randn(b, h, chunks, size), "ddA_next": randn(b, h, chunks, size),
              "ddA_prev": randn(b, h, chunks, size), "ddA_chunk_end": randn(b, h, chunks),
              "ddt_sp": randn(b, h, chunks, size), "dt": dt, "A": -torch.rand(h, generator=gen, dtype=F64) - 0.1,
              "dt_bias": randn(h) * 0.5 if bias else None}
    out = {k: v.to(device=device, dtype=dt_dtype if k == "dt" and dt_dtype else dtype) if v is not None else None
           for k, v in values.items()}
    return out | {"dt_softplus": softplus}


def _assert_close(got, want, tol, what):
    """ddt, dA, ddt_bias within tol of the largest magnitude of each (None where want is None)."""
    for name, a, r in zip(("ddt", "dA", "ddt_bias"), got, want):
        if r is None:
            assert a is None, f"{what}: {name} should be None"
            continue
        assert a.shape == r.shape and a.dtype == r.dtype, f"{what}: {name} {a.shape} {a.dtype} vs {r.shape} {r.dtype}"
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item(), msg=f"{what}: {name}")


def _pre_softplus(v: dict) -> torch.Tensor:
    return v["dt"].to(F64) + (v["dt_bias"].to(F64) if v["dt_bias"] is not None else 0)


def _mamba_path(ddA, ddA_next, ddA_prev, ddA_chunk_end, ddt_sp, dt, A, dt_bias=None, dt_softplus=False):
    """What the kernel replaces, written out with torch ops: golf.mixer_op._scan_bwd_keep's glue as it stands
    (in place on copies), then mamba-ssm's _chunk_cumsum_bwd_kernel chunk by chunk, every head at once, with its
    masks, clamp and softplus formula; the sums as it adds them up, per chunk."""
    ddA, ddA_prev = ddA.clone(), ddA_prev.clone()
    ddA_prev[..., -1].add_(ddA_chunk_end)
    ddA += ddA_next + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    _, t, h = dt.shape
    size = ddA.shape[-1]
    ddt = torch.empty_like(dt)
    dA = torch.zeros(h, dtype=ddA.dtype)
    ddt_bias = torch.zeros(h, dtype=ddA.dtype)
    for c in range(ddA.shape[2]):
        n = min(size, t - c * size)  # the chunk's tokens inside the sequence
        dda = ddA[:, :, c, :n]  # (b, h, n)
        grad = dda * A[:, None] + ddt_sp[:, :, c, :n]
        v = dt[:, c * size:c * size + n].transpose(1, 2).to(ddA.dtype)  # (b, h, n)
        if dt_bias is not None:
            v = v + dt_bias[:, None]
        pre = v
        if dt_softplus:
            v = torch.where(v <= 20, torch.log(torch.exp(v) + 1), v)
        clamp = (v < 0) | (v > float("inf"))
        v = v.clamp(min=0, max=float("inf"))
        grad = torch.where(clamp, torch.zeros_like(grad), grad)
        if dt_softplus:
            grad = torch.where(pre <= 20, grad * torch.sigmoid(pre), grad)
        ddt[:, c * size:c * size + n] = grad.transpose(1, 2).to(dt.dtype)
        dA += (dda * v).sum((0, 2))
        ddt_bias += grad.sum((0, 2))
    return ddt, dA, ddt_bias if dt_bias is not None else None


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no_softplus"])
@pytest.mark.parametrize("t,size", [(64, 16), (40, 16)], ids=["whole_chunks", "ragged"])
def test_reference_is_mambas_glue_and_chunk_cumsum_bwd(softplus, t, size):
    """The twin gives the glue + _chunk_cumsum_bwd written out with torch ops, fp64; with softplus off some
    tokens are clamped (ddt 0), with it on some are past the threshold (ddt not scaled by the sigmoid)."""
    v = _inputs(2, t, 3, size, softplus=softplus)
    want = _mamba_path(**v)
    got = dt_grads_reference(**v)
    _assert_close(got, want, 1e-12, "twin vs mamba-ssm's path")
    pre = _pre_softplus(v)
    g = want[0]
    if softplus:
        assert (pre > 20).any() and (g[pre > 20] != 0).all()
    else:
        assert (pre < 0).any() and (g[pre < 0] == 0).all() and (g[pre >= 0] != 0).all()
    assert min(r.abs().max().item() for r in want) > 0.1


SHAPES = [(128, 32), (100, 32), (128, 64), (150, 64), (40, 24)]
SHAPE_IDS = ["whole_32", "ragged_32", "whole_64", "ragged_64", "ragged_24"]


@pytest.mark.parametrize("softplus,bias", [(True, True), (False, True), (True, False)],
                         ids=["softplus_bias", "no_softplus", "no_bias"])
@pytest.mark.parametrize("t,size", SHAPES, ids=SHAPE_IDS)
def test_kernel_matches_reference(tk, t, size, softplus, bias):
    """fp64: ddt, dA and ddt_bias as the twin's to ~1e-12, for whole and ragged last chunks, L = 32 and 64 (and 24,
    a tile wider than the chunk), softplus on and off, with and without dt_bias."""
    v = _inputs(2, t, 5, size, device=_device(tk), seed=t + size, softplus=softplus, bias=bias)
    got = tk.dt_grads(**v)
    _assert_close(got, dt_grads_reference(**v), 1e-12, "kernel vs twin")
    assert (got[2] is None) == (not bias)
    pre = _pre_softplus(v)
    if softplus:
        assert (pre > 20).any()
    else:
        assert (pre < 0).any() and (got[0][pre < 0] == 0).all()


@pytest.mark.parametrize("chunks", [2, 3])
def test_chunks_a_program_do_not_change_the_result(tk, monkeypatch, chunks):
    """Programs walking 2 or 3 chunks (LAUNCH["chunks"]; 5 chunks here, so the last program's block runs past the
    end) give the twin's result, with num_warps given."""
    monkeypatch.setitem(tk.LAUNCH, "chunks", chunks)
    v = _inputs(2, 70, 3, 16, device=_device(tk), seed=chunks)
    _assert_close(tk.dt_grads(**v, num_warps=2), dt_grads_reference(**v), 1e-12, f"{chunks} chunks a program")


def test_what_past_a_ragged_end_is_read(tk):
    """Past the sequence's end (a ragged last chunk) ddA, ddA_next and ddt_sp are not read, as _chunk_cumsum_bwd
    reads them (NaN there changes nothing, bit for bit), while ddA_prev there reaches the chunk's tokens through the
    glue's reverse cumsum."""
    v = _inputs(2, 40, 3, 16, device=_device(tk))
    want = tk.dt_grads(**v)
    poisoned = {k: v[k].clone() for k in ("ddA", "ddA_next", "ddt_sp")}
    for x in poisoned.values():
        x[:, :, -1, 8:] = float("nan")  # 40 tokens: the last chunk holds 8
    for got in (tk.dt_grads(**v | poisoned), dt_grads_reference(**v | poisoned)):
        for name, a, r in zip(("ddt", "dA", "ddt_bias"), got, want):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12 * r.abs().max().item(), msg=name)
    prev = v["ddA_prev"].clone()
    prev[:, :, -1, 12] += 1.0
    moved = tk.dt_grads(**v | {"ddA_prev": prev})
    assert (moved[1] - want[1]).abs().min() > 1e-3
    _assert_close(moved, dt_grads_reference(**v | {"ddA_prev": prev}), 1e-12, "ddA_prev past the end")


def test_single_head(tk):
    v = _inputs(3, 50, 1, 16, device=_device(tk))
    _assert_close(tk.dt_grads(**v), dt_grads_reference(**v), 1e-12, "one head")


def test_strided_inputs_and_ddt_written_in_place(tk):
    """dt and ddt as the model passes them: column slices of (b, T, width) rows (zxbcdt and dzxbcdt); ddA laid
    out (b, c, h, L) and viewed (b, h, c, L). ddt is the tensor given, its columns written, every other column of
    the wide tensor untouched; the results are those of contiguous copies, bit for bit."""
    device = _device(tk)
    b, t, h, size, width = 2, 70, 4, 32, 23
    v = _inputs(b, t, h, size, device=device)
    wide = torch.randn(b, t, width, dtype=F64, device=device)
    wide[..., 9:9 + h] = v["dt"]
    strided = dict(v, dt=wide[..., 9:9 + h], ddA=v["ddA"].transpose(1, 2).contiguous().transpose(1, 2),
                   ddA_chunk_end=v["ddA_chunk_end"].transpose(0, 2).contiguous().transpose(0, 2))
    assert not strided["dt"].is_contiguous() and not strided["ddA"].is_contiguous()
    dwide = torch.full((b, t, width), float("nan"), dtype=F64, device=device)
    ddt = dwide[..., 9:9 + h]
    got = tk.dt_grads(**strided, ddt=ddt)
    assert got[0] is ddt
    assert not ddt.isnan().any()
    assert dwide[..., :9].isnan().all() and dwide[..., 9 + h:].isnan().all()
    want = tk.dt_grads(**v)
    for name, a, r in zip(("ddt", "dA", "ddt_bias"), got, want):
        torch.testing.assert_close(a, r, rtol=0, atol=0, msg=name)
    _assert_close(got, dt_grads_reference(**v), 1e-12, "strided")
    ddt_twin = torch.zeros_like(ddt)
    assert dt_grads_reference(**v, ddt=ddt_twin)[0] is ddt_twin
    torch.testing.assert_close(ddt_twin, ddt, rtol=1e-12, atol=1e-12 * ddt.abs().max().item())


def test_bf16_dt_fp32_compute(tk):
    """The production dtypes: bf16 dt and ddt, fp32 pieces, A and dt_bias. ddt within a bf16 rounding of the
    twin's (the fp32 sums run in another order), dA and ddt_bias to fp32 rounding."""
    v = _inputs(2, 100, 12, 32, dtype=torch.float32, device=_device(tk), dt_dtype=torch.bfloat16)
    got = tk.dt_grads(**v)
    want = dt_grads_reference(**v)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == got[2].dtype == torch.float32
    torch.testing.assert_close(got[0].float(), want[0].float(), rtol=1e-2, atol=1e-2 * want[0].abs().max().item())
    _assert_close(got[1:], want[1:], 1e-5, "bf16 dt")


@pytest.mark.parametrize("b,t", [(2, 0), (0, 40)], ids=["no_tokens", "no_batch"])
def test_empty(tk, b, t):
    """No tokens (zero chunks) or no sequences: an empty ddt, zero dA and ddt_bias, nothing launched."""
    v = _inputs(b, t, 3, 16, device=_device(tk))
    ddt, dA, ddt_bias = tk.dt_grads(**v)
    assert ddt.shape == (b, t, 3) and dA.shape == ddt_bias.shape == (3,)
    assert (dA == 0).all() and (ddt_bias == 0).all()
    ddt, dA, ddt_bias = dt_grads_reference(**v)
    assert ddt.shape == (b, t, 3) and (dA == 0).all() and (ddt_bias == 0).all()


@pytest.mark.parametrize("change,expected", [
    (lambda v: {**v, "dt": v["dt"][0]}, "dt must be (batch, seqlen, nheads), got shape (40, 3)"),
    (lambda v: {**v, "ddA": v["ddA"][:1]}, "ddA must be (batch, nheads, chunks, chunk_size) = (2, 3, c, L)"),
    (lambda v: {**v, "ddA": v["ddA"][..., :0]}, "ddA's chunk size (its last dimension) must be positive"),
    (lambda v: {**v, "ddA": v["ddA"][:, :, :2]}, "ddA has 2 chunks of 16 but seqlen 40 needs 3"),
    (lambda v: {**v, "ddA_next": v["ddA_next"][..., :8]}, "ddA_next must have shape (2, 3, 3, 16), got (2, 3, 3, 8)"),
    (lambda v: {**v, "ddA_prev": v["ddA_prev"][:, :2]}, "ddA_prev must have shape (2, 3, 3, 16), got (2, 2, 3, 16)"),
    (lambda v: {**v, "ddA_chunk_end": v["ddA_chunk_end"][..., None]},
     "ddA_chunk_end must have shape (2, 3, 3), got (2, 3, 3, 1)"),
    (lambda v: {**v, "ddt_sp": v["ddt_sp"][:, :, :2]}, "ddt_sp must have shape (2, 3, 3, 16)"),
    (lambda v: {**v, "A": v["A"][:2]}, "A must have shape (3,), got (2,)"),
    (lambda v: {**v, "dt_bias": v["dt_bias"][None]}, "dt_bias must have shape (3,), got (1, 3)"),
    (lambda v: {**v, "ddt": v["dt"][:, :8]}, "ddt must have shape (2, 40, 3), got (2, 8, 3)"),
    (lambda v: {**v, "ddA_next": v["ddA_next"].to("meta")}, "ddA_next is on meta but dt is on"),
    (lambda v: {**v, "A": v["A"].to(torch.int32)}, "A must be a float64/32/16 or bfloat16 tensor, got torch.int32"),
    (lambda v: {**v, "ddA_prev": v["ddA_prev"].float()},
     "ddA_prev must be torch.float64 (the compute dtype for dt's torch.float64), got torch.float32"),
    (lambda v: {**v, "dt": v["dt"].bfloat16()},
     "ddA must be torch.float32 (the compute dtype for dt's torch.bfloat16), got torch.float64"),
    (lambda v: {**v, "ddt": v["dt"].float()}, "ddt must have dt's dtype torch.float64, got torch.float32"),
    (lambda v: {**v, "num_warps": 3}, "num_warps must be a power of two from 1 to 16, got 3"),
], ids=["dt_dims", "ddA_dims", "chunk_size", "chunk_count", "ddA_next", "ddA_prev", "chunk_end", "ddt_sp", "A",
        "dt_bias", "ddt_shape", "device", "dtype", "compute_dtype", "compute_dtype_of_bf16", "ddt_dtype",
        "num_warps"])
def test_bad_input_is_one_clear_line(tk, change, expected):
    values = _inputs(2, 40, 3, 16, device=_device(tk))
    with pytest.raises(ValueError, match="^dt_grads: ") as e:
        tk.dt_grads(**change(values))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_cpu_tensors_need_the_interpreter(tk, monkeypatch):
    """Compiled kernels need CUDA tensors: CPU ones are refused in one line unless the interpreter runs them."""
    monkeypatch.setattr(tk, "interpreted", lambda: False)
    with pytest.raises(ValueError, match="^dt_grads: the Triton kernels need CUDA tensors") as e:
        tk.dt_grads(**_inputs(2, 40, 3, 16))
    assert "\n" not in str(e.value)


@pytest.fixture
def mamba_cumsum_bwd(monkeypatch):
    """mamba-ssm's _chunk_cumsum_bwd, made to run in Triton's CPU interpreter: no CUDA device to switch to, and no
    driver to time its autotune candidates with (it keeps one, BLOCK_SIZE_H 4, whose pre-hook still zeroes the
    atomics' targets)."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs mamba-ssm's kernel in Triton's CPU interpreter: needs a machine without CUDA")
    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here (put mamba-ssm's source, e.g. "
                    "PYTHONPATH=<mamba_ssm-2.3.2.post1 source>, and einops on the path)")
    from mamba_ssm.ops.triton import ssd_chunk_state

    kernel = ssd_chunk_state._chunk_cumsum_bwd_kernel
    monkeypatch.setattr(torch.cuda, "device", lambda index: nullcontext())
    monkeypatch.setattr(kernel, "configs", [c for c in kernel.configs if c.kwargs["BLOCK_SIZE_H"] == 4])
    monkeypatch.setattr(kernel, "cache", {})
    return ssd_chunk_state._chunk_cumsum_bwd


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no_softplus"])
def test_matches_mamba_ssm_in_the_interpreter(tk, mamba_cumsum_bwd, softplus):
    """golf.mixer_op's glue and mamba-ssm's real _chunk_cumsum_bwd (interpreted, fp32 as it computes; 5 heads in
    blocks of 4, so its head mask runs too) against the kernel and the twin: 100 tokens in chunks of 32 (a ragged
    last chunk), ddt written into a column slice of a wider tensor."""
    v = _inputs(2, 100, 5, 32, dtype=torch.float32, seed=7, softplus=softplus)
    ddA, ddA_prev = v["ddA"].clone(), v["ddA_prev"].clone()
    ddA_prev[..., -1].add_(v["ddA_chunk_end"])
    ddA += v["ddA_next"] + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    want = mamba_cumsum_bwd(ddA, v["ddt_sp"], v["dt"], v["A"], dt_bias=v["dt_bias"], dt_softplus=softplus)
    assert want[0].abs().max() > 0.1 and want[1].abs().max() > 0.1 and want[2].abs().max() > 0.1
    wide = torch.full((2, 100, 11), float("nan"))
    got = tk.dt_grads(**v, ddt=wide[..., 3:8])
    _assert_close(got, want, 1e-5, "kernel vs mamba-ssm")
    _assert_close(dt_grads_reference(**v), want, 1e-5, "twin vs mamba-ssm")
    assert wide[..., :3].isnan().all() and wide[..., 8:].isnan().all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matches_mamba_ssm_on_gpu(tk):
    """Against the glue and mamba-ssm's _chunk_cumsum_bwd at the production shapes (12 heads, chunk 64, bf16 dt
    and ddt as column slices, fp32 pieces) on a short sequence with a ragged end; two calls give the same bits."""
    if ssm._import_mamba_triton() is None:
        pytest.skip("mamba-ssm's Triton modules do not import here")
    from mamba_ssm.ops.triton import ssd_chunk_state

    v = _inputs(4, 500, 12, 64, dtype=torch.float32, device="cuda", dt_dtype=torch.bfloat16)
    wide = torch.zeros(4, 500, 40, dtype=torch.bfloat16, device="cuda")
    wide[..., 20:32] = v["dt"]
    v["dt"] = wide[..., 20:32]
    ddA, ddA_prev = v["ddA"].clone(), v["ddA_prev"].clone()
    ddA_prev[..., -1].add_(v["ddA_chunk_end"])
    ddA += v["ddA_next"] + ddA_prev.flip([-1]).cumsum(dim=-1).flip([-1])
    want = ssd_chunk_state._chunk_cumsum_bwd(ddA, v["ddt_sp"], v["dt"], v["A"], dt_bias=v["dt_bias"],
                                             dt_softplus=True)
    got = tk.dt_grads(**v)
    torch.testing.assert_close(got[0].float(), want[0].float(), rtol=1e-2, atol=1e-2 * want[0].abs().max().item())
    _assert_close(got[1:], want[1:], 1e-5, "kernel vs mamba-ssm")
    again = tk.dt_grads(**v)
    for a, r in zip(got, again):
        assert torch.equal(a, r)


def test_bench_dry_run_checks_parity_and_writes_its_json(tk, tmp_path, capsys):
    """bench/ssd_dt_bench.py on the CPU: golf's kernel in the interpreter against its twin, a sweep of one launch,
    the JSON written."""
    from conftest import bench_script

    if not tk.interpreted():
        pytest.skip("the dry run is for a machine without CUDA (the GPU run needs mamba-ssm and a device call)")
    bench = bench_script("ssd_dt_bench")
    out = tmp_path / "dt.json"
    assert bench.main(["--device", "cpu", "--batch", "1", "--seqlen", "100", "--heads", "3", "--chunk", "32",
                       "--reps", "1", "--sweep", "--warps", "2", "--chunks-per-program", "1",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["parity"]["golf dt_grads"]) == {"ddt", "dA", "ddt_bias"}
    assert max(result["parity"]["golf dt_grads"].values()) < 1e-2  # ddt in bf16
    assert result["timing"]["golf dt_grads"]["device_ms"] > 0 and result["timing"]["golf dt_grads"]["floor_ms"] > 0
    assert [(r["num_warps"], r["chunks"]) for r in result["sweep"]] == [(2, 1)]
    assert result["errors"] == {} and "| golf dt_grads |" in capsys.readouterr().out


def test_bench_refuses_bad_sizes_in_one_line(capsys):
    from conftest import bench_script

    bench = bench_script("ssd_dt_bench")
    with pytest.raises(SystemExit):
        bench.parse_args(["--heads", "0"])
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "every size must be positive and --heads a multiple of --groups")
