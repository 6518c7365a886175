"""Output folders and data under hostile conditions (issue 25 items 1, 3, 4): a user's folder is never
replaced, shards with ids past the vocabulary are refused at prepare, a full disk leaves nothing half
written, an unwritable run folder is found before any work, and each case is one line."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from golf.config import load_params
from golf.data import read_shard, write_shard
from golf.errors import DataError, GolfError
from golf.io import OUTPUT_MARKER, OutputError, write_bytes_atomic, write_json_atomic
from golf.prepare import prepare
from tests.conftest import REPO, demo_docs, write_jsonl
from tests.test_export import project  # noqa: F401 (fixture: a fake runs/ tree)


def _cfg(*overrides):
    return load_params(REPO / "params.yaml", ["data.vocab_size=512", "model.vocab_size=512", *overrides]).data


# -- item 1: a user's folder is never replaced ------------------------------------------------------


def test_export_refuses_a_users_folder_and_replaces_its_own(project):  # noqa: F811
    from stages import export

    root, params = project
    mine = root / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match=r"export --out '.*mine' is a non-empty folder that golf did not write"):
        export.run(params(), mine)
    assert (mine / "thesis.tex").read_text() == "years of work" and len(list(mine.iterdir())) == 1
    # an empty folder and an earlier export are fine
    (root / "empty").mkdir()
    export.run(params(), root / "empty")
    assert (root / "empty" / OUTPUT_MARKER).is_file()
    export.run(params(), root / "empty")  # our own export: replaced
    assert (root / "empty" / "submission.json").is_file()
    (root / "afile").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        export.run(params(), root / "afile")


def test_prepare_never_replaces_a_folder_it_did_not_write(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(20))
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match=r"data.name folder '.*photos' is a non-empty folder that golf did not"):
        prepare(_cfg(f"data.train_globs=[{corpus}]"), user)
    assert [p.name for p in user.iterdir()] == ["cat.jpg"]
    prepare(_cfg(f"data.train_globs=[{corpus}]"), tmp_path / "out")
    assert (tmp_path / "out" / OUTPUT_MARKER).is_file()
    prepare(_cfg(f"data.train_globs=[{corpus}]", "data.split_seed=7"), tmp_path / "out")  # ours: replaced
    # a folder written before the marker existed is recognised by its manifest
    (tmp_path / "out" / OUTPUT_MARKER).unlink()
    prepare(_cfg(f"data.train_globs=[{corpus}]", "data.split_seed=8"), tmp_path / "out")


def test_adopted_shards_inside_the_output_folder_are_refused(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(20))
    prepare(_cfg(f"data.train_globs=[{corpus}]"), tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    with pytest.raises(DataError, match="lies inside the output folder"):
        prepare(_cfg("data.source=shards", f"data.shards_dir={tmp_path / 'out'}"), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before


# -- item 3: data ---------------------------------------------------------------------------------------


def test_shard_ids_past_the_vocab_are_refused_at_adopt(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(20))
    prepare(_cfg(f"data.train_globs=[{corpus}]"), tmp_path / "made")
    val = tmp_path / "made" / "fineweb_val_000000.bin"
    tokens = read_shard(val).copy()
    tokens[5] = 512  # == vocab_size: one past the last id
    write_shard(val, tokens)
    with pytest.raises(DataError, match=r"shard '.*fineweb_val_000000.bin' holds token id 512 \(first out-of-range "
                                        r"id at token 5\), but the vocabulary has 512 ids"):
        prepare(_cfg("data.source=shards", f"data.shards_dir={tmp_path / 'made'}"), tmp_path / "adopted")
    assert not (tmp_path / "adopted").exists()


def test_overlong_first_document_still_trains_a_tokenizer(tmp_path, caplog):
    # SentencePiece drops sentences over max_sentence_length bytes: a tokenizer sample made of one long
    # document at the front of the corpus left it nothing ("INTERNAL: ... [!sentences_.empty()]")
    docs = demo_docs(83)
    long_doc = "\n".join(docs[:60])  # ~350,000 bytes, the only document of the tokenizer's sample
    assert len(long_doc.encode()) > 300_000
    corpus = write_jsonl(tmp_path / "c.jsonl", [long_doc, *docs[60:80]])
    val = write_jsonl(tmp_path / "v.jsonl", docs[80:])
    m = prepare(_cfg(f"data.train_globs=[{corpus}]", f"data.val_globs=[{val}]", "data.tokenizer_train_bytes=1000"),
                tmp_path / "out")
    assert m["splits"]["train"]["docs"] == 21
    assert m["splits"]["train"]["bytes"] > len(long_doc.encode())  # the document itself is tokenized whole
    assert "1 document(s) longer than 100000 bytes split for tokenizer training" in caplog.text


def test_split_long_pieces_fit_and_concatenate():
    from golf.tokenizer import split_long

    for text in ("a" * 250, "ab cd " * 50, "é" * 200, "x" * 10):
        pieces = list(split_long(text, 64))
        assert "".join(pieces) == text and all(len(p.encode()) <= 64 for p in pieces)


def test_lone_surrogate_in_corpus_names_file_and_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "fine"}\n{"text": "bad \\ud800 half"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl.* line 2: .*surrogate"):
        prepare(_cfg(f"data.train_globs=[{f}]"), tmp_path / "out")


# -- item 4: disk full, unwritable folders --------------------------------------------------------------


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"val_bpb": 1.2})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"no space left writing '.*metrics.json'.*nothing was replaced"):
        write_bytes_atomic(target, b"x" * 1000)
    assert json.loads(target.read_text()) == {"val_bpb": 1.2}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_unwritable_metrics_folder_fails_before_evaluating(in_tiny, monkeypatch):
    from stages import eval_sliding

    _, params, _ = in_tiny
    metrics = params.run_dir(1) / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(eval_sliding, "load_eval_inputs", lambda *a, **k: pytest.fail("evaluation started"))
    metrics.chmod(0o555)
    try:
        if os.access(metrics, os.W_OK):  # root ignores the mode bits: make the probe see a read-only folder
            import tempfile

            real = tempfile.TemporaryFile

            def probe(*a, dir=None, **k):
                if Path(dir) == metrics:
                    raise PermissionError(errno.EACCES, "Permission denied")
                return real(*a, dir=dir, **k)

            monkeypatch.setattr(tempfile, "TemporaryFile", probe)
        with pytest.raises(GolfError, match=r"metrics folder '.*metrics' is not writable \(Permission denied\)"):
            eval_sliding.run(params, 1)
    finally:
        metrics.chmod(0o755)


def test_disk_full_shard_write_leaves_no_partial_shard(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OutputError, match="no space left"):
        write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(100))
    assert list(tmp_path.iterdir()) == []
