"""Run the card's benchmarks through lm-evaluation-harness v0.4.11 and record honest results.

lm-eval does everything that defines a number (prompts, few-shot sampling, filters, metrics,
`--limit`); this module picks the data source (offline store or the hub), plugs the model in,
and turns lm-eval's output into Sutra's results file: for every task the number the card
reports, plus the split and item count it was computed on, so nothing is reported under the
card's name that the card did not measure.
"""

import os
import re
import tempfile
import time
from pathlib import Path

from sutra.errors import SutraError
from sutra.eval.tasks import TASKS, CardTask
from sutra.io import json_format

FORMAT = "sutra-eval-results"
DATA_SOURCES = ("store", "hub")
ATTENTION = ("document", "causal")  # what a token sees when `sutra eval --perplexity` scores it (sutra.eval.perplexity)


def _offline_environment() -> None:
    """Make datasets/transformers never reach for the hub (the store is local JSONL)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    datasets.config.HF_HUB_OFFLINE = True


def task_manager(tasks: list[CardTask], data: str, workdir: Path):
    from lm_eval.tasks import TaskManager

    if data == "hub":
        return TaskManager()
    from sutra.eval.store import write_overrides

    write_overrides(tasks, workdir)
    # Only our overrides are indexed (each includes its stock YAML by absolute path): indexing
    # all ~14,000 stock tasks would add ~15 s to every run.
    return TaskManager(include_path=str(workdir), include_defaults=False)


def _quiet_git_hash() -> None:
    """lm-eval records the git commit of the working directory and lets git print "fatal: not a
    git repository" to the terminal when there is none, which reads as a failure of the run. The
    same lookup, with git's complaint discarded."""
    import subprocess

    import lm_eval.evaluator
    import lm_eval.loggers.utils

    def git_hash() -> str | None:
        try:
            return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
        except (subprocess.CalledProcessError, OSError):
            return None

    lm_eval.evaluator.get_git_commit_hash = lm_eval.loggers.utils.get_git_commit_hash = git_hash


def _quiet_defaults() -> None:
    """Lines that say nothing of the run: datasets' "Generating test split" bar for each of some 80
    splits (MMLU's subjects), lm-eval's bar for the prompts it builds of each task (57 with MMLU,
    a second each; the scoring bar after them is the progress), and lm-eval's note that a metric
    without a stated aggregation or direction takes its default (boolq's acc: the mean, higher is
    better, as the card reports it)."""
    import functools
    import logging

    import datasets
    import lm_eval.api.task
    import tqdm

    datasets.disable_progress_bars()
    lm_eval.api.task.tqdm = functools.partial(tqdm.tqdm, disable=True)  # it offers no switch of its own
    logging.getLogger("lm_eval.api.task").addFilter(_not_a_default_metric_note)  # (added once, however often called)


def _not_a_default_metric_note(record) -> bool:
    return not re.search(r"is defined, but (aggregation|higher_is_better) is not", record.getMessage())


def run_lm_eval(lm, tasks: list[CardTask], data: str = "store", limit: int | float | None = None, log_samples: bool = False) -> dict:
    """lm-eval's simple_evaluate on `lm` for `tasks`, reading the offline store unless data == 'hub'."""
    import lm_eval

    if data not in DATA_SOURCES:
        raise SutraError(f"unknown data source '{data}'; use one of {', '.join(DATA_SOURCES)}")
    from sutra.hub import hub_unreachable

    if data == "store" or hub_unreachable():  # without a hub only datasets' own cache can serve --data hub: no retrying
        _offline_environment()
    _quiet_git_hash()
    _quiet_defaults()
    with tempfile.TemporaryDirectory(prefix="sutra-eval-tasks-") as workdir:
        manager = task_manager(tasks, data, Path(workdir))
        return lm_eval.simple_evaluate(
            model=lm,
            tasks=[t.name for t in tasks],
            task_manager=manager,
            limit=limit,
            num_fewshot=None,  # each task keeps its own (gsm8k 5-shot, the rest 0)
            bootstrap_iters=1000,  # every reported metric is a mean: its stderr is closed-form
            log_samples=log_samples,
        )


def _subtasks(output: dict, name: str) -> list[str]:
    """The leaf tasks behind a task or group name (mmlu -> its 57 subjects)."""
    groups = output.get("group_subtasks", {})
    if name not in groups or not groups[name]:
        return [name]
    return [leaf for child in groups[name] for leaf in _subtasks(output, child)]


