"""golf.runtime: training's global torch settings are scoped (a stage run after train in the same process, as
`pipeline --no-dvc` does, must see the settings of a fresh process) and recorded in provenance."""

from __future__ import annotations

import pytest
import torch

from golf import provenance
from golf.runtime import DistInfo, env_dist_info, init_distributed, matmul_settings, training_precision
from tests.conftest import train_tiny


@pytest.fixture
def restore_torch_settings():
    """Put torch's global settings back whatever a test does (other tests in this process rely on them)."""
    saved = matmul_settings()
    yield
    torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
    torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
    torch.use_deterministic_algorithms(saved["deterministic_algorithms"])


@pytest.mark.parametrize("precision", ["highest", "high"])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_training_precision_restores_every_setting(restore_torch_settings, precision, deterministic, kind):
    # only flags are set, so the CUDA branch runs on a CPU-only build too
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(deterministic)
    before = matmul_settings()
    with training_precision(torch.device(kind)):
        inside = matmul_settings()
    assert matmul_settings() == before
    if kind == "cuda":  # TF32 for fp32 matmuls and convolutions while training
        assert inside["cuda_matmul_allow_tf32"] and inside["cudnn_allow_tf32"]
        assert inside["float32_matmul_precision"] == "high"
        assert inside["deterministic_algorithms"] == deterministic
    else:  # the bit-exact CPU reference: deterministic algorithms, TF32 flags untouched
        assert inside["deterministic_algorithms"]
        assert {k: v for k, v in inside.items() if k != "deterministic_algorithms"} == \
               {k: v for k, v in before.items() if k != "deterministic_algorithms"}


def test_training_precision_restores_after_an_error(restore_torch_settings):
    torch.set_float32_matmul_precision("highest")
    before = matmul_settings()
    with pytest.raises(RuntimeError, match="boom"), training_precision(torch.device("cuda")):
        raise RuntimeError("boom")
    assert matmul_settings() == before


def test_train_leaves_torch_global_settings_as_it_found_them(in_tiny, restore_torch_settings):
    root, _, ov = in_tiny
    torch.set_float32_matmul_precision("high")  # not the defaults, so that a reset to defaults would show
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(False)
    before = matmul_settings()
    m, _ = train_tiny(root, ov, 1, "settings")
    assert matmul_settings() == before
    # what training ran with is reported (the stage moves it into the train provenance)
    assert m["matmul"]["deterministic_algorithms"] is True


def test_provenance_records_the_matmul_settings_in_force(restore_torch_settings):
    torch.set_float32_matmul_precision("highest")
    assert provenance.collect("x")["matmul"] == matmul_settings()
    assert provenance.collect("x")["matmul"]["cuda_matmul_allow_tf32"] is False
    assert provenance.collect("x", extra={"matmul": {"used": 1}})["matmul"] == {"used": 1}


def test_rank_and_world_come_from_torchrun_variables(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_dist_info() == DistInfo() and init_distributed("cpu") == DistInfo()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu") == DistInfo()  # one process joins no group
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_dist_info() == DistInfo(3, 4, 1) and not env_dist_info().is_main
