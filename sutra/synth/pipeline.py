"""The synthesis engine shared by `synth run` (knowledge graph) and `synth rephrase` (sources):
generate -> strip boilerplate -> degenerate checks -> dedup -> (annotate) -> judge -> threshold,
with every finished item journaled (see journal.py) and a progress bar."""

import asyncio
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

from sutra.errors import SutraError
from sutra.synth.backends import BackendError, RequestRejected
from sutra.synth.clean import CleanConfig, Deduplicator, degenerate_reason, strip_boilerplate, trim_to_last_sentence
from sutra.synth.journal import SCHEMA_FIELDS, ShardFiles
from sutra.synth.judge import DIMENSIONS, Judge, combine, heuristic_signals, information_density

ID_NAMESPACE = uuid.UUID("5a7b9e4e-54d3-4c8e-9c6b-3f1a2d5e8b70")


def item_id(*parts) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(str(p) for p in parts)))


@dataclass
class Job:
    index: int
    id: str
    messages: list[dict]
    content_type: str
    style: str
    metadata: dict | None  # concept_name, domain, complexity_level, prerequisites, builds_to, cross_domain_connections
    journal: dict = field(default_factory=dict)  # extra facts for the journal line (concept id, source, ...)


@dataclass
class EngineSettings:
    max_new_tokens: int = 768
    temperature: float = 0.8
    seed: int = 0
    min_quality: float = 0.5
    target_tokens_per_item: int = 450  # what the length heuristic calls "long enough"
    concurrency: int = 4
    clean: CleanConfig = field(default_factory=CleanConfig)


@dataclass
class Summary:
    accepted: int = 0
    accepted_tokens: int = 0
    rejected: Counter = field(default_factory=Counter)
    attempted: int = 0
    trimmed_truncated: int = 0
    generated_tokens: int = 0
    retried: int = 0  # requests asked again after a server error or a timeout (a flaky server, a dead --base-url)
    elapsed: float = 0.0
    stop_reason: str = ""


