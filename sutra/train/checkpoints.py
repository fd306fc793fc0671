"""Checkpoints of a run directory, safe against a kill at any instant.

Every checkpoint is a complete directory `checkpoints/step-NNNNNNNN` (a loadable Sutra model
checkpoint plus `trainer_state.pt`), written under a temporary name and renamed into place.
The names users see — `last`, `e1-best`, `e1-final`, ... — are relative symlinks to those
directories, replaced in one atomic rename, so a name always points at a complete checkpoint
and two names for the same step share one copy. Directories no name points at, and leftovers
of an interrupted write, are removed by `collect_garbage`; so is the trainer state (optimizer
moments: twice the weights' size) of checkpoints that only the per-epoch names still point at,
since training resumes and rolls back only from `last` and `last-good`.
"""

import json
import os
import shutil
from pathlib import Path

import torch

from sutra.errors import SutraError
from sutra.io import atomic_directory, atomic_open, fsync_dir
from sutra.train.recipe import CHECKPOINTS, LAST

TRAINER_STATE = "trainer_state.pt"
LAST_GOOD = "last-good"  # the newest checkpoint saved outside a streak of skipped steps: where a rollback goes
INFO_FILE = "sutra.json"


class CheckpointStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS

    def step_dir(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def write(self, step: int, model, tokenizer, eos_token_ids: list[int], training: dict, trainer_state: dict, weights: dict | None = None) -> Path:
        """The checkpoint of `step`; written once (a step's weights never change after it). `weights`:
        the model's full state when the model itself holds only a shard of it."""
        from sutra.model.checkpoint import save_checkpoint

        target = self.step_dir(step)
        if target.is_dir():
            if not (target / TRAINER_STATE).exists():  # dropped while only per-epoch names pointed here; now `last` will
                with atomic_open(target / TRAINER_STATE) as f:
                    torch.save(trainer_state, f)
            return target
        with atomic_directory(target) as tmp:
            save_checkpoint(tmp, model, tokenizer, extra={"training": training, "eos_token_ids": eos_token_ids}, weights=weights)
            torch.save(trainer_state, tmp / TRAINER_STATE)
        return target

    def point(self, name: str, step: int) -> None:
        """Make `name` refer to the checkpoint of `step`, atomically."""
        link = self.run_dir / name
        tmp = self.run_dir / f".{name}.link.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(Path(CHECKPOINTS) / self.step_dir(step).name, tmp)
        os.replace(tmp, link)
        fsync_dir(self.run_dir)

    def resolve(self, name: str) -> Path | None:
        link = self.run_dir / name
        return link if link.is_dir() else None

    def info(self, name: str) -> dict | None:
        """The `training` record of the checkpoint `name` points at, or None."""
        path = self.resolve(name)
        if path is None:
            return None
        try:
            training = json.loads((path / INFO_FILE).read_text())["training"]
            if not isinstance(training, dict):
                raise ValueError(f"'training' is {type(training).__name__}, not a mapping")
            return training
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SutraError(f"{path / INFO_FILE}: unreadable checkpoint record ({exc}); remove the '{name}' link to continue") from None

    def names(self) -> list[str]:
        if not self.run_dir.is_dir():
            return []
        return sorted(p.name for p in self.run_dir.iterdir() if p.is_symlink() and not p.name.startswith("."))

    def discard_after(self, step: int) -> None:
        """Remove the names that point past `step`, or at nothing (their directories go with the next collect_garbage)."""
        for name in self.names():
            info = self.info(name)
            if info is None or info["step"] > step:
                (self.run_dir / name).unlink()

    def collect_garbage(self) -> None:
        """Remove unfinished writes, step directories that no name points at, and the trainer state
        of those that neither `last` nor `last-good` points at."""
        for stale in self.run_dir.glob(".*.link.tmp"):
            stale.unlink(missing_ok=True)
        if not self.root.is_dir():
            return
        referenced = {os.path.realpath(self.run_dir / name) for name in self.names()}
        resumable = {os.path.realpath(self.run_dir / name) for name in (LAST, LAST_GOOD) if (self.run_dir / name).is_symlink()}
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or os.path.realpath(entry) not in referenced:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                for stale in entry.glob(".*.tmp"):  # a trainer state whose write was interrupted
                    stale.unlink(missing_ok=True)
                if os.path.realpath(entry) not in resumable:
                    (entry / TRAINER_STATE).unlink(missing_ok=True)


def load_trainer_state(checkpoint: Path) -> dict:
    """The optimizer state, RNG and counters of `checkpoint`, mapped from the file rather than read
    into memory: under torchrun every process of a node loads the same file, and mapped pages are
    the page cache's one copy, not one copy a process (13.6 GB each for the AdamW moments of a 1.7B model)."""
    path = checkpoint / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise SutraError(f"{path}: missing; this checkpoint cannot resume training (it is still a loadable model)") from None
    except Exception as exc:  # a corrupt pickle raises many kinds of errors
        raise SutraError(f"{path}: unreadable trainer state ({type(exc).__name__}: {exc})") from None
