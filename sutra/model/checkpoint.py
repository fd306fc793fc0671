"""Sutra checkpoints and model specs.

A Sutra checkpoint is a directory:
    model.safetensors   weights under Sutra names (never pickled)
    sutra.json          {"format": "sutra-checkpoint", "model": <ModelConfig>, "tokenizer": {...}, ...}
    tokenizer files     a copy of the tokenizer, so the directory stands on its own

A *model spec* names a model anywhere a command takes one: a Sutra checkpoint directory, a
Hugging Face model directory, a built-in asset name (smollm2-135m-instruct), or a hub id online.
"""

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from sutra import assets
from sutra.errors import SutraError
from sutra.io import atomic_directory, atomic_write_json
from sutra.model.config import ModelConfig
from sutra.model.hf import config_from_hf, hf_to_sutra_state
from sutra.model.llama import Llama
from sutra.tokenizer import TOKENIZER_FILES, Tokenizer, load_tokenizer

FORMAT = "sutra-checkpoint"
CONFIG_FILE = "sutra.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_ASSETS = ("smollm2-135m-instruct",)


@dataclass
class LoadedModel:
    model: Llama
    tokenizer: Tokenizer
    source: str  # what the spec resolved to
    kind: str  # "sutra" or "hf"
    eos_token_ids: list[int]
    weights_sha256: str  # of the weight files as read (see weights_sha256)


def check_model_output(out, spec: str, card: bool = False, takes_card: bool = False) -> None:
    """Before reading model `spec`: refuse to write a model over anything but a model directory that
    holds only what a model write replaces (a Sutra checkpoint or a Hugging Face export; its README.md
    only when a new card comes), through a symlink (a run's `last`), or over the model `spec` names.
    The directory is swapped whole, so any other file in it (a hub clone's .git) would be lost."""
    out = Path(out)
    if out.is_symlink():
        raise SutraError(f"{out}: is a symlink (a run's checkpoint name?), so it is not replaced; write to a new directory")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not any((out / name).is_file() for name in (CONFIG_FILE, "config.json"))):
        raise SutraError(f"{out}: exists and is not a model directory, so it is not replaced; choose another output or remove it")
    if out.exists() and out.resolve() == resolve_spec(spec)[1].resolve():
        raise SutraError(f"{out}: is the model being read; write to another directory")
    for parent in out.absolute().parents:  # places whose next write or clean-up would remove this one unseen
        if any((parent / name).is_file() for name in (CONFIG_FILE, "config.json")):
            raise SutraError(f"{out}: is inside the model directory {parent}, which its next write replaces whole; write to a directory of its own")
        if parent.parent != parent and _named_from(parent.parent, parent):
            raise SutraError(f"{out}: is inside {parent}, a training run's checkpoints, which the run removes when no name points at them; "
                             "write to a directory of its own")
    replaced = {CONFIG_FILE, WEIGHTS_FILE, "config.json", "generation_config.json", *TOKENIZER_FILES} | ({"README.md"} if card else set())
    others = sorted(p.name for p in out.iterdir() if p.name not in replaced) if out.is_dir() else []
    if others:
        card_hint = "; or pass --card with the card to publish, which replaces README.md" if takes_card and others == ["README.md"] else ""
        raise SutraError(f"{out}: holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}, which a model write does not replace and "
                         f"would lose; write to a new directory (and copy the model files in) or move them away{card_hint}")


def _named_from(directory: Path, store: Path) -> bool:
    """Whether a link in `directory` points into `store` (a run's names, into its checkpoints)."""
    try:
        return any(link.is_symlink() and link.resolve().parent == store.resolve() for link in directory.iterdir())
    except OSError:  # a directory this user cannot list: no run of theirs
        return False


