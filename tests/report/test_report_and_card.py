"""`sutra report` tables/charts and `sutra card` from results files shaped as `sutra eval` writes them."""

import csv
import json

import pytest
import torch
import yaml

from report_helpers import write_results
from sutra_testing import run_sutra


ALL_TEN = {"arc_easy": 0.33, "arc_challenge": 0.2235, "boolq": 0.3966, "hellaswag": 0.2614, "piqa": 0.5484, "sciq": 0.452,
           "winogrande": 0.5004, "truthfulqa_mc2": 0.4802, "gsm8k": 0.0053, "mmlu": 0.2296}


def test_report_builds_both_tables_in_card_order_and_both_charts(tmp_path):
    older = write_results(tmp_path / "e1.json", {**ALL_TEN, "hellaswag": 0.2603}, perplexity=39.5)
    newer = write_results(tmp_path / "e3.json", {**ALL_TEN, "openbookqa": 0.276}, perplexity=37.72)
    result = run_sutra("report", f"E1-final={older}", f"E3-best={newer}", "--out", str(tmp_path / "report"), check=True)
    progression = (tmp_path / "report" / "progression.md").read_text()
    header = progression.splitlines()[0]
    assert header.index("E3-best") < header.index("E1-final")
    assert "| Average (10) | 34.27 |" in progression  # the seed card's E3-best average
    assert "SciQ (validation, 1000)" in progression and "| SciQ |" not in progression
    assert "GSM8K (strict-match)" in progression
    rows = list(csv.reader((tmp_path / "report" / "comparison.csv").open()))
    # the card's seven columns, Avg over them as in its baseline rows, then the other shared tasks
    assert rows[0][0] == "Model" and rows[0][8] == "Avg" and rows[0][9].startswith("ARC-Easy") and len(rows[0]) == 12
    assert {r[0]: r[8] for r in rows[1:]} == {"E3-best": "32.13", "E1-final": "32.11"}  # 32.13: the card's seven for E3-best
    for chart in ("tasks.png", "perplexity_vs_average.png"):
        assert (tmp_path / "report" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(tmp_path / "report" / "progression.md") in result.stdout


def test_report_refuses_a_file_that_is_not_results(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"hello": 1}')
    result = run_sutra("report", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not a 'sutra eval' results file" in result.stderr and "Traceback" not in result.stderr
    bad.write_text('{"format": "sutra-eval-results", "tasks": {"piqa": 0.5}}')  # an entry that is not a mapping
    result = run_sutra("report", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "task 'piqa' is 0.5, not an object" in result.stderr and "Traceback" not in result.stderr
    missing = run_sutra("report", f"E1={tmp_path / 'typo.json'}", "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and f"{tmp_path / 'typo.json'}: no such results file or directory" in missing.stderr


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "SmolLM2-tiny", Llama(ModelConfig(64, 96, 2, 4, 2, max_seq_len=512)), tokenizer)


def test_card_front_matter_parses_with_one_model_index_entry_per_task(tmp_path, checkpoint):
    from sutra.model.checkpoint import weights_sha256
    from sutra.model.checkpoint import WEIGHTS_MARK

    results = write_results(tmp_path / "r.json", {"hellaswag": 0.2614, "piqa": 0.5484, "sciq": 0.452, "gsm8k": 0.0053}, of=checkpoint)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in [
        {"step": 10, "tokens": 5_000_000, "loss": 4.1, "lr": 3e-4},
        {"step": 20, "tokens": 10_200_000, "loss": 3.7, "lr": 3e-5, "val_loss": 3.6, "val_ppl": 36.6},
    ]))
    (run / "recipe.yaml").write_text(yaml.safe_dump({
        "run_dir": str(run), "data": {"path": "/home/me/data/sutra-10b"}, "optimizer": {"weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": 10, "epochs": [{"peak_lr": 3e-4, "min_lr": 3e-5}, {"peak_lr": 1e-4, "min_lr": 1e-5}]},
    }))
    readme = tmp_path / "README.md"
    refused = run_sutra("card", str(checkpoint), "--results", str(results), "--run", str(run), "--out", str(readme))
    assert refused.returncode == 2 and "carries no training record" in refused.stderr and not readme.exists()
    info = json.loads((checkpoint / "sutra.json").read_text())  # as `sutra train` writes it: the run's step 20
    (checkpoint / "sutra.json").write_text(json.dumps({**info, "training": {"step": 20, "val_ppl": 36.6}}))
    run_sutra("card", str(checkpoint), "--results", str(results), "--run", str(run), "--base-model", "HuggingFaceTB/SmolLM2-70M",
              "--dataset", "codelion/sutra-10B", "--out", str(readme), check=True)
    text = readme.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["pipeline_tag"] == "text-generation" and front["base_model"] == "HuggingFaceTB/SmolLM2-70M"
    index = front["model-index"][0]
    assert index["name"] == "SmolLM2-tiny"
    by_type = {r["dataset"]["type"]: r for r in index["results"]}
    assert set(by_type) == {"hellaswag", "piqa", "sciq", "gsm8k"}
    assert by_type["hellaswag"]["metrics"][0] == {"type": "acc_norm", "value": 26.14, "name": "Normalized Accuracy (0-shot)"}
    assert by_type["sciq"]["dataset"]["name"] == "SciQ (validation, 1000)" and by_type["sciq"]["dataset"]["split"] == "validation"
    assert "Exact Match (5-shot), flexible-extract" == by_type["gsm8k"]["metrics"][0]["name"]
    assert "| Hidden Size | 64 |" in text and "| Precision | float32 |" in text
    # the seed's opening line and its Base Model / Training Dataset rows
    assert "| Base Model | HuggingFaceTB/SmolLM2-70M |" in text and "| Training Dataset | codelion/sutra-10B |" in text
    from sutra.model.checkpoint import read_model_config

    params = f"{read_model_config(str(checkpoint)).num_parameters / 1e6:.1f}M"
    assert f"# SmolLM2-tiny\n\nA {params}-parameter HuggingFaceTB/SmolLM2-70M model pretrained on codelion/sutra-10B (10.20M tokens to this checkpoint).\n" in text
    # no --repo-id: the usage loads the exported directory, not a made-up hub id
    assert 'from_pretrained("path/to/SmolLM2-tiny")' in text
    assert "| Tokens | 10.20M |" in text and "| Best validation perplexity | 36.60 |" in text
    assert "weight_decay: 0.1" in text and "trust_remote_code" not in text
    # the schedule as the recipe states it (the logged rates never saw a peak), and no local paths
    assert "| Learning rate | cosine per epoch: 3e-04 → 3e-05, 1e-04 → 1e-05, warmup 10 steps each |" in text
    assert "path: sutra-10b" in text and str(tmp_path) not in text and "/home/me" not in text
    # published with the export, marked as the card of the exported weights (other bytes: Hugging Face names),
    # so the export exports again with its card
    run_sutra("export", str(checkpoint), str(tmp_path / "hf"), "--card", str(readme), check=True)
    published = (tmp_path / "hf" / "README.md").read_text()
    assert published.replace(weights_sha256(str(tmp_path / "hf")), weights_sha256(str(checkpoint))) == text
    assert f"{WEIGHTS_MARK}{weights_sha256(str(tmp_path / 'hf'))} -->" in published and weights_sha256(str(checkpoint)) not in published
    run_sutra("export", str(tmp_path / "hf"), str(tmp_path / "hf2"), "--card", str(tmp_path / "hf" / "README.md"), check=True)
    assert (tmp_path / "hf2" / "README.md").read_text().replace(weights_sha256(str(tmp_path / "hf2")), weights_sha256(str(tmp_path / "hf"))) == published


def test_card_refuses_results_that_do_not_name_the_weights_they_measured(tmp_path, checkpoint):
    """The card's weights mark vouches for its numbers: results without a digest could be of any weights."""
    results = write_results(tmp_path / "r.json", {"piqa": 0.55})
    refused = run_sutra("card", str(checkpoint), "--results", str(results), "--out", str(tmp_path / "README.md"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp_path / "README.md").exists()
    assert "the results do not say which weights they measured (no model.weights_sha256)" in refused.stderr
    assert f"sutra eval {checkpoint}" in refused.stderr


def test_card_without_run_leaves_training_out(tmp_path, checkpoint):
    results = write_results(tmp_path / "r.json", {"piqa": 0.55}, of=checkpoint)
    readme = tmp_path / "README.md"
    run_sutra("card", str(checkpoint), "--results", str(results), "--out", str(readme), check=True)
    assert "## Training" not in readme.read_text() and "## Benchmark Results" in readme.read_text()

    # a perplexity alone: no model-index, rather than one with no results (it listed `results: []`)
    results = write_results(tmp_path / "ppl.json", {}, perplexity=42.0, of=checkpoint)
    run_sutra("card", str(checkpoint), "--results", str(results), "--out", str(readme), check=True)
    assert "model-index" not in yaml.safe_load(readme.read_text().split("---\n")[1])


def test_card_of_a_run_checkpoint_describes_that_checkpoint(tmp_path, tokenizer):
    """A run's e1-best is carded with the training up to its own step; a NaN evaluation is no best;
    results of another model are refused; shots, license and limitations come from the inputs."""
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint, weights_sha256

    config = ModelConfig(64, 96, 2, 4, 2, max_seq_len=512)
    best = save_checkpoint(tmp_path / "e1-best", Llama(config), tokenizer, extra={"training": {"step": 20, "val_ppl": 36.6}})
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in [
        {"step": 0, "tokens": 0, "val_loss": float("nan"), "val_ppl": float("nan")},
        {"step": 20, "tokens": 10_200_000, "loss": 3.7, "lr": 3e-4, "val_loss": 3.6, "val_ppl": 36.6},
        {"step": 40, "tokens": 20_400_000, "loss": 3.1, "lr": 3e-5, "val_loss": 3.0, "val_ppl": 20.1},
    ]))
    results = json.loads(write_results(tmp_path / "r.json", {"piqa": 0.55, "gsm8k": 0.01}).read_text())
    results["model"] = {"spec": "other", "config": {**config.to_dict(), "num_layers": 3}}
    (tmp_path / "other.json").write_text(json.dumps(results))
    refused = run_sutra("card", str(best), "--results", str(tmp_path / "other.json"), "--out", str(tmp_path / "x.md"))
    assert refused.returncode == 2 and "the results are for another model (other, a different shape)" in refused.stderr
    results["model"] = {"spec": str(best), "config": config.to_dict(), "weights_sha256": weights_sha256(str(best))}
    (tmp_path / "r.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    run_sutra("card", str(best), "--results", str(tmp_path / "r.json"), "--run", str(run), "--dataset", "codelion/sutra-10B",
              "--license", "mit", "--out", str(readme), check=True)
    text = readme.read_text()
    assert yaml.safe_load(text.split("---\n")[1])["license"] == "mit"
    assert "| Optimizer steps | 20 |" in text and "| Best validation perplexity | 36.60 |" in text and "nan" not in text
    assert "| Validation perplexity of this checkpoint | 36.60 (step 20) |" in text
    assert "lm-evaluation-harness v0.4.11; all tasks are 0-shot except GSM8K (5-shot)." in text
    assert "not instruction-tuned" in text and "codelion/sutra-10B" in text.split("## Limitations")[1]


