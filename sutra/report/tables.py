"""The card's benchmark tables from `sutra eval` results: Markdown and CSV.

(a) progression: tasks as rows, checkpoints as columns (E3-best, E3-final, E2-best, ... in the
    card's order), closed by the card's "Average (10)" row (every card task but OpenBookQA);
(b) comparison: one row per result (e.g. per pretraining dataset), tasks as columns: the card's
    seven in its order (HellaSwag, PIQA, WinoGrande, ARC-C, MMLU, TruthfulQA, GSM8K), then Avg, their
    mean as in the card's baseline rows, then any other shared tasks (with fewer of the seven, Avg
    comes last and averages every task shown).
Values are percentages with two decimals. A task computed on another split or on fewer items
than the card's is named with its split and size, and a note says why, so no number appears
under the card's name that the card did not measure.
"""

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from sutra.errors import SutraError
from sutra.eval.harness import is_results_file, label, read_results
from sutra.eval.tasks import AVERAGE_TASKS, CARD_TASKS, TASKS
from sutra.train.metrics import finite

STRICT_ROW = "gsm8k:strict-match"  # gsm8k's second filter, shown but never averaged
# The card's "Comparison with 1B Token Baselines" columns, in its order; other tasks follow in card order.
COMPARISON_ORDER = ("hellaswag", "piqa", "winogrande", "arc_challenge", "mmlu", "truthfulqa_mc2", "gsm8k")


@dataclass
class Column:
    name: str
    results: dict
    perplexity: float | None = None

    def value(self, task: str) -> float | None:
        if task == STRICT_ROW:
            entry = self.results["tasks"].get("gsm8k")
            return entry.get("metrics", {}).get("exact_match,strict-match") if entry else None  # metrics are optional in a results file
        entry = self.results["tasks"].get(task)
        return entry["value"] if entry else None


CHECKPOINT_NAME = re.compile(r"E(\d+)-(best|final)", re.IGNORECASE)  # Sutra's checkpoints are e1-best, e1-final, ...


def _checkpoint_order(name: str) -> tuple:
    """E3-best before E3-final before E2-best ...; other names keep their given order after them."""
    match = CHECKPOINT_NAME.fullmatch(name)
    return (0, -int(match.group(1)), match.group(2) != "best") if match else (1,)


def oldest_first(columns: list[Column]) -> list[Column]:
    """The card's order (newest first) reversed, but an epoch's best checkpoint, saved at or before
    its final one, before it: E1-final, E2-best, E2-final, E3-best, E3-final."""
    def chronological(column: Column) -> tuple:
        match = CHECKPOINT_NAME.fullmatch(column.name)
        return (1, int(match.group(1)), match.group(2).lower() == "final") if match else (0,)

    return sorted(reversed(columns), key=chronological)


def perplexity_bases(points: list[Column]) -> set[tuple]:
    """The (data, window length, attention) each point's perplexity was measured with: one, or they do not compare."""
    # results from before `sutra eval --attention` existed record none: they were all document-masked
    return {(Path(m["data"]).name if m.get("data") else None, m.get("seq_len"), m.get("attention", "document"))
            for m in (c.results.get("perplexity") or {} for c in points)}


