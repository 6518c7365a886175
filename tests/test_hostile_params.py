"""Hostile or careless params: every case is one ConfigError line naming the key and the file, never a
traceback, and never a folder name that leaves data/ (issue 25 items 1 and 4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


@pytest.mark.parametrize("override, fragment", [
    ("train.lr_matrix=.nan", "'train.lr_matrix' in"),
    ("train.lr_matrix=.inf", "expected a finite number"),
    ("ttt.lr=-.inf", "'ttt.lr' in"),
    ("train.max_steps=" + "9" * 30, "expected a 64-bit integer"),
    ("train.lr_matrix=" + "9" * 30, "within 64 bits"),
    ("train.max_steps=" + "9" * 5000, "not valid YAML"),  # past Python's 4,300-digit int conversion limit
    ("data.name=" + "9" * 5000, "not valid YAML"),
    ("seeds=[1, " + "9" * 25 + "]", "expected a seed in 0..2**63-1"),
    ("seeds=[-1]", "expected a seed"),
    ("data.name=/abs/path", "'data.name'"),
    ("data.name=../../x", "'data.name'"),
    ("data.name=a/b", "plain folder name"),
    ("data.name=..", "plain folder name"),
    ("data.name=''", "plain folder name"),
    ("data.name=.hidden", "plain folder name"),
    ("runs_dir=../elsewhere", "'runs_dir'"),
    ("runs_dir=''", "'runs_dir'"),
    ("train.lr_matrix=[" + "9" * 5000 + "]", "not valid YAML"),
])
def test_bad_override_is_one_config_error(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_params(PARAMS, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_exponent_floats_are_numbers():
    # PyYAML's YAML 1.1 resolver reads 3e-4 (no dot) as the string '3e-4'
    p = load_params(PARAMS, ["train.lr_matrix=3e-4", "ttt.lr=1E-3", "train.lr_embed=+2.5e2"])
    assert (p.train.lr_matrix, p.ttt.lr, p.train.lr_embed) == (3e-4, 1e-3, 250.0)


def test_exponent_float_in_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(re.sub(r"lr_matrix: .*", "lr_matrix: 3e-4", PARAMS.read_text(), count=1))
    assert load_params(f).train.lr_matrix == 3e-4


def test_duplicate_key_names_the_key_and_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(PARAMS.read_text() + "\ntrain:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"p\.yaml.*duplicate key 'train' \(first on line \d+\)"):
        load_params(f)
    f.write_text("train:\n  max_steps: 3\n  max_steps: 4\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'max_steps' \(first on line 2\).*line 3"):
        load_params(f)


def test_non_utf8_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(PARAMS.read_bytes() + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"p\.yaml' is not UTF-8 text"):
        load_params(f)


def test_5000_digit_integer_in_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(re.sub(r"max_steps: .*", "max_steps: " + "9" * 5000, PARAMS.read_text(), count=1))
    with pytest.raises(ConfigError, match=r"p\.yaml' is not valid YAML"):
        load_params(f)


def test_seed_beyond_int64_is_one_line(tmp_path):
    import cli

    r = CliRunner().invoke(cli.app, ["train", "--params", str(PARAMS), "--set", f"runs_dir={tmp_path}",
                                     "--seed", str(2 ** 64)])
    assert r.exit_code == 2, r.output
    assert "expected a seed in 0..2**63-1" in r.output and "Traceback" not in r.output
    assert not any(tmp_path.iterdir())  # nothing was started
