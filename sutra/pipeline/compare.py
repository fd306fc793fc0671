"""`sutra compare EXPERIMENT.yaml`: one model and training recipe on several datasets at a fixed token
budget each, every arm evaluated on the same tasks, then the card's comparison table and a chart.

A re-run reuses every stage of an arm finished with the same settings, resumes an unfinished
training run, and stops with a clear message where the experiment file changed what a finished
stage was made with (see sutra.pipeline.stages.StageLog).
"""

import glob
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from sutra.data.sources import CORPORA, spec_kind
from sutra.errors import SutraError
from sutra.pipeline.stages import StageLog, banner, evaluate, file_digest, train_run
from sutra.processes import exclusive

ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SET_BY_COMPARE = ("data.path", "name", "run_dir", "train.steps_per_epoch")  # each arm's own, set last in arm_plan


@dataclass
class Arm:
    name: str  # the table's row label
    dataset: str  # a prepared dataset dir, or any `sutra data prepare` source: asset name, files, hub dataset id
    tokens: str | None = None  # training tokens, e.g. "1B" or "2K"; None: the experiment's default
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
    tokens: str = "1B"  # training tokens per arm
    overrides: list[str] = field(default_factory=list)  # `--set` overrides applied to every arm
    eval: EvalSettings = field(default_factory=EvalSettings)
    out: str | None = None  # None: runs/compare-<name>
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # field -> "file:line"; "" -> the file


