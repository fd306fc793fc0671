"""`sutra demo`: the whole chain on the embedded default, from offline assets to a model card.

assets -> synthesize a few entries with the local teacher -> prepare stdlib-docs + those entries ->
save the untrained model -> train -> evaluate both (perplexity + benchmarks) -> sample completions ->
report (card, tables, charts). Every stage's output lives under --out; a re-run reuses the stages
finished with the same settings (see sutra.pipeline.stages.StageLog).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sutra.errors import SutraError
from sutra.io import atomic_write_json, atomic_write_text
from sutra.pipeline.stages import StageLog, banner, evaluate, file_digest, recipe_path, sutra, train_run
from sutra.processes import exclusive
from sutra.synth.cli import STOPPED_SHORT

ASSETS = ("smollm2-tokenizer", "smollm2-135m-instruct", "stdlib-docs", "benchmarks")
CORPUS = "stdlib-docs"
DATA_NAME = f"{CORPUS}+synth"  # the corpus and the synthesized entries, prepared together
TASKS = "arc_easy,hellaswag,piqa,winogrande,boolq"
PROMPTS = ("The Python standard library", "To open a file for reading, use", "A function is")


@dataclass(frozen=True)
class Scale:
    """How big a demo to run: the CPU default fits 15 minutes on 2 cores; `gpu` is picked when CUDA is there."""

    name: str
    recipe: str
    overrides: tuple[str, ...]
    train_steps: int
    synth_items: int
    synth_max_new_tokens: int
    eval_limit: int


SCALES = {
    # On a 2-core CPU: ~40 s synthesis, ~6 min training (400 steps x 512 tokens), ~1.5 min evaluation;
    # the rest of the 15 minutes is left for fetching the assets on a fresh machine.
    "cpu": Scale("cpu", "tiny-cpu.yaml", (), 400, 3, 200, 50),
    # For tests: a handful of steps and items.
    "quick": Scale("quick", "tiny-cpu.yaml", (), 8, 1, 120, 2),
    # The 70M shape on one GPU: 2,000 steps of 16 x 1,024 tokens (~33M tokens).
    "gpu": Scale("gpu", "tiny-cpu.yaml", ("model.preset=smollm2-70m", "data.seq_len=1024", "train.micro_batch=16", "train.device=cuda",
                                          "train.precision=bf16", "train.compile=true", "eval.max_windows=128"), 2000, 8, 400, 200),
}


class Layout(NamedTuple):
    """Where under --out each stage writes; the dataset's directory names what it holds (the card's
    Training data row is that name)."""
    synth: Path
    data: Path
    run: Path
    results: Path
    report: Path


def layout(out: Path) -> Layout:
    return Layout(*(out / name for name in ("synth", DATA_NAME, "run", "results", "report")))


def pick_scale(name: str) -> Scale:
    if name != "auto":
        return SCALES[name]
    import torch

    return SCALES["gpu" if torch.cuda.is_available() else "cpu"]


def _synth_entries(synth_dir: Path) -> list[dict]:
    from sutra.synth.journal import read_jsonl

    return [row for path in sorted(synth_dir.glob("*.jsonl")) for row in read_jsonl(path)[0]]


def synthesize(log: StageLog, synth_dir: Path, scale: Scale) -> list[dict]:
    # --min-quality 0: the offline 135M teacher cannot judge (it scores a fluent text and a garbled
    # one alike), so its scores are shown, not used to reject: a real judge is a --base-url server
    args = ("synth", "run", "--graph", "default", "--n", scale.synth_items, "--max-new-tokens", scale.synth_max_new_tokens,
            "--min-quality", 0, "--out", synth_dir)
    def accepted_some() -> None:  # (in the stage: a re-run makes it again, not reuses it)
        if not _synth_entries(synth_dir):
            raise SutraError(f"{synth_dir}: the teacher produced no accepted entries; see {synth_dir}/.synth/stats.md, then re-run")

    # stopping short of the target (reject reasons printed) still leaves usable accepted entries
    log.command("synth", synth_dir, args, allowed_codes=(0, STOPPED_SHORT), check=accepted_some)
    entries = _synth_entries(synth_dir)
    print("   (quality as the offline 135M teacher scores it: the pipeline's mechanics, not a judgement of the text)", flush=True)
    for entry in entries:
        print(f"   quality {entry['quality_score']:.2f}  {entry['domain']} / {entry['concept_name']} ({entry['content_type']}, "
              f"{entry['token_count']} tokens)", flush=True)
    return entries


def save_untrained(out: Path, recipe: Path, overrides: list[str]) -> None:
    """The recipe's model at its seeded initialisation: the 'before' of every number the demo reports."""
    import torch

    from sutra.model.checkpoint import save_checkpoint
    from sutra.model.config import get_preset
    from sutra.model.llama import Llama
    from sutra.tokenizer import load_tokenizer
    from sutra.train.recipe import load_recipe

    config = load_recipe(recipe, overrides)
    torch.manual_seed(config.train.seed)
    model = Llama(get_preset(config.model.preset))
    save_checkpoint(out, model, load_tokenizer(), extra={"step": 0, "note": "untrained initialisation"})
    print(f"   saved {out}", flush=True)


