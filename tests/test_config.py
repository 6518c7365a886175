from pathlib import Path

import pytest

from golf.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["params.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml"))])
def test_shipped_params_load(path):
    p = load_params(REPO / path)
    assert p.model.vocab_size == p.data.vocab_size
    assert len(p.seeds) == 3


@pytest.mark.parametrize("override, fragment", [
    ("train.lr_matrix=abc", "'train.lr_matrix'"),
    ("train.max_steps=1.5", "expected an integer"),
    ("quant.bits=12", "<= 8"),
    ("train.lrr=1", "unknown key(s) train.lrr"),
    ("model.layer_pattern=MXA", "'model.layer_pattern'"),
    ("model.vocab_size=2048", "must equal data.vocab_size"),
    ("eval.stride=9999", "'eval.stride'"),
    ("package.compressor=gzip", "expected one of"),
    ("seeds=[1, 1]", "distinct"),
    ("nokeyvalue", "section.key=value"),
])
def test_bad_values_name_the_key_and_file(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_params(REPO / "params.yaml", [override])
    assert fragment in str(e.value)
    if "=" in override:
        assert "params.yaml" in str(e.value)


def test_type_error_in_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("d_model: 128", "d_model: wide"))
    with pytest.raises(ConfigError, match=r"'model.d_model' in .*p.yaml: expected an integer"):
        load_params(bad)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_params("nope.yaml")
