"""The output of one shard and its journal, written so that a killed run resumes exactly.

    OUT/train_SSS.jsonl          accepted records (13-field schema), one per line
    OUT/.synth/shard_SSS.log     one JSON line per finished item: accepted or rejected (+ reason)
    OUT/.synth/shard_SSS.json    the run's settings, checked on resume

Bookkeeping lives in the hidden .synth/ directory so that `sutra data prepare OUT` reads only the data.

Every line is flushed and fsync'ed before the next item is taken as done. A kill can only leave
a partial last line, which resume cuts off (and counts). An accepted record goes to the data file
before its journal line, so on resume an item counts as done if either file has it: nothing is
lost and nothing is written twice.
"""

import json
import os
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import atomic_write_json, check_output_path, decode_text, read_input
from sutra.processes import exclusive

META_DIR = ".synth"
SCHEMA_FIELDS = (
    "id", "concept_name", "domain", "content_type", "text", "quality_score", "information_density", "complexity_level",
    "token_count", "prerequisites", "builds_to", "cross_domain_connections", "quality_assessment",
)


# a request the server refused (a context or size limit of its own) says nothing of the item: a
# restart, after the server or the settings were changed, asks for it again
ASKED_AGAIN = "request_refused"


# what a changed setting means, where its values do not say it
SETTING_NOTES = {"sources_digest": ": the sources' contents changed since the run began, and a resume would rephrase some documents "
                                   "twice, as its items are numbered by their place in the sources"}


def latest_entries(entries: list[dict]) -> list[dict]:
    """Each item's last journal line: an item asked again after a refusal has one line per try."""
    return list({entry["id"]: entry for entry in entries}.values())


@dataclass
class ResumeState:
    records: list[dict] = field(default_factory=list)  # accepted so far, in order
    entries: list[dict] = field(default_factory=list)  # journal lines so far
    repaired_lines: int = 0

    @property
    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records} | {e["id"] for e in latest_entries(self.entries) if e.get("reason") != ASKED_AGAIN}


class Rows(list):
    """The records of a JSONL file, and the 1-based line of each (blank lines are skipped)."""

    def __init__(self, rows=(), lines=()):
        super().__init__(rows)
        self.lines = list(lines)


