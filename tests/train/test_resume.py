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

from train_helpers import MICRO_MODEL, micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (fixture)

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
    # random steps each run; a failure prints its seed, and SUTRA_KILL_SEED=N replays it
    seed = int(os.environ.get("SUTRA_KILL_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"kill seed {seed} (replay with SUTRA_KILL_SEED={seed})")
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"steps_per_epoch": 8}, checkpoint={"every_steps": 2}, eval={"every_steps": 4})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    total = 16


    def saved_step() -> int:
        last = killed / "last" / "sutra.json"
        return json.loads(last.read_text())["training"]["step"] if last.exists() else 0

    finish(start(tmp_path, str(path), "--set", f"run_dir={reference}"), tmp_path)

    # 1: a random step of epoch 1
    first = rng.randint(1, 3)
    kill_when(start(tmp_path, str(path), "--set", f"run_dir={killed}"), reached(killed, first), f"step {first}")
    # a scheduler's SIGTERM, then a Ctrl-C: the step in flight finishes (the stop is read a step or two
    # late, never waiting on the device) and `last` is saved there, nothing is lost; the exit code is
    # the signal's as a shell reports it, so a pipeline or scheduler does not take the run as finished
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")):
        target = saved_step() + 1
        assert kill_when(start(tmp_path, "--resume", str(killed)), reached(killed, target), "a step after resuming", sig) == 128 + sig
        assert saved_step() == max(train_steps(killed)) < total and f"({name}), `last` saved" in (tmp_path / "train.log").read_text()
    # 2: while a checkpoint directory is being written (a temporary entry exists under checkpoints/)
    torn = False
    for _ in range(4):
        kill_when(start(tmp_path, "--resume", str(killed)), lambda: write_in_progress(killed), "a checkpoint write")
        if write_in_progress(killed):  # the kill landed before the write finished
            torn = True
            break
    assert torn, "never caught a checkpoint write in progress"
    # 3: a random later step, then run to the end
    resume_step = saved_step()
    if resume_step < total - 1:
        third = rng.randint(resume_step + 1, total - 1)
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


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, tiny_dataset):
    """The first Ctrl-C asks for a stop and a save of `last`; a second, before that save, stops at
    once: nothing after step 2's checkpoint is saved, and that checkpoint is as it was."""
    run_dir = tmp_path / "run"
    # steps of 2,048 tokens through 8 layers, each long (two seconds or so here) against the poll that
    # sends the second Ctrl-C before the step in flight ends and `last` is saved
    path = write_recipe(tmp_path / "micro.yaml", micro_recipe(tiny_dataset, run_dir, model={"preset": "tiny", "overrides": {**MICRO_MODEL, "num_layers": 8}},
                        data={"seq_len": 128}, train={"micro_batch": 4, "grad_accum": 4,
                        "steps_per_epoch": 4}, eval={"every_steps": 1000}, checkpoint={"every_steps": 2}))
    process = start(tmp_path, str(path))
    log = tmp_path / "train.log"
    deadline = time.monotonic() + 300
    while max(train_steps(run_dir), default=0) < 3:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.002)
    saved = {p.name: p.read_bytes() for p in (run_dir / "last").iterdir()}  # step 2's
    process.send_signal(signal.SIGINT)
    while "Ctrl-C again stops at once" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    output = log.read_text()
    assert "sutra: interrupted" in output and "`last` saved" not in output, output[-3000:]
    assert json.loads((run_dir / "last" / "sutra.json").read_text())["training"]["step"] == 2
    assert {p.name: p.read_bytes() for p in (run_dir / "last").iterdir()} == saved
    assert not write_in_progress(run_dir)