def summarize(output: dict, tasks: list[CardTask], data: str = "store") -> dict[str, dict]:
    """Per card task: the reported value, split, item count and every metric lm-eval gave."""
    from sutra.eval.store import store_note, store_source

    summary = {}
    for task in tasks:
        metrics = output["results"][task.name]
        leaves = _subtasks(output, task.name)
        configs = [output["configs"][leaf] for leaf in leaves]
        splits = sorted({c.get("test_split") or c.get("validation_split") for c in configs})
        items = sum(output["n-samples"][leaf]["effective"] for leaf in leaves)
        available = sum(output["n-samples"][leaf]["original"] for leaf in leaves)
        split = "+".join(splits)
        note = store_note(task.name) if data == "store" else None
        entry = {
            "task": task.name,
            "title": task.title,
            "metric": task.metric,
            "filter": task.filter,
            "value": metrics.get(task.result_key),
            "stderr": metrics.get(f"{task.metric}_stderr,{task.filter}"),
            "split": split,
            "items": items,
            "items_in_split": available,
            "card_split": task.card_split,
            "card_items": task.card_items,
            "num_fewshot": output["n-shot"].get(task.name, output["n-shot"].get(leaves[0])),
            "fewshot_split": configs[0].get("fewshot_split") if task.num_fewshot else None,
            "note": note,
            "data": store_source(task.name) if data == "store" else {"source": "hub"},
            "metrics": {k: v for k, v in metrics.items() if k != "alias" and not isinstance(v, str)},
            "version": output.get("versions", {}).get(task.name),
        }
        if value_is_missing(entry):
            raise SutraError(f"lm-eval returned no '{task.result_key}' for {task.name}; got {sorted(entry['metrics'])}")
        entry["matches_card"] = matches_card(task.name, entry)
        summary[task.name] = entry
    return summary


def value_is_missing(entry: dict) -> bool:
    return not isinstance(entry["value"], (int, float))


def matches_card(task: str, entry: dict) -> bool:
    """Whether a result was measured as the card's was: its split, every one of its items, and data
    with no known difference. From the task's definition, so a results file cannot claim it."""
    card = TASKS[task]
    return entry["split"] == card.card_split and entry["items"] == card.card_items and entry.get("note") is None


def label(entry: dict) -> str:
    """The row name for a result: the card's title, plus the split and size when they differ from the card's."""
    if entry["matches_card"]:
        return entry["title"]
    return f"{entry['title']} ({entry['split']}, {entry['items']})"


def evaluate(
    spec: str,
    tasks: list[CardTask],
    limit: int | float | None = None,
    batch_size: int = 16,
    device=None,
    dtype=None,
    data: str = "store",
    journal: Path | None = None,
) -> dict:
    """Evaluate a model spec on card tasks; return the results document `sutra eval` writes.

    With `journal`, every answer is kept there as it comes and a journal an interrupted run left
    for the same model, dtype and device is answered from (see sutra.eval.journal)."""
    import lm_eval

    from sutra.eval.adapter import SutraLM
    from sutra.model.checkpoint import load_model
    from sutra.model.device import default_dtype, pick_device

    if data == "store":  # fail on a missing store before loading a model
        from sutra.eval.store import check_store

        check_store(tasks)
    device = pick_device(device)
    dtype = dtype or default_dtype(device)
    loaded = load_model(spec, device=device, dtype=dtype)
    started = time.time()
    answers = None
    if journal is not None:
        from sutra.eval.journal import AnswerJournal, weights_digest

        answers = AnswerJournal(journal, {"weights": weights_digest(loaded.model), "dtype": str(dtype), "device": device.type})
    try:
        output = run_lm_eval(SutraLM(loaded, batch_size=batch_size, journal=answers), tasks, data=data, limit=limit)
    finally:
        if answers is not None:
            answers.close()
    config = loaded.model.config
    return {
        "format": FORMAT,
        "version": 1,
        "model": {
            "spec": spec,
            "source": loaded.source,
            "kind": loaded.kind,
            "parameters": config.num_parameters,
            "config": config.to_dict(),
            "weights_sha256": loaded.weights_sha256,  # `sutra card` checks it names these weights
            "dtype": str(dtype).removeprefix("torch."),
            "device": device.type,
        },
        "engine": {"name": "lm-evaluation-harness", "version": lm_eval.__version__, "model": "sutra.eval.adapter.SutraLM"},
        "data": data,
        "limit": limit,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 1),
        "tasks": summarize(output, tasks, data),
    }


def is_results_file(path: Path) -> bool:
    """Whether `path` holds results `sutra eval` wrote (an earlier run's, which a new one may replace;
    in a scanned directory, one to read: other JSON such as a run's config.json is passed over)."""
    return json_format(path) == FORMAT


