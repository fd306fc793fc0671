"""Loss, perplexity and learning-rate curves of a run, from its metrics.jsonl, to one PNG."""

import io
import struct
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import atomic_write_bytes, check_replaceable
from sutra.train.recipe import CHECKPOINTS
from sutra.train.metrics import METRICS_FILE, finite, read_metrics


PLOT_MARK = "sutra plot"  # the PNG's Source text, by which a later plot knows it may replace the file
PLOT_INCHES, PLOT_DPI = (8, 10), 110
PLOT_PIXELS = (PLOT_INCHES[0] * PLOT_DPI, PLOT_INCHES[1] * PLOT_DPI)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw RUN_DIR's curves to `out` (default RUN_DIR/curves.png), atomically."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise SutraError(f"{run_dir}: no such run directory; give the run_dir `sutra train` wrote")
    if not (run_dir / METRICS_FILE).is_file():
        raise SutraError(f"{run_dir}: no {METRICS_FILE}; give a `sutra train` run directory (the folder that holds {METRICS_FILE})")
    if out is not None and Path(out).suffix.lower() != ".png":  # (nor, then, one of the run's own files)
        raise SutraError(f"--out {out}: the curves are a PNG image; give a path ending in .png")
    # not inside a checkpoint (RUN/last/x.png): a checkpoint directory is replaced or removed whole
    default = (run_dir / "curves.png").resolve()
    out = check_replaceable(out or default, "`sutra plot` image", lambda path: path.resolve() == default or _is_sutra_plot(path),
                            inputs=[run_dir / CHECKPOINTS])
    records = read_metrics(run_dir)
    if not any(finite(r.get("loss")) or finite(r.get("val_loss")) for r in records):
        raise SutraError(f"{run_dir / METRICS_FILE}: no training or validation records yet")
    fig = curves_figure(records, run_dir.resolve().name)
    import matplotlib.pyplot as plt  # (after curves_figure has chosen the Agg backend)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Source": PLOT_MARK})
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _is_sutra_plot(path: Path) -> bool:
    """Whether `path` is an image this command wrote (its PNG text chunk says so): any other PNG, a
    chart or a photo, is not replaced."""
    if not path.is_file():  # (a FIFO would block the read)
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)  # the text chunks come before the image data
    except OSError:
        return False
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    # plots written before the mark: Matplotlib's, at this figure's size in pixels (IHDR's width and height)
    legacy = b"Matplotlib" in head and head[16:24] == struct.pack(">II", *PLOT_PIXELS)
    return b"tEXtSource\x00" + PLOT_MARK.encode() in head or legacy


def curves_figure(records: list[dict], title: str):
    """The figure: loss (train and validation), validation perplexity and learning rate by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(key: str) -> tuple[list, list]:  # (steps, values) of the records with a finite `key`
        points = [(r["step"], r[key]) for r in records if finite(r.get(key))]
        return [step for step, _ in points], [value for _, value in points]

    fig, (loss_ax, ppl_ax, lr_ax) = plt.subplots(3, 1, figsize=PLOT_INCHES, sharex=True)
    alone = {"marker": "o", "markersize": 3}  # a curve of one point is no line: show the point
    train = curve("loss")
    loss_ax.plot(*train, label="train loss", linewidth=1, **(alone if len(train[0]) == 1 else {}))
    loss_ax.plot(*curve("val_loss"), "o-", label="validation loss", markersize=3)
    loss_ax.set_ylabel("cross-entropy (nats)")
    loss_ax.legend()
    ppl = curve("val_ppl")
    ppl_ax.plot(*ppl, "o-", color="tab:orange", markersize=3)
    ppl_ax.set_ylabel("validation perplexity")
    if ppl[0]:
        ppl_ax.set_yscale("log")
    else:
        said = "validation not finite (the run diverged)" if any("val_loss" in r for r in records) else "no validation yet"
        ppl_ax.text(0.5, 0.5, said, transform=ppl_ax.transAxes, ha="center", va="center", color="gray")
    lr = curve("lr")
    lr_ax.plot(*lr, color="tab:green", **(alone if len(lr[0]) == 1 else {}))
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step")
    for ax in (loss_ax, ppl_ax, lr_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
