"""FLOPs accounting for MFU, and metrics.jsonl truncation on resume."""

import json

import pytest
import torch

from sutra.model.config import get_preset
from sutra.model.llama import flops_per_token
from sutra.errors import SutraError
from sutra.train.metrics import MetricsLog, causal_attended_per_token, document_attended_per_token, finite_or_null, read_metrics


def test_document_spans_count_only_keys_inside_each_document():
    doc_ids = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.int32)
    # row 0: documents of 2 and 3 tokens -> (1+2) + (1+2+3) = 9 pairs; row 1: one document -> 15 pairs
    assert document_attended_per_token(doc_ids) == pytest.approx((9 + 15) / 10)
    assert document_attended_per_token(torch.zeros(4, 8192, dtype=torch.int32)) == causal_attended_per_token(8192)


def test_card_shape_flops_per_token_at_8192_match_the_reference_note():
    # training-anchors.md: 6N + 6LdT = 1,019.2M FLOPs per token for SmolLM2-70M at T = 8192
    assert flops_per_token(get_preset("smollm2-70m"), causal_attended_per_token(8192)) == pytest.approx(1.0192e9, rel=1e-3)


def test_resume_drops_records_past_the_checkpoint_and_a_torn_last_line(tmp_path):
    lines = [json.dumps({"step": s, "loss": 10.0 - s}) + "\n" for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(lines) + '{"step": 6, "lo')
    log = MetricsLog(tmp_path, tensorboard=False, resume_step=3)
    log.write({"step": 4, "loss": 1.5})
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 1.5)]


def test_a_damaged_line_is_named_only_a_torn_last_line_is_passed_over(tmp_path):
    good = [json.dumps({"step": s, "loss": 10.0 - s}) + "\n" for s in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(good) + '{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    for damaged in ("{garbage\n", '["step", 2]\n', '{"step": "x"}\n'):
        (tmp_path / "metrics.jsonl").write_text(good[0] + damaged + good[2])
        with pytest.raises(SutraError, match=r"metrics.jsonl:2: not a record of `sutra train`"):
            read_metrics(tmp_path)


def test_a_resume_never_drops_a_damaged_line_silently(tmp_path):
    """Resume cut metrics.jsonl back keeping only what parsed: a damaged line that `sutra plot`
    refuses by number vanished without a word."""
    text = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2)) + "garbage line\n" + json.dumps({"step": 3}) + "\n"
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(SutraError, match=r"metrics.jsonl:3: not a record of `sutra train`.*fix or remove that line"):
        MetricsLog(tmp_path, tensorboard=False, resume_step=2)
    assert (tmp_path / "metrics.jsonl").read_text() == text
    # a whole last record without its newline is kept, and given one
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}))
    MetricsLog(tmp_path, tensorboard=False, resume_step=2).close()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_non_finite_numbers_become_null_at_any_depth():
    """A checkpoint's sutra.json nests its log window: a NaN there was written as a bare NaN, which is not JSON."""
    record = {"loss": float("nan"), "log_window": {"last_loss": float("inf"), "losses": [1.0, float("-inf")]}, "betas": (0.9, 0.95)}
    assert finite_or_null(record) == {"loss": None, "log_window": {"last_loss": None, "losses": [1.0, None]}, "betas": [0.9, 0.95]}
    json.dumps(finite_or_null(record), allow_nan=False)
