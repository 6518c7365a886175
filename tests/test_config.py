import dataclasses
from pathlib import Path

import pytest
import yaml

from golf.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["params.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml"))])
def test_shipped_params_load(path):
    p = load_params(REPO / path)
    assert p.model.vocab_size == p.data.vocab_size
    assert len(p.seeds) == 3


def _flat(params) -> dict:
    from dataclasses import asdict

    return {f"{sec}.{k}": v for sec, fields in asdict(params).items() if isinstance(fields, dict)
            for k, v in fields.items()}


@pytest.mark.parametrize("tuned, base, changed", [
    ("hybrid_12_b262k", "hybrid_12", {"train.batch_tokens": 262144, "model.in_proj_multiple": 64,
                                      "model.ssm_compile": "trace", "eval.stateful": False,
                                      "ttt.score_no_adapt": False}),
    ("baseline_attn_b262k", "baseline_attn", {"train.batch_tokens": 262144, "ttt.score_no_adapt": False}),
    ("hybrid_12_b131k", "hybrid_12_b262k", {"train.batch_tokens": 131072, "model.gated_norm": "golf",
                                            "model.ssm_backend": "fused", "model.ssm_compile": "opaque",
                                            "model.ssm_scan": "mamba_keep_golf_overlap",
                                            "model.block_norm": "golf_fold", "model.qk_rope": "golf",
                                            "model.ssm_conv": "golf", "model.attn_backend": "flash4",
                                            "train.compile_mode": "reduce-overhead",
                                            "train.inductor_options": ["triton.mix_order_reduction=false",
                                                                       "combo_kernels=true"]}),
    ("baseline_attn_b131k", "baseline_attn_b262k", {"train.batch_tokens": 131072}),
    ("baseline_attn_b131k_golf", "baseline_attn_b131k", {"model.attn_backend": "flash4", "model.block_norm": "golf_fold",
                                                         "model.qk_rope": "golf",
                                                         "train.compile_mode": "reduce-overhead",
                                                         "train.inductor_options": ["triton.mix_order_reduction=false",
                                                                                    "combo_kernels=true"]}),
    ("hybrid_mlp_tuned_b65k_fit", "hybrid_mlp_tuned_fit", {"train.batch_tokens": 65536, "train.checkpoint_every": 400,
                                                           "train.compile_mode": "reduce-overhead"}),
])
def test_budget_tuned_configs_change_only_what_they_say(tuned, base, changed):
    # bench/RESULTS.md compares each tuned config with its base: any other difference would go unreported
    a, b = _flat(load_params(REPO / "configs" / f"{tuned}.yaml")), _flat(load_params(REPO / "configs" / f"{base}.yaml"))
    assert {k: a[k] for k in a if a[k] != b[k]} == changed


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


def test_field_choices_read_the_schema():
    from golf.config import ModelConfig, field_choices

    assert field_choices(ModelConfig, "ssm_compile") == ("disable", "trace", "opaque")
    with pytest.raises(KeyError, match="declares no choices"):
        field_choices(ModelConfig, "d_model")


def test_params_yaml_lists_every_setting():
    """params.yaml says it holds every setting: each field of each section dataclass is spelled out there,
    so `dvc exp run -S section.key=value` finds the key and a reader sees every default."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml")
    missing = [f"{section.name}.{f.name}" for section in dataclasses.fields(params)
               if dataclasses.is_dataclass(getattr(params, section.name))
               for f in dataclasses.fields(getattr(params, section.name))
               if f.name not in (raw.get(section.name) or {})]
    assert missing == []



def test_a_one_bit_group_width_is_refused_when_params_load():
    with pytest.raises(ConfigError, match=r"'quant.bits_mlp' in .*1 bit leaves no levels"):
        load_params(REPO / "params.yaml", ["quant.bits_mlp=1"])
