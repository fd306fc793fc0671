"""The shipped tiny-cpu recipe end to end on the offline stdlib-docs corpus, as a user runs it
(shortened with --set so the test stays quick): the validation loss falls, e1-best / e1-final
appear, `sutra generate` loads them and `sutra plot` draws the curves."""

import json

import pytest

from sutra_testing import run_sutra

SHORTER = ["train.steps_per_epoch=10", "train.micro_batch=2", "schedule.warmup_steps=3", "eval.every_steps=5", "eval.max_windows=16", "logging.tensorboard=false"]


@pytest.mark.slow
def test_tiny_cpu_recipe_on_stdlib_docs(tmp_path):
    run_sutra("assets", "fetch", "stdlib-docs", check=True)
    data, run_dir = tmp_path / "stdlib-docs", tmp_path / "run"
    run_sutra("data", "prepare", "stdlib-docs", "--out", str(data), "--min-val-docs", "24", check=True)
    overrides = [arg for item in [f"data.path={data}", f"run_dir={run_dir}", *SHORTER] for arg in ("--set", item)]
    result = run_sutra("train", "recipes/tiny-cpu.yaml", *overrides, check=True)
    assert "epoch 1 done at step 10" in result.stderr

    val = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [r["step"] for r in val] == [0, 5, 10]
    assert val[-1]["val_loss"] < val[0]["val_loss"] - 1.0, val
    for name in ("e1-best", "e1-final", "last"):
        assert (run_dir / name / "model.safetensors").is_file()
    generated = run_sutra("generate", str(run_dir / "e1-best"), "--prompt", "The module", "--max-new-tokens", "8", check=True)
    assert generated.stdout.startswith("The module") and len(generated.stdout) > len("The module\n")
    assert (run_dir / "curves.png").samefile(run_sutra("plot", str(run_dir), check=True).stdout.strip())
