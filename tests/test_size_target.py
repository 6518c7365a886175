"""package.target_bytes: the cheapest ±1 codes by Hessian-weighted cost are zeroed, the fewest that fit."""

import dataclasses
import json

import pytest
import torch

from golf.config import QuantConfig
from golf.errors import ArtifactError
from golf.gptq import quantize_state_dict
from golf.package import compress, serialize
from golf.size_target import find_candidates, fit_to_target, zero_cheapest


def _quantized(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {"blocks.0.mixer.in_proj.weight": torch.randn(64, 32, generator=g),
             "blocks.1.mlp.fc.weight": torch.randn(48, 32, generator=g), "tok_emb.weight": torch.randn(50, 32, generator=g)}
    tensors, spec, _ = quantize_state_dict(state, {}, QuantConfig(float_max_numel=100, bits=4, clip_search=False))
    cw = {"blocks.0.mixer.in_proj.weight": torch.rand(32, generator=g) + 0.1,
          "blocks.1.mlp.fc.weight": torch.rand(32, generator=g) + 0.1}  # no weights for the embedding
    return tensors, spec, cw


def test_candidates_are_the_pm1_codes_of_weighted_layers_cheapest_first():
    tensors, spec, cw = _quantized()
    cand = find_candidates(tensors, spec, cw)
    want = []
    for name in cw:
        q, s = tensors[name + ".q"], tensors[name + ".scale"].double()
        r, c = torch.nonzero(q.abs() == 1, as_tuple=True)
        want += (s[r] ** 2 * cw[name].double()[c]).tolist()
    assert len(cand) == len(want) > 100
    torch.testing.assert_close(cand.costs, torch.tensor(sorted(want), dtype=torch.float64))
    assert "tok_emb.weight.q" not in cand.per_tensor  # no Hessian, no cost: never zeroed
    n = len(cand) // 3
    out = zero_cheapest(tensors, cand, n)
    changed = 0
    for name in cw:
        before, after = tensors[name + ".q"], out[name + ".q"]
        diff = before != after
        assert (after[diff] == 0).all() and (before[diff].abs() == 1).all()
        s = tensors[name + ".scale"].double()
        r, c = torch.nonzero(diff, as_tuple=True)
        assert (s[r] ** 2 * cw[name].double()[c]).max() <= cand.costs[n - 1] + 1e-12  # only the cheapest
        changed += int(diff.sum())
    assert changed == n and out["tok_emb.weight.q"] is tensors["tok_emb.weight.q"]


def test_fit_finds_the_fewest_codes_and_fails_clearly_when_impossible():
    tensors, spec, cw = _quantized()
    cand = find_candidates(tensors, spec, cw)
    calls = []

    def measure(t):  # a size that falls by 2 bytes per zeroed code, like a compressor would (roughly)
        calls.append(1)
        return 10_000 - 2 * sum(int((t[k] == 0).sum() - (tensors[k] == 0).sum()) for k in cand.per_tensor)

    out, info = fit_to_target(tensors, cand, 10_000 - 2 * 37, measure, 10_000, rel_tol=0.0)
    assert info["zeroed"] == 37 and info["size_after"] == 10_000 - 74 == measure(out)
    assert info["est_cost"] == pytest.approx(float(cand.costs[:37].sum())) and 0 < info["est_cost_rel"] < 1
    assert len(calls) <= 12  # interpolation, not a scan
    same, info = fit_to_target(tensors, cand, 10_000, measure, 10_000)
    assert same is tensors and info["zeroed"] == 0
    with pytest.raises(ArtifactError, match="target_bytes 1,000: zeroing all"):
        fit_to_target(tensors, cand, 1000, measure, 10_000)


def test_real_compressor_fit_is_under_target_and_near_minimal():
    tensors, spec, cw = _quantized(1)
    cand = find_candidates(tensors, spec, cw)

    def measure(t):
        return len(compress(serialize(t, spec, {}), "lzma"))

    base, floor = measure(tensors), measure(zero_cheapest(tensors, cand, len(cand)))
    target = (base + floor) // 2
    out, info = fit_to_target(tensors, cand, target, measure, base, rel_tol=0.01)
    assert measure(out) == info["size_after"] <= target < base
    assert 0 < info["zeroed"] < len(cand)
    less = int(info["zeroed"] - 0.1 * len(cand))  # clearly fewer zeroed codes do not fit
    assert less <= 0 or measure(zero_cheapest(tensors, cand, less)) > target


def test_package_stage_meets_its_target(in_tiny, tmp_path):
    from golf.model import save_model
    from stages import hessian, package, quantize
    from tests.test_package import _trained_like

    _, params, _ = in_tiny
    params = dataclasses.replace(params, runs_dir=str(tmp_path / "runs"))
    seed = 3
    save_model(_trained_like(params.model), params.model, params.run_dir(seed) / "train")
    hessian.run(params, seed)
    quantize.run(params, seed)
    plain = package.run(params, seed)
    target = plain["total_bytes"] - 20  # the tiny model has ~1,000 ±1 codes, worth ~130 bytes in all
    p = package.run(dataclasses.replace(params, package=dataclasses.replace(params.package, target_bytes=target)), seed)
    st = p["size_target"]
    assert p["total_bytes"] <= target and st["zeroed"] > 0 and st["size_before"] == plain["total_bytes"]
    assert json.loads((params.run_dir(seed) / "metrics" / "package.json").read_text())["size_target"]["zeroed"] == \
        st["zeroed"]
