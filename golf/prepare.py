"""The prepare stage's logic: corpus → tokenizer → shards + manifest, or adopt existing shards.

Sources (params `data.source`):
- corpus: jsonl / jsonl.xz / jsonl.gz files with a text field, or plain .txt with a document separator;
- fineweb: the challenge's own FineWeb export (shards + tokenizer), from the Hugging Face dataset repo or a
  local folder with the same layout;
- shards: an existing folder of parameter-golf shards plus tokenizer.model (validated, not copied).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import lzma
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from golf.config import DataConfig, to_dict
from golf.data import BOS_ID, check_shard_ids, list_shards, shard_name, write_shard
from golf.errors import DataError
from golf.io import atomic_dir, check_replaceable, mark_output, write_bytes_atomic, write_json_atomic
from golf.progress import Bars
from golf.tokenizer import load_tokenizer, train_tokenizer

# --------------------------------------------------------------------------------------------------
# Reading corpora
# --------------------------------------------------------------------------------------------------


def expand_globs(patterns: list[str], what: str) -> list[Path]:
    files: list[Path] = []
    for pat in patterns:
        matched = sorted(glob.glob(os.path.expanduser(pat)))
        if not matched:
            raise DataError(f"{what}: {pat!r} matches no file")
        files.extend(Path(m) for m in matched)
    return files


_SURROGATE = re.compile("[\ud800-\udfff]")


def _open_text(path: Path):
    name = path.name
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_documents(path: Path, text_field: str, txt_separator: str) -> Iterator[str]:
    """Documents of one corpus file. jsonl(.xz/.gz): one JSON object a line; otherwise plain text."""
    stem = path.name.removesuffix(".xz").removesuffix(".gz")
    try:
        with _open_text(path) as f:
            if stem.endswith((".jsonl", ".json")):
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{str(path)!r} line {lineno}: not valid JSON ({e})") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                        raise DataError(f"{str(path)!r} line {lineno}: expected an object with a string "
                                        f"field {text_field!r} (params data.text_field)")
                    if _SURROGATE.search(obj[text_field]):  # JSON's \udXXX escapes can encode half a pair
                        raise DataError(f"{str(path)!r} line {lineno}: field {text_field!r} holds a lone UTF-16 "
                                        "surrogate escape (not Unicode text)")
                    yield obj[text_field]
            else:
                for doc in f.read().split(txt_separator):
                    if doc.strip():
                        yield doc
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise DataError(f"corpus file {str(path)!r} could not be read: {e}") from None


def doc_hash(text: str) -> str:
    """Hash of a whitespace-normalized, lower-cased document: the identity used for overlap checks."""
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def load_split_docs(cfg: DataConfig) -> tuple[list[str], list[str], dict]:
    """Train and val documents: read, deduplicated, split (seeded) or taken from val_globs, checked."""
    info: dict = {}
    train_files = expand_globs(cfg.train_globs, "data.train_globs")
    docs = [d for f in train_files for d in read_documents(f, cfg.text_field, cfg.txt_separator)]
    if not docs:
        raise DataError(f"corpus is empty: no documents in {[str(f) for f in train_files]}")
    seen, unique = set(), []
    for d in docs:
        h = doc_hash(d)
        if h not in seen:
            seen.add(h)
            unique.append(d)
    info["duplicates_dropped"] = len(docs) - len(unique)
    docs = unique
    if cfg.val_globs:
        val_files = expand_globs(cfg.val_globs, "data.val_globs")
        val = [d for f in val_files for d in read_documents(f, cfg.text_field, cfg.txt_separator)]
        train = docs
        if not val:
            raise DataError(f"validation corpus is empty: no documents in {[str(f) for f in val_files]}")
    else:
        order = list(range(len(docs)))
        random.Random(cfg.split_seed).shuffle(order)
        n_val = max(1, round(len(docs) * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
        if n_val >= len(docs):
            raise DataError(f"corpus has {len(docs)} documents: too few to hold out {n_val} for validation")
        val = [docs[i] for i in order[:n_val]]
        train = [docs[i] for i in order[n_val:]]
        if not val:
            raise DataError("data.val_fraction is 0 and data.val_globs is empty: no validation set")
    if cfg.max_docs:
        train, val = train[: cfg.max_docs], val[: cfg.max_docs]
    overlap = len({doc_hash(d) for d in val} & {doc_hash(d) for d in train})
    if overlap:
        raise DataError(f"{overlap} validation document(s) also appear in the training corpus; refusing to "
                        "continue (remove them from one side)")
    return train, val, info


# --------------------------------------------------------------------------------------------------
# Tokenizing in parallel
# --------------------------------------------------------------------------------------------------

_WORKER_SP = None


def _init_worker(model_bytes: bytes) -> None:
    import sentencepiece as spm

    global _WORKER_SP  # per-process tokenizer, set once by the pool initializer
    _WORKER_SP = spm.SentencePieceProcessor(model_proto=model_bytes)


def _encode_batch(docs: list[str]) -> list[np.ndarray]:
    out = []
    for ids in _WORKER_SP.encode(docs):
        out.append(np.asarray([BOS_ID] + ids, dtype=np.uint16))
    return out


def tokenize_docs(docs: list[str], model_bytes: bytes, workers: int,
                  tick: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """All documents as one uint16 stream (BOS before each document) and the docs' UTF-8 byte count.
    tick(documents done, total) after each batch of 64."""
    batches = [docs[i:i + 64] for i in range(0, len(docs), 64)]
    parts: list[np.ndarray] = []
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if tick is not None:
            tick(done, len(docs))

    if workers <= 1:
        _init_worker(model_bytes)
        for b in batches:
            parts.extend(_encode_batch(b))
            advance(len(b))
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(model_bytes,)) as ex:
            for b, res in zip(batches, ex.map(_encode_batch, batches)):
                parts.extend(res)
                advance(len(b))
    stream = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    return stream, sum(len(d.encode("utf-8")) for d in docs)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The three sources
# --------------------------------------------------------------------------------------------------


# What a corpus preparation's output depends on besides its config and input files: the code that reads,
# splits, tokenizes and writes (a change there re-tokenizes even without DVC).
_PREPARE_CODE = ("prepare.py", "tokenizer.py", "data.py")
_NOT_AN_INPUT = ("name", "num_workers")  # the output folder, and a parallelism knob (same shards either way)


def corpus_inputs_sha256(cfg: DataConfig) -> str:
    """One hash of everything prepare_corpus's output depends on: the data settings (but the folder name and
    worker count), every matched train/val file and the tokenizer model by content, and the code in
    _PREPARE_CODE. Equal hashes mean the same shards would be written again."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_AN_INPUT}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    files = expand_globs(cfg.train_globs, "data.train_globs")
    files += expand_globs(cfg.val_globs, "data.val_globs") if cfg.val_globs else []
    if cfg.tokenizer_model:
        files.append(Path(cfg.tokenizer_model))
    code_dir = Path(__file__).resolve().parent
    for f in [*files, *(code_dir / name for name in _PREPARE_CODE)]:
        if not f.is_file():
            raise DataError(f"prepare input {str(f)!r} is not a file")
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _up_to_date(out_dir: Path, inputs_sha256: str) -> dict | None:
    """The manifest of a finished preparation of the same inputs whose shards are all intact, else None."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("inputs_sha256") != inputs_sha256:
        return None
    files = {**(manifest.get("sha256") or {}), "tokenizer.model": manifest.get("tokenizer_sha256")}
    for name, digest in files.items():
        f = out_dir / name
        if not f.is_file() or sha256_file(f) != digest:
            return None
    return manifest


def prepare_corpus(cfg: DataConfig, out_dir: Path, force: bool = False, bar: Bars | None = None) -> dict:
    """Read, split and tokenize the corpus into out_dir. Skipped (the existing manifest is returned, with
    "up_to_date": true) when out_dir already holds intact shards made from the same inputs, unless force.
    bar: where the phases and the tokenizing progress are shown (golf.progress)."""
    note = bar.note if bar is not None else (lambda text: None)
    t0 = time.time()
    inputs_sha256 = corpus_inputs_sha256(cfg)
    if not force and (done := _up_to_date(out_dir, inputs_sha256)) is not None:
        return {**done, "up_to_date": True, "seconds": round(time.time() - t0, 2)}
    note("reading and splitting the documents")
    train, val, info = load_split_docs(cfg)
    if cfg.tokenizer_model:
        sp = load_tokenizer(cfg.tokenizer_model, cfg.vocab_size)
        model_bytes = Path(cfg.tokenizer_model).read_bytes()
        del sp
    else:
        budget, sample = cfg.tokenizer_train_bytes, []
        for d in train:
            sample.append(d)
            budget -= len(d)
            if budget <= 0:
                break
        note(f"training the {cfg.vocab_size}-token tokenizer on {len(sample):,} documents")
        model_bytes = train_tokenizer(sample, cfg.vocab_size, cfg.tokenizer_normalization,
                                      num_threads=os.cpu_count() or 1)
    workers = cfg.num_workers or os.cpu_count() or 1
    with atomic_dir(out_dir) as tmp:
        mark_output(tmp, "prepare")
        write_bytes_atomic(tmp / "tokenizer.model", model_bytes)
        load_tokenizer(tmp / "tokenizer.model", cfg.vocab_size)  # vocab check on what we wrote
        splits = {}
        for split, docs in (("train", train), ("val", val)):
            tick = bar.tracker(f"tokenizing {split} (documents)", len(docs)) if bar is not None else None
            stream, n_bytes = tokenize_docs(docs, model_bytes, workers, tick)
            files = []
            for i, start in enumerate(range(0, max(len(stream), 1), cfg.shard_tokens)):
                path = tmp / shard_name(split, i)
                write_shard(path, stream[start:start + cfg.shard_tokens])
                files.append(path.name)
            splits[split] = {"docs": len(docs), "tokens": len(stream), "bytes": n_bytes, "files": files}
        note("checksumming the shards")
        manifest = {
            "source": "corpus", "train_globs": cfg.train_globs, "val_globs": cfg.val_globs,
            "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction,
            "tokenizer_sha256": sha256_file(tmp / "tokenizer.model"),
            "tokenizer_trained": not cfg.tokenizer_model, "vocab_size": cfg.vocab_size,
            "splits": splits, "sha256": {f.name: sha256_file(f) for f in sorted(tmp.glob("*.bin"))},
            "inputs_sha256": inputs_sha256, **info,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    manifest["seconds"] = round(time.time() - t0, 2)
    return manifest


def _adopt_shards(cfg: DataConfig, shard_dir: Path, tok: Path, out_dir: Path, source: str) -> dict:
    """Validate an existing shard folder and record it in data/<name>/ (shards are not copied)."""
    if shard_dir.resolve() == out_dir.resolve() or out_dir.resolve() in shard_dir.resolve().parents:
        raise DataError(f"shard folder {str(shard_dir)!r} lies inside the output folder {str(out_dir)!r}, which "
                        "prepare replaces; point data.shards_dir elsewhere or change data.name")
    train = list_shards(shard_dir, "train")
    val = list_shards(shard_dir, "val")
    load_tokenizer(tok, cfg.vocab_size)
    splits = {}
    for split, files in (("train", train), ("val", val)):
        splits[split] = {"tokens": sum(check_shard_ids(f, cfg.vocab_size) for f in files),
                         "files": [f.name for f in files]}
    with atomic_dir(out_dir) as tmp:
        mark_output(tmp, "prepare")
        shutil.copyfile(tok, tmp / "tokenizer.model")
        manifest = {"source": source, "shards_dir": str(shard_dir.resolve()), "vocab_size": cfg.vocab_size,
                    "tokenizer_sha256": sha256_file(tok), "splits": splits,
                    "sha256": {f.name: sha256_file(f) for f in train + val}}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def prepare_shards(cfg: DataConfig, out_dir: Path) -> dict:
    if not cfg.shards_dir:
        raise DataError("data.source is 'shards' but data.shards_dir is empty")
    shard_dir = Path(cfg.shards_dir)
    if not shard_dir.is_dir():
        raise DataError(f"data.shards_dir {cfg.shards_dir!r} is not a folder")
    tok = Path(cfg.tokenizer_model) if cfg.tokenizer_model else shard_dir / "tokenizer.model"
    return _adopt_shards(cfg, shard_dir, tok, out_dir, "shards")


def prepare_fineweb(cfg: DataConfig, out_dir: Path) -> dict:
    """The challenge's export: `datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin` and
    `tokenizers/fineweb_<vocab>_bpe.model` in the dataset repo (layout as used by the challenge's
    data/cached_challenge_fineweb.py). A local folder with the same layout works without network."""
    vocab = cfg.fineweb_variant.removeprefix("sp")
    rel_shards = f"datasets/fineweb10B_{cfg.fineweb_variant}"
    rel_tok = f"tokenizers/fineweb_{vocab}_bpe.model"
    if cfg.fineweb_local_dir:
        root = Path(cfg.fineweb_local_dir)
        if not root.is_dir():
            raise DataError(f"data.fineweb_local_dir {cfg.fineweb_local_dir!r} is not a folder")
    else:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise DataError("huggingface_hub is not installed; set data.fineweb_local_dir instead") from None
        patterns = [f"{rel_shards}/fineweb_val_*.bin", rel_tok]
        patterns += [f"{rel_shards}/{shard_name('train', i)}" for i in range(cfg.fineweb_train_shards)]
        try:
            root = Path(snapshot_download(cfg.fineweb_repo, repo_type="dataset", allow_patterns=patterns))
        except Exception as e:  # noqa: BLE001 -- network, auth or missing repo: all are the user's to fix
            raise DataError(f"download of {cfg.fineweb_repo!r} failed: {e}") from None
    shard_dir = root / rel_shards
    if not shard_dir.is_dir():
        raise DataError(f"{str(root)!r} has no {rel_shards}/ folder (expected the challenge's export layout)")
    return _adopt_shards(cfg, shard_dir, root / rel_tok, out_dir, "fineweb")


def prepare(cfg: DataConfig, out_dir: Path, force: bool = False, bar: Bars | None = None) -> dict:
    """data/<name>/ from cfg.source. A corpus is re-tokenized only when its inputs changed (or force); adopted
    shards (fineweb, shards) are re-validated every time. A non-empty out_dir that prepare did not write
    (no marker, no manifest.json) is never replaced."""
    check_replaceable(out_dir, "data.name folder", recognised=("manifest.json",))
    if cfg.source == "corpus":
        return prepare_corpus(cfg, out_dir, force, bar)
    if bar is not None:
        bar.note(f"checking the {cfg.source} shards")
    if cfg.source == "shards":
        return prepare_shards(cfg, out_dir)
    return prepare_fineweb(cfg, out_dir)
