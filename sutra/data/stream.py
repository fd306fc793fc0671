"""A split of a prepared dataset, or of a mixture, seen as one memory-mapped token stream.

The stream is a concatenation of pieces (slices of shard memmaps, nothing is copied) plus the
sorted positions where a new document starts. Windows may span pieces; a piece boundary is
always a document boundary.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from sutra.data.shards import TOKEN_DTYPE, open_tokens, read_doc_ends, read_manifest
from sutra.data.sources import HUB_ID, LOCAL_SOURCES, is_source_file
from sutra.errors import SutraError

MIX_FORMAT = "sutra-mix"
MIX_VERSION = 1


class TokenStream:
    def __init__(self, pieces: list[np.ndarray], boundaries: np.ndarray, vocab_size: int, tokenizer_fingerprint: str, identity: str):
        # plain ndarray views: slicing an np.memmap subclass costs several times more per window
        self.pieces = [np.asarray(p) for p in pieces if len(p)]
        lengths = [len(p) for p in self.pieces]
        self._starts = [0, *np.cumsum(lengths, dtype=np.int64).tolist()]
        self._starts_array = np.asarray(self._starts[:-1], dtype=np.int64)
        self.length = self._starts[-1]
        self.boundaries = boundaries
        self.vocab_size = vocab_size
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.identity = identity

    def gather(self, starts: np.ndarray, width: int) -> np.ndarray:
        """Tokens [s, s+width) for every s in `starts`, as a (len(starts), width) uint16 array."""
        out = np.empty((len(starts), width), dtype=TOKEN_DTYPE)
        first_piece = np.searchsorted(self._starts_array, starts, side="right") - 1
        for row, (start, piece) in enumerate(zip(starts.tolist(), first_piece.tolist())):
            filled = 0
            while filled < width:
                offset = start + filled - self._starts[piece]
                take = min(width - filled, self._starts[piece + 1] - self._starts[piece] - offset)
                out[row, filled:filled + take] = self.pieces[piece][offset:offset + take]
                filled += take
                piece += 1
        return out

    def doc_ids(self, starts: np.ndarray, width: int) -> np.ndarray:
        """Per-token document number inside each window, restarting at 0 (int32, like `gather`)."""
        ids = np.zeros((len(starts), width), dtype=np.int32)
        first = np.searchsorted(self.boundaries, starts, side="right")
        last = np.searchsorted(self.boundaries, starts + (width - 1), side="right")
        for row, (lo, hi, start) in enumerate(zip(first.tolist(), last.tolist(), starts.tolist())):
            # fill each document's span (few per window): cheaper than a cumsum over every token
            edges = [b - start for b in self.boundaries[lo:hi].tolist()] + [width]
            for doc, (begin, end) in enumerate(zip(edges, edges[1:]), start=1):
                ids[row, begin:end] = doc
        return ids


def select_ranges(available: int, budget: int, block_tokens: int) -> list[tuple[int, int]]:
    """Ranges of a token stream that add up to exactly `budget` tokens.

    Whole passes first (a budget above `available` repeats the data), then the remainder as
    evenly strided blocks, so a budget smaller than the data samples all of it rather than
    only its beginning (prepared data keeps the source order, which is often sorted).
    """
    if available <= 0:
        return []
    passes, remainder = divmod(budget, available)
    ranges = [(0, available)] * passes
    if remainder:
        blocks = -(-remainder // block_tokens)
        if blocks * block_tokens <= available:
            stride = available / blocks
            for j in range(blocks):
                start = int(j * stride)
                ranges.append((start, start + min(block_tokens, remainder - j * block_tokens)))
        else:  # blocks this large would overlap: smaller ones (at most 1/16 of the data), the tokens left out spread between them
            blocks = max(blocks, -(-remainder // max(1, available // 16)))
            left_out = available - remainder
            for j in range(blocks):
                taken = j * remainder // blocks
                start = taken + j * left_out // blocks
                ranges.append((start, start + (j + 1) * remainder // blocks - taken))
    return ranges


def _dataset_pieces(directory: Path, manifest: dict, split: str, ranges: list[tuple[int, int]]):
    """Pieces, document boundaries and identity for `ranges` of one dataset split's token stream."""
    shards = manifest["splits"][split]["shards"]
    offsets = np.cumsum([0] + [s["tokens"] for s in shards]).tolist()
    tokens = [open_tokens(directory, s) for s in shards]
    doc_ends = [read_doc_ends(directory, s) for s in shards]
    pieces, boundaries, virtual = [], [], 0
    for start, stop in ranges:
        for k, shard in enumerate(shards):
            lo, hi = max(start, offsets[k]), min(stop, offsets[k + 1])
            if lo >= hi:
                continue
            local_lo, local_hi = lo - offsets[k], hi - offsets[k]
            pieces.append(tokens[k][local_lo:local_hi])
            ends = doc_ends[k]
            inside = ends[(ends > local_lo) & (ends <= local_hi)]
            boundaries.append(inside - local_lo + virtual)
            virtual += local_hi - local_lo
            boundaries.append(np.asarray([virtual], dtype=np.int64))
    identity = [(s["name"], s["tokens"], s.get("blake2b")) for s in shards], ranges
    return pieces, boundaries, identity


