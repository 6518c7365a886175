"""Shards, token loading and the exact BPB byte tables.

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


class TokenLoader:
    """Deterministic random windows from train shards, disjoint across ranks, resumable.

    Each global step draws `batch_seqs * world_size` window starts from a seeded generator over the
    concatenated stream (every rank draws the same starts and takes its own slice, so ranks never overlap
    within a step). The generator state is the whole loader state: `state_dict()` after step k and
    `load_state_dict()` reproduce the exact batches that follow.

    Shards are memory-mapped, not loaded: 80 official train shards are 16 GB as uint16 (64 GB as int64),
    so only the windows of each batch are read and widened to int64.
    """

    def __init__(self, paths: Sequence[str | Path], seq_len: int, batch_seqs: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0):
        if not paths:
            raise DataError("no train shards given to the token loader")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        self._maps: list[np.ndarray] = []
        for p in paths:
            n = read_shard_header(p)
            if n:
                self._maps.append(np.memmap(p, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,)))
        self._ends = np.cumsum([m.size for m in self._maps]) if self._maps else np.zeros(1, np.int64)
        self.num_tokens = int(self._ends[-1])
        if self.num_tokens < seq_len + 1:
            raise DataError(f"train shards {[str(p) for p in paths][:3]} hold {self.num_tokens} tokens, fewer "
                            f"than seq_len + 1 = {seq_len + 1}")
        self.seq_len, self.batch_seqs = seq_len, batch_seqs
        self.rank, self.world_size = rank, world_size
        self.gen = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0

    def _window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the concatenated stream; may span shard boundaries."""
        i = int(np.searchsorted(self._ends, start, side="right"))
        pieces, need = [], length
        while need:
            first = int(self._ends[i - 1]) if i else 0
            local = start + (length - need) - first
            piece = self._maps[i][local:local + need]
            pieces.append(piece)
            need -= piece.size
            i += 1
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_windows = self.num_tokens - self.seq_len - 1
        starts = torch.randint(0, n_windows + 1, (self.batch_seqs * self.world_size,), generator=self.gen)
        mine = starts[self.rank * self.batch_seqs:(self.rank + 1) * self.batch_seqs].tolist()
        chunk = np.stack([self._window(s, self.seq_len + 1) for s in mine]).astype(np.int64)  # (B, T+1)
        chunk = torch.from_numpy(chunk)
        self.batches_drawn += 1
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()  # (B, T), (B, T)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.batches_drawn = int(state["batches_drawn"])


class StreamLoader:
    """Contiguous per-row streams for training with carried recurrent state (train.carry_state).

    The concatenated train stream (every shard in order, as TokenLoader sees it) is cut into `num_streams` equal
    regions, one for each sequence of a global step: accum micro batches x world_size ranks x batch_seqs rows.
    Stream g reads its region window after window: the window after [p, p + T + 1) is [p + T, p + 2T + 1), so
    a row's next input starts with the token after its last input, and the state the model ended that row
    with is the right initial state for it. Row r of micro batch i on rank k is stream
    g = (i * world_size + k) * batch_seqs + r: every rank advances every stream's position (a few integers) and
    reads only its own rows, so ranks never overlap and rank 0's state_dict() is every rank's, as with
    TokenLoader; the set of streams read in a step does not depend on the rank count.

    Each stream starts at a seeded random offset inside its region; a window that would run past the region's
    end restarts the stream at the region's start instead, and that row is flagged so that its carried state is
    reset to zero (as is every stream's first window). A shard boundary is no stream boundary, and neither is a
    document's BOS: the model sees it in the stream and the state runs on.
    """

    def __init__(self, paths: Sequence[str | Path], seq_len: int, batch_seqs: int, accum: int = 1, rank: int = 0,
                 world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        self._windows = TokenLoader(paths, seq_len, batch_seqs, rank, world_size, seed)  # the memory-mapped stream
        self.seq_len, self.batch_seqs, self.accum = seq_len, batch_seqs, accum
        self.rank, self.world_size = rank, world_size
        self.num_streams = accum * world_size * batch_seqs
        self.region = self._windows.num_tokens // self.num_streams  # tokens per stream
        if self.region < seq_len + 1:
            raise DataError(f"train.carry_state: the train shards hold {self._windows.num_tokens} tokens, fewer than "
                            f"{self.num_streams} streams x (seq_len + 1) = {self.num_streams * (seq_len + 1)}; "
                            "lower train.batch_tokens or train.seq_len, or add train data")
        gen = torch.Generator().manual_seed(seed)
        # relative position of each stream's next window in its region; every stream starts fresh (zero state)
        self.pos = torch.randint(0, self.region - seq_len, (self.num_streams,), generator=gen).numpy()
        self.fresh = np.ones(self.num_streams, dtype=bool)
        self.batches_drawn = 0

    @property
    def num_tokens(self) -> int:
        return self._windows.num_tokens

    def rows(self, micro: int) -> slice:
        """The streams (global indices) of this rank's rows in micro batch `micro`."""
        first = (micro * self.world_size + self.rank) * self.batch_seqs
        return slice(first, first + self.batch_seqs)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, restart) of the next micro batch (the micro batches of a step in turn): x, y (B, T) int64 and
        restart (B,) bool, True for a row whose stream starts here (its carried state must be zero)."""
        micro = self.batches_drawn % self.accum
        mine = self.rows(micro)
        starts = (np.arange(self.num_streams)[mine] * self.region + self.pos[mine]).tolist()
        chunk = np.stack([self._windows._window(s, self.seq_len + 1) for s in starts]).astype(np.int64)  # (B, T+1)
        chunk = torch.from_numpy(chunk)
        restart = torch.from_numpy(self.fresh[mine].copy())  # (B,)
        # every rank advances all streams of this micro batch, its own and the other ranks'
        block = slice(micro * self.world_size * self.batch_seqs, (micro + 1) * self.world_size * self.batch_seqs)
        nxt = self.pos[block] + self.seq_len
        wrap = nxt + self.seq_len + 1 > self.region  # the next window would run past the region: restart
        self.pos[block] = np.where(wrap, 0, nxt)
        self.fresh[block] = wrap
        self.batches_drawn += 1
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous(), restart  # (B, T), (B, T), (B,)

    def state_dict(self) -> dict:
        return {"pos": torch.from_numpy(self.pos.copy()), "fresh": torch.from_numpy(self.fresh.copy()),
                "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        pos, fresh = state["pos"].cpu().numpy(), state["fresh"].cpu().numpy()
        if pos.shape != self.pos.shape:
            raise DataError(f"stream loader state has {pos.shape[0]} streams, this loader {self.num_streams}")
        self.pos, self.fresh = pos.astype(self.pos.dtype).copy(), fresh.astype(bool).copy()
        self.batches_drawn = int(state["batches_drawn"])


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
