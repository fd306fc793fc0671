"""The answers a model gave lm-eval's requests, kept as they come, so a killed `sutra eval --out FILE`
resumes where it stopped instead of starting over (the card's 11 tasks are hours on a CPU).

The journal is FILE's hidden sibling `.FILE.answers.jsonl`: a header line naming the model (a digest
of its weights), dtype and device, then one line per answer keyed by a hash of the request. A
journal written for another model or setup is discarded, and `sutra eval` deletes it once FILE is
written. JSON, not pickle (lm-eval's own cache is a pickled sqlite file).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from sutra.errors import SutraError
from sutra.io import atomic_write_text


def journal_path(results_file: str | os.PathLike) -> Path:
    results_file = Path(results_file)
    return results_file.with_name(f".{results_file.name}.answers.jsonl")


def weights_digest(model) -> str:
    """A hash of the model's parameters and buffers (names, dtypes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def request_key(method: str, args) -> str:
    return hashlib.sha256(json.dumps([method, list(args)], sort_keys=True, default=str).encode()).hexdigest()


class AnswerJournal:
    """Answers by request key; `add_partial` is lm-eval's cache-hook call, made as each answer comes."""

    def __init__(self, path: Path, identity: dict):
        self.path = Path(path)
        self.answers: dict[str, object] = {}
        kept = self._read(identity)
        self.resumed = len(kept)
        if kept:
            print(f"sutra: resuming the evaluation with {len(kept):,} answers journalled by an interrupted run ({self.path})", file=sys.stderr)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"identity": identity}) + "\n")
        self._file = open(self.path, "a", encoding="utf-8")

    def _read(self, identity: dict) -> list[dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
            lines = text.splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:  # a directory in its place, no permission, binary junk
            raise SutraError(f"{self.path}: cannot read this answer journal ({getattr(exc, 'strerror', None) or exc}); remove it to evaluate from the start") from None
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if number < len(lines):  # only the last line may be torn by a kill
                    raise SutraError(f"{self.path}:{number}: not a journal line; delete {self.path} to evaluate from the start") from None
        if records and not isinstance(records[0], dict):  # the header is an object: no journal wrote this
            raise SutraError(f"{self.path}:1: not a journal line; delete {self.path} to evaluate from the start")
        if not records or records[0].get("identity") != identity:
            if records:
                print(f"sutra: discarding {self.path}: it holds answers of another model, dtype or device", file=sys.stderr)
            return []
        kept = [r for r in records[1:] if isinstance(r, dict) and "key" in r and "answer" in r]
        for record in kept:
            self.answers[record["key"]] = record["answer"]
        # without a torn last line, and ending in a newline (a whole last record may lack it), so
        # appends start on a line of their own; atomically, since it holds every answer kept so far
        if len(lines) > len(records) or not text.endswith("\n"):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return kept

    def get(self, method: str, args):
        answer = self.answers.get(request_key(method, args))
        return tuple(answer) if isinstance(answer, list) else answer  # (loglikelihood, is_greedy) pairs

    def add_partial(self, method: str, args, answer) -> None:
        key = request_key(method, args)
        self.answers[key] = answer
        self._file.write(json.dumps({"key": key, "answer": answer}) + "\n")
        self._file.flush()  # the OS has it: a killed process loses nothing written so far

    def close(self) -> None:
        self._file.close()
