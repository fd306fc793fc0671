"""`sutra data prepare`: any corpus → filtered, tokenized uint16 shards with a document index.

Worker processes parse, filter and tokenize fixed work units (see sources.py); the parent keeps
their results in input order and closes a shard pair (train + val) once the pending train tokens
reach --shard-tokens. After each shard pair it saves progress.json (next unit, stats so far),
so a killed run resumes at the last shard boundary and produces the same bytes as an
uninterrupted one. manifest.json is written last.
"""

import errno
import hashlib
import json
import math
import os
import re
import signal
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sutra.data import sources as src
from sutra.data.filters import Filters, WrongType, has_field
from sutra.data.shards import FORMAT, MAX_VOCAB, TOKEN_DTYPE, read_stats
from sutra.data.writer import ShardWriter
from sutra.errors import SutraError
from sutra.io import atomic_write_json, check_output_path
from sutra.processes import LOCK_FILE, die_with_parent, exclusive
from sutra.tokenizer import load_tokenizer

SHOWN_PROBLEMS = 20
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # write errors that making room mends (a read error has other causes)
STAT_FIELDS = {"domain": "tokens_by_domain", "content_type": "tokens_by_content_type"}


@dataclass(frozen=True)
class PrepareConfig:
    sources: tuple[str, ...]
    out: Path
    tokenizer: str | None = None  # None: the offline SmolLM2 tokenizer
    text_field: str = "text"
    filters: Filters = Filters()
    val_fraction: float = 0.005
    min_val_docs: int = 5
    shard_tokens: int = 32_000_000
    max_chars: int = 4_000_000
    unit_bytes: int = src.UNIT_BYTES  # input per work unit; fixes the shard boundaries, so it is part of the recipe
    workers: int = 0  # 0: one per CPU core
    strict: bool = False
    overwrite: bool = False
    hub_split: str = "train"

    def __post_init__(self):
        if not self.sources:
            raise SutraError("no SOURCE given: name JSONL/Parquet/Arrow/text files, directories, globs or hub dataset ids")
        if not 0 <= self.val_fraction < 1:
            raise SutraError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        for name in ("min_val_docs", "workers"):
            if getattr(self, name) < 0:
                raise SutraError(f"--{name.replace('_', '-')} must not be negative")
        for name in ("shard_tokens", "max_chars", "unit_bytes"):
            if getattr(self, name) < 1:
                raise SutraError(f"--{name.replace('_', '-')} must be positive")


@dataclass
class UnitResult:
    tokens: np.ndarray  # kept documents, each followed by the separator
    lengths: np.ndarray  # tokens per kept document (separator included)
    hashes: np.ndarray  # uint64 text hash per kept document: the parent splits on it once the validation share is known
    records: int = 0
    problems: list = field(default_factory=list)  # (location, reason, detail)
    filtered: Counter = field(default_factory=Counter)
    labelled_tokens: dict = field(default_factory=dict)  # stats key -> Counter(label -> tokens)
    where_fields: Counter = field(default_factory=Counter)  # --where field -> records that have it
    where_uncomparable: Counter = field(default_factory=Counter)  # --where condition -> records whose value it cannot compare


# ---- worker side ----------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(tokenizer_file: str, settings: dict, parent_pid: int | None = None) -> None:
    if parent_pid is not None:  # a pool process: the parent handles Ctrl-C, and a killed parent takes it along
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        die_with_parent(parent_pid)
    # one process per core already; a rayon pool in each would oversubscribe the CPUs
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from sutra.tokenizer import fast_tokenizer

    backend = fast_tokenizer(tokenizer_file)
    # "<|endoftext|>" written in a document is text, not the separator: tokenized as a special
    # token it would end a document that the index says goes on (and let data inject chat tokens)
    backend.encode_special_tokens = True
    _worker.update(settings, backend=backend)


