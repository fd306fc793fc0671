import json
import os
import random

import numpy as np
import pytest

from sutra_testing import run_sutra
from data_helpers import make_documents, write_token_dataset
from sutra.data.loader import TokenLoader
from sutra.data.mix import make_mix, parse_tokens, split_budget
from sutra.data.stream import open_stream, select_ranges
from sutra.errors import SutraError


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("mix")
    write_token_dataset(root / "a", tokenizer, {"train": make_documents(90, seed=21), "val": make_documents(4, seed=22)})
    write_token_dataset(root / "b", tokenizer, {"train": make_documents(40, seed=23), "val": make_documents(3, seed=24)})
    return root


def everything(stream) -> np.ndarray:
    return stream.gather(np.array([0]), stream.length)[0]


def test_select_ranges_gives_exact_spread_budgets():
    for available, budget, block in [(1000, 300, 64), (1000, 1000, 64), (1000, 2500, 64), (1000, 999, 64), (10, 3, 64), (5000, 17, 4)]:
        ranges = select_ranges(available, budget, block)
        assert sum(b - a for a, b in ranges) == budget
        assert all(0 <= a < b <= available for a, b in ranges)
    partial = select_ranges(1000, 300, 64)
    assert partial[-1][0] > 700 and all(b <= c for (_, b), (c, _) in zip(partial, partial[1:]))  # spread out, no overlap
    assert select_ranges(1000, 2500, 64)[:2] == [(0, 1000), (0, 1000)]
    # a dataset smaller than one block is sampled across, not cut to its beginning
    for available, budget in [(228_067, 50_000), (228_067, 1_200_000), (1000, 999), (10, 9)]:
        ranges = select_ranges(available, budget, 1 << 20)
        assert sum(b - a for a, b in ranges) == budget and all(b <= c for (_, b), (c, _) in zip(ranges, ranges[1:]) if c)
        assert ranges[-1][1] > 0.8 * available


def test_weighted_budget_mix_maps_onto_the_datasets(two_datasets, tokenizer):
    root = two_datasets
    mix = make_mix([f"{root / 'a'}=3", f"{root / 'b'}=1"], root / "mix.json", tokens=parse_tokens("6K"), block_tokens=256)
    a_total, b_total = (open_stream(root / name, "train").length for name in "ab")
    assert [c["tokens"] for c in mix["components"]] == [4500, 1500] and mix["tokens"] == 6000
    stream = open_stream(root / "mix.json", "train")
    assert stream.length == 6000
    a, b = everything(open_stream(root / "a", "train")), everything(open_stream(root / "b", "train"))
    expected = [a[x:y] for x, y in select_ranges(a_total, 4500, 256)] + [b[x:y] for x, y in select_ranges(b_total, 1500, 256)]
    assert np.array_equal(everything(stream), np.concatenate(expected))
    # a block that starts inside a document starts a new document for attention masking
    loader = TokenLoader(root / "mix.json", "train", seq_len=64, micro_batch=8, seed=2)
    assert loader.windows_per_epoch == (6000 - 1) // 64
    starts = np.cumsum([0] + [y - x for x, y in select_ranges(a_total, 4500, 256)])[:-1]
    assert set(starts[1:].tolist()) <= set(stream.boundaries.tolist())
    assert loader.next_batch().doc_ids.max() >= 1
    val = open_stream(root / "mix.json", "val")
    assert val.length == open_stream(root / "a", "val").length + open_stream(root / "b", "val").length


def test_weights_near_the_float_limit_mean_the_same_as_small_ones(two_datasets):
    """3e307 and 1e307 sum past the largest float: every share was 0 and the mix a ZeroDivisionError."""
    root = two_datasets
    tokens = parse_tokens("6K")
    huge = make_mix([f"{root / 'a'}=1.5e308", f"{root / 'b'}=5e307"], root / "huge.json", tokens=tokens, block_tokens=256)
    small = make_mix([f"{root / 'a'}=3", f"{root / 'b'}=1"], root / "small.json", tokens=tokens, block_tokens=256)
    assert [c["tokens"] for c in huge["components"]] == [c["tokens"] for c in small["components"]] == [4500, 1500]