@contextmanager
def _uninitialised():
    """Modules built without initialising their weights, which are assigned next (as transformers'
    no_init_weights does); on the CPU, not the meta device, whose ops run Python decompositions that
    import all of torch._dynamo: seconds of the start of every command that loads a model. The
    untouched allocations cost nothing."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "ones_", "zeros_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("cpu"):
            yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def save_checkpoint(out_dir, model: Llama, tokenizer: Tokenizer, extra: dict | None = None, weights: dict | None = None) -> Path:
    """Write a checkpoint atomically: a new directory appears complete, and a replaced one is swapped
    by two renames (see sutra.io.atomic_directory). `weights` replaces `model.state_dict()` (a
    sharded model's, gathered)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in (model.state_dict() if weights is None else weights).items()}
    with atomic_directory(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save(tmp)
        atomic_write_json(
            tmp / CONFIG_FILE,
            {
                "format": FORMAT,
                "version": 1,
                "model": model.config.to_dict(),
                "tokenizer": {"fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size, "source": str(tokenizer.directory)},
                "eos_token_ids": [tokenizer.eos_id],
                **(extra or {}),
            },
        )
    return out_dir


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SutraError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SutraError(f"{path}: not valid JSON ({exc}); the checkpoint is corrupt, re-create or re-export it") from None
    if not isinstance(data, dict):
        raise SutraError(f"{path}: a JSON {type(data).__name__}, not an object; the checkpoint is corrupt, re-create or re-export it")
    return data


def _read_info(directory: Path) -> dict:
    """A Sutra checkpoint's sutra.json, with the sections every reader needs."""
    path = directory / CONFIG_FILE
    info = _read_json(path)
    if info.get("format") != FORMAT:
        raise SutraError(f"{path}: not a Sutra checkpoint (format {info.get('format')!r})")
    if not isinstance(info.get("model"), dict):
        raise SutraError(f"{path}: no 'model' section (the model's shape); the checkpoint is corrupt, re-create it")
    return info


def _read_safetensors(files: list[Path]) -> tuple[dict, str]:
    """The tensors of `files` and the sha256 of their bytes (see weights_sha256), from one read:
    the digest names exactly the weights loaded, even if a training run moves a link meanwhile."""
    import hashlib

    from safetensors.torch import load

    state, digest = {}, hashlib.sha256()
    for file in files:
        try:
            data = file.read_bytes()
            state.update(load(data))
        except FileNotFoundError:
            raise SutraError(f"{file}: missing; the checkpoint is incomplete") from None
        except OSError as exc:  # (permissions, a directory in its place): the file may be fine
            raise SutraError(f"{file}: cannot read it ({exc.strerror or exc})") from None
        except Exception as exc:  # safetensors raises SafetensorError on truncated or corrupt files
            raise SutraError(f"{file}: cannot read weights ({exc}); the file is corrupt or truncated, re-create it") from None
        digest.update(data)
    return state, digest.hexdigest()


class UnknownModelError(SutraError):
    """A model spec that names no directory, built-in model or hub id."""


def resolve_spec(spec: str) -> tuple[str, Path]:
    """('sutra' | 'hf', directory) for a model spec."""
    path = Path(spec)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return "sutra", path
        if (path / "config.json").is_file():
            return "hf", path
        checkpoints = sorted(p.name for p in path.iterdir() if p.is_symlink() and (p / CONFIG_FILE).is_file())
        if checkpoints:  # a `sutra train` run directory: its checkpoints are the models
            raise SutraError(f"{spec}: a training run, not a model; give one of its checkpoints ({', '.join(checkpoints)}), "
                             f"e.g. {path / checkpoints[0]}")
        raise SutraError(f"{spec}: neither a Sutra checkpoint ({CONFIG_FILE}) nor a Hugging Face model directory (config.json)")
    if spec in MODEL_ASSETS:
        return "hf", assets.ensure(spec)
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        what = " (a file)" if path.exists() else " (no such directory)" if spec.startswith((".", "/", "~")) or "/" in spec else ""
        raise UnknownModelError(
            f"unknown model '{spec}'{what}: give a checkpoint directory, a Hugging Face directory, "
            f"a built-in model ({', '.join(MODEL_ASSETS)}) or a hub id (owner/name)"
        )
    return "hf", _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> Path:
    from sutra.hub import hub_unreachable

    offline = hub_unreachable()  # then only a copy already in the Hugging Face cache can serve
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"], local_files_only=bool(offline)))
    except Exception as exc:
        why = f"{offline}, and it is not in the Hugging Face cache" if offline else type(exc).__name__
        raise SutraError(f"cannot fetch '{repo_id}' from the hub ({why}); offline, use a local directory or a built-in model") from None


def read_model_config(spec: str) -> ModelConfig:
    kind, directory = resolve_spec(spec)
    if kind == "sutra":
        return ModelConfig.from_dict(_read_info(directory)["model"])
    return config_from_hf(_read_json(directory / "config.json"), str(directory))


# the fields of a training record its readers compute with: (key, JSON types, what it must be)
TRAINING_FIELDS = (("step", int, "a whole number of steps, 0 or more"), ("epoch", (int, float), "a number"),
                   ("tokens", int, "a whole number"), ("val_ppl", (int, float, type(None)), "a number or null"),
                   ("val_loss", (int, float, type(None)), "a number or null"), ("recipe", str, "a name"),
                   ("resolved_recipe", dict, "a mapping of recipe sections"))


def read_training_record(spec: str) -> dict:
    """The `training` record a Sutra checkpoint carries (step, epoch, val_ppl ...), or {}; a
    hand-edited one is one error naming the field, not a traceback in the card or eval reading it."""
    kind, directory = resolve_spec(spec)
    training = _read_info(directory).get("training") if kind == "sutra" else None
    if not training:
        return {}
    problem = _training_problem(training)
    if problem:
        raise SutraError(f"{directory / CONFIG_FILE}: training{problem}; the checkpoint's record was edited: restore it, or re-create the checkpoint")
    return training


def _training_problem(training) -> str | None:
    """What is wrong with a training record, said after "training", or None."""
    if not isinstance(training, dict):
        return f" is a JSON {type(training).__name__}, not an object"
    for key, types, what in TRAINING_FIELDS:
        value = training.get(key)
        if key in training and (not isinstance(value, types) or isinstance(value, bool) or (key == "step" and value < 0)):
            return f".{key} is {value!r}, not {what}"
    return None


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, in transformers' order of preference: model.safetensors,
    else its shard index's, else model*.safetensors (not an adapter or a stray file beside them)."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():  # beside an index too: the weights transformers loads
        return [single]
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        names = set(weight_map.values()) if isinstance(weight_map, dict) else set()
        # each a file beside the index: a name with a path in it could reach outside the model's directory
        if not names or not all(isinstance(name, str) and name == Path(name).name and name.endswith(".safetensors") for name in names):
            raise SutraError(f"{index}: not a shard index (its weight_map names, for each tensor, a .safetensors file beside it); "
                             "re-create it, or remove it where model.safetensors holds the weights")
        return [directory / name for name in sorted(names)]
    return sorted(directory.glob("model*.safetensors"))


def weights_sha256(spec: str) -> str | None:
    """A digest of the model's weight files, byte for byte: which weights a results file or a card
    describes (None for a model directory without safetensors files)."""
    import hashlib

    digest = hashlib.sha256()
    files = weight_files(resolve_spec(spec)[1])
    for file in files:
        with open(file, "rb") as stream:
            while block := stream.read(1 << 22):
                digest.update(block)
    return digest.hexdigest() if files else None


# how a card `sutra card` wrote names the weights it describes, and `sutra export` checks it
WEIGHTS_MARK = "<!-- sutra card of the weights with sha256 "
WEIGHTS_MARK_PATTERN = re.compile(re.escape(WEIGHTS_MARK) + r"([0-9a-f]{64}) -->")


def weights_mark(digest: str) -> str:
    return f"{WEIGHTS_MARK}{digest} -->"


def _checkpoint_tokenizer(directory: Path, info: dict):
    """The checkpoint's own copy of its tokenizer, or (an older checkpoint without one) the source it
    names, which must still be the tokenizer the model was trained with."""
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    recorded = info.get("tokenizer") or {}
    tokenizer = load_tokenizer(recorded.get("source"))
    if recorded.get("fingerprint") not in (None, tokenizer.fingerprint):
        raise SutraError(f"{directory}: has no tokenizer.json, and the tokenizer it was trained with ({recorded.get('source') or 'the default'}) "
                         f"has changed since (fingerprint {tokenizer.fingerprint}, recorded {recorded['fingerprint']}); "
                         f"copy the original tokenizer.json into {directory}")
    return tokenizer


def load_model(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    kind, directory = resolve_spec(spec)
    if kind == "sutra":
        pinned = directory.resolve()  # a training run may move its `last` link while we read: read one step's files
        info = _read_info(pinned)
        config = ModelConfig.from_dict(info["model"])
        state, digest = _read_safetensors([pinned / WEIGHTS_FILE])
        tokenizer = _checkpoint_tokenizer(pinned, info)
        eos = info.get("eos_token_ids") or [tokenizer.eos_id]
    else:
        hf = _read_json(directory / "config.json")
        config = config_from_hf(hf, str(directory))
        files = weight_files(directory)
        if not files:
            raise SutraError(f"{directory}: no model*.safetensors weights (pickled .bin weights are not loaded, for safety)")
        state, digest = _read_safetensors(files)
        state = hf_to_sutra_state(state, config)
        tokenizer = load_tokenizer(directory)
        # every end-of-turn id the model declares: config.json's and generation_config.json's
        generation_file = directory / "generation_config.json"
        generation = _read_json(generation_file) if generation_file.is_file() else {}
        eos = []
        for declared in (hf.get("eos_token_id"), generation.get("eos_token_id")):
            for token_id in declared if isinstance(declared, list) else [declared]:
                if token_id is not None and token_id not in eos:
                    eos.append(token_id)
        eos = eos or [tokenizer.eos_id]
    if tokenizer.vocab_size > config.vocab_size:
        raise SutraError(
            f"{directory}: tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}; use the tokenizer the model was trained with"
        )
    with _uninitialised():
        model = Llama(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]  # the first line only says where
        raise SutraError(f"{directory}: weights do not match the config ({details[0] if details else exc}); the checkpoint is inconsistent") from None
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, tokenizer, str(directory), kind, [int(e) for e in eos], digest)
