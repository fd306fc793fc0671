"""The trainer's checks: bad recipes, data or process counts stop before any work with one message."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sutra_testing import run_sutra
from sutra.data.shards import open_tokens, read_doc_ends, read_manifest, write_manifest, write_shard
from sutra.errors import SutraError
from sutra.train.recipe import load_recipe
from sutra.train.trainer import Distributed, Trainer, train
from train_helpers import MICRO_MODEL, micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (fixture)

CPU = Distributed(rank=0, world_size=1, device=torch.device("cpu"))


def test_fresh_start_into_an_existing_run_is_refused(tmp_path, tiny_dataset):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run")))
    Trainer(recipe, resume=False, dist_info=CPU).close()  # writes run/recipe.yaml, and no checkpoint: nothing to keep
    trainer = Trainer(recipe, resume=False, dist_info=CPU)
    trainer.run(stop_after=1)  # a checkpoint
    trainer.close()
    with pytest.raises(SutraError, match="already holds a run; continue it with `sutra train --resume"):
        Trainer(recipe, resume=False, dist_info=CPU)


def test_divergence_before_any_checkpoint_stops_with_advice(tmp_path, tiny_dataset):
    recipe_path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run", checkpoint={"every_steps": 100}, stability={"max_bad_steps": 2}))
    trainer = Trainer(load_recipe(recipe_path), resume=False, dist_info=CPU)
    with torch.no_grad():
        trainer.model.norm.weight.fill_(float("inf"))
    with pytest.raises(SutraError, match=r"2 consecutive steps with a non-finite loss or gradient before any checkpoint outside the streak; lower the "
                                         r"learning rate.*\(then start again: a run directory without a checkpoint is replaced\)"):
        trainer.run()
    trainer.close()
    Trainer(load_recipe(recipe_path), resume=False, dist_info=CPU).close()  # as it says


def test_divergence_with_checkpoints_only_inside_the_streak_gives_advice_that_works(tmp_path, tiny_dataset):
    """Skipped steps leave the weights finite, so an evaluation inside the streak saved e1-best: the
    message said to start again, which the run directory then refused, and a resume's advice (point
    `last` at it) failed too, since only `last` and `last-good` keep the optimizer state."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", checkpoint={"every_steps": 100}, eval={"every_steps": 2}, stability={"max_bad_steps": 3})
    recipe_path = write_recipe(tmp_path / "r.yaml", recipe)
    trainer = Trainer(load_recipe(recipe_path), resume=False, dist_info=CPU)
    trainer.model.norm.weight.register_hook(lambda grad: grad * float("nan"))
    run_dir = tmp_path / "run"
    with pytest.raises(SutraError, match=re.escape(f"(then remove {run_dir} or set another run_dir: its checkpoints (e1-best) were all saved inside the streak)")):
        trainer.run()
    trainer.close()
    with pytest.raises(SutraError, match=re.escape("None of them holds the optimizer state a resume needs (only `last` and `last-good` keep it): "
                                                   f"start a new run from one: sutra train RECIPE.yaml --init-from {run_dir}/NAME")):
        Trainer(load_recipe(run_dir / "recipe.yaml"), resume=True, dist_info=CPU)


