"""The training/eval data loader: fixed windows of seq_len+1 tokens from a memory-mapped stream.

Window i of an epoch covers tokens [i*seq_len, i*seq_len + seq_len + 1), so consecutive windows
overlap by one token and one epoch sees every token once. The window order of epoch e is a
permutation fixed by (seed, e). A GLOBAL cursor walks it: rank r takes entries
[cursor + r*micro_batch, cursor + (r+1)*micro_batch) and every call advances the cursor by
micro_batch*world_size, so a position saved under one world size resumes exactly under another.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sutra.data.stream import open_stream
from sutra.errors import SutraError


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64
    doc_ids: torch.Tensor  # (B, T) int32, document number within each window, from 0

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.inputs, self.targets, self.doc_ids)))


class TokenLoader:
    def __init__(self, path: str | Path, split: str = "train", seq_len: int = 1024, micro_batch: int = 4,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        if seq_len < 1 or micro_batch < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise SutraError(f"invalid loader shape: seq_len={seq_len}, micro_batch={micro_batch}, rank={rank}, world_size={world_size}")
        self.path, self.split = Path(path), split
        self.seq_len, self.micro_batch, self.rank, self.world_size = seq_len, micro_batch, rank, world_size
        self.seed = int(seed)
        self._stream = open_stream(path, split)
        self.vocab_size = self._stream.vocab_size
        self.tokenizer_fingerprint = self._stream.tokenizer_fingerprint
        self.split_tokens = self._stream.length
        self.windows_per_epoch = max(0, (self.split_tokens - 1) // seq_len)
        self.epoch = 0
        self.cursor = 0
        self.skipped_windows = 0
        self._permutation_epoch, self._permutation = None, None

    def _order(self) -> np.ndarray:
        if self._permutation_epoch != (self.seed, self.epoch):
            self._permutation = np.random.default_rng([self.seed, self.epoch]).permutation(self.windows_per_epoch)
            self._permutation_epoch = (self.seed, self.epoch)
        return self._permutation

    def _end_epoch_if_exhausted(self) -> None:
        remaining = self.windows_per_epoch - self.cursor
        if remaining < self.micro_batch * self.world_size:
            self.skipped_windows += remaining
            self.epoch += 1
            self.cursor = 0

    def next_batch(self) -> Batch:
        global_batch = self.micro_batch * self.world_size
        if self.windows_per_epoch < global_batch:
            raise SutraError(
                f"{self.path} ({self.split}): {self.windows_per_epoch} windows of {self.seq_len + 1} tokens, fewer than one global batch "
                f"of {global_batch} (micro_batch {self.micro_batch} x world_size {self.world_size}); use more data or smaller shapes"
            )
        self._end_epoch_if_exhausted()
        first = self.cursor + self.rank * self.micro_batch
        windows = self._order()[first:first + self.micro_batch]
        self.cursor += global_batch
        self._end_epoch_if_exhausted()
        return self._batch(windows)

    def _batch(self, windows: np.ndarray) -> Batch:
        starts = np.asarray(windows, dtype=np.int64) * self.seq_len
        tokens = torch.from_numpy(self._stream.gather(starts, self.seq_len + 1).astype(np.int64))
        doc_ids = torch.from_numpy(self._stream.doc_ids(starts, self.seq_len))
        return Batch(tokens[:, :-1], tokens[:, 1:], doc_ids)

    def iter_eval(self, max_windows: int | None = None):
        """Every window once, in order, or `max_windows` of them spread evenly over the split (its
        start alone would be one source or one mix component); each rank gets a contiguous slice of
        about 1/world_size of them, in batches of micro_batch (the last may be smaller)."""
        total = self._eval_windows(max_windows)
        windows = np.arange(total) * self.windows_per_epoch // total
        lo, hi = self.rank * total // self.world_size, (self.rank + 1) * total // self.world_size
        for first in range(lo, hi, self.micro_batch):
            yield self._batch(windows[first:min(first + self.micro_batch, hi)])

    def eval_batch_count(self, max_windows: int | None = None) -> int:
        """The most batches `iter_eval` yields on any rank (that of the largest slice)."""
        largest = -(-self._eval_windows(max_windows) // self.world_size)
        return -(-largest // self.micro_batch)

    def _eval_windows(self, max_windows: int | None) -> int:
        return self.windows_per_epoch if max_windows is None else min(max_windows, self.windows_per_epoch)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "skipped_windows": self.skipped_windows,
            "split": self.split, "seq_len": self.seq_len, "windows_per_epoch": self.windows_per_epoch, "data": self._stream.identity,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("split", "seq_len", "windows_per_epoch", "data"):
            if state.get(key) != self.state_dict()[key]:
                raise SutraError(
                    f"saved data position is for {key}={state.get(key)!r} but this loader has {self.state_dict()[key]!r}; "
                    "resume with the same dataset or mix and seq_len"
                )
        self.seed, self.epoch, self.cursor, self.skipped_windows = (int(state[k]) for k in ("seed", "epoch", "cursor", "skipped_windows"))