def _screen(unit: src.Unit):
    """(location, record, UTF-8 text, problem, rejecting filter) for every record of `unit`: the
    keep/drop decision that counting and processing share. A value a filter cannot compare is a
    wrong_type problem, with that filter as the rejecting one."""
    w = _worker
    for location, record, problem in src.read_unit(unit, w["text_field"], w["columns"], w["max_chars"]):
        data = rejected = None
        if problem is None:
            problem, data = _check_text(record.get(w["text_field"]), w["text_field"], w["max_chars"])
        if problem is None:
            try:
                rejected = w["filters"].reject(record)
            except WrongType as exc:
                problem, rejected = ("wrong_type", str(exc)), exc.check
        yield location, record, data, problem, rejected


def count_kept(unit: src.Unit) -> int:
    """Documents of `unit` that survive the checks and filters (parsed and filtered, not tokenized)."""
    return sum(problem is None and not rejected for _, _, _, problem, rejected in _screen(unit))


def process_unit(unit: src.Unit) -> UnitResult:
    w = _worker
    texts, hashes, labels = [], [], []
    result = UnitResult(np.zeros(0, TOKEN_DTYPE), np.zeros(0, np.int64), np.zeros(0, np.uint64))
    for location, record, data, problem, rejected in _screen(unit):
        result.records += 1
        if isinstance(record, dict):
            result.where_fields.update(c.field for c in w["filters"].where if has_field(record, c.field))
        if problem is not None:
            result.problems.append((location, *problem))
            if rejected and rejected.startswith("where:"):
                result.where_uncomparable[rejected.removeprefix("where:")] += 1
        elif rejected:
            result.filtered[rejected] += 1
        else:
            texts.append(record[w["text_field"]])
            hashes.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
            labels.append({key: record.get(name) for name, key in STAT_FIELDS.items()})
    if not texts:
        return result
    encodings = w["backend"].encode_batch(texts, add_special_tokens=False)
    result.lengths = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    result.tokens = tokens = np.empty(int(result.lengths.sum()), dtype=TOKEN_DTYPE)
    position = 0
    for encoding, length in zip(encodings, result.lengths.tolist()):
        tokens[position:position + length - 1] = encoding.ids
        tokens[position + length - 1] = w["separator"]
        position += length
    result.hashes = np.array(hashes, dtype=np.uint64)
    result.labelled_tokens = {key: Counter() for key in STAT_FIELDS.values()}
    for label, length in zip(labels, result.lengths.tolist()):
        for key, value in label.items():
            if isinstance(value, str):
                result.labelled_tokens[key][value] += length
    return result


def _check_text(text, text_field: str, max_chars: int):
    """(problem or None, UTF-8 bytes of the text)."""
    if text is None:
        return ("missing_text", f"no '{text_field}' field (set the text field with --text-field)"), None
    if not isinstance(text, str):
        return ("wrong_type", f"'{text_field}' is {type(text).__name__}, expected a string"), None
    if len(text) > max_chars:
        return ("too_long", f"{len(text):,} characters > --max-chars {max_chars:,}"), None
    if not text.strip():
        return ("empty", "the text is empty or whitespace"), None
    try:
        return None, text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a \udXXX escape
        return ("invalid_utf8", f"unencodable character at {exc.start}"), None


# ---- parent side ----------------------------------------------------------------------------

def _new_stats() -> dict:
    return {
        "input_records": 0,
        "documents": {"train": 0, "val": 0},
        "tokens": {"train": 0, "val": 0},
        "tokens_by_domain": {},
        "tokens_by_content_type": {},
        "dropped": {},
        "filtered": {},
        "where_fields": {},
        "where_uncomparable": {},
    }


def _accumulate(stats: dict, result: UnitResult, is_val: np.ndarray) -> None:
    stats["input_records"] += result.records
    for split, mask in (("train", ~is_val), ("val", is_val)):
        stats["documents"][split] += int(mask.sum())
        stats["tokens"][split] += int(result.lengths[mask].sum())
    for key, counts in result.labelled_tokens.items():
        for label, tokens in counts.items():
            stats[key][label] = stats[key].get(label, 0) + tokens
    for reason in [p[1] for p in result.problems]:
        stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
    for reason, count in result.filtered.items():
        stats["filtered"][reason] = stats["filtered"].get(reason, 0) + count
    for key in ("where_fields", "where_uncomparable"):
        found = stats.setdefault(key, {})  # (absent from a progress.json written before it was counted)
        for name, count in getattr(result, key).items():
            found[name] = found.get(name, 0) + count