def corrupt_fingerprint(tiny_dataset: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(tiny_dataset, tmp_path / "other-tokenizer")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer_fingerprint"] = "0123456789abcdef"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "change, world_size, message",
    [
        ({"train": {"grad_accum": 3}}, 2, "train.grad_accum: 3 micro-batches per step cannot be split over 2 processes"),
        ({"data": {"seq_len": 512}}, 1, "data.seq_len: 512 is longer than the model's context of 256 tokens"),
        ({"data": {"seq_len": 100_000}}, 1, "data.seq_len: 100000 is longer than the model's context of 256 tokens"),  # not "no val window"
        ({"model": {"preset": "tiny", "overrides": {**MICRO_MODEL, "vocab_size": 1000}}}, 1,
         "model.overrides.vocab_size: the model's vocabulary of 1000 is smaller than its tokenizer's 49152"),
        ({"model": {"preset": "tiny", "overrides": {**MICRO_MODEL, "num_layers": 10**20}}}, 1,  # (building it would never end)
         "model.overrides: 3,699,200,000,000,000,003,145,792 parameters need"),
        ({"model": {"preset": "tiny", "overrides": {**MICRO_MODEL, "num_layers": 10**9}}, "train": {"parallel": "fsdp"}}, 2,
         "GiB per process over 2 processes for their fp32 weights, gradients and AdamW moments, more than the"),
        ({"data": {"path": "/nonexistent/data"}}, 1, "data.path: /nonexistent/data does not exist; prepare it with `sutra data prepare`"),
        ({"data": "other-tokenizer"}, 1, "re-prepare the data with the model's tokenizer"),
        ({"train": {"steps_per_epoch": 10_000}}, 1, "train.steps_per_epoch: 10000 steps exceed the"),
        ({"train": {"micro_batch": 1000}}, 1, "train.micro_batch: a step of 1000 x 2 windows (train.micro_batch x train.grad_accum) is more than the"),
        ({"schedule": {"warmup_steps": 8}}, 1, "schedule.warmup_steps: 8 warmup steps do not fit in an epoch of 8 steps"),
        ({"schedule": {"kind": "wsd", "peak_lr": 1e-3, "warmup_steps": 14}}, 1,
         "schedule.warmup_steps: 14 warmup steps run into the decay, which takes the last 3 of 16 steps"),
    ],
)
def test_bad_input_stops_before_any_work_with_one_message(tmp_path, tiny_dataset, change, world_size, message, monkeypatch):
    if world_size > 1:  # no peer process here: the one that would check alongside passes (torchrun runs it for real in test_distributed)
        monkeypatch.setattr(torch.distributed, "all_gather_object", lambda gathered, mine: gathered.__setitem__(slice(None), [mine] + [None] * (len(gathered) - 1)))
    if change.get("data") == "other-tokenizer":
        change = {"data": {"path": str(corrupt_fingerprint(tiny_dataset, tmp_path))}}
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run", **change)))
    with pytest.raises(SutraError) as info:
        Trainer(recipe, resume=False, dist_info=Distributed(0, world_size, torch.device("cpu")))
    assert message in str(info.value) and "r.yaml" in str(info.value)
    assert not (tmp_path / "run").exists(), "nothing is written before the checks pass"


def test_varlen_on_a_pytorch_without_its_backward_stops_before_any_work(tmp_path, tiny_dataset, monkeypatch):
    """The version check runs before anything touches the GPU, so a CPU machine can test it."""
    from sutra.model import masks

    monkeypatch.setattr(masks, "VARLEN_MIN_TORCH", (99, 0))
    train = {"attention": "document", "document_kernel": "varlen", "precision": "bf16"}
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run", train=train)))
    with pytest.raises(SutraError, match=r"train.document_kernel: varlen needs PyTorch 99.0 or later for its backward .*use flex"):
        Trainer(recipe, resume=False, dist_info=Distributed(0, 1, torch.device("cuda")))
    assert not (tmp_path / "run").exists()


def test_cli_reports_user_errors_in_one_line(tmp_path, tiny_dataset):
    path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run"))
    result = run_sutra("train", str(path), "--set", "schedule.epochs=[{peak_lr: -1, min_lr: 0}, {peak_lr: 1, min_lr: 0}]")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--set schedule.epochs=" in result.stderr and "peak_lr: must be a positive number" in result.stderr
    result = run_sutra("train", "--resume", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a run directory" in result.stderr
    result = run_sutra("train", "--resume", str(tmp_path / "nowhere"), "--init-from", "smollm2-135m-instruct")
    assert result.returncode == 2 and "a resumed run continues from its own `last` checkpoint (drop --init-from)" in result.stderr
    result = run_sutra("train", str(path), "--init-from", "")  # e.g. an unset "$CHECKPOINT": not a run from scratch
    assert result.returncode == 2 and "--init-from is given an empty value (an unset shell variable?)" in result.stderr
    assert not (tmp_path / "run").exists()



def test_a_fresh_start_never_writes_over_files_it_did_not_make(tmp_path, tiny_dataset):
    """run_dir must be absent, empty, or a run that ended before its first checkpoint: a folder of
    the user's (even one holding the recipe being run) is refused with every file as it was."""
    own = tmp_path / "proj"
    own.mkdir()
    (own / "metrics.jsonl").write_text('{"note": "mine"}\n')
    recipe_text = "# my comments\n" + (write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, own))).read_text()
    (own / "recipe.yaml").write_text(recipe_text)
    with pytest.raises(SutraError, match=r"recipe.yaml:\d+: run_dir: .*proj exists and is not a run directory of `sutra train` \(it holds metrics.jsonl, recipe.yaml\)"):
        Trainer(load_recipe(own / "recipe.yaml"), resume=False, dist_info=CPU)
    assert (own / "recipe.yaml").read_text() == recipe_text and (own / "metrics.jsonl").read_text() == '{"note": "mine"}\n'
    (tmp_path / "afile").write_text("x")
    result = run_sutra("train", str(tmp_path / "r.yaml"), "--set", f"run_dir={tmp_path / 'afile'}")
    assert result.returncode == 2 and "is a file, not a directory" in result.stderr and "Traceback" not in result.stderr