def read_jsonl(path: Path, repair_tail: bool = False, skip_tail: bool = False) -> tuple[Rows, int]:
    """The lines of `path` as dicts (none where there is no file). With repair_tail, a partial last
    line (a killed writer) is cut off the file and counted; with skip_tail it is left unread (another
    shard may be writing it); any other bad line is an error naming the file and line."""
    if not path.exists():
        return Rows(), 0
    data = read_input(path)
    repaired = 0
    if skip_tail:
        data = data[: data.rfind(b"\n") + 1]
    elif repair_tail and data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        data, repaired = data[:keep], 1
    rows = Rows()
    for number, line in enumerate(decode_text(path, data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
            rows.lines.append(number)
        except json.JSONDecodeError as exc:
            raise SutraError(f"{path}:{number}: not valid JSON ({exc.msg}); the file was edited or corrupted, fix or remove that line") from None
    return rows, repaired


def check_records(path: Path, rows: Rows, fields, what: str, types: dict[str, type] | None = None) -> None:
    """One clear error, naming the line, where a row of `path` is not a mapping with every one of
    `fields` (and each field of `types` of its type)."""
    for line, row in zip(rows.lines, rows):
        missing = [k for k in fields if k not in row] if isinstance(row, dict) else list(fields)
        if missing:
            raise SutraError(f"{path}:{line}: the record has no {missing[0]!r} field; {what}")
        for key, kind in (types or {}).items():
            if not isinstance(row[key], kind) or isinstance(row[key], bool):  # (a bool is an int to Python)
                raise SutraError(f"{path}:{line}: the record's {key!r} is {json.dumps(row[key])}, not {'text' if kind is str else 'a whole number'}; {what}")


def _first_difference(recorded: dict, settings: dict, shard_count_only: bool = False) -> str | None:
    """The first setting `recorded` holds with another value (keys an older record lacks are not
    compared); with `shard_count_only`, of "shard" ("i/N") only the N (another shard's record)."""
    def same(key: str) -> bool:
        if key == "shard" and shard_count_only:
            return recorded[key].split("/")[-1] == settings[key].split("/")[-1]
        return recorded[key] == settings[key]

    return next((k for k in settings if k in recorded and not same(k)), None)


def prepare_output_dir(out: str | Path) -> Path:
    """`out` as a directory a synth command can write, created if need be: one clear error, before
    any work, where it is a file, lies under a file, or cannot be written (permissions, a read-only
    filesystem)."""
    out = check_output_path(out, directory=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SutraError(f"{out}: cannot create the output directory ({exc.strerror}); give a --out you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise SutraError(f"{out}: cannot be written: no permission to write in it (or a read-only filesystem); give a --out you can write")
    return out


class ShardFiles:
    def __init__(self, out: str | Path, shard: int = 0):
        self.out = Path(out)
        self.shard = shard
        self.data_path = self.out / f"train_{shard:03d}.jsonl"
        self.journal_path = self.out / META_DIR / f"shard_{shard:03d}.log"
        self.manifest_path = self.out / META_DIR / f"shard_{shard:03d}.json"
        self._data = self._journal = None
        self._lock = ExitStack()

    def written(self) -> Path | None:
        """The first of this shard's data file and journal that holds anything: an item was made.
        A settings record without them is a run that stopped before its first item (its server
        unreachable, a mistyped --model): it binds nothing, and the next run records its own."""
        return next((p for p in (self.data_path, self.journal_path) if p.is_file() and p.stat().st_size), None)

    def open(self, settings: dict) -> ResumeState:
        """Check `settings` against a previous run in the same place, recover its files, open for append."""
        found = self.written()
        if found and not self.manifest_path.is_file():
            # no settings record: these files were not written by a synth run (or it was deleted)
            raise SutraError(
                f"{found} exists but {self.manifest_path} does not, so it was not written by 'sutra synth' and cannot be "
                "resumed; write to a new --out (or move the file away); nothing was changed"
            )
        prepare_output_dir(self.journal_path.parent)
        # one process per shard: two would make the same items and both append them
        self._lock.enter_context(exclusive(self.journal_path.parent, "synth", f"shard_{self.shard:03d}.lock",
                                           f"{self.out} (shard {self.shard})"))
        try:
            resumed = found is not None
            if resumed:
                previous = self._read_manifest(self.manifest_path)
                k = _first_difference(previous, settings)
                if k is not None:
                    raise SutraError(
                        f"{self.out} holds a run with different settings ({k}: {previous[k]!r} then, {settings[k]!r} now{SETTING_NOTES.get(k, '')}); "
                        "resume with the same settings or write to a new --out"
                    )
            self._check_other_shards(settings)
            if not resumed:
                atomic_write_json(self.manifest_path, settings)
            records, repaired_data = read_jsonl(self.data_path, repair_tail=True)
            entries, repaired_journal = read_jsonl(self.journal_path, repair_tail=True)
            check_records(self.data_path, records, ("id", "text", "token_count"), "this file was edited; fix that record, or write to a new --out",
                          {"id": str, "text": str, "token_count": int})
            check_records(self.journal_path, entries, ("id", "status"), "the journal was edited; fix that line, or write to a new --out",
                          {"id": str, "status": str})
            self._data = open(self.data_path, "ab", buffering=0)  # unbuffered: _append sees what reached the file
            self._journal = open(self.journal_path, "ab", buffering=0)
        except BaseException:
            self.close()
            raise
        return ResumeState(records, entries, repaired_data + repaired_journal)

    def _check_other_shards(self, settings: dict) -> None:
        """The shards of one --out make one dataset: the same plan split the same way (else one would
        redo another's items) from the same settings."""
        for path in sorted(self.manifest_path.parent.glob("shard_*.json")):
            number = path.stem.removeprefix("shard_")
            if path == self.manifest_path or not number.isdigit() or not ShardFiles(self.out, int(number)).written():
                continue
            other = self._read_manifest(path)
            k = _first_difference(other, settings, shard_count_only=True)
            if k is not None:
                raise SutraError(
                    f"{self.out} holds shard {other.get('shard')} of a run with other settings ({k}: {other[k]!r} there, {settings[k]!r} "
                    "here); every shard of one --out is made with the same settings: use them, or write to a new --out"
                )

    def _read_manifest(self, path: Path) -> dict:
        try:
            previous = json.loads(read_input(path))
        except ValueError as exc:  # (JSONDecodeError, UnicodeDecodeError)
            previous, problem = None, str(exc).splitlines()[0]
        else:
            problem = "not a JSON object" if not isinstance(previous, dict) else "no 'kind' field: not a synth run's record"
        if not isinstance(previous, dict) or "kind" not in previous:  # (every record has had its kind: graph or rephrase)
            raise SutraError(
                f"{path}: the run's settings record is corrupted ({problem}), "
                f"so {self.out} cannot be resumed safely; restore that file, or write to a new --out"
            )
        return previous

    @staticmethod
    def _append(f, row: dict) -> None:
        """One whole line or none: a write that fails (a full disk) is cut back off, so no reader
        (`sutra data prepare`, another shard) meets half a record."""
        line = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        start = os.lseek(f.fileno(), 0, os.SEEK_END)
        try:
            while line:
                line = line[f.write(line):]
            os.fsync(f.fileno())
        except OSError:
            with suppress(OSError):
                os.ftruncate(f.fileno(), start)
            raise

    def accept(self, record: dict, entry: dict) -> None:
        if tuple(record) != SCHEMA_FIELDS:
            raise AssertionError(f"record fields {tuple(record)} differ from the schema")
        self._append(self._data, record)
        self._append(self._journal, {**entry, "status": "accepted"})

    def reject(self, entry: dict) -> None:
        self._append(self._journal, {**entry, "status": "rejected"})

    def close(self) -> None:
        for f in (self._data, self._journal):
            if f:
                f.close()
        self._data = self._journal = None
        self._lock.close()
