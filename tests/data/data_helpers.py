"""Shared helpers and fixtures of the data tests (import the fixtures you use; a conftest.py here would shadow tests/conftest.py)."""

import random

import numpy as np
import pytest

WORDS = (
    "the a photosynthesis energy light plant cell water cycle river ocean theorem proof number prime "
    "function variable loop python list dictionary history empire trade language grammar poem music "
    "because therefore however student learns explains example why how quickly carefully 42 3.14 é 🤗"
).split()


def make_documents(count: int, seed: int = 0, min_words: int = 5, max_words: int = 60) -> list[str]:
    """Deterministic varied documents (unicode, digits, punctuation, newlines)."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        text = " ".join(words).capitalize() + "."
        if i % 3 == 0:
            text += "\n\nSecond paragraph: " + " ".join(rng.choice(WORDS) for _ in range(8)) + "."
        docs.append(text)
    return docs


def write_token_dataset(out, tokenizer, docs_by_split: dict[str, list[str]], docs_per_shard: int = 7):
    """A prepared dataset written straight through the shard writer (no prepare run)."""
    from sutra.data.writer import ShardWriter

    writer = ShardWriter(out)
    sep = tokenizer.document_separator_id
    longest = max(len(docs) for docs in docs_by_split.values())
    for first in range(0, longest, docs_per_shard):
        for split, docs in docs_by_split.items():
            chunk = docs[first:first + docs_per_shard]
            if chunk:
                ids = [tokens + [sep] for tokens in tokenizer.encode_batch(chunk)]
                writer.add(split, np.concatenate(ids), np.array([len(x) for x in ids]))
        writer.flush()
    return writer.finish(tokenizer)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, tokenizer):
    """(directory, train documents, val documents): ~6k train tokens in several shards."""
    out = tmp_path_factory.mktemp("small_dataset")
    train, val = make_documents(120, seed=1), make_documents(12, seed=2)
    write_token_dataset(out, tokenizer, {"train": train, "val": val})
    return out, train, val
