"""Training runs in-process on a micro model: run directory, best/final checkpoints, generate and plot
from them, NaN skip and rollback, continued pretraining with --init-from, and (on CUDA) a hot loop without host syncs."""

import json
import math
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sutra_testing import run_sutra
from sutra.errors import SutraError
from sutra.train.recipe import load_recipe
from sutra.train.trainer import Distributed, Trainer, train
from train_helpers import MICRO_MODEL, micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # a few short runs: over 20 s on a busy 2-core machine

CPU = Distributed(rank=0, world_size=1, device=torch.device("cpu"))
CUDA = Distributed(rank=0, world_size=1, device=torch.device("cuda"))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset) -> Path:
    """Two epochs of 4 steps, evaluated every 2 steps, TensorBoard on."""
    tmp = tmp_path_factory.mktemp("run")
    recipe = micro_recipe(tiny_dataset, tmp / "run", train={"steps_per_epoch": 4}, eval={"every_steps": 2, "max_windows": 4}, logging={"every_steps": 1, "tensorboard": True})
    train(str(write_recipe(tmp / "micro.yaml", recipe)), [], None)
    return tmp / "run"


def test_run_directory_has_recipe_metrics_tensorboard_and_epoch_checkpoints(finished_run):
    names = sorted(p.name for p in finished_run.iterdir())
    assert {"recipe.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "last", "e1-best", "e1-final", "e2-best", "e2-final"} <= set(names)
    assert list((finished_run / "tensorboard").glob("events.out.tfevents.*"))
    train_records = [r for r in records(finished_run) if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 9))
    for r in train_records:
        assert {"tokens", "loss", "lr", "grad_norm", "tokens_per_s", "tflops", "mfu"} <= set(r)
        assert r["tokens"] == r["step"] * 2 * 2 * 32 and math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    val = [r for r in records(finished_run) if "val_loss" in r]
    assert [r["step"] for r in val] == [0, 2, 4, 6, 8]
    assert val[-1]["val_loss"] < val[0]["val_loss"] - 0.3, "validation loss should fall"
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in val)
    # the cosine restarts: epoch 2 starts warming up to its own (lower) peak
    lrs = {r["step"]: r["lr"] for r in train_records}
    assert lrs[1] == pytest.approx(1e-2 / 2) and lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(3e-3 / 2)


def test_best_and_final_checkpoints_follow_validation_perplexity(finished_run):
    val = {r["step"]: r["val_ppl"] for r in records(finished_run) if "val_ppl" in r}
    for epoch, steps in ((1, (2, 4)), (2, (6, 8))):
        best = json.loads((finished_run / f"e{epoch}-best" / "sutra.json").read_text())["training"]
        final = json.loads((finished_run / f"e{epoch}-final" / "sutra.json").read_text())["training"]
        assert best["step"] == min(steps, key=lambda s: val[s]) and best["val_ppl"] == pytest.approx(val[best["step"]])
        assert final["step"] == steps[-1]
    # only checkpoints some name points at are kept
    kept = {p.name for p in (finished_run / "checkpoints").iterdir()}
    assert kept == {Path(p.readlink()).name for p in finished_run.iterdir() if p.is_symlink()}
    # and only `last` and `last-good` keep the optimizer state a resume or rollback needs
    resumable = {Path((finished_run / name).readlink()).name for name in ("last", "last-good")}
    assert resumable < kept
    assert {p.name for p in (finished_run / "checkpoints").iterdir() if (p / "trainer_state.pt").is_file()} == resumable


def test_the_trainer_state_is_mapped_from_its_file_not_read_into_memory(finished_run):
    """Every process of a node resuming from one file shares the page cache's copy of it."""
    from sutra.train.checkpoints import load_trainer_state

    file = (finished_run / "last" / "trainer_state.pt").resolve()
    state = load_trainer_state(finished_run / "last")
    assert str(file) in Path("/proc/self/maps").read_text()
    read = torch.load(file, weights_only=True)
    moments = [(state["optimizer"]["state"][i]["exp_avg"], read["optimizer"]["state"][i]["exp_avg"]) for i in read["optimizer"]["state"]]
    assert moments and all(torch.equal(a, b) for a, b in moments)


def test_checkpoints_load_as_model_specs_and_generate(finished_run):
    from sutra.model.checkpoint import load_model

    loaded = load_model(str(finished_run / "e1-final"))
    assert loaded.model.config.hidden_size == 64 and loaded.tokenizer.vocab_size == 49152
    result = run_sutra("generate", str(finished_run / "e2-best"), "--prompt", "Return a new", "--max-new-tokens", "5", check=True)
    assert result.stdout.startswith("Return a new")
    # the run directory itself is no model: the message names its checkpoints
    with pytest.raises(SutraError, match=rf"a training run, not a model; give one of its checkpoints \(e1-best, e1-final, e2-best, e2-final, last.*\), e.g. {finished_run}/e1-best"):
        load_model(str(finished_run))


