import lzma
import pickle

import pytest
import torch

from golf.artifact import deserialize
from golf.config import CAP_BYTES, QuantConfig
from golf.errors import ArtifactError
from golf.gptq import gptq_quantize, quantize_state_dict
from golf.hessian import collect_hessians
from golf.package import build_artifact, inspect_artifact, serialize
from tests.conftest import MODEL_FILE, load_artifact


def _correlated(n=2048, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)
    return x, torch.randn(32, d, generator=g)


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_round_to_nearest_on_correlated_inputs(act_order):
    x, w = _correlated()
    r = gptq_quantize(w, x.T @ x, 4, 16, 0.01, act_order, [1.0, 0.9, 0.8])
    assert r.rel_err < 0.8 * r.rtn_rel_err
    deq = r.codes.float() * r.scale[:, None]
    assert r.codes.abs().max() <= 7 and torch.isfinite(deq).all()


def test_dead_input_column_is_handled():
    x, w = _correlated()
    x[:, 3] = 0
    r = gptq_quantize(w, x.T @ x, 6, 16, 0.01, True, [1.0])
    assert torch.isfinite(r.scale).all() and r.rel_err < r.rtn_rel_err


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 300, bias=False)
        self.emb = torch.nn.Embedding(10, 16)
        self.A_log = torch.nn.Parameter(torch.randn(300))

    def forward(self, ids):
        return self.fc(self.emb(ids))


def test_hessian_hooks_and_quantize_keeps_dynamics_float():
    torch.manual_seed(0)
    m = Tiny()
    hess, n = collect_hessians(m, [torch.randint(0, 10, (4, 8)) for _ in range(3)], torch.device("cpu"))
    assert n == 96 and set(hess) == {"fc"} and hess["fc"].shape == (16, 16)
    tensors, spec, report = quantize_state_dict(m.state_dict(), hess, QuantConfig(float_max_numel=100))
    assert spec["A_log"]["dtype"] == "fp32" and spec["fc.weight"]["method"] == "gptq"
    assert tensors["fc.weight.q"].dtype == torch.int8 and "fc" in report


def test_artifact_roundtrip_is_bit_exact_and_malformed_artifacts_fail(tmp_path):
    torch.manual_seed(0)
    m = Tiny()
    tensors, spec, _ = quantize_state_dict(m.state_dict(), {}, QuantConfig(float_max_numel=100))
    cfg = {"vocab_size": 300, "d_model": 32, "layer_pattern": "A", "num_heads": 2, "num_kv_heads": 1,
           "bigram_buckets": 0, "bigram_dim": 0}
    metrics = build_artifact(tmp_path / "art", tensors, spec, cfg, "lzma", CAP_BYTES, True)
    assert metrics["under_cap"] and metrics["total_bytes"] == metrics["model_bytes"] + metrics["code_bytes"]
    _, back, spec2 = load_artifact(tmp_path / "art")
    assert spec2 == spec and set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype for k in tensors)
    assert serialize(tensors, spec, cfg) == serialize(back, spec2, cfg)  # deterministic
    assert "\nmamba_dynamics " in inspect_artifact(tmp_path / "art")  # A_log
    blob = (tmp_path / "art" / MODEL_FILE).read_bytes()
    (tmp_path / "art" / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_artifact(tmp_path / "art")
    raw = serialize(tensors, spec, cfg)
    with pytest.raises(ArtifactError, match="bad magic"):
        deserialize(b"XXXXXXXX" + raw[8:])
    with pytest.raises(ArtifactError, match="lies outside the data"):
        deserialize(raw[:-5])
    with pytest.raises(ArtifactError, match="unknown dtype"):
        deserialize(raw.replace(b'"dtype":"int8"', b'"dtype":"obj8"', 1))


def test_over_the_cap_fails_and_writes_nothing(tmp_path):
    t = {"w": torch.randn(64, 64)}
    spec = {"w": {"kind": "float", "dtype": "fp32", "shape": [64, 64]}}
    with pytest.raises(ArtifactError, match="over the cap of 1,000 bytes"):
        build_artifact(tmp_path / "art", t, spec, {}, "lzma", 1000, False)
    assert not (tmp_path / "art").exists()


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_crafted_pickle_artifact_is_rejected_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / MODEL_FILE).write_bytes(lzma.compress(pickle.dumps({"w": Boom()})))
    with pytest.raises(ArtifactError, match="bad magic"):
        load_artifact(tmp_path / "art")
    assert not (tmp_path / "PWNED").exists()
