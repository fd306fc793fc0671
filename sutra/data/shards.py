"""On-disk format of a prepared dataset.

A prepared dataset is a directory:
  train-00000.bin  256-byte header (32 little-endian int64: magic, version, bytes per token,
                   tokens, documents, 0...) followed by the tokens as uint16
  train-00000.idx  uint64 exclusive end offset of every document in that shard (the offset just
                   after the document's <|endoftext|>), so document k is [idx[k-1], idx[k])
  val-00000.bin/.idx, ...
  stats.json       counts (documents, tokens, per domain/content type, dropped by reason)
  manifest.json    written last; a directory without it is an unfinished `prepare`

Every file is written to a temporary name and renamed, so a reader never sees half a shard.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from sutra.errors import SutraError
from sutra.io import atomic_write_bytes, atomic_write_json

FORMAT = "sutra-tokens"
VERSION = 1
MAGIC = int.from_bytes(b"SUTRATOK", "little")
HEADER_WORDS = 32
HEADER_BYTES = HEADER_WORDS * 8
TOKEN_DTYPE = np.dtype("<u2")
MAX_VOCAB = 1 << 16
SPLITS = ("train", "val")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def write_shard(directory: Path, name: str, tokens: np.ndarray, doc_ends: np.ndarray) -> dict:
    """Write `name`.idx then `name`.bin atomically; return the manifest entry (with a content digest)."""
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    doc_ends = np.ascontiguousarray(doc_ends, dtype="<u8")
    if len(doc_ends) and int(doc_ends[-1]) != len(tokens):
        raise ValueError(f"{name}: last document ends at {int(doc_ends[-1])} but the shard has {len(tokens)} tokens")
    header = np.zeros(HEADER_WORDS, dtype="<i8")
    header[:5] = (MAGIC, VERSION, TOKEN_DTYPE.itemsize, len(tokens), len(doc_ends))
    atomic_write_bytes(directory / f"{name}.idx", doc_ends.tobytes())
    data = header.tobytes() + tokens.tobytes()
    atomic_write_bytes(directory / f"{name}.bin", data)
    digest = hashlib.blake2b(data, digest_size=16)
    digest.update(doc_ends.tobytes())
    return {"name": name, "tokens": int(len(tokens)), "documents": int(len(doc_ends)), "blake2b": digest.hexdigest()}


def open_tokens(directory: Path, entry: dict) -> np.ndarray:
    """Memory-map one shard's tokens, checking its header against the manifest entry."""
    path = directory / f"{entry['name']}.bin"
    try:
        header = np.fromfile(path, dtype="<i8", count=HEADER_WORDS)
    except OSError as exc:
        raise SutraError(f"{path}: cannot read shard ({exc.strerror}); re-run `sutra data prepare`") from None
    expected = (MAGIC, VERSION, TOKEN_DTYPE.itemsize, entry["tokens"], entry["documents"])
    if len(header) != HEADER_WORDS or tuple(int(x) for x in header[:5]) != expected:
        raise SutraError(f"{path}: header does not match manifest.json (corrupt or replaced shard); re-run `sutra data prepare`")
    if path.stat().st_size != HEADER_BYTES + entry["tokens"] * TOKEN_DTYPE.itemsize:
        raise SutraError(f"{path}: size does not match its header (truncated shard); re-run `sutra data prepare`")
    if entry["tokens"] == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(entry["tokens"],))


def read_doc_ends(directory: Path, entry: dict) -> np.ndarray:
    path = directory / f"{entry['name']}.idx"
    try:
        doc_ends = np.fromfile(path, dtype="<u8").astype(np.int64)
    except OSError as exc:
        raise SutraError(f"{path}: cannot read document index ({exc.strerror}); re-run `sutra data prepare`") from None
    if len(doc_ends) != entry["documents"] or (len(doc_ends) and doc_ends[-1] != entry["tokens"]):
        raise SutraError(f"{path}: document index does not match manifest.json; re-run `sutra data prepare`")
    return doc_ends


def write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write_json(directory / "manifest.json", {"format": FORMAT, "version": VERSION, **manifest})


def read_stats(directory: str | Path) -> dict:
    """stats.json of a finished dataset, checked to hold every count `sutra data stats` prints."""
    path = Path(directory) / "stats.json"
    redo = "re-run `sutra data prepare` with --overwrite to rebuild the dataset"
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SutraError(f"{path}: unreadable ({exc}); {redo}") from None

    def counts(value, keys=None) -> bool:
        return isinstance(value, dict) and all(isinstance(n, int) for n in value.values()) and all(k in value for k in keys or ())

    shaped = (isinstance(stats, dict) and all(counts(stats.get(k), ("train", "val")) for k in ("documents", "tokens"))
              and isinstance(stats.get("input_records"), int)
              and all(counts(stats.get(k, {})) for k in ("dropped", "filtered", "tokens_by_domain", "tokens_by_content_type"))
              and isinstance(stats.get("val_fraction", 0), (int, float)))
    if not shaped:
        raise SutraError(f"{path}: not the stats `sutra data prepare` writes (train/val document and token counts, input records, "
                         f"dropped and filtered counts); {redo}")
    return stats


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not directory.exists():
        raise SutraError(f"{directory}: no such dataset directory; create it with `sutra data prepare`")
    if not directory.is_dir():
        raise SutraError(f"{directory}: a file, not a prepared dataset directory (one that `sutra data prepare --out` wrote)")
    if not path.is_file():
        hint = "`sutra data prepare` did not finish here; re-run it (it resumes)" if (directory / "progress.json").is_file() else "not a prepared dataset; create it with `sutra data prepare`"
        raise SutraError(f"{directory}: no manifest.json ({hint})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SutraError(f"{path}: unreadable manifest ({exc}); re-run `sutra data prepare`") from None
    if not isinstance(manifest, dict):
        raise SutraError(f"{path}: a JSON {type(manifest).__name__}, not a dataset manifest; re-run `sutra data prepare`")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise SutraError(f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, expected {FORMAT!r} version {VERSION}")
    return manifest