def test_sutra_eval_reproduces_a_causal_runs_logged_perplexity_by_default(tmp_path, tiny_dataset):
    """`sutra eval --perplexity` scored every checkpoint with document masking, over 2048-token
    windows and the whole split, unless told otherwise: a causal run's logged val_ppl came out
    about 3 % off, and any run's only with --seq-len and --max-windows repeating its recipe."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 4, "attention": "causal"},
                          schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]}, eval={"every_steps": 100, "max_windows": 4})
    train(str(write_recipe(tmp_path / "causal.yaml", recipe)), [], None)
    logged = [r["val_ppl"] for r in records(tmp_path / "run") if "val_ppl" in r][-1]
    result = run_sutra("eval", str(tmp_path / "run" / "e1-final"), "--perplexity", str(tiny_dataset), "--out", str(tmp_path / "r.json"), check=True)
    measured = json.loads((tmp_path / "r.json").read_text())["perplexity"]
    assert (measured["attention"], measured["seq_len"], measured["windows"]) == ("causal", 32, 4) and measured["windows_in_split"] > 4
    assert f"(4 of {measured['windows_in_split']:,} windows of 32, causal attention, as the run validated)" in result.stdout
    assert measured["perplexity"] == pytest.approx(logged, rel=1e-5)
    # each flag still overrides its default, and the line no longer says it is the run's validation
    result = run_sutra("eval", str(tmp_path / "run" / "e1-final"), "--perplexity", str(tiny_dataset), "--max-windows", "all", "--attention", "document",
                       check=True)
    assert f"({measured['windows_in_split']:,} windows of 32, document attention)" in result.stdout


def test_plot_draws_a_png(finished_run, tmp_path):
    from sutra.train.plot import plot_run

    out = plot_run(finished_run, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(SutraError, match="the curves are a PNG image; give a path ending in .png"):
        plot_run(finished_run, tmp_path)
    named_like_a_png = tmp_path / "named.png"
    named_like_a_png.mkdir()
    with pytest.raises(SutraError, match="is a directory; give a file path to write"):
        plot_run(finished_run, named_like_a_png)
    metrics = (finished_run / "metrics.jsonl").read_bytes()
    with pytest.raises(SutraError, match="give a path ending in .png"):
        plot_run(finished_run, finished_run / "metrics.jsonl")
    assert (finished_run / "metrics.jsonl").read_bytes() == metrics
    # a checkpoint directory is replaced or removed whole: an image inside it would be lost, or make it no checkpoint
    for inside in (finished_run / "last" / "curves.png", finished_run / "checkpoints" / "x.png"):
        with pytest.raises(SutraError, match=r"is inside .*checkpoints, an input of this command; write the `sutra plot` image somewhere else"):
            plot_run(finished_run, inside)
    assert not list(finished_run.glob("checkpoints/**/*.png"))
    notes = tmp_path / "notes.png"
    notes.write_text("mine")
    with pytest.raises(SutraError, match="exists and is not a `sutra plot` image, so it is not replaced"):
        plot_run(finished_run, notes)
    assert notes.read_text() == "mine"
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)  # checked without being opened (an open waits for a writer forever)
    with pytest.raises(SutraError, match="exists and is not a `sutra plot` image, so it is not replaced"):
        plot_run(finished_run, fifo)
    # another PNG (a report's chart, a photo) is kept too; a plot written before is replaced
    import matplotlib.pyplot as plt

    chart = tmp_path / "chart.png"
    plt.figure().savefig(chart)
    plt.close("all")
    before = chart.read_bytes()
    with pytest.raises(SutraError, match="exists and is not a `sutra plot` image, so it is not replaced"):
        plot_run(finished_run, chart)
    assert chart.read_bytes() == before
    assert plot_run(finished_run, out) == out
    from sutra.train.metrics import read_metrics
    from sutra.train.plot import curves_figure

    earlier = tmp_path / "earlier.png"  # a plot made before plots carried their mark (a demo's report/loss.png)
    curves_figure(read_metrics(finished_run), "run").savefig(earlier, format="png", dpi=110)
    plt.close("all")
    assert plot_run(finished_run, earlier) == earlier and b"sutra plot" in earlier.read_bytes()[:4096]
    with pytest.raises(SutraError, match="give a `sutra train` run directory"):
        plot_run(finished_run / "metrics.jsonl")
    with pytest.raises(SutraError, match=r"nope: no such run directory; give the run_dir"):  # (it said "no metrics.jsonl")
        plot_run(finished_run.parent / "nope")
    # records a hand (or another tool) wrote without every field still plot
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "val_loss": 1.5}\n')
    assert plot_run(partial).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (partial / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 2.0}\n\xff\n')
    with pytest.raises(SutraError, match=r"metrics.jsonl: not a metrics file of `sutra train` \(bytes that are not UTF-8 text at offset 25\)"):
        plot_run(partial)


def test_curves_of_one_point_show_it_and_an_empty_perplexity_panel_says_so():
    import matplotlib.pyplot as plt

    from sutra.train.plot import curves_figure

    fig = curves_figure([{"step": 1, "loss": 2.0, "lr": 1e-3}], "one step")
    loss_ax, ppl_ax, lr_ax = fig.axes
    train_line, val_line = loss_ax.get_lines()
    assert train_line.get_marker() == "o" and list(train_line.get_xdata()) == [1] and len(val_line.get_xdata()) == 0
    assert lr_ax.get_lines()[0].get_marker() == "o"
    assert [t.get_text() for t in ppl_ax.texts] == ["no validation yet"] and ppl_ax.get_yscale() == "linear"
    plt.close(fig)
    fig = curves_figure([{"step": s, "loss": 2.0 / s, "lr": 1e-3, "val_loss": 1.0, "val_ppl": 2.7} for s in (1, 2)], "two steps")
    loss_ax, ppl_ax, lr_ax = fig.axes
    assert loss_ax.get_lines()[0].get_marker() in ("None", None, "") and lr_ax.get_lines()[0].get_marker() in ("None", None, "")
    assert not ppl_ax.texts and ppl_ax.get_yscale() == "log"
    plt.close(fig)
    fig = curves_figure([{"step": 0, "val_loss": None, "val_ppl": None}, {"step": 1, "loss": None, "lr": 1e-3}], "diverged")
    assert [t.get_text() for t in fig.axes[1].texts] == ["validation not finite (the run diverged)"]
    plt.close(fig)


def test_nan_steps_are_skipped_then_rolled_back_to_last(tmp_path, tiny_dataset):
    recipe_path = write_recipe(tmp_path / "r.yaml", micro_recipe(
        tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 6}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
        checkpoint={"every_steps": 3}, stability={"max_bad_steps": 2, "max_rollbacks": 1}, eval={"every_steps": 100, "max_windows": 4},
    ))
    trainer = Trainer(load_recipe(recipe_path), resume=False, dist_info=CPU)
    trainer.run(stop_after=3)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.norm.weight.fill_(float("nan"))  # as if a bad update had slipped through
    trainer.run(stop_after=4)
    assert trainer.progress.skipped_steps == 1 and trainer.progress.rollbacks == 0
    trainer.run(stop_after=5)  # the streak ends at step 5 and is found there (a log line), but rolled back after the next step
    assert trainer.progress.skipped_steps == 2 and trainer.progress.rollbacks == 0 and trainer.progress.rollback_due == 4
    trainer.run(stop_after=6)  # the last step: made at once, before the epoch's final checkpoint
    assert trainer.progress.skipped_steps == 3 and trainer.progress.rollbacks == 1
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items()), "weights are those of `last`"
    events = [r for r in records(tmp_path / "run") if r.get("event") == "rollback"]
    assert len(events) == 1 and "step 5: 2 consecutive non-finite steps; rolled weights and optimizer back to 'last-good' (step 3)" in events[0]["message"]
    trainer.close()


def start(recipe: dict, path: Path, dist_info: Distributed = CPU, overrides=()) -> Trainer:
    """A new run of `recipe`, written to `path` first as a user's recipe file is."""
    return Trainer(load_recipe(write_recipe(path, recipe), overrides), resume=False, dist_info=dist_info)


