"""One writer per run folder: a stage that writes runs/<seed>/ holds an exclusive lock on runs/<seed>/.lock.

The lock is fcntl.flock on an open file: the kernel releases it when the holder exits, however it exits
(SIGKILL included), so a lock file left behind by a dead process is never stale and is simply taken again.
A second process asking for a held lock fails at once with one line naming the folder and the holder.
Under torchrun only rank 0 locks (every rank of one launch is the same run, and rank 0 writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from golf.io import OutputError, check_writable

LOCK_FILE = ".lock"


class RunLockedError(OutputError):
    """Another process holds the run folder's lock."""


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path, stage: str) -> Iterator[None]:
    """Hold runs/<seed>/.lock for the body; RunLockedError when another process holds it."""
    run_dir = Path(run_dir)
    check_writable(run_dir, "run folder")
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunLockedError(f"run folder {str(run_dir)!r} is in use by {holder}; wait for it to finish "
                                 f"(or stop it) before running {stage} on this seed") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{stage} (pid {os.getpid()})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def locks_run_folder(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a stage's `run(params, seed, ...)`: check that runs/<seed>/ and its metrics/ are writable and
    hold the run folder's lock for the whole stage (rank 0 only under torchrun)."""
    from golf.launch import is_main_process

    stage = fn.__module__.rsplit(".", 1)[-1]

    @functools.wraps(fn)
    def run(params: Any, seed: int | None, *args: Any, **kwargs: Any) -> Any:
        if seed is None:  # an eval of an artifact given by path (--artifact): no run folder is written
            return fn(params, seed, *args, **kwargs)
        run_dir = params.run_dir(seed)  # also checks the seed
        if not is_main_process():
            return fn(params, seed, *args, **kwargs)
        with run_folder_lock(run_dir, stage):
            check_writable(run_dir / "metrics", "metrics folder")
            return fn(params, seed, *args, **kwargs)

    return run
