"""`sutra eval`: the card's benchmarks through lm-eval v0.4.11, and validation perplexity."""

from sutra.argtypes import dtype_name, positive_int
from sutra.eval.harness import ATTENTION


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="benchmarks (lm-evaluation-harness v0.4.11) and validation perplexity of a model")
    p.add_argument("spec", metavar="SPEC", help="Sutra checkpoint dir, HF Llama dir, built-in model, or hub id")
    p.add_argument("--tasks", default=None, help="'card' (the card's 11 benchmarks) or names, e.g. hellaswag,piqa")
    p.add_argument("--limit", default=None, help="lm-eval's --limit: first N documents per task (or a fraction < 1)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="continuations scored per forward pass (default 16)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default=None, type=dtype_name, metavar="DTYPE", help="float32, bfloat16 or float16 (or fp32, bf16, fp16); default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--data", default="store", choices=["store", "hub"], help="benchmark data: the offline store (default) or the hub, as lm-eval loads it")
    p.add_argument("--perplexity", metavar="DATA_DIR", default=None, help="also report token perplexity on this prepared dataset's val split")
    # the perplexity settings default to how a Sutra checkpoint's run validated, so its logged val_ppl is reproduced
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="perplexity window (default: the checkpoint's data.seq_len; 2048, or the context if smaller, for other models)")
    p.add_argument("--attention", choices=ATTENTION, default=None,
                   help="perplexity: attention inside each document, or across the documents packed into a window "
                        "(default: the checkpoint's train.attention; document for other models)")
    p.add_argument("--max-windows", type=window_count, default=None, metavar="N|all",
                   help="perplexity: score N validation windows spread evenly over the split, or all "
                        "(default: the checkpoint's eval.max_windows; all for other models)")
    p.add_argument("--out", default=None, help="write the results JSON here; answers are journalled beside it as they come, "
                                                "so a killed run given the same --out resumes where it stopped")
    p.set_defaults(func=cmd_eval)


def window_count(value: str) -> int | str:
    return value if value == "all" else positive_int(value)


def score_lines(tasks: dict) -> list[str]:
    """The printed scores: one line per task, marked * with its note below, as the report's tables do."""
    from sutra.eval.harness import label

    lines = []
    for entry in tasks.values():
        name = entry["metric"] if entry["filter"] == "none" else f"{entry['metric']} ({entry['filter']})"
        lines.append(f"{label(entry) + ' *' * bool(entry.get('note')):<34} {name:<28} {100 * entry['value']:6.2f}")
    return lines + [f"* {entry['title']}: {entry['note']}" for entry in tasks.values() if entry.get("note")]


def perplexity_line(ppl: dict, as_run: bool) -> str:
    """The printed perplexity with the windows it is over: a sample of the split says so."""
    windows, split = ppl["windows"], ppl["windows_in_split"]
    counted = f"{windows:,} of {split:,} windows" if windows < split else f"{windows:,} window{'s' * (windows != 1)}"
    return (f"validation perplexity {ppl['perplexity']:.3f} over {ppl['tokens']:,} tokens ({counted} of {ppl['seq_len']}, "
            f"{ppl['attention']} attention{', as the run validated' * as_run})")


def cmd_eval(args) -> int:
    import sys
    from pathlib import Path

    import torch

    from sutra.errors import SutraError
    from sutra.eval.journal import journal_path
    from sutra.eval.tasks import parse_limit, parse_tasks
    from sutra.io import atomic_write_json
    from sutra.model.device import default_dtype, pick_device

    if not args.tasks and not args.perplexity:
        raise SutraError("nothing to evaluate: give --tasks card|TASK,... and/or --perplexity DATA_DIR")
    if args.out and Path(args.out).is_dir():
        raise SutraError(f"--out {args.out}: is a directory; give the results file to write, e.g. {Path(args.out) / 'results.json'}")
    if args.out:  # before the evaluation: its results must not be lost at the end, nor replace what it reads
        from sutra.eval.harness import is_results_file
        from sutra.io import check_replaceable

        check_replaceable(args.out, "results file", is_results_file, inputs=[p for p in (args.spec, args.perplexity) if p and Path(p).exists()])
    if args.perplexity:  # a wrong path stops before any model loads
        from sutra.data.stream import open_stream

        open_stream(args.perplexity, "val")
    tasks = parse_tasks(args.tasks) if args.tasks else []
    limit = parse_limit(args.limit)
    device = pick_device(args.device)
    journal = journal_path(args.out) if args.out and tasks else None  # a killed run resumes from it
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.perplexity:  # first: data it cannot score (too short, another tokenizer) stops the run before the benchmarks, not after
        from sutra.eval.perplexity import as_validated, perplexity
        from sutra.model.checkpoint import load_model

        if tasks and args.data == "store":  # so does a missing benchmark store, as without --perplexity
            from sutra.eval.store import check_store

            check_store(tasks)
        validated = as_validated(args.spec)  # a causal run's val_ppl is a causal perplexity, over its own windows
        given = {"seq_len": args.seq_len, "max_windows": args.max_windows, "attention": args.attention}
        settings = {**{"seq_len": None, "max_windows": None, "attention": "document"}, **validated,
                    **{key: value for key, value in given.items() if value is not None}}
        settings["max_windows"] = None if settings["max_windows"] == "all" else settings["max_windows"]
        as_run = bool(validated) and {key: settings[key] for key in validated} == validated
        loaded = load_model(args.spec, device=device, dtype=dtype or default_dtype(device))
        model = {"spec": args.spec, "source": loaded.source, "config": loaded.model.config.to_dict(), "weights_sha256": loaded.weights_sha256}
        ppl = perplexity(loaded, args.perplexity, batch_size=max(1, args.batch_size // 4), **settings)
        del loaded  # the benchmarks load their own
    results: dict = {}
    if tasks:
        from sutra.eval.harness import evaluate

        try:
            results = evaluate(args.spec, tasks, limit=limit, batch_size=args.batch_size, device=device, dtype=dtype, data=args.data, journal=journal)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (sutra.cli): say what is kept
            if journal is not None and journal.exists():
                print(f"sutra: eval stopped; the answers so far are kept in {journal}, and the same command continues from them", file=sys.stderr)
            raise
        except ConnectionError as exc:  # datasets/huggingface_hub when --data hub cannot reach the hub (offline)
            if args.data != "hub":
                raise
            from sutra.hub import hub_unreachable

            why = f"{hub_unreachable()}, and the data is not in the datasets cache" if hub_unreachable() else f"{type(exc).__name__}: {exc}"
            raise SutraError(f"--data hub: could not fetch the benchmark data from the Hugging Face Hub ({why}); "
                             "this machine may be offline: use --data store, the offline benchmark store "
                             "(`sutra assets fetch benchmarks`)") from None
        print("\n".join(score_lines(results["tasks"])))
    if args.perplexity:
        results.setdefault("model", model)
        results["perplexity"] = ppl
        print(perplexity_line(ppl, as_run))
    if args.out:
        results.setdefault("format", "sutra-eval-results")
        results.setdefault("tasks", {})
        atomic_write_json(args.out, results)
        if journal:
            journal.unlink(missing_ok=True)  # its answers are in the results now
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