def resume(run_dir: Path) -> Trainer:
    return Trainer(load_recipe(run_dir / "recipe.yaml"), resume=True, dist_info=CPU)


def poison_steps(trainer: Trainer, steps: set[int]) -> None:
    """Non-finite gradients at these (0-based) steps."""
    trainer.model.norm.weight.register_hook(lambda grad: grad * float("nan") if trainer.progress.step in steps else grad)


def test_an_optimizer_reset_each_epoch_starts_adamw_afresh_and_resumes_exactly(tmp_path, tiny_dataset):
    """optimizer.across_epochs: reset (the card's three epochs as three runs, each from the last one's
    weights): the second epoch's first update is a fresh AdamW's, also after a stop right at the boundary."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"steps_per_epoch": 4}, optimizer={"across_epochs": "reset"},
                          eval={"every_steps": 100, "max_windows": 2}, checkpoint={"every_steps": 100})
    runs = {}
    for name, stop in (("reference", None), ("stopped", 4), ("kept", None)):
        recipe["run_dir"] = str(tmp_path / name)
        recipe["optimizer"]["across_epochs"] = "keep" if name == "kept" else "reset"
        trainer = start(recipe, tmp_path / f"{name}.yaml")
        trainer.run(stop_after=stop)
        if stop:
            trainer.close()
            trainer = resume(tmp_path / name)
            trainer.run()
        runs[name] = trainer
        trainer.close()
    adam_steps = {name: {float(state["step"]) for state in trainer.optimizer.state.values()} for name, trainer in runs.items()}
    assert adam_steps == {"reference": {4.0}, "stopped": {4.0}, "kept": {8.0}}
    weights = {name: trainer.model.state_dict() for name, trainer in runs.items()}
    assert all(torch.equal(weights["stopped"][k], v) for k, v in weights["reference"].items())
    assert not all(torch.equal(weights["kept"][k], v) for k, v in weights["reference"].items())


def test_a_rollback_to_the_previous_epoch_under_reset_starts_adamw_afresh_again(tmp_path, tiny_dataset):
    """`last-good` at an epoch's end holds the optimizer from before the next epoch's reset: a rollback
    there brought the previous epoch's moments and step count into the new epoch."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 2, "steps_per_epoch": 6}, optimizer={"across_epochs": "reset"},
                          checkpoint={"every_steps": 100}, stability={"max_bad_steps": 2}, eval={"every_steps": 100, "max_windows": 2})
    trainer = start(recipe, tmp_path / "r.yaml")
    poison_steps(trainer, {7, 8})  # the second epoch's second and third steps; `last-good` is step 6
    trainer.run()
    trainer.close()
    assert trainer.progress.rollbacks == 1 and trainer.progress.skipped_steps == 2
    # steps 11 and 12 are the only updates since: the rollback (after step 10) discarded step 7's and 10's
    assert {float(state["step"]) for state in trainer.optimizer.state.values()} == {2.0}


def test_a_stop_inside_a_bad_streak_and_between_log_lines_resumes_as_if_uninterrupted(tmp_path, tiny_dataset):
    """The streak of skipped steps and the numbers of the unfinished log window are checkpointed: the
    resumed run rolls back where the uninterrupted one does and writes the same log lines."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 6}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          checkpoint={"every_steps": 2}, stability={"max_bad_steps": 2, "max_rollbacks": 3}, eval={"every_steps": 100, "max_windows": 2},
                          logging={"every_steps": 2})
    runs = {}
    for name, stop in (("reference", None), ("stopped", 3)):
        recipe["run_dir"] = str(tmp_path / name)
        trainer = start(recipe, tmp_path / f"{name}.yaml")
        poison_steps(trainer, {2, 3})
        trainer.run(stop_after=stop)
        trainer.close()
        if stop:
            assert trainer.progress.bad_streak == 1 and trainer.progress.rollbacks == 0
            trainer = resume(tmp_path / name)
            assert trainer.progress.bad_streak == 1 and trainer.window.losses, "restored mid-streak and mid-window"
            poison_steps(trainer, {2, 3})
            trainer.run()
            trainer.close()
        runs[name] = trainer
    assert runs["stopped"].progress == runs["reference"].progress and runs["reference"].progress.rollbacks == 1
    losses = {name: [(r["step"], r["loss"]) for r in records(tmp_path / name) if "loss" in r] for name in runs}
    assert losses["stopped"] == losses["reference"] and [step for step, _ in losses["reference"]] == [2, 4, 6]


@pytest.mark.parametrize("poisoned", [{3, 4}, {6, 7}], ids=["mid-run", "at-the-end"])
def test_when_numbers_are_read_never_changes_a_rollback(tmp_path, tiny_dataset, poisoned):
    """A log line reads a step's numbers at once, other steps are read one step behind: the streak's
    rollback is made after the same step either way (after the next one, or at once after the last
    step), so the logging cadence leaves the trained weights as they are."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 8}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          checkpoint={"every_steps": 2}, stability={"max_bad_steps": 2, "max_rollbacks": 2}, eval={"every_steps": 100, "max_windows": 2})
    runs = {}
    for every in (1, 3, 100):
        recipe["run_dir"], recipe["logging"] = str(tmp_path / f"log-{every}"), {"every_steps": every, "tensorboard": False}
        trainer = start(recipe, tmp_path / f"log-{every}.yaml")
        poison_steps(trainer, poisoned)
        trainer.run()
        trainer.close()
        runs[every] = trainer
        events = [r["message"] for r in records(tmp_path / f"log-{every}") if r.get("event") == "rollback"]
        assert len(events) == 1 and events[0].startswith(f"step {max(poisoned) + 1}: 2 consecutive non-finite steps"), every
    for every in (3, 100):
        assert runs[every].progress == runs[1].progress and same_weights(runs[1], runs[every]), every
    assert runs[1].progress.rollbacks == 1 and runs[1].progress.skipped_steps == 2


