import itertools
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from golf.data import (
    build_byte_tables,
    list_shards,
    load_tokens,
    read_shard,
    target_bytes,
    write_shard,
)
from golf.errors import DataError
from golf.loaders import TokenLoader
from golf.tokenizer import load_tokenizer, train_tokenizer
from tests.conftest import demo_docs

SHARED_VAL = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "val.jsonl.xz"


def test_shard_roundtrip_and_challenge_loader_conditions(tmp_path):
    toks = np.random.default_rng(0).integers(0, 1024, 5000).astype(np.uint16)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, toks)
    # the conditions the challenge's train_gpt.py load_data_shard checks: int32 header, magic, version, size
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1 and header[2] == 5000
    assert path.stat().st_size == 256 * 4 + 2 * 5000
    assert np.array_equal(read_shard(path), toks)


@pytest.mark.parametrize("damage, message", [
    ("magic", "magic"), ("version", "version"), ("truncate", "truncated or corrupt"), ("tiny", "truncated"),
])
def test_corrupt_shards_fail_with_the_file_name(tmp_path, damage, message):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    data = bytearray(path.read_bytes())
    if damage == "magic":
        data[0:4] = (123).to_bytes(4, "little")
    elif damage == "version":
        data[4:8] = (7).to_bytes(4, "little")
    elif damage == "truncate":
        data = data[:-10]
    else:
        data = data[:100]
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=message) as e:
        read_shard(path)
    assert str(path) in str(e.value)


def test_list_shards_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_shards(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="no val shards"):
        list_shards(tmp_path, "val")
    with pytest.raises(DataError, match="split must be"):
        list_shards(tmp_path, "test")


def test_list_shards_follows_the_manifest(tmp_path):
    ext = tmp_path / "ext"
    for i in range(3):
        write_shard(ext / f"fineweb_train_{i:06d}.bin", np.arange(10, dtype=np.uint16))
    data = tmp_path / "data"
    data.mkdir()
    files = ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]  # a prefix of the folder's shards
    (data / "manifest.json").write_text(json.dumps({"shards_dir": str(ext), "splits": {"train": {"files": files}}}))
    assert [p.name for p in list_shards(data, "train")] == files and list_shards(data, "train")[0].parent == ext
    (ext / files[1]).unlink()
    with pytest.raises(DataError, match="missing, e.g. .*fineweb_train_000001.bin"):
        list_shards(data, "train")


def test_token_loader_deterministic_resumable_and_rank_disjoint(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(10000, dtype=np.uint16) % 60000)
    paths = [tmp_path / "fineweb_train_000000.bin"]
    a = TokenLoader(paths, 16, 4, seed=3)
    b = TokenLoader(paths, 16, 4, seed=3)
    a.next_batch()
    state = a.state_dict()
    x1, y1 = a.next_batch()
    b.load_state_dict(state)
    x2, y2 = b.next_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    r0, r1 = TokenLoader(paths, 16, 4, 0, 2, seed=5), TokenLoader(paths, 16, 4, 1, 2, seed=5)
    both = TokenLoader(paths, 16, 8, 0, 1, seed=5)  # one rank taking the whole global draw
    x0, x1, xb = r0.next_batch()[0], r1.next_batch()[0], both.next_batch()[0]
    assert torch.equal(torch.cat([x0, x1]), xb)  # each rank its own slice of the same global draw
    with pytest.raises(DataError, match="rank 2"):
        TokenLoader(paths, 16, 4, 2, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_token_loader_resumes_from_a_state_loaded_onto_the_gpu(tmp_path):
    """A training checkpoint is loaded with map_location=<the training device>, which puts the loader's generator
    state on the GPU; resuming must still draw the same next batch (it raised 'RNG state must be a
    torch.ByteTensor' on the H200, 2026-12-01)."""
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(10000, dtype=np.uint16) % 60000)
    paths = [tmp_path / "fineweb_train_000000.bin"]
    a, b = TokenLoader(paths, 16, 4, seed=3), TokenLoader(paths, 16, 4, seed=3)
    a.next_batch()
    torch.save(a.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", map_location="cuda", weights_only=True)
    assert state["gen"].is_cuda
    b.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch(), strict=True))


