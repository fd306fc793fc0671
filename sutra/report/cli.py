"""`sutra report` (the card's tables and charts) and `sutra card` (a Hugging Face model card)."""


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="benchmark tables (Markdown, CSV) and charts from 'sutra eval' results")
    p.add_argument("inputs", nargs="+", metavar="RESULTS", help="results.json, NAME=results.json, or a directory of results files (e.g. a compare run's OUT)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("card", help="write a Hugging Face model card (README.md) for a checkpoint")
    p.add_argument("spec", metavar="SPEC", help="the checkpoint the card describes")
    p.add_argument("--results", required=True, help="this model's 'sutra eval' results.json")
    p.add_argument("--out", required=True, help="README.md to write")
    p.add_argument("--name", default=None, help="model name (default: the checkpoint directory's name)")
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="training run directory (metrics.jsonl, recipe.yaml)")
    p.add_argument("--base-model", default=None, help="e.g. HuggingFaceTB/SmolLM2-70M")
    p.add_argument("--dataset", action="append", default=[], help="training dataset id (repeatable)")
    p.add_argument("--progression", nargs="+", default=[], metavar="NAME=RESULTS", help="checkpoints for the progression table")
    p.add_argument("--compare", nargs="+", default=[], metavar="NAME=RESULTS", help="rows of the dataset comparison table")
    p.add_argument("--repo-id", default=None, help="hub id shown in the usage snippet")
    p.add_argument("--license", default="apache-2.0", help="the license in the front matter (default: the seed card's apache-2.0)")
    p.set_defaults(func=cmd_card)


TABLES = ("progression", "comparison")  # each written as .md and .csv
TASKS_CHART, PERPLEXITY_CHART = "tasks.png", "perplexity_vs_average.png"
REPORT_FILES = (*(f"{stem}.{ext}" for stem in TABLES for ext in ("md", "csv")), TASKS_CHART, PERPLEXITY_CHART)
REPORT_MARKER = ".sutra-report.json"  # says a report was written here, so its files may be replaced


def claim_report_dir(out):
    """--out may hold other files (a model card, a loss plot), but a file named as a report's is
    replaced only where an earlier `sutra report` wrote it."""
    from sutra.errors import SutraError
    from sutra.io import atomic_write_json, check_output_path

    out = check_output_path(out, directory=True)
    clashes = [name for name in REPORT_FILES if (out / name).exists()]
    if clashes and not (out / REPORT_MARKER).is_file():
        raise SutraError(f"--out {out} holds {', '.join(clashes)}, which no earlier `sutra report` wrote; "
                         "they are not replaced: move them, or choose another --out")
    atomic_write_json(out / REPORT_MARKER, {"written_by": "sutra report"})  # first: a killed report is still ours
    return out


def cmd_report(args) -> int:
    from sutra.io import atomic_write_text
    from sutra.report.charts import perplexity_chart_gap, perplexity_vs_average, task_bars
    from sutra.report.tables import comparison_table, load_columns, progression_table

    columns = load_columns(args.inputs)
    out = claim_report_dir(args.out)
    written = []
    for stem, table in zip(TABLES, (progression_table(columns), comparison_table(columns, row_header="Model"))):
        atomic_write_text(out / f"{stem}.md", table.markdown())
        atomic_write_text(out / f"{stem}.csv", table.csv())
        written += [out / f"{stem}.md", out / f"{stem}.csv"]
    written.append(task_bars(columns, out / TASKS_CHART))
    chart = perplexity_vs_average(columns, out / PERPLEXITY_CHART)
    if chart:
        written.append(chart)
    else:
        (out / PERPLEXITY_CHART).unlink(missing_ok=True)  # an earlier report's chart would pass for this one's
        print(f"sutra: perplexity chart skipped: {perplexity_chart_gap(columns)}")
    for path in written:
        print(path)
    return 0


def cmd_card(args) -> int:
    from sutra.errors import SutraError
    from sutra.eval.harness import read_results
    from sutra.io import atomic_write_text, check_replaceable
    from sutra.model.checkpoint import resolve_spec
    from sutra.report.card import is_card, read_run, render_card
    from sutra.report.tables import load_columns

    check_replaceable(args.out, "model card", is_card)  # not the results it reads, nor any other file
    if not args.license.strip():  # the Hub refuses `license: ''` in the front matter
        raise SutraError("--license '': name the license (a Hub identifier such as apache-2.0, mit or other)")
    results = read_results(args.results)
    name = args.name or resolve_spec(args.spec)[1].name
    text = render_card(
        args.spec, results, name, args.base_model, args.dataset, read_run(args.run) if args.run else None,
        load_columns(args.progression) if args.progression else [], load_columns(args.compare) if args.compare else [], args.repo_id,
        args.license,
    )
    atomic_write_text(args.out, text)
    print(args.out)
    return 0
