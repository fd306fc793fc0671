"""`sutra demo --scale quick`: the whole chain runs offline, leaves the report, and a re-run reuses every stage."""

import json
import re

import pytest
import yaml
from sutra_testing import run_sutra

from sutra.pipeline.demo import DATA_NAME, SCALES, pick_scale

STAGES_REUSED = ("synth", DATA_NAME, "untrained", "run", "results/trained.json", "results/untrained.json", "report/samples.md")


def test_cpu_scale_without_cuda_and_explicit_scales():
    import torch

    assert pick_scale("auto") is SCALES["gpu" if torch.cuda.is_available() else "cpu"]
    assert pick_scale("quick").train_steps < pick_scale("cpu").train_steps < pick_scale("gpu").train_steps


@pytest.mark.slow
def test_demo_leaves_the_report_and_reuses_finished_stages(tmp_path):
    out = tmp_path / "demo"
    first = run_sutra("demo", "--scale", "quick", "--out", str(out), check=True)
    report = out / "report"

    card = (report / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---\n")[1])
    scores = front_matter["model-index"][0]["results"]
    assert len(scores) == 5 and all(0 <= r["metrics"][0]["value"] <= 100 for r in scores)
    table = (report / "progression.md").read_text()
    for title in ("ARC-Easy", "HellaSwag", "PIQA", "WinoGrande", "BoolQ"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {title}"))
        assert re.fullmatch(r"\| .+ \| \d+\.\d\d \| \d+\.\d\d \|", row), row
    for chart in ("loss.png", "tasks.png", "perplexity_vs_average.png"):
        assert (report / chart).read_bytes().startswith(b"\x89PNG"), chart
    assert (report / "samples.md").read_text().count("**") == 6

    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_perplexity"] < summary["untrained_val_perplexity"]
    assert summary["train_tokens_per_s"] > 0 and summary["limit"] == 2
    assert f"(untrained: {summary['untrained_benchmark_average']:.2f}%)" in first.stdout  # training can lower the average: say so beside it
    # evaluated at the context it trained at, the card's two validation perplexities agree (the recipe's 32 windows, as the scale's)
    assert f"| Validation perplexity of this checkpoint | {summary['val_perplexity']:.2f} (step" in card
    assert "8 steps of 512 tokens, the size of sutra demo --scale quick" in card  # the recipe's own note said 100 steps
    assert "| Training data | stdlib-docs+synth |" in card  # (the dataset's directory was named "data")
    assert f"prepared corpus       {out / DATA_NAME}\n" in first.stdout  # where it is, as the card names it
    assert "validation perplexity" in first.stdout and "benchmark average" in first.stdout and "tokens/s" in first.stdout
    assert "quality 0." in first.stdout  # the synthesized entries' quality scores are shown

    second = run_sutra("demo", "--scale", "quick", "--out", str(out), check=True)
    for stage in STAGES_REUSED:
        assert f"reusing {out / stage}" in second.stdout, stage
    assert "$ sutra synth run" not in second.stdout and "$ sutra train" not in second.stdout and "$ sutra eval" not in second.stdout

    # another scale into the same directory would mix two configurations' outputs: refused, nothing deleted
    other = run_sutra("demo", "--scale", "cpu", "--out", str(out))
    assert other.returncode == 2 and "$ sutra synth run" not in other.stdout
    assert f"sutra: error: {out / 'synth'} was made with other settings (command: " in other.stderr and "nothing was deleted" in other.stderr
    assert (out / "run" / "e1-final").is_dir()


def test_an_out_that_is_a_file_stops_before_any_stage(tmp_path):
    (tmp_path / "afile").write_text("keep")
    for out in (tmp_path / "afile", tmp_path / "afile" / "demo"):
        result = run_sutra("demo", "--scale", "quick", "--out", str(out))
        assert result.returncode == 2 and "Traceback" not in result.stderr and "1/8" not in result.stdout, result.stderr[-1500:]
        assert str(tmp_path / "afile") in result.stderr
    assert (tmp_path / "afile").read_text() == "keep"