def _stream(parts, vocab_size: int, fingerprint: str) -> TokenStream:
    pieces, boundaries, identity = [], [], []
    offset = 0
    for part_pieces, part_boundaries, part_identity in parts:
        pieces += part_pieces
        boundaries += [b + offset for b in part_boundaries]
        offset += sum(len(p) for p in part_pieces)
        identity.append(part_identity)
    merged = np.unique(np.concatenate(boundaries)) if boundaries else np.zeros(0, dtype=np.int64)
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    return TokenStream(pieces, merged, vocab_size, fingerprint, digest)


def open_stream(path: str | Path, split: str) -> TokenStream:
    """The `split` stream of a prepared dataset directory or of a mix manifest file."""
    if split not in ("train", "val"):
        raise SutraError(f"unknown split '{split}'; use 'train' or 'val'")
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        if split not in manifest["splits"]:
            raise SutraError(f"{path / 'manifest.json'}: the dataset has no '{split}' split (it has {', '.join(manifest['splits']) or 'none'}); "
                             "prepare it again with `sutra data prepare`")
        total = manifest["splits"][split]["tokens"]
        return _stream([_dataset_pieces(path, manifest, split, [(0, total)])], manifest["vocab_size"], manifest["tokenizer_fingerprint"])
    if path.is_file():
        mix = read_mix(path)
        parts = []
        if split == "train":
            for component in mix["components"]:
                directory = Path(component["resolved_path"])
                ranges = select_ranges(component["dataset_tokens"], component["tokens"], mix["block_tokens"])
                parts.append(_dataset_pieces(directory, component["manifest"], "train", ranges))
        else:  # validation: every component dataset's whole val split, once each
            seen = []
            for component in mix["components"]:
                if component["resolved_path"] not in seen:
                    seen.append(component["resolved_path"])
                    manifest = component["manifest"]
                    parts.append(_dataset_pieces(Path(component["resolved_path"]), manifest, "val", [(0, manifest["splits"]["val"]["tokens"])]))
        return _stream(parts, mix["vocab_size"], mix["tokenizer_fingerprint"])
    hint = (f"; a hub dataset id is not read directly: prepare it first with `sutra data prepare {path} --out DIR` (needs a network), "
            f"or prepare local data: {LOCAL_SOURCES}") if HUB_ID.match(str(path)) and not Path(str(path).split("/")[0]).exists() else ""
    raise SutraError(f"{path}: no such dataset directory or mix manifest; give a directory written by `sutra data prepare` "
                     f"or a manifest written by `sutra data mix`{hint}")


