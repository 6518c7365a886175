import json
import lzma
import shutil

import pytest

from golf.config import load_params
from golf.data import list_shards, load_manifest, read_shard
from golf.errors import DataError
from golf.prepare import prepare
from tests.conftest import REPO, demo_docs, write_jsonl


def _cfg(tmp_path, *overrides):
    return load_params(REPO / "params.yaml", ["data.vocab_size=512", "model.vocab_size=512", *overrides]).data


def test_prepare_corpus_writes_shards_manifest(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(30))
    m = prepare(_cfg(tmp_path, f"data.train_globs=[{corpus}]", "data.val_fraction=0.1"), tmp_path / "out")
    assert m["splits"]["val"]["docs"] == 3 and m["splits"]["train"]["docs"] == 27
    train = read_shard(list_shards(tmp_path / "out", "train")[0])
    assert train[0] == 1 and (train == 1).sum() == 27  # BOS before every document
    assert set(m["sha256"]) == {"fineweb_train_000000.bin", "fineweb_val_000000.bin"}
    assert load_manifest(tmp_path / "out")["tokenizer_sha256"] == m["tokenizer_sha256"]


def test_unchanged_corpus_is_not_tokenized_again(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(30))
    base = [f"data.train_globs=[{corpus}]", "data.val_fraction=0.1"]
    out = tmp_path / "out"
    first = prepare(_cfg(tmp_path, *base), out)
    assert "up_to_date" not in first and len(first["inputs_sha256"]) == 64
    shard = list_shards(out, "train")[0]
    stamp = shard.stat().st_mtime_ns
    again = prepare(_cfg(tmp_path, *base, "data.num_workers=1"), out)  # workers do not change the shards
    assert again["up_to_date"] is True and again["splits"] == first["splits"] and shard.stat().st_mtime_ns == stamp
    assert "up_to_date" not in prepare(_cfg(tmp_path, *base), out, force=True)  # --force re-tokenizes
    assert "up_to_date" not in prepare(_cfg(tmp_path, *base[:1], "data.val_fraction=0.2"), out)  # a setting
    assert prepare(_cfg(tmp_path, *base[:1], "data.val_fraction=0.2"), out)["up_to_date"] is True
    write_jsonl(corpus, demo_docs(31))  # the corpus's content changed
    m = prepare(_cfg(tmp_path, *base[:1], "data.val_fraction=0.2"), out)
    assert "up_to_date" not in m and m["splits"]["train"]["docs"] + m["splits"]["val"]["docs"] == 31
    shard = list_shards(out, "val")[0]
    shard.write_bytes(shard.read_bytes()[:-2])  # a damaged shard is never taken as up to date
    assert "up_to_date" not in prepare(_cfg(tmp_path, *base[:1], "data.val_fraction=0.2"), out)


def test_prepare_stage_reports_whether_it_tokenized(in_tiny):
    from stages import prepare as prepare_stage

    _, params, _ = in_tiny
    prov = params.data_dir() / "provenance.json"
    assert prepare_stage.run(params, force=True)["up_to_date"] is False
    written = prov.read_text()
    assert prepare_stage.run(params)["up_to_date"] is True
    assert prov.read_text() == written  # kept shards keep the provenance of the run that wrote them


def test_prepare_txt_and_xz_sources_and_given_val(tmp_path):
    docs = demo_docs(20)
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n\n".join(docs[:15]))
    val = tmp_path / "v.jsonl.xz"
    with lzma.open(val, "wt") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs[15:]))
    m = prepare(_cfg(tmp_path, f"data.train_globs=[{txt}]", f"data.val_globs=[{val}]"), tmp_path / "out")
    assert m["splits"]["train"]["docs"] == 15 and m["splits"]["val"]["docs"] == 5


def test_overlap_between_val_and_train_is_refused(tmp_path):
    docs = demo_docs(10)
    tr = write_jsonl(tmp_path / "t.jsonl", docs)
    va = write_jsonl(tmp_path / "v.jsonl", docs[:2] + [docs[2].upper()])  # case/space changes still match
    with pytest.raises(DataError, match="3 validation document"):
        prepare(_cfg(tmp_path, f"data.train_globs=[{tr}]", f"data.val_globs=[{va}]"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ("", "corpus is empty"), ('{"txt": "x"}\n', "string field 'text'"), ("{bad json\n", "not valid JSON"),
])
def test_bad_corpora(tmp_path, content, message):
    f = tmp_path / "c.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        prepare(_cfg(tmp_path, f"data.train_globs=[{f}]"), tmp_path / "out")


def test_missing_glob(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        prepare(_cfg(tmp_path, f"data.train_globs=[{tmp_path}/nothing*.jsonl]"), tmp_path / "out")


def test_shards_and_fineweb_layout_sources(tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", demo_docs(20))
    prepare(_cfg(tmp_path, f"data.train_globs=[{corpus}]"), tmp_path / "made")
    # (c) an existing shard folder: validated, not copied
    m = prepare(_cfg(tmp_path, "data.source=shards", f"data.shards_dir={tmp_path / 'made'}"), tmp_path / "adopted")
    assert list_shards(tmp_path / "adopted", "train")[0].parent == (tmp_path / "made").resolve()
    assert not list((tmp_path / "adopted").glob("*.bin"))
    # (b) the challenge's export layout in a local folder (no network)
    root = tmp_path / "hf"
    (root / "datasets" / "fineweb10B_sp1024").mkdir(parents=True)
    (root / "tokenizers").mkdir()
    for f in (tmp_path / "made").glob("*.bin"):
        shutil.copyfile(f, root / "datasets" / "fineweb10B_sp1024" / f.name)
    shutil.copyfile(tmp_path / "made" / "tokenizer.model", root / "tokenizers" / "fineweb_1024_bpe.model")
    m = prepare(_cfg(tmp_path, "data.source=fineweb", f"data.fineweb_local_dir={root}"), tmp_path / "fw")
    assert m["source"] == "fineweb" and m["splits"]["val"]["tokens"] > 0
    # a corrupt shard in the adopted folder fails with its name
    bad = root / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(DataError, match="fineweb_val_000000.bin"):
        prepare(_cfg(tmp_path, "data.source=fineweb", f"data.fineweb_local_dir={root}"), tmp_path / "fw2")