def test_a_stop_where_only_an_epoch_best_was_saved_inside_a_streak_still_resumes(tmp_path, tiny_dataset):
    """Inside a streak a better validation perplexity saves `e1-best` without `last`, so its trainer
    state is dropped; a stop at that same step must write it back for `last` to resume from."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 6}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          checkpoint={"every_steps": 100}, stability={"max_bad_steps": 3, "max_rollbacks": 1}, eval={"every_steps": 2, "max_windows": 2})
    runs = {}
    for name, stop in (("reference", None), ("stopped", 2)):
        recipe["run_dir"] = str(tmp_path / name)
        trainer = start(recipe, tmp_path / f"{name}.yaml")
        poison_steps(trainer, {1})
        trainer.run(stop_after=stop)
        trainer.close()
        if stop:
            assert trainer.store.info("e1-best")["step"] == trainer.store.info("last")["step"] == 2 and trainer.progress.bad_streak == 1
            assert (trainer.store.resolve("last") / "trainer_state.pt").is_file()
            trainer = resume(tmp_path / name)
            trainer.run()
            trainer.close()
        runs[name] = trainer
    assert runs["stopped"].progress == runs["reference"].progress and runs["reference"].progress.skipped_steps == 1
    reference = runs["reference"].model.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in runs["stopped"].model.state_dict().items())


def test_stops_around_a_streak_that_rolls_back_resume_to_the_same_weights(tmp_path, tiny_dataset):
    """Good steps after `last`, then a streak of 3 skipped steps that rolls back. A stop inside the
    streak saves `last` there, but the rollback still goes to the checkpoint before the streak
    (`last-good`); a stop at the streak's third step finds the rollback early and leaves it to the
    resumed run, which makes it after the next step as the uninterrupted run does."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 12}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          checkpoint={"every_steps": 5}, stability={"max_bad_steps": 3, "max_rollbacks": 2}, eval={"every_steps": 100, "max_windows": 2},
                          logging={"every_steps": 4})
    poisoned = {6, 7, 8}  # 0-based: steps 7, 8 and 9; `last` is step 5, step 6 is a good one after it
    runs = {}
    for name, stop in (("reference", None), ("inside", 7), ("third", 9)):
        recipe["run_dir"] = str(tmp_path / name)
        trainer = start(recipe, tmp_path / f"{name}.yaml")
        poison_steps(trainer, poisoned)
        trainer.run(stop_after=stop)
        trainer.close()
        if stop:
            assert trainer.progress.rollbacks == 0 and trainer.store.info("last")["step"] == stop and trainer.store.info("last-good")["step"] == 5
            trainer = resume(tmp_path / name)
            poison_steps(trainer, poisoned)
            trainer.run()
            trainer.close()
        runs[name] = trainer
    reference = runs["reference"].model.state_dict()
    events = {name: [r["message"] for r in records(tmp_path / name) if r.get("event") == "rollback"] for name in runs}
    assert events["reference"] == ["step 9: 3 consecutive non-finite steps; rolled weights and optimizer back to 'last-good' (step 5), "
                                   "continuing with the next batches (rollback 1 of at most 2)"]
    for name in ("inside", "third"):
        assert runs[name].progress == runs["reference"].progress and events[name] == events["reference"], name
        assert all(torch.equal(reference[k], v) for k, v in runs[name].model.state_dict().items()), name
    assert runs["reference"].progress.rollbacks == 1 and runs["reference"].progress.skipped_steps == 3
    # a skipped step's gradient norm is logged as null: metrics.jsonl stays JSON that strict parsers read
    lines = (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl")) for line in lines]
    assert [r["grad_norm"] is None for r in logged if "loss" in r] == [False, True, False]


def test_checkpoint_names_follow_perplexity_and_the_streak(tmp_path, tiny_dataset):
    """`last` comes with any other name (a resume takes the newest state) but not inside a streak of
    skipped steps unless asked; a non-finite validation perplexity is never an epoch's best."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 6}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]})
    trainer = start(recipe, tmp_path / "r.yaml")
    step_of = lambda name: (trainer.store.info(name) or {}).get("step")  # noqa: E731
    trainer.progress.step = 1
    trainer._save(1, {"val_loss": float("nan"), "val_ppl": float("nan")}, final=False, last=False)
    assert trainer.store.names() == []
    trainer._save(1, {"val_loss": 5.0, "val_ppl": 148.4}, final=False, last=False)
    assert (step_of("e1-best"), step_of("last")) == (1, 1)
    trainer.progress.step, trainer.progress.bad_streak = 2, 1
    trainer._save(1, {"val_loss": 4.0, "val_ppl": 54.6}, final=False, last=False)
    assert (step_of("e1-best"), step_of("last")) == (2, 1), "a rollback to `last` must go back before the streak"
    trainer.progress.step = 3
    trainer._save(1, {"val_loss": float("inf"), "val_ppl": float("inf")}, final=False, last=True)
    assert (step_of("e1-best"), step_of("last")) == (2, 3), "a stop saves `last` wherever it is"
    trainer.close()


def test_resume_discards_names_a_kill_left_past_last(tmp_path, tiny_dataset):
    """Killed after e1-best/e1-final were pointed at a step but before `last` was: the resumed run
    redoes that step, so the names (and their weights) from before the kill must go."""
    run = tmp_path / "run"
    recipe = micro_recipe(tiny_dataset, run, train={"epochs": 1, "steps_per_epoch": 4}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          eval={"every_steps": 4, "max_windows": 2}, checkpoint={"every_steps": 2})
    trainer = start(recipe, tmp_path / "r.yaml")
    trainer.run(stop_after=2)
    step_2 = shutil.copytree(trainer.store.step_dir(2), tmp_path / "step-2")
    trainer.run()
    trainer.close()
    shutil.copytree(step_2, trainer.store.step_dir(2))
    trainer.store.point("last", 2)  # as the kill left it
    trainer = resume(run)
    assert trainer.progress.step == 2 and trainer.store.names() == ["last", "last-good"] and not trainer.store.step_dir(4).exists()
    with torch.no_grad():
        trainer.model.norm.weight.mul_(1.01)  # a replay that is not bitwise the same (another process count, CUDA)
    trainer.run()
    trainer.close()
    saved = load_file(run / "e1-final" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items()), "e1-final holds this run's weights"


class Killed(Exception):
    """A SIGKILL at this instant: the run directory is left as it is."""


def kill_at_point(trainer: Trainer, step: int, call: int) -> None:
    """Kill the run as it names the checkpoint of `step`, before the `call`-th name (1-based)."""
    point, calls = trainer.store.point, []

    def pointing(name: str, at: int) -> None:
        calls.append(name) if at == step else None
        if len(calls) == call:
            raise Killed(name)
        point(name, at)
    trainer.store.point = pointing


def run_killed(trainer: Trainer, **kwargs) -> None:
    with pytest.raises(Killed):
        trainer.run(**kwargs)
    trainer.close()


def same_weights(a: Trainer, b: Trainer) -> bool:
    return all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_a_kill_while_the_first_checkpoint_is_named_loses_nothing(tmp_path, tiny_dataset, monkeypatch):
    """Killed after the first checkpoint's directory is in place but before a name points at it, or
    while its first name is a temporary link: `--resume` and a fresh start both begin again at step 0
    (the unnamed directory, which holds the killed run's weights and record, is not reused). Killed
    after its e1-best but before `last`: `--resume` continues from it. Each ends as the uninterrupted run."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "reference", train={"epochs": 1, "steps_per_epoch": 4}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          eval={"every_steps": 100, "max_windows": 2}, checkpoint={"every_steps": 2})
    reference = start(recipe, tmp_path / "reference.yaml")
    reference.run()
    reference.close()
    recipe["run_dir"] = str(tmp_path / "unnamed")
    trainer = start(recipe, tmp_path / "unnamed.yaml")
    kill_at_point(trainer, step=2, call=1)
    run_killed(trainer)
    assert (tmp_path / "unnamed" / "checkpoints" / "step-00000002").is_dir() and trainer.store.names() == []
    resumed = resume(tmp_path / "unnamed")
    assert resumed.progress.step == 0 and not resumed.store.step_dir(2).exists()
    resumed.run()
    resumed.close()
    assert same_weights(reference, resumed) and resumed.store.names() == ["e1-best", "e1-final", "last", "last-good"]

    recipe["run_dir"] = str(tmp_path / "torn-link")
    trainer = start(recipe, tmp_path / "torn-link.yaml")
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Killed(a)) if str(a).endswith(".link.tmp") else real_replace(a, b))
    run_killed(trainer)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "torn-link").glob(".*")] == [".last.link.tmp"]
    again = start(recipe, tmp_path / "torn-link.yaml")
    again.run()
    again.close()
    assert same_weights(reference, again) and not list((tmp_path / "torn-link").glob(".*"))

    recipe["run_dir"], recipe["eval"] = str(tmp_path / "best-only"), {"every_steps": 2, "max_windows": 2}
    trainer = start(recipe, tmp_path / "best-only.yaml")
    kill_at_point(trainer, step=2, call=2)
    run_killed(trainer)
    assert trainer.store.names() == ["e1-best"]
    resumed = resume(tmp_path / "best-only")
    assert resumed.progress.step == 2 and resumed.store.names() == ["e1-best", "last", "last-good"]
    resumed.run()
    resumed.close()
    assert same_weights(reference, resumed)


