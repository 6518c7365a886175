"""Shards, token loading and the exact BPB byte tables (the training batch loaders are in golf.loaders).

Shard format (parameter-golf compatible, so the challenge's own train_gpt.py reads our output): a header of
256 little-endian int32 (`[0]` = 20240520 magic, `[1]` = 1 version, `[2]` = N tokens, rest 0), then N
little-endian uint16 tokens. File size must be exactly 1024 + 2N bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from golf.errors import DataError
from golf.io import atomic_path, read_json

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
BOS_ID = 1


# --------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------


def shard_name(split: str, index: int) -> str:
    return f"fineweb_{split}_{index:06d}.bin"


def read_shard_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {str(path)!r} not found")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise DataError(f"shard {str(path)!r} is truncated: {size} bytes, shorter than the "
                        f"{HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC:
        raise DataError(f"shard {str(path)!r} has magic {int(header[0])}, expected {SHARD_MAGIC} "
                        "(not a parameter-golf shard)")
    if int(header[1]) != SHARD_VERSION:
        raise DataError(f"shard {str(path)!r} has version {int(header[1])}, expected {SHARD_VERSION}")
    n = int(header[2])
    if n < 0 or size != HEADER_BYTES + 2 * n:
        raise DataError(f"shard {str(path)!r}: header says {n} tokens, so {HEADER_BYTES + 2 * n} bytes "
                        f"expected, but the file has {size} bytes (truncated or corrupt)")
    return n


def read_shard(path: str | Path) -> np.ndarray:
    """Tokens of one shard as uint16, after checking magic, version and file size."""
    n = read_shard_header(path)
    return np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES)


def check_shard_ids(path: str | Path, vocab_size: int, block: int = 1 << 24) -> int:
    """Every token id of a shard is < vocab_size (an id past the embedding would crash train and eval with
    an index error, a device-side assert on GPU). Reads the shard in blocks through a memory map: one
    vectorised max per 16M tokens. Returns the token count."""
    n = read_shard_header(path)
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,)) if n else np.zeros(0, "<u2")
    for start in range(0, n, block):
        chunk = tokens[start:start + block]
        top = int(chunk.max())
        if top >= vocab_size:
            at = start + int(np.argmax(chunk >= vocab_size))
            raise DataError(f"shard {str(path)!r} holds token id {top} (first out-of-range id at token {at}), "
                            f"but the vocabulary has {vocab_size} ids (data.vocab_size)")
    return n


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens (any int array with values < 65536) as a shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise DataError(f"shard {str(path)!r}: expected a 1-D token array, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise DataError(f"shard {str(path)!r}: token ids must fit uint16 (0..65535)")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def glob_shards(folder: str | Path, split: str) -> list[Path]:
    """Sorted `fineweb_{split}_*.bin` files of a folder (no manifest lookup); DataError if none."""
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}")
    folder = Path(folder)
    shards = sorted(folder.glob(f"fineweb_{split}_*.bin"))
    if not shards:
        raise DataError(f"no {split} shards (fineweb_{split}_*.bin) in {str(folder)!r}")
    return shards


def list_shards(data_dir: str | Path, split: str) -> list[Path]:
    """Shards of one split of a prepared data folder, in stream order.

    The manifest is the source of truth: it lists each split's files and, for adopted shards (source
    fineweb/shards), the folder they live in. A listed file that is missing is an error, never skipped.
    Without a manifest (a bare folder of shards) the folder is globbed.
    """
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {str(data_dir)!r} not found (run `python cli.py prepare` first)")
    if not (data_dir / "manifest.json").is_file():
        return glob_shards(data_dir, split)
    manifest = load_manifest(data_dir)
    shard_dir = Path(manifest.get("shards_dir") or data_dir)
    files = (manifest.get("splits") or {}).get(split, {}).get("files")
    if not files:
        return glob_shards(shard_dir, split)
    paths = [shard_dir / name for name in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} {split} shard(s) listed in {str(data_dir / 'manifest.json')!r} are "
                        f"missing, e.g. {missing[0]!r} (rerun `python cli.py prepare`)")
    return paths


def load_manifest(data_dir: str | Path) -> dict:
    return read_json(Path(data_dir) / "manifest.json", "manifest", DataError, " (run `python cli.py prepare`)")


def tokenizer_path(data_dir: str | Path) -> Path:
    data_dir = Path(data_dir)
    path = data_dir / "tokenizer.model"
    if not path.is_file():
        raise DataError(f"tokenizer {str(path)!r} not found (run `python cli.py prepare` first)")
    return path


def load_tokens(paths: Sequence[str | Path], max_tokens: int = 0) -> torch.Tensor:
    """Concatenate shards into one int64 tensor (N,), optionally capped to the first max_tokens."""
    if not paths:
        raise DataError("no shards given to load")
    parts, total = [], 0
    for p in paths:
        arr = read_shard(p)
        if max_tokens and total + arr.size > max_tokens:
            arr = arr[: max_tokens - total]
        parts.append(torch.from_numpy(arr.astype(np.int64)))
        total += arr.size
        if max_tokens and total >= max_tokens:
            break
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------
# BPB byte tables
# --------------------------------------------------------------------------------------------------


@dataclass
class ByteTables:
    """Per-token UTF-8 byte counts for exact BPB (golf.data.target_bytes)."""

    base_bytes: torch.Tensor  # (V,) int16: UTF-8 length of the piece without its leading "▁"
    has_leading_space: torch.Tensor  # (V,) bool: piece starts with "▁"
    is_boundary: torch.Tensor  # (V,) bool: control / unknown / unused tokens (BOS included)

    def to(self, device: torch.device | str) -> ByteTables:
        return ByteTables(self.base_bytes.to(device), self.has_leading_space.to(device),
                          self.is_boundary.to(device))


def build_byte_tables(tokenizer, vocab_size: int) -> ByteTables:
    """Byte tables from a SentencePiece model (path or processor), sized to the model's vocab."""
    import sentencepiece as spm

    if isinstance(tokenizer, (str, Path)):
        sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    else:
        sp = tokenizer
    if sp.vocab_size() > vocab_size:
        raise DataError(f"tokenizer has {sp.vocab_size()} pieces, more than the model vocab_size {vocab_size}")
    base = torch.zeros(vocab_size, dtype=torch.int16)
    space = torch.zeros(vocab_size, dtype=torch.bool)
    boundary = torch.ones(vocab_size, dtype=torch.bool)  # ids beyond the tokenizer are unused: boundaries
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue  # 0 bytes, boundary
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        # SentencePiece decodes every "▁" as one space. The challenge's recipe never yields a piece with an
        # inner "▁" (whitespace splits pieces), so this equals its table; it only guards other models.
        base[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return ByteTables(base, space, boundary)


def target_bytes(prev_ids: torch.Tensor, target_ids: torch.Tensor, tables: ByteTables) -> torch.Tensor:
    """Bytes of each target token given the token before it; same shape as target_ids, int64."""
    base = tables.base_bytes[target_ids].to(torch.int64)
    space = tables.has_leading_space[target_ids] & ~tables.is_boundary[prev_ids]
    return base + space.to(torch.int64)