def write_samples(spec: Path, out: Path, max_new_tokens: int = 40, temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> None:
    import torch

    from sutra.model.checkpoint import load_model
    from sutra.model.generate import generate

    loaded = load_model(str(spec), device="cpu", dtype=torch.float32)
    lines = [f"# Sample completions from {spec}", "", f"Temperature {temperature}, top-p {top_p}, seed {seed}, {max_new_tokens} new tokens.", ""]
    for prompt in PROMPTS:
        ids = generate(loaded.model, loaded.tokenizer.encode(prompt), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       seed=seed, stop_ids=loaded.eos_token_ids)
        lines += [f"**{prompt}**{loaded.tokenizer.decode(ids)}", ""]
    atomic_write_text(out, "\n".join(lines))


def training_speed(run_dir: Path) -> float:
    """Mean training tokens/s over the run's logged windows."""
    from sutra.train.metrics import METRICS_FILE, read_metrics

    speeds = [r["tokens_per_s"] for r in read_metrics(run_dir) if r.get("tokens_per_s") is not None]
    if not speeds:
        raise SutraError(f"{run_dir / METRICS_FILE}: no training speed logged")
    return sum(speeds) / len(speeds)


def run_demo(out: Path, scale: Scale) -> dict:
    from sutra.io import check_output_path
    from sutra.train.recipe import load_recipe

    started = time.perf_counter()
    out = check_output_path(out, directory=True).resolve()  # a file, or a place this user cannot write: one line, before any stage
    synth_dir, data_dir, run_dir, results_dir, report_dir = layout(out)
    recipe = recipe_path(scale.recipe)
    steps = scale.train_steps
    overrides = [*scale.overrides, f"data.path={data_dir}", f"train.steps_per_epoch={steps}", f"schedule.warmup_steps={max(1, steps // 10)}",
                 f"eval.every_steps={max(1, steps // 5)}", f"checkpoint.every_steps={max(1, steps // 5)}", f"name=demo-{scale.name}"]
    planned = load_recipe(recipe, overrides)
    tokens = planned.data.seq_len * planned.train.micro_batch * planned.train.grad_accum
    # (the recipe's own note describes its own step count; the card publishes this one)
    overrides.append(f"assumptions.steps_per_epoch={steps} steps of {tokens} tokens, the size of sutra demo --scale {scale.name}")
    print(f"sutra demo: scale '{scale.name}', output in {out}", flush=True)

    with exclusive(out, "demo"):  # before the first stage: two demos on one OUT would make the same stages at once
        log = StageLog(out)
        banner("1/8 offline assets: tokenizer, teacher, corpus, benchmark store")
        sutra("assets", "fetch", *ASSETS)
        banner(f"2/8 synthesize {scale.synth_items} Sutra entries with the local teacher")
        synthesize(log, synth_dir, scale)
        banner(f"3/8 prepare the corpus: {CORPUS} + the synthesized entries")
        prepare = ("data", "prepare", CORPUS, synth_dir, "--out", data_dir, "--min-val-docs", 24)
        log.command("data", data_dir, prepare, needs=("synth",))
        banner("4/8 the untrained model (the baseline)")
        untrained = log.run("untrained", out / "untrained", {"recipe": recipe, "recipe_digest": file_digest(recipe), "overrides": overrides},
                            lambda: save_untrained(out / "untrained", recipe, overrides))
        banner(f"5/8 train ({steps} steps)")
        train_run(log, "run", recipe, run_dir, overrides, needs=("data",))
        best = run_dir / "e1-best"
        banner(f"6/8 evaluate: validation perplexity and {TASKS} (--limit {scale.eval_limit})")
        # the windows the run validated on: so the card's two validation perplexities (the run's, the evaluation's) are one number
        windows = ("--max-windows", planned.eval.max_windows) if planned.eval.max_windows else ()
        extra = (*windows, "--seq-len", planned.data.seq_len)
        trained_results = evaluate(log, "eval-trained", best, results_dir / "trained.json", TASKS, scale.eval_limit, ("run", "data"), data_dir, extra)
        untrained_results = evaluate(log, "eval-untrained", untrained, results_dir / "untrained.json", TASKS, scale.eval_limit, ("untrained", "data"),
                                     data_dir, extra)
        banner("7/8 sample completions")
        samples = log.run("samples", report_dir / "samples.md", {"prompts": PROMPTS}, lambda: write_samples(best, report_dir / "samples.md"),
                          needs=("run",))
        print(samples.read_text(), end="")
        banner("8/8 report: model card, tables, charts")
        columns = [f"trained={trained_results}", f"untrained={untrained_results}"]  # the card's order: newest first
        sutra("report", *columns, "--out", report_dir)
        sutra("plot", run_dir, "--out", report_dir / "loss.png")
        sutra("card", best, "--results", trained_results, "--run", run_dir, "--name", f"sutra-demo-{scale.name}",
              "--progression", *columns, "--out", report_dir / "README.md")
        return summarize(out, trained_results, untrained_results, samples, time.perf_counter() - started)


def summarize(out: Path, trained_path: Path, untrained_path: Path, samples: Path, seconds: float) -> dict:
    from sutra.report.tables import load_columns, mean_percent

    paths = layout(out)

    untrained, trained = load_columns([f"untrained={untrained_path}", f"trained={trained_path}"])
    tasks = list(trained.results["tasks"])
    summary = {
        "val_perplexity": trained.perplexity,
        "untrained_val_perplexity": untrained.perplexity,
        "benchmark_average": 100 * mean_percent(trained, tasks),
        "untrained_benchmark_average": 100 * mean_percent(untrained, tasks),
        "benchmark_tasks": tasks,
        "limit": trained.results.get("limit"),
        "train_tokens_per_s": training_speed(paths.run),
        "seconds": round(seconds, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    report = paths.report
    print(f"""
== done in {seconds / 60:.1f} min. Everything is under {out}:
   synthesized entries   {paths.synth}
   prepared corpus       {paths.data}
   training run          {paths.run} (checkpoints e1-best, e1-final; metrics.jsonl; tensorboard/)
   evaluation results    {trained_path}, {untrained_path}
   model card            {report / 'README.md'}
   tables                {report / 'progression.md'}, {report / 'comparison.md'} (+ .csv)
   charts                {report / 'loss.png'}, {report / 'tasks.png'}, {report / 'perplexity_vs_average.png'}
   samples               {samples}

   validation perplexity {summary['val_perplexity']:.2f} (untrained: {summary['untrained_val_perplexity']:.2f})
   benchmark average     {summary['benchmark_average']:.2f}% (untrained: {summary['untrained_benchmark_average']:.2f}%) over {len(tasks)} tasks ({', '.join(tasks)}; --limit {summary['limit']})
   training speed        {summary['train_tokens_per_s']:,.0f} tokens/s""", flush=True)
    return summary
