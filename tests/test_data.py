import numpy as np
import pytest
import sentencepiece as spm
import torch

from golf.data import (TokenLoader, build_byte_tables, list_shards, load_tokens, read_shard, target_bytes,
                       write_shard)
from golf.errors import DataError
from golf.tokenizer import load_tokenizer, train_tokenizer
from tests.conftest import demo_docs


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
    s0, s1 = set(r0.next_batch()[0][:, 0].tolist()), set(r1.next_batch()[0][:, 0].tolist())
    assert len(s0) == 4 and len(s1) == 4  # each rank its own windows of the same global draw


@pytest.mark.parametrize("normalization", ["identity", "nmt_nfkc"])
def test_byte_count_equals_utf8_length_of_documents(normalization):
    docs = demo_docs(30)
    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(docs, 400, normalization))
    tables = build_byte_tables(sp, 400)
    stream = []
    for d in docs:
        stream += [1] + sp.encode(d)
    t = torch.tensor(stream)
    total = int(target_bytes(t[:-1], t[1:], tables).sum())
    if normalization == "identity":  # byte-lossless tokenizer: the original documents exactly
        expected = sum(len(d.encode("utf-8")) for d in docs)
    else:  # the challenge's nmt_nfkc recipe scores the normalized text: exactly its bytes
        expected = sum(len(sp.decode(sp.encode(d)).encode("utf-8")) for d in docs)
    assert total == expected


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