def rollback_runs(tmp_path: Path, dataset: Path, stop: int, kill_before_name: int, log_every: int, after_kill) -> dict[str, Trainer]:
    """An uninterrupted run whose steps 7-9 are non-finite (rolling back to step 5), and the same run
    stopped after step `stop`, resumed, killed as it names step 10's checkpoint (before its
    `kill_before_name`-th name), checked by `after_kill(resumed trainer)`, and run to the end."""
    recipe = micro_recipe(dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 12}, schedule={"epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                          checkpoint={"every_steps": 5}, stability={"max_bad_steps": 3, "max_rollbacks": 2}, eval={"every_steps": 100, "max_windows": 2},
                          logging={"every_steps": log_every})
    poisoned = {6, 7, 8}
    runs = {}
    for name in ("reference", "killed"):
        recipe["run_dir"] = str(tmp_path / name)
        trainer = start(recipe, tmp_path / f"{name}.yaml")
        poison_steps(trainer, poisoned)
        if name == "killed":
            trainer.run(stop_after=stop)
            trainer.close()
            trainer = resume(tmp_path / name)
            poison_steps(trainer, poisoned)
            kill_at_point(trainer, step=10, call=kill_before_name)
            run_killed(trainer)
            trainer = resume(tmp_path / name)
            after_kill(trainer)
            poison_steps(trainer, poisoned)
        trainer.run()
        trainer.close()
        runs[name] = trainer
    return runs


def test_a_kill_between_last_and_last_good_after_a_rollback_keeps_the_rollback_target(tmp_path, tiny_dataset):
    """A stop inside a streak saves `last` there; the resumed run rolls back to `last-good` and, at its
    next checkpoint, names `last` and `last-good` anew. Killed between the two names, the run resumes
    and ends as the uninterrupted one (`last-good` never passes `last`, which a resume would drop
    with the checkpoint a replayed rollback needs)."""
    def after_kill(trainer):
        assert trainer.progress.step == 10 and trainer.store.info("last-good")["step"] == 10

    runs = rollback_runs(tmp_path, tiny_dataset, stop=7, kill_before_name=2, log_every=1, after_kill=after_kill)
    assert runs["killed"].progress == runs["reference"].progress and runs["reference"].progress.rollbacks == 1
    assert same_weights(runs["reference"], runs["killed"])


def test_a_kill_after_a_rollback_that_waited_for_a_stop_logs_it_once(tmp_path, tiny_dataset):
    """A stop at a streak's third step leaves the rollback to the resumed run, which makes it after
    step 10; killed before step 10's checkpoint, the run resumes at step 9 again and makes it again:
    metrics.jsonl must still hold it once, as the uninterrupted run's does. (Step 9 logs nothing, so
    the stop reads it early and defers the rollback.)"""
    def after_kill(trainer):
        assert trainer.progress.step == 9 and [r["event"] for r in records(tmp_path / "killed") if "event" in r] == []

    rollback_runs(tmp_path, tiny_dataset, stop=9, kill_before_name=1, log_every=4, after_kill=after_kill)
    events = {name: [(r["step"], r["message"]) for r in records(tmp_path / name) if r.get("event")] for name in ("reference", "killed")}
    assert events["killed"] == events["reference"] and len(events["reference"]) == 1