def test_resume_refuses_an_edited_recipe_and_a_missing_last_without_removing_anything(tmp_path, tiny_dataset, capsys):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run", checkpoint={"every_steps": 2})))
    trainer = Trainer(recipe, resume=False, dist_info=CPU)
    trainer.run(stop_after=4)
    trainer.close()
    run = tmp_path / "run"
    saved = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(saved.replace("micro_batch: 2", "micro_batch: 4"))
    line = next(i for i, text in enumerate(saved.splitlines(), 1) if "micro_batch" in text)
    result = run_sutra("train", "--resume", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"recipe.yaml:{line}: train.micro_batch: 4 here, but the run's checkpoints were trained with 2; a resumed run keeps its recipe" in result.stderr
    # when to evaluate or checkpoint may change, and where the same data now lies
    moved = shutil.copytree(tiny_dataset, tmp_path / "moved")
    (run / "recipe.yaml").write_text(saved.replace("every_steps: 4", "every_steps: 8").replace(str(tiny_dataset), str(moved)))
    resumed = Trainer(load_recipe(run / "recipe.yaml"), resume=True, dist_info=CPU)
    assert resumed.progress.step == 4
    resumed.close()
    err = capsys.readouterr().err
    assert "recipe changed since the checkpoint: data.path" in err and "eval.every_steps 4 -> 8" in err
    # but not other validation windows or data: e1-best is picked by comparing their perplexities
    (run / "recipe.yaml").write_text(saved.replace("max_windows: 8", "max_windows: 2"))
    with pytest.raises(SutraError, match=r"eval.max_windows: 2 here, but the run's checkpoints were trained with 8"):
        Trainer(load_recipe(run / "recipe.yaml"), resume=True, dist_info=CPU)
    other_val = shutil.copytree(tiny_dataset, tmp_path / "other-val")  # the same train split, another val split
    manifest = read_manifest(other_val)
    val = manifest["splits"]["val"]["shards"][0]
    tokens = np.array(open_tokens(other_val, val)[::-1])
    manifest["splits"]["val"]["shards"] = [write_shard(other_val, val["name"], tokens, read_doc_ends(other_val, val))]
    write_manifest(other_val, {key: manifest[key] for key in ("vocab_size", "tokenizer_fingerprint", "splits")})
    (run / "recipe.yaml").write_text(saved.replace(str(tiny_dataset), str(other_val)))
    with pytest.raises(SutraError, match=r"data.path: saved data position is for data='[0-9a-f]+' but this loader has"):
        Trainer(load_recipe(run / "recipe.yaml"), resume=True, dist_info=CPU)
    (run / "recipe.yaml").write_text(saved)
    # a run directory copied or moved is resumed from where it is now, which is no change of recipe
    train(None, [], str(shutil.copytree(run, tmp_path / "run-moved", symlinks=True)), stop_after=4)
    err = capsys.readouterr().err
    assert "already at step 4" in err and "recipe changed since the checkpoint: data.path" in err and "run_dir" not in err
    # without `last` the run is not restarted over its checkpoints
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    (run / "last").unlink()
    with pytest.raises(SutraError, match=r"the run has checkpoints \(e1-best, last-good\) but no `last` to resume from; nothing was changed"):
        Trainer(load_recipe(run / "recipe.yaml"), resume=True, dist_info=CPU)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_run_dir_that_cannot_be_written_is_one_message_with_its_cause(tmp_path, tiny_dataset):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, Path("/proc/sutra-run"))))  # (not even root writes there)
    with pytest.raises(SutraError, match=r"^/proc/sutra-run: cannot be created \(.+\); choose another output directory$"):
        Trainer(recipe, resume=False, dist_info=CPU)


