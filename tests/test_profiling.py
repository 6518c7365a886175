"""golf.profiling: kernel families, the per-step summary, device busy time and the step-window profiler."""

import pytest
import torch

from golf.profiling import (
    StepWindowProfiler,
    busy_us,
    compiled_graph_stats,
    idle_gaps,
    kernel_family,
    summarize_profile,
)


@pytest.mark.parametrize("name, family", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align2", "gemm"),
    ("triton_tem_fused_mm_0", "gemm"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rms_norm_rsqrt_3", "inductor_fused"),
    ("triton_poi_fused_add_mul_silu_12", "inductor_fused"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("_chunk_scan_chunk_state_bwd_dx_kernel", "ssd_scan"),
    ("_state_passing_fwd_kernel", "ssd_scan"),
    ("_bmm_chunk_fwd_kernel", "ssd_scan"),
    ("_ssd_fwd_kernel", "ssd_scan"),  # golf's own (golf/ssd_kernel.py)
    ("_ssd_bwd_chunk_kernel", "ssd_scan"),
    ("_chunk_local_bwd_kernel", "ssd_scan"),  # golf's own (golf/ssd_dcb_kernel.py)
    ("_chunk_y_kernel", "ssd_scan"), ("_chunk_dx_kernel", "ssd_scan"),  # golf's own (golf/ssd_xy_kernel.py)
    ("_dt_grads_kernel", "ssd_scan"),  # golf/ssd_dt_kernel.py
    ("_layer_norm_fwd_1pass_kernel", "gated_norm"),
    ("_gated_norm_bwd_kernel", "gated_norm"),  # golf's own (golf/gated_norm_kernel.py)
    ("_add_mix_norm_bwd_kernel", "block_norm"),  # golf's own (golf/block_norm_kernel.py)
    ("_add_mix_norm_fwd_kernel", "block_norm"),
    ("void causal_conv1d_channellast_fwd_kernel<Causal_conv1d_channellast_fwd_kernel_traits<128, 4>>", "causal_conv"),
    ("_conv_bwd_kernel", "causal_conv"),  # golf's own (golf/conv_kernel.py)
    ("_conv_fwd_kernel", "causal_conv"),
    ("_conv_bwd_dpre_kernel", "causal_conv"),
    ("_conv_bwd_dx_kernel", "causal_conv"),
    ("_conv_bwd_fused_kernel", "causal_conv"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>", "optimizer_foreach"),
    ("Memcpy DtoD (Device -> Device)", "copy_fill"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise_eager"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "nccl"),
    ("some_unknown_kernel", "other"),
])
def test_kernel_families(name, family):
    assert kernel_family(name) == family


def test_profile_summary_per_step_and_ranking():
    events = [("triton_poi_fused_add_0", 100.0), ("_chunk_scan_fwd_kernel", 300.0), ("triton_poi_fused_add_0", 100.0),
              ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", 600.0), ("mystery", 50.0)]
    s = summarize_profile(events, steps=2, top=2)
    assert s["ms_per_step"] == pytest.approx(1150 / 1e3 / 2)
    assert s["by_family_ms"] == {"gemm": 0.3, "ssd_scan": 0.15, "inductor_fused": 0.1, "other": 0.025}
    assert list(s["by_family_ms"]) == ["gemm", "ssd_scan", "inductor_fused", "other"]  # largest first
    assert [t["name"] for t in s["top"]] == ["nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "_chunk_scan_fwd_kernel"]
    assert s["top"][0]["calls_per_step"] == 0.5
    by_name = {t["name"]: t for t in summarize_profile(events, steps=2)["top"]}
    assert by_name["triton_poi_fused_add_0"]["calls_per_step"] == 1.0
    assert by_name["triton_poi_fused_add_0"]["ms_per_step"] == pytest.approx(0.1)


def test_busy_time_is_the_union_of_kernel_intervals():
    assert busy_us([]) == 0.0
    assert busy_us([(0, 10), (20, 25)]) == 15  # a 10 us gap: idle
    assert busy_us([(0, 10), (5, 12), (11, 11.5), (30, 31)]) == 13  # overlaps counted once, nested ones not at all
    assert busy_us([(5, 12), (0, 10)]) == 12  # order does not matter


def test_idle_gaps_by_length_and_by_the_kernels_around_them():
    # two steps of: a (0-10), b on another stream inside a (2-8), c after a 1-us gap, d after a 50-us gap
    kernels = []
    for t0 in (0.0, 1000.0):
        kernels += [("a", t0, t0 + 10), ("b", t0 + 2, t0 + 8), ("c", t0 + 11, t0 + 20), ("d", t0 + 70, t0 + 80)]
    g = idle_gaps(list(reversed(kernels)), steps=2)  # order does not matter
    # per step: 1 + 50 us, plus the 920-us gap between the steps counted once over two steps
    assert g["idle_ms_per_step"] == pytest.approx((2 * 51 + 920) / 1e3 / 2, abs=1e-3)
    assert g["gaps_per_step"] == 2.5
    assert g["by_length"]["<2us"] == {"ms_per_step": 0.001, "gaps_per_step": 1.0}
    assert g["by_length"]["20-100us"] == {"ms_per_step": 0.05, "gaps_per_step": 1.0}
    assert g["by_length"][">=100us"]["gaps_per_step"] == 0.5 and g["by_length"]["2-5us"]["gaps_per_step"] == 0
    top = g["top_pairs"]
    # the nested kernel b never ends a busy stretch: the gap after it belongs to a -> c
    assert [t["pair"] for t in top] == ["d -> a", "c -> d", "a -> c"]
    assert top[1] == {"pair": "c -> d", "ms_per_step": 0.05, "gaps_per_step": 1.0}
    assert idle_gaps([("x", 0.0, 5.0)], steps=1)["idle_ms_per_step"] == 0 and len(idle_gaps(kernels, 2, top=1)["top_pairs"]) == 1


def test_step_window_writes_its_trace_when_asked(tmp_path):
    window = StepWindowProfiler(first_step=1, steps=1, device=torch.device("cpu"), trace_path=str(tmp_path / "t.json.gz"))
    a = torch.randn(32, 32)
    window.before_step(1)
    a @ a
    window.before_step(2)
    import gzip
    import json

    with gzip.open(tmp_path / "t.json.gz") as f:
        trace = json.loads(f.read())
    assert window.summary["trace"] == str(tmp_path / "t.json.gz")
    assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])


def test_step_window_profiles_exactly_its_steps_on_cpu():
    ticks = iter(range(100))
    window = StepWindowProfiler(first_step=3, steps=2, device=torch.device("cpu"), clock=lambda: float(next(ticks)),
                                record_shapes=True)
    a = torch.randn(64, 64)
    for step in range(1, 7):
        window.before_step(step)
        assert (window.summary is None) == (step < 5)  # done before step 5 is launched
        if step in (3, 4):
            with torch.profiler.record_function("golf/forward"):
                a = a @ a  # only the window's steps run a matmul
        else:
            a = a + 1
    s = window.summary
    assert s["steps"] == 2 and s["first_step"] == 3 and s["timeline"] == "CPU ops (self time)"
    assert s["wall_ms_per_step"] == pytest.approx(1e3 / 2)  # the fake clock ticked once between start and stop
    names = {t["name"] for t in s["top"]}
    assert "aten::mm" in names and "aten::add" not in names
    assert list(s["host_ranges_ms"]) == ["golf/forward"] and s["host_ranges_ms"]["golf/forward"] > 0
    ops = {(o["op"], o["shapes"]): o for o in s["aten_ops"]}  # each op by the shapes it was called with
    mm = ops[("aten::mm", "[[64, 64], [64, 64]]")]
    assert mm["calls_per_step"] == 1 and mm["ms_per_step"] > 0
    assert not any(op == "aten::add" for op, _ in ops)  # outside the window
    plain = StepWindowProfiler(first_step=1, steps=1, device=torch.device("cpu"))  # train.profile_shapes off
    plain.before_step(1)
    a @ a
    plain.before_step(2)
    assert {(o["op"], o["shapes"]) for o in plain.summary["aten_ops"]} >= {("aten::mm", "[]")}  # by name alone


def test_aten_ops_rank_ops_by_own_time_and_shapes():
    """aten_ops on a CPU profile: ops keyed by name and input shapes, per step, largest first, top N."""
    from golf.profiling import aten_ops

    big, small = torch.randn(256, 256), torch.randn(8, 8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):  # two "steps"
            big @ big
            small + small
            small + small
    rows = aten_ops(prof.events(), steps=2, cuda=False, top=10)
    by_key = {(r["op"], r["shapes"]): r for r in rows}
    assert by_key[("aten::mm", "[[256, 256], [256, 256]]")]["calls_per_step"] == 1
    assert by_key[("aten::add", "[[8, 8], [8, 8]]")]["calls_per_step"] == 2  # two calls a step, one key
    assert [r["ms_per_step"] for r in rows] == sorted((r["ms_per_step"] for r in rows), reverse=True)
    assert len(aten_ops(prof.events(), steps=2, cuda=False, top=1)) == 1


def test_step_window_off_unfinished_and_ended_on_its_last_step():
    off = StepWindowProfiler(first_step=1, steps=0, device=torch.device("cpu"))
    for step in (1, 2):
        off.before_step(step)
    off.close()
    assert off.summary is None and off._prof is None
    cut = StepWindowProfiler(first_step=1, steps=5, device=torch.device("cpu"))
    for step in (1, 2):
        cut.before_step(step)
    cut.close()  # training ended inside the window: no summary
    assert cut.summary is None and cut._prof is None
    ended = StepWindowProfiler(first_step=2, steps=2, device=torch.device("cpu"))
    for step in (1, 2, 3):
        ended.before_step(step)
    ended.close()  # training ended on the window's last step: its steps were all launched
    assert ended.summary is not None and ended.summary["steps"] == 2 and ended._prof is None


def test_compiled_graph_stats_counts_graphs_and_names_each_break():
    """A function that asks a view for its storage offset compiles as two graphs around one break, whose
    reason names the call; a function without it compiles as one graph and no break."""
    from torch._dynamo.utils import counters

    def asks_offset(z):
        _, b = torch.split(z, [8, 24], dim=-1)
        if b.storage_offset() % 8:
            b = b.contiguous()
        return (b * 2).sum()

    def whole(z):
        return (torch.split(z, [8, 24], dim=-1)[1] * 2).sum()

    for fn, graphs, breaks in ((asks_offset, 2, 1), (whole, 1, 0)):
        torch._dynamo.reset()
        counters.clear()
        torch.compile(fn, backend="eager")(torch.randn(2, 3, 32))
        stats = compiled_graph_stats()
        assert (stats["graphs"], stats["graph_breaks"]) == (graphs, breaks)
        assert sum(stats["break_reasons"].values()) == breaks
        assert all("storage_offset" in r and "\n" not in r and len(r) <= 300 for r in stats["break_reasons"])
    torch._dynamo.reset()
    counters.clear()