def _describe_input(kind: str, path) -> dict:
    """An input as the recipe records it: a file with its size and mtime, so a changed one shows."""
    entry = {"kind": kind, "path": str(Path(path).resolve()) if kind != "hub" else str(path)}
    if kind != "hub":
        try:
            info = Path(path).stat()
            entry.update(bytes=info.st_size, mtime_ns=info.st_mtime_ns)
        except OSError:
            entry.update(bytes=None)
    return entry


def _recipe(config: PrepareConfig, inputs, tokenizer) -> dict:
    return {
        "inputs": [_describe_input(kind, path) for kind, path in inputs],
        "text_field": config.text_field,
        "filters": config.filters.describe(),
        "val_fraction": config.val_fraction,
        "min_val_docs": config.min_val_docs,
        "shard_tokens": config.shard_tokens,
        "max_chars": config.max_chars,
        "unit_bytes": config.unit_bytes,
        "hub_split": config.hub_split,
        "tokenizer_fingerprint": tokenizer.fingerprint,
    }


def _check_unchanged(recipe: dict) -> None:
    """Stop before the manifest is written if an input file was rewritten during the run (a
    resumed run, since it began): its shards would mix two versions of it."""
    for entry in recipe["inputs"]:
        if entry.get("bytes") is not None and _describe_input(entry["kind"], entry["path"]) != entry:
            raise src.input_changed(entry["path"])


# What `prepare` writes into --out: --overwrite removes these and nothing else.
OWN_FILE = re.compile(r"(?:train|val)-\d{5}\.(?:bin|idx)|manifest\.json|stats\.json|progress\.json|dropped\.tsv|\..+\.tmp")


def _saved_state(out: Path) -> dict | None:
    """The manifest (a finished dataset) or progress.json (an unfinished one) at `out`; None when
    `out` holds neither. Either must carry a prepare recipe: a file of that name written by
    something else does not make `out` a dataset that --overwrite may replace."""
    for name in ("manifest.json", "progress.json"):
        path = out / name
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("recipe"), dict) and (name == "progress.json" or saved.get("format") == FORMAT):
            return {**saved, "complete": name == "manifest.json"}
        raise SutraError(f"{path} is not a prepared dataset's {name}, so {out} is not one; choose an empty or new --out directory")
    return None


def _existing(out: Path) -> dict | None:
    """`_saved_state(out)`, refusing an `out` that is a file or a non-empty directory of other things."""
    if out.exists() and not out.is_dir():
        raise SutraError(f"--out {out} is a file; name a directory for the prepared dataset")
    check_output_path(out, directory=True)  # under a file, or where we may not write: one line, not a traceback from mkdir
    saved = _saved_state(out)
    if saved is None and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise SutraError(f"{out} exists and is not a prepared dataset; choose an empty or new --out directory")
    return saved


def _first_change(then: dict, now: dict) -> str:
    """What differs first between a saved recipe and this one, in words."""
    for key in [*now, *(k for k in then if k not in now)]:
        if then.get(key) == now.get(key):
            continue
        if key == "inputs":
            old, new = ({i.get("path"): i for i in inputs if isinstance(i, dict)} for inputs in (then.get(key) or [], now.get(key) or []))
            for path in [*new, *old]:
                if old.get(path) != new.get(path):
                    return f"input {path} {'added' if path not in old else 'left out' if path not in new else 'changed since'}"
            return "the inputs in another order"
        return f"{key}: {json.dumps(then.get(key))} then, {json.dumps(now.get(key))} now"
    return "no difference"  # (not reached: called for recipes that differ)


