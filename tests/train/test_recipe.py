"""Recipes: typed validation with file:line:field messages, --set overrides, shipped recipes load."""

from pathlib import Path

import pytest

from sutra.errors import SutraError
from sutra.train.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = """\
name: t
data:
  path: /some/data
schedule:
  kind: cosine
  warmup_steps: 10
  epochs:
    - {peak_lr: 3e-4, min_lr: 3e-5}
model:
  preset: tiny
"""


def test_valid_recipe_is_typed_and_overridable(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["train.micro_batch=2", "optimizer.betas=[0.9, 0.95]", "schedule.epochs=[{peak_lr: 1e-3, min_lr: 0}]"])
    assert recipe.train.micro_batch == 2
    assert recipe.optimizer.betas == (0.9, 0.95)
    assert recipe.schedule.epochs[0].peak_lr == 1e-3  # "1e-3" is a string to YAML; accepted as a number
    assert recipe.resolved_run_dir == Path("runs/t")
    # the resolved recipe round-trips through YAML
    again = load_recipe(write(tmp_path, recipe.to_yaml()))
    assert again == recipe
    # list items, empty sections, typed model overrides, options given as typed values, ~ in run_dir
    recipe = load_recipe(write(tmp_path, BASE + "eval:\n"), [
        "schedule.epochs[0].peak_lr=1e-3", "eval.every_steps=3", "model.overrides.rms_norm_eps=1e-6", "run_dir=~/runs/t",
        ("data.path", "/data #2", "--data /data #2"),  # not YAML: no comment is cut off, no number read
    ])
    assert (recipe.schedule.epochs[0].peak_lr, recipe.eval.every_steps, recipe.model.overrides) == (1e-3, 3, {"rms_norm_eps": 1e-6})
    assert recipe.data.path == "/data #2" and recipe.resolved_run_dir == Path.home() / "runs/t"
    # YAML merge keys: the mapping's own keys override the merged ones
    merged = BASE.replace("    - {peak_lr: 3e-4, min_lr: 3e-5}", "    - &first {peak_lr: 3e-4, min_lr: 3e-5}\n    - {<<: *first, peak_lr: 1e-4}")
    recipe = load_recipe(write(tmp_path, merged), ["train.epochs=2"])
    assert [(e.peak_lr, e.min_lr) for e in recipe.schedule.epochs] == [(3e-4, 3e-5), (1e-4, 3e-5)]


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (BASE + "trian:\n  epochs: 1\n", [], "r.yaml:11: trian: unknown key"),
        (BASE.replace("warmup_steps: 10", "warmup_stepz: 10"), [], "r.yaml:6: schedule.warmup_stepz: unknown key"),
        (BASE.replace("3e-4", "-3e-4"), [], "r.yaml:8: schedule.epochs[0].peak_lr: must be a positive number"),
        (BASE.replace("3e-5", "3e-3"), [], "r.yaml:8: schedule.epochs[0].min_lr: must be between 0 and peak_lr"),
        (BASE, ["train.micro_batch=0"], "--set train.micro_batch=0: train.micro_batch: must be at least 1"),
        (BASE, ["train.micro_batch=two"], "--set train.micro_batch=two: train.micro_batch: expected an integer"),
        (BASE, ["train.epochs=3"], "needs one {peak_lr, min_lr} entry per epoch: 1 entries for train.epochs=3"),
        (BASE, ["schedule.epochs=[{peak_lr: 1e-3}]"], "schedule.epochs[0]: missing required key(s): schedule.epochs[0].min_lr"),
        (BASE, ["train.attention=sliding"], "expected 'causal' or 'document'"),
        (BASE, ["train.parallel=zero3"], "--set train.parallel=zero3: train.parallel: expected 'ddp' or 'fsdp'"),
        (BASE, ["train.document_kernel=varlen", "train.precision=fp32"], "train.document_kernel: varlen runs flash attention, which needs train.precision=bf16"),
        (BASE, ["optimizer.betas=[0.9]"], "optimizer.betas: expected a list of 2 values"),
        (BASE, ["micro_batch"], "expected KEY=VALUE"),
        (BASE.replace("  path: /some/data\n", ""), [], "data.path: is required"),
        (BASE, ["schedule=[1, 2]"], "--set schedule=[1, 2]: schedule: expected a mapping"),
        (BASE + "schedule: [1, 2]\n", [], "r.yaml:11: not valid YAML ('schedule' is given twice)"),
        (BASE, ["model.overrides.rms_norm_eps=tiny"], "--set model.overrides.rms_norm_eps=tiny: model.overrides.rms_norm_eps: expected a number"),
        (BASE, ["model.overrides.initializer_range=-2e-2"],
         "--set model.overrides.initializer_range=-2e-2: model.overrides.initializer_range: model config: initializer_range must be a positive number, got -0.02"),
        (BASE.replace("preset: tiny", "preset: tiny\n  overrides: {hidden_size: 64}"), ["model.overrides.num_heads=3"],  # the --set, not the file's line
         "--set model.overrides.num_heads=3: model.overrides.num_heads: model config: hidden_size 64 is not divisible by num_heads 3"),
        ("? [a, b]\n: 1\n", [], "r.yaml:1: not valid YAML (a key must be a name, not a list or mapping)"),
        (BASE, ["optimizer.eps=1" + "0" * 400], "optimizer.eps: expected a finite number"),  # past float's range
        (BASE, ["model.preset=null", "model.init_from=''"], "model.init_from: is empty; give a model spec"),
        (BASE, ["model.overrides.hidden=64"], "model.overrides.hidden: not a model field"),
        (BASE, ["schedule.epochs[3].peak_lr=1"], "--set schedule.epochs[3].peak_lr=1: there is no item [3] to set (the list has 1)"),
        (BASE, ["schedule.epochs.peak_lr=1"], "'epochs' is not a section (it is a list: index it as epochs[0])"),
        ("name: [unclosed\n", [], "r.yaml:2: not valid YAML"),
        ("name: x\nmodel: &m\n  overrides: [*m]\n", [], "r.yaml:2: not valid YAML (an alias refers to a node that contains it"),
        (BASE, ["schedule.kind=wsd"], "schedule.peak_lr: the wsd schedule needs peak_lr"),
        (BASE, ["model.init_from=some/checkpoint"], "give either a model preset or model.init_from"),
        (BASE, ["model.preset=null"], "--set model.preset=null: model.preset: give either a model preset or model.init_from"),
        (BASE, ["data.seed=-1"], "--set data.seed=-1: data.seed: must not be negative, got -1"),
        (BASE, ["train.seed=-2"], "train.seed: must not be negative"),
        (BASE, ["train.seed=18446744073709551616"], "train.seed: must be below 2**63, got 18446744073709551616"),
        (BASE, ["train.device=mps"], "train.device: unknown device 'mps'; use auto, cpu, cuda or cuda:N"),
        (BASE, ["logging.peak_tflops=-5"], "logging.peak_tflops: must be a positive number of TFLOP/s"),
        # each message names where the value came from and the field itself
        (BASE, ["schedule.epochs[0].peak_lr=-1e-3"], "--set schedule.epochs[0].peak_lr=-1e-3: schedule.epochs[0].peak_lr: must be a positive number"),
        (BASE.replace("preset: tiny", "preset: huge\n  overrides: {num_layers: 2}"), [], "r.yaml:10: model.preset: unknown model preset 'huge'"),
        (BASE, ["bogus.x=1"], "--set bogus.x=1: bogus: unknown key"),
        (BASE, ["optimizer.weight_decay=-1"], "--set optimizer.weight_decay=-1: optimizer.weight_decay: must be 0 or more, got -1"),
        (BASE, ["optimizer.eps=0"], "optimizer.eps: must be positive, got 0"),
        (BASE, ["schedule.decay_fraction=0.5"], "schedule.decay_fraction: belongs to the wsd schedule (schedule.kind: wsd)"),
    ],
)
def test_bad_recipes_name_file_line_and_field(tmp_path, text, overrides, message):
    with pytest.raises(SutraError) as info:
        load_recipe(write(tmp_path, text), overrides)
    assert message in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(SutraError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["smollm2-70m-sutra.yaml", "tiny-cpu.yaml"])
