"""A Hugging Face model card (README.md) like the seed's, from a checkpoint, its results and its run.

Front matter: language, license, library_name, tags, pipeline_tag, base_model, datasets and a
`model-index` with one result per evaluated task. Body: model details from the checkpoint's
config, training from the run directory (metrics.jsonl, recipe.yaml) when given, the benchmark
tables, usage and limitations. Anything the inputs do not say is left out, never guessed.
"""

import json
import math
from pathlib import Path

import yaml

from sutra.data.stream import describe_data
from sutra.errors import SutraError
from sutra.eval.tasks import TASKS
from sutra.io import invalid_yaml
from sutra.report.tables import (CHECKPOINT_NAME, Column, average_tasks, comparison_table, mean_percent, oldest_first, perplexity_bases,
                                 progression_table, sizes_differ)
from sutra.train.metrics import METRICS_FILE, finite, read_metrics
from sutra.train.recipe import DATA_FILE, RECIPE_FILE, RESUME_MAY_CHANGE, flat_recipe, recipe_differences

TAGS = ["pretraining", "educational", "pedagogical", "sutra", "smollm2", "llama"]


def model_index(name: str, results: dict) -> list[dict]:
    entries = []
    for task_name, entry in results["tasks"].items():
        task = TASKS[task_name]
        # the seed's dataset names ("TruthfulQA MC2"), with the split and size when they are not the card's
        measured = "" if entry["matches_card"] else f" ({entry['split']}, {entry['items']})"
        dataset = {"type": task.dataset_type, "name": task.dataset_name + measured}
        if task.dataset_config:
            dataset["config"] = task.dataset_config
        dataset["split"] = entry["split"]
        metric_name = task.metric_title if task.filter == "none" else f"{task.metric_title}, {task.filter}"  # the filter of its value
        entries.append({
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": dataset,
            "metrics": [{"type": task.metric, "value": round(100 * entry["value"], 2), "name": metric_name}],
        })
    return [{"name": name, "results": entries}]


def is_card(path: Path) -> bool:
    """Whether `path` holds a card `sutra card` wrote (an earlier one, which a new one may replace)."""
    from sutra.model.checkpoint import WEIGHTS_MARK

    try:
        return WEIGHTS_MARK in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def model_details(spec: str, config, base_model: str | None = None, datasets: list[str] = ()) -> list[tuple[str, str]]:
    from sutra.model.checkpoint import resolve_spec

    _, directory = resolve_spec(spec)
    return [
        ("Architecture", "LlamaForCausalLM"),
        ("Parameters", f"{config.num_parameters / 1e6:.1f}M"),
        ("Hidden Size", str(config.hidden_size)),
        ("Layers", str(config.num_layers)),
        ("Attention Heads", f"{config.num_heads} ({config.num_kv_heads} KV heads)"),
        ("Context Length", f"{config.max_seq_len:,}"),
        ("Vocabulary", f"{config.vocab_size:,}"),
        *([("Precision", precision)] if (precision := _weights_dtype(directory)) else []),
        *([("Base Model", base_model)] if base_model else []),
        *([("Training Dataset", ", ".join(datasets))] if datasets else []),
    ]


def description(config, base_model: str | None, datasets: list[str], run: dict | None, checkpoint: dict) -> str:
    """The seed's opening line, from what is known: shape, base, data, epochs and tokens."""
    text = f"A {config.num_parameters / 1e6:.1f}M-parameter {base_model or 'Llama-architecture'} model"
    trained = f" pretrained on {', '.join(datasets)}" if datasets else ""
    run = run or {"metrics": [], "recipe": None}
    # the checkpoint's own epochs (an e1-final of a 3-epoch run was trained for 1), else the run's
    epochs = math.ceil(checkpoint["epoch"]) if finite(checkpoint.get("epoch")) and checkpoint["epoch"] > 0 else \
        ((run["recipe"] or {}).get("train") or {}).get("epochs")
    tokens = [m["tokens"] for m in run["metrics"] if isinstance(m.get("tokens"), (int, float))
              and (checkpoint.get("step") is None or m.get("step", 0) <= checkpoint["step"])]
    if isinstance(epochs, int) and epochs > 0:
        trained = (trained or " trained") + f" for {epochs} epoch{'s' * (epochs > 1)}"
    if tokens:
        trained = (trained or " trained") + f" ({_count(max(tokens))} tokens to this checkpoint)"
    return text + trained + "."


