"""calib.reserve_s: the train stage leaves it unused, hessian + GPTQ seconds must fit in it."""

import dataclasses

import pytest

from golf.config import ConfigError, Params, load_params, train_budget_s
from golf.errors import GolfError
from golf.hessian import calibration_budget, load_hessians
from tests.conftest import REPO


def _p(wallclock, reserve) -> Params:
    p = Params()
    return dataclasses.replace(p, train=dataclasses.replace(p.train, wallclock_s=wallclock),
                               calib=dataclasses.replace(p.calib, reserve_s=reserve))


def test_training_budget_leaves_the_reserve():
    assert train_budget_s(_p(600.0, 20.0)) == 580.0
    assert train_budget_s(_p(240.0, 0.0)) == 240.0
    assert train_budget_s(_p(0.0, 20.0)) == 0.0  # steps only: nothing to reserve from
    with pytest.raises(ConfigError, match=r"calib.reserve_s.*below train.wallclock_s \(20 s\), got 30"):
        train_budget_s(_p(20.0, 30.0))
    assert Params().calib.reserve_s == 20.0  # the full configs reserve 20 s; the CPU demo none
    assert load_params(REPO / "params.yaml").calib.reserve_s == 0.0


def test_train_stage_passes_the_reduced_budget(monkeypatch, tmp_path):
    import stages.train

    seen = {}

    def fake_train(params, seed, *a, **k):
        seen["wallclock_s"] = params.train.wallclock_s
        return {"interrupted_at_step": 0}

    monkeypatch.setattr(stages.train, "train", fake_train)
    p = dataclasses.replace(_p(240.0, 20.0), runs_dir=str(tmp_path))
    stages.train.run(p, 1)
    assert seen["wallclock_s"] == 220.0


def test_calibration_budget_record_and_error():
    rec = calibration_budget(3.0, 2.5, 20.0, 240.0)
    assert rec == {"hessian_s": 3.0, "gptq_s": 2.5, "reserve_s": 20.0, "checked": True, "calib_s": 5.5,
                   "unused_s": 14.5}
    unchecked = calibration_budget(30.0, 2.5, 0.0, 240.0)  # no reserve: recorded, not checked
    assert not unchecked["checked"] and "unused_s" not in unchecked
    with pytest.raises(GolfError, match=r"calibration took 22.5 s \(hessian 20.0 s \+ GPTQ 2.5 s\), over "
                                        r"calib.reserve_s = 20 s"):
        calibration_budget(20.0, 2.5, 20.0, 240.0)
    with pytest.raises(GolfError, match="run the hessian stage again"):
        calibration_budget(None, 2.5, 20.0, 240.0)


def test_quantize_stage_fails_over_the_reserve_and_leaves_no_model(in_tiny, tmp_path):
    import json

    from golf.model import save_model
    from stages import hessian, quantize
    from tests.test_package import _trained_like

    _, params, _ = in_tiny
    params = dataclasses.replace(params, runs_dir=str(tmp_path / "runs"))
    seed = 5
    rd = params.run_dir(seed)
    save_model(_trained_like(params.model), params.model, rd / "train")
    info = hessian.run(params, seed)
    assert float(load_hessians(rd / "hessian" / "hessians.safetensors")[1]["secs"]) == info["secs"]
    ok = quantize.run(params, seed)  # the demo params: no reserve, recorded only
    assert ok["calib_budget"]["hessian_s"] == info["secs"] and not ok["calib_budget"]["checked"]
    assert (rd / "quant" / "quantized.safetensors").is_file()
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, wallclock_s=45.0))
    tight = dataclasses.replace(params, calib=dataclasses.replace(params.calib, reserve_s=1e-4))
    with pytest.raises(GolfError, match="over calib.reserve_s"):
        quantize.run(tight, seed)
    assert not (rd / "quant" / "quantized.safetensors").exists()
    roomy = dataclasses.replace(params, calib=dataclasses.replace(params.calib, reserve_s=3600.0))
    m = quantize.run(roomy, seed)
    assert m["calib_budget"]["checked"] and m["calib_budget"]["calib_s"] <= 3600.0
    assert json.loads((rd / "metrics" / "quantize.json").read_text())["calib_budget"] == m["calib_budget"]
