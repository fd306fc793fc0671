"""The in-process fallback backend (sutra.model running SmolLM2-135M-Instruct), with the judge on
a different backend: the real llama.cpp teacher server."""

import json

import pytest

from sutra.synth.journal import SCHEMA_FIELDS


@pytest.mark.slow
def test_in_process_generator_with_a_separate_judge_server(teacher_server, synth, tmp_path):
    out = tmp_path / "synth"
    _, stdout, _ = synth(
        "synth", "run", "--n", "1", "--out", out, "--backend", "transformers", "--judge-base-url", teacher_server.base_url,
        "--max-new-tokens", "64", "--words", "40", "--min-tokens", "10", "--min-quality", "0", "--max-attempts", "3", check=True,
    )
    rows = [json.loads(line) for line in (out / "train_000.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and tuple(rows[0]) == SCHEMA_FIELDS and "accepted 1 item(s)" in stdout
