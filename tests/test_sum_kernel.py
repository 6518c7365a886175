"""golf/sum_kernel.py's column sums against their twin (torch's sum in the same compute dtype), in Triton's
interpreter on the CPU (tests/conftest.py) or compiled on a GPU: fp64 at 1e-12, rows and columns not multiples of
the blocks, strided and transposed views, a preallocated output, no rows, a launch giving the same bits each run,
and one clear line for each bad input."""

import pytest
import torch

F64 = torch.float64


@pytest.fixture(scope="module")
def dev(rk):
    return "cpu" if rk.interpreted() else "cuda"


@pytest.mark.parametrize("shape", [(1, 1), (37, 5), (300, 12), (64, 70)])
@pytest.mark.parametrize("launch", [(None, None), (16, 8), (64, 32)])
def test_fp64_matches_the_twin(rk, dev, shape, launch):
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(sum(shape))).to(dev)
    got = rk.column_sums(x, block_r=launch[0], block_n=launch[1])
    assert got.dtype == F64 and got.shape == (shape[1],)
    torch.testing.assert_close(got, rk.column_sums_reference(x), rtol=1e-12, atol=1e-12)


def test_strided_views_out_and_dtype(rk, dev):
    base = torch.randn(50, 3, 40, generator=torch.Generator().manual_seed(1)).to(dev)
    x = base[:, 1]  # (50, 40): row stride 120
    torch.testing.assert_close(rk.column_sums(x), x.sum(0), rtol=1e-5, atol=1e-5)
    t = base[:, 2].t()  # (40, 50): unit stride along rows, 120 along columns
    torch.testing.assert_close(rk.column_sums(t), t.sum(0), rtol=1e-5, atol=1e-5)
    out = torch.full((40,), -3.0, device=dev)
    assert rk.column_sums(x, out=out) is out
    torch.testing.assert_close(out, x.sum(0), rtol=1e-5, atol=1e-5)
    bf = rk.column_sums(x.to(torch.bfloat16), dtype=torch.bfloat16)  # summed in fp32, stored in bf16
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf, rk.column_sums_reference(x.to(torch.bfloat16), torch.bfloat16))


def test_no_rows_gives_zeros_and_a_launch_gives_the_same_bits_each_run(rk, dev):
    assert torch.equal(rk.column_sums(torch.empty(0, 7, device=dev)), torch.zeros(7, device=dev))
    assert rk.column_sums(torch.empty(5, 0, device=dev)).shape == (0,)
    x = torch.randn(3000, 20, generator=torch.Generator().manual_seed(2)).to(dev)
    a = rk.column_sums(x, block_r=32, block_n=4)
    assert torch.equal(a, rk.column_sums(x, block_r=32, block_n=4))  # no atomics: run to run, the same bits
    torch.testing.assert_close(rk.column_sums(x, block_r=64, block_n=16), a, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("call, match", [
    (lambda rk, d: rk.column_sums(torch.zeros(3, device=d)), "2-D"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), block_r=12), "block_r must be a power of two"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), block_n=True), "block_n must be a power of two"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), num_warps=3), "num_warps"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), out=torch.zeros(5, device=d)), r"out must be .*\(4,\)"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), out=torch.zeros(4, 2, device=d)[:, 0]), "contiguous"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, device=d), out=torch.zeros(4, device=d), dtype=F64), "dtype"),
    (lambda rk, d: rk.column_sums(torch.zeros(3, 4, dtype=torch.int32, device=d)), "x must be a float"),
])
def test_bad_inputs_get_one_line(rk, dev, call, match):
    with pytest.raises(ValueError, match=match):
        call(rk, dev)


@pytest.mark.parametrize("name", ["sum_kernel_bench", "gemm_graph_bench"])
def test_the_graph_benches_refuse_a_machine_without_cuda(name, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    from conftest import bench_script

    with pytest.raises(SystemExit):
        bench_script(name).main([])
    assert "needs a CUDA device" in capsys.readouterr().err


def test_bench_results_print_one_line_and_write_atomically(tmp_path, capsys):
    """bench/kernel_bench.print_and_write, the graph benches' output: one JSON line, and with --json an indented
    file in a folder made for it; no --json writes nothing."""
    import json

    from conftest import bench_script

    kb = bench_script("kernel_bench")
    path = tmp_path / "new" / "r.json"
    assert kb.print_and_write({"a": 1}, str(path)) == {"a": 1}
    assert json.loads(capsys.readouterr().out) == {"a": 1} and json.loads(path.read_text()) == {"a": 1}
    kb.print_and_write({"b": 2}, "")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new", "r.json"]
