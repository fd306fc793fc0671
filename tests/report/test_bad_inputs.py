"""Inputs of `sutra report` and `sutra card` that are not as Sutra writes them: one clear line naming
the file and the field, never a traceback, and never a number in a table that is not a score."""

import json

import pytest

from report_helpers import write_results
from sutra_testing import run_sutra
from sutra.errors import SutraError
from sutra.eval.harness import read_results
from sutra.report.card import epoch_table, read_run
from sutra.report.tables import comparison_table, load_columns


def edited(path, edit):
    """The results at `path` after `edit(results)`, as a hand edit or another tool would leave them."""
    results = json.loads(path.read_text())
    edit(results)
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r["tasks"]["piqa"].pop("value"), "task 'piqa' has no 'value'"),
    (lambda r: r["tasks"]["piqa"].pop("title"), "task 'piqa' has no 'title'"),
    (lambda r: r["tasks"]["piqa"].pop("split"), "task 'piqa' has no 'split'"),
    (lambda r: r["tasks"]["piqa"].update(value=float("nan")), "task 'piqa' field 'value' is NaN, not a score between 0 and 1"),
    (lambda r: r["tasks"]["piqa"].update(value=float("inf")), "task 'piqa' field 'value' is Infinity, not a score"),
    (lambda r: r["tasks"]["piqa"].update(value=True), "task 'piqa' field 'value' is true, not a score"),
    (lambda r: r["tasks"]["piqa"].update(value=57.3), "task 'piqa' field 'value' is 57.3, not a score between 0 and 1"),
    (lambda r: r["tasks"]["piqa"].update(note=7), "task 'piqa' field 'note' is 7, not a note on the data"),
    (lambda r: r["tasks"]["gsm8k"]["metrics"].update({"exact_match,strict-match": 2.5}),
     "task 'gsm8k' field 'metrics.exact_match,strict-match' is 2.5, not a score"),
    (lambda r: r["tasks"]["piqa"]["metrics"].update({"acc_norm,none": 0.9}), "task 'piqa' field 'value' is 0.55 but 'metrics.acc_norm,none' is 0.9, the same score"),
    (lambda r: r.update(perplexity=5), "field 'perplexity' is 5, not an object"),
    (lambda r: r.update(perplexity={"perplexity": "abc"}), "field 'perplexity.perplexity' is \"abc\", not a perplexity"),
    (lambda r: r["perplexity"].update(attention="full"), "field 'perplexity.attention' is \"full\", not document or causal"),
    (lambda r: r.update(model="x"), "field 'model' is \"x\", not an object"),
    (lambda r: r.update(model={"config": "x"}), "field 'model.config' is \"x\", not an object"),
    (lambda r: r.update(engine="x"), "field 'engine' is \"x\", not an object"),
])
def test_results_not_as_sutra_eval_writes_them_are_refused_naming_the_field(tmp_path, edit, problem):
    path = edited(write_results(tmp_path / "r.json", {"piqa": 0.55, "gsm8k": 0.02}, perplexity=37.7), edit)
    with pytest.raises(SutraError) as refused:
        read_results(path)
    assert str(refused.value).startswith(f"{path}: {problem}") and "sutra eval" in str(refused.value)


def test_a_report_table_given_as_results_is_named_as_one(tmp_path):
    (tmp_path / "progression.csv").write_text("Benchmark,E1-best\nPIQA,55.00\n")
    with pytest.raises(SutraError, match=r"progression.csv: not valid JSON .*\(a table `sutra report` writes, read from results\); give a results file written by 'sutra eval"):
        read_results(tmp_path / "progression.csv")


def test_a_diverged_runs_nan_perplexity_reads_as_not_measured(tmp_path):
    path = edited(write_results(tmp_path / "r.json", {"piqa": 0.55}, perplexity=37.7), lambda r: r["perplexity"].update(perplexity=float("nan")))
    assert load_columns([str(path)])[0].perplexity is None


