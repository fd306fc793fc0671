"""`sutra data mix`: a weighted mixture and/or a fixed token budget over prepared datasets.

The result is a small JSON manifest; the loader maps it onto the datasets' shards, so no token
is copied. Each component takes exactly its share of the total: whole passes over its train
split if the share is larger than the dataset, then evenly strided blocks (see
stream.select_ranges), so a smaller share samples the whole dataset, not its beginning.
"""

import itertools
import math
import os
import re
from decimal import Decimal
from pathlib import Path

from sutra.data.shards import read_manifest
from sutra.data.stream import MIX_FORMAT, MIX_VERSION, select_ranges
from sutra.errors import SutraError
from sutra.io import atomic_write_json, check_replaceable, json_format

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


MAX_REPEATS = 10_000  # passes over one dataset a mix may ask for


def parse_tokens(text: str) -> int:
    match = re.fullmatch(r"\s*([\d_.]+)\s*([KMBGT]?)\s*", text.upper())
    try:  # decimal, not float: 8.2 * 10**6 is 8199999.999999999 in floating point
        value = int(Decimal(match.group(1).replace("_", "")) * SUFFIXES[match.group(2)]) if match else 0
    except ArithmeticError:  # decimal.InvalidOperation: '1.2.3', '.'
        value = 0
    if value <= 0:
        raise SutraError(f"'{text}': expected a positive token count such as 1B, 250M, 20K or 1000000")
    return value


def parse_component(text: str) -> tuple[Path, float | None]:
    """DIR or DIR=WEIGHT (weights are relative: 50/30/20 and 0.5/0.3/0.2 mean the same)."""
    path, sep, weight = text.rpartition("=") if "=" in text else (text, "", "")
    if not sep:
        return Path(text), None
    try:
        value = float(weight)
    except ValueError:
        raise SutraError(f"'{text}': expected DIR=WEIGHT with a number after '='") from None
    if not (math.isfinite(value) and value > 0):
        raise SutraError(f"'{text}': weights must be positive numbers")
    return Path(path), value


