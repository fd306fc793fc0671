"""Documents to rephrase: anything `sutra data prepare` reads (its readers are reused, so JSONL
(.gz/.zst), Parquet, Arrow, text files, directories and globs all work), split into chunks
that fit the teacher's context at paragraph boundaries."""

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass
class SourceReport:
    documents: int = 0
    problems: Counter = field(default_factory=Counter)  # unreadable records by reason
    examples: list[str] = field(default_factory=list)  # the first few, as "location (reason)"

    def problem(self, location: str, reason: str) -> None:
        self.problems[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{location} ({reason})")


def source_inputs(specs: list[str], out: Path) -> list:
    """The files (and hub ids) `specs` name, each once and none inside `out` (a re-run must not
    rephrase its own output); a path that does not exist is an error here, before any work."""
    from sutra.data.sources import expand_outside

    return expand_outside(specs, out)[0]


def inputs_digest(inputs: list) -> str:
    """A digest of the inputs' contents, in order (a hub dataset by its id): rephrase numbers its
    items by their place in the sources, so a resume over changed sources would redo some of them."""
    digest = hashlib.sha256()
    for kind, path in inputs:
        digest.update(f"{kind}\0{path}\0".encode())
        if kind != "hub":
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def iter_documents(inputs: list, report: SourceReport, text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(location, text) for every readable document of `source_inputs`, in input order; problems are counted."""
    from sutra.data.sources import UNIT_BYTES, iter_units, plan, read_unit

    for unit in iter_units(plan(inputs), UNIT_BYTES):
        for location, record, problem in read_unit(unit, text_field, {text_field}):
            text = record.get(text_field) if record is not None else None
            if problem is not None:
                report.problem(location, problem[0])
            elif not isinstance(text, str) or not text.strip():
                report.problem(location, f"no_{text_field}")
            else:
                report.documents += 1
                yield location, text


def chunk_document(text: str, tokenizer, max_tokens: int) -> list[str]:
    """Consecutive paragraphs packed into chunks of at most max_tokens; a longer paragraph is cut by tokens."""
    chunks, current, size = [], [], 0
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        ids = tokenizer.encode(paragraph)
        pieces = [(tokenizer.decode(ids[i:i + max_tokens]), len(ids[i:i + max_tokens])) for i in range(0, len(ids), max_tokens)] \
            if len(ids) > max_tokens else [(paragraph, len(ids))]
        for piece, n in pieces:
            if current and size + n > max_tokens:
                chunks.append("\n\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += n
    if current:
        chunks.append("\n\n".join(current))
    return chunks