def _claim_output(out: Path, recipe: dict, overwrite: bool) -> dict | None:
    """Make `out` ready for this recipe; return saved progress to resume from (or None)."""
    saved = _existing(out)
    if saved is not None:
        if saved["recipe"] == recipe and not overwrite:
            return saved
        unstarted = not saved["complete"] and saved.get("next_unit") == 0  # no shard kept yet: nothing to lose
        if not (overwrite or unstarted):
            raise SutraError(f"{out} holds a dataset prepared from other inputs or settings ({_first_change(saved['recipe'], recipe)}); "
                             "pass --overwrite to replace it, or choose another --out")
        _remove_dataset(out)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _remove_dataset(out: Path) -> None:
    """Remove a prepared dataset's files, refusing (before removing any) when `out` also holds
    files `prepare` does not write: those may be the user's own, inputs included."""
    entries = [p for p in out.iterdir() if p.name != LOCK_FILE]
    foreign = sorted(p.name for p in entries if not (p.is_file() and OWN_FILE.fullmatch(p.name)))
    if foreign:
        raise SutraError(f"{out} holds files that `sutra data prepare` does not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                         f"they are not replaced: move them, or choose another --out")
    # the marker files last: a kill part way leaves a dataset that --overwrite still recognises
    for path in sorted(entries, key=lambda p: p.name in ("manifest.json", "progress.json")):
        path.unlink()


def _inputs(config: PrepareConfig, out: Path, log) -> list:
    """The inputs SOURCE names, each once, leaving out anything inside --out (a re-run must not
    read its own shards)."""
    inputs, repeated = src.expand_outside(list(config.sources), out, config.hub_split)
    if repeated:
        print(f"sutra: {repeated} input file{'s' if repeated > 1 else ''} named more than once by the SOURCEs "
              f"{'are' if repeated > 1 else 'is'} read once (to weight datasets, use `sutra data mix`)", file=log)
    return inputs


def _ordered_results(pool, units, ahead: int, work=process_unit):
    """Results of `work` over `units`, in order, with at most `ahead` units in flight."""
    if pool is None:
        yield from map(work, units)
        return
    pending = deque()
    try:
        for unit in units:
            pending.append(pool.submit(work, unit))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # a consumer that stops early leaves no queued work ahead of its next batch
        for future in pending:
            future.cancel()


def _val_fraction(config: PrepareConfig, sources: list, pool, ahead: int, log) -> float:
    """The validation share: --val-fraction, raised so that about --min-val-docs of the documents
    that are kept land in it. What is kept (the filters', and the records that hold a text) is
    unknown until the records are read, so they are counted first (parsed and filtered, not
    tokenized), only until enough are found that --val-fraction alone gives --min-val-docs."""
    fraction = config.val_fraction
    if fraction == 0 or config.min_val_docs == 0:
        return fraction
    enough, documents = math.ceil(config.min_val_docs / fraction), 0
    for kept in _ordered_results(pool, src.iter_units(sources, config.unit_bytes, config.hub_split), ahead, work=count_kept):
        documents += kept
        if documents >= enough:
            return fraction
    basis = "documents the filters keep" if config.filters.active else "documents kept (the readable ones)"
    if documents:
        fraction = max(fraction, min(0.5, config.min_val_docs / documents))
    if fraction != config.val_fraction:
        expected = fraction * documents  # a fraction of one for a handful of documents (the share is at most a half)
        expected = f"{expected:.0f}" if expected >= 10 else f"{expected:.2g}"
        print(f"sutra: validation share raised from --val-fraction {config.val_fraction:g} to {fraction:.4f}, so that about "
              f"{expected} of the {documents:,} {basis} land in it (--min-val-docs {config.min_val_docs})", file=log)
    return fraction


def prepare(config: PrepareConfig, log=sys.stderr) -> dict:
    """Run (or resume, or recognise as done) a prepare; return its stats."""
    tokenizer = load_tokenizer(config.tokenizer)
    largest_id = max(tokenizer.backend.get_vocab(with_added_tokens=True).values(), default=0)
    if largest_id >= MAX_VOCAB:
        raise SutraError(f"tokenizer {tokenizer.directory} has token ids up to {largest_id:,}; uint16 shards hold ids below {MAX_VOCAB:,} — use a smaller vocabulary")
    out = Path(config.out)
    _existing(out)  # refused before the lock file is made in a directory that is not ours
    inputs = _inputs(config, out, log)
    recipe = _recipe(config, inputs, tokenizer)
    with exclusive(out, "data prepare"):
        try:
            return _prepare_into(out, config, tokenizer, inputs, recipe, log)
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            raise SutraError(f"{out}: could not write the dataset ({exc.strerror}); the shards written before are intact. "
                             f"Make room there, then run the same command again: it resumes at the last shard") from None


def _prepare_into(out: Path, config: PrepareConfig, tokenizer, inputs: list, recipe: dict, log) -> dict:
    progress = _claim_output(out, recipe, config.overwrite)
    if progress and progress["complete"]:
        print(f"sutra: {out} is already prepared from these inputs; nothing to do", file=log)
        return read_stats(out)
    for stale in out.glob(".*.tmp"):  # temporary files of a killed run
        stale.unlink()

    sources = src.plan(inputs, config.unit_bytes)
    src.check_text_column(sources, config.text_field, log)
    settings = {
        "text_field": config.text_field, "columns": {config.text_field, *STAT_FIELDS, *config.filters.fields},
        "filters": config.filters, "max_chars": config.max_chars, "separator": tokenizer.document_separator_id,
    }

    progress = progress or {"next_unit": 0, "next_shard": 0, "shards": None, "stats": _new_stats(), "dropped_log_bytes": 0}
    counted = {key for key in ("where_fields", "where_uncomparable") if key in progress["stats"]}  # from the first unit on (not so an older run's progress)
    stats, next_unit = progress["stats"], progress["next_unit"]
    fraction = progress.get("val_fraction")  # fixed once per dataset: a resumed run keeps the share it started with
    writer = ShardWriter(out, progress["next_shard"], progress["shards"])
    if next_unit:
        print(f"sutra: resuming {out} at shard {writer.next_index} (input unit {next_unit})", file=log)
    dropped_log = open(out / "dropped.tsv", "ab")
    dropped_log.truncate(progress["dropped_log_bytes"])
    dropped_log.seek(progress["dropped_log_bytes"])
    shown = sum(stats["dropped"].values())

    def save_progress(unit_index: int) -> None:
        dropped_log.flush()
        os.fsync(dropped_log.fileno())
        atomic_write_json(out / "progress.json", {
            "recipe": recipe, "next_unit": unit_index, "next_shard": writer.next_index, "shards": writer.shards,
            "stats": stats, "dropped_log_bytes": dropped_log.tell(), "val_fraction": fraction,
        })

    if not next_unit:
        save_progress(0)  # marks `out` as ours, so a run killed before its first shard can resume
    workers = config.workers or os.cpu_count() or 1
    started, tokens_before = time.time(), stats["tokens"]["train"] + stats["tokens"]["val"]
    worker_args = (str(tokenizer.directory / "tokenizer.json"), settings)
    if workers == 1:  # no process start-up cost; the parent tokenizes
        pool = None
        _init_worker(*worker_args)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(*worker_args, os.getpid()))
    ahead = 2 * workers + 2
    try:
        if fraction is None:
            fraction = _val_fraction(config, sources, pool, ahead, log)
        val_threshold = int(fraction * 2**64)
        units = islice(src.iter_units(sources, config.unit_bytes, config.hub_split), next_unit, None)
        for unit_index, result in enumerate(_ordered_results(pool, units, ahead), start=next_unit):
            is_val = result.hashes < val_threshold  # kept documents only: filtered and dropped ones never reach a split
            for location, reason, detail in result.problems:
                location, detail = _one_line(location), _one_line(detail)  # one dropped.tsv line per drop
                if config.strict:
                    raise SutraError(f"{location}: {reason}: {detail} (--strict stops at the first bad record)")
                dropped_log.write(f"{location}\t{reason}\t{detail}\n".encode("utf-8", "backslashreplace"))
                if shown < SHOWN_PROBLEMS:
                    print(f"sutra: dropped {location}: {reason}: {detail}", file=log)
                shown += 1
            _accumulate(stats, result, is_val)
            val_tokens = np.repeat(is_val, result.lengths)
            for split, mask, token_mask in (("train", ~is_val, ~val_tokens), ("val", is_val, val_tokens)):
                if mask.any():
                    writer.add(split, result.tokens[token_mask], result.lengths[mask])
            if writer.pending_tokens["train"] >= config.shard_tokens:
                writer.flush()
                save_progress(unit_index + 1)
                done = stats["tokens"]["train"] + stats["tokens"]["val"]
                print(f"sutra: shard {writer.next_index - 1} written; {done:,} tokens, "
                      f"{(done - tokens_before) / max(time.time() - started, 1e-9):,.0f} tokens/s", file=log)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        dropped_log.close()

    if stats["documents"]["train"] == 0 and stats["documents"]["val"]:
        raise SutraError(f"all {stats['documents']['val']:,} kept documents fell into the validation split (share {fraction:.4f}); "
                         f"too few for one: lower --min-val-docs or --val-fraction (0 keeps every document for training), or add data")
    absent = [c for c in config.filters.where if not stats.get("where_fields", {}).get(c.field)]
    if absent and stats["input_records"] and "where_fields" in counted:  # a misspelt field: `!=` would keep every record, the others none
        raise SutraError(f"--where '{absent[0]}': no record of {', '.join(config.sources)} has a value in a '{absent[0].field}' field "
                         f"({stats['input_records']:,} records read); check the field's name (a nested one is written a.b)")
    both = counted == {"where_fields", "where_uncomparable"}
    never = [c for c in config.filters.where if both and stats["where_uncomparable"].get(str(c), 0) == stats["where_fields"].get(c.field, 0) > 0]
    if never:  # a VALUE of another type than the field's: every record having it dropped
        raise SutraError(f"--where '{never[0]}': none of the {stats['where_fields'][never[0].field]:,} records with a '{never[0].field}' field "
                         f"could be compared with '{never[0].value}' (each dropped as wrong_type; see {out / 'dropped.tsv'}); "
                         f"write VALUE as the field's values are: a number, true or false, or text")
    if stats["documents"]["train"] == 0:
        scale = " (--min-quality is on the data's own scale: sutra-10B scores 0-1, sutra-10M..1B 60-85)" if "min_quality" in stats["filtered"] else ""
        raise SutraError(f"no documents survived from {', '.join(config.sources)}: {_summary(stats)}{scale}")
    _check_unchanged(recipe)
    stats = {**stats, "val_fraction": fraction, "dropped_total": sum(stats["dropped"].values()),
             "filtered_total": sum(stats["filtered"].values())}
    for key in ("tokens_by_domain", "tokens_by_content_type", "dropped", "filtered", "where_fields", "where_uncomparable"):
        stats[key] = dict(sorted(stats.get(key, {}).items()))
    atomic_write_json(out / "stats.json", stats)
    writer.finish(tokenizer, recipe=recipe, val_fraction=fraction)  # a mix checks overlapping datasets split alike
    (out / "progress.json").unlink(missing_ok=True)
    if shown > SHOWN_PROBLEMS:
        print(f"sutra: ... {shown - SHOWN_PROBLEMS} more dropped records; all are listed in {out / 'dropped.tsv'}", file=log)
    val = stats["documents"]["val"]
    if val == 0 and fraction > 0:
        print(f"sutra: warning: no document fell into the validation split (fraction {fraction:.4f}); raise --val-fraction", file=log)
    elif val < (expected := fraction * (val + stats["documents"]["train"])) / 2:  # each document's hash decides: a handful varies widely
        print(f"sutra: warning: only {val} document{'s' * (val != 1)} fell into the validation split, of about {expected:.0f} expected "
              f"(each document's hash decides); its perplexity is noisy: raise --min-val-docs", file=log)
    return stats


def _one_line(text: str) -> str:
    """`text` with its tabs, line breaks and other control characters (a library's error message
    may hold them, so may a file name) made single spaces."""
    return re.sub(r"\s*[\x00-\x1f\x7f]+\s*", " ", text.strip())


def _summary(stats: dict) -> str:
    parts = [f"{stats['input_records']:,} records read"]
    parts += [f"{n:,} dropped as {reason}" for reason, n in stats["dropped"].items()]
    parts += [f"{n:,} filtered by {reason}" for reason, n in stats["filtered"].items()]
    return ", ".join(parts)