def _weights_dtype(directory: Path) -> str | None:
    from safetensors import safe_open

    from sutra.model.checkpoint import weight_files

    files = weight_files(directory)
    if not files:
        return None
    with safe_open(str(files[0]), framework="pt") as f:
        first = next(iter(f.keys()), None)
        code = f.get_slice(first).get_dtype() if first else None
    return {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(code, code)


def read_run(run_dir: str) -> dict:
    """What a run directory says about training: metrics.jsonl lines and the resolved recipe."""
    run = Path(run_dir)
    if not run.is_dir():
        raise SutraError(f"{run}: no such run directory")
    metrics_file, recipe_file = run / METRICS_FILE, run / RECIPE_FILE
    if not (metrics_file.is_file() or recipe_file.is_file()):  # a checkpoint or a parent directory: the card would drop its training silently
        raise SutraError(f"{run}: not a training run directory (no metrics.jsonl or recipe.yaml); give --run the run_dir 'sutra train' wrote")
    metrics = read_metrics(run) if metrics_file.is_file() else []
    try:
        recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else None
    except (yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise SutraError(f"{invalid_yaml(recipe_file, exc)}; fix or remove it") from None
    except UnicodeDecodeError as exc:
        raise SutraError(f"{recipe_file}: bytes that are not UTF-8 text at offset {exc.start}; fix or remove it") from None
    if recipe is not None and not isinstance(recipe, dict):
        raise SutraError(f"{recipe_file}: not a mapping of recipe settings; fix or remove it")
    return {"path": str(run), "metrics": metrics, "recipe": recipe, "data": read_data_record(run / DATA_FILE) if (run / DATA_FILE).is_file() else None}


def read_data_record(path: Path) -> dict:
    """A run's record of its training data, checked by saying it as the card will."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        parts = [record, *record.get("components", [])]  # (a record that is no mapping fails here too)
        if not all(isinstance(part.get("name"), str) and isinstance(part.get("tokens", 0), int) for part in parts):
            raise TypeError("a name that is not text, or a token count that is not a whole number")
        data_line(record)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise SutraError(f"{path}: not a record of the run's training data as `sutra train` writes it ({type(exc).__name__}: {exc}); "
                         "fix or remove it (the card then reads the recipe's data.path)") from None
    return record


def check_run_made(run: dict, checkpoint: dict, spec: str) -> None:
    """Refuse a run directory that did not train this checkpoint: its recipe has another name, it
    never reached the checkpoint's step, or it validated that step to another perplexity."""
    step, where = checkpoint.get("step"), f"--run {run['path']}: not the run that trained {spec}"
    if not checkpoint:  # imported, exported or hand-made: nothing ties a run to it, and the card would claim its training
        raise SutraError(f"--run {run['path']}: {spec} carries no training record (step, recipe), so no run can be shown to have "
                         f"trained it; leave out --run, or pass a checkpoint `sutra train` wrote")
    named = (run.get("recipe") or {}).get("name")
    if checkpoint.get("recipe") and named and checkpoint["recipe"] != named:
        raise SutraError(f"{where} (its recipe is '{named}', the checkpoint's '{checkpoint['recipe']}')")
    trained_with = checkpoint.get("resolved_recipe")
    if isinstance(trained_with, dict) and run.get("recipe"):  # a run of the same name with other settings (another warmup, init_from)
        now, then = flat_recipe(run["recipe"]), flat_recipe(trained_with)
        differ = [key for key in recipe_differences(now, then) if not key.startswith(RESUME_MAY_CHANGE)]
        if differ:
            also = ", ".join(differ[1:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            raise SutraError(f"{where} (its recipe has {differ[0]}: {now.get(differ[0])!r}, the checkpoint was trained with {then.get(differ[0])!r}"
                             + (f"; they differ in {also} too)" if also else ")"))
    if not isinstance(step, int):
        return
    steps = [m["step"] for m in run["metrics"] if isinstance(m.get("step"), int)]
    if steps and step > max(steps):
        raise SutraError(f"{where} (it logged up to step {max(steps)}, the checkpoint is step {step})")
    logged = [m["val_ppl"] for m in run["metrics"] if m.get("step") == step and finite(m.get("val_ppl"))]
    if finite(checkpoint.get("val_ppl")) and logged and not math.isclose(logged[-1], checkpoint["val_ppl"], rel_tol=1e-6):
        raise SutraError(f"{where} (it validated step {step} at perplexity {logged[-1]:.2f}, the checkpoint at {checkpoint['val_ppl']:.2f})")


def _schedule(recipe: dict | None) -> dict:
    """The recipe's schedule section ({} when there is none, or it is not a mapping)."""
    schedule = (recipe or {}).get("schedule")
    return schedule if isinstance(schedule, dict) else {}


def _lr_range(rates) -> str | None:
    """'3e-04 → 3e-05' from a schedule's (or an epoch's) peak_lr and min_lr; None unless both are numbers."""
    try:
        return f"{float(rates['peak_lr']):.0e} → {float(rates['min_lr']):.0e}"
    except (KeyError, TypeError, ValueError):  # a recipe edited by hand
        return None


def schedule_summary(schedule: dict) -> str | None:
    """The learning-rate schedule as the recipe states it (the logged rates can miss the peak)."""
    warmup = f", warmup {schedule.get('warmup_steps') or 0} steps"
    if schedule.get("kind") == "wsd":
        rates = _lr_range({**schedule, "min_lr": schedule.get("min_lr") or 0})  # WSD decays to 0 unless told
        return f"warmup-stable-decay {rates}{warmup}" if rates else None
    epochs = schedule.get("epochs")
    epochs = [_lr_range(e) for e in epochs] if isinstance(epochs, list) else []
    return f"cosine per epoch: {', '.join(epochs)}{warmup} each" if epochs and all(epochs) else None


def public_recipe(recipe: dict) -> dict:
    """The resolved recipe without this machine's paths: a directory is named by its last part."""
    def name_only(value):
        return Path(value).name if isinstance(value, str) and Path(value).is_absolute() else value

    public = {key: dict(value) if isinstance(value, dict) else value for key, value in recipe.items()}
    public.pop("run_dir", None)
    for section, key in (("data", "path"), ("model", "init_from")):
        if isinstance(public.get(section), dict) and key in public[section]:
            public[section][key] = name_only(public[section][key])
    return public


def training_data(run: dict) -> str | None:
    """What the run trained on: the dataset's name, or a mix's components with their shares, as the
    run recorded them at its start (a run from before that record: as its data path reads now)."""
    record = run.get("data")
    if record is None:
        path = ((run.get("recipe") or {}).get("data") or {}).get("path")
        if not isinstance(path, str):
            return None
        try:
            record = describe_data(path)
        except (SutraError, OSError, ValueError, TypeError, KeyError, RecursionError):
            record = {"name": Path(path).name}  # a mix or dataset no longer there: its name
    return data_line(record)


def data_line(record: dict) -> str:
    """A run's data record (see describe_data) as the card's "Training data" row says it."""
    parts = [f"{c['name']} {c['weight']:.1%} ({_count(c['tokens'])} tokens)" for c in record.get("components", [])]
    if parts:
        return f"{record['name']}, a mix of {_count(record['tokens'])} tokens per epoch: {', '.join(parts)}"
    return str(record["name"])


def training_summary(run: dict, checkpoint: dict) -> list[tuple[str, str]]:
    """The run's training up to this checkpoint (a run's e1-best is not its end)."""
    upto = checkpoint.get("step")
    metrics = [m for m in run["metrics"] if upto is None or not isinstance(m.get("step"), (int, float)) or m["step"] <= upto]
    rows = [("Training data", data)] if (data := training_data(run)) else []
    steps = [m["step"] for m in metrics if isinstance(m.get("step"), (int, float))]
    if steps:
        rows.append(("Optimizer steps", f"{int(max(steps)):,}"))
    tokens = [m["tokens"] for m in metrics if isinstance(m.get("tokens"), (int, float))]
    if tokens:
        rows.append(("Tokens", _count(max(tokens))))
    schedule = schedule_summary(_schedule(run.get("recipe")))
    lrs = [m["lr"] for m in metrics if isinstance(m.get("lr"), (int, float))]
    if schedule:
        rows.append(("Learning rate", schedule))
    elif lrs:  # no recipe: what the log lines saw (a peak between two of them is missed)
        rows.append(("Learning rate (logged)", f"{max(lrs):.0e} → {lrs[-1]:.0e} (highest → final)"))
    losses = [m["loss"] for m in metrics if finite(m.get("loss"))]
    if losses:
        rows.append(("Final training loss (mean of the last logged steps)", f"{losses[-1]:.4f}"))
    ppls = [m.get("val_ppl") if finite(m.get("val_ppl")) else math.exp(min(m["val_loss"], 700)) if finite(m.get("val_loss")) else None for m in metrics]
    ppls = [p for p in ppls if finite(p)]
    if ppls:
        rows.append(("Best validation perplexity", f"{min(ppls):.2f}"))
    if finite(checkpoint.get("val_ppl")):
        rows.append(("Validation perplexity of this checkpoint", f"{checkpoint['val_ppl']:.2f} (step {checkpoint['step']:,})"))
    return rows


def epoch_table(run: dict, checkpoint: dict) -> str | None:
    """The seed's per-epoch table (Epoch | Tokens | Training Time | Learning Rate | Best Perplexity,
    then Total) for the epochs up to this checkpoint. Training time adds up each log line's
    window (its tokens / its tokens per second): the optimizer steps, not validation or saving."""
    upto = checkpoint.get("step")
    metrics = [m for m in run["metrics"] if isinstance(m.get("step"), int) and finite(m.get("epoch")) and (upto is None or m["step"] <= upto)]
    if not any("loss" in m for m in metrics):
        return None
    schedule = _schedule(run.get("recipe"))
    epoch_lrs = schedule.get("epochs") if schedule.get("kind", "cosine") == "cosine" else None
    rows, before, total_seconds, logged_tokens, best_ppls = [], 0, 0.0, 0, []
    for n in range(1, math.ceil(max(m["epoch"] for m in metrics)) + 1):
        inside = [m for m in metrics if n - 1 < m["epoch"] <= n]
        train = [m for m in inside if "loss" in m]
        seconds = 0.0
        for m in train:
            if finite(m.get("tokens_per_s")) and m["tokens_per_s"] > 0:
                seconds += (m["tokens"] - logged_tokens) / m["tokens_per_s"]
            logged_tokens = m["tokens"]
        ended = max((m["tokens"] for m in inside), default=before)
        ppls = [m["val_ppl"] for m in inside if finite(m.get("val_ppl"))]
        best_ppls += ppls
        lr = _lr_range(epoch_lrs[n - 1]) if isinstance(epoch_lrs, list) and n <= len(epoch_lrs) else None
        if lr is None:  # WSD, no recipe, or a recipe without this epoch's rates: what the log lines saw
            lrs = [m["lr"] for m in train if finite(m.get("lr"))]
            lr = f"{max(lrs):.0e} → {lrs[-1]:.0e} (logged)" if lrs else ""
        rows.append([str(n), _count(ended - before), _duration(seconds), lr, f"{min(ppls):.2f}" if ppls else ""])
        before, total_seconds = ended, total_seconds + seconds
    rows.append(["Total", _count(before), _duration(total_seconds), "", f"{min(best_ppls):.2f}" if best_ppls else ""])
    lines = ["| Epoch | Tokens | Training Time | Learning Rate | Best Perplexity |", "|---|---:|---:|---|---:|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f}h" if seconds >= 360 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _count(n: float) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.2f}{suffix}"
    return str(int(n))


def _kv_table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    return "\n".join([f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def benchmark_section(name: str, results: dict, progression: list[Column]) -> str:
    """The seed's "Benchmark Results": how they were measured, then this model beside the
    progression's checkpoints (this model's column first when the progression lacks it)."""
    version = results.get("engine", {}).get("version")
    shots = sorted({(entry.get("num_fewshot") or 0, entry["title"]) for entry in results["tasks"].values()})
    few = [f"{title} ({n}-shot)" for n, title in shots if n]
    weights = results.get("model", {}).get("weights_sha256")
    # these results, or the same weights with the same scores: a column of the same weights measured
    # otherwise (another dtype, device or data) would show numbers the model-index does not
    this = next((c for c in progression if c.results == results or (weights and c.results.get("model", {}).get("weights_sha256") == weights
                                                                     and c.results["tasks"] == results["tasks"])), None)
    columns = progression if this else [this := Column(name, results), *progression]
    return (
        "## Benchmark Results\n\n"
        f"All benchmarks evaluated with lm-evaluation-harness{f' v{version}' if version else ''}; "
        f"{'all tasks are 0-shot except ' + ', '.join(few) if few else 'all tasks are 0-shot'}. "
        "A task shown with a split and size in brackets was not measured on the card's full split."
        + "".join(f" {entry['title']} data: {copy}." for entry in results["tasks"].values() if (copy := _brought(entry)))
        + "\n\n"
        + ("### This Model vs Training Progression\n\n" if len(columns) > 1 else "")
        + progression_table(columns).markdown()
        + key_findings(columns, this)
    )


def _brought(entry: dict) -> str | None:
    """The file and digest of a task's data when it came from a copy the user brought, so a reader can identify it."""
    data = entry.get("data")
    if isinstance(data, dict) and isinstance(data.get("sha256"), str) and isinstance(data.get("source"), str):
        return f"`{Path(data['source']).name}`, sha256 {data['sha256'][:16]}"
    return None


def key_findings(columns: list[Column], this: Column) -> str:
    """The seed's "Key Findings" as far as the numbers go, and no further: how the benchmark average
    and the validation perplexity moved from the oldest checkpoint to this model (the seed's
    "+0.25 average from epoch 1 to epoch 3", E1-final to E3-best)."""
    points = oldest_first([c for c in columns if CHECKPOINT_NAME.fullmatch(c.name)])
    if not points or points[0] is this:
        return ""
    first, last = points[0], this
    lines = []
    tasks = average_tasks([first, last])
    if tasks and not any(sizes_differ(task, [first, last]) for task in tasks):  # as perplexity below: like for like only
        # the difference of the averages as shown, so the line adds up as a reader checks it (the seed's +0.25)
        before, after = (round(100 * mean_percent(c, tasks), 2) for c in (first, last))
        lines.append(f"- Benchmark average over {len(tasks)} task{'s' * (len(tasks) > 1)}: {before:.2f} ({first.name}) → {after:.2f} ({last.name}), {after - before:+.2f}.")
    if first.perplexity is not None and last.perplexity is not None and len(perplexity_bases([first, last])) == 1:
        lines.append(f"- Validation perplexity: {first.perplexity:.2f} ({first.name}) → {last.perplexity:.2f} ({last.name}).")
    return "\n### Key Findings\n\n" + "\n".join(lines) + "\n" if lines else ""


def render_card(spec: str, results: dict, name: str, base_model: str | None, datasets: list[str], run: dict | None,
                progression: list[Column], comparison: list[Column], repo_id: str | None, license: str = "apache-2.0") -> str:
    from sutra.model.checkpoint import read_model_config, read_training_record, weights_mark, weights_sha256

    config = read_model_config(spec)
    evaluated = results.get("model", {}).get("config")
    if evaluated is not None and {key: evaluated.get(key) for key in config.shape()} != config.shape():
        raise SutraError(f"the results are for another model ({results['model'].get('spec')}, a different shape) than {spec}; evaluate {spec} or pass its results")
    weights = weights_sha256(spec)
    measured = results.get("model", {}).get("weights_sha256")
    if measured is None:  # the card's weights mark would vouch for numbers measured on unknown weights
        raise SutraError(f"the results do not say which weights they measured (no model.weights_sha256); "
                         f"evaluate {spec} with 'sutra eval {spec} --tasks card --out FILE', which records it, and pass FILE")
    if measured != weights:
        raise SutraError(f"the results are for other weights ({results['model'].get('spec')}) than {spec}'s; evaluate {spec} or pass its results")
    checkpoint = read_training_record(spec)
    if run:
        check_run_made(run, checkpoint, spec)
    front = {
        "language": ["en"],
        "license": license,
        "library_name": "transformers",
        "tags": TAGS,
        "pipeline_tag": "text-generation",
        **({"base_model": base_model} if base_model else {}),
        **({"datasets": datasets} if datasets else {}),
        # no benchmark results (a perplexity alone): no index, rather than one that lists nothing
        **({"model-index": model_index(name, results)} if results.get("tasks") else {}),
    }
    # the weights mark: `sutra export --card` checks that it publishes the card beside these weights
    parts = ["---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n", weights_mark(weights) + "\n", f"# {name}\n",
             description(config, base_model, datasets, run, checkpoint) + "\n"]
    parts.append("## Model Details\n\n" + _kv_table(model_details(spec, config, base_model, datasets), ("Property", "Value")))
    if run:
        summary = training_summary(run, checkpoint)
        if summary:
            parts.append("## Training\n\n" + _kv_table(summary, ("Quantity", "Value")))
        table = epoch_table(run, checkpoint)
        if table:
            parts.append(table)
        if checkpoint.get("step") is not None:
            parts.append(f"This checkpoint is step {checkpoint['step']:,} of the run, in epoch {max(1, math.ceil(checkpoint.get('epoch') or 0))}.\n")
        if run["recipe"]:
            parts.append("Training configuration (resolved recipe):\n\n```yaml\n" + yaml.safe_dump(public_recipe(run["recipe"]), sort_keys=False) + "```\n")
    if results["tasks"]:
        parts.append(benchmark_section(name, results, progression))
    measured = results.get("perplexity") or {}
    if finite(measured.get("perplexity")):
        where = f" of {Path(measured['data']).name}" if measured.get("data") else ""
        windows = f"{measured['windows']} window{'s' * (measured['windows'] != 1)} of {measured['seq_len']} tokens, " if measured.get("windows") and measured.get("seq_len") else ""
        attention = f"{measured['attention']} attention, " if measured.get("attention") else ""  # a causal and a document-masked perplexity differ
        tokens = f" over {measured['tokens']:,} tokens" if isinstance(measured.get("tokens"), int) else ""  # never a made-up 0
        parts.append(f"Validation perplexity{where}: {measured['perplexity']:.2f}{tokens} ({windows}{attention}`sutra eval --perplexity`).\n")
    if comparison:
        parts.append("\n### Comparison\n\n" + comparison_table(comparison).markdown())
    # without --repo-id, the directory `sutra export ... --card` publishes it in
    model_id = repo_id or f"path/to/{name}"
    parts.append(
        "\n## Usage\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        + ("" if repo_id else "# the directory `sutra export` wrote (or its hub id once uploaded)\n")
        + f'model = AutoModelForCausalLM.from_pretrained("{model_id}")\ntokenizer = AutoTokenizer.from_pretrained("{model_id}")\n\n'
        'inputs = tokenizer("The theory of relativity states that", return_tensors="pt")\n'
        "outputs = model.generate(**inputs, max_new_tokens=100)\n"
        "print(tokenizer.decode(outputs[0], skip_special_tokens=True))\n```\n"
    )
    limits = []
    if checkpoint:  # pretrained by Sutra (from scratch or continued): a base model
        limits.append("- A base model pretrained on next-token prediction (not instruction-tuned): it continues text rather than following instructions.")
    if config.num_parameters < 1e9:
        limits.append("- Most of these benchmarks sit near chance at this scale; differences of 1–2 points are within noise.")
    if datasets:
        limits.append(f"- It knows what its training data ({', '.join(datasets)}) holds, and reflects that data's language and biases.")
    if limits:
        parts.append("\n## Limitations\n\n" + "\n".join(limits) + "\n")
    return "\n".join(parts)
