"""dvc.yaml's code dependencies, derived from the code: `python -m golf.dvc_deps --check` / `--write`.

A DVC stage reruns only when a listed dependency changes, so a module the stage runs but dvc.yaml does not
list leaves stale outputs that DVC calls up to date. Here a stage's code dependencies are:

  * stages/<stage>.py and every module of golf/ (or stages/) it imports, followed transitively through the
    source (parsed with ast, never imported: imports inside functions count too, so the set is a superset
    of what one run executes); empty files (a bare package __init__.py) are left out;
  * for the package stage, the files it copies into the artifact (golf.package.code_files(), the
    evaluation code counted in the size), and what those import.

`--check` compares them with the code entries (stages/*.py, golf/*.py) of each stage's `deps:` in dvc.yaml
and exits 1 listing every missing or extra file; `--write` rewrites those entries in place (other deps,
such as data folders, and every comment stay as they are). cli.py is not a dependency: it only dispatches to
stages/<stage>.py, and listing it would rerun every stage for a new command or help text.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from golf.errors import GolfError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("golf", "stages")  # the project's own import roots, folders of REPO
_CODE_DEP = re.compile(r"^(golf|stages)/[A-Za-z0-9_]+\.py$")


def _module_path(root: Path, dotted: str) -> Path | None:
    """golf.x -> root/golf/x.py (or the package's __init__.py); None when not one of the project's modules."""
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(root: Path, path: Path) -> set[Path]:
    """The project's modules that `path` imports (absolute or relative, at any depth of the file)."""
    rel = path.relative_to(root)
    package = list(rel.parent.parts)  # golf/x.py -> ["golf"]; golf/__init__.py -> ["golf"]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y, relative to this file's package
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                mod = node.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]  # `from golf import x` imports module golf.x
    found: set[Path] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing golf.x.y also runs golf/__init__.py and golf/x
            p = _module_path(root, ".".join(parts[:i]))
            if p is not None:
                found.add(p)
    return found


def import_closure(root: Path, start: list[Path]) -> set[Path]:
    """The files in `start` and every project module they import, transitively."""
    todo, seen = [Path(p) for p in start], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise GolfError(f"dvc deps: {path} is imported or listed but does not exist")
        seen.add(path)
        todo += sorted(_imports(root, path) - seen)
    return seen


def _artifact_code(root: Path) -> list[Path]:
    """The files the package stage copies into the artifact, as golf/package.py lists them."""
    if root.resolve() != REPO:
        return []  # another tree (a test's): its own package module is not importable from here
    from golf import package

    return [Path(p) for p in package.code_files()]


def derived_deps(root: Path = REPO, stages: list[str] | None = None) -> dict[str, list[str]]:
    """{stage: sorted code files (relative to root)} for every stage of dvc.yaml (or the ones named)."""
    root = Path(root).resolve()
    out = {}
    for stage in stages if stages is not None else list(read_dvc_deps(root)):
        entry = root / "stages" / f"{stage}.py"
        if not entry.is_file():
            raise GolfError(f"dvc.yaml stage {stage!r}: expected its code in {entry}, which does not exist")
        start = [entry] + (_artifact_code(root) if stage == "package" else [])
        if (root / "stages" / "__init__.py").is_file():  # cli.py imports it as stages.<stage>
            start.append(root / "stages" / "__init__.py")
        # an empty file (a bare package __init__) runs nothing, and DVC warns about empty deps at every stage
        out[stage] = sorted(str(p.resolve().relative_to(root)) for p in import_closure(root, start)
                            if p.stat().st_size > 0)
    return out


# --------------------------------------------------------------------------------------------------
# dvc.yaml, read and rewritten as text so that its comments and layout survive
# --------------------------------------------------------------------------------------------------

_STAGE = re.compile(r"^  ([A-Za-z0-9_]+):\s*(#.*)?$")
_KEY = re.compile(r"^    ([A-Za-z0-9_]+):")
_ITEM = re.compile(r"^      - (\S+?)\s*(#.*)?$")


def _deps_blocks(lines: list[str]) -> dict[str, tuple[int, int]]:
    """{stage: (first, end) line indices of its `deps:` list items} in dvc.yaml's `stages:` mapping."""
    blocks, stage, in_stages, i = {}, None, False, 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^\S", line):
            in_stages = line.startswith("stages:")
            stage = None
        elif in_stages and _STAGE.match(line):
            stage = _STAGE.match(line).group(1)
        elif in_stages and stage and _KEY.match(line) and _KEY.match(line).group(1) == "deps":
            j = i + 1
            while j < len(lines) and (_ITEM.match(lines[j]) or not lines[j].strip()):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # trailing blank lines belong to what follows
                j -= 1
            blocks[stage] = (i + 1, j)
            i = j
            continue
        i += 1
    return blocks


def read_dvc_deps(root: Path = REPO) -> dict[str, list[str]]:
    """{stage: every entry of its deps list} as written in root/dvc.yaml."""
    path = Path(root) / "dvc.yaml"
    if not path.is_file():
        raise GolfError(f"dvc deps: {path} not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    return {stage: [_ITEM.match(line).group(1) for line in lines[a:b] if line.strip()]
            for stage, (a, b) in _deps_blocks(lines).items()}


def drift(root: Path = REPO) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": [...], "extra": [...]}} for stages whose listed code deps differ from the derived."""
    listed, derived = read_dvc_deps(root), derived_deps(root)
    out = {}
    for stage, deps in listed.items():
        code = {d for d in deps if _CODE_DEP.match(d)}
        missing, extra = sorted(set(derived[stage]) - code), sorted(code - set(derived[stage]))
        if missing or extra:
            out[stage] = {"missing": missing, "extra": extra}
    return out


def write(root: Path = REPO) -> list[str]:
    """Rewrite the code entries of every stage's deps in root/dvc.yaml; return the stages changed."""
    from golf.io import write_text_atomic

    path = Path(root) / "dvc.yaml"
    derived = derived_deps(root)
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = []
    for stage, (a, b) in sorted(_deps_blocks(lines).items(), key=lambda kv: -kv[1][0]):  # bottom up
        kept = [line for line in lines[a:b] if line.strip() and not _CODE_DEP.match(_ITEM.match(line).group(1))]
        new = kept + [f"      - {d}" for d in derived[stage]]
        if new != lines[a:b]:
            lines[a:b] = new
            changed.append(stage)
    if changed:
        write_text_atomic(path, "\n".join(lines) + "\n")
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf.dvc_deps", description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps drifted")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps from the code")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    try:
        if args.write:
            changed = write(args.root)
            print(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed
                  else "dvc.yaml: code deps already match the code")
            return 0
        bad = drift(args.root)
    except GolfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for stage, d in bad.items():
        for f in d["missing"]:
            print(f"{stage}: missing {f} (the stage runs it)")
        for f in d["extra"]:
            print(f"{stage}: extra {f} (the stage does not import it)")
    if bad:
        print("dvc.yaml's code deps drifted: run `python -m golf.dvc_deps --write`", file=sys.stderr)
        return 1
    print("dvc.yaml: code deps match the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