def test_unweighted_mix_takes_everything_once_and_budget_repeats(two_datasets):
    root = two_datasets
    a_total, b_total = (open_stream(root / name, "train").length for name in "ab")
    whole = make_mix([str(root / "a"), str(root / "b")], root / "whole.json")
    assert whole["tokens"] == a_total + b_total and [c["passes"] for c in whole["components"]] == [1.0, 1.0]
    repeated = make_mix([str(root / "b")], root / "b2.json", tokens=int(b_total * 2.5))
    assert repeated["components"][0]["passes"] == 2.5
    stream = everything(open_stream(root / "b2.json", "train"))
    b = everything(open_stream(root / "b", "train"))
    assert np.array_equal(stream[:b_total], b) and np.array_equal(stream[b_total:2 * b_total], b)


def test_mix_cli_and_errors(two_datasets, tmp_path, tokenizer):
    root = two_datasets
    result = run_sutra("data", "mix", f"{root / 'a'}=50", f"{root / 'b'}=50", "--tokens", "2K", "--out", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    assert "1,000 tokens" in result.stdout and json.loads((tmp_path / "m.json").read_text())["tokens"] == 2000
    shown = run_sutra("data", "stats", str(tmp_path / "m.json"), check=True)  # a mix's composition, as `data mix` printed it
    assert result.stdout.splitlines()[:2] == shown.stdout.splitlines()[:2] and "a mix of 2,000 train tokens per epoch" in shown.stdout
    raw = json.loads(run_sutra("data", "stats", str(tmp_path / "m.json"), "--json", check=True).stdout)
    assert [c["tokens"] for c in raw["components"]] == [1000, 1000] and "ranges" not in raw["components"][0]
    repeated = run_sutra("data", "mix", str(root / "a"), "--tokens", "1M", "--out", str(tmp_path / "r.json"))
    assert repeated.returncode == 0 and f"sutra: warning: {os.path.relpath(root / 'a', tmp_path)} is read" in repeated.stderr
    bad = run_sutra("data", "mix", f"{root / 'a'}=50", str(root / "b"), "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 2 and "give a weight to every dataset" in bad.stderr
    with pytest.raises(SutraError, match="positive token count"):
        parse_tokens("lots")
    for weight in ("nan", "inf", "-1"):
        with pytest.raises(SutraError, match="weights must be positive numbers"):
            make_mix([f"{root / 'a'}={weight}", f"{root / 'b'}=1"], tmp_path / "w.json")
    with pytest.raises(SutraError, match="weight of .* is too small"):
        make_mix([f"{root / 'a'}=1e-300", f"{root / 'b'}=1"], tmp_path / "w.json")
    with pytest.raises(SutraError, match="is a directory; name the mix file"):
        make_mix([str(root / "a")], tmp_path)
    with pytest.raises(SutraError, match="no manifest.json"):
        make_mix([str(tmp_path)], tmp_path / "y.json")
    # a slip of the suffix (1000T for 1000M) is one line, not a manifest of billions of passes and a MemoryError
    huge = run_sutra("data", "mix", str(root / "a"), "--tokens", "1000T", "--out", str(tmp_path / "h.json"))
    assert huge.returncode == 2 and "times (at most 10,000); give a smaller --tokens" in huge.stderr and "Traceback" not in huge.stderr
    assert not (tmp_path / "h.json").exists()

    # a dataset replaced after the mix was written is detected, not silently misread
    changed = tmp_path / "changed"
    write_token_dataset(changed, tokenizer, {"train": make_documents(10, seed=1), "val": make_documents(2, seed=2)})
    make_mix([str(changed)], tmp_path / "c.json")
    write_token_dataset(changed, tokenizer, {"train": make_documents(11, seed=1), "val": make_documents(2, seed=2)})
    with pytest.raises(SutraError, match="changed since the mix was written"):
        TokenLoader(tmp_path / "c.json")


def test_budgets_never_pass_a_dataset_and_always_sum_to_the_total():
    rng = random.Random(0)
    for _ in range(5000):
        available = [rng.randint(1, 10**6) for _ in range(rng.randint(1, 5))]
        weights = [rng.random() + 0.01 for _ in available]
        shares = [w / sum(weights) for w in weights]
        budgets = split_budget(available, shares, None)
        assert all(0 <= b <= n for b, n in zip(budgets, available)), "without --tokens nothing repeats"
        assert sum(budgets) >= min(n / s for n, s in zip(available, shares)) - len(available), "and little is left out"
        tokens = rng.randint(0, 10**7)
        budgets = split_budget(available, shares, tokens)
        assert sum(budgets) == tokens and min(budgets) >= 0
        assert all(abs(b - tokens * s) < 1 for b, s in zip(budgets, shares))


def test_a_dataset_without_the_asked_split_is_one_clear_error(tmp_path, tokenizer):
    write_token_dataset(tmp_path / "train-only", tokenizer, {"train": make_documents(5, seed=3)})
    manifest_path = tmp_path / "train-only" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"].pop("val", None)  # as an older or hand-made manifest may be
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SutraError, match=r"train-only/manifest.json: the dataset has no 'val' split \(it has train\)"):
        open_stream(tmp_path / "train-only", "val")


def test_token_counts_with_decimals_are_exact():
    assert [parse_tokens(t) for t in ("8.2M", "2.3M", "0.57K", "1.15B", "1_000")] == [8_200_000, 2_300_000, 570, 1_150_000_000, 1000]
    for bad in ("1.2.3", ".", "1e9"):
        with pytest.raises(SutraError, match="positive token count"):
            parse_tokens(bad)


def test_an_unweighted_mix_of_large_datasets_takes_each_whole():
    # sutra-10B-sized datasets: float rounding left one of them a token short (and cut into ~15k ranges)
    for available in ([6_102_086_536, 16_405_158_102], [4_629_328_566, 18_028_230_184, 13_104_721_556, 11_953_064_611]):
        shares = [n / sum(available) for n in available]
        assert split_budget(available, shares, None) == available


def test_mix_out_never_replaces_a_file_that_is_not_a_mix(tmp_path, tokenizer):
    dataset = tmp_path / "dataset"
    write_token_dataset(dataset, tokenizer, {"train": make_documents(10, seed=4), "val": make_documents(2, seed=5)})
    before = (dataset / "manifest.json").read_bytes()
    with pytest.raises(SutraError, match="manifest.json exists and is not a mix manifest, so it is not replaced"):
        make_mix([str(dataset)], dataset / "manifest.json")
    assert (dataset / "manifest.json").read_bytes() == before and open_stream(dataset, "train").length > 0
    make_mix([str(dataset)], tmp_path / "mix.json")
    assert make_mix([str(dataset)], tmp_path / "mix.json", tokens=100)["tokens"] == 100  # an earlier mix is replaced


def test_a_dataset_named_twice_is_refused(two_datasets, tmp_path):
    root = two_datasets
    with pytest.raises(SutraError, match="is named twice"):
        make_mix([f"{root / 'a'}=50", f"{root / 'b'}=20", f"{root / 'a'}/=30"], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_a_hand_edited_mix_is_read_or_refused_by_field(two_datasets, tmp_path):
    root = two_datasets
    path = tmp_path / "m.json"
    make_mix([f"{root / 'a'}=50", f"{root / 'b'}=50"], path, tokens=2000)
    written = json.loads(path.read_text())
    edited = json.loads(path.read_text())
    edited["components"][1]["tokens"] = 3000  # a budget changed by hand is what the stream holds
    path.write_text(json.dumps(edited))
    assert open_stream(path, "train").length == 4000
    for change, message in [
        (lambda m: m["components"][0].pop("path"), r"no 'components\[0\].path'"),
        (lambda m: m["components"][1].update(tokens=-5), r"'components\[1\].tokens' is -5, not a positive whole number"),
        (lambda m: m["components"][0].update(dataset_tokens="many"), r"'components\[0\].dataset_tokens' is \"many\""),
        (lambda m: m.update(components=[]), "'components' must be a non-empty list"),
        (lambda m: m.update(block_tokens=0), "'block_tokens' is 0"),
    ]:
        broken = json.loads(json.dumps(written))
        change(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(SutraError, match=message):
            open_stream(path, "train")
    result = run_sutra("train", "recipes/tiny-cpu.yaml", "--set", f"data.path={path}", "--set", f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "'block_tokens' is 0" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_missing_local_path_is_not_taken_for_a_hub_dataset(tmp_path, monkeypatch):
    """`--perplexity data/nope` was answered as a hub id ("prepare it first ... (needs a network)")
    because it has one slash, though `data/` is a local folder."""
    from sutra.data.stream import open_stream
    from sutra.errors import SutraError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(SutraError) as local:
        open_stream("data/nope", "val")
    with pytest.raises(SutraError) as hub:
        open_stream("someone/dataset", "val")
    assert "no such dataset directory" in str(local.value) and "hub dataset id" not in str(local.value)
    assert "a hub dataset id is not read directly" in str(hub.value)


def test_datasets_from_one_input_must_hold_out_the_same_documents(tmp_path):
    """A corpus and a filtered part of it, prepared with different validation shares, would
    train the mix on documents it validates on."""
    from sutra.data.filters import Filters
    from sutra.data.prepare import PrepareConfig, prepare

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d, "domain": "science" if i % 2 else "history"}) + "\n"
                              for i, d in enumerate(make_documents(80, seed=31))))

    def prepared(name, **options):
        prepare(PrepareConfig(sources=(str(corpus),), out=tmp_path / name, workers=1, min_val_docs=0, **options), log=open(os.devnull, "w"))
        return str(tmp_path / name)

    whole, part = prepared("whole", val_fraction=0.1), prepared("part", val_fraction=0.3, filters=Filters.from_args(domains="science"))
    with pytest.raises(SutraError, match=r"whole and .*part were prepared from the same input .*corpus.jsonl.* different validation shares "
                                         r"\(0.1000 and 0.3000\).*--out .*whole --val-fraction 0.3 --min-val-docs 0 --overwrite` \(holding out 30.0% of it\), "
                                         r"or `... --out .*part --val-fraction 0.1 --min-val-docs 0 --overwrite` \(fewer validation documents "
                                         r"\(it holds \d+ now: about \d+ would be left\)\)"):
        make_mix([f"{whole}=1", f"{part}=1"], tmp_path / "mix.json")
    assert not (tmp_path / "mix.json").exists()
    aligned = prepared("whole2", val_fraction=0.3)
    make_mix([f"{aligned}=1", f"{part}=1"], tmp_path / "mix.json")
    val_part, train_whole = set(), set()
    for directory, split, into in ((part, "val", val_part), (aligned, "train", train_whole)):
        stream = open_stream(directory, split)
        tokens = everything(stream).tolist()
        into.update(tuple(doc) for doc in _documents(tokens))
    assert val_part and not val_part & train_whole


