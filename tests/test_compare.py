"""`sutra compare` on the tiny offline experiment: the comparison table and chart, and a re-run that skips finished arms."""

import csv

import pytest
from sutra_testing import REPO, run_sutra

from sutra.pipeline.compare import arm_overrides, load_experiment

TINY = REPO / "recipes" / "compare-tiny.yaml"


def test_token_budget_sets_the_steps_of_every_arm(tmp_path):
    experiment = load_experiment(TINY)
    # tiny-cpu: 4 windows x 128 tokens per step, one epoch, so 2K tokens are 4 steps.
    overrides, epochs = arm_overrides(experiment, experiment.arms[0], tmp_path / "data")
    assert epochs == 1
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

    # evaluation settings are checked before any arm trains
    bad.write_text(f"name: x\nrecipe: {REPO / 'recipes' / 'tiny-cpu.yaml'}\narms:\n  - {{name: a, dataset: stdlib-docs}}\neval:\n  tasks: arc_easy,hellaswagg\n")
    result = run_sutra("compare", str(bad))
    assert result.returncode == 2 and f"{bad}:6: eval.tasks: unknown task(s): hellaswagg" in result.stderr


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

    # A finished arm is skipped; an arm whose results are gone is evaluated again from its finished run.
    stamp = (out / "arms" / "pydoc-topics" / "results.json").stat().st_mtime_ns
    (out / "arms" / "stdlib-docstrings" / "results.json").unlink()
    (out / "comparison.png").unlink()
    second = run_sutra("compare", str(TINY), "--out", str(out), check=True)
    assert f"reusing {out / 'arms' / 'pydoc-topics' / 'results.json'}" in second.stdout
    assert "$ sutra train" not in second.stdout and "$ sutra data prepare" not in second.stdout
    assert second.stdout.count("$ sutra eval") == 1
    assert (out / "arms" / "pydoc-topics" / "results.json").stat().st_mtime_ns == stamp
    assert (out / "comparison.png").is_file()