def load_columns(inputs: list[str]) -> list[Column]:
    """`NAME=results.json` or `results.json` (named by its stem), or a directory of results files
    (named by their paths in it, so arms/A/results.json and arms/B/results.json are A/results and B/results)."""
    columns = []
    for item in inputs:
        # NAME ends at the first '=': a path may hold one (runs/lr=3e-4/...), and an existing path is never split
        name, _, path = item.partition("=") if "=" in item and not Path(item).exists() else ("", "", item)
        if not path:  # Path("") is the current directory: it would be scanned, not what was meant
            raise SutraError(f"{item}: no path after '='; give NAME=results.json")
        target = Path(path)
        if not (target.is_dir() or target.is_file()):
            raise SutraError(f"{target}: no such results file or directory; write one with 'sutra eval SPEC --tasks card --out FILE'")
        files = sorted(target.rglob("*.json")) if target.is_dir() else [target]
        found = [f for f in files if target.is_file() or is_results_file(f)]
        if not found:
            raise SutraError(f"{target}: no 'sutra eval' results files in this directory; write them with 'sutra eval SPEC --tasks card --out FILE'")
        for file in found:
            results = read_results(file)
            stem = file.stem if target.is_file() else file.relative_to(target).with_suffix("").as_posix()
            column_name = name if name and len(found) == 1 else (f"{name}/{stem}" if name else stem)
            ppl = (results.get("perplexity") or {}).get("perplexity")
            columns.append(Column(column_name, results, ppl if finite(ppl) else None))  # a diverged run's NaN: not measured
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SutraError(f"two inputs are both named {', '.join(duplicates)}; name them as NAME=results.json")
    return sorted(columns, key=lambda c: _checkpoint_order(c.name))


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    notes: list[str]

    def markdown(self) -> str:
        def cells(row: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"  # a '|' in a name would split its cell

        lines = [cells(self.header), "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.header))) + "|"]
        lines += [cells(row) for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _tasks_in(columns: list[Column]) -> list[str]:
    present = {name for column in columns for name in column.results["tasks"]}
    return [t.name for t in CARD_TASKS if t.name in present]


def sizes_differ(task: str, columns: list[Column]) -> bool:
    return len({label(c.results["tasks"][task]) for c in columns if task in c.results["tasks"]}) > 1


def task_label(task: str, columns: list[Column]) -> str:
    """The card title, or title (split, items) when the columns' numbers are not the card's
    measurement, or title (sizes differ) when the columns were measured on different items."""
    entries = [c.results["tasks"][task] for c in columns if task in c.results["tasks"]]
    return f"{entries[0]['title']} (sizes differ)" if sizes_differ(task, columns) else label(entries[0])


def _add_note(notes: list[str], note: str) -> None:
    if note not in notes:  # gsm8k's two rows share their notes
        notes.append(note)


def _row_label(task: str, columns: list[Column], notes: list[str], suffix: str = "") -> str:
    """task_label + suffix (gsm8k's filter), marked * when a note says how the measurement differs."""
    entries = [c.results["tasks"][task] for c in columns if task in c.results["tasks"]]
    title = entries[0]["title"]
    marked = False
    noted: dict[str, list[str]] = {}  # each column's own note, as its results file says
    for column in columns:
        if note := column.results["tasks"].get(task, {}).get("note"):
            noted.setdefault(note, []).append(column.name)
    for note, names in noted.items():
        whose = "" if len(names) == len(entries) else f" ({', '.join(names)})"  # a note only some columns have names them
        _add_note(notes, f"{title}{whose}: {note}.")
        marked = True
    if sizes_differ(task, columns):
        sizes = "; ".join(f"{c.name} {c.results['tasks'][task]['split']}, {c.results['tasks'][task]['items']} items" for c in columns if task in c.results["tasks"])
        _add_note(notes, f"{title} (sizes differ): {sizes}.")
        marked = True
    return task_label(task, columns) + suffix + " *" * marked


def average_tasks(columns: list[Column]) -> list[str]:
    """The card's ten averaged tasks that every column has."""
    return [t for t in AVERAGE_TASKS if all(t in c.results["tasks"] for c in columns)]


def mean_percent(column: Column, tasks: list[str]) -> float | None:
    return sum(column.value(t) for t in tasks) / len(tasks) if tasks else None


def progression_table(columns: list[Column]) -> Table:
    notes: list[str] = []
    rows = []
    for task in _tasks_in(columns):
        # gsm8k's two rows name their filter before the note mark, and both carry its split and size
        rows.append([_row_label(task, columns, notes, " (flexible-extract)" if task == "gsm8k" else "")] + [_percent(c.value(task)) for c in columns])
        if task == "gsm8k":
            rows.append([_row_label(task, columns, notes, " (strict-match)")] + [_percent(c.value(STRICT_ROW)) for c in columns])
    shared = average_tasks(columns)
    complete = [c for c in columns if all(t in c.results["tasks"] for t in AVERAGE_TASKS)]
    if complete and len(shared) < len(AVERAGE_TASKS):  # the card's average where a column has it, beside the shared one
        rows.append(_average_row(list(AVERAGE_TASKS), complete, columns, notes))
        notes.append(f"Average ({len(AVERAGE_TASKS)}) is shown for the columns with all of {', '.join(AVERAGE_TASKS)}.")
    if shared:
        rows.append(_average_row(shared, columns, columns, notes))
        if len(shared) < len(AVERAGE_TASKS):
            notes.append(f"Average ({len(shared)}) is over {', '.join(shared)}, the averaged tasks every column has.")
    if rows and rows[-1][0].startswith("Average") and any("openbookqa" in c.results["tasks"] for c in columns):
        notes.append(f"{TASKS['openbookqa'].title} is left out of the Average, as on the card (its Average (10) is the other ten tasks).")
    return Table(["Benchmark"] + [c.name for c in columns], rows, notes)


def _average_row(tasks: list[str], averaged: list[Column], columns: list[Column], notes: list[str]) -> list[str]:
    """An "Average (N)" row over `tasks` for the `averaged` columns (blank cells for the others),
    marked * when those columns were measured on different items for some of the tasks."""
    mixed = [TASKS[t].title for t in tasks if sizes_differ(t, averaged)]
    if mixed:
        notes.append(f"Average ({len(tasks)}): the columns were measured on different items for {', '.join(mixed)}, so their averages do not compare exactly.")
    return [f"Average ({len(tasks)})" + " *" * bool(mixed)] + [_percent(mean_percent(c, tasks)) if c in averaged else "" for c in columns]


def comparison_table(columns: list[Column], row_header: str = "Dataset") -> Table:
    """The card's comparison: one row per input (a model trained on each dataset, by default).
    Where the inputs have all of its seven columns, those come first and Avg is their mean, as in
    the card's baseline rows, with the other shared tasks after Avg, outside it; else Avg closes
    the row as the mean of every shared task."""
    notes: list[str] = []
    shared = [t for t in _tasks_in(columns) if all(t in c.results["tasks"] for c in columns)]
    if not shared:  # an Avg of nothing would be a column of blanks
        return Table([row_header], [[c.name] for c in columns], ["The inputs share no benchmark task, so there is nothing to compare."])
    ordered = [t for t in COMPARISON_ORDER if t in shared] + [t for t in shared if t not in COMPARISON_ORDER]
    has_card_seven = set(COMPARISON_ORDER) <= set(shared)
    averaged = ordered[: len(COMPARISON_ORDER)] if has_card_seven else ordered
    others = ordered[len(averaged) :]
    header = [row_header] + [_row_label(t, columns, notes) for t in averaged] + ["Avg"] + [_row_label(t, columns, notes) for t in others]
    rows = [[c.name] + [_percent(c.value(t)) for t in averaged] + [_percent(mean_percent(c, averaged))] + [_percent(c.value(t)) for t in others] for c in columns]
    if others:
        notes.append(f"Avg is the mean of the card's {len(averaged)} comparison columns before it, as in its baseline rows "
                     f"(its Sutra-10B row shows the progression's Average (10) instead); {', '.join(TASKS[t].title for t in others)} follow, outside it.")
    else:
        notes.append(f"Avg is the mean of the {len(averaged)} task columns.")
    return Table(header, rows, notes)
