"""Helpers and fixtures of the trainer tests: a tiny prepared dataset (real SmolLM2 tokens of Python stdlib
docstrings) and micro recipes. Import the fixtures you use; a conftest.py here would shadow tests/conftest.py."""

import inspect
import importlib
from pathlib import Path

import numpy as np
import pytest
import yaml

STDLIB_MODULES = ("collections", "json", "pathlib", "itertools", "functools", "argparse", "re", "string", "textwrap", "statistics", "fractions", "decimal", "datetime", "heapq", "bisect")

# A model small enough for many steps a second on 2 CPU cores (the vocabulary stays SmolLM2's).
MICRO_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "max_seq_len": 256}


def stdlib_documents() -> list[str]:
    docs = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) and not _.startswith("_") else None
            if doc and len(doc) > 80:
                docs.append(doc)
    return list(dict.fromkeys(docs))


def write_dataset(directory: Path, tokenizer, documents: list[str], val_every: int = 10) -> Path:
    """A prepared dataset in the data package's on-disk format: every `val_every`-th document is validation."""
    from sutra.data.shards import shard_name, write_manifest, write_shard

    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": []}
    for i, text in enumerate(documents):
        splits["val" if i % val_every == 0 else "train"].append(tokenizer.encode(text) + [tokenizer.document_separator_id])
    manifest_splits = {}
    for split, docs in splits.items():
        tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.uint16)
        entry = write_shard(directory, shard_name(split, 0), tokens, np.cumsum([len(d) for d in docs]))
        manifest_splits[split] = {"tokens": entry["tokens"], "documents": entry["documents"], "shards": [entry]}
    write_manifest(directory, {"vocab_size": tokenizer.vocab_size, "tokenizer_fingerprint": tokenizer.fingerprint, "splits": manifest_splits})
    return directory


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tokenizer) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "stdlib-docstrings", tokenizer, stdlib_documents())


def micro_recipe(dataset: Path, run_dir: Path, **sections) -> dict:
    """A recipe dict for the micro model: seq 32, 2 x 2 windows per step, two epochs of 8 steps."""
    recipe = {
        "name": "micro",
        "run_dir": str(run_dir),
        "model": {"preset": "tiny", "overrides": dict(MICRO_MODEL)},
        "data": {"path": str(dataset), "seq_len": 32, "seed": 1},
        "optimizer": {"weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"kind": "cosine", "warmup_steps": 2, "epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}, {"peak_lr": 3e-3, "min_lr": 3e-4}]},
        "train": {"epochs": 2, "steps_per_epoch": 8, "micro_batch": 2, "grad_accum": 2, "attention": "document", "precision": "fp32", "compile": False, "device": "cpu"},
        "eval": {"every_steps": 4, "max_windows": 8},
        "checkpoint": {"every_steps": 3},
        "logging": {"every_steps": 1, "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe[section] = {**recipe.get(section, {}), **values}
        else:
            recipe[section] = values
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