def _documents(tokens: list[int], separator: int = 0) -> list[list[int]]:
    docs, current = [], []
    for token in tokens:
        current.append(token)
        if token == separator:
            docs.append(current)
            current = []
    return docs


def test_raw_data_or_a_moved_mix_given_as_a_dataset_says_what_to_do(two_datasets, tmp_path):
    """A JSONL, Parquet or text file as data.path said "not a readable mix manifest (Extra data: line 2 ...)";
    a mix moved away from its datasets named a path the user never wrote."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "docs.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "one.jsonl").write_text('{"text": "one"}\n')
    (tmp_path / "notes.txt").write_text("plain text")
    (tmp_path / "records.json").write_text('[{"text": "one"}]')
    (tmp_path / "lines.json").write_text('{"text": "one"}\n{"text": "two"}\n')  # JSON Lines named .json, as prepare reads them
    (tmp_path / "record.json").write_text('{"text": "one"}\n')
    pq.write_table(pa.table({"text": ["one"]}), tmp_path / "docs.parquet")
    for name in ("docs.jsonl", "one.jsonl", "notes.txt", "records.json", "lines.json", "record.json", "docs.parquet"):
        with pytest.raises(SutraError, match=rf"{name}: data to prepare, not a prepared dataset; run `sutra data prepare .*{name} --out DIR` and give DIR"):
            open_stream(tmp_path / name, "train")
    make_mix([str(two_datasets / "a")], tmp_path / "m.json")
    (tmp_path / "moved").mkdir()
    (tmp_path / "m.json").rename(tmp_path / "moved" / "m.json")
    with pytest.raises(SutraError, match=r"m\.json: its dataset .*a is named relative to the mix, and .*moved/.* does not exist; keep the mix beside"):
        open_stream(tmp_path / "moved" / "m.json", "train")


def test_datasets_of_different_tokenizers_are_refused_naming_each(two_datasets, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(two_datasets / "b", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer_fingerprint"] = "0123456789abcdef"
    (other / "manifest.json").write_text(json.dumps(manifest))
    mine = json.loads((two_datasets / "a" / "manifest.json").read_text())["tokenizer_fingerprint"]
    with pytest.raises(SutraError, match=rf"different tokenizers \(.*a: {mine}; .*other: 0123456789abcdef\); re-prepare them with one"):
        make_mix([str(two_datasets / "a"), str(other)], tmp_path / "m.json")