COMPARISON_SEVEN = ("hellaswag", "piqa", "winogrande", "arc_challenge", "mmlu", "truthfulqa_mc2", "gsm8k")


def test_tables_follow_the_card_layout(tmp_path):
    """Sutra's own checkpoint names (e3-best, lowercase) in the card's column order; the comparison's
    columns in the card's order; gsm8k's two rows both carry its split and note mark after the filter."""
    scores = {task: ALL_TEN[task] for task in COMPARISON_SEVEN}
    older, newer = write_results(tmp_path / "e1.json", scores), write_results(tmp_path / "e3.json", scores)
    for path in (older, newer):
        results = json.loads(path.read_text())
        results["tasks"]["gsm8k"].update(note="few-shot examples drawn from test", matches_card=False)
        path.write_text(json.dumps(results))
    run_sutra("report", f"e1-final={older}", f"e2-best={older}", f"e3-best={newer}", "--out", str(tmp_path / "report"), check=True)
    progression = (tmp_path / "report" / "progression.md").read_text().splitlines()
    assert progression[0] == "| Benchmark | e3-best | e2-best | e1-final |"
    assert "| GSM8K (test, 1319) (flexible-extract) * | 0.53 | 0.53 | 0.53 |" in progression
    assert "| GSM8K (test, 1319) (strict-match) * | 0.27 | 0.27 | 0.27 |" in progression
    header = next(csv.reader((tmp_path / "report" / "comparison.csv").open()))
    assert header == ["Model", "HellaSwag", "PIQA", "WinoGrande", "ARC-Challenge", "MMLU", "TruthfulQA", "GSM8K (test, 1319) *", "Avg"]


