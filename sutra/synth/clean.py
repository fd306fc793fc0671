"""Cleaning: remove degenerate generations and duplicates, counting every removal by reason.

Degenerate means: empty, refusals and assistant boilerplate, repetition loops, truncated endings,
wrong language, too short or too long. Duplicates: exact (normalised text hash) and near
(MinHash LSH over word 5-gram shingles, datasketch).
"""

import hashlib
import json
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sutra.synth.judge import distinct_ngram_ratio, english_ratio, words

# Whole refusal phrases: "I'm sorry" alone is a line of dialogue (socratic_dialogue, interview styles),
# and "as an ai" needs its word boundary ("as an airfoil").
REFUSALS = re.compile(
    r"\b(as an ai\b|i(?:'m| am) sorry,? (?:but )?i (?:can(?:no|')t|cannot|am unable|won't)|"
    r"i(?:'m| am) (?:unable|not able) to (?:help|assist|provide|write|create|comply)|i can(?:no|')t (?:help|assist|provide|write|do that)|"
    r"i (?:cannot|won't) (?:help|assist|provide|comply)|against my (?:guidelines|policy))",
    re.IGNORECASE,
)
# Chatty openers and closers that are about the conversation, not the subject.
# An opener is a line of its own: "Sure! ...", "Certainly, ...", "Here's the lesson:"; never a first
# line of the subject ("Absolutely continuous functions ...", "Here is why ice floats.").
OPENER = re.compile(r"^\s*(?:(?:sure|certainly|of course|absolutely|great question)\s*[,!.][^\n]*|here(?:'s| is| are)\b[^\n]*[:!])\s*\n+", re.IGNORECASE)
CLOSER = re.compile(
    r"\n+\s*(i hope (this|that) helps|let me know if|feel free to (ask|reach out|let me know)|happy (learning|coding)|"
    r"if you have any (other |more |further )?questions)[^\n]*\s*$",
    re.IGNORECASE,
)
COMPARABLE_WORD = re.compile(r"[^\W_]+")  # letters of any script and digits
SENTENCE_END = re.compile(r"""[.!?:;)\]"'`*]\s*$|```\s*$""")


def strip_boilerplate(text: str) -> str:
    text = text.strip()
    previous = None
    while previous != text:
        previous = text
        text = OPENER.sub("", text, count=1).strip()
        text = CLOSER.sub("", text, count=1).strip()
    return text


def trim_to_last_sentence(text: str) -> str:
    """Cut a length-truncated generation back to its last complete sentence ('' if none)."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]].strip() if ends else ""


def repetition_loop(text: str) -> bool:
    tokens = words(text)
    if re.search(r"\b(\w+)(?:\W+\1\b){7,}", text, re.IGNORECASE):  # the same word 8+ times in a row
        return True
    lines = Counter(line.strip().lower() for line in text.splitlines() if len(line.strip()) > 20)
    if lines and max(lines.values()) >= 3:
        return True
    return len(tokens) >= 60 and distinct_ngram_ratio(tokens, 4) < 0.5


@dataclass
class CleanConfig:
    min_tokens: int = 50
    max_tokens: int = 4096
    min_english: float = 0.12  # share of common English function words


def check_clean_options(config: CleanConfig, dedup_threshold: float | None = None) -> None:
    """One clear error, before any work, for bounds no text could meet or a threshold datasketch refuses."""
    from sutra.errors import SutraError

    for flag, value in (("--min-tokens", config.min_tokens), ("--max-tokens", config.max_tokens)):
        if value < 1:
            raise SutraError(f"{flag} {value}: must be at least 1")
    if config.min_tokens > config.max_tokens:
        raise SutraError(f"--min-tokens {config.min_tokens} is above --max-tokens {config.max_tokens}: no text could pass; "
                         "give a --min-tokens no larger than --max-tokens")
    if dedup_threshold is not None and not (math.isfinite(dedup_threshold) and 0.0 < dedup_threshold <= 1.0):
        raise SutraError(f"--dedup-threshold {dedup_threshold}: must be in (0, 1]")


def degenerate_reason(text: str, token_count: int, config: CleanConfig) -> str | None:
    """Why `text` (already stripped of boilerplate) should be dropped, or None to keep it."""
    if not text.strip():
        return "empty"
    if REFUSALS.search(text[:400]):
        return "refusal"
    if repetition_loop(text):
        return "repetition_loop"
    if token_count < config.min_tokens:
        return "too_short"
    if token_count > config.max_tokens:
        return "too_long"
    if english_ratio(words(text)) < config.min_english:
        return "wrong_language"
    if not SENTENCE_END.search(text):
        return "truncated"
    return None


def comparable_words(text: str) -> list[str]:
    """The words duplicates are judged by: NFKC-normalised, case-folded, numbers and every
    script's letters kept (two worked examples that differ only in their numbers are not one)."""
    return COMPARABLE_WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def normalized_hash(text: str) -> str:
    return hashlib.sha1(" ".join(comparable_words(text)).encode()).hexdigest()


