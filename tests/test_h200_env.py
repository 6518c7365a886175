"""bench/h200/h200_env.sh's data settings (the part that needs no GPU machine): which carried shards a call trains
on and where their prepared data goes; the settings must load as golf params."""

import subprocess
from pathlib import Path

import pytest

from golf.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _data_sets(train_shards: str | None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "GOLF_ENV_DATA_ONLY": "1"}
    if train_shards is not None:
        env["TRAIN_SHARDS"] = train_shards
    script = 'source bench/h200/h200_env.sh && printf "%s\\n" "${GOLF_DATA_SETS[@]}"'
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_all_four_shards_by_default():
    sets = _data_sets(None)
    assert sets[0] == "data.name=sp1024"
    assert sets[1] == "data.train_globs=[" + ",".join(f".carry/corpus/train_00{i}.jsonl.xz" for i in range(4)) + "]"
    params = load_params(ROOT / "configs/hybrid_12_b131k.yaml", sets)
    assert params.data.name == "sp1024" and len(params.data.train_globs) == 4
    assert params.data.val_globs == [".carry/corpus/val.jsonl.xz"]


@pytest.mark.parametrize("shards, name", [("000", "sp1024_000"), ("000 002", "sp1024_000_002")])
def test_a_subset_of_shards_gets_its_own_data_folder(shards, name):
    sets = _data_sets(shards)
    params = load_params(ROOT / "configs/hybrid_12_b131k.yaml", sets)
    assert params.data.name == name  # never data/sp1024, the full set's folder
    assert params.data.train_globs == [f".carry/corpus/train_{s}.jsonl.xz" for s in shards.split()]