def test_a_malformed_results_file_in_a_scanned_directory_is_named_not_skipped(tmp_path):
    (tmp_path / "arms" / "A").mkdir(parents=True)
    write_results(tmp_path / "arms" / "A" / "results.json", {"piqa": 0.55})
    (tmp_path / "arms" / "config.json").write_text('{"hidden_size": 64}')  # other JSON in a run: passed over
    bad = edited(write_results(tmp_path / "arms" / "B.json", {"piqa": 0.55}), lambda r: r["tasks"]["piqa"].update(value=57.3))
    result = run_sutra("report", str(tmp_path / "arms"), "--out", str(tmp_path / "report"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"sutra: error: {bad}: task 'piqa' field 'value' is 57.3" in result.stderr


def test_a_name_without_a_path_is_refused_not_read_as_the_current_directory(tmp_path, monkeypatch):
    write_results(tmp_path / "r.json", {"piqa": 0.55})
    monkeypatch.chdir(tmp_path)  # a results file here must not be picked up by 'e1-best='
    with pytest.raises(SutraError, match=r"^e1-best=: no path after '='"):
        load_columns(["e1-best="])


def test_inputs_sharing_no_task_compare_nothing_and_say_so(tmp_path):
    columns = load_columns([str(write_results(tmp_path / "a.json", {"piqa": 0.55})), str(write_results(tmp_path / "b.json", {"sciq": 0.4}))])
    table = comparison_table(columns, row_header="Model")
    assert table.header == ["Model"] and table.rows == [["a"], ["b"]]
    assert "Avg" not in table.markdown() and "The inputs share no benchmark task" in table.markdown()


@pytest.mark.parametrize("name, text, problem", [
    ("recipe.yaml", "name: x\nschedule: [b", "recipe.yaml:2: not valid YAML"),
    ("recipe.yaml", "- 1\n", "recipe.yaml: not a mapping of recipe settings"),
    ("metrics.jsonl", '{"step": 1, "loss": 4.0}\n5\n', "metrics.jsonl:2: not a record of `sutra train`"),
    ("metrics.jsonl", b'{"step": 1, "loss": 2.0}\n\xff\n', "metrics.jsonl: not a metrics file of `sutra train` (bytes that are not UTF-8 text at offset 25)"),
    ("recipe.yaml", b"name: \xff\n", "recipe.yaml: bytes that are not UTF-8 text at offset 6; fix or remove it"),
])
def test_a_run_directory_with_a_malformed_file_names_its_line(tmp_path, name, text, problem):
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SutraError) as refused:
        read_run(str(tmp_path))
    assert str(refused.value).startswith(f"{tmp_path}/{problem}") and "fix or remove" in str(refused.value)


@pytest.mark.parametrize("schedule", [[1], {"kind": "cosine", "epochs": [{"peak_lr": "x", "min_lr": 1e-5}]}])
def test_a_schedule_the_card_cannot_read_gives_way_to_the_logged_rates(schedule):
    run = {"metrics": [{"step": 5, "epoch": 0.5, "tokens": 100, "loss": 4.0, "lr": 1e-4}], "recipe": {"schedule": schedule}}
    assert "| 1 | 100 | 0 s | 1e-04 → 1e-04 (logged) |  |" in epoch_table(run, {})


def test_a_directory_that_is_no_run_is_refused_as_run_not_left_out_of_the_card(tmp_path, tokenizer):
    """`--run` given the checkpoint itself, or the directory above the run, used to be taken as a run
    with nothing logged: the card silently had no training section."""
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "e1-best", Llama(ModelConfig(64, 96, 2, 4, 2, max_seq_len=64)), tokenizer)
    for directory in (checkpoint, tmp_path):
        with pytest.raises(SutraError, match=rf"^{directory}: not a training run directory \(no metrics.jsonl or recipe.yaml\); give --run the run_dir"):
            read_run(str(directory))


def test_json_and_yaml_nested_too_deeply_are_passed_over_or_named_not_a_traceback(tmp_path):
    """Two of the three checks of a JSON file's `format` (results in a scanned directory, an eval's
    --out to replace) and the card's read of recipe.yaml let Python's RecursionError through."""
    from sutra.eval.harness import is_results_file
    from sutra.report.tables import load_columns

    deep = tmp_path / "scanned" / "deep.json"
    deep.parent.mkdir()
    deep.write_text("[" * 200_000 + "]" * 200_000)
    assert not is_results_file(deep)
    with pytest.raises(SutraError, match="no 'sutra eval' results files in this directory"):
        load_columns([str(deep.parent)])
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: x\ntrain: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SutraError, match=rf"^{run / 'recipe.yaml'}: not valid YAML \(maximum recursion depth"):
        read_run(str(run))


def test_a_gsm8k_entry_without_its_metrics_shows_no_strict_row_value_not_a_traceback(tmp_path):
    """read_results takes `metrics` as optional, but the strict-match row read it unguarded (KeyError)."""
    from sutra.report.tables import progression_table

    path = edited(write_results(tmp_path / "r.json", {"gsm8k": 0.02, "piqa": 0.55}), lambda r: r["tasks"]["gsm8k"].pop("metrics"))
    rows = {row[0]: row[1:] for row in progression_table(load_columns([str(path)])).rows}
    assert rows["GSM8K (flexible-extract)"] == ["2.00"] and rows["GSM8K (strict-match)"] == [""]


def test_report_never_replaces_files_an_earlier_report_did_not_write(tmp_path):
    results = write_results(tmp_path / "a.json", {"piqa": 0.55})
    out = tmp_path / "mine"
    out.mkdir()
    (out / "comparison.md").write_text("my notes")
    (out / "perplexity_vs_average.png").write_text("my chart")  # results without perplexity used to delete it
    result = run_sutra("report", str(results), "--out", str(out))
    assert result.returncode == 2 and result.stderr == (
        f"sutra: error: --out {out} holds comparison.md, perplexity_vs_average.png, which no earlier `sutra report` wrote; "
        "they are not replaced: move them, or choose another --out\n")
    assert (out / "comparison.md").read_text() == "my notes" and (out / "perplexity_vs_average.png").read_text() == "my chart"
    for name in ("comparison.md", "perplexity_vs_average.png"):
        (out / name).unlink()
    (out / "README.md").write_text("a model card")
    for _ in range(2):  # beside other files, and again over its own
        run_sutra("report", str(results), "--out", str(out), check=True)
    assert (out / "README.md").read_text() == "a model card" and (out / "comparison.md").read_text().startswith("| Model |")
