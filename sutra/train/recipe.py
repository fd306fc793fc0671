"""Training recipes: YAML files validated into typed dataclasses before any work starts.

A recipe has sections (model, data, optimizer, schedule, train, eval, checkpoint, stability,
logging); `--set section.key=value` overrides any field with a YAML-parsed value (a list item:
`--set schedule.epochs[0].peak_lr=1e-3`). Every error
names the file and line (or the --set argument) and the dotted field.
"""

import collections.abc
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from sutra.errors import SutraError
from sutra.io import invalid_yaml

RECIPE_FILE = "recipe.yaml"  # a run directory's resolved recipe, which `sutra train --resume` reads
DATA_FILE = "data.json"  # what a run trained on, recorded at its start (a mix may be written again since)
CHECKPOINTS = "checkpoints"  # the run directory's folder of checkpoint directories (its names link into it)
LAST = "last"  # the name of the newest checkpoint, where a resumed run continues


@dataclass
class ModelSection:
    preset: str | None = None  # a name from sutra.model.config.PRESETS (or give init_from)
    overrides: dict[str, object] = field(default_factory=dict)  # ModelConfig fields changed from the preset
    init_from: str | None = None  # a model spec to continue pretraining from (its shape and tokenizer win)


@dataclass
class DataSection:
    path: str = ""  # a prepared dataset directory or a mix manifest (`sutra data prepare` / `sutra data mix`)
    seq_len: int = 1024
    seed: int = 0  # the loader's shuffling seed


@dataclass
class OptimizerSection:
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    fused: bool = True  # CPU and CUDA; only the fused kernel skips a non-finite step without a host sync
    grad_clip: float = 1.0
    # AdamW's moments and step count at each epoch's start: kept (the epochs are one run), or reset
    # (each epoch a fresh optimizer from the previous epoch's weights, as separate Trainer runs are)
    across_epochs: Literal["keep", "reset"] = "keep"


@dataclass
class EpochLR:
    peak_lr: float
    min_lr: float


@dataclass
class ScheduleSection:
    kind: Literal["cosine", "wsd"] = "cosine"
    warmup_steps: int = 0
    # cosine: one fresh warmup + cosine per epoch, from that epoch's peak to its floor
    epochs: list[EpochLR] = field(default_factory=list)
    # wsd: warmup, constant peak, then a linear decay to min_lr over the last decay_fraction of the run
    peak_lr: float | None = None
    min_lr: float = 0.0
    decay_fraction: float = 0.2


@dataclass
class TrainSection:
    epochs: int = 1
    steps_per_epoch: int | None = None  # None: one full pass over the training split
    micro_batch: int = 4  # windows per forward pass on each process
    grad_accum: int = 1  # micro-batches per optimizer step with ONE process; N processes each do grad_accum / N
    attention: Literal["causal", "document"] = "document"
    # CUDA kernel for document attention: flex (FlexAttention block mask) or varlen (PyTorch's
    # variable-length flash attention over each document; bf16 only). Other devices use SDPA.
    document_kernel: Literal["flex", "varlen"] = "flex"
    precision: Literal["bf16", "fp32"] = "bf16"
    # recompute each transformer block's activations in backward instead of keeping them: about a
    # third more compute (MFU still counts the model's FLOPs only) for longer sequences or bigger batches
    activation_checkpointing: bool = False
    tf32: bool = True
    compile: bool | None = None  # None: compile on CUDA, eager elsewhere
    device: str = "auto"  # auto, cpu, cuda
    # several processes: ddp keeps a whole copy of weights, gradients and AdamW moments on each;
    # fsdp (FSDP2) keeps 1/N of them on each, for models whose training state outgrows one GPU
    parallel: Literal["ddp", "fsdp"] = "ddp"
    seed: int = 0  # model initialisation


@dataclass
class EvalSection:
    every_steps: int = 500
    max_windows: int | None = 256  # validation windows per evaluation, spread evenly over the split; None: all of it


@dataclass
class CheckpointSection:
    every_steps: int = 1000  # the rolling `last` checkpoint; epoch ends always write one


@dataclass
class StabilitySection:
    max_bad_steps: int = 5  # consecutive non-finite steps before rolling back to `last-good`
    max_rollbacks: int = 3  # then the run stops


@dataclass
class LoggingSection:
    every_steps: int = 10
    tensorboard: bool = True
    peak_tflops: float | None = None  # the device's dense peak for MFU; None: looked up from the GPU name


