"""Progress bars with an ETA, plain periodic lines where there is no terminal, and a plain-text log per stage.

A stage shows its loops through `bars()`:

    with progress.bars(f"eval seed {seed}", enabled=is_main) as bar:
        tick = bar.tracker("sliding windows")       # tick(done, total) once per batch
        eval_bpb(..., progress=tick)
        bar.note("final validation")                # a phase change: shown on the bar and logged

On a terminal (stderr is a tty) that is a rich bar per tracker (done/total, elapsed, ETA). Without one (CI, DVC,
a pipe) rich's live display would print nothing useful until the end, so each tracker prints a plain line
instead every `PLAIN_FRACTION` of its total or every `PLAIN_INTERVAL_S` seconds, whichever comes first.

The log: `stage_log(path, command)` appends a header line (UTC time, command, git commit) to `path` and, while
it is open, every plain progress line, note and `log()` line is appended there too (terminal or not). Logs live
outside the DVC output folders (`log_path`): DVC deletes a stage's outputs before rerunning it, which would
lose the earlier runs' lines, and a log inside an output would change its hash and rerun every later stage.
`note()` at module level reaches the innermost open `bars()`, so library code (golf/train.py) can say what
phase it is in without being handed a callback.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Self

PLAIN_FRACTION = 0.10  # without a terminal: a line every 10% of a tracker's total ...
PLAIN_INTERVAL_S = 30.0  # ... or every 30 s, whichever comes first

_logs: list[StageLog] = []  # open stage logs, innermost last
_bars: list[Bars] = []  # open bar groups, innermost last


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fmt_duration(seconds: float | None) -> str:
    """12s, 3m05s, 1h02m; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_s(fraction: float, elapsed_s: float) -> float | None:
    """Remaining seconds at a constant rate: elapsed × (1 − f) / f; None before any progress."""
    if fraction <= 0:
        return None
    return elapsed_s * (1.0 - min(fraction, 1.0)) / fraction


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def log_path(params: Any, stage: str, seed: int | None = None) -> Path:
    """Where a stage's log goes: runs/<seed>/logs/<stage>.log for per-seed stages, logs/<stage>.log for
    prepare and report (beside metrics/prepare.json and reports/, outside DVC's output folders)."""
    if seed is None:
        return Path("logs") / f"{stage}.log"
    return Path(params.run_dir(seed)) / "logs" / f"{stage}.log"


def _commit() -> str:
    from golf.provenance import commit_label, git_commit

    return commit_label(git_commit(Path(__file__).resolve().parent))