def describe_data(path: str | Path) -> dict:
    """What training reads at `path`, for a run to record: its name, its train tokens per epoch, and
    a mix's components with their shares (each named by the last part of its path)."""
    path = Path(path)
    if path.is_dir():
        return {"name": path.name, "tokens": read_manifest(path)["splits"]["train"]["tokens"]}
    mix = read_mix(path)
    return {"name": path.name, "tokens": mix["tokens"],
            "components": [{"name": Path(c["path"]).name, "weight": c["weight"], "tokens": c["tokens"]} for c in mix["components"]]}


def read_mix(path: Path) -> dict:
    """A mix manifest with each component's dataset manifest attached and checked."""
    raw = SutraError(f"{path}: data to prepare, not a prepared dataset; run `sutra data prepare {path} --out DIR` and give DIR")
    try:
        mix = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        if is_source_file(path) or (isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data"):  # JSON Lines, named .json or not
            raise raw from None
        raise SutraError(f"{path}: not a readable mix manifest ({exc})") from None
    if not isinstance(mix, dict) or mix.get("format") != MIX_FORMAT or mix.get("version") != MIX_VERSION:
        if is_source_file(path) or isinstance(mix, list) or (isinstance(mix, dict) and not {"format", "components"} & mix.keys()):
            # a one-line JSONL, a JSON array of records, one record
            raise raw
        raise SutraError(f"{path}: not a {MIX_FORMAT} v{MIX_VERSION} manifest; write one with `sutra data mix`")
    _check_mix(path, mix)
    for component in mix["components"]:
        directory = Path(component["path"])
        if not directory.is_absolute():
            directory = path.parent / directory
            if not directory.exists():  # the mix moved without its datasets
                raise SutraError(f"{path}: its dataset {component['path']} is named relative to the mix, and {directory} does not exist; "
                                 f"keep the mix beside its datasets, or write it again with `sutra data mix`")
        manifest = read_manifest(directory)
        if manifest["splits"]["train"]["tokens"] != component["dataset_tokens"] or manifest["tokenizer_fingerprint"] != mix["tokenizer_fingerprint"]:
            raise SutraError(f"{path}: dataset {directory} changed since the mix was written; re-run `sutra data mix`")
        component["resolved_path"] = str(directory)
        component["manifest"] = manifest
    return mix


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _text(value) -> bool:
    return isinstance(value, str) and value != ""


# What a mix manifest must hold, as `sutra data mix` writes it; a hand edit (a component's `tokens`,
# say) is read, a wrong type or a missing field is one message rather than a traceback mid-run.
MIX_FIELDS = {"block_tokens": (_count, "a positive whole number"), "vocab_size": (_count, "a positive whole number"),
              "tokenizer_fingerprint": (_text, "a tokenizer fingerprint")}
COMPONENT_FIELDS = {"path": (_text, "a dataset directory"),
                    "tokens": (_count, "a positive whole number of tokens"),
                    "dataset_tokens": (_count, "a positive whole number of tokens")}


def _check_mix(path: Path, mix: dict) -> None:
    components = mix.get("components")
    if not isinstance(components, list) or not components or not all(isinstance(c, dict) for c in components):
        raise SutraError(f"{path}: 'components' must be a non-empty list of datasets; write the mix again with `sutra data mix`")
    for where, entry, fields in [("", mix, MIX_FIELDS)] + [(f"components[{i}].", c, COMPONENT_FIELDS) for i, c in enumerate(components)]:
        for field, (ok, expected) in fields.items():
            if field not in entry:
                raise SutraError(f"{path}: no '{where}{field}'; write the mix again with `sutra data mix`")
            if not ok(entry[field]):
                raise SutraError(f"{path}: '{where}{field}' is {json.dumps(entry[field])}, not {expected}; "
                                 "fix it, or write the mix again with `sutra data mix`")
