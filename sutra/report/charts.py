"""The card's pictures: per-task bars across checkpoints, and perplexity against the benchmark average."""

from pathlib import Path

from sutra.io import atomic_write_bytes
from sutra.report.tables import Column, _tasks_in, average_tasks, mean_percent, oldest_first, perplexity_bases, task_label


def _save(figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def task_bars(columns: list[Column], path: Path) -> Path:
    """Grouped bars: one group per task, one bar per checkpoint."""
    figure = task_figure(columns)
    import matplotlib.pyplot as plt  # after task_figure chose the Agg backend

    path = _save(figure, path)
    plt.close(figure)
    return path


def task_figure(columns: list[Column]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = _tasks_in(columns)
    width = 0.8 / len(columns)
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(tasks) * max(1, len(columns) / 3)), 4))
    for i, column in enumerate(columns):
        values = [100 * column.value(t) if column.value(t) is not None else float("nan") for t in tasks]  # no bar, not a 0
        positions = [x + i * width for x in range(len(tasks))]
        axis.bar(positions, values, width, label=column.name)
        for x, value in zip(positions, values):
            if value != value:  # not measured: say so, or it reads as a score of 0
                axis.text(x, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize="x-small")
    axis.set_xticks([x + 0.4 - width / 2 for x in range(len(tasks))])
    # the tables' labels: a bar measured on another split or fewer items is not shown under the card's bare name
    axis.set_xticklabels([task_label(t, columns) for t in tasks], rotation=30, ha="right")
    axis.set_ylabel("score (%)")
    versions = sorted({v for c in columns if (v := c.results.get("engine", {}).get("version"))})
    axis.set_title(f"Benchmarks across checkpoints (lm-eval {', '.join('v' + v for v in versions) or 'version not recorded'})")
    axis.legend(fontsize="small")
    return figure


def perplexity_label(points: list[Column]) -> str:
    """What the perplexities were measured on, or a warning when that differs between points:
    another dataset, window length or attention (across documents or within each) puts a
    perplexity on another scale, not a better model."""
    bases = perplexity_bases(points)
    if len(bases) > 1:
        return "validation perplexity (not comparable: measured on different data, windows or attention)"
    ((data, seq_len, attention),) = bases
    return f"validation perplexity ({data}, {seq_len}-token windows, {attention} attention)" if data else "validation perplexity"


def _chart_points(columns: list[Column]) -> tuple[list[Column], list[str]]:
    """The columns with a perplexity, oldest first, and the tasks all of them have."""
    points = oldest_first([c for c in columns if c.perplexity is not None])
    return points, average_tasks(points)


def perplexity_chart_gap(columns: list[Column]) -> str:
    """Why perplexity_vs_average draws nothing for these columns."""
    points, _ = _chart_points(columns)
    if not points:
        return "no input has a perplexity (run 'sutra eval SPEC --perplexity DATA_DIR')"
    return f"the inputs with a perplexity ({', '.join(c.name for c in points)}) share no averaged benchmark task (run 'sutra eval SPEC --tasks card')"


def perplexity_vs_average(columns: list[Column], path: Path) -> Path | None:
    """Validation perplexity and benchmark average per checkpoint, oldest first, on two axes.

    None when no input carries both a perplexity and the benchmarks (see perplexity_chart_gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, averaged = _chart_points(columns)
    if not points or not averaged:
        return None
    names = [c.name for c in points]
    figure, left = plt.subplots(figsize=(max(5, 1.2 * len(points)), 4))
    perplexities = [c.perplexity for c in points]
    left.plot(names, perplexities, "o-", color="tab:blue")
    left.set_ylabel(perplexity_label(points), color="tab:blue")
    if max(perplexities) > 20 * min(perplexities):  # e.g. an untrained model next to trained ones
        left.set_yscale("log")
    right = left.twinx()
    right.plot(names, [100 * mean_percent(c, averaged) for c in points], "s--", color="tab:orange")
    right.set_ylabel(f"benchmark average ({len(averaged)} tasks, %)", color="tab:orange")
    left.set_title("Perplexity vs benchmark average")
    path = _save(figure, path)
    plt.close(figure)
    return path
