"""`sutra compare EXPERIMENT.yaml`: one model and training recipe on several datasets at a fixed token
budget each, every arm evaluated on the same tasks, then the card's comparison table and a chart.

An arm is finished when its results file exists; re-running skips it. Unfinished arms reuse their
prepared data and resume their training run (see sutra.pipeline.stages).
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sutra.errors import SutraError
from sutra.pipeline.stages import banner, evaluate, reuse, sutra, train_run

ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Arm:
    name: str  # the table's row label
    dataset: str  # a prepared dataset dir, or any `sutra data prepare` source: asset name, files, hub dataset id
    tokens: str | int | None = None  # training tokens; None: the experiment's default
    prepare_args: list[str] = field(default_factory=list)  # extra `sutra data prepare` flags, e.g. [--split, train]


@dataclass
class EvalSettings:
    tasks: str = "card"
    limit: float | None = None  # lm-eval's --limit; None: every document


@dataclass
class Experiment:
    name: str
    recipe: str  # the shared training recipe, relative to the experiment file
    arms: list[Arm]
    tokens: str | int = "1B"  # training tokens per arm
    overrides: list[str] = field(default_factory=list)  # `--set` overrides applied to every arm
    eval: EvalSettings = field(default_factory=EvalSettings)
    out: str | None = None  # None: runs/compare-<name>
    source: Path = Path(".")  # the experiment file, for messages and relative paths


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise SutraError(f"{where}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls) if f.name != 'source')}")
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SutraError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise SutraError(f"{where}: {exc}") from None


def load_experiment(path: str | Path) -> Experiment:
    from sutra.data.mix import parse_tokens

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SutraError(f"{path}: experiment file not found") from None
    except yaml.YAMLError as exc:
        raise SutraError(f"{path}: not valid YAML ({exc})") from None
    experiment = _build(Experiment, raw, str(path))
    experiment.source = path
    experiment.eval = _build(EvalSettings, (raw.get("eval") or {}), f"{path}: eval")
    if not isinstance(experiment.arms, list) or not experiment.arms:
        raise SutraError(f"{path}: arms: give at least one arm (name + dataset)")
    experiment.arms = [_build(Arm, arm, f"{path}: arms[{i}]") for i, arm in enumerate(experiment.arms)]
    names = [arm.name for arm in experiment.arms]
    for i, arm in enumerate(experiment.arms):
        if not isinstance(arm.name, str) or not ARM_NAME.fullmatch(arm.name):
            raise SutraError(f"{path}: arms[{i}].name {arm.name!r}: use letters, digits, '.', '_' or '-' (it names the arm's directory)")
        if names.count(arm.name) > 1:
            raise SutraError(f"{path}: arms[{i}].name '{arm.name}' is used twice; arm names must differ")
        parse_tokens(str(arm.tokens or experiment.tokens))
    if not recipe_file(experiment).is_file():
        raise SutraError(f"{path}: recipe {experiment.recipe}: no such file (paths are relative to the experiment file)")
    return experiment


def recipe_file(experiment: Experiment) -> Path:
    return experiment.source.parent / experiment.recipe


def arm_overrides(experiment: Experiment, arm: Arm, data_path: Path) -> tuple[list[str], int]:
    """The arm's `--set` overrides (its data and the steps its token budget buys) and the recipe's epoch count."""
    from sutra.data.mix import parse_tokens
    from sutra.train.recipe import load_recipe

    overrides = [*experiment.overrides, f"data.path={data_path}", f"name={experiment.name}-{arm.name}"]
    recipe = load_recipe(recipe_file(experiment), overrides)
    tokens_per_step = recipe.train.micro_batch * recipe.train.grad_accum * recipe.data.seq_len
    steps = math.ceil(parse_tokens(str(arm.tokens or experiment.tokens)) / (tokens_per_step * recipe.train.epochs))
    return [*overrides, f"train.steps_per_epoch={steps}"], recipe.train.epochs


def prepared_dataset(arm: Arm, arm_dir: Path) -> Path:
    given = Path(arm.dataset)
    if (given / "manifest.json").is_file():
        return given
    data = arm_dir / "data"
    if not reuse(data / "manifest.json"):
        sutra("data", "prepare", arm.dataset, "--out", data, "--min-val-docs", 24, *arm.prepare_args)
    return data


def run_experiment(experiment: Experiment, out: Path | None = None) -> Path:
    out = Path(out or experiment.out or Path("runs") / f"compare-{experiment.name}")
    results = {}
    for i, arm in enumerate(experiment.arms, 1):
        arm_dir = out / "arms" / arm.name
        results[arm.name] = arm_dir / "results.json"
        banner(f"arm {i}/{len(experiment.arms)}: {arm.name} ({arm.dataset}, {arm.tokens or experiment.tokens} tokens)")
        if reuse(results[arm.name]):
            continue
        overrides, epochs = arm_overrides(experiment, arm, prepared_dataset(arm, arm_dir))
        final = train_run(recipe_file(experiment), arm_dir / "run", overrides, epochs)
        evaluate(final, results[arm.name], experiment.eval.tasks, experiment.eval.limit)
    return write_comparison(out, results)


def write_comparison(out: Path, results: dict[str, Path]) -> Path:
    from sutra.io import atomic_write_text
    from sutra.report.charts import task_bars
    from sutra.report.tables import comparison_table, load_columns

    banner("comparison")
    columns = load_columns([f"{name}={path}" for name, path in results.items()])
    table = comparison_table(columns)
    atomic_write_text(out / "comparison.md", table.markdown())
    atomic_write_text(out / "comparison.csv", table.csv())
    chart = task_bars(columns, out / "comparison.png")
    print(table.markdown(), end="")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {chart}")
    return out / "comparison.md"
