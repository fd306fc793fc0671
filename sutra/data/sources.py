"""Input sources for `prepare`: files, directories, globs and hub ids, cut into work units.

A unit is a few MB of input that one worker process parses, filters and tokenizes. Units are
cut at fixed byte/row positions, so the same input always gives the same units whatever the
number of workers; that is what makes the output byte-identical and a killed run resumable.
Problems found while planning (an unreadable or truncated file) become units too, so they are
reported and counted in input order like any bad record.
"""

import glob
import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sutra.errors import SutraError

UNIT_BYTES = 1 << 20  # small enough that the last units keep every worker busy
UNIT_ROWS = 1024
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # .json only when named or globbed: in directories it is usually metadata
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
COMPRESSIONS = (".gz", ".zst")
CORPORA = ("stdlib-docs", "debian-docs")  # offline corpus assets (sutra.data.corpora) usable as a SOURCE by name
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What works without a network, for the messages that turn a hub id away.
LOCAL_SOURCES = (f"JSONL (.jsonl/.json, optionally .gz/.zst), Parquet, Arrow or text files, directories or globs of them, "
                 f"datasets.save_to_disk directories, or a corpus asset ({', '.join(CORPORA)})")


@dataclass
class Unit:
    kind: str  # "jsonl" (byte range of a file), "lines" (JSONL bytes), "parquet", "arrow", "text", "records", "problem"
    name: str  # the file or dataset id, for messages
    first: int = 1  # line number (JSONL) or row number (tables) of the first record
    start: int = 0  # byte offset (jsonl), row group (parquet), first row (arrow)
    stop: int = 0  # end byte (jsonl), rows (parquet), end row (arrow), lines (lines), bytes (text)
    payload: object = None  # decompressed bytes, text file paths, hub records, or (reason, detail) for "problem"


@dataclass
class Source:
    """One input file (or hub dataset) and its units."""
    kind: str
    name: str
    plan: list = field(default_factory=list)  # payload-free units; compressed/hub sources stream theirs
    schema: object = None  # a Parquet or Arrow file's pyarrow.Schema: its columns are known before a row is read


def _kind(path: Path, allow_json: bool) -> str | None:
    name = path.name.lower()
    jsonl = JSONL_SUFFIXES if allow_json else JSONL_SUFFIXES[:-1]
    for compression in COMPRESSIONS:
        if name.endswith(compression):
            name = name[: -len(compression)]
            return "jsonl-compressed" if name.endswith(jsonl) else None
    if name.endswith(jsonl):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def is_source_file(path: Path) -> bool:
    """Whether the name is of a file `sutra data prepare` reads (JSONL, Parquet, Arrow, text): raw data, not a prepared dataset."""
    return _kind(path, allow_json=False) is not None


NOT_REGULAR = "not a regular file (a named pipe, socket or device)"


def expand(specs: list[str], split: str = "train") -> list[tuple[str, Path | str]]:
    """(kind, path-or-hub-id) for every input named by `specs`, in a stable order; `split` picks
    the split of a saved DatasetDict directory (a hub id's is picked when it streams). A split
    other than train asked for where no input has splits is refused: every row would be read."""
    found = []
    for spec in specs:
        kind = spec_kind(spec)
        if kind == "glob":
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            if not matches:
                raise SutraError(f"{spec}: the pattern matches no files")
            found += [item for m in matches for item in _walk(m, split, explicit=False, allow_json=True)]
        elif kind == "path":
            found += _walk(Path(spec), split, explicit=True, allow_json=True)
        elif kind == "asset":
            from sutra import assets

            found += [("jsonl", p) for p in sorted(assets.ensure(spec).glob("*.jsonl"))]
        elif kind == "hub":
            found.append(("hub", spec))
        else:
            raise SutraError(f"{spec}: no such file or directory (nor a corpus asset: {', '.join(CORPORA)}; nor a hub dataset id like 'owner/name')")
    if split != "train" and not any(kind == "hub" or (kind == "arrow" and _in_dataset_dict(path)) for kind, path in found):
        raise SutraError(f"--split {split}: no input has splits (only saved DatasetDict directories and hub dataset ids do), so every "
                         f"row of {', '.join(specs)} would be read; leave --split out, or give the DatasetDict directory")
    return found


