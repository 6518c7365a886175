"""golf/progress.py: plain progress lines without a terminal (every ~10% or 30 s), the rich bar on one, the
stage log (header, lines, appended per run, failures) and phase notes from library code."""

from __future__ import annotations

import io
import re

import pytest

from golf import progress


def test_plain_lines_every_tenth_with_eta_and_a_final_line():
    out = io.StringIO()
    with progress.bars("eval seed 1", terminal=False, stream=out, interval_s=3600) as bar:
        tick = bar.tracker("windows")
        for done in range(1, 201):
            tick(done, 200)
    lines = out.getvalue().splitlines()
    # one line per 10% crossed (20 updates each), the last being 100%: ten lines, not 200
    assert len(lines) == 10, lines
    assert lines[0].startswith("eval seed 1 windows:  10% (20/200) elapsed ") and "ETA " in lines[0]
    assert lines[-1].startswith("eval seed 1 windows: 100% (200/200) elapsed ") and "ETA" not in lines[-1]
    pcts = [int(re.search(r"(\d+)%", line).group(1)) for line in lines]
    assert pcts == sorted(pcts) and pcts[-1] == 100


def test_plain_lines_also_come_on_a_timer():
    out = io.StringIO()
    with progress.bars("train seed 1", terminal=False, stream=out, interval_s=0.0, fraction_step=2.0) as bar:
        t = bar.tracker("budget", total=1.0)
        for i in range(5):
            t.update(i / 100, info=f"step {i}")  # 4% in all: only the timer (0 s here) makes lines
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].endswith("step 4") and "ETA" in lines[-1]


def test_disabled_bars_print_and_log_nothing(tmp_path):
    out = io.StringIO()
    with (progress.stage_log(tmp_path / "x.log", "golf x"),
          progress.bars("rank 1", enabled=False, terminal=False, stream=out) as bar):
        bar.tracker("t")(5, 5)
        bar.note("phase")
    assert out.getvalue() == ""
    assert "rank 1" not in (tmp_path / "x.log").read_text()


def test_terminal_mode_draws_a_rich_bar_and_still_logs_plain_lines(tmp_path):
    out = io.StringIO()
    with (progress.stage_log(tmp_path / "s.log", "golf s"),
          progress.bars("quantize seed 3", terminal=True, stream=out) as bar):
        tick = bar.tracker("weights")
        for done in range(0, 101, 25):
            tick(done, 100)
    assert "quantize seed 3" in out.getvalue() and "weights" in out.getvalue()
    assert "quantize seed 3 weights:" not in out.getvalue()  # the bar, not the plain lines, went to the stream
    assert "quantize seed 3 weights: 100% (100/100)" in (tmp_path / "s.log").read_text()


def test_stage_log_appends_a_header_per_run_and_records_failures(tmp_path):
    path = tmp_path / "runs" / "1" / "logs" / "train.log"
    with progress.stage_log(path, "golf train --seed 1"):
        progress.log("hello")
    with pytest.raises(ValueError, match="boom"), progress.stage_log(path, "golf train --seed 1 --set x=2"):
        raise ValueError("boom")
    text = path.read_text().splitlines()
    headers = [line for line in text if line.startswith("=== ")]
    assert len(headers) == 2
    assert re.match(r"=== \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  golf train --seed 1  commit (\w{12}(\+dirty)?|unknown)$",
                    headers[0]), headers[0]
    assert headers[1].split("  ")[1] == "golf train --seed 1 --set x=2"
    assert text[1].endswith(" hello") and re.search(r" done in \d+s$", text[2])
    assert re.search(r" failed after \d+s: ValueError: boom$", text[-1])
    progress.log("no log is open now")  # a no-op
    assert "no log is open now" not in path.read_text()


def test_note_reaches_the_innermost_bars_and_the_log(tmp_path):
    out = io.StringIO()
    with progress.stage_log(tmp_path / "t.log", "golf train"):
        progress.note("before any bar")  # logged only
        with progress.bars("train seed 2", terminal=False, stream=out):
            progress.note("final validation after step 6")
    assert out.getvalue() == "train seed 2: final validation after step 6\n"
    log = (tmp_path / "t.log").read_text()
    assert " before any bar\n" in log and " train seed 2: final validation after step 6\n" in log


def test_counted_passes_batches_through_and_counts_rows():
    seen = []
    batches = [[1, 2], [3, 4], [5]]
    out = list(progress.counted(iter(batches), 5, lambda d, t: seen.append((d, t))))
    assert out == batches and seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_eta_and_durations():
    assert progress.eta_s(0.25, 10.0) == pytest.approx(30.0)
    assert progress.eta_s(0.0, 10.0) is None
    assert [progress.fmt_duration(s) for s in (None, float("nan"), 5, 65, 3725)] == ["?", "?", "5s", "1m05s",
                                                                                   "1h02m"]


def test_log_paths_sit_outside_the_dvc_output_folders(tiny_env):
    _, params, _ = tiny_env
    assert progress.log_path(params, "train", 3) == params.run_dir(3) / "logs" / "train.log"
    assert str(progress.log_path(params, "prepare")) == "logs/prepare.log"


def test_prepare_shows_its_phases_and_a_tokenizing_bar(tmp_path, capsys):
    from golf.config import load_params
    from golf.prepare import prepare
    from tests.conftest import REPO, demo_docs, tiny_overrides, write_jsonl

    corpus = write_jsonl(tmp_path / "corpus.jsonl", demo_docs(40))
    params = load_params(REPO / "params.yaml", tiny_overrides(tmp_path, corpus))
    out = io.StringIO()
    with progress.bars("prepare", terminal=False, stream=out) as bar:
        prepare(params.data, tmp_path / "data", bar=bar)
    text = out.getvalue()
    assert "prepare: reading and splitting the documents" in text
    assert "prepare: training the" in text and "tokenizer" in text  # tiny_overrides trains its own tokenizer
    for split in ("train", "val"):
        assert re.search(rf"prepare tokenizing {split} \(documents\): 100% \(\d+/\d+\)", text), text
    assert "prepare: checksumming the shards" in text


def test_report_stage_counts_its_three_steps(in_tiny, monkeypatch, capsys):
    from stages import report

    monkeypatch.setenv("GOLF_PROGRESS", "plain")
    _, params, _ = in_tiny
    monkeypatch.setattr(report, "collect", lambda p: ({"fake": True}, {}))
    monkeypatch.setattr(report, "write_report", lambda r, c, d: {"written": True})
    seen = []
    monkeypatch.setattr(report, "write_summary", lambda r: seen.append(r))
    assert report.run(params) == {"written": True} and seen == [{"fake": True}]
    err = capsys.readouterr().err
    assert "report steps:  33% (1/3)" in err and "report steps: 100% (3/3)" in err
