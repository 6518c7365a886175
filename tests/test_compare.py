"""golf compare: both configs' pipelines per seed (interleaved on one device, side by side on two GPUs), each
side in its own runs folder, the Welch report of A against B; seed parsing and the checks before anything runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from golf import compare as cmp
from golf.config import ConfigError, load_params, to_dict
from golf.errors import GolfError

FAST = ["train.max_steps=2", "train.val_tokens=512", "ttt.enabled=false", "eval.max_tokens=512", "eval.stride=32",
        "eval.stateful=false", "calib.num_sequences=4", "quant.clip_search=false", "package.compare_compressors=false"]


def _configs(root: Path, overrides: list[str]) -> tuple[Path, Path]:
    """A.yaml (the tiny hybrid) and B.yaml (the same without its attention layer), complete params files."""
    from conftest import REPO

    d = to_dict(load_params(REPO / "params.yaml", [*overrides, *FAST]))
    (root / "A.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    d["model"]["layer_pattern"] = "MM"
    (root / "B.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return root / "A.yaml", root / "B.yaml"


def test_compare_runs_both_sides_interleaved_and_writes_the_welch_report(in_tiny, tmp_path):
    root, _, overrides = in_tiny
    a, b = _configs(tmp_path, overrides)
    # the tiny env is shared by the session: other tests may have left runs there; compare must add nothing
    own_runs_before = sorted((root / "runs").rglob("*")) if (root / "runs").exists() else None
    said: list[str] = []
    out = tmp_path / "cmp"
    result = cmp.compare(a, b, "2", out, say=said.append, fresh_processes=False)

    seeds = load_params(a).seeds[:2]
    order = [s for s in said if s.startswith(("== A seed", "== B seed"))]
    assert order == [f"== {side} seed {seed}" for seed in seeds for side in ("A", "B")]  # A, B, A, B
    for side, pattern in (("A", "MAM"), ("B", "MM")):
        for seed in seeds:
            rd = out / "runs" / side / str(seed)
            cfg = json.loads((rd / "train" / "config.json").read_text())
            assert cfg["layer_pattern"] == pattern
            for stage in cmp.PER_SEED_STAGES:
                log = (rd / "logs" / f"{stage}.log").read_text()
                assert log.startswith("=== ") and f"golf {stage.replace('_', '-')} --seed {seed}" in log
                assert " done in " in log
            assert "final validation after step 2" in (rd / "logs" / "train.log").read_text()
            for stage, bar in (("train", "budget"), ("hessian", "calibration sequences"),
                               ("quantize", "weights (elements)"), ("package", "steps"),
                               ("eval_sliding", "plain windows")):  # each loop's progress reached its end
                assert f" seed {seed} {bar}: 100%" in (rd / "logs" / f"{stage}.log").read_text(), stage
    report = json.loads((out / "report" / "report.json").read_text())
    test = report["tests"]["vs_run"]
    assert report["seeds"] == seeds and test["reference"] == "B" and test["reference_seeds"] == seeds
    a_bpb = [report["rows"][str(s)]["sliding_bpb"] for s in seeds]
    b_bpb = [json.loads((out / "runs" / "B" / str(s) / "metrics" / "eval_sliding.json").read_text())["val_bpb"]
             for s in seeds]
    assert test["reference_values"] == pytest.approx(b_bpb)
    assert test["plain"]["diff"] == pytest.approx(sum(a_bpb) / 2 - sum(b_bpb) / 2)
    assert result["vs_run_p"] == pytest.approx(test["plain"]["p"])
    assert (out / "report" / "report.md").is_file() and (out / "report" / "plots" / "train_curves.png").is_file()
    meta = json.loads((out / "compare.json").read_text())
    assert meta["seeds"] == seeds and meta["placement"].startswith("interleaved")
    own_runs_after = sorted((root / "runs").rglob("*")) if (root / "runs").exists() else None
    assert own_runs_after == own_runs_before  # nothing went to the configs' own runs folder


class _FakeProc:
    def __init__(self, cmd, env):
        self.cmd, self.env = cmd, env

    def wait(self) -> int:
        return 0


def _fake_workers(monkeypatch, in_tiny, tmp_path):
    """compare with the per-run processes and the report recorded instead of run (placement only)."""
    procs: list[_FakeProc] = []
    monkeypatch.setattr(cmp, "_start", lambda cmd, env: procs.append(_FakeProc(cmd, env)) or procs[-1])
    monkeypatch.setattr(cmp, "welch_report", lambda *a, **k: {"vs_run_p": 0.5})
    return procs, _configs(tmp_path, in_tiny[2])


def test_two_gpus_run_each_seed_side_by_side_one_process_per_gpu(monkeypatch, in_tiny, tmp_path):
    procs, (a, b) = _fake_workers(monkeypatch, in_tiny, tmp_path)
    monkeypatch.setattr(cmp, "visible_gpus", lambda: ["3", "5"])
    cmp.compare(a, b, "1,7", tmp_path / "cmp", ["train.max_steps=3"], say=lambda s: None)
    assert [(p.cmd[p.cmd.index("--seed") + 1], p.env["CUDA_VISIBLE_DEVICES"]) for p in procs] == [
        ("1", "3"), ("1", "5"), ("7", "3"), ("7", "5")]
    first = procs[0].cmd
    assert first[2] == "seed-stages" and first[first.index("--params") + 1] == str(a)
    sets = [first[i + 1] for i, x in enumerate(first) if x == "--set"]
    assert sets[0] == "train.max_steps=3" and f"runs_dir={(tmp_path / 'cmp' / 'runs' / 'A').resolve()}" in sets
    assert "seeds=[1, 7]" in sets
    assert str(b) in procs[1].cmd


def test_side_by_side_end_to_end_with_real_workers(monkeypatch, in_tiny, tmp_path):
    """The two-GPU path through to the report, on CPU: real `seed-stages` processes (CUDA_VISIBLE_DEVICES 0 for
    A, 1 for B, which a CPU run ignores), each seed's B started while its A still runs, then the Welch report
    from both sides' own runs folders."""
    overrides = in_tiny[2]
    a, b = _configs(tmp_path, overrides)
    monkeypatch.setattr(cmp, "visible_gpus", lambda: ["0", "1"])
    real_start, started = cmp._start, []

    def start(cmd, env):
        # (side, seed, device, whether the previous process of this seed was still running when this one began)
        running = bool(started) and started[-1][3].poll() is None
        proc = real_start(cmd, env)
        started.append((Path(cmd[cmd.index("--params") + 1]).stem, cmd[cmd.index("--seed") + 1],
                        env["CUDA_VISIBLE_DEVICES"], proc, running))
        return proc

    monkeypatch.setattr(cmp, "_start", start)
    out = tmp_path / "cmp"
    result = cmp.compare(a, b, "2", out, say=lambda s: None)
    seeds = [str(s) for s in load_params(a).seeds[:2]]
    assert [(side, seed, dev) for side, seed, dev, _, _ in started] == [
        ("A", seeds[0], "0"), ("B", seeds[0], "1"), ("A", seeds[1], "0"), ("B", seeds[1], "1")]
    assert [running for *_, running in started] == [False, True, False, True]  # B of a seed beside its A
    meta = json.loads((out / "compare.json").read_text())
    assert meta["placement"] == "side by side: A on CUDA device 0, B on 1"
    report = json.loads((out / "report" / "report.json").read_text())
    test = report["tests"]["vs_run"]
    b_bpb = [json.loads((out / "runs" / "B" / s / "metrics" / "eval_sliding.json").read_text())["val_bpb"]
             for s in seeds]
    assert test["reference"] == "B" and test["reference_values"] == pytest.approx(b_bpb)
    assert result["vs_run_p"] == pytest.approx(test["plain"]["p"])