@dataclass
class Deduplicator:
    """Exact and near-duplicate detection over everything added so far. Near: MinHash LSH finds
    candidates (banded to miss few pairs above the threshold), and a candidate is a duplicate only
    when its estimated Jaccard similarity of word 5-gram shingles reaches `threshold`."""

    threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 5
    _hashes: set = field(default_factory=set)
    _minhashes: dict = field(default_factory=dict)
    _lsh: object = None

    def __post_init__(self):
        from datasketch import MinHashLSH

        # LSH banding approximates its threshold from both sides; weighted against false negatives,
        # it leaves the exact cut to the Jaccard check
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, weights=(0.1, 0.9))

    def _minhash(self, text: str):
        from datasketch import MinHash

        tokens = comparable_words(text)
        shingles = {" ".join(tokens[i:i + self.shingle]) for i in range(max(1, len(tokens) - self.shingle + 1))}
        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch([s.encode() for s in shingles])
        return m

    def duplicate_reason(self, text: str) -> str | None:
        if normalized_hash(text) in self._hashes:
            return "exact_duplicate"
        minhash = self._minhash(text)
        if any(minhash.jaccard(self._minhashes[key]) >= self.threshold for key in self._lsh.query(minhash)):
            return "near_duplicate"
        return None

    def add(self, key: str, text: str) -> None:
        digest = normalized_hash(text)
        if digest not in self._hashes and key not in self._minhashes:
            self._hashes.add(digest)
            self._minhashes[key] = minhash = self._minhash(text)
            self._lsh.insert(key, minhash)


def clean_files(inputs: list[str], out: str | Path, config: CleanConfig, dedup_threshold: float = 0.8) -> dict:
    """Write the records of `inputs` that pass the degenerate checks and are not duplicates of an
    earlier record to OUT/train_000.jsonl, and a report of removals by reason to OUT/.synth/clean-report.json."""
    from sutra.errors import SutraError
    from sutra.io import atomic_open, atomic_write_json
    from sutra.synth.journal import META_DIR, prepare_output_dir, read_jsonl
    from sutra.tokenizer import load_tokenizer

    missing = [name for name in inputs if not Path(name).exists()]  # (one that cannot be read is said when read)
    if missing:
        raise SutraError(f"{missing[0]}: no such JSONL file")
    check_clean_options(config, dedup_threshold)
    out = Path(out)
    target, report_path = out / "train_000.jsonl", out / META_DIR / "clean-report.json"
    if target.exists():
        same = [name for name in inputs if Path(name).resolve() == target.resolve() or os.path.samefile(name, target)]
        if same:
            raise SutraError(f"{same[0]}: is both an input and the output {target}; give a --out directory that holds none of the inputs")
        if not report_path.is_file():  # not an earlier clean's output: someone's data, perhaps a synth run's
            raise SutraError(f"{target} exists and was not written by 'sutra synth clean' (no {report_path}); "
                             "give a new --out directory, or move that file away; nothing was changed")
    prepare_output_dir(out)
    tokenizer = load_tokenizer()
    dedup = Deduplicator(threshold=dedup_threshold)
    removed, read, kept = Counter(), 0, 0
    # streamed (the kept records need not fit in memory); a failure leaves the earlier output as it was
    with atomic_open(target, "w", encoding="utf-8") as f:
        for name in inputs:
            path = Path(name)
            records, _ = read_jsonl(path)
            for line, record in zip(records.lines, records):
                read += 1
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise SutraError(f"{path}:{line}: the record has no 'text' string; is this a synth output file?")
                tokens = len(tokenizer.encode(text))  # not the record's token_count: an edit may have left it stale, or not a number
                if "token_count" in record:
                    record["token_count"] = tokens
                reason = degenerate_reason(text, tokens, config) or dedup.duplicate_reason(text)
                if reason:
                    removed[reason] += 1
                    continue
                dedup.add(f"{path}:{line}", text)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                kept += 1
    report = {"inputs": [str(i) for i in inputs], "read": read, "kept": kept, "removed": dict(removed.most_common())}
    atomic_write_json(report_path, report)
    return report
