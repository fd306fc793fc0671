"""Results files shaped as `sutra eval` writes them, for the report and card tests."""

import json

from sutra.eval.tasks import TASKS


def entry(task: str, value: float, split: str | None = None, items: int | None = None, strict: float | None = None) -> dict:
    card = TASKS[task]
    split, items = split or card.card_split, items or card.card_items
    metrics = {card.result_key: value}
    if strict is not None:
        metrics["exact_match,strict-match"] = strict
    return {
        "task": task, "title": card.title, "metric": card.metric, "filter": card.filter, "value": value, "stderr": 0.01,
        "split": split, "items": items, "items_in_split": items, "card_split": card.card_split, "card_items": card.card_items,
        "num_fewshot": card.num_fewshot, "note": None, "matches_card": split == card.card_split and items == card.card_items,
        "metrics": metrics,
    }


def write_results(path, scores: dict, perplexity: float | None = None, of=None):
    """Results as `sutra eval` writes them; `of` a checkpoint: these results measured its weights
    (`sutra card` takes no others)."""
    tasks = {}
    for task, value in scores.items():
        if task == "sciq":
            tasks[task] = entry(task, value, split="validation")
        elif task == "gsm8k":
            tasks[task] = entry(task, value, strict=value / 2)
        else:
            tasks[task] = entry(task, value)
    results = {"format": "sutra-eval-results", "version": 1, "engine": {"version": "0.4.11"}, "tasks": tasks}
    if perplexity:
        results["perplexity"] = {"perplexity": perplexity, "tokens": 1000}
    if of is not None:
        from sutra.model.checkpoint import weights_sha256

        results["model"] = {"spec": str(of), "weights_sha256": weights_sha256(str(of))}
    path.write_text(json.dumps(results))
    return path