def load_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment file before any arm starts; errors name the file, line and field."""
    from sutra.data.mix import parse_tokens
    from sutra.eval.tasks import parse_limit, parse_tasks
    from sutra.train.recipe import build_dataclass, parse_yaml, where_key  # the recipe loader's typed YAML-to-dataclass builder

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SutraError(f"{path}: cannot read the experiment file ({getattr(exc, 'strerror', None) or exc})") from None
    raw, lines = parse_yaml(path, text)
    sources = {key: f"{path}:{line}" for key, line in lines.items()} | {"": str(path)}
    # a bare YAML number is a token count too (`tokens: 1000000`, as parse_tokens's own message suggests),
    # and a command-line word (`prepare_args: [--min-quality, 70]`)
    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    for holder in [raw, *(raw.get("arms") if isinstance(raw, dict) and isinstance(raw.get("arms"), list) else [])]:
        if isinstance(holder, dict) and is_number(holder.get("tokens")):
            holder["tokens"] = str(holder["tokens"])
        if isinstance(holder, dict) and isinstance(holder.get("prepare_args"), list):
            holder["prepare_args"] = [str(arg) if is_number(arg) else arg for arg in holder["prepare_args"]]
    experiment = build_dataclass(Experiment, raw, "", sources)
    experiment.sources = sources
    if not experiment.arms:
        raise SutraError(f"{where_key(sources, 'arms')}: give at least one arm (name + dataset)")
    if not ARM_NAME.fullmatch(experiment.name):
        raise SutraError(f"{where_key(sources, 'name')}: '{experiment.name}' must use only letters, digits, '.', '_' or '-' "
                         "(it names the default output directory, runs/compare-NAME)")
    for item in experiment.overrides:
        key = item.split("=", 1)[0].strip()
        if key in SET_BY_COMPARE:
            raise SutraError(f"{where_key(sources, 'overrides')}: {item}: compare sets {key} for each arm "
                             "(its data, name, run directory and the steps its token budget buys); leave it out")
    names = [arm.name for arm in experiment.arms]
    for i, arm in enumerate(experiment.arms):
        if not ARM_NAME.fullmatch(arm.name) or names.count(arm.name) > 1:
            raise SutraError(f"{where_key(sources, f'arms[{i}].name')}: '{arm.name}' must be unique and use only letters, digits, '.', '_' "
                             "or '-' (it names the arm's directory)")
        try:
            parse_tokens(arm.tokens or experiment.tokens)
        except SutraError as exc:
            raise SutraError(f"{where_key(sources, f'arms[{i}].tokens' if arm.tokens else 'tokens')}: {exc}") from None
    if not recipe_file(experiment).is_file():
        raise SutraError(f"{where_key(sources, 'recipe')}: {recipe_file(experiment)}: no such file (paths are relative to the experiment file)")
    for i, arm in enumerate(experiment.arms):  # every arm's data is found before the first arm trains for hours
        dataset = arm_dataset(experiment, arm)
        if spec_kind(dataset) == "glob" and not glob.glob(dataset, recursive=True):
            raise SutraError(f"{where_key(sources, f'arms[{i}].dataset')}: {arm.dataset}: the pattern matches no files "
                             "(patterns are relative to the experiment file)")
        if spec_kind(dataset) is None:
            raise SutraError(f"{where_key(sources, f'arms[{i}].dataset')}: {arm.dataset}: no such file or directory (paths are relative to the "
                             f"experiment file), nor a corpus asset ({', '.join(CORPORA)}), nor a hub dataset id like 'owner/name'")
        if arm.prepare_args and (Path(dataset) / "manifest.json").is_file():
            raise SutraError(f"{where_key(sources, f'arms[{i}].prepare_args')}: {arm.dataset} is prepared already, so these flags would "
                             "change nothing; leave them out, or give the arm the data to prepare")
        if any(arg == "--out" or arg.startswith("--out=") for arg in arm.prepare_args):
            raise SutraError(f"{where_key(sources, f'arms[{i}].prepare_args')}: --out: compare prepares each arm's data into its own "
                             "directory (OUT/arms/NAME/data); leave it out")
        if problem := prepare_args_problem(arm):
            raise SutraError(f"{where_key(sources, f'arms[{i}].prepare_args')}: {problem}")
    # the recipe with the experiment's overrides, checked before any arm prepares its data (hours for a hub dataset)
    try:
        for arm in experiment.arms:
            arm_plan(experiment, arm, Path(arm_dataset(experiment, arm)))
    except SutraError as exc:
        raise SutraError(f"{where_key(sources, 'overrides' if experiment.overrides else 'recipe')}: {exc}") from None
    # checked now, not after hours of training
    try:
        parse_tasks(experiment.eval.tasks)
    except SutraError as exc:
        raise SutraError(f"{where_key(sources, 'eval.tasks')}: {exc}") from None
    if experiment.eval.limit is not None:  # `limit: 2` is 2 documents, as lm-eval counts them
        experiment.eval.limit = parse_limit(str(experiment.eval.limit), f"{where_key(sources, 'eval.limit')}:")
    return experiment


def recipe_file(experiment: Experiment) -> Path:
    return Path(experiment.sources[""]).parent / experiment.recipe


def prepare_command(arm: Arm, dataset: str, data_dir: Path | str) -> tuple:
    """The arm's `sutra data prepare` arguments: its own flags, and about 24 validation documents
    unless it sets --min-val-docs itself."""
    sets_min_val = any(len(flag := arg.split("=", 1)[0]) > 2 and "--min-val-docs".startswith(flag) for arg in arm.prepare_args)  # (or a prefix, as argparse takes)
    return ("data", "prepare", dataset, "--out", data_dir, *(() if sets_min_val else ("--min-val-docs", 24)), *arm.prepare_args)


def prepare_args_problem(arm: Arm) -> str | None:
    """What `sutra data prepare` would refuse in the arm's flags, found now rather than when the
    arm's turn comes, after the arms before it have trained."""
    import contextlib
    import io

    from sutra.cli import build_parser
    from sutra.data.filters import Filters

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(list(map(str, prepare_command(arm, "SOURCE", "OUT"))))
        Filters.from_args(args.min_quality, args.domains, args.content_types, args.complexity, args.where)
    except SystemExit:  # argparse's usage error, whose last line says what is wrong (or -h's help, on stdout)
        lines = said.getvalue().strip().splitlines()
        return re.sub(r"^sutra: error: (.*?)(; see `sutra data prepare --help`)?$", r"\1", lines[-1]) if lines else "-h/--help shows prepare's help; leave it out"
    except SutraError as exc:
        return str(exc)
    return None


def arm_dataset(experiment: Experiment, arm: Arm) -> str:
    """The arm's dataset as `sutra data prepare` takes it: a path or glob relative to the experiment
    file (as `recipe` is; else to the working directory), or a corpus asset or hub id as given."""
    if Path(arm.dataset).is_absolute():
        return arm.dataset
    beside = Path(experiment.sources[""]).parent.absolute() / arm.dataset
    found = glob.glob(str(beside), recursive=True) if spec_kind(arm.dataset) == "glob" else beside.exists()
    return str(beside) if found else arm.dataset


