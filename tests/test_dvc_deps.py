"""dvc.yaml's code deps are derived from the imports (golf/dvc_deps.py) and fail here when they drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from golf import dvc_deps, package

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_match_the_imports():
    bad = dvc_deps.drift(REPO)
    assert bad == {}, f"dvc.yaml code deps drifted (fix: python -m golf.dvc_deps --write): {bad}"


def test_every_stage_lists_its_own_module_and_the_known_ones():
    listed = dvc_deps.read_dvc_deps(REPO)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(listed) == set(stages)  # every stage has a deps list the parser found
    for stage, deps in listed.items():
        assert f"stages/{stage}.py" in deps
    # the drift issue 24 found: prepare's own module, and the eval code the package stage copies
    assert "golf/prepare.py" in listed["prepare"]
    assert {"golf/evaluate.py", "golf/ttt.py"} <= set(listed["package"])
    artifact = {str(p.relative_to(REPO)) for p in package.code_files()}
    assert artifact <= set(listed["package"])


def _tree(tmp_path: Path) -> Path:
    files = {
        "golf/a.py": "from golf.b import thing\n",
        "golf/b.py": "def thing():\n    from . import c  # a lazy, relative import counts too\n",
        "golf/c.py": "import os\n",
        "golf/unused.py": "",
        "stages/__init__.py": "",  # empty: not a dep (DVC warns about empty deps)
        "golf/__init__.py": '"""pkg"""\n',
        "stages/one.py": "from golf import a\nimport numpy\n",
        "stages/two.py": "import golf.c\n",
        "dvc.yaml": ("# a comment that must survive\nstages:\n  one:\n    cmd: python cli.py one\n    deps:\n"
                     "      - data/x\n      - stages/one.py\n      - golf/unused.py\n    outs:\n      - out1\n\n"
                     "  two:\n    cmd: python cli.py two  # inline comment\n    deps:\n      - stages/two.py\n"
                     "      - golf/__init__.py\n      - golf/c.py\n"),
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_closure_follows_transitive_lazy_and_relative_imports(tmp_path):
    root = _tree(tmp_path)
    assert dvc_deps.derived_deps(root) == {
        "one": ["golf/__init__.py", "golf/a.py", "golf/b.py", "golf/c.py", "stages/one.py"],
        "two": ["golf/__init__.py", "golf/c.py", "stages/two.py"],
    }


def test_check_reports_drift_and_write_fixes_it_keeping_the_rest(tmp_path, capsys):
    root = _tree(tmp_path)
    assert dvc_deps.drift(root) == {
        "one": {"missing": ["golf/__init__.py", "golf/a.py", "golf/b.py", "golf/c.py"], "extra": ["golf/unused.py"]},
    }
    assert dvc_deps.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "one: missing golf/a.py" in out and "one: extra golf/unused.py" in out
    assert dvc_deps.main(["--write", "--root", str(root)]) == 0
    assert dvc_deps.main(["--check", "--root", str(root)]) == 0
    text = (root / "dvc.yaml").read_text()
    assert text.startswith("# a comment that must survive\n") and "cmd: python cli.py two  # inline comment" in text
    parsed = yaml.safe_load(text)["stages"]
    assert parsed["one"]["deps"][0] == "data/x"  # a data dep is kept, first
    assert parsed["one"]["outs"] == ["out1"]
    assert "golf/unused.py" not in parsed["one"]["deps"]
    assert dvc_deps.main(["--write", "--root", str(root)]) == 0  # idempotent
    assert (root / "dvc.yaml").read_text() == text


def test_a_stage_without_its_module_is_an_error(tmp_path):
    root = _tree(tmp_path)
    (root / "stages" / "two.py").unlink()
    with pytest.raises(dvc_deps.GolfError, match="stages/two.py"):
        dvc_deps.derived_deps(root)
    assert dvc_deps.main(["--check", "--root", str(root)]) == 2
