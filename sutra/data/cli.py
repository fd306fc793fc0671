"""`sutra data ...` commands: prepare, stats, mix."""

import sys

from sutra.argtypes import finite_number
from sutra.data.sources import UNIT_BYTES  # stdlib-only module: keeps `sutra --help` instant


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="tokenize corpora into shards, inspect them, and mix them")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("prepare", help="filter and tokenize corpora into uint16 shards with a document index",
                       description="Read JSONL (.gz/.zst), Parquet, Arrow/save_to_disk dirs, text files, directories, globs "
                                   "or hub dataset ids (hidden files and directories inside a directory are skipped); filter on metadata; tokenize in parallel; write shards, stats.json "
                                   "and manifest.json (last). A killed run resumes when re-run with the same arguments.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir, tokenizer.json, asset or hub id (default: offline SmolLM2)")
    p.add_argument("--text-field", default="text", help="the records' text field (default text)")
    p.add_argument("--min-quality", type=finite_number, default=None, help="keep quality_score >= this (sutra-10M..1B: 60-85; sutra-10B: 0-1)")
    p.add_argument("--domains", default=None, help="comma-separated domains to keep (case-insensitive)")
    p.add_argument("--content-types", default=None, help="comma-separated content types to keep (case-insensitive)")
    p.add_argument("--complexity", default=None, metavar="A-B", help="keep complexity_level in [A, B]")
    p.add_argument("--where", action="append", default=[], metavar="COND",
                   help="FIELD OP VALUE on any (dotted) field, OP in == != >= <= > < ~= (list membership/substring); repeatable. "
                        "A record without FIELD fails every OP but != (it does not equal VALUE); a FIELD no record has, "
                        "or a VALUE no record's FIELD compares with (text against numbers), is refused")
    p.add_argument("--val-fraction", type=float, default=0.005, help="share of documents (by text hash) for validation (default 0.005)")
    p.add_argument("--min-val-docs", type=int, default=5, help="raise the validation share (to at most a half) so about this many of the kept documents land in it (default 5; 0: no raise)")
    p.add_argument("--shard-tokens", type=int, default=32_000_000, help="train tokens per shard (also the resume granularity; default 32,000,000)")
    p.add_argument("--max-chars", type=int, default=4_000_000, help="drop longer documents (reported as too_long; default 4,000,000 characters)")
    p.add_argument("--unit-bytes", type=int, default=UNIT_BYTES, help="input bytes per work unit (part of what fixes the output)")
    p.add_argument("--workers", type=int, default=0, help="tokenizer processes (default: one per CPU core)")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first bad record instead of dropping it")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset prepared from other inputs at --out")
    p.add_argument("--split", default="train", help="split to read from hub dataset ids and saved DatasetDict directories (default train; another, a source must have it)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("mix", help="write a mixture manifest: weighted datasets and/or a fixed token budget (no copying)",
                       description="Example: sutra data mix sutra=50 docs=30 code=20 --tokens 1B --out mix.json. "
                                   "A dataset smaller than its share is repeated; a larger one is sampled in evenly spaced blocks.")
    p.add_argument("components", nargs="+", metavar="DIR[=WEIGHT]")
    p.add_argument("--out", required=True, metavar="FILE.json")
    p.add_argument("--tokens", default=None, help="total train tokens, e.g. 1B (default: as many as fit without repeating a dataset)")
    p.add_argument("--block-tokens", default="1M", help="size of the sampled blocks when a dataset is cut down (default 1M)")
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser("stats", help="print a prepared dataset's stats.json (documents, tokens, domains, drops), or a mix's components")
    p.add_argument("directory", metavar="DIR_OR_MIX")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_stats)