def test_token_loader_windows_span_shards_like_one_stream(tmp_path):
    stream = np.random.default_rng(1).integers(0, 1000, 700).astype(np.uint16)
    cuts = [0, 50, 50, 53, 400, 700]  # includes an empty shard and a 3-token shard
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        paths.append(tmp_path / f"fineweb_train_{i:06d}.bin")
        write_shard(paths[-1], stream[a:b])
    loader, gen = TokenLoader(paths, 40, 16, seed=7), torch.Generator().manual_seed(7)
    for _ in range(5):
        starts = torch.randint(0, 700 - 41 + 1, (16,), generator=gen)
        x, y = loader.next_batch()
        full = torch.from_numpy(stream.astype(np.int64))
        expect = torch.stack([full[s:s + 41] for s in starts.tolist()])
        assert torch.equal(x, expect[:, :-1]) and torch.equal(y, expect[:, 1:]) and x.dtype == torch.int64
    with pytest.raises(DataError, match="fewer than seq_len"):
        TokenLoader(paths, 700, 1)


def _scored_and_original_bytes(sp, docs):
    tables = build_byte_tables(sp, sp.vocab_size())
    stream = []
    for d in docs:
        stream += [1] + sp.encode(d)  # BOS before every document, as prepare writes it
    t = torch.tensor(stream)
    return int(target_bytes(t[:-1], t[1:], tables).sum()), sum(len(d.encode("utf-8")) for d in docs)


def test_byte_count_equals_utf8_length_of_val_documents():
    """The BPB byte count equals the UTF-8 length of the original documents (default tokenizer)."""
    train, val = demo_docs(60)[:40], demo_docs(60)[40:]
    val += ["line one\n\nline  two\tend\r\n", "caf\u00e9 \u2026 \u00bd \ufb01 \u00a0x \U0001f600 \u4e2d\u6587"]
    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(train, 400))  # default settings
    scored, original = _scored_and_original_bytes(sp, val)
    assert scored == original
    assert all(sp.decode(sp.encode(d)) == d for d in val)


def test_challenge_normalization_counts_normalized_bytes():
    """nmt_nfkc (the challenge's recipe) rewrites text: the count is that of the normalized text."""
    docs = demo_docs(30) + ["a\n\nb \u2026 \u00bd"]
    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(docs, 400, "nmt_nfkc"))
    scored, original = _scored_and_original_bytes(sp, docs)
    assert scored == sum(len(sp.decode(sp.encode(d)).encode("utf-8")) for d in docs)
    assert scored != original


@pytest.mark.skipif(not SHARED_VAL.is_file(), reason="shared corpus not present")
def test_byte_count_over_the_shared_val_set():
    with lzma.open(SHARED_VAL, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(docs[:300], 512))
    scored, original = _scored_and_original_bytes(sp, docs[300:])
    assert scored == original


def test_inner_space_pieces_count_one_byte_per_space():
    class FakeSP:  # a model whose pieces contain inner "▁" (the recipe never makes one)
        pieces = ("<pad>", "<s>", "</s>", "<unk>", "\u2581a\u2581\u2581b", "<0x41>")

        def vocab_size(self):
            return len(self.pieces)

        def is_control(self, i):
            return i in (0, 1, 2)

        def is_unknown(self, i):
            return i == 3

        def is_unused(self, i):
            return False

        def is_byte(self, i):
            return i == 5

        def id_to_piece(self, i):
            return self.pieces[i]

    t = build_byte_tables(FakeSP(), 8)
    assert t.base_bytes.tolist() == [0, 0, 0, 0, 4, 1, 0, 0]  # "a  b"; ids past the model count 0
    assert t.has_leading_space.tolist()[4] and t.is_boundary.tolist() == [True] * 4 + [False] * 2 + [True] * 2


def test_tokenizer_vocab_mismatch(tmp_path):
    path = tmp_path / "tok.model"
    path.write_bytes(train_tokenizer(demo_docs(10), 512, "identity"))
    assert load_tokenizer(path, 512).vocab_size() == 512
    with pytest.raises(DataError, match="vocab size 512, but params expect 1024"):
        load_tokenizer(path, 1024)


def test_load_tokens_cap(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(50, dtype=np.uint16))
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(50, dtype=np.uint16))
    assert load_tokens(list_shards(tmp_path, "val")).numel() == 100
    assert load_tokens(list_shards(tmp_path, "val"), 70).numel() == 70