def test_shipped_recipes_validate_and_round_trip(name, tmp_path):
    recipe = load_recipe(REPO / "recipes" / name)
    assert recipe.assumptions, "every recipe states its assumptions"
    # a run directory's recipe.yaml is the resolved recipe, and resuming reads it back
    (tmp_path / "resolved.yaml").write_text(recipe.to_yaml())
    assert load_recipe(tmp_path / "resolved.yaml").to_dict() == recipe.to_dict()


def test_card_recipe_matches_the_model_card():
    recipe = load_recipe(REPO / "recipes" / "smollm2-70m-sutra.yaml")
    assert recipe.model.preset == "smollm2-70m"
    assert (recipe.train.micro_batch, recipe.train.grad_accum, recipe.data.seq_len) == (4, 8, 8192)
    assert recipe.train.micro_batch * recipe.train.grad_accum * recipe.data.seq_len == 262_144
    assert [(e.peak_lr, e.min_lr) for e in recipe.schedule.epochs] == [(3e-4, 3e-5), (1e-4, 1e-5), (3e-5, 3e-6)]
    assert recipe.optimizer.weight_decay == 0.1 and recipe.optimizer.fused is True
    assert recipe.train.attention == "causal" and recipe.train.precision == "bf16" and recipe.train.compile and recipe.train.tf32


def test_card_recipe_switches_to_wsd_by_override():
    recipe = load_recipe(REPO / "recipes" / "smollm2-70m-sutra.yaml", ["schedule.kind=wsd", "schedule.peak_lr=3e-4", "schedule.min_lr=3e-6"])
    assert recipe.schedule.kind == "wsd" and recipe.schedule.peak_lr == 3e-4
