"""`sutra compare` on the tiny offline experiment: the comparison table and chart, and a re-run that skips finished arms."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sutra_testing import REPO, run_sutra

from sutra.errors import SutraError
from sutra.pipeline.compare import Arm, arm_dataset, arm_plan, load_experiment, prepare_args_problem, prepare_command, prepared_dataset
from sutra.pipeline.stages import StageLog
from sutra.processes import LOCK_FILE, exclusive, process_space

from train.train_helpers import stdlib_documents, write_dataset

TINY = REPO / "recipes" / "compare-tiny.yaml"


def test_token_budget_sets_the_steps_of_every_arm(tmp_path):
    experiment = load_experiment(TINY)
    # tiny-cpu: 4 windows x 128 tokens per step, one epoch, so 2K tokens are 4 steps.
    overrides, recipe, steps = arm_plan(experiment, experiment.arms[0], tmp_path / "data")
    assert recipe.train.epochs == 1 and steps == 4
    assert overrides[-1] == "train.steps_per_epoch=4"
    assert f"data.path={tmp_path / 'data'}" in overrides


def test_the_card_experiment_names_the_seven_datasets():
    experiment = load_experiment(REPO / "recipes" / "compare-1b.yaml")
    assert [a.name for a in experiment.arms] == ["Sutra-1B", "FineWiki-1B", "FinePDFs-1B", "DCLM-Baseline-1B", "FineWeb-Edu-1B",
                                                 "Essential-Web-1B", "Synth-1B"]
    assert experiment.tokens == "1B"
    assert experiment.eval.limit is None


def test_bad_experiment_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrecipe: tiny-cpu.yaml\narms:\n  - {name: a, dataset: stdlib-docs, budget: 5}\n")
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"sutra: error: {bad}:4: arms[0].budget: unknown key")
    assert result.stderr.count("\n") == 1

    bad.write_text("name: x\nrecipe: tiny-cpu.yaml\ntokens: lots\narms:\n  - {name: a, dataset: stdlib-docs}\n")
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2 and f"{bad}:3: tokens: 'lots': expected a positive token count" in result.stderr

    bad.write_text("name: x\narms: &arms\n  - *arms\n")  # a recursive alias: one line, not a RecursionError
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2 and result.stderr == f"sutra: error: {bad}:2: not valid YAML (an alias refers to a node that contains it (a recursive structure))\n"

    bad.write_text("name: x\n")
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2 and f"{bad}: (top level): missing required key(s): recipe, arms" in result.stderr

    # evaluation settings are checked before any arm trains
    bad.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\narms:\n  - {{name: a, dataset: stdlib-docs}}\neval:\n  tasks: arc_easy,hellaswagg\n")
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2 and f"{bad}:6: eval.tasks: unknown task(s): hellaswagg" in result.stderr

    # so are the overrides, before any arm prepares its data (hours for a hub dataset)
    bad.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\noverrides: [train.micro_batch=abc]\narms:\n  - {{name: a, dataset: stdlib-docs}}\n")
    result = run_sutra("compare", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "$ sutra data prepare" not in result.stdout, result.stdout
    assert result.stderr == f"sutra: error: {bad}:3: overrides: --set train.micro_batch=abc: train.micro_batch: expected an integer, got 'abc'\n"


def test_settings_compare_would_override_or_ignore_are_refused_at_load(tmp_path, tokenizer):
    """They were taken silently: an experiment name with '/..' put the output outside runs/, the
    pipeline's own values replaced an override of run_dir, an arm's `--out` sent its data elsewhere,
    and flags for an arm whose data is prepared already changed nothing."""
    prepared = write_dataset(tmp_path / "prepared", tokenizer, stdlib_documents()[:20])
    recipe = REPO / "recipes" / "tiny-cpu.yaml"
    bad = tmp_path / "bad.yaml"
    for body, problem in [
        ("name: a/../x\narms:\n  - {name: a, dataset: stdlib-docs}\n", ":2: name: 'a/../x' must use only letters"),
        ("name: x\noverrides: [run_dir=/tmp/elsewhere]\narms:\n  - {name: a, dataset: stdlib-docs}\n",
         ":3: overrides: run_dir=/tmp/elsewhere: compare sets run_dir for each arm"),
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs, prepare_args: [--out, y]}\n",
         ":4: arms[0].prepare_args: --out: compare prepares each arm's data into its own directory"),
        (f"name: x\narms:\n  - {{name: a, dataset: {prepared}, prepare_args: [--split, train]}}\n",
         f":4: arms[0].prepare_args: {prepared} is prepared already, so these flags would change nothing"),
        # flags `data prepare` refuses are found before the first arm trains, not at the arm's turn
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs}\n  - {name: b, dataset: stdlib-docs, prepare_args: [--min-qualty, 3]}\n",
         ":5: arms[1].prepare_args: unrecognized arguments: --min-qualty 3"),
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs, prepare_args: [--val-fraction, abc]}\n",
         ":4: arms[0].prepare_args: argument --val-fraction: invalid float value: 'abc'"),
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs, prepare_args: [--split, a, --split, b]}\n",
         ":4: arms[0].prepare_args: --split is given twice; give it once"),
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs, prepare_args: [-h]}\n", ":4: arms[0].prepare_args: -h/--help shows prepare's help"),
        ("name: x\noverrides: [model.init_from=]\narms:\n  - {name: a, dataset: stdlib-docs}\n", ":3: overrides: --set model.init_from=: an empty value"),
        # a key given twice took its last value silently
        ("name: x\narms:\n  - {name: a, dataset: stdlib-docs}\nname: y\n", ":5: not valid YAML ('name' is given twice)"),
    ]:
        bad.write_text(f"recipe: {recipe}\n" + body)
        with pytest.raises(SutraError) as refused:
            load_experiment(bad)
        assert str(refused.value).startswith(f"{bad}{problem}"), str(refused.value)


def test_a_bare_number_is_a_token_count(tmp_path):
    """`tokens: 2000` reads as an integer in YAML; parse_tokens's own message suggests writing 1000000.
    A number in prepare_args is the flag's value, as on the command line."""
    experiment = tmp_path / "e.yaml"
    experiment.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\ntokens: 2000\narms:\n  - {{name: a, dataset: stdlib-docs}}\n"
                          "  - {name: b, dataset: stdlib-docs, tokens: 1.0e+3, prepare_args: [--min-quality, 70]}\n")
    loaded = load_experiment(experiment)
    assert loaded.arms[1].prepare_args == ["--min-quality", "70"]  # a number is a command-line word too
    # an arm's own --min-val-docs replaces compare's 24 (given twice, it would be refused)
    own = Arm("c", "notes.jsonl", prepare_args=["--min-val-docs", "50"])
    assert prepare_command(own, "notes.jsonl", "d") == ("data", "prepare", "notes.jsonl", "--out", "d", "--min-val-docs", "50")
    assert prepare_args_problem(own) is None
    abbreviated = Arm("c", "notes.jsonl", prepare_args=["--min-val=30"])  # argparse takes a prefix: still the arm's own
    assert "24" not in prepare_command(abbreviated, "notes.jsonl", "d") and prepare_args_problem(abbreviated) is None
    assert [arm_plan(loaded, arm, tmp_path)[0][-1] for arm in loaded.arms] == ["train.steps_per_epoch=4", "train.steps_per_epoch=2"]