def arm_plan(experiment: Experiment, arm: Arm, data_path: Path):
    """The arm's `--set` overrides (its data and the steps its token budget buys), its recipe and those steps per epoch."""
    from sutra.data.mix import parse_tokens
    from sutra.train.recipe import load_recipe

    overrides = [*experiment.overrides, f"data.path={data_path}", f"name={experiment.name}-{arm.name}"]
    recipe = load_recipe(recipe_file(experiment), overrides)
    tokens_per_step = recipe.train.micro_batch * recipe.train.grad_accum * recipe.data.seq_len
    steps = math.ceil(parse_tokens(arm.tokens or experiment.tokens) / (tokens_per_step * recipe.train.epochs))
    return [*overrides, f"train.steps_per_epoch={steps}"], recipe, steps


def check_budget(experiment: Experiment, index: int, data: Path, recipe, steps: int) -> None:
    """The arm's token budget must fit one pass over its prepared data per epoch (said of the budget, not
    of the train.steps_per_epoch it becomes)."""
    from sutra.data.loader import TokenLoader
    from sutra.train.recipe import where_key

    t, arm = recipe.train, experiment.arms[index]
    full_pass = TokenLoader(data, "train", recipe.data.seq_len, t.micro_batch).windows_per_epoch // (t.micro_batch * t.grad_accum)
    if steps > full_pass:
        per_step = t.micro_batch * t.grad_accum * recipe.data.seq_len
        raise SutraError(f"{where_key(experiment.sources, f'arms[{index}].tokens' if arm.tokens else 'tokens')}: {arm.tokens or experiment.tokens} tokens "
                         f"over {t.epochs} epoch(s) need {steps} steps of {per_step:,} tokens per epoch, but one pass over {data} gives {full_pass} "
                         f"({full_pass * per_step:,} tokens); lower the budget or give the arm more data")


def prepared_dataset(log: StageLog, arm: Arm, dataset: str, arm_dir: Path) -> tuple[Path, tuple[str, ...]]:
    """The arm's prepared dataset and the stage that made it (for an already prepared directory, its
    recorded fingerprint: preparing it again must not leave the arm's old training reused)."""
    given = Path(dataset)
    if (given / "manifest.json").is_file():
        log.source(f"{arm.name}/data", given, file_digest(given / "manifest.json"))  # shard digests: changes with the tokens
        return given, (f"{arm.name}/data",)
    args = prepare_command(arm, dataset, arm_dir / "data")
    # (prepare checks its inputs against the recipe of its output: edited or added files are refused, not reused)
    log.command(f"{arm.name}/data", arm_dir / "data", args, rerun_to_check=True)
    return arm_dir / "data", (f"{arm.name}/data",)


def run_experiment(experiment: Experiment, out: Path | None = None) -> Path:
    out = Path(out or experiment.out or Path("runs") / f"compare-{experiment.name}").absolute()
    with exclusive(out, "compare"):
        log = StageLog(out)
        results, trained = {}, {}
        for i, arm in enumerate(experiment.arms, 1):
            arm_dir = out / "arms" / arm.name
            results[arm.name] = arm_dir / "results.json"
            banner(f"arm {i}/{len(experiment.arms)}: {arm.name} ({arm.dataset}, {arm.tokens or experiment.tokens} tokens)")
            data, data_stage = prepared_dataset(log, arm, arm_dataset(experiment, arm), arm_dir)
            overrides, recipe, steps = arm_plan(experiment, arm, data)
            check_budget(experiment, i - 1, data, recipe, steps)
            final = train_run(log, f"{arm.name}/run", recipe_file(experiment), arm_dir / "run", overrides, data_stage, recipe.train.epochs)
            evaluate(log, f"{arm.name}/results", final, results[arm.name], experiment.eval.tasks, experiment.eval.limit, (f"{arm.name}/run",))
            trained[arm.name] = final
        return write_comparison(out, results, trained)


def write_comparison(out: Path, results: dict[str, Path], trained: dict[str, Path]) -> Path:
    from sutra.io import atomic_write_text
    from sutra.report.charts import task_bars
    from sutra.report.tables import comparison_table, load_columns

    banner("comparison")
    columns = load_columns([f"{name}={path}" for name, path in results.items()])
    table = comparison_table(columns)
    from sutra.model.checkpoint import read_training_record

    tokens = {name: read_training_record(str(final)).get("tokens") for name, final in trained.items()}
    table.notes.append("Tokens trained (each budget rounded up to whole steps): "
                       + ", ".join(f"{name} {count:,}" if count else f"{name} not recorded" for name, count in tokens.items()) + ".")
    atomic_write_text(out / "comparison.md", table.markdown())
    atomic_write_text(out / "comparison.csv", table.csv())
    chart = task_bars(columns, out / "comparison.png")
    print(table.markdown(), end="")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {chart}")
    return out / "comparison.md"
