"""Quality judging: an LLM scores six dimensions under a strict JSON contract, cheap heuristics
add length, repetition, structure and language signals, and both combine into `quality_score`.

The published sutra-10B rows show a quality_score that is not the plain mean of the six
dimensions; their formula is not public. Ours: 0.7 x judge mean + 0.3 x heuristic mean.
"""

import json
import math
import re
from dataclasses import dataclass

from sutra.synth.prompts import PromptSet

DIMENSIONS = ("clarity", "accuracy", "pedagogy", "engagement", "depth", "creativity")
JUDGE_WEIGHT = 0.7
SCALE = 10  # the judge scores 0-10; recorded as [0, 1]
JUDGE_SCHEMA = {
    "type": "object",
    # whole numbers 0-10: a grammar-constrained server (llama.cpp) enforces the range of an integer, not of a number
    "properties": {d: {"type": "integer", "minimum": 0, "maximum": SCALE} for d in DIMENSIONS},
    "required": list(DIMENSIONS),
    "additionalProperties": False,
}
ENGLISH_STOPWORDS = frozenset(
    "the a an and or of to in is are was were be been it this that these those for on with as by at from "
    "not but if then so can will we you they he she its their our your which what when how why there".split()
)
WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


class MalformedAnswer(ValueError):
    """A model answer that is not the JSON asked for, even after repair."""


def extract_json_object(answer: str, wanted: tuple[str, ...] = ()) -> dict:
    """The JSON object in a model's answer, repairing the usual small-model mistakes: code fences
    or text around it, single quotes, trailing commas. Of several objects (a reasoning block's,
    a note's "{1, 2, 3}"), the first holding every `wanted` key, else the first. Keys come back
    lower-cased."""
    decoder, found = json.JSONDecoder(), []
    for start in (m.start() for m in re.finditer(r"\{", answer)):
        try:
            data, _ = decoder.raw_decode(answer, start)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            found.append(_lower_keys(data))
    whole = next((d for d in found if all(k in d for k in wanted)), None)
    if whole is not None:
        return whole
    start, end = answer.find("{"), answer.rfind("}")
    try:  # one object with the mistakes json refuses, from the first "{" to the last "}"
        repaired = json.loads(re.sub(r",\s*([}\]])", r"\1", answer[start:end + 1].replace("'", '"'))) if 0 <= start < end else None
    except json.JSONDecodeError:
        repaired = None
    if isinstance(repaired, dict):
        return _lower_keys(repaired)
    if found:
        return found[0]
    raise MalformedAnswer("the answer is not a valid JSON object" if start >= 0 else "no JSON object in the answer")


def _lower_keys(data: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in data.items()}


async def ask_json(backend, messages: list[dict], schema: dict, parse, retries: int, max_tokens: int, seed: int):
    """(parsed value or None, attempts, last error): ask, parse, and on a malformed answer ask
    again (greedy first, then sampled so the same mistake is not simply repeated)."""
    error = ""
    for attempt in range(retries + 1):
        completion = await backend.complete(messages, max_tokens, temperature=0.0 if attempt == 0 else 0.7, seed=seed + attempt, json_schema=schema)
        try:
            return parse(completion.text), attempt + 1, ""
        except MalformedAnswer as exc:  # a cut answer is the token limit's fault, not the format's: say so
            error = f"{exc}{f' (the answer was cut off at {max_tokens} tokens)' if completion.finish_reason == 'length' else ''}"
    return None, retries + 1, error


def parse_assessment(answer: str) -> dict[str, float]:
    """Six scores in [0, 1] from a judge answer of whole numbers from 0 to 10 (see
    extract_json_object), accepting numbers written as strings and capitalised keys. Any other
    scale is refused (and asked again), never guessed: read from one answer alone, a 0-10 judge's
    all-1 "very poor" looked like a perfect 0-1 answer, and a 0-1 answer with one score
    overshooting to 1.2 like a 0-10 one."""
    lowered = extract_json_object(answer, DIMENSIONS)
    missing = [d for d in DIMENSIONS if d not in lowered]
    if missing:
        raise MalformedAnswer(f"missing score(s): {', '.join(missing)}")
    scores = {}
    for d in DIMENSIONS:
        try:
            value = float(str(lowered[d]).strip())
        except ValueError:
            raise MalformedAnswer(f"{d} is not a number: {lowered[d]!r}") from None
        if not (math.isfinite(value) and value.is_integer() and 0 <= value <= SCALE):
            raise MalformedAnswer(f"{d} is {lowered[d]!r}, not a whole number from 0 to {SCALE} (the scale asked)")
        scores[d] = value / SCALE
    return scores


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def english_ratio(tokens: list[str]) -> float:
    return sum(t in ENGLISH_STOPWORDS for t in tokens) / len(tokens) if tokens else 0.0


def distinct_ngram_ratio(tokens: list[str], n: int) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def heuristic_signals(text: str, token_count: int, target_tokens: int) -> dict[str, float]:
    """Signals in [0, 1], each cheap: length against the target, absence of repetition,
    visible structure (paragraphs, lists, headings, code), and English-ness."""
    tokens = words(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    structured = sum(bool(re.match(r"^(#+ |[-*] |\d+[.)] |```|Q:|A:)", line)) for line in lines)
    paragraphs = len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
    return {
        "length": round(min(1.0, token_count / max(1, target_tokens)), 3),
        "repetition": round(distinct_ngram_ratio(tokens, 3), 3),
        "structure": round(min(1.0, 0.25 * min(paragraphs, 3) + 0.25 * min(structured, 1)), 3),
        "language": round(min(1.0, english_ratio(tokens) / 0.3), 3),
    }


def information_density(text: str) -> str:
    """low / medium / high from the share of distinct content words (not stopwords)."""
    tokens = words(text)
    content = [t for t in tokens if t not in ENGLISH_STOPWORDS and len(t) > 2]
    if not tokens:
        return "low"
    ratio = len(set(content)) / len(tokens)
    return "high" if ratio >= 0.45 else "medium" if ratio >= 0.28 else "low"


def combine(assessment: dict[str, float], signals: dict[str, float]) -> float:
    judge_mean = sum(assessment.values()) / len(assessment)
    heuristic_mean = sum(signals.values()) / len(signals)
    return round(JUDGE_WEIGHT * judge_mean + (1 - JUDGE_WEIGHT) * heuristic_mean, 3)


@dataclass
class Verdict:
    assessment: dict[str, float] | None  # None when the judge never gave a usable answer
    attempts: int
    repaired_error: str = ""  # the last parse error, for the reject journal


class Judge:
    """Scores a text as it is kept, all of it: a generation is at most --max-new-tokens long (a
    judge whose context cannot hold that refuses the request, and the run says so)."""

    def __init__(self, backend, prompts: PromptSet, retries: int = 2, max_tokens: int = 96):
        self.backend, self.prompts = backend, prompts
        self.retries, self.max_tokens = retries, max_tokens

    async def assess(self, text: str, concept_name: str, domain: str, complexity: int, content_type: str, seed: int) -> Verdict:
        messages = self.prompts.messages(
            "judge", text=text, concept_name=concept_name, domain=domain, complexity=complexity, content_type=content_type,
        )
        assessment, attempts, error = await ask_json(self.backend, messages, JUDGE_SCHEMA, parse_assessment, self.retries, self.max_tokens, seed)
        return Verdict(assessment, attempts, error)
