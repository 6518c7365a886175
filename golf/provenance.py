"""Provenance written beside every output: resolved config, git commit, a digest of the code that ran, library
versions, device, and the process-wide matmul settings (TF32, float32 matmul precision, deterministic algorithms)
in force.

    python -m golf.provenance find <code_sha256> [--max-count N]   # the commits whose code has that digest
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from golf.config import to_dict

_LIBRARIES = ("torch", "numpy", "sentencepiece", "mamba-ssm", "causal-conv1d", "flash-attn", "flash-attn-4",
              "triton", "safetensors", "dvc", "typer", "scipy")


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """HEAD commit and whether the tree had uncommitted changes; 'unknown' outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


# the code a stage runs: cli.py and the Python files under golf/ and stages/
CODE_PATHS = ("cli.py", "golf", "stages")
ROOT = Path(__file__).resolve().parents[1]


def _digest(files: list[tuple[str, bytes]]) -> str:
    """sha256 over (path, contents) pairs in path order, each path and length framed so no two trees collide."""
    h = hashlib.sha256()
    for path, data in sorted(files):
        h.update(f"{path}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _is_code(path: str) -> bool:
    return path.endswith(".py") and (path == "cli.py" or path.split("/", 1)[0] in CODE_PATHS[1:])


def code_digest(root: str | Path | None = None) -> str:
    """sha256 of the project's Python code as it is on disk (CODE_PATHS; cached bytecode aside). It names the code
    a run executed where git's record cannot: a copy of the tree whose .git is older than its files (the lent GPU
    machines' copies kept the session's first HEAD while the files moved on, so their runs named a stale commit,
    'dirty'). `find` gives the commits with a digest."""
    root = Path(root) if root is not None else ROOT
    files = []
    for top in CODE_PATHS:
        base = root / top
        paths = [base] if base.is_file() else sorted(base.rglob("*.py")) if base.is_dir() else []
        for f in paths:
            rel = f.relative_to(root).as_posix()
            if _is_code(rel) and "__pycache__" not in f.parts:
                files.append((rel, f.read_bytes()))
    return _digest(files)


def commit_digest(commit: str, cwd: str | Path | None = None) -> str:
    """code_digest of `commit`'s tracked code, read from git."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "--", *CODE_PATHS], cwd=cwd,
                           capture_output=True, text=True, timeout=60, check=True).stdout.split("\n")
    names = [n for n in names if _is_code(n)]
    files = [(n, subprocess.run(["git", "show", f"{commit}:{n}"], cwd=cwd, capture_output=True, timeout=60,
                                check=True).stdout) for n in names]
    return _digest(files)


def find_commits(digest: str, max_count: int = 200, cwd: str | Path | None = None) -> list[str]:
    """The commits among HEAD's last max_count whose code has `digest` (newest first). Most commits leave the code
    as it was (results, docs): the digest is computed once per distinct set of CODE_PATHS' git objects."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True).stdout

    by_objects: dict[str, str] = {}
    found = []
    for c in git("rev-list", f"--max-count={max_count}", "HEAD").split():
        objects = git("ls-tree", c, "--", *CODE_PATHS)  # cli.py's blob, golf's and stages' tree ids
        if objects not in by_objects:
            by_objects[objects] = commit_digest(c, cwd)
        if by_objects[objects] == digest:
            found.append(c)
    return found


def commit_label(git: dict[str, Any]) -> str:
    """A git_commit() record as a short label: the first 12 hex digits, '+dirty' for uncommitted changes;
    'unknown' outside a git checkout."""
    commit = str(git.get("commit") or "unknown")
    return "unknown" if commit == "unknown" else commit[:12] + ("+dirty" if git.get("dirty") else "")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "machine": platform.machine(),
                            "python": sys.version.split()[0]}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            info["cuda_devices"] = []
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return info


def collect(stage: str, config: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to trace an output back: stage, config, code version, libraries, device, the matmul
    settings in force when it is called (a stage that changes them for its own work, as train does, passes
    the ones it used in `extra`)."""
    from golf.runtime import matmul_settings

    prov: dict[str, Any] = {
        "stage": stage,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "code_sha256": code_digest(),
        "versions": library_versions(),
        "device": device_info(),
        "matmul": matmul_settings(),
        "argv": sys.argv,
    }
    if config is not None:
        prov["config"] = to_dict(config) if hasattr(config, "__dataclass_fields__") else config
    if extra:
        prov.update(extra)
    return prov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf.provenance", description="which commits have a run's code")
    sub = ap.add_subparsers(dest="cmd", required=True)
    find = sub.add_parser("find", help="the commits whose code has a provenance.json's code_sha256")
    find.add_argument("digest", help="code_sha256 from a provenance.json (64 hex digits)")
    find.add_argument("--max-count", type=int, default=200, help="how many commits back from HEAD (default 200)")
    a = ap.parse_args(argv)
    if len(a.digest) != 64 or any(c not in "0123456789abcdef" for c in a.digest):
        ap.error(f"digest must be 64 lowercase hex digits (a provenance.json's code_sha256), got {a.digest!r}")
    if a.max_count < 1:
        ap.error(f"--max-count must be a positive integer, got {a.max_count}")
    try:
        found = find_commits(a.digest, a.max_count, ROOT)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"error: git could not list {ROOT}'s commits: {e}", file=sys.stderr)
        return 2
    if not found:
        print(f"no commit among HEAD's last {a.max_count} has that code (the run's tree had uncommitted changes, "
              "or its commit is older)")
        return 1
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