def test_a_note_only_some_columns_have_names_them(tmp_path):
    """A TruthfulQA column from the BIG-bench subset beside one from a whole copy: the subset's note
    was printed for the row, as if both were the subset."""
    paths = {name: write_results(tmp_path / f"{name}.json", {"truthfulqa_mc2": 0.48}) for name in ("whole", "subset")}
    results = json.loads(paths["subset"].read_text())
    results["tasks"]["truthfulqa_mc2"].update(note="BIG-bench subset: 299 of TruthfulQA's 817 questions", matches_card=False)
    paths["subset"].write_text(json.dumps(results))
    run_sutra("report", f"whole={paths['whole']}", f"subset={paths['subset']}", "--out", str(tmp_path / "report"), check=True)
    progression = (tmp_path / "report" / "progression.md").read_text()
    assert "TruthfulQA (subset): BIG-bench subset: 299 of TruthfulQA's 817 questions." in progression, progression


def test_report_reads_compare_arms_and_paths_holding_an_equals_sign(tmp_path):
    for arm in ("Sutra-1B", "FineWiki-1B"):  # `sutra compare` writes arms/NAME/results.json
        (tmp_path / "arms" / arm).mkdir(parents=True)
        write_results(tmp_path / "arms" / arm / "results.json", {"piqa": 0.55})
    run_sutra("report", str(tmp_path / "arms"), "--out", str(tmp_path / "report"), check=True)
    rows = list(csv.reader((tmp_path / "report" / "comparison.csv").open()))
    assert [r[0] for r in rows[1:]] == ["FineWiki-1B/results", "Sutra-1B/results"]

    sweep = tmp_path / "lr=3e-4"  # e.g. a sweep's run directory, or `sutra demo --out` there
    sweep.mkdir()
    results = write_results(sweep / "results.json", {"piqa": 0.55})
    for item, name in ((str(results), "results"), (f"E3-best={results}", "E3-best")):
        run_sutra("report", item, "--out", str(tmp_path / "report"), check=True)
        assert (tmp_path / "report" / "progression.md").read_text().splitlines()[0] == f"| Benchmark | {name} |"


