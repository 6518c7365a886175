"""The artifact: bit-exact round trip, determinism, compressors, the byte cap, malformed and hostile files
(nothing executed), the code copy, size groups, and the chain GolfLM → hessian → quantize → package → load."""

import ast
import dataclasses
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import golf.hessian
import golf.model
import golf.train
from golf.artifact import MAGIC, decompress, dequantize, load_model_from_artifact, open_artifact
from golf.config import ModelConfig, QuantConfig, to_dict
from golf.errors import ArtifactError
from golf.gptq import quantize_model, quantize_state_dict
from golf.hessian import collect_hessians
from golf.model import build_model, load_model, save_model
from golf.package import build_artifact, code_files, group_sizes, inspect_artifact, serialize
from tests.conftest import MODEL_FILE, load_artifact

REPO = Path(__file__).resolve().parents[1]
CFG = {"vocab_size": 300, "d_model": 32, "layer_pattern": "A", "num_heads": 2, "num_kv_heads": 1,
       "bigram_buckets": 0, "bigram_dim": 0}


def _stored():
    """Stored tensors of every kind the container holds: int8 codes, fp16 scales/floats, bf16, fp32, 0-d."""
    torch.manual_seed(0)
    state = {"blocks.0.attn.q_proj.weight": torch.randn(40, 32), "tok_emb.weight": torch.randn(300, 32),
             "blocks.0.mixer.A_log": torch.randn(8), "norm": torch.randn(32), "gain": torch.tensor(1.5)}
    tensors, spec, _ = quantize_state_dict(state, {}, QuantConfig(float_max_numel=100))
    tensors["extra_bf16"] = torch.randn(3, 5).to(torch.bfloat16)
    spec["extra_bf16"] = {"kind": "float", "dtype": "bf16", "shape": [3, 5]}
    return tensors, spec


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and \
        torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def test_round_trip_is_bit_exact_and_deterministic(tmp_path):
    tensors, spec = _stored()
    m1 = build_artifact(tmp_path / "a", tensors, spec, CFG)
    m2 = build_artifact(tmp_path / "b", tensors, spec, CFG)
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()
    assert m1["total_bytes"] == m1["model_bytes"] + m1["code_bytes"] and m1["under_cap"]
    cfg, back, spec2 = load_artifact(tmp_path / "a")
    assert isinstance(cfg, ModelConfig) and cfg.d_model == 32 and spec2 == spec
    assert set(back) == set(tensors) and all(_same_bits(back[k], tensors[k]) for k in tensors)
    assert serialize(back, spec2, CFG) == serialize(tensors, spec, CFG)
    assert m2["model_bytes"] == m1["model_bytes"]


def test_every_compressor_round_trips_and_sizes_are_recorded(tmp_path, monkeypatch):
    tensors, spec = _stored()
    m = build_artifact(tmp_path / "x", tensors, spec, CFG, "lzma", compare=True)
    assert set(m["compressed"]) == {"lzma", "zstd", "brotli"} and all(isinstance(v, int) for v in m["compressed"].values())
    assert m["compressed"]["lzma"] == m["model_bytes"]
    for method, suffix in (("zstd", ".zst"), ("brotli", ".br")):
        mm = build_artifact(tmp_path / method, tensors, spec, CFG, method, compare=False)
        assert (tmp_path / method / f"model.golf{suffix}").is_file() and mm["compressed"] == {method: mm["model_bytes"]}
        _, back, _ = load_artifact(tmp_path / method)
        assert all(_same_bits(back[k], tensors[k]) for k in tensors)
    monkeypatch.setitem(sys.modules, "brotli", None)  # import brotli now raises ImportError
    assert build_artifact(tmp_path / "y", tensors, spec, CFG)["compressed"]["brotli"] == "unavailable"