def split_budget(available: list[int], shares: list[float], tokens: int | None) -> list[int]:
    """Tokens per dataset: exactly `tokens` in these shares (rounded down, the rest to the largest
    remainders), or without a budget as much as possible without repeating any dataset."""
    if tokens is None:
        most = min(n / s for n, s in zip(available, shares))
        # a dataset that sets the limit (to float error) is taken whole: int(most * s) can fall a token short of it
        return [n if n / s <= most * (1 + 1e-12) else int(most * s) for s, n in zip(shares, available)]
    budgets = [int(tokens * s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: tokens * shares[i] - budgets[i], reverse=True)
    for i in by_remainder[: tokens - sum(budgets)]:
        budgets[i] += 1
    return budgets


def _check_splits_agree(paths: list[Path], manifests: list[dict]) -> None:
    """Datasets prepared from a shared input (a corpus and a filtered part of it, say) must hold
    out the same documents: the split is by each document's hash against the validation share,
    so with different shares one's validation documents are the other's training documents."""
    def inputs(manifest):
        return {entry.get("path") for entry in manifest.get("recipe", {}).get("inputs", [])} - {None}

    for i, j in itertools.combinations(range(len(paths)), 2):
        shared = inputs(manifests[i]) & inputs(manifests[j])
        shares = manifests[i].get("val_fraction"), manifests[j].get("val_fraction")
        if not shared or None in shares or shares[0] == shares[1]:
            continue  # datasets prepared before their manifest recorded the share are not checked
        wide, narrow = (i, j) if shares[0] > shares[1] else (j, i)
        wide_share, narrow_share = manifests[wide]["val_fraction"], manifests[narrow]["val_fraction"]
        val_docs = manifests[wide].get("splits", {}).get("val", {}).get("documents")
        left = f" (it holds {val_docs:,} now: about {val_docs * narrow_share / wide_share:.0f} would be left)" if isinstance(val_docs, int) else ""
        raise SutraError(
            f"{paths[i]} and {paths[j]} were prepared from the same input ({min(shared)}) with different validation shares "
            f"({shares[0]:.4f} and {shares[1]:.4f}), so documents one holds out for validation are training documents of the "
            f"other. Re-prepare one so both split alike: `sutra data prepare ... --out {paths[narrow]} --val-fraction {wide_share!r} "
            f"--min-val-docs 0 --overwrite` (holding out {wide_share:.1%} of it), or `... --out {paths[wide]} --val-fraction "
            f"{narrow_share!r} --min-val-docs 0 --overwrite` (fewer validation documents{left})")


def make_mix(components: list[str], out: Path, tokens: int | None = None, block_tokens: int = 1 << 20) -> dict:
    """Write a mix manifest to `out` and return it."""
    if not components:
        raise SutraError("name at least one prepared dataset (DIR or DIR=WEIGHT)")
    parsed = [parse_component(c) for c in components]
    seen = {}
    for path, _ in parsed:  # twice is a slip for another dataset, not a weight (which would be the sum)
        if seen.setdefault(path.resolve(), path) is not path:
            raise SutraError(f"{path} is named twice (also as {seen[path.resolve()]}); name each dataset once, with its whole weight")
    weights = [w for _, w in parsed]
    if any(w is None for w in weights) and any(w is not None for w in weights):
        raise SutraError("give a weight to every dataset (DIR=WEIGHT) or to none (then each counts by its size)")
    manifests = [read_manifest(path) for path, _ in parsed]
    fingerprints = {m["tokenizer_fingerprint"] for m in manifests}
    if len(fingerprints) > 1:
        which = "; ".join(f"{path}: {m['tokenizer_fingerprint']}" for (path, _), m in zip(parsed, manifests))
        raise SutraError(f"the datasets were tokenized with different tokenizers ({which}); re-prepare them with one")
    _check_splits_agree([path for path, _ in parsed], manifests)
    available = [m["splits"]["train"]["tokens"] for m in manifests]
    if weights[0] is None:
        weights = [float(n) for n in available]
    top = max(weights)
    relative = [w / top for w in weights]  # first: weights near the float limit would sum to infinity
    shares = [w / sum(relative) for w in relative]
    budgets = split_budget(available, shares, tokens)
    heaviest = max(range(len(budgets)), key=lambda i: budgets[i] / max(available[i], 1))
    repeats = budgets[heaviest] / max(available[heaviest], 1)
    if repeats > MAX_REPEATS:  # a slip of the suffix (1000T for 1000M), not a mix: each pass is a manifest entry
        raise SutraError(f"--tokens {tokens:,} would repeat {parsed[heaviest][0]} {repeats:,.0f} times (at most {MAX_REPEATS:,}); give a smaller --tokens")
    if 0 in budgets:
        starved = parsed[budgets.index(0)][0]
        if tokens is None:
            raise SutraError(f"the weight of {starved} is too small to give it any of the {sum(budgets):,} tokens this mix holds without repeating a dataset; raise it")
        raise SutraError(f"a budget of {tokens:,} tokens leaves {starved} none; give a larger --tokens")
    total = sum(budgets)
    out = Path(out)
    if out.is_dir():
        raise SutraError(f"--out {out} is a directory; name the mix file to write, e.g. {out / 'mix.json'}")
    check_replaceable(out, "mix manifest", lambda path: json_format(path) == MIX_FORMAT)  # e.g. a dataset's own manifest.json: replacing it would lose the dataset
    entries = []
    for (path, _), manifest, share, budget, dataset_tokens in zip(parsed, manifests, shares, budgets, available):
        entries.append({
            "path": os.path.relpath(path.resolve(), out.resolve().parent),
            "weight": share,
            "tokens": budget,
            "dataset_tokens": dataset_tokens,
            "passes": budget / dataset_tokens,
            "ranges": len(select_ranges(dataset_tokens, budget, block_tokens)),
        })
    mix = {
        "format": MIX_FORMAT, "version": MIX_VERSION, "tokens": total, "block_tokens": block_tokens,
        "tokenizer_fingerprint": fingerprints.pop(), "vocab_size": manifests[0]["vocab_size"], "components": entries,
    }
    atomic_write_json(out, mix)
    return mix