def test_task_chart_names_the_split_and_size_of_each_bar(tmp_path):
    """As the tables do: bars measured on 2 items are not shown under the card's bare task name, even
    when the file says they match the card (it is worked out from the split and items, not trusted)."""
    from sutra.report.charts import task_figure
    from sutra.report.tables import load_columns

    results = json.loads(write_results(tmp_path / "r.json", {"arc_easy": 0.3, "sciq": 0.4}).read_text())
    results["tasks"]["arc_easy"].update(items=2, matches_card=True)
    results["tasks"]["sciq"].update(matches_card=True)
    (tmp_path / "r.json").write_text(json.dumps(results))
    figure = task_figure(load_columns([f"E1-final={tmp_path / 'r.json'}"]))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["ARC-Easy (test, 2)", "SciQ (validation, 1000)"]


def test_task_chart_marks_a_task_one_checkpoint_lacks_as_not_measured_not_as_zero(tmp_path):
    from sutra.report.charts import task_figure
    from sutra.report.tables import load_columns

    both = write_results(tmp_path / "both.json", {"arc_easy": 0.3, "sciq": 0.0})
    one = write_results(tmp_path / "one.json", {"arc_easy": 0.4})
    axis = task_figure(load_columns([f"E2={one}", f"E1={both}"])).axes[0]
    assert [t.get_text() for t in axis.texts] == ["n/a"]  # E2 has no SciQ; E1's 0 % is a real score
    assert axis.texts[0].get_position()[0] == 1  # SciQ's group, first bar


def perplexity_measured(path, **measured) -> str:
    """NAME=results with a perplexity measured as `measured` says (data, seq_len, attention, ...)."""
    results = json.loads(write_results(path, ALL_TEN, perplexity=40.0).read_text())
    results["perplexity"].update(measured)
    path.write_text(json.dumps(results))
    return f"{path.stem}={path}"


def test_perplexity_axis_names_what_it_was_measured_on_and_warns_when_that_differs(tmp_path):
    from sutra.report.charts import perplexity_label
    from sutra.report.tables import load_columns

    def measured(name, data, seq_len):
        return perplexity_measured(tmp_path / f"{name}.json", data=data, seq_len=seq_len)

    same = load_columns([measured("a", "/d/stdlib-docs", 512), measured("b", "/other/stdlib-docs", 512)])
    assert perplexity_label(same) == "validation perplexity (stdlib-docs, 512-token windows, document attention)"
    mixed = load_columns([measured("c", "/d/stdlib-docs", 512), measured("d", "/d/stdlib-docs", 2048)])
    assert "not comparable" in perplexity_label(mixed)


def test_perplexities_measured_with_other_attention_are_not_called_comparable(tmp_path, checkpoint):
    """`sutra eval --attention causal` (added after the chart) scores across the documents packed into
    a window: another scale than the default document masking, yet the axis called the two one basis
    and the card did not say which it measured. Results from before --attention were document-masked."""
    from sutra.eval.harness import read_results
    from sutra.report.card import render_card
    from sutra.report.charts import perplexity_label
    from sutra.report.tables import load_columns

    basis = {"data": "/d/stdlib-docs", "seq_len": 512, "windows": 8}
    causal, document = (perplexity_measured(tmp_path / f"{a}.json", **basis, attention=a) for a in ("causal", "document"))
    earlier = perplexity_measured(tmp_path / "earlier.json", **basis)
    assert "not comparable" in perplexity_label(load_columns([causal, document]))
    assert perplexity_label(load_columns([document, earlier])) == "validation perplexity (stdlib-docs, 512-token windows, document attention)"
    results = read_results(tmp_path / "causal.json")
    results["model"] = json.loads(write_results(tmp_path / "of.json", {}, of=checkpoint).read_text())["model"]
    card = render_card(str(checkpoint), results, "this", None, [], None, [], [], None)
    assert "Validation perplexity of stdlib-docs: 40.00 over 1,000 tokens (8 windows of 512 tokens, causal attention, `sutra eval --perplexity`)." in card