@pytest.mark.parametrize("where", ["optimizer", "evaluation"])
def test_out_of_memory_anywhere_in_a_step_names_the_knobs(tmp_path, tiny_dataset, where, monkeypatch):
    """A stand-in raises PyTorch's OutOfMemoryError (a real one would need the memory exhausted)."""
    trainer = start(micro_recipe(tiny_dataset, tmp_path / "run"), tmp_path / "r.yaml")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")

    monkeypatch.setattr(trainer.optimizer if where == "optimizer" else trainer, "step" if where == "optimizer" else "compiled", out_of_memory)
    with pytest.raises(SutraError, match=r"out of memory on cpu with train.micro_batch=2 x data.seq_len=32: lower train.micro_batch.*or shorten data.seq_len, "
                                         r"or --set train.activation_checkpointing=true \(recomputes .*\)\..*"
                                         r"the run directory has no checkpoint yet, so the same run_dir can start again"):
        trainer.run()
    trainer.close()
    # as the message says: the advice is taken in the same run directory
    again = Trainer(load_recipe(tmp_path / "r.yaml", ["train.micro_batch=1", "train.grad_accum=2"]), resume=False, dist_info=CPU)
    again.run(stop_after=1)
    again.close()
    assert load_recipe(tmp_path / "run" / "recipe.yaml").train.micro_batch == 1 and [r["step"] for r in records(tmp_path / "run")] == [0, 1]
    with pytest.raises(SutraError, match="already holds a run"):  # one with a checkpoint is kept
        Trainer(load_recipe(tmp_path / "r.yaml"), resume=False, dist_info=CPU)
    # a run with a checkpoint resumes with its batch and sequence: the advice says what its recipe.yaml
    # may change, and where the batch can (it named --set knobs that a resume refuses)
    run_dir, recipe_file = tmp_path / "run", tmp_path / "run" / "recipe.yaml"
    resumed = Trainer(load_recipe(recipe_file), resume=True, dist_info=CPU)
    monkeypatch.setattr(resumed, "compiled", out_of_memory)
    with pytest.raises(SutraError, match=re.escape(f"{run_dir} has checkpoints, and a resumed run keeps its batch and sequence: set "
                                                   f"train.activation_checkpointing=true (recomputes each block's activations in backward: about a "
                                                   f"third more compute) in {recipe_file} and resume; or continue in a new run (sutra train RECIPE.yaml "
                                                   f"--init-from {run_dir / 'last'} --set run_dir=NEW ...) and there train.micro_batch is 1 already")):
        resumed.run()
    resumed.close()
    # as it says: the edit is taken by a resume; at micro-batch 1, with activations recomputed already,
    # the advice is the sequence, and the size of the state no batch changes
    recipe_file.write_text(recipe_file.read_text().replace("activation_checkpointing: false", "activation_checkpointing: true"))
    resumed = Trainer(load_recipe(recipe_file), resume=True, dist_info=CPU)
    assert resumed.model.activation_checkpointing
    monkeypatch.setattr(resumed, "compiled", out_of_memory)
    with pytest.raises(SutraError, match=r"resumed run keeps its batch and sequence: continue in a new run .*train.micro_batch is 1 already: shorten "
                                         r"data.seq_len\. The weights, gradients and AdamW moments alone take 49 MiB: if that is near the memory "
                                         r"there, choose a smaller model$"):
        resumed.run()
    resumed.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_cuda_out_of_memory_in_compiled_code_names_the_knobs(tmp_path, tiny_dataset):
    """The allocator is capped 4 MiB above what the weights hold: the first step's activations need
    a new 20 MiB segment, so PyTorch's own OutOfMemoryError comes from the compiled step's code."""
    train = {"steps_per_epoch": 2, "device": "cuda", "precision": "bf16", "compile": True}
    trainer = start(micro_recipe(tiny_dataset, tmp_path / "run", train=train), tmp_path / "r.yaml", CUDA)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + (4 << 20)) / total)
    try:
        with pytest.raises(SutraError, match=r"out of memory on cuda(:0)? with train.micro_batch=2 x data.seq_len=32: lower train.micro_batch.*"
                                             r"train.attention=document and train.precision=bf16 also use less memory"):
            trainer.run()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        trainer.close()
        torch.cuda.empty_cache()


