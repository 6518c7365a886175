"""train.inductor_options: the form checked when params load, each entry resolved against torch._inductor.config
(existing option, value of its type), set only when training compiles and put back when train() returns.

No GPU: compiling is simulated by patching golf.train.compiles to True and torch.compile to a recorder that
reads the inductor config at the moment training calls it. Every test runs inside a patch of the options it may
touch, so nothing here leaks into the process's inductor config."""

import json

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn

import golf.train
from golf.config import ConfigError, TrainConfig, load_params
from golf.inductor_options import apply_inductor_options, kept_inductor_options, resolve_inductor_options
from tests.conftest import REPO, tiny_run_params

MIX = "triton.mix_order_reduction"
TOUCHED = (MIX, "coordinate_descent_tuning", "triton.mix_order_reduction_split_size", "cpu_gpu_bw",
           "worker_start_method")


@pytest.fixture(autouse=True)
def inductor_config_kept():
    """Each test starts from mix-order reduction on (whatever the environment says) and leaves the options it
    may touch as they were: config.patch puts its keys' values on entry back on exit."""
    with inductor_config.patch({key: getattr(inductor_config, key) for key in TOUCHED}):
        setattr(inductor_config, MIX, True)
        yield


def _load(entries: str):
    return load_params(REPO / "params.yaml", [f"train.inductor_options={entries}"])


# ---- the form, when params load ------------------------------------------------------------------------


def test_default_is_an_empty_list_of_its_own():
    a, b = TrainConfig(), TrainConfig()
    assert a.inductor_options == [] and a.inductor_options is not b.inductor_options
    assert load_params(REPO / "params.yaml").train.inductor_options == []


def test_good_entries_load_as_given():
    p = _load("[triton.mix_order_reduction=false, coordinate_descent_tuning=true]")
    assert p.train.inductor_options == ["triton.mix_order_reduction=false", "coordinate_descent_tuning=true"]


@pytest.mark.parametrize("entries, shown, problem", [
    ("[1]", "entry 1", "expected 'dotted.key=value'"),  # not a string
    ("[[triton.mix_order_reduction=false]]", "entry ['triton.mix_order_reduction=false']", "expected 'dotted"),
    ("[triton.mix_order_reduction]", "entry 'triton.mix_order_reduction'", "expected 'dotted.key=value'"),  # no '='
    ("['=false']", "entry '=false'", "empty key"),
    ("[' =false']", "entry ' =false'", "empty key"),
    ("[triton..mix_order_reduction=false]", "entry 'triton..mix_order_reduction=false'", "not a dotted name"),
    ("[.triton=false]", "entry '.triton=false'", "not a dotted name"),
    ("['mix order=false']", "entry 'mix order=false'", "not a dotted name"),
])
def test_a_bad_entry_fails_at_load_naming_the_setting_entry_and_form(entries, shown, problem):
    with pytest.raises(ConfigError) as e:
        _load(entries)
    msg = str(e.value)
    assert msg.startswith("'train.inductor_options' in ") and "params.yaml" in msg and "\n" not in msg
    assert shown in msg and problem in msg and "'dotted.key=value'" in msg


def test_a_value_that_is_not_yaml_and_a_key_set_twice_fail_at_load():
    with pytest.raises(ConfigError, match=r"'train.inductor_options' in .*entry 'a=\[': expected a YAML value"):
        _load("['a=[']")
    with pytest.raises(ConfigError, match=r"'triton.mix_order_reduction' is set twice"):
        _load("[triton.mix_order_reduction=false, triton.mix_order_reduction=true]")


def test_not_a_list_fails_at_load():
    with pytest.raises(ConfigError, match=r"'train.inductor_options' in .*expected a list"):
        _load("triton.mix_order_reduction=false")


# ---- resolution against torch._inductor.config ---------------------------------------------------------


def test_resolution_types_each_value_as_its_option_takes_it():
    got = resolve_inductor_options([
        "triton.mix_order_reduction=false", "coordinate_descent_tuning=true",
        "triton.mix_order_reduction_split_size=64", "cpu_gpu_bw=100", "worker_start_method=fork",
        "triton.descriptive_names=torch", "triton.multi_kernel=2"])
    assert got == {MIX: False, "coordinate_descent_tuning": True, "triton.mix_order_reduction_split_size": 64,
                   "cpu_gpu_bw": 100.0, "worker_start_method": "fork", "triton.descriptive_names": "torch",
                   "triton.multi_kernel": 2}
    assert type(got["cpu_gpu_bw"]) is float  # an integer given for a float option is stored as a float
    assert resolve_inductor_options(["triton.mix_order_reduction_split_size=null"]) == {
        "triton.mix_order_reduction_split_size": None}  # int | None takes null
    assert getattr(inductor_config, MIX) is True  # resolving sets nothing