def measured_on(path, items: int):
    """The results at `path` as if every task had run on its first `items` documents."""
    results = json.loads(path.read_text())
    for task in results["tasks"].values():
        task.update(items=items, matches_card=False)
    path.write_text(json.dumps(results))
    return path


def test_columns_measured_on_different_items_say_which_is_which(tmp_path):
    small, large = measured_on(write_results(tmp_path / "a.json", ALL_TEN), 4), measured_on(write_results(tmp_path / "b.json", ALL_TEN), 8)
    run_sutra("report", f"E2-best={small}", f"E1-final={large}", "--out", str(tmp_path / "report"), check=True)
    text = (tmp_path / "report" / "progression.md").read_text()
    assert "| ARC-Easy (sizes differ) * | 33.00 | 33.00 |" in text
    assert "- ARC-Easy (sizes differ): E2-best test, 4 items; E1-final test, 8 items." in text
    assert "| Average (10) * | 34.27 | 34.27 |" in text and "measured on different items for ARC-Easy, ARC-Challenge" in text
    # measured alike (both on 4 items): each row names its size once, and the average is comparable
    run_sutra("report", f"E2-best={small}", f"E1-final={measured_on(large, 4)}", "--out", str(tmp_path / "alike"), check=True)
    text = (tmp_path / "alike" / "progression.md").read_text()
    assert "| ARC-Easy (test, 4) | 33.00 | 33.00 |" in text and "| Average (10) | 34.27 | 34.27 |" in text and "differ" not in text


def test_a_pipe_in_a_name_stays_inside_its_cell(tmp_path):
    results = write_results(tmp_path / "r.json", {"piqa": 0.55})
    run_sutra("report", f"lr|3e-3={results}", "--out", str(tmp_path / "report"), check=True)
    assert (tmp_path / "report" / "progression.md").read_text().splitlines()[0] == "| Benchmark | lr\\|3e-3 |"


def test_report_removes_a_perplexity_chart_it_cannot_redraw_and_says_why(tmp_path):
    with_ppl = write_results(tmp_path / "p.json", ALL_TEN, perplexity=37.7)
    run_sutra("report", str(with_ppl), "--out", str(tmp_path / "report"), check=True)
    assert (tmp_path / "report" / "perplexity_vs_average.png").is_file()
    result = run_sutra("report", str(write_results(tmp_path / "n.json", ALL_TEN)), "--out", str(tmp_path / "report"), check=True)
    assert not (tmp_path / "report" / "perplexity_vs_average.png").exists()  # not the earlier report's
    assert "perplexity chart skipped: no input has a perplexity" in result.stdout
    only_ppl = write_results(tmp_path / "o.json", {}, perplexity=37.7)
    result = run_sutra("report", str(only_ppl), "--out", str(tmp_path / "report2"), check=True)
    assert "perplexity chart skipped: the inputs with a perplexity (o) share no averaged benchmark task" in result.stdout


