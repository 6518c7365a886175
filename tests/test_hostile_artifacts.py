"""Hostile artifacts (issue 25 item 2, and the artifact cases of item 4): each is refused in one
ArtifactError line before a model is built, within a bounded amount of memory and time."""

from __future__ import annotations

import json
import lzma
import re
import resource
import struct
import time

import pytest
import torch
from typer.testing import CliRunner

from golf import artifact_checks
from golf.artifact import MAGIC, load_model_from_artifact
from golf.config import QuantConfig, to_dict
from golf.errors import ArtifactError, GolfError
from golf.gptq import quantize_model
from golf.io import write_json_atomic
from golf.package import build_artifact, inspect_artifact, serialize
from tests.conftest import MODEL_FILE, load_artifact
from tests.test_package import TINY, _trained_like


@pytest.fixture(scope="module")
def stored():
    model = _trained_like()
    tensors, spec, _ = quantize_model(model, {}, QuantConfig(float_max_numel=256))
    return tensors, spec


def _write(path, tensors, spec, cfg, raw_edit=None):
    raw = serialize(tensors, spec, cfg)
    if raw_edit is not None:
        raw = raw_edit(raw)
    path.mkdir(parents=True, exist_ok=True)
    (path / MODEL_FILE).write_bytes(lzma.compress(raw, format=lzma.FORMAT_XZ))
    return path


def _header_edit(fn):
    def edit(raw):
        (hlen,) = struct.unpack("<Q", raw[8:16])
        text = fn(raw[16:16 + hlen].decode())
        h = text.encode()
        return MAGIC + struct.pack("<Q", len(h)) + h + raw[16 + hlen:]
    return edit


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("change, match", [
    ({"d_model": 4096}, "tensor '.*' is .* but model_config implies"),   # was: 5.1 GB allocated first
    ({"d_model": 10 ** 7}, "model_config d_model is 10000000, above the bound"),  # was: a traceback
    ({"layer_pattern": "M" * 100_000}, "100,000 layers, more than 256"),  # was: 118 s and 5.4 GB
    ({"layer_pattern": "MAMM"}, "missing \\['blocks.3"),
    ({"num_heads": 3}, "bad model config.*must divide"),
    ({"rope_base": float("inf")}, "rope_base is inf"),
    ({"d_state": 10 ** 4000}, "d_state is a 13288-bit integer, above the bound"),
])
def test_config_checked_against_bounds_and_tensor_table_before_building(tmp_path, stored, change, match,
                                                                        monkeypatch):
    import golf.model

    tensors, spec = stored
    art = _write(tmp_path / "art", tensors, spec, {**to_dict(TINY), **change})
    monkeypatch.setattr(golf.model, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    rss, t0 = _peak_rss_mb(), time.time()
    with pytest.raises(ArtifactError, match=match):
        load_model_from_artifact(art)
    assert time.time() - t0 < 10 and _peak_rss_mb() - rss < 500


def test_an_honest_artifact_passes_every_check(tmp_path, stored):
    tensors, spec = stored
    build_artifact(tmp_path / "art", tensors, spec, to_dict(TINY))
    assert load_model_from_artifact(tmp_path / "art").cfg.d_model == TINY.d_model


def test_5000_digit_integer_in_the_header_is_one_line(tmp_path, stored):
    tensors, spec = stored
    art = _write(tmp_path / "art", tensors, spec, to_dict(TINY),
                 _header_edit(lambda h: re.sub(r'"d_model":\s*32', '"d_model": ' + "9" * 5000, h, count=1)))
    with pytest.raises(ArtifactError, match="header is not valid JSON.*4300"):
        load_artifact(art)


def test_lzma_bomb_is_refused_after_the_bound(tmp_path):
    (tmp_path / "art").mkdir()
    # 200 MiB of zeros compress to ~30 KB; a real capped artifact holds < 30 MB raw
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    blob = b"".join(comp.compress(b"\0" * (1 << 20)) for _ in range(200)) + comp.flush()
    (tmp_path / "art" / MODEL_FILE).write_bytes(blob)
    rss = _peak_rss_mb()
    with pytest.raises(ArtifactError, match=f"decompresses to more than {artifact_checks.MAX_RAW_BYTES:,} bytes"):
        load_artifact(tmp_path / "art")
    assert _peak_rss_mb() - rss < 3 * artifact_checks.MAX_RAW_BYTES / 2 ** 20


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, stored, value):
    tensors, spec = stored
    name = next(k for k, s in spec.items() if s["kind"] == "float")
    bad = {**tensors, name: tensors[name].clone()}
    bad[name].view(-1)[0] = value
    art = _write(tmp_path / "art", bad, spec, to_dict(TINY))
    with pytest.raises(ArtifactError, match=f"tensor '{name}' holds NaN or infinite values"):
        load_artifact(art)


def test_float_spec_without_dtype_is_one_line_in_inspect(tmp_path, stored):
    tensors, spec = stored
    name = next(k for k, s in spec.items() if s["kind"] == "float")
    spec = {**spec, name: {k: v for k, v in spec[name].items() if k != "dtype"}}
    art = _write(tmp_path / "art", tensors, spec, to_dict(TINY))
    with pytest.raises(ArtifactError, match=f"spec of '{name}' is malformed"):
        inspect_artifact(art)


def test_inspect_prints_artifact_strings_without_markup(tmp_path, stored):
    import cli

    tensors, spec = stored
    art = _write(tmp_path / "art", tensors, spec, {**to_dict(TINY), "layer_pattern": "[red]MAM[/red]"})
    r = CliRunner().invoke(cli.app, ["inspect", str(art)])
    assert r.exit_code == 0 and "layer pattern [red]MAM[/red]," in r.output, r.output  # as written, no colour
    r = CliRunner().invoke(cli.app, ["inspect", str(tmp_path / "[bold]nothing[/bold]")])
    assert r.exit_code == 2 and "[bold]nothing[/bold]" in "".join(r.output.split()), r.output  # errors too


def test_metrics_never_hold_nan(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"val_bpb": 1.25})
    with pytest.raises(GolfError, match=r"m\.json.*not a finite number"):
        write_json_atomic(tmp_path / "m.json", {"val_bpb": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"val_bpb": 1.25}
    assert torch.isfinite(torch.tensor(json.loads((tmp_path / "m.json").read_text())["val_bpb"]))
