"""The training loop on a tiny CPU config: determinism, outputs, schedules, QAT, non-finite loss.

Determinism tests use wallclock_s = 0 (the step-only schedule, see golf/train.py); the wallclock schedule
is tested with a fake clock that advances one second per reading (the loop reads it once per step)."""

import itertools
import json

import pytest
import torch
from safetensors.torch import load_file

import golf.optim
import golf.train
from golf.config import ConfigError, TrainConfig
from golf.errors import TrainingError
from golf.train import CKPT_NAME, batch_layout, budget_progress, ema_decay_at, lr_scale, muon_momentum_at
from tests.conftest import tiny_run_params, train_tiny

_params, _train = tiny_run_params, train_tiny


def _weights(rd):
    return load_file(str(rd / "train" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tiny_env):
    """Seed 1 trained once through the stage (metrics, provenance, curve), shared by the tests below."""
    root, _, ov = tiny_env
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        from stages import train as train_stage

        p = _params(root, ov, "ref")
        metrics = train_stage.run(p, 1)
    return metrics, p.run_dir(1)


def test_stage_outputs_metrics_curve_provenance(reference, in_tiny):
    _, rd = reference
    saved = json.loads((rd / "metrics" / "train.json").read_text())
    for key in ("steps", "tokens", "train_s", "tok_per_s", "val_loss", "val_bpb", "peak_mem_mb", "kernel_paths",
                "qat_started_step"):
        assert key in saved, key
    assert saved["steps"] == 6 and saved["tokens"] == 6 * 256 and 0 < saved["val_bpb"] < 20
    assert saved["kernel_paths"] == {"ssm": "reference", "attn": "sdpa"}
    assert saved["compiled_graphs"] is None  # CPU runs stay eager: no Dynamo graphs to count
    prov = json.loads((rd / "train" / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["kernel_paths"] == saved["kernel_paths"] and "commit" in prov["git"]
    assert prov["ssm_autotune"] == {} and "ssm_autotune" not in saved  # reference path: nothing autotuned
    assert prov["config"]["train"]["max_steps"] == 6
    assert json.loads((rd / "train" / "config.json").read_text())["d_model"] == 32
    rows = (rd / "plots" / "train_curve.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "tokens", "train_s", "lr_scale", "train_loss", "val_bpb"]
    assert [int(r.split("\t")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]  # log_every 1
    assert float(rows[-1].split("\t")[-1]) == pytest.approx(saved["val_bpb"], abs=1e-6)
    assert (rd / "ckpt" / CKPT_NAME).is_file()


def test_same_seed_identical_different_seed_differs(reference, in_tiny):
    root, _, ov = in_tiny
    m1, r1 = reference
    m2, r2 = _train(root, ov, 1, "again")
    m3, r3 = _train(root, ov, 2, "other")
    assert m1["val_bpb"] == m2["val_bpb"] and m1["val_bpb"] != m3["val_bpb"]
    w1, w2, w3 = _weights(r1), _weights(r2), _weights(r3)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_host_runahead_changes_when_losses_are_read_not_the_run(reference, in_tiny):
    """Reading each loss one step late (the default) or at once gives the same weights, losses and curve."""
    root, _, ov = in_tiny
    m1, r1 = reference
    seen = []
    m2, r2 = _train(root, ov + ["train.host_runahead=false"], 1, "sync",
                    progress_cb=lambda step, loss, *_: seen.append((step, loss)))
    assert m1["val_bpb"] == m2["val_bpb"] and m1["steps"] == m2["steps"] == 6
    w1, w2 = _weights(r1), _weights(r2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    rows = [[(r.split("\t")[0], r.split("\t")[4]) for r in (rd / "plots" / "train_curve.tsv").read_text().splitlines()]
            for rd in (r1, r2)]
    assert rows[0] == rows[1] and len(rows[0]) == 7
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5, 6]


def test_optimizer_graph_on_a_cpu_is_the_eager_run(reference, in_tiny):
    """train.optimizer_graph captures only on CUDA: on a CPU the run is the reference run, and its metrics say
    that nothing replayed."""
    root, _, ov = in_tiny
    m1, r1 = reference
    m2, r2 = _train(root, ov + ["train.optimizer_graph=true"], 1, "graph")
    assert m1["val_bpb"] == m2["val_bpb"] and m2["optimizer_graph"] is False and m1["optimizer_graph"] is False
    w1, w2 = _weights(r1), _weights(r2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_profiled_window_is_written_beside_the_weights_and_changes_nothing(reference, in_tiny):
    """train.profile_steps profiles steps 3-4 of the real loop, train.profile_shapes with the ops' input shapes;
    the run is the reference run all the same."""
    root, _, ov = in_tiny
    from stages import train as train_stage

    m1, r1 = reference
    p = _params(root, ov + ["train.profile_steps=2", "train.profile_first_step=3", "train.profile_shapes=true"],
                "profiled")
    m2 = train_stage.run(p, 1)
    r2 = p.run_dir(1)
    assert m1["val_bpb"] == m2["val_bpb"] and "profile" not in m2
    assert "profile" not in json.loads((r2 / "metrics" / "train.json").read_text())
    w1, w2 = _weights(r1), _weights(r2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    prof = json.loads((r2 / "train" / "profile.json").read_text())
    assert prof["steps"] == 2 and prof["first_step"] == 3 and prof["timeline"] == "CPU ops (self time)"
    assert prof["wall_ms_per_step"] > 0 and any(t["name"] == "aten::mm" for t in prof["top"])
    assert set(prof["host_ranges_ms"]) == {"golf/batch", "golf/forward", "golf/backward", "golf/optimizer",
                                           "golf/ema", "golf/read_loss"}
    assert sum(prof["host_ranges_ms"].values()) <= prof["wall_ms_per_step"] * 1.05  # phases inside the window
    # ops by their operands' shapes; which ops make the top 15 by CPU self time varies run to run on a busy CPU
    # (aten::mm dropped out of it once in CI), so the check is that the shapes are there, not which ops rank
    assert prof["aten_ops"] and any(o["shapes"].startswith("[[") for o in prof["aten_ops"])
    assert all(o["shapes"].startswith("[[") for o in prof["aten_ops"] if o["op"] in ("aten::mm", "aten::addmm"))
    assert not (r1 / "train" / "profile.json").exists()  # off by default


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_pending_loss_reads_the_value_it_was_given(device):
    loss = torch.tensor(2.5, device=device)
    pending = golf.train.PendingLoss(loss)
    loss.fill_(7.0)  # work queued after the capture does not change what was captured
    assert pending.value() == 2.5 and (pending.event is None) == (device == "cpu")


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(in_tiny, monkeypatch):
    root, _, ov = in_tiny
    real_build = golf.train.build_model

    def build_poisoned(cfg, device):  # the 5th forward pass (step 5) returns NaN logits
        model = real_build(cfg, device)
        calls = {"n": 0}

        def hook(module, args, out):
            calls["n"] += 1
            return out * float("nan") if calls["n"] == 5 else out

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(golf.train, "build_model", build_poisoned)
    with pytest.raises(TrainingError, match=r"non-finite training loss \(nan\) at step 5;.*step 4\)") as err:
        _train(root, ov, 1, "nan")
    rd = root / "nan" / "1"
    assert str(rd / "ckpt" / CKPT_NAME) in str(err.value)
    blob = torch.load(rd / "ckpt" / CKPT_NAME, weights_only=True)
    assert blob["state"]["step"] == 4 and all(torch.isfinite(v).all() for v in blob["model"].values())
    assert not (rd / "train" / "model.safetensors").exists()


def test_non_finite_weights_are_never_checkpointed(in_tiny, monkeypatch):
    root, _, ov = in_tiny
    real_build, built = golf.train.build_model, []
    monkeypatch.setattr(golf.train, "build_model", lambda cfg, device: built.append(real_build(cfg, device))
                        or built[-1])

    def poison(step, *_):  # after step 4's update, before its checkpoint: one weight becomes inf
        if step == 4:
            with torch.no_grad():
                next(built[0].parameters()).view(-1)[0] = float("inf")

    with pytest.raises(TrainingError, match=r"non-finite weights after step 4;.*step 2\)"):
        _train(root, ov, 1, "inf", progress_cb=poison)
    blob = torch.load(root / "inf" / "1" / "ckpt" / CKPT_NAME, weights_only=True)
    assert blob["state"]["step"] == 2 and all(torch.isfinite(v).all() for v in blob["model"].values())


def test_wallclock_budget_drives_warmdown_qat_and_stop(in_tiny):
    root, _, ov = in_tiny
    ticks = iter(range(10 ** 6))
    m, rd = _train(root, ov + ["train.wallclock_s=20", "train.max_steps=1000", "train.warmup_steps=2",
                               "train.warmdown_frac=0.5", "train.qat_start_frac=0.85", "train.checkpoint_every=0"],
                   1, "clock", clock=lambda: float(next(ticks)))
    assert m["steps"] == 20 and m["train_s"] == 20  # stopped by the budget, far before max_steps
    assert m["warmup_s"] == 1  # the first step's own time is off the budget
    assert m["qat_started_step"] == 17  # first step whose start time is >= 0.85 x 20 s
    rows = [r.split("\t") for r in (rd / "plots" / "train_curve.tsv").read_text().splitlines()[1:]]
    scales = [float(r[3]) for r in rows]
    for r, scale in zip(rows, scales):
        step, t = int(r[0]), float(r[2])
        assert t == step  # one second per step on the fake clock
        assert scale == pytest.approx(lr_scale(step - 1, (step - 1) / 20, 2, 0.5), abs=1e-6)
    assert scales[:2] == [0.5, 1.0] and set(scales[2:11]) == {1.0}  # warmup, then flat to half the budget
    assert all(a > b for a, b in itertools.pairwise(scales[10:])) and scales[-1] == pytest.approx(0.1)


def test_profiler_time_is_kept_off_the_wallclock_budget(in_tiny, monkeypatch):
    """A profile window whose summary takes 5 s (of a fake clock that advances a second per reading) costs the
    20-s budget no steps beyond the few clock readings of the window's own bookkeeping (2 s here); on
    2026-11-29 summarizing 20 GPU steps took 9 s of a 60-s run's budget before the loop kept it off."""
    import golf.profiling

    root, _, ov = in_tiny
    ticks = iter(range(10 ** 6))
    real_summary = golf.profiling.summarize_window

    def slow_summary(*args, **kwargs):
        for _ in range(5):
            next(ticks)
        return real_summary(*args, **kwargs)

    monkeypatch.setattr(golf.profiling, "summarize_window", slow_summary)
    m, _ = _train(root, ov + ["train.wallclock_s=20", "train.max_steps=1000", "train.checkpoint_every=0",
                              "train.profile_steps=2", "train.profile_first_step=5"],
                  1, "clock_prof", clock=lambda: float(next(ticks)))
    prof = m["profile"]
    assert prof["overhead_s"] == 7  # 1 tick starting, 5 summarizing, 1 for the reading that ends the summary
    assert m["steps"] == 18 and m["train_s"] == 20  # 20 without a window; 7 when the loop counted those 7 s


def test_qat_switches_on_at_its_step_fraction(in_tiny):
    root, _, ov = in_tiny
    m, _ = _train(root, ov + ["train.qat_start_frac=0.5", "train.checkpoint_every=0"], 1, "qat")
    assert m["qat_started_step"] == 3  # wallclock 0: progress = step / max_steps = 3 / 6


def test_padded_in_proj_rows_stay_zero_through_training(in_tiny):
    """Muon (with weight decay), Adam, EMA and QAT leave the never-read padding rows of in_proj at zero,
    in the trained (EMA) weights and in the checkpoint; everything else trains."""
    root, _, ov = in_tiny
    m, rd = _train(root, ov + ["model.in_proj_multiple=64", "train.weight_decay=0.1", "train.qat_start_frac=0.5"],
                   1, "padded")
    assert m["qat_started_step"] == 3
    w = _weights(rd)
    ckpt = torch.load(rd / "ckpt" / CKPT_NAME, map_location="cpu", weights_only=False)
    for name in ("blocks.0.mixer.in_proj.weight", "blocks.2.mixer.in_proj.weight"):  # pattern MAM
        assert w[name].shape == (192, 32)  # 2*64 + 2*8 + 4 = 148 rows, padded to 192
        assert torch.count_nonzero(w[name][148:]) == 0 and torch.count_nonzero(w[name][:148]) > 0
        assert torch.count_nonzero(ckpt["model"][name][148:]) == 0
    assert all(torch.isfinite(t).all() for t in w.values())


@pytest.mark.parametrize("mode, expected", [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_compile_for_training_passes_the_mode_on_cuda_only(monkeypatch, mode, expected):
    seen = []
    monkeypatch.setattr(golf.train.torch, "compile", lambda net, mode=None: seen.append(mode) or ("compiled", net))
    tcfg = TrainConfig(compile=True, compile_mode=mode)
    assert golf.train.compile_for_training("net", tcfg, torch.device("cuda")) == ("compiled", "net")
    assert seen == [expected]
    assert golf.train.compile_for_training("net", tcfg, torch.device("cpu")) == "net"  # eager reference on CPU
    off = TrainConfig(compile=False, compile_mode=mode)
    assert golf.train.compile_for_training("net", off, torch.device("cuda")) == "net" and seen == [expected]


def test_schedule_functions():
    assert lr_scale(0, 0.0, 10, 0.3) == pytest.approx(0.1)
    assert lr_scale(50, 0.5, 10, 0.3) == 1.0
    assert lr_scale(90, 0.85, 10, 0.3) == pytest.approx(0.5)
    assert lr_scale(99, 1.0, 10, 0.3) == 0.0
    assert budget_progress(10, 999.0, 100, 0.0) == pytest.approx(0.1)  # steps only: time is ignored
    assert budget_progress(10, 30.0, 100, 60.0) == pytest.approx(0.5)  # time ahead of steps
    assert budget_progress(90, 6.0, 100, 60.0) == pytest.approx(0.9)  # steps ahead of time
    assert budget_progress(10, 90.0, 100, 60.0) == 1.0
    assert ema_decay_at(0, 0.997) == pytest.approx(0.1) and ema_decay_at(10 ** 6, 0.997) == 0.997


def test_muon_momentum_warmup_schedule_and_loop(in_tiny, monkeypatch):
    assert muon_momentum_at(0, 0.95, 0, 0.85) == 0.95  # no warmup: constant
    assert muon_momentum_at(0, 0.95, 500, 0.85) == pytest.approx(0.85)
    assert muon_momentum_at(250, 0.95, 500, 0.85) == pytest.approx(0.90)
    assert muon_momentum_at(10 ** 6, 0.95, 500, 0.85) == pytest.approx(0.95)
    seen: dict[int, list[float]] = {}
    step = golf.optim.Muon.step

    def spy(self, closure=None):
        seen.setdefault(id(self), []).append(self.param_groups[0]["momentum"])
        return step(self, closure)

    monkeypatch.setattr(golf.optim.Muon, "step", spy)
    root, _, ov = in_tiny
    m, _ = _train(root, ov + ["train.muon_momentum=0.9", "train.muon_momentum_warmup_steps=4",
                              "train.muon_momentum_warmup_start=0.5", "train.checkpoint_every=0"], 1, "mom")
    assert m["steps"] == 6 and seen  # one list per Muon optimizer (block matrices, Mamba projections)
    for momenta in seen.values():
        assert momenta == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 0.9])


def test_batch_layout_gives_exact_tokens_per_step():
    t = TrainConfig(seq_len=2048, batch_tokens=524288, micro_batch_seqs=64)
    assert batch_layout(t, 1) == (64, 4) and batch_layout(t, 8) == (32, 1)  # micro is only a cap
    assert batch_layout(TrainConfig(seq_len=256, batch_tokens=8192, micro_batch_seqs=24), 1) == (16, 2)
    with pytest.raises(ConfigError, match="train.batch_tokens"):
        batch_layout(TrainConfig(seq_len=2048, batch_tokens=524288, micro_batch_seqs=64), 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_bf16_training_on_gpu_switches_qat_and_resumes(in_tiny, mode):
    # reduce-overhead: the compiled step replayed as CUDA graphs (configs/hybrid_mlp_tuned_b65k_fit.yaml)
    root, _, ov = in_tiny
    gpu = [o for o in ov if not o.startswith("train.device")] + [
        "train.device=cuda", "train.compile=true", "train.dtype=bf16", "train.qat_start_frac=0.5",
        f"train.compile_mode={mode}"]
    part, _ = _train(root, gpu, 1, f"gpu_{mode}", stop_after_steps=2)
    assert part == {"interrupted_at_step": 2}
    m, _ = _train(root, gpu, 1, f"gpu_{mode}")
    assert m["steps"] == 6 and m["resumed_from_step"] == 2 and m["qat_started_step"] == 3
    assert 0 < m["val_bpb"] < 20 and m["peak_mem_mb"] > 0 and m["warmup_s"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qat_switch_reaches_a_model_replayed_as_cuda_graphs():
    """Training turns QAT on mid-run by filling buffers in place (GolfLM.set_qat); a model compiled with
    mode="reduce-overhead" replays recorded CUDA graphs, which see the switch only because the buffers keep their
    memory. The replayed logits must change with the switch and match eager ones with QAT on."""
    from golf.config import ModelConfig
    from golf.model import build_model

    cfg = ModelConfig(vocab_size=300, d_model=64, layer_pattern="AA", num_heads=2, num_kv_heads=1, mlp_mult=2.0,
                      bigram_buckets=64, bigram_dim=8)
    torch.manual_seed(0)
    model = build_model(cfg, "cuda").eval()
    with torch.no_grad():
        for p in model.parameters():  # output projections start at zero, where fake quantization changes nothing
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    compiled = torch.compile(model, mode="reduce-overhead")
    ids = torch.randint(0, 300, (2, 64), device="cuda")
    with torch.no_grad():
        for _ in range(3):  # warm-up, record, replay
            off = compiled(ids).clone()
        model.set_qat(True, bits=3)
        on = compiled(ids).clone()
        want = model(ids)
    assert not torch.equal(off, on)
    torch.testing.assert_close(on, want, atol=1e-4, rtol=1e-4)