def test_card_is_of_these_weights_and_keeps_this_model_beside_its_progression(tmp_path, checkpoint):
    from sutra.model.checkpoint import weights_sha256

    results = json.loads(write_results(tmp_path / "r.json", {"piqa": 0.55, "truthfulqa_mc2": 0.48}, perplexity=37.72).read_text())
    results["model"] = {"spec": "elsewhere/e1-best", "weights_sha256": "0" * 64}
    (tmp_path / "other.json").write_text(json.dumps(results))
    refused = run_sutra("card", str(checkpoint), "--results", str(tmp_path / "other.json"), "--out", str(tmp_path / "x.md"))
    assert refused.returncode == 2 and f"the results are for other weights (elsewhere/e1-best) than {checkpoint}'s" in refused.stderr
    results["model"] = {"spec": str(checkpoint), "weights_sha256": weights_sha256(str(checkpoint))}
    (tmp_path / "r.json").write_text(json.dumps(results))
    older = write_results(tmp_path / "e1.json", {"piqa": 0.51})
    readme = tmp_path / "README.md"
    run_sutra("card", str(checkpoint), "--results", str(tmp_path / "r.json"), "--progression", f"E1-final={older}", "--out", str(readme), check=True)
    text = readme.read_text()
    assert "### This Model vs Training Progression\n\n| Benchmark | SmolLM2-tiny | E1-final |" in text
    assert "| PIQA | 55.00 | 51.00 |" in text
    assert "Validation perplexity: 37.72 over 1,000 tokens (`sutra eval --perplexity`)." in text
    # this model (no checkpoint name) beside an E1-final: the finding runs from E1-final to it
    assert "- Benchmark average over 1 task: 51.00 (E1-final) → 55.00 (SmolLM2-tiny), +4.00." in text
    # measured on other items than this model's numbers: the finding would compare unlike things
    run_sutra("card", str(checkpoint), "--results", str(tmp_path / "r.json"), "--progression", f"E1-final={measured_on(older, 3)}",
              "--out", str(tmp_path / "unlike.md"), check=True)
    assert "Benchmark average over" not in (tmp_path / "unlike.md").read_text()
    del results["perplexity"]["tokens"]  # not recorded: left out, not "over 0 tokens"
    (tmp_path / "r.json").write_text(json.dumps(results))
    run_sutra("card", str(checkpoint), "--results", str(tmp_path / "r.json"), "--out", str(tmp_path / "plain.md"), check=True)
    assert "Validation perplexity: 37.72 (`sutra eval --perplexity`)." in (tmp_path / "plain.md").read_text()
    names = {r["dataset"]["type"]: r["dataset"]["name"] for r in yaml.safe_load(text.split("---\n")[1])["model-index"][0]["results"]}
    assert names["truthful_qa"] == "TruthfulQA MC2"  # the seed's model-index name
    # export publishes this card only beside these weights, with the precision it writes (`bf16`, the recipes' word, is bfloat16)
    run_sutra("export", str(checkpoint), str(tmp_path / "hf"), "--dtype", "bf16", "--card", str(readme), check=True)
    assert "| Precision | bfloat16 |" in (tmp_path / "hf" / "README.md").read_text() and "| Precision | float32 |" in text
    from sutra.model.llama import Llama
    from sutra.model.checkpoint import load_model, save_checkpoint

    loaded = load_model(str(checkpoint))
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other-weights", Llama(loaded.model.config), loaded.tokenizer)
    refused = run_sutra("export", str(other), str(tmp_path / "hf2"), "--card", str(readme))
    assert refused.returncode == 2 and f"--card {readme}: describes other weights than {other}'s" in refused.stderr
    assert not (tmp_path / "hf2").exists()


def test_card_training_has_the_seeds_epoch_table_and_refuses_another_run(tmp_path, tokenizer):
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint

    recipe = {"name": "card", "run_dir": "runs/card", "schedule": {"kind": "cosine", "warmup_steps": 1, "epochs": [
        {"peak_lr": 3e-4, "min_lr": 3e-5}, {"peak_lr": 1e-4, "min_lr": 1e-5}]}}
    best = save_checkpoint(tmp_path / "e2-best", Llama(ModelConfig(64, 96, 2, 4, 2, max_seq_len=512)), tokenizer,
                           extra={"training": {"step": 30, "epoch": 1.5, "val_ppl": 37.0, "recipe": "card", "resolved_recipe": recipe}})
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "run_dir": str(run)}))  # (a run may move)
    metrics = [{"step": 0, "epoch": 0.0, "tokens": 0, "val_loss": 11.0, "val_ppl": 60000.0}]
    for step in range(5, 45, 5):  # 20 steps per epoch, 1,000 tokens per step, 100 tokens/s: 50 s per log window
        metrics.append({"step": step, "epoch": step / 20, "tokens": 1000 * step, "loss": 4.0, "tokens_per_s": 100.0, "lr": 1e-4})
        if step % 10 == 0:
            metrics.append({"step": step, "epoch": step / 20, "tokens": 1000 * step, "val_loss": 3.7, "val_ppl": 40.0 - step / 10})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    results = write_results(tmp_path / "r.json", {"piqa": 0.55}, of=best)
    readme = tmp_path / "README.md"
    run_sutra("card", str(best), "--results", str(results), "--run", str(run), "--out", str(readme), check=True)
    text = readme.read_text()
    assert "| Epoch | Tokens | Training Time | Learning Rate | Best Perplexity |" in text
    assert "| 1 | 20.00K | 3.3 min | 3e-04 → 3e-05 | 38.00 |" in text  # up to this checkpoint: step 30, in epoch 2
    assert "| 2 | 10.00K | 1.7 min | 1e-04 → 1e-05 | 37.00 |" in text
    assert "| Total | 30.00K | 5.0 min |  | 37.00 |" in text
    assert "This checkpoint is step 30 of the run, in epoch 2." in text
    # a run that validated this step to another perplexity did not train this checkpoint
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({**m, "val_ppl": 50.0} if "val_ppl" in m else m) for m in metrics))
    refused = run_sutra("card", str(best), "--results", str(results), "--run", str(run), "--out", str(readme))
    assert refused.returncode == 2 and f"--run {run}: not the run that trained {best} (it validated step 30 at perplexity 50.00, the checkpoint at 37.00)" in refused.stderr
    # nor did a run of the same name trained with other settings, whose card would show them as this model's
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics))
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "schedule": {**recipe["schedule"], "warmup_steps": 2}}))
    refused = run_sutra("card", str(best), "--results", str(results), "--run", str(run), "--out", str(readme))
    assert refused.returncode == 2 and f"not the run that trained {best} (its recipe has schedule.warmup_steps: 2, the checkpoint was trained with 1)" in refused.stderr
    # several differences: the first with its values, the rest by name (the first alone hid a run's init_from)
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "schedule": {**recipe["schedule"], "warmup_steps": 2}, "model": {"init_from": "smollm2-135m"}}))
    refused = run_sutra("card", str(best), "--results", str(results), "--run", str(run), "--out", str(readme))
    assert refused.returncode == 2 and ("(its recipe has model.init_from: 'smollm2-135m', the checkpoint was trained with None; "
                                        "they differ in schedule.warmup_steps too)") in refused.stderr, refused.stderr