@pytest.mark.parametrize("fused", [True, False])
def test_a_non_finite_gradient_leaves_weights_and_optimizer_untouched(tmp_path, tiny_dataset, fused):
    """The fused kernel skips the step on the device (no host sync); the foreach kernel after reading it."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", optimizer={"fused": fused}, stability={"max_bad_steps": 3})
    trainer = start(recipe, tmp_path / "r.yaml")
    trainer._train_step(0)
    trainer._settle(keep=0)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = [{k: v.clone() for k, v in state.items()} for state in trainer.optimizer.state.values()]
    poison = trainer.model.norm.weight.register_hook(lambda grad: grad * float("nan"))
    trainer._train_step(1)
    poison.remove()
    trainer._settle(keep=1)
    assert trainer.progress.skipped_steps == 0 and len(trainer.in_flight) == 1, "read one step late"
    trainer._settle(keep=0)
    assert trainer.progress.skipped_steps == 1 and trainer.progress.bad_streak == 1 and math.isnan(trainer.last_grad_norm)
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    after = list(trainer.optimizer.state.values())
    assert all(torch.equal(before[k], state[k]) for before, state in zip(moments, after) for k in before), "moments and step count kept"
    trainer._train_step(2)
    trainer._settle(keep=0)
    assert trainer.progress.bad_streak == 0 and not torch.equal(weights["norm.weight"], trainer.model.norm.weight)
    trainer.close()


def test_init_from_continues_pretraining_from_a_checkpoint(finished_run, tmp_path, tiny_dataset):
    from sutra.cli import main

    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 2}, eval={"max_windows": 4},
                          schedule={"warmup_steps": 1, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    checkpoint = shutil.copytree(finished_run / "e2-final", tmp_path / "checkpoint #2")  # as typed, not YAML (# starts a comment there)
    info = json.loads((checkpoint / "sutra.json").read_text())
    (checkpoint / "sutra.json").write_text(json.dumps({**info, "eos_token_ids": [13, 0]}))  # a model with an end token of its own
    assert main(["train", str(path), "--init-from", str(checkpoint)]) == 0
    from sutra.model.checkpoint import load_model

    assert load_model(str(tmp_path / "run" / "e1-final")).eos_token_ids == [13, 0]  # kept, beside the tokenizer's (0)
    start = next(r for r in records(tmp_path / "run") if "val_loss" in r)
    source = next(r for r in records(finished_run) if r.get("step") == 8 and "val_loss" in r)
    assert start["step"] == 0 and start["val_loss"] == pytest.approx(source["val_loss"], rel=1e-6), "step 0 evaluates the loaded weights"
    assert load_recipe(tmp_path / "run" / "recipe.yaml").model.init_from == str(checkpoint)
    assert (tmp_path / "run" / "e1-final" / "model.safetensors").is_file()


def test_init_from_a_model_whose_embedding_is_padded_past_its_tokenizer(tmp_path, tiny_dataset, tokenizer):
    """Many hub models pad the embedding to a round size: the same tokenizer's data trains them (it was
    refused as a vocabulary mismatch whose advice, re-prepare the data, could not fix it)."""
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import save_checkpoint

    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 1}, eval={"max_windows": 2},
                          schedule={"warmup_steps": 0, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    padded = save_checkpoint(tmp_path / "padded", Llama(ModelConfig(**MICRO_MODEL, vocab_size=tokenizer.vocab_size + 64)), tokenizer)
    trainer = Trainer(load_recipe(path, [("model.init_from", str(padded), "test"), ("model.preset", None, "test"), ("model.overrides", {}, "test")]), resume=False, dist_info=CPU)
    trainer.run()
    trainer.close()
    assert trainer.progress.step == 1 and trainer.config.vocab_size == tokenizer.vocab_size + 64


def test_a_model_pretrained_from_an_instruct_tokenizer_also_stops_where_its_documents_ended(tmp_path, tiny_dataset, teacher_dir):
    """Its tokenizer's eos is <|im_end|>, but the documents it trains on end with <|endoftext|>."""
    from sutra.model.llama import Llama
    from sutra.model.config import ModelConfig
    from sutra.model.checkpoint import load_model, save_checkpoint
    from sutra.tokenizer import load_tokenizer

    instruct = load_tokenizer(teacher_dir)
    assert instruct.eos_id != instruct.document_separator_id
    source = save_checkpoint(tmp_path / "source", Llama(ModelConfig(**MICRO_MODEL)), instruct)
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 1}, eval={"max_windows": 2},
                          schedule={"warmup_steps": 0, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]})
    overrides = [("model.init_from", str(source), "test"), ("model.preset", None, "test"), ("model.overrides", {}, "test")]
    trainer = start(recipe, tmp_path / "r.yaml", overrides=overrides)
    trainer.run()
    trainer.close()
    assert load_model(str(tmp_path / "run" / "e1-final")).eos_token_ids == [instruct.eos_id, instruct.document_separator_id]


def test_a_continued_pretraining_run_resumes_without_its_source(finished_run, tmp_path, tiny_dataset):
    source = shutil.copytree(finished_run / "e2-final", tmp_path / "source")
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", model={"preset": None, "overrides": {}, "init_from": str(source)}, train={"epochs": 1, "steps_per_epoch": 2},
                          eval={"max_windows": 4}, schedule={"warmup_steps": 1, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]})
    trainer = start(recipe, tmp_path / "r.yaml")
    trainer.run(stop_after=1)
    trainer.close()
    shutil.rmtree(source)  # e.g. a garbage-collected run, or a hub id while offline
    trainer = resume(tmp_path / "run")
    trainer.run(stop_after=1)  # already there: no step is trained
    assert trainer.progress.step == 1 and trainer.store.info("last")["step"] == 1
    trainer.run()
    trainer.close()
    assert trainer.progress.step == 2 and trainer.config.hidden_size == 64


