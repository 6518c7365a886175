"""bench/eval_variants.py: one artifact scored under several settings; TTT variants as changes to a params file's
ttt section, each from a fresh copy of the model; bad variant lists fail before anything is loaded."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO
from test_evaluate import _params, write_artifact

spec = importlib.util.spec_from_file_location("eval_variants", REPO / "bench" / "eval_variants.py")
eval_variants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_variants)


def test_ttt_variants_start_from_the_params_ttt_and_each_from_a_fresh_model(in_tiny, tmp_path):
    root, params, overrides = in_tiny
    params = _params(in_tiny, tmp_path)
    write_artifact(params, 1)
    out_json = tmp_path / "variants.json"
    sets = [s for o in [*overrides, f"runs_dir={tmp_path / 'runs'}"] for s in ("--set", o)]
    out = eval_variants.main([
        str(params.run_dir(1) / "artifact"), str(root / "data" / "tiny"), "-p", str(REPO / "params.yaml"), *sets,
        "--sliding", "[[32, 8, 16]]", "--stateful", "[]",
        "--ttt", '[{}, {"lr": 0.0}, {}, {"params": "norms", "epochs": 2}]', "--out", str(out_json)])
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(out))
    rows = out["results"]
    assert [r["kind"] for r in rows] == ["sliding", "ttt", "ttt", "ttt", "ttt"]
    base, no_lr, again, norms = rows[1:]
    # the base is the params file's ttt section (the tiny overrides), not TTTConfig's defaults
    assert base["chunk_tokens"] == params.ttt.chunk_tokens == 512 and base["lr"] == params.ttt.lr
    assert no_lr["lr"] == 0.0 and norms["params"] == "norms" and norms["epochs"] == 2
    # a fresh copy per variant: the same settings give the same BPB after another variant adapted
    assert again["val_bpb"] == pytest.approx(base["val_bpb"], abs=1e-9)
    assert all(0 < r["val_bpb"] < 20 and r["tokens"] > 0 for r in rows)


@pytest.mark.parametrize("argv,message", [
    (["--sliding", "[[2048, 64]]"], "--sliding must be a JSON list of lists of 3 integers"),
    (["--stateful", "not json"], "--stateful must be a JSON list"),
    (["--ttt", '[{"learning_rate": 0.01}]'], "names unknown TTT settings ['learning_rate']"),
    (["-p", "params.yaml", "--set", "ttt.lr=-1"], "error: "),
])
def test_bad_variants_fail_before_loading_anything(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        eval_variants.main([str(tmp_path / "no_artifact"), str(tmp_path / "no_data"), *argv])
    assert message in str(e.value)
