"""The training batch loaders over the train shards: TokenLoader (seeded random windows, the default) and
StreamLoader (one contiguous stream per batch row, for train.carry_state). Training and calibration use them;
evaluation never does, so unlike golf.data this module is not shipped in artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from golf.data import HEADER_BYTES, read_shard_header
from golf.errors import DataError


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
        # the generator is a CPU one and takes only a CPU ByteTensor, whatever device the state was loaded onto
        self.gen.set_state(state["gen"].cpu())
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
