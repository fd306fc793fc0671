"""Buffers tokenized documents per split and writes them out as numbered shards."""

from pathlib import Path

import numpy as np

from sutra.data.shards import SPLITS, TOKEN_DTYPE, shard_name, write_shard, write_manifest


class ShardWriter:
    def __init__(self, out: Path, next_index: int = 0, shards: dict | None = None):
        self.out = Path(out)
        self.next_index = next_index
        self.shards = shards or {split: [] for split in SPLITS}
        self._tokens = {split: [] for split in SPLITS}
        self._lengths = {split: [] for split in SPLITS}
        self.pending_tokens = {split: 0 for split in SPLITS}

    def add(self, split: str, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append whole documents: `tokens` is their concatenation, `lengths` their sizes (separator included)."""
        self._tokens[split].append(np.asarray(tokens, dtype=TOKEN_DTYPE))
        self._lengths[split].append(np.asarray(lengths, dtype=np.int64))
        self.pending_tokens[split] += int(len(tokens))

    def flush(self) -> None:
        """Write the buffered documents of each non-empty split as shard number `next_index`."""
        if not any(self.pending_tokens.values()):
            return
        for split in SPLITS:
            lengths = np.concatenate(self._lengths[split]) if self._lengths[split] else np.zeros(0, dtype=np.int64)
            if len(lengths):
                tokens = np.concatenate(self._tokens[split])
                self.shards[split].append(write_shard(self.out, shard_name(split, self.next_index), tokens, np.cumsum(lengths)))
            self._tokens[split], self._lengths[split], self.pending_tokens[split] = [], [], 0
        self.next_index += 1

    def summary(self) -> dict:
        return {
            split: {
                "tokens": sum(s["tokens"] for s in self.shards[split]),
                "documents": sum(s["documents"] for s in self.shards[split]),
                "shards": self.shards[split],
            }
            for split in SPLITS
        }

    def finish(self, tokenizer, **extra) -> dict:
        """Flush and write manifest.json (last); return the manifest."""
        self.flush()
        manifest = {
            "tokenizer_fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "dtype": TOKEN_DTYPE.name,
            "document_separator_id": tokenizer.document_separator_id,
            "splits": self.summary(),
            **extra,
        }
        write_manifest(self.out, manifest)
        return manifest
