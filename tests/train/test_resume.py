"""Exact resume: a run SIGKILLed at random steps and in the middle of writing a checkpoint, then
resumed each time, ends bitwise equal to an uninterrupted run (real `sutra train` subprocesses)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    log = open(tmp_path / "train.log", "a")
    return subprocess.Popen([sys.executable, "-m", "sutra", "train", *args], cwd=REPO, env=ENV, stdout=log, stderr=log)


def train_steps(run_dir: Path, since: float = 0.0) -> list[int]:
    """Steps logged so far, counting only a file the current process has rewritten (after `since`)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists() or path.stat().st_mtime < since:
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines(keepends=True) if line.endswith("\n") and '"loss"' in line]


def write_in_progress(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    return root.is_dir() and any(name.startswith(".") for name in os.listdir(root))


def kill_when(process: subprocess.Popen, condition, what: str, sig=signal.SIGKILL) -> int:
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)
    process.send_signal(sig)
    return process.wait()


def reached(run_dir: Path, step: int):
    started = time.time()
    return lambda: max(train_steps(run_dir, since=started), default=0) >= step


def finish(process: subprocess.Popen, tmp_path: Path) -> None:
    assert process.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]


def final_state(run_dir: Path) -> tuple[dict, dict]:
    last = run_dir / "last"
    return load_file(last / "model.safetensors"), torch.load(last / "trainer_state.pt", weights_only=True)["optimizer"]


@pytest.mark.slow
def test_sigkill_at_random_steps_and_mid_checkpoint_then_resume_is_bitwise_exact(tmp_path, tiny_dataset):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"steps_per_epoch": 4}, checkpoint={"every_steps": 2}, eval={"every_steps": 4})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    reference, killed = tmp_path / "reference", tmp_path / "killed"

    finish(start(tmp_path, str(path), "--set", f"run_dir={reference}"), tmp_path)

    # 1: a random step of epoch 1
    first = rng.randint(1, 3)
    kill_when(start(tmp_path, str(path), "--set", f"run_dir={killed}"), reached(killed, first), f"step {first}")
    # a scheduler's SIGTERM: the step in flight finishes and `last` is saved there, nothing is lost
    assert kill_when(start(tmp_path, "--resume", str(killed)), reached(killed, first + 1), "a step after resuming", signal.SIGTERM) == 0
    assert json.loads((killed / "last" / "sutra.json").read_text())["training"]["step"] == max(train_steps(killed))
    # Ctrl-C: likewise
    assert kill_when(start(tmp_path, "--resume", str(killed)), reached(killed, first + 2), "a step after resuming", signal.SIGINT) == 0
    assert json.loads((killed / "last" / "sutra.json").read_text())["training"]["step"] == max(train_steps(killed))
    # 2: while a checkpoint directory is being written (a temporary entry exists under checkpoints/)
    torn = False
    for _ in range(4):
        kill_when(start(tmp_path, "--resume", str(killed)), lambda: write_in_progress(killed), "a checkpoint write")
        if write_in_progress(killed):  # the kill landed before the write finished
            torn = True
            break
    assert torn, "never caught a checkpoint write in progress"
    # 3: a random later step, then run to the end
    resume_step = json.loads((killed / "last" / "sutra.json").read_text())["training"]["step"]
    if resume_step < 7:
        third = rng.randint(resume_step + 1, 7)
        kill_when(start(tmp_path, "--resume", str(killed)), reached(killed, third), f"step {third}")
    finish(start(tmp_path, "--resume", str(killed)), tmp_path)

    weights, optimizer = final_state(reference)
    weights_resumed, optimizer_resumed = final_state(killed)
    assert weights.keys() == weights_resumed.keys()
    for name in weights:
        assert torch.equal(weights[name], weights_resumed[name]), f"{name} differs (kill seed {seed})"
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(value, optimizer_resumed["state"][index][key]), f"optimizer state {index}.{key} differs (kill seed {seed})"
    # the metrics read as one run: every step once, with the reference's losses
    ref_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    resumed_records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    key = lambda r: (r["step"], "loss" in r)  # noqa: E731
    assert [key(r) for r in resumed_records] == [key(r) for r in ref_records]
    assert [r.get("loss", r.get("val_loss")) for r in resumed_records] == [r.get("loss", r.get("val_loss")) for r in ref_records]
    # nothing of the interrupted writes is left, and every name points at a complete checkpoint
    assert not write_in_progress(killed) and not list(killed.glob(".*"))
    assert sorted(p.name for p in killed.iterdir() if p.is_symlink()) == ["e1-best", "e1-final", "e2-best", "e2-final", "last", "last-good"]