class StageLog:
    """Append-only plain-text log of one stage run (lines are flushed as they are written, so a killed run
    keeps what it logged)."""

    def __init__(self, path: Path, command: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._f.write(f"=== {_now_utc()}  {command}  commit {_commit()}\n")
        self._f.flush()

    def write(self, line: str) -> None:
        if not self._f.closed:
            self._f.write(f"{_now_utc()} {line}\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


@contextlib.contextmanager
def stage_log(path: str | Path | None, command: str | None = None) -> Iterator[StageLog | None]:
    """Open a stage's log (None: no log) for the duration of the block; an error escaping the block is
    logged as one line before it propagates."""
    if path is None:
        yield None
        return
    log = StageLog(Path(path), command or shlex.join(["golf", *sys.argv[1:]]))
    _logs.append(log)
    t0 = time.time()
    try:
        yield log
    except BaseException as e:
        log.write(f"failed after {fmt_duration(time.time() - t0)}: {type(e).__name__}: {e}")
        raise
    else:
        log.write(f"done in {fmt_duration(time.time() - t0)}")
    finally:
        _logs.remove(log)
        log.close()


def log(line: str) -> None:
    """Append a line to the innermost open stage log (no-op without one)."""
    if _logs:
        _logs[-1].write(line)


def note(text: str) -> None:
    """Tell the innermost open bar group (and the log) which phase the stage is in; no-op without one."""
    if _bars:
        _bars[-1].note(text)
    else:
        log(text)


class Tracker:
    """One loop's progress: call it as tracker(done, total) or tracker.update(done, total, info)."""

    def __init__(self, group: Bars, name: str, total: float | None):
        self.group, self.name, self.total = group, name, total
        self.done = 0.0
        self.info = ""
        self.t0 = time.monotonic()
        self._last_line_t = self.t0
        self._last_line_frac = 0.0
        self._task = group._rich.add_task(name, total=total, info="") if group._rich is not None else None

    def __call__(self, done: float, total: float | None = None) -> None:
        self.update(done, total)

    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    def line(self) -> str:
        """The plain progress line: label, share done, count, elapsed, ETA, extra info."""
        elapsed = time.monotonic() - self.t0
        frac = self.fraction()
        parts = [f"{self.group.label} {self.name}:"]
        if frac is None:
            parts.append(f"{self.done:g} done")
        else:
            parts.append(f"{100 * frac:3.0f}%")
            if self.total and self.total != 1.0:
                parts.append(f"({self.done:g}/{self.total:g})")
        parts.append(f"elapsed {fmt_duration(elapsed)}")
        if frac is not None and frac < 1.0:
            parts.append(f"ETA {fmt_duration(eta_s(frac, elapsed))}")
        if self.info:
            parts.append(self.info)
        return " ".join(parts)

    def update(self, done: float, total: float | None = None, info: str | None = None) -> None:
        with self.group.lock:
            self._update(done, total, info)

    def _update(self, done: float, total: float | None, info: str | None) -> None:
        self.done = float(done)
        if total is not None:
            self.total = total
        if info is not None:
            self.info = info
        if self._task is not None:
            self.group._rich.update(self._task, completed=self.done, total=self.total, info=self.info)
        now = time.monotonic()
        frac = self.fraction()
        finished = frac is not None and frac >= 1.0
        due = (now - self._last_line_t >= self.group.interval_s
               or (frac is not None and frac - self._last_line_frac >= self.group.fraction_step - 1e-9) or finished)
        if due and not (finished and self._last_line_frac >= 1.0):
            self._last_line_t, self._last_line_frac = now, frac if frac is not None else 0.0
            self.group._plain(self.line())


class Bars:
    """A group of trackers shown together (see the module doc)."""

    def __init__(self, label: str, enabled: bool = True, stream: IO | None = None, terminal: bool | None = None,
                 interval_s: float = PLAIN_INTERVAL_S, fraction_step: float = PLAIN_FRACTION):
        self.label, self.enabled = label, enabled
        self.stream = sys.stderr if stream is None else stream
        self.terminal = (is_terminal(self.stream) and not environment_says_plain()) if terminal is None else terminal
        self.interval_s, self.fraction_step = interval_s, fraction_step
        self.lock = threading.Lock()  # trackers may be updated from worker threads (package's compressors)
        self._rich = None
        if enabled and self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._rich = Progress(TextColumn(f"[bold]{_escape(label)}[/bold] {{task.description}}"), BarColumn(),
                                  _count_column(), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                  console=Console(file=self.stream))

    def tracker(self, name: str, total: float | None = None) -> Tracker:
        return Tracker(self, name, total)

    def note(self, text: str) -> None:
        """A phase change (e.g. 'compiling', 'final validation'): printed above the bars and logged."""
        line = f"{self.label}: {text}"
        if self.enabled:
            log(line)
            if self._rich is not None:
                self._rich.console.print(_escape(line), highlight=False)
            else:
                print(line, file=self.stream, flush=True)

    def _plain(self, line: str) -> None:
        if not self.enabled:
            return
        log(line)
        if self._rich is None:
            print(line, file=self.stream, flush=True)

    def __enter__(self) -> Self:
        if self._rich is not None:
            self._rich.start()
        _bars.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _bars.remove(self)
        if self._rich is not None:
            self._rich.stop()


def counted(batches: Iterable[Any], total: int, tick: Callable[[int, int], None]) -> Iterator[Any]:
    """Yield the batches (B, ...) unchanged, calling tick(rows done, total) after the consumer is done with each
    one (so a lazily produced batch counts once it has been used)."""
    done = 0
    tick(0, total)
    for batch in batches:
        yield batch
        done += len(batch)
        tick(done, total)


def bars(label: str, enabled: bool = True, **kw: Any) -> Bars:
    return Bars(label, enabled, **kw)


def _count_column():  # a rich column class built lazily: rich is imported only with a terminal
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """done/total for counted loops, a percentage for a [0, 1] budget."""

        def render(self, task) -> Text:
            if task.total is None:
                return Text(f"{task.completed:g}")
            if task.total == 1.0:
                return Text(f"{100 * task.completed:3.0f}%")
            return Text(f"{task.completed:g}/{task.total:g}")

    return CountColumn()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def environment_says_plain() -> bool:
    """GOLF_PROGRESS=plain forces plain lines even on a terminal (e.g. to keep a screen recording readable)."""
    return os.environ.get("GOLF_PROGRESS", "").lower() == "plain"
