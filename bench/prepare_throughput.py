"""Throughput of `sutra data prepare` and of the TokenLoader, each against a named baseline.

prepare: end-to-end (plan, parse JSONL, hash split, tokenize on all cores, write shards and
  manifest) vs raw `tokenizers.Tokenizer.encode_batch` (Rust threads on all cores) over the same
  texts in the same run. Target ratio >= 0.9.
loader: TokenLoader.next_batch (shuffled windows, int64 tensors, per-token document ids) from the
  page cache vs a bare numpy copy of the same number of contiguous tokens from the same memmap.
  Target >= 50M tokens/s.

Usage: .venv/bin/python bench/prepare_throughput.py [--source FILE.jsonl|asset] [--max-mb 20]
The last line printed is one JSON object with the figures.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def read_texts(path: Path, max_bytes: int, work: Path) -> tuple[Path, list[str]]:
    """The first `max_bytes` of JSONL `path` as a new file, and its texts."""
    kept, texts, size = [], [], 0
    with open(path, "rb") as f:
        for line in f:
            if size + len(line) > max_bytes and kept:
                break
            kept.append(line)
            texts.append(json.loads(line)["text"])
            size += len(line)
    sample = work / "sample.jsonl"
    sample.write_bytes(b"".join(kept))
    return sample, texts


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="JSONL file or corpus asset (default: debian-docs if fetched, else stdlib-docs)")
    parser.add_argument("--max-mb", type=float, default=20.0, help="use the first this many MB of the source")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each side")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=16)
    args = parser.parse_args()

    from sutra import assets

    if args.source is None:
        args.source = "debian-docs" if assets.is_fetched("debian-docs") else "stdlib-docs"
    source = Path(args.source)
    if not source.is_file():
        source = next(assets.ensure(args.source).glob("*.jsonl"))
    with tempfile.TemporaryDirectory(prefix="sutra-bench-") as work:
        figures = measure(args, source, Path(work))
    print(f"prepare      {figures['prepare_tokens_per_s']:>13,} tokens/s  (encode_batch {figures['encode_batch_tokens_per_s']:,}; "
          f"ratio {figures['prepare_vs_encode_batch']})", file=sys.stderr)
    print(f"loader       {figures['loader_tokens_per_s']:>13,} tokens/s  (numpy copy {figures['memcpy_tokens_per_s']:,}; "
          f"ratio {figures['loader_vs_memcpy']})", file=sys.stderr)
    print(json.dumps(figures))
    return 0


def measure(args, source: Path, work: Path) -> dict:
    from sutra import assets
    from sutra.data.loader import TokenLoader
    from sutra.data.prepare import PrepareConfig, prepare
    from sutra.data.shards import open_tokens, read_manifest
    from sutra.tokenizer import DEFAULT_TOKENIZER, Tokenizer

    sample, texts = read_texts(source, int(args.max_mb * 1e6), work)
    tokenizer = Tokenizer(assets.ensure(DEFAULT_TOKENIZER))
    cores = os.cpu_count()

    encoded = []
    baseline_s = best_of(args.repeats, lambda: encoded.append(tokenizer.backend.encode_batch(texts, add_special_tokens=False)))
    text_tokens = sum(len(e.ids) for e in encoded[-1])
    del encoded

    out_root = work / "out"
    runs = iter(range(args.repeats))
    prepare_s = best_of(args.repeats, lambda: prepare(
        PrepareConfig(sources=(str(sample),), out=out_root / f"run{next(runs)}", workers=cores), log=open(os.devnull, "w")))
    dataset = out_root / "run0"
    manifest = read_manifest(dataset)
    assert manifest["splits"]["train"]["tokens"] + manifest["splits"]["val"]["tokens"] == text_tokens + len(texts)

    loader = TokenLoader(dataset, "train", seq_len=args.seq_len, micro_batch=args.micro_batch, seed=0)
    batches = max(1, min(loader.windows_per_epoch // args.micro_batch - 1, 400))
    for _ in range(batches):  # warm the page cache and the permutation
        loader.next_batch()
    loader = TokenLoader(dataset, "train", seq_len=args.seq_len, micro_batch=args.micro_batch, seed=0)
    loader_s = best_of(1, lambda: [loader.next_batch() for _ in range(batches)])
    tokens = open_tokens(dataset, manifest["splits"]["train"]["shards"][0])
    chunk = args.micro_batch * (args.seq_len + 1)
    copies = max(1, (len(tokens) - chunk) // chunk)
    memcpy_s = best_of(1, lambda: [tokens[(i % copies) * chunk:(i % copies + 1) * chunk].copy() for i in range(batches)])
    loaded = batches * args.micro_batch * args.seq_len

    figures = {
        "source": str(args.source), "text_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2), "documents": len(texts),
        "tokens": text_tokens, "cpu_cores": cores,
        "encode_batch_tokens_per_s": round(text_tokens / baseline_s),
        "prepare_tokens_per_s": round(text_tokens / prepare_s),
        "prepare_vs_encode_batch": round(baseline_s / prepare_s, 3),
        "loader_tokens_per_s": round(loaded / loader_s),
        "memcpy_tokens_per_s": round(batches * chunk / memcpy_s),
        "loader_vs_memcpy": round((loaded / loader_s) / (batches * chunk / memcpy_s), 3),
        "loader_shape": [args.micro_batch, args.seq_len],
    }
    return figures


if __name__ == "__main__":
    sys.exit(main())
