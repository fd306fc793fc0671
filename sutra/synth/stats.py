"""The stats report of a synthesis output directory, with the tables of the sutra dataset cards:
entries, tokens, average tokens per entry, quality statistics, distribution by domain and by
content type (plus complexity, style coverage and rejects by reason)."""

import statistics
from collections import Counter, defaultdict
from pathlib import Path

from sutra.io import atomic_write_json, atomic_write_text
from sutra.synth.journal import META_DIR, check_records, latest_entries, read_jsonl

STATS_FIELDS = ("token_count", "quality_score", "domain", "content_type", "complexity_level", "information_density")


def compute_stats(out: str | Path) -> dict:
    """Over every shard's files; a last line without its newline is a shard writing it, not yet counted."""
    out = Path(out)
    records = []
    for path in sorted(out.glob("train_*.jsonl")):
        rows = read_jsonl(path, skip_tail=True)[0]
        check_records(path, rows, STATS_FIELDS, "stats need the 13-field records 'sutra synth run' or 'rephrase' writes")
        records += rows
    entries = latest_entries([e for path in sorted((out / META_DIR).glob("shard_*.log")) for e in read_jsonl(path, skip_tail=True)[0]])
    tokens = sum(r["token_count"] for r in records)
    quality = [r["quality_score"] for r in records]

    def distribution(key) -> list[dict]:
        counts, token_sums = Counter(), defaultdict(int)
        for r in records:
            counts[r[key]] += 1
            token_sums[r[key]] += r["token_count"]
        return [
            {key: name, "entries": n, "tokens": token_sums[name], "percent": round(100 * token_sums[name] / max(tokens, 1), 1)}
            for name, n in counts.most_common()
        ]

    accepted_styles = Counter(e.get("style") for e in entries if e.get("status") == "accepted")
    rejects = Counter(e.get("reason") for e in entries if e.get("status") == "rejected")
    finished = len(records) + sum(rejects.values())
    return {
        "entries": len(records),
        "tokens": tokens,
        "avg_tokens_per_entry": round(tokens / len(records), 1) if records else 0,
        "quality": {
            "min": min(quality, default=0), "max": max(quality, default=0),
            "mean": round(statistics.fmean(quality), 3) if quality else 0,
            "median": round(statistics.median(quality), 3) if quality else 0,
        },
        "acceptance_rate": round(len(records) / finished, 3) if finished else 0,
        "by_domain": distribution("domain"),
        "by_content_type": distribution("content_type"),
        "by_complexity": [{"complexity_level": k, "entries": v} for k, v in sorted(Counter(r["complexity_level"] for r in records).items())],
        "by_information_density": dict(Counter(r["information_density"] for r in records)),
        "by_style": dict(accepted_styles.most_common()),
        "rejected": dict(rejects.most_common()),
    }


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(stats: dict) -> str:
    q = stats["quality"]
    parts = [
        "# Synthesis statistics",
        _table([
            {"metric": "Entries", "value": stats["entries"]},
            {"metric": "Tokens (SmolLM2 tokenizer)", "value": stats["tokens"]},
            {"metric": "Avg tokens/entry", "value": stats["avg_tokens_per_entry"]},
            {"metric": "Quality", "value": f"{q['min']}-{q['max']}, mean {q['mean']}, median {q['median']}"},
            {"metric": "Acceptance rate", "value": stats["acceptance_rate"]},
        ], ["metric", "value"]),
        "## By domain", _table(stats["by_domain"], ["domain", "entries", "tokens", "percent"]),
        "## By content type", _table(stats["by_content_type"], ["content_type", "entries", "tokens", "percent"]),
        "## By complexity", _table(stats["by_complexity"], ["complexity_level", "entries"]),
        "## By style (accepted)", _table([{"style": k, "entries": v} for k, v in stats["by_style"].items()], ["style", "entries"]),
        "## Rejected, by reason", _table([{"reason": k, "items": v} for k, v in stats["rejected"].items()], ["reason", "items"]),
    ]
    return "\n\n".join(parts) + "\n"


def stats_path(out: str | Path) -> Path:
    return Path(out) / META_DIR / "stats.md"


def write_stats(out: str | Path) -> dict:
    stats = compute_stats(out)
    atomic_write_json(stats_path(out).with_suffix(".json"), stats)
    atomic_write_text(stats_path(out), render_markdown(stats))
    return stats