def _in_dataset_dict(path: Path) -> bool:
    """Whether a file is of one split of a saved DatasetDict (DICT/SPLIT/data-*.arrow)."""
    return _dict_splits(path.parent.parent) is not None


def expand_outside(specs: list[str], out: Path, split: str = "train") -> tuple[list[tuple[str, Path | str]], int]:
    """`expand`'s inputs each once, leaving out anything inside `out` (a re-run must not read its
    own output), and how many more times the specs named one; none is an error."""
    inputs, seen, repeated = [], set(), 0
    inside_out = out.resolve()
    for kind, path in expand(specs, split):
        key = path if kind == "hub" else Path(path).resolve()
        if kind != "hub" and key.is_relative_to(inside_out):
            continue
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        inputs.append((kind, path))
    if not inputs:
        raise SutraError(f"{', '.join(specs)}: no input files (outside --out {out})")
    return inputs, repeated


def spec_kind(spec: str) -> str | None:
    """What an input names, without reading it: 'glob', 'path', 'asset', 'hub', or None (nothing).
    A file that exists is itself, even if its name holds a glob character ('part[1].jsonl')."""
    if Path(spec).exists():
        return "path"
    if any(ch in spec for ch in "*?["):
        return "glob"
    if spec in CORPORA:
        return "asset"
    return "hub" if HUB_ID.match(spec) and not _looks_local(Path(spec)) else None


def _looks_local(path: Path) -> bool:
    """A missing path that names a data file ('data/train.jsonl') or lies in an existing directory
    is a typo to report, not a hub dataset id to stream."""
    return _kind(path, allow_json=True) is not None or path.parent.is_dir()


def _walk(path: Path, split: str, explicit: bool, allow_json: bool) -> list[tuple[str, Path]]:
    if path.is_dir():
        if (splits := _dict_splits(path)) is not None:  # datasets.DatasetDict.save_to_disk: the asked split only
            if split not in splits:
                if not explicit:  # found inside a corpus folder: --split would apply to its other inputs too
                    return [("no_split", path)]
                raise SutraError(f"{path}: a saved DatasetDict without a '{split}' split (it has {', '.join(splits) or 'none'}); pick one with --split")
            return _walk(path / split, split, explicit=True, allow_json=False)
        if (files := _dataset_files(path)) is not None:  # datasets.Dataset.save_to_disk
            return [("arrow", path / name) for name in files]
        files, unlisted = _files_under(path)  # a saved dataset inside is one of these, read as at the top
        return [("unlisted", d) for d in unlisted] + [item for child in files for item in _walk(child, split, explicit=False, allow_json=False)]
    kind = _kind(path, allow_json)
    if path.exists() and not path.is_file():  # a named pipe, socket or device: reading one may wait forever
        if explicit:
            raise SutraError(f"{path}: {NOT_REGULAR}; give a file or a directory of them")
        return [("irregular", path)]
    if kind is None:
        if explicit:
            raise SutraError(f"{path}: unsupported file type; use JSONL (.jsonl/.json, optionally .gz/.zst), Parquet, Arrow or text (.txt/.md/.rst)")
        return [("unsupported", path)]
    return [(kind, path)]


def _saved_listing(path: Path, key: str, item=lambda x: x) -> list[str] | None:
    """The names listed under `key` in a datasets.save_to_disk metadata file, or None where there is
    none: a file of that name that is damaged or that something else wrote leaves its directory an
    ordinary one, whose files are each read or reported."""
    try:
        names = [item(x) for x in json.loads(path.read_text())[key]]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return names if all(isinstance(name, str) for name in names) else None


