"""Readers for a synth output directory, shared by the synth tests."""

import time
import uuid

from sutra.synth.journal import SCHEMA_FIELDS, read_jsonl
from sutra.synth.judge import DIMENSIONS


def records(out, shard=0):
    return read_jsonl(out / f"train_{shard:03d}.jsonl")[0]


def journal(out, shard=0):
    return read_jsonl(out / ".synth" / f"shard_{shard:03d}.log")[0]


def check_schema(record, tokenizer):
    assert tuple(record) == SCHEMA_FIELDS
    uuid.UUID(record["id"])
    assert record["token_count"] == len(tokenizer.encode(record["text"]))
    assert isinstance(record["complexity_level"], int) and 1 <= record["complexity_level"] <= 10
    assert 0 <= record["quality_score"] <= 1 and record["information_density"] in ("low", "medium", "high")
    assert set(record["quality_assessment"]) == set(DIMENSIONS) and all(0 <= v <= 1 for v in record["quality_assessment"].values())
    assert all(isinstance(record[k], list) for k in ("prerequisites", "builds_to", "cross_domain_connections"))
    assert not record["text"].lower().startswith("sure")  # assistant boilerplate stripped


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s")
