"""The model card's benchmarks: which lm-eval v0.4.11 task, metric, split and size each one is.

lm-eval's own task YAMLs define the prompts and metrics; this catalog only says which number
the card reports for each task and what the card's split is, so a result computed on another
split (or on fewer items) is always labelled as such.
"""

import math
from dataclasses import dataclass

from sutra.errors import SutraError


@dataclass(frozen=True)
class CardTask:
    name: str  # lm-eval task (or group) name
    title: str  # the card's row name
    metric: str  # lm-eval metric key reported on the card
    filter: str  # lm-eval filter of that metric ("none" except for gsm8k)
    card_split: str  # the split the card's number comes from
    card_items: int  # documents in that split
    num_fewshot: int
    dataset_type: str  # Hugging Face dataset id in the card's model-index
    dataset_name: str
    dataset_config: str | None = None

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"

    @property
    def metric_title(self) -> str:
        words = {"acc": "Accuracy", "acc_norm": "Normalized Accuracy", "exact_match": "Exact Match"}[self.metric]
        return f"{words} ({self.num_fewshot}-shot)"


# In the card's order. gsm8k's card number is the flexible-extract filter (see
# shared/reference/eval-lm-eval-v0.4.11.md §1.9); strict-match is recorded beside it.
CARD_TASKS: tuple[CardTask, ...] = (
    CardTask("arc_easy", "ARC-Easy", "acc_norm", "none", "test", 2376, 0, "ai2_arc", "ARC-Easy", "ARC-Easy"),
    CardTask("arc_challenge", "ARC-Challenge", "acc_norm", "none", "test", 1172, 0, "ai2_arc", "ARC-Challenge", "ARC-Challenge"),
    CardTask("boolq", "BoolQ", "acc", "none", "validation", 3270, 0, "boolq", "BoolQ"),
    CardTask("hellaswag", "HellaSwag", "acc_norm", "none", "validation", 10042, 0, "hellaswag", "HellaSwag"),
    CardTask("piqa", "PIQA", "acc_norm", "none", "validation", 1838, 0, "piqa", "PIQA"),
    CardTask("sciq", "SciQ", "acc_norm", "none", "test", 1000, 0, "sciq", "SciQ"),
    CardTask("winogrande", "WinoGrande", "acc", "none", "validation", 1267, 0, "winogrande", "WinoGrande"),
    CardTask("truthfulqa_mc2", "TruthfulQA", "acc", "none", "validation", 817, 0, "truthful_qa", "TruthfulQA MC2"),
    CardTask("gsm8k", "GSM8K", "exact_match", "flexible-extract", "test", 1319, 5, "gsm8k", "GSM8K"),
    CardTask("mmlu", "MMLU", "acc", "none", "test", 14042, 0, "cais/mmlu", "MMLU"),
    CardTask("openbookqa", "OpenBookQA", "acc_norm", "none", "test", 500, 0, "openbookqa", "OpenBookQA"),
)
TASKS = {task.name: task for task in CARD_TASKS}
# The card's "Average (10)": every card task except OpenBookQA.
AVERAGE_TASKS = tuple(task.name for task in CARD_TASKS if task.name != "openbookqa")


def parse_tasks(spec: str) -> list[CardTask]:
    """'card' or a comma-separated list of task names -> catalog entries, in the given order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise SutraError("--tasks is empty; give 'card' or task names such as arc_easy,hellaswag")
    if names == ["card"]:
        return list(CARD_TASKS)
    if "card" in names:  # (a list naming it is no task name unknown: say what it is)
        raise SutraError(f"--tasks {spec}: 'card' stands for all 11 tasks alone; to add or leave out tasks, list them: {','.join(TASKS)}")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SutraError(f"unknown task(s): {', '.join(unknown)}; known tasks: card (all 11), {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(names)]


def parse_limit(text: str | None, flag: str = "--limit") -> int | float | None:
    """lm-eval's --limit: a whole number of documents per task, or a fraction (below 1) of each."""
    if text is None:
        return None
    try:
        value = int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise SutraError(f"{flag} {text!r}: give a number of documents (e.g. 50) or a fraction below 1 (e.g. 0.1)") from None
    if not value > 0 or math.isinf(value):
        raise SutraError(f"{flag} {text}: must be a positive number")
    if isinstance(value, float) and value >= 1:
        if not value.is_integer():  # lm-eval would cut it to int(value) documents while the results said `text`
            raise SutraError(f"{flag} {text}: give a whole number of documents (e.g. {int(value)}) or a fraction below 1 (e.g. 0.1)")
        value = int(value)  # 1e2: 100 documents
    return value
