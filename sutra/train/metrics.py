"""What a run records: metrics.jsonl, TensorBoard events, and the FLOPs behind MFU.

FLOPs per token follow sutra.model.llama.flops_per_token: 6 x matmul parameters (forward +
backward) plus 12 x layers x hidden x the mean number of keys each query attends, i.e.
(T + 1) / 2 with causal attention and the mean of (position within its document + 1) with
document masking. MFU divides achieved FLOP/s by the device's dense bf16 peak.
"""

import json
import math
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"

# Dense bf16 peaks in TFLOP/s (the vendor figures without sparsity), matched against the CUDA device name.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 125.0), ("L4", 121.0))
# (first match wins: "L40S" and "L40" come before "L4", which is in both names)


def device_peak_tflops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def causal_attended_per_token(seq_len: int) -> float:
    return (seq_len + 1) / 2


def document_attended_per_token(doc_ids) -> float:
    """Mean keys per query under document-causal masking, from (B, T) per-window document ids (a tensor).

    A document of L tokens contributes 1 + 2 + ... + L = L(L+1)/2 query-key pairs."""
    import torch

    B, T = doc_ids.shape
    spans = torch.bincount((doc_ids.long() + torch.arange(B)[:, None] * T).flatten()).double()
    return float((spans * (spans + 1) / 2).sum()) / (B * T)


def finite(value) -> bool:
    """A number that is neither NaN nor infinite (a record's null is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_null(value):
    """NaN and infinities as null, also inside nested dicts and lists: JSON has no such numbers
    (Python writes them, strict parsers refuse them)."""
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:
    """Appends JSON lines (and TensorBoard scalars); `truncate_after` undoes what a killed run logged past its checkpoint."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int):
        self.path = Path(run_dir) / METRICS_FILE
        self.truncate_after(resume_step)
        self.file = open(self.path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote after the checkpoint we resume from
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        atomic_write_text(self.path, "".join(line for line, record in _records(self.path) if record["step"] <= step))

    def write(self, record: dict) -> None:
        record = finite_or_null(record)
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # every write is flushed: what is left is a line whose write failed, and was reported
            pass
        if self.writer:
            self.writer.close()


def _parse(line: str) -> dict | None:
    """A complete record with a step, or None (e.g. the half-written last line of a killed run)."""
    if not line.endswith("\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise SutraError(f"{path}: not a metrics file of `sutra train` (bytes that are not UTF-8 text at offset {exc.start}); fix or remove it") from None


def read_metrics(run_dir: Path) -> list[dict]:
    return [record for _, record in _records(Path(run_dir) / METRICS_FILE)]


def _records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of each record; only a last line cut short (a killed run's) is passed over, any
    other that is not a record is an error naming it, not a point silently missing from a plot or a
    line a resume silently drops. A whole last record without its newline (a hand-edited file) is read."""
    lines = _lines(path)
    records = []
    for number, line in enumerate(lines, 1):
        whole = line if number < len(lines) else line.removesuffix("\n") + "\n"
        record = _parse(whole)
        if record is None and (number < len(lines) or line.endswith("\n")):
            raise SutraError(f"{path}:{number}: not a record of `sutra train` (a JSON object with an integer step); fix or remove that line")
        records += [(whole, record)] if record else []
    return records