def cmd_prepare(args) -> int:
    import time
    from pathlib import Path

    from sutra.data.filters import Filters
    from sutra.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        sources=tuple(args.sources), out=Path(args.out), tokenizer=args.tokenizer, text_field=args.text_field,
        filters=Filters.from_args(args.min_quality, args.domains, args.content_types, args.complexity, args.where),
        val_fraction=args.val_fraction, min_val_docs=args.min_val_docs, shard_tokens=args.shard_tokens,
        max_chars=args.max_chars, unit_bytes=args.unit_bytes, workers=args.workers, strict=args.strict, overwrite=args.overwrite, hub_split=args.split,
    )
    def stats_file_version():  # a finished dataset is only read back: no speed to tell then
        try:
            found = (Path(args.out) / "stats.json").stat()
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns

    before = stats_file_version()
    started = time.time()
    stats = prepare(config)
    elapsed = time.time() - started
    print_stats(stats)
    if before is None or stats_file_version() != before:
        tokens = stats["tokens"]["train"] + stats["tokens"]["val"]
        print(f"wrote {args.out} in {elapsed:.1f} s ({tokens / max(elapsed, 1e-9):,.0f} tokens/s)")
    return 0


def cmd_mix(args) -> int:
    from sutra.data.mix import make_mix, parse_tokens
    from sutra.errors import SutraError

    def tokens(flag: str, text: str) -> int:
        try:
            return parse_tokens(text)
        except SutraError as exc:
            raise SutraError(f"{flag} {exc}") from None

    mix = make_mix(args.components, args.out, tokens("--tokens", args.tokens) if args.tokens else None, tokens("--block-tokens", args.block_tokens))
    print_mix(mix)
    for component in mix["components"]:
        if component["passes"] > 4:  # repeated data is worth less than new data: say it, not just show it
            print(f"sutra: warning: {component['path']} is read {component['passes']:.1f} times; give it a smaller weight or add data", file=sys.stderr)
    print(f"wrote {args.out}: {mix['tokens']:,} train tokens")
    return 0


def print_mix(mix: dict) -> None:
    for component in mix["components"]:
        print(f"{component['path']:<40} weight {component['weight']:.3f}  {component['tokens']:>15,} tokens  "
              f"({component['passes']:.2f} passes over {component['dataset_tokens']:,})")


def cmd_stats(args) -> int:
    import json
    from pathlib import Path

    from sutra.data.shards import read_manifest, read_stats

    if Path(args.directory).is_file():  # a mix manifest (read and checked as training reads it): its components
        from sutra.data.stream import read_mix

        mix = read_mix(Path(args.directory))
        if args.json:
            print(json.dumps({k: v for k, v in mix.items() if k != "components"} | {"components": [
                {k: v for k, v in c.items() if k not in ("ranges", "manifest")} for c in mix["components"]]}, indent=2))
        else:
            print_mix(mix)
            print(f"{args.directory}: a mix of {mix['tokens']:,} train tokens per epoch; `sutra data stats DIR` shows each dataset")
        return 0
    read_manifest(args.directory)
    stats = read_stats(args.directory)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats)
    return 0


def print_stats(stats: dict, out=None) -> None:
    out = out or sys.stdout
    def line(label, value):
        print(f"{label:<28} {value}", file=out)

    for split in ("train", "val"):
        line(f"{split}", f"{stats['documents'][split]:,} documents, {stats['tokens'][split]:,} tokens")
    line("input records", f"{stats['input_records']:,}")
    line("validation fraction", f"{stats.get('val_fraction', 0):.4f}")
    for title, key in (("dropped", "dropped"), ("filtered out", "filtered")):
        counts = stats.get(key, {})
        line(title, f"{sum(counts.values()):,}" + (": " + ", ".join(f"{r} {n:,}" for r, n in counts.items()) if counts else ""))
    total = stats["tokens"]["train"] + stats["tokens"]["val"]
    for title, key in (("tokens by domain", "tokens_by_domain"), ("tokens by content type", "tokens_by_content_type")):
        counts = stats.get(key, {})
        if counts:
            print(title + ":", file=out)
            for label, tokens in sorted(counts.items(), key=lambda kv: -kv[1]):
                print(f"  {label:<34} {tokens:>14,}  {100 * tokens / max(total, 1):5.1f}%", file=out)