def read_results(path: str | os.PathLike) -> dict:
    """A results file written by `sutra eval`, checked for everything tables and cards read from it,
    so a hand-edited or foreign file is refused with its field named instead of failing mid-report."""
    import json

    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise SutraError(f"{path}: no such results file; write one with 'sutra eval SPEC --tasks card --out {path}'") from None
    except OSError as exc:  # a directory, no permission
        raise SutraError(f"{path}: cannot read it ({exc.strerror}); give a results file written by 'sutra eval'") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        table = " (a table `sutra report` writes, read from results)" if path.suffix in (".csv", ".md") else ""
        raise SutraError(f"{path}: not valid JSON ({exc}){table}; give a results file written by 'sutra eval --out FILE.json'") from None
    if not isinstance(results, dict) or results.get("format") != FORMAT or not isinstance(results.get("tasks"), dict):
        raise SutraError(f"{path}: not a 'sutra eval' results file (format {results.get('format') if isinstance(results, dict) else None!r})")
    for name, entry in results["tasks"].items():
        if name not in TASKS:
            raise _malformed(path, f"task '{name}' is not a card task (known: {', '.join(TASKS)})")
        if not isinstance(entry, dict):
            raise _malformed(path, f"task '{name}' is {json.dumps(entry)}, not an object")
        _check(path, entry, "value", is_score, "a score between 0 and 1", task=name, required=True)
        _check(path, entry, "title", _is_text, "a name", task=name, required=True)
        _check(path, entry, "split", _is_text, "a split name", task=name, required=True)
        _check(path, entry, "items", _is_count, "a number of items", task=name, required=True)
        _check(path, entry, "num_fewshot", _or_null(_is_count), "a number of shots", task=name)
        _check(path, entry, "note", _or_null(_is_text), "a note on the data", task=name)
        entry["matches_card"] = matches_card(name, entry)
        _check(path, entry, "metrics", _is_object, "an object", task=name)
        key = TASKS[name].result_key  # `value` is this metric, copied: an edit of one of them alone is no score of the model
        if key in entry.get("metrics", {}) and entry["metrics"][key] != entry["value"]:
            raise _malformed(path, f"task '{name}' field 'value' is {json.dumps(entry['value'])} but 'metrics.{key}' is "
                                   f"{json.dumps(entry['metrics'][key])}, the same score")
        # the one other metric the tables show: gsm8k's strict-match row
        _check(path, entry.get("metrics", {}), "exact_match,strict-match", _or_null(is_score), "a score between 0 and 1", task=name, prefix="metrics.")
    for section in ("engine", "model"):
        _check(path, results, section, _is_object, "an object")
    _check(path, results.get("engine", {}), "version", _is_text, "a version", prefix="engine.")
    _check(path, results.get("model", {}), "config", _or_null(_is_object), "an object", prefix="model.")
    _check(path, results.get("model", {}), "weights_sha256", _or_null(_is_digest), "a sha256 digest", prefix="model.")
    _check(path, results, "perplexity", _or_null(_is_object), "an object")
    measured = results.get("perplexity") or {}
    # exp(mean cross-entropy) is at least 1; a diverged run's NaN is kept, and shown as not measured
    _check(path, measured, "perplexity", _or_null(lambda v: _is_number(v) and not v < 1), "a perplexity (at least 1)", prefix="perplexity.")
    _check(path, measured, "data", _is_text, "a path", prefix="perplexity.")
    _check(path, measured, "attention", lambda v: v in ATTENTION, " or ".join(ATTENTION), prefix="perplexity.")
    for count in ("tokens", "windows", "seq_len"):
        _check(path, measured, count, _is_count, "a count", prefix="perplexity.")
    return results


def is_score(value) -> bool:
    """A score as lm-eval gives it: a real number in [0, 1] (not NaN, not a percent, not true)."""
    return _is_number(value) and 0 <= value <= 1


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_object(value) -> bool:
    return isinstance(value, dict)


def _is_digest(value) -> bool:
    import re

    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _or_null(check):
    return lambda value: value is None or check(value)


def _check(path: Path, section: dict, field: str, ok, expected: str, task: str | None = None, prefix: str = "", required: bool = False) -> None:
    """Refuse `section[field]` (of `task`'s entry, or at `prefix` in the file) unless `ok` says it is
    `expected`; a missing field only when it is required."""
    import json

    owner = f"task '{task}' " if task else ""
    if field not in section:
        if required:
            raise _malformed(path, f"{owner or 'the file '}has no '{prefix}{field}'")
        return
    if not ok(section[field]):
        raise _malformed(path, f"{owner}field '{prefix}{field}' is {json.dumps(section[field])}, not {expected}")


def _malformed(path: Path, problem: str) -> SutraError:
    return SutraError(f"{path}: {problem}; not as 'sutra eval' writes it: fix it, or evaluate again with 'sutra eval SPEC --out {path}'")
