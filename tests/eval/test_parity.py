"""The Sutra adapter inside lm-eval gives lm-eval's own `hf` model's loglikelihoods and metrics."""

import pytest

from eval_helpers import benchmarks, tiny_model  # noqa: F401 (fixtures)
from sutra.eval.adapter import SutraLM
from sutra.eval.harness import run_lm_eval, summarize
from sutra.eval.tasks import parse_tasks
from sutra.model.checkpoint import load_model

PARITY_TASKS = "arc_easy,hellaswag,piqa,winogrande,boolq"


def hflm(directory, batch_size=8):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(directory), batch_size=batch_size, device="cpu", dtype="float32")


def assert_same_outputs(ours: dict, theirs: dict, tasks) -> float:
    """Every request's (loglikelihood, is_greedy) within 1e-4, generations equal, metrics identical."""
    worst = 0.0
    assert set(ours["samples"]) == set(theirs["samples"])
    for task, docs in ours["samples"].items():
        assert [d["doc_id"] for d in docs] == [d["doc_id"] for d in theirs["samples"][task]]
        for a, b in zip(docs, theirs["samples"][task]):
            assert a["arguments"] == b["arguments"]  # same prompts from the same store
            for ra, rb in zip(a["resps"], b["resps"]):
                if isinstance(ra[0], tuple):
                    worst = max(worst, abs(ra[0][0] - rb[0][0]))
                    assert ra[0][1] == rb[0][1], (task, a["doc_id"])
                else:
                    assert ra == rb, (task, a["doc_id"])
    assert worst <= 1e-4
    ours_summary, theirs_summary = summarize(ours, tasks), summarize(theirs, tasks)
    for name in ours_summary:
        assert ours_summary[name]["metrics"] == theirs_summary[name]["metrics"], name
    return worst


def test_tokenization_and_bos_match_hflm(tiny_model):
    checkpoint, hf_dir = tiny_model
    ours, theirs = SutraLM(load_model(str(checkpoint))), hflm(hf_dir)
    for text in ["Question: Which is a liquid?\nAnswer: water", "  leading spaces", "<|endoftext|>already has BOS", "é 🤗 42"]:
        assert ours.tok_encode(text) == theirs.tok_encode(text)
    # The SmolLM2 tokenizer adds no BOS: sequences start with the first text token.
    assert ours.tok_encode("x") == ours.sutra_tokenizer.encode("x")
    assert (ours.eot_token_id, ours.prefix_token_id, ours.max_length) == (theirs.eot_token_id, theirs.prefix_token_id, theirs.max_length)


def test_tiny_model_parity_on_real_items(tiny_model, benchmarks):
    """Real store items, a random model exported both ways: identical metrics, equal loglikelihoods."""
    checkpoint, hf_dir = tiny_model
    tasks = parse_tasks(PARITY_TASKS)
    ours = run_lm_eval(SutraLM(load_model(str(checkpoint)), batch_size=8), tasks, limit=5, log_samples=True)
    theirs = run_lm_eval(hflm(hf_dir), tasks, limit=5, log_samples=True)
    assert_same_outputs(ours, theirs, tasks)
    assert {name: entry["items"] for name, entry in summarize(ours, tasks).items()} == {t.name: 5 for t in tasks}


@pytest.mark.slow
def test_tiny_model_generation_parity_gsm8k(tiny_model, benchmarks):
    """gsm8k 5-shot: the KV-cached generator (2 rows for 4 prompts, so finished rows take the next
    prompt), stop strings and both filters give HFLM's answers."""
    checkpoint, hf_dir = tiny_model
    tasks = parse_tasks("gsm8k")
    ours = run_lm_eval(SutraLM(load_model(str(checkpoint)), batch_size=2), tasks, limit=4, log_samples=True)
    theirs = run_lm_eval(hflm(hf_dir), tasks, limit=4, log_samples=True)
    assert_same_outputs(ours, theirs, tasks)


@pytest.mark.slow
def test_smollm2_135m_parity_50_items_each(teacher_dir, benchmarks, tmp_path):
    """The must-show: SmolLM2-135M-Instruct, 50 real items of each of 5 tasks, adapter vs lm-eval's hf."""
    tasks = parse_tasks(PARITY_TASKS)
    ours = run_lm_eval(SutraLM(load_model("smollm2-135m-instruct"), batch_size=16), tasks, limit=50, log_samples=True)
    theirs = run_lm_eval(hflm(teacher_dir, batch_size=16), tasks, limit=50, log_samples=True)
    assert_same_outputs(ours, theirs, tasks)