def test_a_comparison_resumes_keeping_the_seeds_already_done(monkeypatch, in_tiny, tmp_path):
    procs, (a, b) = _fake_workers(monkeypatch, in_tiny, tmp_path)
    monkeypatch.setattr(cmp, "visible_gpus", lambda: ["3", "5"])
    out = tmp_path / "cmp"
    cmp.compare(a, b, "1,7", out, ["train.max_steps=3"], say=lambda s: None)
    assert len(procs) == 4
    first = json.loads((out / "compare.json").read_text())
    # an earlier run finished A seed 1 and both sides of seed 7 (their last stage wrote its metrics)
    for side, seed in (("A", 1), ("A", 7), ("B", 7)):
        (out / "runs" / side / str(seed) / "metrics").mkdir(parents=True)
        (out / "runs" / side / str(seed) / "metrics" / "eval_ttt.json").write_text("{}")
    procs.clear()
    said: list[str] = []
    cmp.compare(a, b, "1,7", out, ["train.max_steps=3"], say=said.append)
    assert [(p.cmd[p.cmd.index("--seed") + 1], p.env["CUDA_VISIBLE_DEVICES"], Path(p.cmd[p.cmd.index("--params") + 1]).stem)
            for p in procs] == [("1", "5", "B")]  # only what was missing, on B's own GPU
    assert "== A seed 1: done in an earlier run, kept" in said and any("resuming" in s for s in said)
    again = json.loads((out / "compare.json").read_text())
    assert again["started_utc"] == first["started_utc"] and "resumed_utc" in again
    with pytest.raises(GolfError, match="other settings"):  # another --set is another comparison
        cmp.compare(a, b, "1,7", out, ["train.max_steps=4"], say=lambda s: None)
    assert json.loads((out / "compare.json").read_text()) == again  # the refused run changed nothing