def test_init_from_refuses_a_set_of_the_model(tmp_path, tiny_dataset):
    path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run"))
    result = run_sutra("train", str(path), "--init-from", "smollm2-135m-instruct", "--set", "model.overrides.num_layers=4")
    assert result.returncode == 2 and "--set model.overrides.num_layers=4: --init-from smollm2-135m-instruct gives the model" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_whose_recipe_yaml_was_deleted_resumes_from_the_recipe_its_checkpoint_records(tmp_path, tiny_dataset):
    """Before, `--resume` called it "not a run directory" and a fresh start "already holds a run"."""
    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, run_dir))
    run_sutra("train", str(path), "--stop-after", "2", check=True)
    written = (run_dir / "recipe.yaml").read_text()
    (run_dir / "recipe.yaml").unlink()
    resumed = run_sutra("train", "--resume", str(run_dir), "--stop-after", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{run_dir / 'recipe.yaml'} was missing; wrote it again from the recipe `last` was trained with" in resumed.stderr
    assert (run_dir / "recipe.yaml").read_text() == written
    assert json.loads((run_dir / "last" / "sutra.json").read_text())["training"]["step"] == 3

    # what cannot be restored is one line: a directory in the recipe's place, a damaged or missing `last`
    (run_dir / "recipe.yaml").unlink()
    (run_dir / "recipe.yaml").mkdir()
    refused = run_sutra("train", "--resume", str(run_dir))
    assert refused.returncode == 2 and refused.stderr == f"sutra: error: {run_dir / 'recipe.yaml'}: not a file; move it away, and `sutra train --resume` writes the run's recipe there again\n"
    (run_dir / "recipe.yaml").rmdir()
    info = run_dir / "last" / "sutra.json"
    kept = info.read_text()
    info.write_text('{"training": []}')
    refused = run_sutra("train", "--resume", str(run_dir))
    assert refused.returncode == 2 and "sutra.json: unreadable checkpoint record ('training' is list, not a mapping); remove the 'last' link" in refused.stderr
    info.write_text(kept)
    (run_dir / "last").unlink()
    refused = run_sutra("train", "--resume", str(run_dir))
    assert refused.returncode == 2 and f"{run_dir}: not a run directory (no recipe.yaml, and no `last` checkpoint recording its recipe)" in refused.stderr


def test_a_step_too_large_for_the_data_blames_the_size_given_with_set(tmp_path, tiny_dataset):
    """It blamed data.path, whatever --set had just made the step too large."""
    path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, tmp_path / "run"))
    with pytest.raises(SutraError, match=r"^--set train.grad_accum=500: train.grad_accum: a step of 2 x 500 windows"):
        Trainer(load_recipe(path, ["train.grad_accum=500"]), resume=False, dist_info=CPU)


def test_a_run_is_written_by_one_process_at_a_time(tmp_path, tiny_dataset):
    """A second `--resume` while the run trains (or a pipeline's re-run while its stopped stage still
    saves `last`) is refused; a lock left by a killed run stops nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sutra_testing import REPO

    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", micro_recipe(tiny_dataset, run_dir, train={"epochs": 1, "steps_per_epoch": 70},
                                                          schedule={"kind": "cosine", "warmup_steps": 2, "epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]}))
    (run_dir).mkdir()
    (run_dir / ".lock").write_text("sutra train (pid 1)\n")  # a SIGKILLed start's: the kernel released its lock
    first = subprocess.Popen([sys.executable, "-m", "sutra", "train", str(path), "--set", "checkpoint.every_steps=2"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.02)
        second = run_sutra("train", "--resume", str(run_dir))
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr == f"sutra: error: {run_dir} is in use by sutra train (pid {first.pid}); wait for it to finish or choose another output directory\n"
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
    resumed = run_sutra("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run_dir / ".lock").exists()  # a run that finishes removes it