def test_an_arm_dataset_prepared_again_is_not_reused(tmp_path, tokenizer):
    """An arm's own prepared directory is no stage of the experiment: preparing it again (other tokens)
    must refuse the arm's finished training, as a re-made data stage does, not reuse it."""
    documents = stdlib_documents()
    given = write_dataset(tmp_path / "given", tokenizer, documents[:40])
    arm, out, calls = Arm("a", str(given)), tmp_path / "out", []
    run = out / "arms" / "a" / "run"

    def make():  # a cheap stand-in for `sutra train`
        run.mkdir(parents=True)
        calls.append(run)

    def train():  # a re-run of the arm: its data, then its training stage, chained as run_experiment chains them
        log = StageLog(out)
        data, needs = prepared_dataset(log, arm, arm.dataset, out / "arms" / "a")
        log.run("a/run", run, {"data": str(data)}, make, needs)

    train()
    write_dataset(given, tokenizer, documents[:40])  # the same tokens again: still the same dataset
    train()
    assert len(calls) == 1
    write_dataset(given, tokenizer, documents[40:80])
    with pytest.raises(SutraError, match=rf"{run} was made from an earlier {given}, which has been made again since"):
        train()
    assert len(calls) == 1


def test_an_arm_source_edited_after_its_data_was_prepared_is_not_reused(tmp_path):
    """A JSONL (or glob, or synth output) arm was known by its command line only: added or edited
    files left the old data, training and scores reused. `data prepare` runs again, and refuses."""
    source = tmp_path / "notes.jsonl"
    source.write_text("".join(json.dumps({"text": f"Note {i}: the quick brown fox jumps over the lazy dog, again and again."}) + "\n" for i in range(60)))
    arm, out = Arm("a", str(source)), tmp_path / "out"
    data, _ = prepared_dataset(StageLog(out), arm, arm.dataset, out / "arms" / "a")
    made = json.loads((out / "stages.json").read_text())["a/data"]["made"]
    assert prepared_dataset(StageLog(out), arm, arm.dataset, out / "arms" / "a")[0] == data  # unchanged: reused
    assert json.loads((out / "stages.json").read_text())["a/data"]["made"] == made  # (so its training is reused too)
    with open(source, "a") as f:
        f.write(json.dumps({"text": "A note added later."}) + "\n")
    with pytest.raises(SutraError, match=r"arms/a/data was made from inputs that have changed since, or cannot be checked \(see above\); delete it"):
        prepared_dataset(StageLog(out), arm, arm.dataset, out / "arms" / "a")


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path):
    """Two runs on one OUT would make the same stages at once and overwrite each other's stages.json."""
    out = tmp_path / "compare"
    first = subprocess.Popen([sys.executable, "-m", "sutra", "compare", str(TINY), "--out", str(out)], cwd=REPO, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "stages.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "stages.json").is_file(), first.stderr.read() if first.poll() is not None else "no stage started"
        second = run_sutra("compare", str(TINY), "--out", str(out), timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # its stage's child too
        first.communicate()
    assert second.returncode == 2 and "$ sutra" not in second.stdout, second.stdout
    assert second.stderr == f"sutra: error: {out} is in use by sutra compare (pid {first.pid}); wait for it to finish or choose another output directory\n"
    with exclusive(out, "compare"):  # a killed holder leaves no stale lock
        assert (out / LOCK_FILE).read_text() == f"sutra compare (pid {os.getpid()})\n{process_space()}\n"  # what, and where its pid means it
    assert not (out / LOCK_FILE).exists()  # a holder that finishes removes it


@pytest.mark.slow
def test_compare_writes_the_table_and_skips_finished_arms(tmp_path):
    out = tmp_path / "compare"
    first = run_sutra("compare", str(TINY), "--out", str(out), check=True)
    assert first.stdout.count("$ sutra train") == 2
    with open(out / "comparison.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "Dataset" and rows[0][-1] == "Avg"
    assert any(h.startswith("ARC-Easy") for h in rows[0]) and any(h.startswith("PIQA") for h in rows[0])
    assert [r[0] for r in rows[1:]] == ["pydoc-topics", "stdlib-docstrings"]
    assert all(0 <= float(v) <= 100 for r in rows[1:] for v in r[1:])
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert "| pydoc-topics |" in (out / "comparison.md").read_text()
    # 2K tokens at 512 per step: 4 steps, exactly the budget
    assert "- Tokens trained (each budget rounded up to whole steps): pydoc-topics 2,048, stdlib-docstrings 2,048." in (out / "comparison.md").read_text()

    # A finished arm is skipped; an arm whose results are gone is evaluated again from its finished run.
    stamp = (out / "arms" / "pydoc-topics" / "results.json").stat().st_mtime_ns
    (out / "arms" / "stdlib-docstrings" / "results.json").unlink()
    (out / "comparison.png").unlink()
    second = run_sutra("compare", str(TINY), "--out", str(out), check=True)
    assert f"reusing {out / 'arms' / 'pydoc-topics' / 'results.json'}" in second.stdout
    assert "$ sutra train" not in second.stdout
    # `data prepare` runs again only to check its inputs (it finds its dataset made from them), which is then reused
    assert second.stdout.count("$ sutra data prepare") == 2 and second.stdout.count(f"reusing {out / 'arms'}") >= 2 + 1
    assert all(f"reusing {out / 'arms' / arm / 'data'}" in second.stdout for arm in ("pydoc-topics", "stdlib-docstrings"))
    assert second.stdout.count("$ sutra eval") == 1
    assert (out / "arms" / "pydoc-topics" / "results.json").stat().st_mtime_ns == stamp
    assert (out / "comparison.png").is_file()


def test_arm_datasets_are_found_beside_the_experiment_and_checked_before_any_arm_runs(tmp_path, tokenizer):
    """As `recipe:` is, an arm's dataset path is relative to the experiment file; a missing one and a
    token budget its data cannot hold stop before any arm trains, naming the experiment's line."""
    write_dataset(tmp_path / "exp" / "data", tokenizer, stdlib_documents()[:40])
    experiment = tmp_path / "exp" / "e.yaml"
    head = f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\ntokens: 1M\narms:\n  - {{name: a, dataset: data}}\n"
    experiment.write_text(head + "  - {name: b, dataset: nodata}\n")
    result = run_sutra("compare", str(experiment), "--out", str(tmp_path / "out"))  # run from the repository, not exp/
    assert result.returncode == 2 and "$ sutra" not in result.stdout, result.stdout
    assert result.stderr.startswith(f"sutra: error: {experiment}:6: arms[1].dataset: nodata: no such file or directory (paths are relative to the experiment file)")
    # a glob of raw files is found beside the experiment too; one that matches nothing is refused at load
    (tmp_path / "exp" / "raw").mkdir()
    (tmp_path / "exp" / "raw" / "a.jsonl").write_text('{"text": "x"}\n')
    experiment.write_text(head + "  - {name: b, dataset: 'raw/*.jsonl'}\n")
    loaded = load_experiment(experiment)
    assert arm_dataset(loaded, loaded.arms[1]) == str(tmp_path / "exp" / "raw" / "*.jsonl")
    experiment.write_text(head + "  - {name: b, dataset: 'raw/*.parquet'}\n")
    with pytest.raises(SutraError, match=r"e\.yaml:6: arms\[1\]\.dataset: raw/\*\.parquet: the pattern matches no files"):
        load_experiment(experiment)
    experiment.write_text(head)
    result = run_sutra("compare", str(experiment), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "$ sutra train" not in result.stdout, result.stdout
    assert f"{experiment}:3: tokens: 1M tokens over 1 epoch(s) need" in result.stderr, result.stderr
    assert f"one pass over {tmp_path / 'exp' / 'data'} gives" in result.stderr and "lower the budget or give the arm more data" in result.stderr


def test_a_fractional_limit_above_one_is_refused_and_a_whole_one_is_a_count(tmp_path):
    experiment = tmp_path / "e.yaml"
    for limit, expected in (("2", 2), ("0.5", 0.5)):
        experiment.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\narms:\n  - {{name: a, dataset: stdlib-docs}}\neval:\n  limit: {limit}\n")
        limit_value = load_experiment(experiment).eval.limit
        assert limit_value == expected and type(limit_value) is type(expected)  # `--limit 2`, not `--limit 2.0`
    experiment.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\narms:\n  - {{name: a, dataset: stdlib-docs}}\neval:\n  limit: 1.5\n")
    with pytest.raises(SutraError, match=r"e\.yaml:6: eval\.limit: 1\.5: give a whole number of documents \(e\.g\. 1\) or a fraction below 1"):
        load_experiment(experiment)