@dataclass
class Recipe:
    name: str = "run"
    run_dir: str | None = None  # None: runs/<name>
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    stability: StabilitySection = field(default_factory=StabilitySection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    assumptions: dict[str, str] = field(default_factory=dict)  # values the source recipe does not state, and why
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # field -> "file:line"

    def where(self, key: str) -> str:
        """'file:line: key' (or '--set key=...: key') for error messages."""
        return where_key(self.sources, key)

    def error(self, key: str, message: str) -> SutraError:
        return SutraError(f"{self.where(key)}: {message}")

    def _typed_model_overrides(self) -> dict:
        """model.overrides as ModelConfig field values (YAML reads 1e-6 as a string), checked with the preset."""
        from sutra.model.config import ModelConfig, get_preset

        hints = typing.get_type_hints(ModelConfig)
        names = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "name"]
        typed = {}
        for name, value in self.model.overrides.items():
            key = f"model.overrides.{name}"
            if name not in names:
                raise self.error(key, f"not a model field; the fields are {', '.join(names)}")
            typed[name] = _convert(hints[name], value, key, self.sources)
        try:
            preset = get_preset(self.model.preset)
        except SutraError as exc:
            raise self.error("model.preset", str(exc)) from None
        try:
            preset.replace(**typed)
        except SutraError as exc:  # blame an override the message names, a --set one first (the last word)
            named = [f"model.overrides.{name}" for name in typed if re.search(rf"\b{name}\b", str(exc))]
            given = [key for key in named if self.sources.get(key, "").startswith("--set")]
            raise self.error((given or named or ["model.overrides"])[0], str(exc)) from None
        return typed

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or Path("runs") / self.name).expanduser()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("sources")
        data["optimizer"]["betas"] = list(self.optimizer.betas)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "Recipe":
        """Checks that need no files: ranges and cross-field consistency."""
        positive_ints = {
            "data.seq_len": self.data.seq_len, "train.epochs": self.train.epochs, "train.micro_batch": self.train.micro_batch,
            "train.grad_accum": self.train.grad_accum, "eval.every_steps": self.eval.every_steps,
            "checkpoint.every_steps": self.checkpoint.every_steps, "stability.max_bad_steps": self.stability.max_bad_steps,
            "logging.every_steps": self.logging.every_steps,
        }
        for key, value in positive_ints.items():
            if value < 1:
                raise self.error(key, f"must be at least 1, got {value}")
        for key, value in {"train.steps_per_epoch": self.train.steps_per_epoch, "eval.max_windows": self.eval.max_windows}.items():
            if value is not None and value < 1:
                raise self.error(key, f"must be at least 1 (or null), got {value}")
        non_negative = {"schedule.warmup_steps": self.schedule.warmup_steps, "stability.max_rollbacks": self.stability.max_rollbacks,
                        "data.seed": self.data.seed, "train.seed": self.train.seed}
        for key, value in non_negative.items():
            if value < 0:
                raise self.error(key, f"must not be negative, got {value}")
        for key, value in {"data.seed": self.data.seed, "train.seed": self.train.seed}.items():
            if value >= 2**63:  # what torch.manual_seed and numpy's generators take
                raise self.error(key, f"must be below 2**63, got {value}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.train.device):
            raise self.error("train.device", f"unknown device {self.train.device!r}; use auto, cpu, cuda or cuda:N")
        if self.logging.peak_tflops is not None and not self.logging.peak_tflops > 0:
            raise self.error("logging.peak_tflops", f"must be a positive number of TFLOP/s (or null to look it up), got {self.logging.peak_tflops}")
        if not self.data.path:
            raise self.error("data.path", "is required: a prepared dataset directory (see `sutra data prepare`)")
        if (self.model.preset is None) == (self.model.init_from is None):
            raise self.error("model.preset", "give either a model preset or model.init_from (whose shape and tokenizer are used)")
        if self.model.init_from is not None and not self.model.init_from.strip():
            raise self.error("model.init_from", "is empty; give a model spec (a checkpoint or Hugging Face directory, a built-in name, a hub id)")
        if self.model.init_from is not None and self.model.overrides:
            raise self.error("model.overrides", "cannot change the shape of the model.init_from weights")
        if self.model.preset is not None:
            self.model.overrides = self._typed_model_overrides()
        if self.train.document_kernel == "varlen" and self.train.precision != "bf16":
            raise self.error("train.document_kernel", "varlen runs flash attention, which needs train.precision=bf16; use flex with fp32")
        if not self.optimizer.grad_clip > 0:
            raise self.error("optimizer.grad_clip", f"must be positive, got {self.optimizer.grad_clip}")
        if not self.optimizer.weight_decay >= 0:
            raise self.error("optimizer.weight_decay", f"must be 0 or more, got {self.optimizer.weight_decay}")
        if not self.optimizer.eps > 0:
            raise self.error("optimizer.eps", f"must be positive, got {self.optimizer.eps}")
        if not all(0 <= b < 1 for b in self.optimizer.betas):
            raise self.error("optimizer.betas", f"each beta must be in [0, 1), got {list(self.optimizer.betas)}")
        self._validate_schedule()
        return self

    def _validate_schedule(self) -> None:
        s = self.schedule
        if s.kind == "cosine":
            if len(s.epochs) != self.train.epochs:
                raise self.error(
                    "schedule.epochs", f"the cosine schedule needs one {{peak_lr, min_lr}} entry per epoch: "
                    f"{len(s.epochs)} entries for train.epochs={self.train.epochs}"
                )
            for name in ("peak_lr", "min_lr", "decay_fraction"):  # a resolved recipe holds their defaults
                if getattr(s, name) != getattr(ScheduleSection(), name):
                    raise self.error(f"schedule.{name}", "belongs to the wsd schedule (schedule.kind: wsd); the cosine schedule "
                                     "takes each epoch's schedule.epochs[i].peak_lr and min_lr")
            bounds = [(f"schedule.epochs[{i}].", e.peak_lr, e.min_lr) for i, e in enumerate(s.epochs)]
        else:
            if s.peak_lr is None:
                raise self.error("schedule.peak_lr", "the wsd schedule needs peak_lr")
            if not 0 < s.decay_fraction <= 1:
                raise self.error("schedule.decay_fraction", f"must be in (0, 1], got {s.decay_fraction}")
            bounds = [("schedule.", s.peak_lr, s.min_lr)]
        for prefix, peak, floor in bounds:
            if not (math.isfinite(peak) and peak > 0):
                raise self.error(f"{prefix}peak_lr", f"must be a positive number, got {peak}")
            if not 0 <= floor <= peak:
                raise self.error(f"{prefix}min_lr", f"must be between 0 and peak_lr ({peak}), got {floor}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, whose keys this mapping may override
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a name, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_recipe(path: str | Path, overrides: typing.Sequence[str | tuple[str, object, str]] = ()) -> Recipe:
    """Read, override and validate a recipe; raises SutraError naming file, line and field.

    An override is "KEY=VALUE" (a --set argument: VALUE is YAML) or (KEY, value, label) from another
    option, whose value is used as it is and whose label names it in messages."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SutraError(f"{path}: recipe not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SutraError(f"{path}: cannot read recipe ({exc})") from None
    raw, lines = parse_yaml(path, text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SutraError(f"{path}: a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    sources = {key: f"{path}:{line}" for key, line in lines.items()}
    sources[""] = str(path)
    for item in overrides:
        key, value, label = item if isinstance(item, tuple) else (*_parse_override(item), f"--set {item}")
        _set_dotted(raw, key, value, label)
        for replaced in [k for k in sources if k.startswith((f"{key}.", f"{key}["))]:
            del sources[replaced]  # the file's lines no longer describe what is under `key`
        sources[key] = label
    recipe = build_dataclass(Recipe, raw, "", sources)
    recipe.sources = sources
    return recipe.validate()


def _parse_override(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise SutraError(f"--set {item}: expected KEY=VALUE, e.g. --set train.micro_batch=2")
    if not value.strip():  # `--set run_dir=$RUN` with RUN unset: the default run_dir, silently
        raise SutraError(f"--set {item}: an empty value (an unset shell variable?); give one, or {key.strip()}=null for none")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise SutraError(f"--set {item}: the value is not valid YAML") from None


def _set_dotted(raw: dict, key: str, value, label: str) -> None:
    """Set `key` (section.field, with [i] for a list item: schedule.epochs[0].peak_lr) in `raw`."""
    path = []
    for part in key.split("."):
        match = re.fullmatch(r"([A-Za-z_]\w*)((?:\[\d+\])*)", part)
        if not match:
            raise SutraError(f"{label}: '{part}' is not a field name (KEY is section.field, with [i] for a list item)")
        path += [match.group(1), *map(int, re.findall(r"\d+", match.group(2)))]
    node = raw
    for step, following in zip(path[:-1], path[1:]):
        if isinstance(step, int):
            if not (isinstance(node, list) and step < len(node)):
                raise SutraError(f"{label}: there is no item [{step}] to set (the list has {len(node) if isinstance(node, list) else 0})")
            child = node[step]
        else:
            if not isinstance(node, dict):
                raise SutraError(f"{label}: '{step}' is inside a value, not a section")
            child = node.get(step)
            if child is None:  # a missing or empty section
                child = node[step] = {} if isinstance(following, str) else []
        if isinstance(following, int) and not isinstance(child, list):
            raise SutraError(f"{label}: '{step}' is not a list")
        if isinstance(following, str) and not isinstance(child, dict):
            raise SutraError(f"{label}: '{step}' is not a section" + (f" (it is a list: index it as {step}[0])" if isinstance(child, list) else ""))
        node = child
    last = path[-1]
    if isinstance(last, int):
        if last >= len(node):
            raise SutraError(f"{label}: there is no item [{last}] to set (the list has {len(node)})")
    node[last] = value


# sections a resumed run may change: they decide when to evaluate, checkpoint, log or roll back, not what is trained
# (and data.path, for the same data moved: the data positions restored check the data is the same;
# train.parallel, which changes where the state is kept, as the process count does, not the state,
# and train.activation_checkpointing, which trades memory for time and computes the same values).
# Not eval.max_windows: perplexities on other windows would be compared to pick e{N}-best.
RESUME_MAY_CHANGE = ("name", "run_dir", "assumptions", "data.path", "train.parallel", "train.activation_checkpointing",
                     "eval.every_steps", "checkpoint.", "logging.", "stability.")


def flat_recipe(data: dict, prefix: str = "") -> dict:
    """{"schedule.epochs[0].peak_lr": 0.0003, ...}: a recipe's values by the keys its messages use."""
    flat = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and value:
            flat |= flat_recipe(value, key)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                flat |= flat_recipe(item, f"{key}[{index}]")
        else:
            flat[key] = value
    return flat


def recipe_differences(now: dict, then: dict) -> list[str]:
    """The keys of two flat recipes whose values differ, `now`'s order first."""
    return [key for key in [*now, *(k for k in then if k not in now)] if now.get(key) != then.get(key)]


def parse_yaml(path: Path, text: str) -> tuple[object, dict[str, int]]:
    """The settings in `text` and the line of each dotted key; a key given twice in one mapping or
    invalid YAML is a SutraError naming the file and line."""
    try:
        lines = yaml_key_lines(yaml.compose(text))  # first: it refuses a recursive alias
        return yaml.load(text, Loader=_UniqueKeyLoader), lines
    except (yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise invalid_yaml(path, exc) from None


def yaml_key_lines(node, prefix: str = "", _within: tuple = ()) -> dict[str, int]:
    """Dotted key -> 1-based line of that key in the YAML text. An alias to a node that holds it
    (`a: &x [*x]`) is refused as a YAML error: no setting is infinitely deep."""
    if any(node is outer for outer in _within):
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it (a recursive structure)", node.start_mark)
    lines, within = {}, (*_within, node)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(yaml_key_lines(value_node, key + ".", within))
    elif isinstance(node, yaml.SequenceNode):
        base = prefix[:-1]
        for i, item in enumerate(node.value):
            lines[f"{base}[{i}]"] = item.start_mark.line + 1
            lines.update(yaml_key_lines(item, f"{base}[{i}].", within))
    return lines


def where_key(sources: dict, key: str) -> str:
    """The source of `key`, or of its nearest section that has one, for error messages."""
    deeper = [k for k in sources if k.startswith((f"{key}.", f"{key}["))]
    if key not in sources and deeper:  # e.g. an unknown section that only a --set gave
        return f"{sources[deeper[0]]}: {key}"
    probe = key
    while probe and probe not in sources:
        probe = re.sub(r"(\.?[^.\[]*|\[\d+\])$", "", probe)  # drop the last ".key" or "[i]"
    source = sources.get(probe) or sources.get("")
    return f"{source}: {key}" if source else key


def build_dataclass(cls, raw, key: str, sources: dict):
    if raw is None:  # an empty section: all defaults
        raw = {}
    if not isinstance(raw, dict):
        raise SutraError(f"{where_key(sources, key or '(top level)')}: expected a mapping of {cls.__name__} fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "sources"]
    unknown = [k for k in raw if k not in names]
    if unknown:
        bad = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise SutraError(f"{where_key(sources, bad)}: unknown key; known keys here: {', '.join(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw]
    if required:
        missing = ", ".join(f"{key}.{name}" if key else name for name in required)
        raise SutraError(f"{where_key(sources, key or '(top level)')}: missing required key(s): {missing}")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _convert(hints[name], raw[name], f"{key}.{name}" if key else name, sources)
    return cls(**values)


def _convert(hint, value, key: str, sources: dict):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    fail = lambda expected: SutraError(f"{where_key(sources, key)}: expected {expected}, got {value!r}")  # noqa: E731
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, sources)
    if origin is Literal:
        if value not in args:
            raise fail(" or ".join(repr(a) for a in args))
        return value
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key, sources)
    if origin is list:
        if not isinstance(value, list):
            raise fail("a list")
        return [_convert(args[0], v, f"{key}[{i}]", sources) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise fail(f"a list of {len(args)} values")
        return tuple(_convert(a, v, f"{key}[{i}]", sources) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return {str(k): (_convert(args[1], v, f"{key}.{k}", sources) if args[1] is not object else v) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if hint is float:
        # YAML reads 3e-4 (no dot) as a string; accept what float() accepts, but not bools
        if isinstance(value, bool):
            raise fail("a number")
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range
            raise fail("a finite number") from None
        except (TypeError, ValueError):
            raise fail("a number") from None
        if not math.isfinite(number):
            raise fail("a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise TypeError(f"unsupported recipe field type {hint}")