def test_over_the_cap_names_the_sizes_and_removes_the_old_artifact(tmp_path):
    """A package over the cap must not leave the previous artifact for a later eval to score."""
    tensors, spec = _stored()
    build_artifact(tmp_path / "art", tensors, spec, CFG)
    assert open_artifact(tmp_path / "art").model_bytes > 0
    with pytest.raises(ArtifactError, match=r"over the cap of 1,000 bytes") as e:
        build_artifact(tmp_path / "art", tensors, spec, CFG, cap_bytes=1000)
    assert "compressed model" in str(e.value) and "previous artifact was removed" in str(e.value)
    assert not (tmp_path / "art").exists() and list(tmp_path.iterdir()) == []  # no stale copy aside either
    with pytest.raises(ArtifactError, match="run the package stage first"):
        open_artifact(tmp_path / "art")
    mine = tmp_path / "mine"  # a folder without a model file is not an artifact: never removed
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="over the cap"):
        build_artifact(mine, tensors, spec, CFG, cap_bytes=1000)
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(ArtifactError):
        build_artifact(tmp_path / "new", tensors, spec, CFG, cap_bytes=1000)
    assert not (tmp_path / "new").exists()


def _split(raw: bytes):
    (hlen,) = struct.unpack("<Q", raw[8:16])
    return json.loads(raw[16:16 + hlen]), raw[16 + hlen:]


def _join(header: dict, payload: bytes) -> bytes:
    h = json.dumps(header).encode()
    return MAGIC + struct.pack("<Q", len(h)) + h + payload


def _edit(raw, fn):
    header, payload = _split(raw)
    payload = fn(header, payload)
    return _join(header, payload)


def _entry(header, name):
    return next(e for e in header["tensors"] if e["name"] == name)


Q = "blocks.0.attn.q_proj.weight.q"
CORRUPTIONS = {
    "bad magic": (lambda raw: b"NOTGOLF!" + raw[8:], "bad magic"),
    "header length past the end": (lambda raw: raw[:8] + struct.pack("<Q", 10 ** 12) + raw[16:], "runs past the end"),
    "header not JSON": (lambda raw: raw[:16] + b"\xff" + raw[17:], "not valid JSON"),
    "truncated payload": (lambda raw: raw[:-7], "lies outside the data"),
    "trailing bytes": (lambda raw: raw + b"\0\0\0\0", "after the last tensor"),
    "nbytes lies": (lambda raw: _edit(raw, lambda h, p: (_entry(h, Q).update(nbytes=_entry(h, Q)["nbytes"] - 1), p)[1]),
                    "needs"),
    "shape lies": (lambda raw: _edit(raw, lambda h, p: (_entry(h, Q).update(shape=[41, 32], nbytes=41 * 32), p)[1]),
                   "offset|outside"),
    "offset gap": (lambda raw: _edit(raw, lambda h, p: (h["tensors"][1].update(offset=h["tensors"][1]["offset"] + 1),
                                                        p)[1]), "back to back"),
    "unknown dtype": (lambda raw: _edit(raw, lambda h, p: (_entry(h, Q).update(dtype="object"), p)[1]),
                      "unknown dtype"),
    "codes off the int6 grid": (lambda raw: _edit(raw, lambda h, p: p[:_entry(h, Q)["offset"]] + bytes([100])
                                                  + p[_entry(h, Q)["offset"] + 1:]), "outside the int6 range"),
    "spec without its tensors": (lambda raw: _edit(raw, lambda h, p: (h["spec"].update(ghost={"kind": "float",
                                 "dtype": "fp16", "shape": [2]}), p)[1]), "ghost"),
    "bad model config": (lambda raw: _edit(raw, lambda h, p: (h["model_config"].update(d_model="wide"), p)[1]),
                         "bad model config"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_artifacts_fail_with_artifact_error(tmp_path, case):
    tensors, spec = _stored()
    corrupt, match = CORRUPTIONS[case]
    raw = corrupt(serialize(tensors, spec, CFG))
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / MODEL_FILE).write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ))
    with pytest.raises(ArtifactError, match=match):
        load_artifact(tmp_path / "art")


