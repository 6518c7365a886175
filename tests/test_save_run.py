"""bench/save_run.py: a device run's tarball filed under results/ by its own provenance, whole or not at all."""

import io
import json
import shutil
import sys
import tarfile

import pytest

from golf.errors import GolfError
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import save_run

FILED = REPO / "bench" / "results" / "2026-11-29_c478e7a7_hybrid_12_b262k_240s_seed42"


def pack(tmp_path, seed=42, argv_extra=(), seeds_in_tar=(42,), drop_provenance=False, name="run.tgz",
         profile=None):
    """A run_<seed>.tgz laid out as h200_pipeline.sh writes it, rebuilt from a committed result folder."""
    root = tmp_path / f"tree_{name}"
    for s in seeds_in_tar:
        rd = root / "runs" / str(s)
        (rd / "metrics").mkdir(parents=True)
        (rd / "plots").mkdir()
        (rd / "artifact").mkdir()
        for f in FILED.glob("*.json"):
            if f.name != "artifact.provenance.json":
                shutil.copy2(f, rd / "metrics" / f.name)
        shutil.copy2(FILED / "train_curve.tsv", rd / "plots" / "train_curve.tsv")
        prov = json.loads((FILED / "artifact.provenance.json").read_text())
        prov["seed"] = s
        prov["argv"] = [*prov["argv"], *argv_extra]
        if not drop_provenance:
            (rd / "artifact" / "provenance.json").write_text(json.dumps(prov))
            (rd / "train").mkdir()
            (rd / "train" / "provenance.json").write_text(json.dumps({"seed": s, "ssm_autotune": {"k": {"a": "b"}}}))
            if profile is not None:  # a run with train.profile_steps
                (rd / "train" / "profile.json").write_text(json.dumps(profile))
    (root / "reports").mkdir()
    shutil.copy2(FILED / "report.md", root / "reports" / "report.md")
    tgz = tmp_path / name
    with tarfile.open(tgz, "w:gz") as tar:
        # h200_pipeline.sh packs only the train stage's provenance.json and profile.json, not its weights
        tar.add(root / "runs", "runs")
        tar.add(root / "reports", "reports")
    return tgz


def test_files_a_run_under_its_provenance_name(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("pipeline done\n")
    dest = save_run.save_run(pack(tmp_path), tmp_path / "results", [log])
    assert dest.name == FILED.name  # the name the committed folder was given by hand
    assert {f.name for f in dest.iterdir()} == {f.name for f in FILED.iterdir()} | {"train.provenance.json"}
    for f in FILED.iterdir():
        if f.name == "artifact.provenance.json":  # pack() rewrote it (same content, other layout)
            assert json.loads((dest / f.name).read_text()) == json.loads(f.read_text())
        elif f.name != "log.txt":
            assert (dest / f.name).read_bytes() == f.read_bytes(), f.name
    assert (dest / "log.txt").read_text() == "pipeline done\n"
    assert json.loads((dest / "train.provenance.json").read_text())["ssm_autotune"] == {"k": {"a": "b"}}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [FILED.name]  # no temp folder left


def test_a_profiled_run_keeps_its_profile(tmp_path):
    profile = {"steps": 20, "first_step": 250, "wall_ms_per_step": 119.0}
    dest = save_run.save_run(pack(tmp_path, profile=profile), tmp_path / "results")
    assert json.loads((dest / "train.profile.json").read_text()) == profile
    assert (dest / "train.provenance.json").is_file()


def test_extra_sets_go_into_the_name(tmp_path):
    tgz = pack(tmp_path, argv_extra=["--set", "model.layer_pattern=MMAMMAMMA", "--set", "ttt.lr=0.01"])
    dest = save_run.main([str(tgz), "--results", str(tmp_path / "results")])[0]
    assert dest.name == ("2026-11-29_c478e7a7_hybrid_12_b262k__model.layer_pattern=MMAMMAMMA__ttt.lr=0.01_240s"
                         "_seed42")


def test_bad_tarballs_and_an_existing_folder_are_errors(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(GolfError, match="exactly one seed, found 42, 1337"):
        save_run.save_run(pack(tmp_path, seeds_in_tar=(42, 1337), name="two.tgz"), results)
    with pytest.raises(GolfError, match="provenance.json is missing"):
        save_run.save_run(pack(tmp_path, drop_provenance=True, name="noprov.tgz"), results)
    with pytest.raises(GolfError, match="extra file"):
        save_run.save_run(pack(tmp_path, name="ok.tgz"), results, [tmp_path / "absent.txt"])
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(GolfError, match="not a readable run tarball"):
        save_run.save_run(evil, results)
    assert not (tmp_path / "escaped.txt").exists()
    (tmp_path / "junk.tgz").write_bytes(b"not gzip")
    with pytest.raises(GolfError, match="not a readable run tarball"):
        save_run.save_run(tmp_path / "junk.tgz", results)
    first = save_run.save_run(pack(tmp_path, name="first.tgz"), results)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    with pytest.raises(GolfError, match="already exists"):
        save_run.save_run(pack(tmp_path, name="again.tgz"), results)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # the filed run is untouched
    assert [p.name for p in results.iterdir()] == [first.name]