class Engine:
    def __init__(self, files: ShardFiles, generator, judge: Judge, tokenizer, settings: EngineSettings,
                 annotate: Callable[[str], Awaitable[dict | None]] | None = None, dedup: Deduplicator | None = None):
        self.files, self.generator, self.judge, self.tokenizer = files, generator, judge, tokenizer
        self.settings, self.annotate = settings, annotate
        self.dedup = dedup or Deduplicator()
        self.summary = Summary()

    def _entry(self, job: Job, **extra) -> dict:
        return {"index": job.index, "id": job.id, "content_type": job.content_type, "style": job.style, **job.journal, **extra}

    async def _process(self, job: Job) -> tuple[dict | None, dict]:
        """(record, journal entry); record is None for a reject. BackendError propagates."""
        try:
            return await self._generate_and_judge(job)
        except RequestRejected as exc:
            return None, self._entry(job, reason="request_refused", detail=str(exc))

    async def _generate_and_judge(self, job: Job) -> tuple[dict | None, dict]:
        s = self.settings
        seed = (s.seed * 1_000_003 + job.index) % 2**31
        completion = await self.generator.complete(job.messages, s.max_new_tokens, s.temperature, seed=seed)
        self.summary.generated_tokens += completion.completion_tokens
        text = strip_boilerplate(completion.text)
        if completion.finish_reason == "length":
            text = trim_to_last_sentence(text)
            self.summary.trimmed_truncated += 1
        token_count = len(self.tokenizer.encode(text))
        reason = degenerate_reason(text, token_count, s.clean) or self.dedup.duplicate_reason(text)
        if reason:
            return None, self._entry(job, reason=reason, tokens=token_count)
        metadata = job.metadata or await self.annotate(text)
        if metadata is None:
            return None, self._entry(job, reason="annotation_invalid", tokens=token_count)
        verdict = await self.judge.assess(text, metadata["concept_name"], metadata["domain"], metadata["complexity_level"], job.content_type, seed)
        if verdict.assessment is None:
            return None, self._entry(job, reason="judge_invalid_json", tokens=token_count, judge_error=verdict.repaired_error)
        signals = heuristic_signals(text, token_count, s.target_tokens_per_item)
        quality = combine(verdict.assessment, signals)
        entry = self._entry(job, tokens=token_count, quality_score=quality, signals=signals, judge_attempts=verdict.attempts)
        if quality < s.min_quality:
            return None, {**entry, "reason": "below_quality_threshold"}
        record = {
            "id": job.id,
            "concept_name": metadata["concept_name"],
            "domain": metadata["domain"],
            "content_type": job.content_type,
            "text": text,
            "quality_score": quality,
            "information_density": information_density(text),
            "complexity_level": int(metadata["complexity_level"]),
            "token_count": token_count,
            "prerequisites": list(metadata["prerequisites"]),
            "builds_to": list(metadata["builds_to"]),
            "cross_domain_connections": list(metadata["cross_domain_connections"]),
            "quality_assessment": {d: verdict.assessment[d] for d in DIMENSIONS},
        }
        assert tuple(record) == SCHEMA_FIELDS
        return record, entry

    async def run(self, jobs: Iterable[Job], done_ids: set[str], target_items: int | None, target_tokens: int | None,
                  max_attempts: int | None, progress=None) -> Summary:
        """Process jobs not in `done_ids` until a target is met, jobs run out, or max_attempts."""
        s, summary = self.settings, self.summary
        started = time.monotonic()
        pending: dict[asyncio.Task, Job] = {}
        jobs = iter(jobs)
        failure: BackendError | None = None
        # a server that refuses request after request (its limits, not this item) refuses them all
        refused_in_a_row, refusal_limit, refusal = 0, max(8, 2 * s.concurrency), None

        def want_more() -> bool:
            if failure or refusal or (max_attempts is not None and summary.attempted >= max_attempts):
                return False
            if target_items is not None:
                return summary.accepted + len(pending) < target_items
            if target_tokens is not None:  # the items in flight count at the length accepted ones have had
                per_item = summary.accepted_tokens / summary.accepted if summary.accepted else s.target_tokens_per_item
                return summary.accepted_tokens + len(pending) * per_item < target_tokens
            return True

        exhausted = False
        while True:
            while not exhausted and len(pending) < s.concurrency and want_more():
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                elif job.id not in done_ids:
                    pending[asyncio.create_task(self._process(job))] = job
                    summary.attempted += 1
            if not pending:
                break
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                job = pending.pop(task)
                try:
                    record, entry = task.result()
                except BackendError as exc:
                    failure = failure or exc  # finish what is in flight, then stop
                    continue
                if record is not None:
                    reason = self.dedup.duplicate_reason(record["text"])  # another item may have landed meanwhile
                    if reason:
                        record, entry = None, {**entry, "reason": reason}
                refused_in_a_row = refused_in_a_row + 1 if entry.get("reason") == "request_refused" else 0
                if refused_in_a_row >= refusal_limit:
                    refusal = refusal or entry["detail"]
                if record is None:
                    self.files.reject(entry)
                    summary.rejected[entry["reason"]] += 1
                else:
                    self.dedup.add(record["id"], record["text"])
                    self.files.accept(record, entry)
                    summary.accepted += 1
                    summary.accepted_tokens += record["token_count"]
                done_ids.add(job.id)
                if progress is not None:
                    progress(summary, time.monotonic() - started)
        summary.elapsed = time.monotonic() - started
        if failure:
            raise SutraError(
                f"{failure} -- {summary.accepted} item(s) accepted in this session are kept in {self.files.out}; "
                "rerun the same command to resume"
            )
        if refusal:
            raise SutraError(
                f"the server refused {refused_in_a_row} requests in a row, so it would refuse every one: {refusal} -- change what it "
                f"refuses (e.g. --max-new-tokens, with a new --out) or the server's limits; the {summary.accepted} item(s) accepted "
                f"in this session are kept in {self.files.out}"
            )
        if target_items is not None and summary.accepted < target_items or target_tokens is not None and summary.accepted_tokens < target_tokens:
            summary.stop_reason = "exhausted" if exhausted else "max_attempts"
        return summary


class ProgressBar:
    """tqdm bar over items (or tokens) with items/s, tokens/s and acceptance rate."""

    def __init__(self, total: int | None, initial: int, unit: str):
        from tqdm import tqdm

        self.unit = unit
        self.bar = tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def __call__(self, summary: Summary, elapsed: float) -> None:
        done = summary.accepted if self.unit == "item" else summary.accepted_tokens
        self.bar.update(self.bar.initial + done - self.bar.n)
        finished = summary.accepted + sum(summary.rejected.values())
        self.bar.set_postfix_str(
            f"{finished / max(elapsed, 1e-9):.2f} items/s, {summary.generated_tokens / max(elapsed, 1e-9):.1f} tok/s, "
            f"accept {summary.accepted / max(finished, 1):.0%}", refresh=False,
        )

    def close(self) -> None:
        self.bar.close()
