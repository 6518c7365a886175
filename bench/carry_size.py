"""What a device call would carry, before making it: the working tree that travels (tracked files and untracked
files git does not ignore) plus the ignored paths named in `carry`, in bytes as the files say and as the disk
holds them. The device refuses a call over 64 MiB. On 2026-12-01 it refused a call whose files came to 63.0 MiB
but took 66.0 MiB on disk (RESULTS ninth block), so the on-disk figure is the one this checks.

    python bench/carry_size.py .carry/corpus .carry/tok       # exit 1 when over the limit
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 64 * 2**20


def travelling_files(repo: Path) -> list[Path]:
    """Tracked files and untracked files that git does not ignore, as paths under `repo`."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return [repo / p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def carried_files(repo: Path, carry: list[str]) -> list[Path]:
    """Every file under each carry path (a file or a folder, relative to `repo`)."""
    files: list[Path] = []
    for c in carry:
        path = repo / c
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file())
        else:
            raise SystemExit(f"error: carry path {c!r} is neither a file nor a folder under {repo}")
    return files


def sizes(files: list[Path]) -> tuple[int, int]:
    """(bytes as the files say, bytes the disk holds for them)."""
    apparent = disk = 0
    for f in files:
        st = os.stat(f)
        apparent += st.st_size
        disk += st.st_blocks * 512
    return apparent, disk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("carry", nargs="*", help="the paths the call would name in carry, relative to the repo")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args(argv)
    tree = travelling_files(args.repo)
    tree_set = set(tree)
    carried = [f for f in carried_files(args.repo, args.carry) if f not in tree_set]
    mib = 2**20
    rows = [("tree", *sizes(tree)), ("carry", *sizes(carried))]
    total_apparent, total_disk = sum(r[1] for r in rows), sum(r[2] for r in rows)
    for name, apparent, disk in rows + [("total", total_apparent, total_disk)]:
        print(f"{name:>5}: {apparent / mib:6.1f} MiB in the files, {disk / mib:6.1f} MiB on disk")
    if total_disk > LIMIT_BYTES:
        print(f"over the device's 64-MiB carry limit by {(total_disk - LIMIT_BYTES) / mib:.1f} MiB on disk: "
              "carry less, or part of it in an earlier call on the same warm machine", file=sys.stderr)
        return 1
    print(f"fits, {(LIMIT_BYTES - total_disk) / mib:.1f} MiB to spare on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
