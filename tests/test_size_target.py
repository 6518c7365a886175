"""package.target_bytes: the cheapest ±1 codes by Hessian-weighted cost are zeroed, the fewest that fit."""

import dataclasses
import json

import pytest
import torch

from golf.config import QuantConfig
from golf.errors import ArtifactError
from golf.gptq import quantize_state_dict
from golf.package import compress, serialize
from golf.size_target import CodeEntropy, find_candidates, fit_to_target, zero_cheapest


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


def test_entropy_model_predicts_the_order0_bytes_of_zeroed_codes():
    tensors, spec, cw = _quantized()
    cand = find_candidates(tensors, spec, cw)
    model = CodeEntropy(tensors, cand)

    def order0_bytes(t):  # Σ over the candidates' tensors of numel · H(codes) / 8, from scratch
        total = 0.0
        for k in cand.per_tensor:
            c = torch.bincount(t[k].reshape(-1).long() + 128).double()
            c = c[c > 0]
            total += float(-(c * torch.log2(c / c.sum())).sum()) / 8
        return total

    base = order0_bytes(tensors)
    for n in (0, 1, 17, len(cand) // 2, len(cand)):
        assert model.saved(n) == pytest.approx(base - order0_bytes(zero_cheapest(tensors, cand, n)), abs=1e-6)
    half = model.saved(len(cand) // 2)
    n = model.n_for(half)
    assert model.saved(n) >= half > model.saved(n - 1) and model.n_for(1e12) == len(cand)


def test_fit_stops_within_the_slack_in_bounded_measures_and_fails_clearly_when_impossible():
    tensors, spec, cw = _quantized()
    cand = find_candidates(tensors, spec, cw)
    calls = []

    def measure(t):  # a size that falls by 2 bytes per zeroed code, like a compressor would (roughly)
        calls.append(1)
        return 10_000 - 2 * sum(int((t[k] == 0).sum() - (tensors[k] == 0).sum()) for k in cand.per_tensor)

    target = 10_000 - 2 * 137
    out, info, payload = fit_to_target(tensors, cand, target, measure, 10_000, slack_frac=0.002)
    slack = int(0.002 * target)
    assert info["slack_bytes"] == slack == 19 and payload is None
    assert target - slack <= info["size_after"] == measure(out) <= target  # 137 <= zeroed <= 137 + 9
    assert 137 <= info["zeroed"] <= 137 + slack // 2 and info["within_slack"]
    assert len(calls) - 1 == info["measures"] <= 3 * info["rounds"] and info["rounds"] <= 3
    same, info, _ = fit_to_target(tensors, cand, 10_000, measure, 10_000)
    assert same is tensors and info["zeroed"] == 0 and info["rounds"] == 0
    calls.clear()
    with pytest.raises(ArtifactError, match="target_bytes 1,000: zeroing all"):
        fit_to_target(tensors, cand, 1000, measure, 10_000)
    assert len(calls) <= 3  # the model sees at once that even every candidate may not do: measured in round 1


def test_fit_without_any_fitting_round_measures_every_candidate_once_more():
    tensors, spec, cw = _quantized()
    cand = find_candidates(tensors, spec, cw)
    n_all, sizes = len(cand), []

    def measure(t):  # only zeroing (nearly) everything fits: the model's guesses all land over the target
        n = sum(int((t[k] == 0).sum() - (tensors[k] == 0).sum()) for k in cand.per_tensor)
        sizes.append(n)
        return 10_000 if n < n_all - 3 else 9_000

    out, info, _ = fit_to_target(tensors, cand, 9_990, measure, 10_000, max_rounds=1)
    assert n_all not in sizes[:3] and sizes[3:].count(n_all) == 1  # round 1: the model's guesses, none fit
    assert info["rounds"] == 2 and info["measures"] == len(sizes) <= 6 and info["size_after"] == 9_000
    assert not info["within_slack"] and info["zeroed"] == n_all and all((out[k].abs() != 1).all() for k in cand.per_tensor)


def test_real_compressor_fit_is_under_target_and_within_slack_of_the_brute_force_minimum():
    tensors, spec, cw = _quantized(1)
    cand = find_candidates(tensors, spec, cw)
    calls = []

    def measure(t):
        calls.append(1)
        blob = compress(serialize(t, spec, {}), "zstd")
        return len(blob), blob

    sizes = [measure(zero_cheapest(tensors, cand, n))[0] for n in range(len(cand) + 1)]  # every count
    calls.clear()
    target = (sizes[0] + sizes[-1]) // 2
    out, info, blob = fit_to_target(tensors, cand, target, measure, sizes[0], slack_frac=0.01)
    n, slack = info["zeroed"], info["slack_bytes"]
    true_min = min(k for k, s in enumerate(sizes) if s <= target)
    assert len(compress(serialize(out, spec, {}), "zstd")) == sizes[n] == info["size_after"] <= target < sizes[0]
    assert blob == compress(serialize(out, spec, {}), "zstd")  # the chosen count's own compressed bytes
    assert true_min <= n and (sizes[n] >= target - slack or sizes[n - 1] > target)  # fewest within the slack
    assert len(calls) == info["measures"] <= 9


def test_package_stage_meets_its_target(in_tiny, tmp_path, monkeypatch):
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
    calls = _counting_compress(monkeypatch)
    p = package.run(dataclasses.replace(params, package=dataclasses.replace(params.package, target_bytes=target)), seed)
    st = p["size_target"]
    assert p["total_bytes"] <= target and st["zeroed"] > 0 and st["size_before"] == plain["total_bytes"]
    assert len(calls) == len(st["sizes_before"]) + st["measures"]  # the sweep, the search; the write none
    assert 1 <= st["rounds"] <= 3 and st["slack_bytes"] == int(0.001 * target)
    assert set(p["phase_secs"]) == {"load", "sweep", "search", "write"} and set(plain["phase_secs"]) == {"load", "write"}
    assert json.loads((params.run_dir(seed) / "metrics" / "package.json").read_text())["size_target"]["zeroed"] == \
        st["zeroed"]


def _counting_compress(monkeypatch):
    import golf.package as gp

    calls, real = [], gp.compress
    monkeypatch.setattr(gp, "compress", lambda data, method, segments=1: calls.append(method) or real(data, method,
                                                                                                   segments))
    return calls


def test_precompressed_artifact_writes_the_same_bytes_without_compressing_again(tmp_path, monkeypatch):
    from golf.artifact import MODEL_FILES
    from golf.package import build_artifact

    tensors, spec, _ = _quantized()
    again = build_artifact(tmp_path / "again", tensors, spec, {}, "zstd", compare=False, byte_planes=True)
    blob = compress(serialize(tensors, spec, {}, True), "zstd")
    calls = _counting_compress(monkeypatch)
    pre = build_artifact(tmp_path / "pre", tensors, spec, {}, "zstd", compare=False, byte_planes=True,
                         precompressed=blob)
    assert calls == []  # nothing compressed: the blob is read back, checked and written
    f = MODEL_FILES["zstd"]
    assert (tmp_path / "pre" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() == blob
    assert {k: v for k, v in pre.items() if k != "compress_secs"} == \
        {k: v for k, v in again.items() if k != "compress_secs"}
    compared = build_artifact(tmp_path / "cmp", tensors, spec, {}, "zstd", compare=True, byte_planes=True,
                              precompressed=blob)
    assert sorted(calls) == ["brotli", "lzma"] and set(compared["compressed"]) == {"zstd+planes", "lzma+planes",
                                                                                  "brotli+planes"}
    other, _, _ = _quantized(5)
    with pytest.raises(ArtifactError, match="does not read back bit for bit"):
        build_artifact(tmp_path / "bad", tensors, spec, {}, "zstd", compare=False, byte_planes=True,
                       precompressed=compress(serialize(other, spec, {}, True), "zstd"))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ArtifactError, match="precompressed model needs its compressor"):
        build_artifact(tmp_path / "auto", tensors, spec, {}, "auto", precompressed=blob)
