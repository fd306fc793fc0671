"""Loss, perplexity and learning-rate curves of a run, from its metrics.jsonl, to one PNG."""

import io
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import atomic_write_bytes, check_output_path
from sutra.train.metrics import METRICS_FILE, finite, read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = check_output_path(out or run_dir / "curves.png")
    if not (run_dir / METRICS_FILE).is_file():
        raise SutraError(f"{run_dir}: no {METRICS_FILE}; is it a `sutra train` run directory?")
    records = read_metrics(run_dir)
    def curve(key: str) -> tuple[list, list]:  # (steps, values) of the records with a finite `key`
        points = [(r["step"], r[key]) for r in records if finite(r.get(key))]
        return [step for step, _ in points], [value for _, value in points]

    train, val = curve("loss"), curve("val_loss")
    if not train[0] and not val[0]:
        raise SutraError(f"{run_dir / METRICS_FILE}: no training or validation records yet")

    fig, (loss_ax, ppl_ax, lr_ax) = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    loss_ax.plot(*train, label="train loss", linewidth=1)
    loss_ax.plot(*val, "o-", label="validation loss", markersize=3)
    loss_ax.set_ylabel("cross-entropy (nats)")
    loss_ax.legend()
    ppl_ax.plot(*curve("val_ppl"), "o-", color="tab:orange", markersize=3)
    ppl_ax.set_ylabel("validation perplexity")
    ppl_ax.set_yscale("log")
    lr_ax.plot(*curve("lr"), color="tab:green")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step")
    for ax in (loss_ax, ppl_ax, lr_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.resolve().name)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out
