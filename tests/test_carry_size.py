"""bench/carry_size.py: what a device call would carry (the travelling tree plus the carry paths), in bytes and on
disk, and a refusal when the on-disk total passes the device's 64-MiB limit."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("carry_size", ROOT / "bench" / "carry_size.py")
carry_size = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry_size)


@pytest.fixture
def repo(tmp_path):
    """A git repo with a tracked file, an untracked file git does not ignore, and an ignored folder."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/big/\n")
    (tmp_path / "tracked.txt").write_bytes(b"t" * 10_000)
    subprocess.run(["git", "-C", str(tmp_path), "add", ".gitignore", "tracked.txt"], check=True)
    (tmp_path / "loose.txt").write_bytes(b"u" * 5_000)
    (tmp_path / "big" / "sub").mkdir(parents=True)
    (tmp_path / "big" / "a.bin").write_bytes(b"a" * 300_000)
    (tmp_path / "big" / "sub" / "b.bin").write_bytes(b"b" * 200_000)
    return tmp_path


def test_the_tree_travels_and_ignored_files_only_when_carried(repo):
    tree = carry_size.travelling_files(repo)
    assert sorted(p.name for p in tree) == [".gitignore", "loose.txt", "tracked.txt"]
    carried = carry_size.carried_files(repo, ["big"])
    assert sorted(p.name for p in carried) == ["a.bin", "b.bin"]
    assert carry_size.carried_files(repo, ["big/sub/b.bin"]) == [repo / "big" / "sub" / "b.bin"]
    assert carry_size.sizes(carried)[0] == 500_000


def test_sizes_count_what_the_disk_holds(tmp_path):
    """A file of one byte takes a whole block on disk; a sparse file of 4 MiB with nothing written takes almost
    none: the on-disk figure is the blocks, the other the lengths."""
    one, sparse = tmp_path / "one", tmp_path / "sparse"
    one.write_bytes(b"x")
    with open(sparse, "wb") as f:
        f.truncate(4 * 2**20)
    apparent, disk = carry_size.sizes([one])
    assert apparent == 1 and disk >= 512
    apparent, disk = carry_size.sizes([sparse])
    assert apparent == 4 * 2**20 and disk < 2**20


def test_main_fits_or_refuses_by_the_on_disk_total(repo, capsys, monkeypatch):
    assert carry_size.main(["big", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "carry:" in out and "fits," in out
    monkeypatch.setattr(carry_size, "LIMIT_BYTES", 400_000)
    assert carry_size.main(["big", "--repo", str(repo)]) == 1
    assert "over the device's 64-MiB carry limit" in capsys.readouterr().err
    assert carry_size.main(["--repo", str(repo)]) == 0  # the tree alone fits
    with pytest.raises(SystemExit, match="carry path 'nope' is neither a file nor a folder"):
        carry_size.main(["nope", "--repo", str(repo)])