def _dict_splits(directory: Path) -> list[str] | None:
    """The splits a datasets.DatasetDict.save_to_disk directory lists, or None where it is not one."""
    return _saved_listing(directory / "dataset_dict.json", "splits")


def _dataset_files(directory: Path) -> list[str] | None:
    """The Arrow files a datasets.Dataset.save_to_disk directory lists, or None where it is not one."""
    return _saved_listing(directory / "state.json", "_data_files", lambda f: f["filename"])


def _is_saved_dataset(directory: Path) -> bool:
    """A datasets.save_to_disk directory (a DatasetDict or a Dataset): its metadata lists its data."""
    return _dict_splits(directory) is not None or _dataset_files(directory) is not None


def _files_under(root: Path) -> tuple[list[Path], list[Path]]:
    """Every file under `root` but hidden ones, in path order, and the directories that cannot be
    listed (reported, not skipped). A saved dataset below `root` is one entry, its directory: its
    metadata files are no data, and a DatasetDict's other splits are not to be read. Links are
    followed (Path.rglob skips a linked directory and a broken link: their data would be lost
    unreported), each directory once, so that a link to a parent does not loop."""
    files, seen, unlisted = [], set(), []
    for directory, subdirs, names in os.walk(root, followlinks=True, onerror=lambda exc: unlisted.append(Path(exc.filename))):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs.clear()
            continue
        seen.add(real)
        if directory != str(root) and {"dataset_dict.json", "state.json"} & set(names) and _is_saved_dataset(Path(directory)):
            files.append(Path(directory))
            subdirs.clear()
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        files += [Path(directory, name) for name in names if not name.startswith(".")]
    return sorted(files), sorted(unlisted)


def _lines_name(name: str) -> str:
    """Where the JSON array's converted lines go: never the array itself, which the shell would empty first."""
    path = Path(name)
    return str(path.with_name(f"{path.stem}.lines.jsonl" if path.suffix == ".jsonl" else f"{path.stem}.jsonl"))


def _problem(name: str, line: int, reason: str, detail: str) -> Unit:
    return Unit("problem", name, first=line, payload=(reason, detail))


def _line_chunks(stream, unit_bytes: int, piece_bytes: int = 1 << 16) -> Iterator[tuple[bytes, int]]:
    """Cut a byte stream into chunks of about `unit_bytes` that end after a newline (the last may
    not): (chunk, lines in it). Read in small pieces, so a stream that fails midway (a truncated
    .gz) still yields every whole line before the failure, and searched piece by piece, so a
    line of any length costs linear time."""
    pending, last_newline = bytearray(), 0  # pending[:last_newline] are whole lines
    read = stream.read1 if hasattr(stream, "read1") else stream.read  # read1: what is decoded so far, before a later error
    while True:
        try:
            piece = read(min(piece_bytes, unit_bytes))
        except Exception:
            if last_newline:
                yield bytes(pending[:last_newline]), pending.count(b"\n", 0, last_newline)
            raise
        if not piece:
            break
        found = piece.rfind(b"\n")
        if found >= 0:
            last_newline = len(pending) + found + 1
        pending += piece
        if last_newline >= unit_bytes:
            chunk = bytes(pending[:last_newline])
            del pending[:last_newline]
            last_newline = 0
            yield chunk, chunk.count(b"\n")
    if pending:
        yield bytes(pending), pending.count(b"\n") + (not pending.endswith(b"\n"))