def test_a_column_with_fewer_tasks_keeps_the_others_card_average(tmp_path):
    """A checkpoint evaluated on two tasks beside two evaluated on all ten: those two keep their
    Average (10), and an Average (2) compares all three on what they share."""
    full = write_results(tmp_path / "full.json", ALL_TEN)
    some = write_results(tmp_path / "some.json", {"hellaswag": 0.26, "piqa": 0.55})
    run_sutra("report", f"E2-best={full}", f"E2-final={full}", f"E1-final={some}", "--out", str(tmp_path / "report"), check=True)
    text = (tmp_path / "report" / "progression.md").read_text()
    assert "| Average (10) | 34.27 | 34.27 |  |" in text
    assert "| Average (2) | 40.49 | 40.49 | 40.50 |" in text
    assert "Average (2) is over hellaswag, piqa, the averaged tasks every column has." in text


def test_this_model_joins_its_progression_unless_the_same_weights_were_measured_the_same_way(tmp_path):
    from sutra.report.card import benchmark_section
    from sutra.report.tables import Column

    def measured(path, piqa, limit):
        results = json.loads(write_results(path, {"piqa": piqa}).read_text())
        return {**results, "limit": limit, "model": {"weights_sha256": "a" * 64}}

    full, sampled = measured(tmp_path / "full.json", 0.55, None), measured(tmp_path / "sampled.json", 0.60, 100)
    assert benchmark_section("this", full, [Column("e3-best", sampled)]).count("| Benchmark | this | e3-best |") == 1
    same = measured(tmp_path / "again.json", 0.55, None)
    assert "| Benchmark | e3-best |" in benchmark_section("this", full, [Column("e3-best", same)])


def test_the_cards_table_shows_its_model_index_numbers_not_the_same_weights_measured_otherwise(tmp_path, checkpoint):
    """The same weights, tasks and --limit evaluated again in bf16 scored BoolQ 56.67 where the fp32
    results said 56.00: the card took that column for this model's, so its table showed 56.67 while
    its model-index said 56.00."""
    from sutra.eval.harness import read_results
    from sutra.report.card import render_card
    from sutra.report.tables import load_columns

    fp32 = write_results(tmp_path / "fp32.json", {"boolq": 0.56}, of=checkpoint)
    bf16 = json.loads(fp32.read_text())
    bf16["tasks"]["boolq"].update(value=0.5667, metrics={"acc,none": 0.5667})
    bf16["model"]["dtype"] = "bfloat16"
    (tmp_path / "bf16.json").write_text(json.dumps(bf16))
    card = render_card(str(checkpoint), read_results(fp32), "this", None, [], None, load_columns([f"E1-best={tmp_path / 'bf16.json'}"]), [], None)
    (boolq,) = yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"]
    assert boolq["metrics"][0]["value"] == 56.0
    assert "| Benchmark | this | E1-best |" in card and "| BoolQ | 56.00 | 56.67 |" in card