def test_progress_bar_keeps_the_last_loss_across_a_log_line(tmp_path, tiny_dataset):
    """Each log line starts a new window of numbers; the bar shows the last loss, not nan, until
    the new window's first loss arrives."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 2}, eval={"max_windows": 4},
                          schedule={"warmup_steps": 1, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]}, logging={"every_steps": 1})
    trainer = start(recipe, tmp_path / "r.yaml")
    trainer.run()
    fresh = Trainer(load_recipe(tmp_path / "r.yaml", ["run_dir=" + str(tmp_path / "fresh")]), resume=False, dist_info=CPU)
    assert fresh._postfix().startswith("loss - ")  # no loss read yet: not nan, which reads as a diverged step
    fresh.close()
    last_logged = [r["loss"] for r in records(tmp_path / "run") if "loss" in r][-1]
    assert trainer.window.losses == [] and trainer._postfix().startswith(f"loss {last_logged:.4f} ")
    trainer.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention, kernel", [("causal", "flex"), ("document", "flex"), ("document", "varlen")])
def test_cuda_hot_loop_never_waits_for_the_device(tmp_path, tiny_dataset, attention, kernel):
    """Between log, eval and checkpoint steps the host only enqueues work: any synchronising CUDA
    call (an .item(), a blocking copy) raises under sync-debug mode "error"."""
    train = {"steps_per_epoch": 8, "device": "cuda", "precision": "bf16", "attention": attention, "document_kernel": kernel}
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train=train, logging={"every_steps": 100})
    trainer = start(recipe, tmp_path / "r.yaml", CUDA)
    for step in range(3):  # warm-up: lazy CUDA initialisation, compilation, and the recompile a new document layout may bring
        trainer._train_step(step)
        trainer._settle(keep=0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3, 6):
            trainer._train_step(step)
            trainer._settle(keep=1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer._settle(keep=0)
    assert trainer.progress.skipped_steps == 0 and math.isfinite(trainer.window.last_loss)
    trainer.close()


def test_a_truncated_checkpoint_to_resume_from_is_one_clear_error(tmp_path, tiny_dataset):
    trainer = start(micro_recipe(tiny_dataset, tmp_path / "run"), tmp_path / "r.yaml")
    trainer.run(stop_after=3)
    trainer.close()
    weights = tmp_path / "run" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SutraError, match=r"last/model.safetensors: cannot read weights .*corrupt or truncated: restore it from a copy"):
        Trainer(load_recipe(tmp_path / "run" / "recipe.yaml"), resume=True, dist_info=CPU)


def test_a_checkpoint_write_that_fails_leaves_the_earlier_checkpoints_as_they_were(tmp_path, tiny_dataset):
    """A full disk at the second checkpoint (epoch 1's end): the run stops naming it, the first checkpoint and `last`
    are untouched byte for byte, and with room again the run resumes from them."""
    import resource
    import subprocess
    import sys

    from sutra_testing import REPO

    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path / "micro.yaml", micro_recipe(tiny_dataset, run_dir, train={"steps_per_epoch": 3}, eval={"every_steps": 2},
                                                             checkpoint={"every_steps": 2}))
    run_sutra("train", str(path), "--stop-after", "2", check=True)
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "checkpoints" in p.parts}
    assert before and (run_dir / "last").resolve().name == "step-00000002"
    full = subprocess.run([sys.executable, "-m", "sutra", "train", "--resume", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20)))  # the weights take 12 MB
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"{run_dir}: could not write the checkpoint of step 3 ([Errno 27] File too large" in full.stderr  # the end of epoch 1
    assert "the checkpoints written before are intact" in full.stderr
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "checkpoints" in p.parts}
    assert after == before  # nothing half-written is left, nothing earlier is changed
    assert (run_dir / "last").resolve().name == "step-00000002"
    resumed = run_sutra("train", "--resume", str(run_dir), check=True)
    assert "resuming at step 2" in resumed.stderr and "done: 6 steps" in resumed.stderr


def test_set_on_a_resume_says_what_to_edit_instead(tmp_path, finished_run):
    refused = run_sutra("train", "--resume", str(finished_run), "--set", "train.micro_batch=8")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"--set cannot change a run being resumed: edit {finished_run / 'recipe.yaml'} for what a resume may change (" in refused.stderr
    assert "train.parallel" in refused.stderr and "checkpoint.*" in refused.stderr
    assert f"or start a new run from its weights with `sutra train RECIPE --init-from {finished_run / 'last'}`" in refused.stderr
    # no run there: that is what is wrong, not the --set (whose advice named a recipe.yaml that is not there)
    refused = run_sutra("train", "--resume", str(tmp_path / "typo"), "--set", "train.micro_batch=8")
    assert refused.returncode == 2 and f"{tmp_path / 'typo'}: not a run directory" in refused.stderr and "--set" not in refused.stderr
    # a run's checkpoint given for the run: said so, with the run to resume
    refused = run_sutra("train", "--resume", str(finished_run / "e1-best"))
    assert refused.returncode == 2 and (f"{finished_run / 'e1-best'}: a checkpoint of the run {finished_run}, not a run directory; "
                                        f"continue that run with `sutra train --resume {finished_run}`") in refused.stderr


@pytest.mark.parametrize("log_every", [1, 100], ids=["a-log-line-due", "no-log-line"])
def test_a_signal_during_a_step_stops_one_process_after_that_step(tmp_path, tiny_dataset, log_every):
    """A SIGTERM while step 3 runs saves `last` at step 3: one process need not wait for the stop vote
    that the step's numbers carry, read a step behind (the loop ran step 4 before it stopped)."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"steps_per_epoch": 8}, checkpoint={"every_steps": 100},
                          eval={"every_steps": 100, "max_windows": 2}, logging={"every_steps": log_every})
    trainer = start(recipe, tmp_path / "r.yaml")
    trainer.model.norm.weight.register_hook(lambda grad: (os.kill(os.getpid(), signal.SIGTERM) if trainer.progress.step == 2 else None, grad)[1])
    assert trainer.run() == 143
    trainer.close()
    assert trainer.progress.step == 3 and trainer.stop_signal == "SIGTERM"
    assert json.loads((tmp_path / "run" / "last" / "sutra.json").read_text())["training"]["step"] == 3


def test_a_run_records_its_mix_as_trained_and_the_card_says_that_mix(tmp_path, tiny_dataset):
    """The card's "Training data" row read the mix file as it is now: written again with other
    shares after training, it told of data the model never saw. The run records its data at its start."""
    from sutra.data.mix import make_mix
    from sutra.report.card import read_run, training_data

    other = tmp_path / "pydoc"
    shutil.copytree(tiny_dataset, other)
    mix = tmp_path / "mix.json"
    make_mix([f"{tiny_dataset}=0.7", f"{other}=0.3"], mix)
    trainer = start(micro_recipe(mix, tmp_path / "run", eval={"every_steps": 100, "max_windows": 2}), tmp_path / "r.yaml")
    trainer.run(stop_after=1)
    trainer.close()
    said = training_data(read_run(str(tmp_path / "run")))
    assert said.startswith("mix.json, a mix of ") and "stdlib-docstrings 70.0%" in said and "pydoc 30.0%" in said, said
    make_mix([f"{tiny_dataset}=0.2", f"{other}=0.8"], mix)
    assert training_data(read_run(str(tmp_path / "run"))) == said
    (tmp_path / "run" / "data.json").write_text('{"name": "mix.json", "components": [{"name": "x"}]}')  # a hand edit
    with pytest.raises(SutraError, match=r"run/data.json: not a record of the run's training data .*fix or remove it"):
        read_run(str(tmp_path / "run"))
    for edited in ('{"name": 5}', '{"name": "mix.json", "tokens": "many"}', "[1]"):  # the card said "Training data | 5"
        (tmp_path / "run" / "data.json").write_text(edited)
        with pytest.raises(SutraError, match=r"run/data.json: not a record of the run's training data"):
            read_run(str(tmp_path / "run"))
    (tmp_path / "run" / "data.json").unlink()  # an older run's: the mix as it reads now
    assert "stdlib-docstrings 20.0%" in training_data(read_run(str(tmp_path / "run")))


def test_bf16_on_a_cpu_is_warned_of_at_the_start(tmp_path, tiny_dataset, capsys):
    """The card's recipe (bf16, device auto) fell back to a CPU without a word and ran 10x slower there."""
    for precision in ("bf16", "fp32"):
        trainer = start(micro_recipe(tiny_dataset, tmp_path / precision, train={"precision": precision, "steps_per_epoch": 3},
                                     eval={"every_steps": 100, "max_windows": 2}), tmp_path / f"{precision}.yaml")
        trainer.run(stop_after=1)
        trainer.close()
        said = capsys.readouterr().err
        assert ("warning: train.precision is bf16 on a CPU" in said and "--set train.precision=fp32 to train faster here" in said) == (precision == "bf16")