class _ZstdFrames:
    """The frames of a .zst file decompressed one after another. zstandard's own stream reader ends
    quietly inside a truncated frame, losing the rest of the file unreported; this raises EOFError,
    and ValueError for corrupt data (zstandard's ZstdError derives from no built-in error type)."""

    def __init__(self, path: Path, piece_bytes: int = 1 << 16):
        import zstandard

        self.file, self.piece_bytes = open(path, "rb"), piece_bytes
        self.decompressor, self.frame, self.unread = zstandard.ZstdDecompressor(), None, b""
        self.error = zstandard.ZstdError

    def read1(self, size: int = -1) -> bytes:  # any amount: the caller takes what comes
        while True:
            data, self.unread = self.unread or self.file.read(self.piece_bytes), b""
            if not data:
                if self.frame is not None and not self.frame.eof:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return b""
            if self.frame is None or self.frame.eof:
                self.frame = self.decompressor.decompressobj()
            try:
                output = self.frame.decompress(data)
            except self.error as exc:
                raise ValueError(str(exc)) from None
            if self.frame.eof:
                self.unread = self.frame.unused_data  # the start of the next frame
            if output:
                return output

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


def _open_compressed(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else _ZstdFrames(path)


def _compressed_units(path: Path, unit_bytes: int, with_payload: bool) -> Iterator[Unit]:
    line = 1
    try:
        with _open_compressed(path) as stream:
            for chunk, lines in _line_chunks(stream, unit_bytes):
                yield Unit("lines", str(path), first=line, stop=lines, payload=chunk if with_payload else None)
                line += lines
    except (OSError, EOFError, ValueError) as exc:  # gzip: EOFError/BadGzipFile; zstd: EOFError/ValueError (see _ZstdFrames)
        yield _problem(str(path), line, "truncated_or_corrupt_file", f"{type(exc).__name__}: {exc}; the file's lines from here on are lost (how many is unknown)")


def plan(inputs: list[tuple[str, Path | str]], unit_bytes: int = UNIT_BYTES) -> list[Source]:
    """Read every input of `expand()` once, cheaply, to fix its units."""
    sources = []
    for kind, path in inputs:
        name = str(path)
        try:
            sources.append(_plan_one(kind, path, name, unit_bytes))
        except OSError as exc:
            sources.append(Source("problem", name, [_problem(name, 0, "unreadable_file", exc.strerror or str(exc))]))
    return _group_text_files(sources, unit_bytes)


def _is_json_array(path: Path) -> bool:
    """Whether a .json/.jsonl file holds one JSON array (pretty-printed, or all on one line), not
    JSON Lines whose first line happens to be a list: that line alone is a bad record."""
    with open(path, "rb") as f:
        first = f.readline().removeprefix(b"\xef\xbb\xbf")
        while first and not first.strip():
            first = f.readline()
        if not first.lstrip().startswith(b"["):
            return False
        while rest := f.read(1 << 16):
            if rest.strip():
                break
        else:
            return True  # the array is the file's only line
    try:
        json.loads(first)
    except (ValueError, RecursionError):
        return True  # '[' or '[{"text": ...},' opens an array spread over lines
    return False


def _plan_one(kind: str, path, name: str, unit_bytes: int) -> Source:
    if kind == "hub":
        return Source("hub", name)
    if kind in ("unsupported", "irregular"):
        what = NOT_REGULAR if kind == "irregular" else "not JSONL, Parquet, Arrow or text"
        return Source("problem", name, [_problem(name, 0, "unsupported_file", f"{what}; not read")])
    if kind == "no_split":
        splits = ", ".join(_dict_splits(path) or []) or "none"
        return Source("problem", name, [_problem(name, 0, "missing_split", f"a saved DatasetDict without the --split asked (it has {splits}); "
                                                 "not read: name it alone to read another of its splits")])
    if kind == "unlisted":
        return Source("problem", name, [_problem(name, 0, "unreadable_directory", "a directory that cannot be listed (check its permissions); the files in it are not read")])
    if kind == "text":
        return Source("text", name, [Unit("text", name, stop=path.stat().st_size)])
    if kind == "jsonl":
        if _is_json_array(path):
            return Source("problem", name, [_problem(name, 1, "json_array", "a JSON array, not JSON Lines (one object per line); "
                                                        f"convert it with: jq -c '.[]' {name} > {_lines_name(name)}")])
        units, offset, line = [], 0, 1
        with open(path, "rb") as f:
            for chunk, lines in _line_chunks(f, unit_bytes):
                units.append(Unit("jsonl", name, first=line, start=offset, stop=offset + len(chunk)))
                offset += len(chunk)
                line += lines
        return Source("jsonl", name, units)
    if kind == "jsonl-compressed":
        units = list(_compressed_units(path, unit_bytes, with_payload=False))
        return Source(kind, name, units)
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            units, row = [], 0
            for group in range(parquet.metadata.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                units.append(Unit("parquet", name, first=row, start=group, stop=rows))
                row += rows
            return Source(kind, name, units, parquet.schema_arrow)
        table = read_arrow(path)
        units = [Unit("arrow", name, first=r, start=r, stop=min(r + UNIT_ROWS, table.num_rows)) for r in range(0, table.num_rows, UNIT_ROWS)]
        return Source(kind, name, units, table.schema)
    except pa.ArrowException as exc:
        return Source("problem", name, [_problem(name, 0, "truncated_or_corrupt_file", f"{type(exc).__name__}: {exc}")])


def check_text_column(sources: list[Source], text_field: str, log) -> None:
    """A table without the text column, or with a column of no text, would have every row dropped
    one by one: one error, naming the columns there are. Text files have no fields: said once."""
    import pyarrow as pa

    if text_field != "text" and (files := sum(len(unit.payload) for s in sources if s.kind == "text" for unit in s.plan)):
        print(f"sutra: warning: --text-field {text_field} does not apply to text files; the {files:,} read are each one whole document", file=log)
    for source in sources:
        if source.schema is None:
            continue
        if text_field not in source.schema.names:
            raise SutraError(f"{source.name}: no '{text_field}' column (its columns: {', '.join(source.schema.names)}); "
                             f"name the text column with --text-field")
        kind = source.schema.field(text_field).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        # (string_view came in pyarrow 16)
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
            raise SutraError(f"{source.name}: column '{text_field}' holds {kind}, not text; name the text column with --text-field")


def _group_text_files(sources: list[Source], unit_bytes: int) -> list[Source]:
    """Merge runs of text files (one document each) into units of about `unit_bytes`."""
    grouped = []
    for source in sources:
        previous = grouped[-1] if grouped else None
        if source.kind == "text" and previous is not None and previous.kind == "text" and previous.plan[-1].stop < unit_bytes:
            unit = previous.plan[-1]
            unit.payload.append(source.name)
            unit.stop += source.plan[0].stop
        else:
            if source.kind == "text":
                source.plan[0].payload = [source.name]
            grouped.append(source)
    return grouped


def read_arrow(path):
    """A whole Arrow IPC file (file or stream format), memory-mapped."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_stream(source).read_all()


def iter_units(sources: list[Source], unit_bytes: int, hub_split: str = "train") -> Iterator[Unit]:
    """Every unit in order, with payloads loaded for the kinds that stream (compressed, hub)."""
    for source in sources:
        if source.kind == "jsonl-compressed":
            yield from _compressed_units(Path(source.name), unit_bytes, with_payload=True)
        elif source.kind == "hub":
            yield from _hub_units(source.name, hub_split)
        else:
            yield from source.plan


def _hub_units(dataset_id: str, split: str) -> Iterator[Unit]:
    from sutra.hub import hub_unreachable

    if offline := hub_unreachable():  # streaming reads the hub itself: no cache can serve it
        raise SutraError(f"{dataset_id}: cannot stream split '{split}' from the Hugging Face Hub ({offline}); "
                         f"download the dataset elsewhere and pass it as local data: {LOCAL_SOURCES}")
    try:
        import datasets

        stream = iter(datasets.load_dataset(dataset_id, split=split, streaming=True))
        batch, row = [], 0
        for record in stream:
            batch.append(record)
            if len(batch) == UNIT_ROWS:
                yield Unit("records", dataset_id, first=row, payload=batch)
                row, batch = row + len(batch), []
        if batch:
            yield Unit("records", dataset_id, first=row, payload=batch)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError ...)
        raise SutraError(f"{dataset_id}: could not stream split '{split}' from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
                         f"this machine may be offline: download the dataset elsewhere and pass it as local data: {LOCAL_SOURCES}") from None


def input_changed(name: str) -> SutraError:
    return SutraError(f"{name} changed while it was read; the dataset would mix two versions of it. "
                      f"Run the same command again once nothing writes to it, with --overwrite")


def read_unit(unit: Unit, text_field: str, columns: set[str], max_chars: int | None = None) -> Iterator[tuple[str, object, tuple[str, str] | None]]:
    """(location, record, problem) for every record of a unit; exactly one of record/problem is set.
    A text file certain to exceed `max_chars` (over 4 bytes per character) is reported, not read."""
    if unit.kind == "problem":
        yield f"{unit.name}:{unit.first}" if unit.first else unit.name, None, unit.payload
    elif unit.kind in ("jsonl", "lines"):
        if unit.kind == "jsonl":
            with open(unit.name, "rb") as f:
                f.seek(unit.start)
                data = f.read(unit.stop - unit.start)
            if len(data) != unit.stop - unit.start:  # the records planned past the new end would vanish unreported
                raise input_changed(unit.name)
        else:
            data = unit.payload
        yield from _jsonl_records(unit.name, unit.first, data)
    elif unit.kind == "text":
        for path in unit.payload:
            try:
                size = Path(path).stat().st_size
                if max_chars is not None and size > 4 * max_chars:
                    yield path, None, ("too_long", f"{size:,} bytes: over --max-chars {max_chars:,} characters")
                    continue
                text = Path(path).read_bytes().decode("utf-8").removeprefix("\ufeff")  # the byte-order mark some editors write
                yield path, {text_field: text, "source": path}, None
            except UnicodeDecodeError as exc:
                yield path, None, ("invalid_utf8", f"byte {exc.start}")
            except OSError as exc:
                yield path, None, ("unreadable_file", exc.strerror or str(exc))
    elif unit.kind in ("parquet", "arrow"):
        try:
            table = _read_table(unit, columns)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt pages
            rows = unit.stop - (unit.start if unit.kind == "arrow" else 0)  # one drop, so say how many records it is
            yield f"{unit.name}:row {unit.first}", None, ("truncated_or_corrupt_file", f"{type(exc).__name__}: {str(exc).strip()}; "
                                                           f"rows {unit.first:,}-{unit.first + rows - 1:,} ({rows:,} records) are lost")
            return
        for i, record in enumerate(table.to_pylist()):
            yield f"{unit.name}:row {unit.first + i}", record, None
    elif unit.kind == "records":
        for i, record in enumerate(unit.payload):
            yield f"{unit.name}:row {unit.first + i}", record, None
    else:
        raise ValueError(f"unknown unit kind {unit.kind}")


def _read_table(unit: Unit, columns: set[str]):
    if unit.kind == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(unit.name)
        wanted = [c for c in parquet.schema_arrow.names if c in columns]
        return parquet.read_row_group(unit.start, columns=wanted)
    table = read_arrow(unit.name)
    return table.select([c for c in table.column_names if c in columns]).slice(unit.start, unit.stop - unit.start)


def _jsonl_records(name: str, first_line: int, data: bytes):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=first_line):
        location = f"{name}:{number}"
        raw = raw.rstrip(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark some editors write
        if not raw.strip():
            yield location, None, ("blank_line", "no JSON on this line")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield location, None, ("invalid_utf8", f"byte {exc.start} of the line")
            continue
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json can parse
            yield location, None, ("malformed_json", str(exc) if isinstance(exc, ValueError) else "nested too deeply")
            continue
        if not isinstance(record, dict):
            yield location, None, ("malformed_json", f"a JSON {type(record).__name__}, not an object")
            continue
        yield location, record, None