def test_one_seed_per_call_then_more_seeds_and_the_report(monkeypatch, in_tiny, tmp_path):
    """A 240-s pair per device call: --seeds 1 runs one seed and says how to go on; the rerun with 2 seeds
    runs only the second seed, then reports."""
    procs, (a, b) = _fake_workers(monkeypatch, in_tiny, tmp_path)
    monkeypatch.setattr(cmp, "visible_gpus", lambda: ["0", "1"])
    out, said = tmp_path / "cmp", []
    first = cmp.compare(a, b, "1", out, say=said.append)
    assert first["report"] is None and first["seeds"] == 1 and len(procs) == 2
    assert any(s.startswith("== no report: the Welch t-test needs at least 2 seeds") and "--seeds 2" in s
               for s in said)
    seed = procs[0].cmd[procs[0].cmd.index("--seed") + 1]
    for side in ("A", "B"):  # what the two workers of the first call would have left
        (out / "runs" / side / seed / "metrics").mkdir(parents=True)
        (out / "runs" / side / seed / "metrics" / "eval_ttt.json").write_text("{}")
    procs.clear()
    second = cmp.compare(a, b, "2", out, say=lambda s: None)
    assert len(procs) == 2 and all(p.cmd[p.cmd.index("--seed") + 1] != seed for p in procs)
    assert second["report"].endswith("report.md") and second["vs_run_p"] == 0.5


def test_one_gpu_interleaves_fresh_processes(monkeypatch, in_tiny, tmp_path):
    procs, (a, b) = _fake_workers(monkeypatch, in_tiny, tmp_path)
    monkeypatch.setattr(cmp, "visible_gpus", lambda: ["0"])
    cmp.compare(a, b, "2", tmp_path / "cmp", say=lambda s: None)
    assert [Path(p.cmd[p.cmd.index("--params") + 1]).stem for p in procs] == ["A", "B", "A", "B"]
    assert all(p.env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES") for p in procs)
    with pytest.raises(GolfError, match="two visible CUDA devices"):
        cmp.compare(a, b, "2", tmp_path / "cmp", parallel=True, say=lambda s: None)


def test_seeds_a_count_or_a_list():
    p = load_params_default()
    assert cmp.parse_seeds("2", p) == p.seeds[:2]
    assert cmp.parse_seeds("5, 9,11", p) == [5, 9, 11]
    with pytest.raises(ConfigError, match=f"lists only {len(p.seeds)} seeds"):
        cmp.parse_seeds(str(len(p.seeds) + 1), p)
    assert cmp.parse_seeds("1", p) == p.seeds[:1] and cmp.parse_seeds("4,", p) == [4]  # one seed: no report yet
    for bad in ("0", "7", "x", "1,1", "1,a", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            cmp.parse_seeds(bad, p)


def load_params_default():
    from conftest import REPO

    return load_params(REPO / "params.yaml")


def test_checks_before_anything_runs(in_tiny, tmp_path):
    a, b = _configs(tmp_path, in_tiny[2])
    mine = tmp_path / "my_folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(GolfError, match="not a comparison folder"):
        cmp.compare(a, b, "2", mine, say=lambda s: None)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    d = yaml.safe_load(b.read_text())
    d["data"]["val_fraction"] = 0.2
    b.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="both write data/tiny/ but with different settings"):
        cmp.compare(a, b, "2", tmp_path / "new", say=lambda s: None)
    assert not (tmp_path / "new").exists()