def test_card_out_never_replaces_its_results_or_another_file(tmp_path, checkpoint):
    """`--out results.json` once replaced hours of evaluation with the card's Markdown."""
    results = write_results(tmp_path / "r.json", {"piqa": 0.55}, of=checkpoint)
    kept = results.read_bytes()
    for out in (results, tmp_path / "notes.md"):
        if out != results:
            out.write_text("my notes\n")
        refused = run_sutra("card", str(checkpoint), "--results", str(results), "--out", str(out))
        assert refused.returncode == 2 and "exists and is not a model card, so it is not replaced" in refused.stderr
    assert results.read_bytes() == kept and (tmp_path / "notes.md").read_text() == "my notes\n"
    refused = run_sutra("card", str(checkpoint), "--results", str(results), "--license", " ", "--out", str(tmp_path / "README.md"))
    assert refused.returncode == 2 and "--license '': name the license" in refused.stderr and not (tmp_path / "README.md").exists()
    readme = tmp_path / "README.md"  # an earlier card is replaced
    for _ in range(2):
        run_sutra("card", str(checkpoint), "--results", str(results), "--out", str(readme), check=True)


SEED_E1_FINAL = {"arc_easy": 0.3346, "arc_challenge": 0.2244, "boolq": 0.3979, "hellaswag": 0.2603, "piqa": 0.5462, "sciq": 0.436,
                 "winogrande": 0.4878, "truthfulqa_mc2": 0.483, "gsm8k": 0.0015, "mmlu": 0.2299}


def test_key_findings_and_the_chart_read_the_checkpoints_in_training_order(tmp_path):
    """The seed's first finding, from its own numbers: "+0.25 average from epoch 1 to epoch 3" and
    perplexity 39.50 -> 37.72. The perplexity chart ran each epoch's final before its best."""
    from sutra.report.card import key_findings
    from sutra.report.tables import load_columns, oldest_first

    paths = {"E3-best": write_results(tmp_path / "e3b.json", ALL_TEN, perplexity=37.72),
             "E3-final": write_results(tmp_path / "e3f.json", ALL_TEN, perplexity=37.75),
             "E2-best": write_results(tmp_path / "e2b.json", ALL_TEN, perplexity=38.2),
             "E1-final": write_results(tmp_path / "e1f.json", SEED_E1_FINAL, perplexity=39.5)}
    columns = load_columns([f"{name}={path}" for name, path in paths.items()])
    assert [c.name for c in columns] == ["E3-best", "E3-final", "E2-best", "E1-final"]  # the card's order, newest first
    assert [c.name for c in oldest_first(columns)] == ["E1-final", "E2-best", "E3-best", "E3-final"]
    findings = key_findings(columns, columns[0])
    assert "- Benchmark average over 10 tasks: 34.02 (E1-final) → 34.27 (E3-best), +0.25." in findings
    assert "- Validation perplexity: 39.50 (E1-final) → 37.72 (E3-best)." in findings
    assert key_findings(columns[-1:], columns[-1]) == ""  # nothing to compare with


def test_the_cards_opening_line_counts_the_checkpoints_epochs_not_the_runs(tmp_path):
    from sutra.report.card import description
    from sutra.model.config import get_preset

    run = {"metrics": [{"step": 40, "tokens": 10_200_000}], "recipe": {"train": {"epochs": 3}}}
    line = description(get_preset("smollm2-70m"), None, ["codelion/sutra-10B"], run, {"step": 40, "epoch": 1.0})
    assert line == "A 69.2M-parameter Llama-architecture model pretrained on codelion/sutra-10B for 1 epoch (10.20M tokens to this checkpoint)."
    assert "for 3 epochs" in description(get_preset("smollm2-70m"), None, [], run, {"step": 40, "epoch": 2.96})


def test_the_card_says_trained_without_a_dataset_and_names_a_mixs_components(tmp_path):
    """"A 7.3M-parameter Llama-architecture model for 1 epoch" had no verb; a mix showed as `mix.json` alone."""
    from sutra.report.card import description, training_data
    from sutra.model.config import get_preset

    run = {"metrics": [{"step": 40, "tokens": 10_200_000}], "recipe": {"train": {"epochs": 3}}}
    assert description(get_preset("tiny"), None, [], run, {"step": 40, "epoch": 1.0}).endswith(
        "Llama-architecture model trained for 1 epoch (10.20M tokens to this checkpoint).")
    record = {"name": "mix.json", "tokens": 200_000, "components": [
        {"name": "man", "weight": 0.7, "tokens": 140_000}, {"name": "pydoc", "weight": 0.3, "tokens": 60_000}]}
    assert training_data({"data": record, "recipe": {"data": {"path": "/elsewhere/other.json"}}}) == \
        "mix.json, a mix of 200.00K tokens per epoch: man 70.0% (140.00K tokens), pydoc 30.0% (60.00K tokens)"
    # a run from before the record: its data path as it reads now, or its name where it is gone
    assert training_data({"recipe": {"data": {"path": str(tmp_path / "gone.json")}}}) == "gone.json"
    assert training_data({"recipe": {"data": {"path": "/data/stdlib-docs"}}}) == "stdlib-docs" and training_data({}) is None