def test_apply_sets_and_kept_puts_back_even_on_error():
    entries = ["triton.mix_order_reduction=false", "triton.mix_order_reduction_split_size=32"]
    split_before = inductor_config.triton.mix_order_reduction_split_size
    with pytest.raises(RuntimeError, match="boom"), kept_inductor_options(entries):
        apply_inductor_options(resolve_inductor_options(entries))
        assert inductor_config.triton.mix_order_reduction is False
        assert inductor_config.triton.mix_order_reduction_split_size == 32
        raise RuntimeError("boom")
    assert inductor_config.triton.mix_order_reduction is True
    assert inductor_config.triton.mix_order_reduction_split_size == split_before


@pytest.mark.parametrize("entry, close", [
    ("triton.mix_order_reductoin=false", "close: triton.mix_order_reduction"),
    ("mix_order_reduction=false", "close: triton.mix_order_reduction"),
    ("triton=false", ""),  # a subconfig, not an option
])
def test_an_unknown_option_is_refused_by_name(entry, close):
    with pytest.raises(ConfigError) as e:
        resolve_inductor_options([entry])
    msg = str(e.value)
    key = entry.split("=")[0]
    assert msg.startswith("'train.inductor_options'") and f"entry {entry!r}" in msg and "\n" not in msg
    assert f"has no option {key!r}" in msg and "expected an existing dotted option name" in msg
    assert close in msg


@pytest.mark.parametrize("entry, expected", [
    ("triton.mix_order_reduction=1", "takes true or false, got 1 (int)"),
    ("triton.mix_order_reduction=yes", "takes true or false, got 'yes' (str)"),  # YAML 1.1's yes is no bool here
    ("triton.mix_order_reduction=on", "takes true or false, got 'on' (str)"),
    ("triton.mix_order_reduction='false'", "takes true or false, got 'false' (str)"),
    ("triton.mix_order_reduction_split_size=true", "takes an integer or null, got True (bool)"),
    ("triton.mix_order_reduction_split_size=2.5", "takes an integer or null, got 2.5 (float)"),
    ("cpu_gpu_bw=true", "takes a number, got True (bool)"),
    ("worker_start_method=7", "takes a string, got 7 (int)"),
    ("triton.descriptive_names=nope", "takes one of 'torch', 'original_aten', 'inductor_node', got 'nope'"),
    ("triton.multi_kernel=true", "takes one of 0, 1, 2, 3, got True (bool)"),
    ("triton.cudagraph_capture_sizes=4", "is declared as"),  # a tuple option: not settable from here
])
def test_a_value_of_the_wrong_type_is_refused(entry, expected):
    with pytest.raises(ConfigError) as e:
        resolve_inductor_options([entry])
    msg = str(e.value)
    assert msg.startswith("'train.inductor_options'") and f"entry {entry!r}" in msg and expected in msg
    assert "\n" not in msg


# ---- golf.train.compile_for_training and train() -------------------------------------------------------


@pytest.fixture
def compile_recorder(monkeypatch):
    """torch.compile replaced by a recorder of the inductor option and mode it is called with; returns net."""
    calls = []

    def fake_compile(net, mode=None, **kw):
        calls.append({"mix_order_reduction": getattr(inductor_config, MIX), "mode": mode, "kw": kw})
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def test_compiling_sets_the_options_before_torch_compile(monkeypatch, compile_recorder):
    monkeypatch.setattr(golf.train, "compiles", lambda tcfg, device: True)
    tcfg = TrainConfig(inductor_options=["triton.mix_order_reduction=false"], compile_mode="reduce-overhead")
    net = nn.Linear(4, 4)
    assert golf.train.compile_for_training(net, tcfg, torch.device("cpu")) is net
    assert compile_recorder == [{"mix_order_reduction": False, "mode": "reduce-overhead", "kw": {}}]
    assert getattr(inductor_config, MIX) is False  # left set for the lazy compiles of the run


def test_not_compiling_sets_nothing_but_still_checks(compile_recorder):
    tcfg = TrainConfig(compile=True, inductor_options=["triton.mix_order_reduction=false"])
    net = nn.Linear(4, 4)
    assert golf.train.compile_for_training(net, tcfg, torch.device("cpu")) is net  # CPU: eager
    assert compile_recorder == [] and getattr(inductor_config, MIX) is True
    bad = TrainConfig(compile=True, inductor_options=["triton.mix_order_reductoin=false"])
    with pytest.raises(ConfigError, match="has no option 'triton.mix_order_reductoin'"):
        golf.train.compile_for_training(net, bad, torch.device("cpu"))


def test_train_applies_while_it_runs_puts_back_and_records_in_provenance(in_tiny, monkeypatch, compile_recorder):
    from stages import train as train_stage

    root, _, ov = in_tiny
    monkeypatch.setattr(golf.train, "compiles", lambda tcfg, device: True)
    p = tiny_run_params(root, ov + ["train.max_steps=2", "train.inductor_options=[triton.mix_order_reduction=false]"],
                        "inductor_options")
    train_stage.run(p, 1)
    assert [c["mix_order_reduction"] for c in compile_recorder] == [False]  # set when training compiled
    assert getattr(inductor_config, MIX) is True  # put back when train() returned
    prov = json.loads((p.run_dir(1) / "train" / "provenance.json").read_text())
    assert prov["config"]["train"]["inductor_options"] == ["triton.mix_order_reduction=false"]
