"""Atomic file output: every stage output is written to a temp file in the same folder, then renamed.

A kill at any point leaves either the old file or the complete new one, never a truncated file that a
later stage would accept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from golf.errors import GolfError

# A folder golf writes as a whole (export --out, data/<name>/) holds this file, so a later run may replace
# it; a non-empty folder without it is the user's and is never replaced.
OUTPUT_MARKER = ".golf_output"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(GolfError):
    """An output folder that golf must not replace, cannot write, or a disk that filled up while writing."""


def _no_space(e: OSError, path: Path) -> OutputError:
    return OutputError(f"no space left writing {str(path)!r} ({os.strerror(e.errno)}); nothing was replaced "
                       "and the partial file was removed")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync and rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno in _NO_SPACE:
            raise _no_space(e, path) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Strict JSON: NaN and infinities are refused (they are not JSON, and a NaN metric is a failed run)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    except ValueError as e:
        raise OutputError(f"refusing to write {str(path)!r}: a value is not a finite number ({e})") from None
    write_text_atomic(path, text + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success replace `path` with it as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in _NO_SPACE:
            raise _no_space(e, path) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(path: str | Path, what: str, recognised: tuple[str, ...] = ()) -> None:
    """Refuse to replace `path` unless it is absent, empty, or an earlier output of golf: a folder holding
    OUTPUT_MARKER (or one of `recognised`, files only golf's own output of this kind holds). `what` names
    the setting or option that chose the path."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{what} {str(path)!r} exists and is not a folder; golf replaces only folders it wrote")
    if (path / OUTPUT_MARKER).is_file() or any((path / r).is_file() for r in recognised):
        return
    if any(path.iterdir()):
        raise OutputError(f"{what} {str(path)!r} is a non-empty folder that golf did not write; refusing to "
                          "replace it (choose a new or empty folder)")


def mark_output(folder: str | Path, what: str) -> None:
    """Write OUTPUT_MARKER into a folder golf is writing as a whole, so that a later run may replace it."""
    write_json_atomic(Path(folder) / OUTPUT_MARKER, {"written_by": "golf", "what": what})


def check_writable(folder: str | Path, what: str) -> None:
    """Fail in one line now, before a long computation, when `folder` cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write_probe."):
            pass
    except OSError as e:
        raise OutputError(f"{what} {str(folder)!r} is not writable ({e.strerror or e}); nothing was "
                          "computed") from None


def read_json(path: str | Path, what: str = "JSON file", error: type[Exception] = ValueError,
              hint: str = "") -> Any:
    """Parse a JSON file; a missing, undecodable or invalid file raises `error` naming the file, followed by
    `hint` (what to do about it) when given."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} not found{hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {str(path)!r} is not valid JSON: {e}{hint}") from None
