"""A killed `sutra eval --out FILE` resumes from the answers journalled beside FILE: journalled
requests are not asked again, and the results are those of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from eval_helpers import benchmarks, tiny_model  # noqa: F401 (fixtures)
from sutra_testing import REPO, run_sutra
from sutra.errors import SutraError
from sutra.eval.adapter import SutraLM
from sutra.eval.harness import run_lm_eval, summarize
from sutra.eval.journal import AnswerJournal, journal_path, weights_digest
from sutra.eval.tasks import parse_tasks
from sutra.model.checkpoint import load_model

IDENTITY = {"weights": "w", "dtype": "torch.float32", "device": "cpu"}


def answer_lines(path):
    return [line for line in path.read_text().splitlines()[1:]]


def test_the_journal_keeps_answers_skips_a_torn_last_line_and_drops_another_models(tmp_path, capsys):
    path = tmp_path / ".r.json.answers.jsonl"
    journal = AnswerJournal(path, IDENTITY)
    journal.add_partial("loglikelihood", ("ctx", " cont"), (-1.25, True))
    journal.add_partial("generate_until", ("Q:", {"until": ["\n"]}), "42")
    journal.close()
    with open(path, "a") as f:
        f.write('{"key": "abc", "ans')  # a kill mid-line

    again = AnswerJournal(path, IDENTITY)
    assert again.resumed == 2 and "resuming the evaluation with 2 answers" in capsys.readouterr().err
    assert again.get("loglikelihood", ["ctx", " cont"]) == (-1.25, True)
    assert again.get("generate_until", ("Q:", {"until": ["\n"]})) == "42" and again.get("loglikelihood", ("ctx", " other")) is None
    again.add_partial("loglikelihood", ("a", " b"), (-0.5, False))  # appended on a line of its own, after the torn one is dropped
    again.close()
    assert len(answer_lines(path)) == 3 and all(json.loads(line) for line in path.read_text().splitlines())

    # a whole last record without its newline: the next answer was appended onto its line, and the
    # resume after that refused the journal, losing every answer in it
    path.write_text(path.read_text().removesuffix("\n"))
    whole = AnswerJournal(path, IDENTITY)
    assert whole.resumed == 3
    whole.add_partial("loglikelihood", ("c", " d"), (-0.75, True))
    whole.close()
    assert AnswerJournal(path, IDENTITY).resumed == 4 and len(answer_lines(path)) == 4

    other = AnswerJournal(path, {**IDENTITY, "weights": "v"})
    assert other.resumed == 0 and "holds answers of another model" in capsys.readouterr().err
    other.close()
    assert answer_lines(path) == []

    path.write_text(json.dumps({"identity": IDENTITY}) + "\nnot json\n{}\n")
    with pytest.raises(SutraError, match=r"answers\.jsonl:2: not a journal line"):
        AnswerJournal(path, IDENTITY)


def test_a_journal_that_is_not_one_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / ".r.json.answers.jsonl"
    path.write_text("5\n")  # JSON, but no header object
    with pytest.raises(SutraError, match=r"answers\.jsonl:1: not a journal line; delete .* to evaluate from the start"):
        AnswerJournal(path, IDENTITY)
    path.unlink()
    path.mkdir()
    with pytest.raises(SutraError, match=r"answers\.jsonl: cannot read this answer journal \(Is a directory\); remove it"):
        AnswerJournal(path, IDENTITY)


def test_journalled_requests_are_not_asked_again(tiny_model, benchmarks, tmp_path):
    checkpoint, _ = tiny_model
    tasks = parse_tasks("arc_easy,piqa")
    loaded = load_model(str(checkpoint))
    identity = {"weights": weights_digest(loaded.model), "dtype": "torch.float32", "device": "cpu"}
    path = tmp_path / ".r.json.answers.jsonl"

    journal = AnswerJournal(path, identity)
    first = run_lm_eval(SutraLM(loaded, batch_size=4, journal=journal), tasks, limit=6)
    journal.close()
    lines = path.read_text().splitlines()
    requests = len(lines) - 1
    assert requests == 6 * 4 + 6 * 2  # arc_easy's four choices, piqa's two

    half = requests // 2
    path.write_text("\n".join(lines[: 1 + half]) + "\n")  # what a kill halfway leaves
    journal = AnswerJournal(path, identity)
    second = run_lm_eval(SutraLM(loaded, batch_size=4, journal=journal), tasks, limit=6)
    journal.close()
    assert journal.resumed == half
    assert len(answer_lines(path)) == requests  # only the other half was asked of the model
    assert {n: e["metrics"] for n, e in summarize(second, tasks).items()} == {n: e["metrics"] for n, e in summarize(first, tasks).items()}


def test_evaluate_answers_from_the_journal_only_for_the_same_weights_and_dtype(tiny_model, benchmarks, tokenizer, tmp_path, capsys):
    """What `sutra eval --out` gives the journal: answers of other weights, or of the same weights in
    another dtype, would be other numbers under this model's name. (The device is in the identity
    too; one CPU cannot show it.)"""
    from sutra.eval.harness import evaluate
    from sutra.model.checkpoint import save_checkpoint
    from sutra.model.llama import Llama

    checkpoint, _ = tiny_model
    tasks, path = parse_tasks("piqa"), tmp_path / ".r.json.answers.jsonl"
    evaluate(str(checkpoint), tasks, limit=2, device="cpu", journal=path)
    assert len(answer_lines(path)) == 4 and "resuming" not in capsys.readouterr().err
    evaluate(str(checkpoint), tasks, limit=2, device="cpu", journal=path)
    assert "resuming the evaluation with 4 answers" in capsys.readouterr().err
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other", Llama(load_model(str(checkpoint)).model.config), tokenizer)
    evaluate(str(other), tasks, limit=2, device="cpu", journal=path)
    assert "holds answers of another model" in capsys.readouterr().err
    assert json.loads(path.read_text().splitlines()[0])["identity"]["weights"] == weights_digest(load_model(str(other)).model)
    evaluate(str(other), tasks, limit=2, device="cpu", dtype=torch.bfloat16, journal=path)
    assert "holds answers of another model" in capsys.readouterr().err
    assert json.loads(path.read_text().splitlines()[0])["identity"]["dtype"] == "torch.bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_eval_resumes_where_it_stopped(tiny_model, benchmarks, tmp_path, stop):
    """SIGTERM (kill, a scheduler) ends it through its cleanup, saying what it keeps (it exited 143 silently)."""
    checkpoint, _ = tiny_model
    args = ["eval", str(checkpoint), "--tasks", "hellaswag", "--limit", "40", "--batch-size", "4"]
    out = tmp_path / "r.json"
    journal = journal_path(out)
    process = subprocess.Popen([sys.executable, "-m", "sutra", *args, "--out", str(out)], cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not (journal.exists() and len(journal.read_text().splitlines()) > 9):
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, stop)
    stderr = process.communicate()[1]
    assert not out.exists() and journal.exists(), stderr
    if stop == signal.SIGTERM:
        assert process.returncode == 143 and "sutra: stopped (SIGTERM)" in stderr, stderr
        assert f"sutra: eval stopped; the answers so far are kept in {journal}, and the same command continues" in stderr, stderr
    journalled = len(answer_lines(journal))
    assert 8 <= journalled < 160

    # (that the answers equal an uninterrupted run's is the in-process test's: this one is about the kill)
    resumed = run_sutra(*args, "--out", str(out), check=True)
    assert f"resuming the evaluation with {journalled:,} answers" in resumed.stderr
    assert not journal.exists()  # deleted once the results are written
    assert json.loads(out.read_text())["tasks"]["hellaswag"]["items"] == 40


def test_only_greedy_generations_are_answered_from_the_journal(tiny_model, tmp_path):
    from lm_eval.api.instance import Instance

    loaded = load_model(str(tiny_model[0]))
    journal = AnswerJournal(tmp_path / ".r.json.answers.jsonl", IDENTITY)
    requests = [Instance("generate_until", {}, ("Q: 1+1\nA:", {"until": ["\n"], "max_gen_toks": 3, **sampling}), 0)
                for sampling in ({}, {"do_sample": True, "temperature": 1.0})]
    for request in requests:
        journal.add_partial("generate_until", request.args, "JOURNALLED")
    greedy, sampled = SutraLM(loaded, journal=journal).generate_until(requests, disable_tqdm=True)
    journal.close()
    assert greedy == "JOURNALLED" and sampled != "JOURNALLED"  # a sample is drawn again, as lm-eval's cache does
