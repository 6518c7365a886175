"""golf/provenance.py's code digest: what it covers, that git's copy of a commit gives the same digest as its files
on disk, and `python -m golf.provenance find` naming the commit a run's code came from."""

import subprocess

import pytest

from golf import provenance


def _tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


CODE = {"cli.py": "print('cli')\n", "golf/a.py": "A = 1\n", "golf/sub/b.py": "B = 2\n", "stages/s.py": "S = 3\n"}


def test_code_digest_covers_the_code_and_nothing_else(tmp_path):
    _tree(tmp_path, CODE)
    first = provenance.code_digest(tmp_path)
    _tree(tmp_path, {"golf/demo.jsonl": "{}\n", "golf/__pycache__/a.cpython-312.py": "x\n", "tests/t.py": "T\n",
                     "README.md": "r\n"})
    assert provenance.code_digest(tmp_path) == first  # data, bytecode caches, tests and docs are not the code
    for rel, text in CODE.items():
        _tree(tmp_path, {rel: text + "# changed\n"})
        assert provenance.code_digest(tmp_path) != first, rel
        _tree(tmp_path, {rel: text})
    assert provenance.code_digest(tmp_path) == first
    (tmp_path / "golf/a.py").rename(tmp_path / "golf/c.py")  # same bytes under another name
    assert provenance.code_digest(tmp_path) != first


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_commits_digest_matches_its_files_and_find_names_it(tmp_path, monkeypatch, capsys):
    _tree(tmp_path, CODE)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "one")
    first, first_digest = _git(tmp_path, "rev-parse", "HEAD"), provenance.code_digest(tmp_path)
    _tree(tmp_path, {"golf/a.py": "A = 10\n"})
    _git(tmp_path, "commit", "-qam", "two")
    second = _git(tmp_path, "rev-parse", "HEAD")
    assert provenance.commit_digest(first, tmp_path) == first_digest
    assert provenance.commit_digest(second, tmp_path) == provenance.code_digest(tmp_path) != first_digest
    assert provenance.find_commits(first_digest, cwd=tmp_path) == [first]
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    assert provenance.main(["find", first_digest]) == 0
    assert capsys.readouterr().out.split() == [first]
    assert provenance.main(["find", "0" * 64]) == 1
    assert "no commit among HEAD's last 200 has that code" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["find", "abc"], "digest must be 64 lowercase hex digits (a provenance.json's code_sha256), got 'abc'"),
    (["find", "0" * 64, "--max-count", "0"], "--max-count must be a positive integer, got 0"),
])
def test_find_refuses_bad_input_in_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit):
        provenance.main(argv)
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(expected)


def test_provenance_records_the_code_digest():
    assert provenance.collect("x")["code_sha256"] == provenance.code_digest()