def test_truncated_or_padded_compressed_streams_and_bombs_fail(tmp_path):
    tensors, spec = _stored()
    build_artifact(tmp_path / "art", tensors, spec, CFG)
    path = tmp_path / "art" / MODEL_FILE
    blob = path.read_bytes()
    for bad in (blob[: len(blob) // 2], blob[:-1], blob + b"junk", b""):
        path.write_bytes(bad)
        with pytest.raises(ArtifactError, match=str(path.name)):
            load_artifact(tmp_path / "art")
    with pytest.raises(ArtifactError, match="more than 1,000 bytes"):
        decompress(lzma.compress(b"\0" * 100_000, format=lzma.FORMAT_XZ), "lzma", "bomb", max_bytes=1000)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nowhere")
    path.write_bytes(blob)
    (tmp_path / "art" / "model.golf.zst").write_bytes(b"")
    with pytest.raises(ArtifactError, match="expected exactly one"):
        load_artifact(tmp_path / "art")


class Payload:
    """Unpickling this would create a file: the proof that a loader executed code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def test_crafted_pickle_artifacts_are_rejected_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "PWNED"
    evil = pickle.dumps({"w": Payload(str(sentinel))})
    assert b"exec" in evil  # a real exploit: pickle.loads(evil) would write the sentinel
    variants = {"plain pickle": evil,
                "pickle behind our magic": MAGIC + struct.pack("<Q", len(evil)) + evil,
                "pickle as payload": _join({"format": 1, "model_config": CFG, "spec": {},
                                            "tensors": [{"name": "w", "dtype": "object", "shape": [1],
                                                         "offset": 0, "nbytes": len(evil)}]}, evil)}
    for what, raw in variants.items():
        d = tmp_path / what.replace(" ", "_")
        d.mkdir()
        (d / MODEL_FILE).write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ))
        with pytest.raises(ArtifactError):
            load_artifact(d)
        with pytest.raises(ArtifactError):
            load_model_from_artifact(d)
    assert not sentinel.exists()
    # and structurally: the loader module has no way to unpickle or evaluate anything
    tree = ast.parse((REPO / "golf" / "artifact.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    loads = {f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    assert not {"eval", "exec", "compile", "__import__"} & names
    assert not {"pickle", "marshal", "dill", "shelve", "cloudpickle", "joblib"} & modules
    assert not {"torch.load", "np.load", "numpy.load"} & loads


def test_artifact_code_is_the_import_closure_of_the_eval_modules(tmp_path):
    names = {f.name for f in code_files()}
    assert {"__init__.py", "artifact.py", "model.py", "ssm.py", "attention.py", "config.py", "errors.py", "io.py",
            "data.py", "evaluate.py"} <= names
    assert not {"package.py", "train.py", "gptq.py", "hessian.py", "optim.py", "report.py"} & names
    tensors, spec = _stored()
    m = build_artifact(tmp_path / "art", tensors, spec, CFG, provenance={"stage": "package"})
    copied = sorted((tmp_path / "art" / "code").iterdir())
    assert {f.name for f in copied} == names and m["code_bytes"] == sum(f.stat().st_size for f in copied)
    assert json.loads((tmp_path / "art" / "provenance.json").read_text())["stage"] == "package"


def test_groups_sum_to_the_model_bytes_and_inspect_shows_them(tmp_path):
    tensors, spec = _stored()
    raw, shares = group_sizes(tensors, 12345)
    assert sum(shares.values()) == 12345 and set(raw) == set(shares)
    assert {"attn", "embed", "mamba_dynamics", "other"} <= set(shares)  # golf.param_groups.size_group
    m = build_artifact(tmp_path / "art", tensors, spec, CFG)
    assert sum(m["groups"].values()) == m["model_bytes"]
    text = inspect_artifact(tmp_path / "art")
    assert "\nattn " in text and "\nembed " in text and f"{m['total_bytes']:,}" in text


# --------------------------------------------------------------------------------------------------
# With the real model
# --------------------------------------------------------------------------------------------------

TINY = ModelConfig(vocab_size=128, d_model=32, layer_pattern="MAM", d_state=8, expand=2.0, headdim=16,
                   chunk_size=8, num_heads=2, num_kv_heads=1, mlp_mult=2.0, bigram_buckets=64, bigram_dim=8,
                   ssm_backend="reference", attn_backend="sdpa")


def _trained_like(cfg=TINY, seed=0):
    """A GolfLM whose zero-initialized projections are perturbed, so every layer matters."""
    torch.manual_seed(seed)
    model = build_model(cfg, "cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_golflm_to_artifact_and_back(tmp_path):
    model = _trained_like()
    g = torch.Generator().manual_seed(1)
    hess, _ = collect_hessians(model, [torch.randint(0, 128, (4, 32), generator=g) for _ in range(4)], "cpu")
    assert any(".mixer.in_proj" in k for k in hess) and any(".attn.q_proj" in k for k in hess)
    tensors, spec, report = quantize_model(model, hess, QuantConfig(float_max_numel=256))
    assert spec["tok_emb.weight"]["bits"] == 8 and all(spec[k + ".weight"]["method"] == "gptq" for k in report)
    build_artifact(tmp_path / "art", tensors, spec, to_dict(TINY))
    loaded = load_model_from_artifact(tmp_path / "art")
    art = open_artifact(tmp_path / "art")
    for k, v in dequantize(art.tensors, art.spec).items():
        assert torch.equal(loaded.state_dict()[k], v)  # what was stored is exactly what is scored
    ids = torch.randint(0, 128, (2, 32), generator=g)
    with torch.no_grad():
        a, b = model(ids), loaded(ids)
    assert 0 < (a - b).abs().max() < 0.1 * a.std()


def test_the_artifact_code_alone_loads_the_model(tmp_path):
    model = _trained_like()
    tensors, spec, _ = quantize_model(model, {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(TINY))
    site = tmp_path / "site"
    site.mkdir()
    (site / "golf").symlink_to(tmp_path / "art" / "code", target_is_directory=True)
    script = ("import sys, torch, golf; from golf.artifact import load_model_from_artifact; "
              f"m = load_model_from_artifact({str(tmp_path / 'art')!r}); "
              "ids = torch.arange(64).reshape(2, 32) % 128; "
              "print(golf.__file__); print(repr(float(m(ids).double().sum())))")
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    where, total = r.stdout.split()
    assert str(site) in where  # the artifact's copy of golf, not the checkout's
    with torch.no_grad():
        expected = float(load_model_from_artifact(tmp_path / "art")(torch.arange(64).reshape(2, 32) % 128)
                         .double().sum())
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_an_opaque_trained_model_loads_from_code_without_ssm_ops(tmp_path, monkeypatch):
    # model.ssm_compile "opaque" is a training setting: the artifact does not ship golf/ssm_ops.py, and its model
    # is built with "disable" (the same kernels, called directly)
    assert "ssm_ops.py" not in {f.name for f in code_files()}
    cfg = dataclasses.replace(TINY, ssm_compile="opaque")
    tensors, spec, _ = quantize_model(_trained_like(cfg), {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(cfg))
    assert open_artifact(tmp_path / "art").config.ssm_compile == "opaque"  # the record says how it trained
    built = []
    real = golf.model.build_model
    monkeypatch.setattr(golf.model, "build_model", lambda c, d: built.append(c) or real(c, d))
    load_model_from_artifact(tmp_path / "art")
    assert [c.ssm_compile for c in built] == ["disable"]


def test_a_flash4_trained_model_loads_with_auto_attention(tmp_path, monkeypatch):
    # model.attn_backend "flash4" is FlashAttention-4 through golf/attn_ops.py (not shipped): the artifact records
    # it, and its model is built with "auto", which needs neither FA4 nor a GPU
    assert "attn_ops.py" not in {f.name for f in code_files()}
    tensors, spec, _ = quantize_model(_trained_like(), {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(dataclasses.replace(TINY, attn_backend="flash4")))
    assert open_artifact(tmp_path / "art").config.attn_backend == "flash4"
    real, built = golf.model.build_model, []
    monkeypatch.setattr(golf.model, "build_model", lambda c, d: built.append(c) or real(c, d))
    load_model_from_artifact(tmp_path / "art")
    assert [c.attn_backend for c in built] == ["auto"]


def test_a_golf_scan_trained_model_loads_from_code_without_the_golf_kernels(tmp_path, monkeypatch):
    # model.ssm_scan "golf" / "golf_split" is a kernel choice reached through golf/ssm_ops.py (not shipped): the
    # artifact records it, and its model is built with mamba-ssm's scan, the same function
    assert not {"ssm_ops.py", "ssd_kernel.py"} & {f.name for f in code_files()}
    real, built = golf.model.build_model, []
    monkeypatch.setattr(golf.model, "build_model", lambda c, d: built.append(c) or real(c, d))
    for scan in ("golf", "golf_split"):
        cfg = dataclasses.replace(TINY, ssm_scan=scan, ssm_compile="opaque")
        tensors, spec, _ = quantize_model(_trained_like(cfg), {}, QuantConfig(float_max_numel=256))
        build_artifact(tmp_path / scan, tensors, spec, to_dict(cfg))
        assert open_artifact(tmp_path / scan).config.ssm_scan == scan
        built.clear()
        load_model_from_artifact(tmp_path / scan)
        assert [(c.ssm_scan, c.ssm_compile) for c in built] == [("mamba", "disable")]


def test_a_golf_conv_trained_model_loads_from_code_without_the_golf_kernels(tmp_path, monkeypatch):
    # model.ssm_conv "golf" is a kernel choice reached through golf/ssm_ops.py (not shipped): the artifact records
    # it, and its model is built with causal-conv1d's conv (PyTorch's where it is missing), the same function
    assert not {"ssm_ops.py", "conv_kernel.py"} & {f.name for f in code_files()}
    real, built = golf.model.build_model, []
    monkeypatch.setattr(golf.model, "build_model", lambda c, d: built.append(c) or real(c, d))
    cfg = dataclasses.replace(TINY, ssm_conv="golf", ssm_scan="golf", ssm_compile="opaque")
    tensors, spec, _ = quantize_model(_trained_like(cfg), {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(cfg))
    assert open_artifact(tmp_path / "art").config.ssm_conv == "golf"
    load_model_from_artifact(tmp_path / "art")
    assert [(c.ssm_conv, c.ssm_scan, c.ssm_compile) for c in built] == [("causal_conv1d", "mamba", "disable")]


def test_a_core_op_trained_model_loads_from_code_without_the_op(tmp_path, monkeypatch):
    # model.ssm_backend "fused" under ssm_compile "opaque" is golf::mamba_core (golf/mixer_op.py, not shipped), and
    # gated_norm "golf" golf's norm kernels inside it: the artifact records both, and its model is built with
    # "auto" and mamba-ssm's norm kernel, the same mixer on any machine (the fused path needs CUDA); likewise
    # block_norm "golf" (golf/block_norm_kernel.py, not shipped) is built with "torch", the same function
    assert not {"mixer_op.py", "gated_norm_kernel.py", "block_norm_kernel.py"} & {f.name for f in code_files()}
    real, built = golf.model.build_model, []
    monkeypatch.setattr(golf.model, "build_model", lambda c, d: built.append(c) or real(c, d))
    cfg = dataclasses.replace(TINY, ssm_compile="opaque", gated_norm="golf", block_norm="golf")
    tensors, spec, _ = quantize_model(_trained_like(cfg), {}, QuantConfig(float_max_numel=256))
    build_artifact(tmp_path / "art", tensors, spec, to_dict(dataclasses.replace(cfg, ssm_backend="fused")))
    assert open_artifact(tmp_path / "art").config.gated_norm == "golf"
    load_model_from_artifact(tmp_path / "art")
    assert [(c.ssm_backend, c.ssm_compile, c.gated_norm, c.block_norm) for c in built] == [
        ("auto", "disable", "kernel", "torch")]


def test_stages_chain_and_quantize_reruns_from_cached_hessians(in_tiny, tmp_path, monkeypatch):
    _, params, _ = in_tiny
    params = dataclasses.replace(params, runs_dir=str(tmp_path / "runs"))
    seed = 7
    save_model(_trained_like(params.model), params.model, params.run_dir(seed) / "train")
    from stages import hessian, package, quantize

    h = hessian.run(params, seed)
    assert h["samples"] == params.calib.num_sequences and h["tokens"] == h["samples"] * params.calib.seq_len
    q = quantize.run(params, seed)
    p = package.run(params, seed)
    rd = params.run_dir(seed)
    for stage, keys in (("hessian", {"layers", "samples", "tokens", "secs"}),
                        ("quantize", {"layers", "secs", "mean_rel_err"}),
                        ("package", {"model_bytes", "code_bytes", "total_bytes", "cap_bytes", "under_cap",
                                     "compressed", "groups"})):
        assert keys <= set(json.loads((rd / "metrics" / f"{stage}.json").read_text())), stage
    for out in ("hessian", "quant", "artifact"):
        assert (rd / out / "provenance.json").is_file()
    expected = {n for n, m in load_model(rd / "train").named_modules()
                if isinstance(m, torch.nn.Linear) and m.weight.numel() > params.quant.float_max_numel}
    assert set(q["layers"]) == expected and len(expected) >= h["layers"] - 1  # every GPTQ-sized linear
    assert 0 < q["mean_rel_err"] < q["mean_rtn_rel_err"]
    assert p["under_cap"] and "mamba" in package.inspect(rd / "artifact")

    # quantize again with other settings: no training, no calibration, no data needed
    def boom(*a, **k):
        raise AssertionError("quantize must not train or calibrate")

    monkeypatch.setattr(golf.train, "train", boom)
    monkeypatch.setattr(golf.hessian, "calibrate", boom)
    monkeypatch.setattr(golf.hessian, "collect_hessians", boom)
    first = (rd / "quant" / "quantized.safetensors").read_bytes()
    other = dataclasses.replace(params, quant=dataclasses.replace(params.quant, clip_search=False, damp_frac=0.05),
                                data=dataclasses.replace(params.data, name="no_such_data"))
    q2 = quantize.run(other, seed)
    assert q2["gptq_layers"] == q["gptq_layers"] and (rd / "quant" / "quantized.safetensors").read_bytes() != first


def test_default_container_and_lzma_blob_are_unchanged():
    """package.compressor lzma without byte planes writes the same bytes as before these options existed
    (sha256 of this fixed input, recorded from the earlier code)."""
    import hashlib

    from golf.package import compress

    tensors, spec = _stored()
    raw = serialize(tensors, spec, CFG)
    assert hashlib.sha256(raw).hexdigest() == "9e79e649d5d2245a78fac0e22a20a59e5de383bc32c33c197efc168735c067a7"
    assert hashlib.sha256(compress(raw, "lzma")).hexdigest() == \
        "8b3e57fd66d54e66bca878a7e0357db7218879a2da789b3329b4ec3a636360ff"


def test_byte_planes_round_trip_and_auto_keeps_the_smallest(tmp_path):
    from golf.artifact import deserialize

    tensors, spec = _stored()
    flat, planes = serialize(tensors, spec, CFG), serialize(tensors, spec, CFG, byte_planes=True)
    assert flat != planes and len(flat) == len(planes)
    back, _, _ = deserialize(planes)
    assert set(back) == set(tensors) and all(_same_bits(back[k], tensors[k]) for k in tensors)
    scale = tensors["blocks.0.attn.q_proj.weight.scale"]  # fp16 (40,): 40 low bytes, then 40 high bytes
    header, payload = _split(planes)
    e = _entry(header, "blocks.0.attn.q_proj.weight.scale")
    raw = scale.numpy().astype("<f2").tobytes()
    assert payload[e["offset"]:e["offset"] + e["nbytes"]] == raw[0::2] + raw[1::2]
    m = build_artifact(tmp_path / "auto", tensors, spec, CFG, compressor="auto")
    sizes = m["compressed"]
    assert set(sizes) == {"lzma", "zstd", "brotli", "lzma+planes", "zstd+planes", "brotli+planes"}
    label = min(sizes, key=lambda k: (sizes[k], k))
    assert m["model_bytes"] == sizes[label] and m["compressor"] == label.removesuffix("+planes")
    assert m["byte_planes"] == label.endswith("+planes")
    art = open_artifact(tmp_path / "auto")
    assert all(_same_bits(art.tensors[k], tensors[k]) for k in tensors)
    m = build_artifact(tmp_path / "br", tensors, spec, CFG, compressor="brotli", byte_planes=True, compare=False)
    assert m["compressed"].keys() == {"brotli+planes"} and m["byte_planes"] is True
    assert all(_same_bits(open_artifact(tmp_path / "br").tensors[k], tensors[k]) for k in tensors)


def _segmented_input(monkeypatch):
    """A container of several segments: the segment floor lowered to 1 KiB, so the small test model cuts into
    a few pieces (the real floor, 1 MiB, would need a multi-MB model and seconds per compression)."""
    import golf.package as gp

    monkeypatch.setattr(gp, "MIN_SEGMENT_BYTES", 1024)
    tensors, spec = _stored()
    raw = serialize(tensors, spec, CFG)
    return gp, tensors, spec, raw


@pytest.mark.parametrize("method", ["lzma", "zstd", "brotli"])
def test_segments_round_trip_and_their_bytes_do_not_depend_on_the_cores(monkeypatch, method):
    import threading

    from golf.artifact import SEGMENTS_MAGIC

    gp, _, _, raw = _segmented_input(monkeypatch)
    n = len(raw) // 1024
    assert 2 <= n < 16 and gp.segment_bounds(len(raw), 16) == [len(raw) * i // n for i in range(n + 1)]
    assert gp.segment_bounds(len(raw), 3)[1:3] == [len(raw) // 3, 2 * len(raw) // 3]
    assert gp.segment_bounds(1023, 16) == [0, 1023]  # under the floor: one stream
    blob = gp.compress(raw, method, segments=16)
    assert blob.startswith(SEGMENTS_MAGIC) and struct.unpack_from("<I", blob, 8)[0] == n
    lengths = struct.unpack_from(f"<{n}Q", blob, 12)
    assert 12 + 8 * n + sum(lengths) == len(blob)
    assert decompress(blob, method, "segmented") == raw
    monkeypatch.setattr(gp, "_COMPRESS_SLOTS", threading.BoundedSemaphore(1))  # one core: the same bytes
    assert gp.compress(raw, method, segments=16) == blob
    assert gp.compress(raw, method, segments=1) == gp.compress(raw, method)  # 1: one plain stream
    assert not gp.compress(raw, method, segments=1).startswith(SEGMENTS_MAGIC)


def test_a_segmented_artifact_loads_and_its_defects_are_named(tmp_path, monkeypatch):
    gp, tensors, spec, _ = _segmented_input(monkeypatch)
    m = build_artifact(tmp_path / "art", tensors, spec, CFG, segments=4, compare=False)
    path = tmp_path / "art" / MODEL_FILE
    blob = path.read_bytes()
    assert m["model_bytes"] == len(blob) and struct.unpack_from("<I", blob, 8)[0] == 4
    _, back, _ = load_artifact(tmp_path / "art")
    assert all(_same_bits(back[k], tensors[k]) for k in tensors)
    lengths = struct.unpack_from("<4Q", blob, 12)
    second = 12 + 32 + lengths[0]  # where segment 2's stream starts
    corrupt = bytearray(blob)
    corrupt[second:second + 8] = b"\0" * 8
    for bad, match in ((blob[:10], "segment table"), (blob[:20], "segment table"),
                       (blob[:-1], "segments add up to"), (blob + b"x", "segments add up to"),
                       (bytes(corrupt), "segment 2 of 4")):
        path.write_bytes(bad)
        with pytest.raises(ArtifactError, match=match) as e:
            load_artifact(tmp_path / "art")
        assert MODEL_FILE in str(e.value)
    # the output bound holds over the segments together, not per segment
    two = gp.SEGMENTS_MAGIC + struct.pack("<I", 2)
    parts = [lzma.compress(b"\0" * 600, format=lzma.FORMAT_XZ)] * 2
    bomb = two + struct.pack("<2Q", *map(len, parts)) + b"".join(parts)
    assert len(decompress(bomb, "lzma", "two", max_bytes=1200)) == 1200
    with pytest.raises(ArtifactError, match=r"two \(segment 2 of 2\): decompresses to more than 1,000 bytes"):
        decompress(bomb, "lzma", "two", max_bytes=1000)
