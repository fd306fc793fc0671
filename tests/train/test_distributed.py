"""Data parallelism on CPU (gloo): 2 processes under torchrun, with DDP or FSDP2, follow the 1-process
loss trajectory at the same global batch, and a run resumes on another process count and mode."""

import json
import os
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], "val" if "val_loss" in r else "train"): r.get("loss", r.get("val_loss")) for r in records}


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_resume_on_one(tmp_path, tiny_dataset):
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"steps_per_epoch": 3, "micro_batch": 2, "grad_accum": 4}, eval={"every_steps": 3})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    single, pair = tmp_path / "one-process", tmp_path / "two-processes"

    run(sys.executable, "-m", "sutra", "train", str(path), "--set", f"run_dir={single}")
    started = run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "sutra", "train", str(path), "--set", f"run_dir={pair}", "--stop-after", "4")
    assert "on cpu x2" in started.stderr and "stopped after step 4 of 6" in started.stderr
    assert "Warning" not in started.stderr, started.stderr  # e.g. DDP's deprecated broadcast_buffers, once per process
    resumed = run(sys.executable, "-m", "sutra", "train", "--resume", str(pair))
    assert "resuming at step 4" in resumed.stderr and "on cpu x1" in resumed.stderr

    assert_same_run(single, pair, 6 + 3)  # 6 training steps; validation at 0, 3, 6


def assert_same_run(reference: Path, other: Path, expected_records: int) -> None:
    one, two = losses(reference), losses(other)
    assert one.keys() == two.keys() and len(one) == expected_records
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-5), key
    a, b = load_file(reference / "last" / "model.safetensors"), load_file(other / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # Adam turns rounding-level gradient differences into up to ~lr * 1e-2 weight differences
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_fsdp_shards_train_as_one_process_and_resume_sharded_and_unsharded(tmp_path, tiny_dataset):
    # 5 validation windows in batches of 2 give one rank 1 batch and the other 2: a sharded forward is
    # a collective, so the first must run an uncounted one or both wait forever
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"steps_per_epoch": 3, "micro_batch": 2, "grad_accum": 4},
                          eval={"every_steps": 3, "max_windows": 5})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    single, sharded = tmp_path / "one-process", tmp_path / "fsdp"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sutra", "train")

    run(sys.executable, "-m", "sutra", "train", str(path), "--set", f"run_dir={single}")
    # sharded blocks recomputed in backward (activation checkpointing) compute what one process kept
    started = run(*torchrun, str(path), "--set", f"run_dir={sharded}", "--set", "train.parallel=fsdp",
                  "--set", "train.activation_checkpointing=true", "--stop-after", "2")
    assert "on cpu x2 (FSDP2)" in started.stderr and "stopped after step 2 of 6" in started.stderr
    assert "| activation checkpointing" in started.stderr
    assert "Warning" not in started.stderr, started.stderr
    resumed = run(*torchrun, "--resume", str(sharded), "--stop-after", "4")  # the shards reloaded from a full checkpoint
    assert "resuming at step 2" in resumed.stderr and "(FSDP2)" in resumed.stderr
    recipe_file = sharded / "recipe.yaml"
    recipe_file.write_text(recipe_file.read_text().replace("parallel: fsdp", "parallel: ddp")
                           .replace("activation_checkpointing: true", "activation_checkpointing: false"))
    finished = run(sys.executable, "-m", "sutra", "train", "--resume", str(sharded))  # the gathered optimizer state, unsharded
    assert "resuming at step 4" in finished.stderr and "train.parallel 'fsdp' -> 'ddp'" in finished.stderr
    assert "train.activation_checkpointing True -> False" in finished.stderr
    assert_same_run(single, sharded, 6 + 3)  # 6 training steps; validation at 0, 3, 6


@pytest.mark.slow
def test_fsdp_compiled_whole_with_recomputed_blocks_follows_one_eager_process(tmp_path, tiny_dataset):
    """FSDP2, torch.compile of the whole sharded model and activation checkpointing together (the
    combination for a big model on GPUs), here with inductor's CPU code: the eager 1-process losses."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "unused", train={"epochs": 1, "steps_per_epoch": 2, "micro_batch": 2, "grad_accum": 2},
                          eval={"every_steps": 2, "max_windows": 4}, schedule={"kind": "cosine", "warmup_steps": 1, "epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    single, sharded = tmp_path / "one-process", tmp_path / "fsdp"
    run(sys.executable, "-m", "sutra", "train", str(path), "--set", f"run_dir={single}")
    started = run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sutra", "train", str(path),
                  "--set", f"run_dir={sharded}", "--set", "train.parallel=fsdp", "--set", "train.compile=true",
                  "--set", "train.activation_checkpointing=true")
    assert "on cpu x2 (FSDP2)" in started.stderr and "| activation checkpointing" in started.stderr
    assert_same_run(single, sharded, 2 + 2)  # 2 training steps; validation at 0 and 2


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_last_on_every_process_and_the_run_resumes(tmp_path, tiny_dataset):
    """A scheduler's preemption signals the launcher, which passes SIGTERM to its processes: they stop
    together after the step in flight, `last` is saved there, and nothing calls the run finished."""
    import signal
    import time

    run_dir = tmp_path / "run"
    path = write_recipe(tmp_path / "micro.yaml", micro_recipe(tiny_dataset, run_dir, train={"epochs": 1, "steps_per_epoch": 70},
                                                             schedule={"kind": "cosine", "warmup_steps": 2, "epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
                                                             eval={"every_steps": 1000}, checkpoint={"every_steps": 1000}))
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sutra", "train")
    log = open(tmp_path / "train.log", "w")
    launcher = subprocess.Popen([*torchrun, str(path)], cwd=REPO, env=ENV, stdout=log, stderr=log)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while '"step": 3,' not in (metrics.read_text() if metrics.exists() else ""):
        assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "train.log").read_text()[-3000:]
        time.sleep(0.02)
    launcher.send_signal(signal.SIGTERM)
    code = launcher.wait(timeout=120)
    output = (tmp_path / "train.log").read_text()
    assert code == 1, output[-3000:]  # torchrun's own code when a signal stops it (it prints its traceback too)
    assert "(SIGTERM), `last` saved" in output, output[-3000:]
    saved = json.loads((run_dir / "last" / "sutra.json").read_text())["training"]["step"]
    assert 3 <= saved < 70 and not (run_dir / "e1-final").exists()
    resumed = run(*torchrun, "--resume", str(run_dir))
    assert f"resuming at step {saved}" in resumed.stderr
    assert json.loads((run_dir / "e1-final" / "sutra.json").read_text())["training"]["step"] == 70


def test_a_recipe_error_under_torchrun_is_one_line_not_a_traceback(tmp_path, tiny_dataset):
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"grad_accum": 3})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "sutra", "train", str(path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert re.search(r"micro\.yaml:\d+: train\.grad_accum: 3 micro-batches per step cannot be split over 2 processes", result.stderr)
    assert result.stderr.count("sutra: error: ") == 1, result.stderr[-3000:]  # rank 0's; the launcher stops the other
    assert "sutra/train" not in result.stderr, "only torchrun's own summary may show a traceback"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_of_at_most(size: int):
    """A process whose files stop at `size` bytes, as on a nearly full disk (Python ignores SIGXFSZ,
    so a longer write fails with EFBIG)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def two_nodes(first: list[str], second: list[str], first_limits=None) -> list[tuple[int, str]]:
    """`sutra train` under two torchrun "nodes" on loopback, one process each: unlike one launcher, the
    second does not stop its process when the first fails, as one on another machine would not; each
    process must end by itself. (returncode, stderr) of each."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    nodes = [subprocess.Popen([*launch, f"--node_rank={rank}", "-m", "sutra", "train", *args], cwd=REPO, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=first_limits if rank == 0 else None)
             for rank, args in enumerate((first, second))]
    errors = [node.communicate(timeout=300)[1] for node in nodes]  # the code is known only once the node has ended
    return [(node.returncode, error) for node, error in zip(nodes, errors)]


@pytest.mark.slow
def test_a_check_that_fails_on_one_node_stops_the_others_and_nodes_must_share_the_run_dir(tmp_path, tiny_dataset):
    """Each process checked alone: the node that could not see the data said why, the other died in
    DDP's first collective with gloo's "Connection closed by peer" (under NCCL: waited for its timeout).
    And a node with a stale copy of the run directory resumed at another step: its collectives paired
    with the wrong ones, a wrong loss was logged, and both hung."""
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"steps_per_epoch": 3, "micro_batch": 2, "grad_accum": 4}, eval={"every_steps": 3})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    missing = tmp_path / "no-data"
    results = two_nodes([str(path)], [str(path), "--set", f"data.path={missing}"])
    reason = f"data.path: {missing} does not exist"
    assert [code for code, _ in results] == [1, 1], results  # each launcher's code for a process that failed
    assert reason in results[1][1] and f"sutra: error: stopped because rank 1 failed: " in results[0][1], results[0][1][-3000:]
    assert reason in results[0][1] and "sutra/train" not in results[0][1] + results[1][1]
    assert not (tmp_path / "run").exists()  # stopped before any work

    shared, stale = tmp_path / "shared", tmp_path / "stale"
    run(sys.executable, "-m", "sutra", "train", str(path), "--set", f"run_dir={shared}", "--stop-after", "2")
    subprocess.run(["cp", "-a", str(shared), str(stale)], check=True)
    run(sys.executable, "-m", "sutra", "train", "--resume", str(shared), "--stop-after", "4")
    metrics = (shared / "metrics.jsonl").read_text()
    (_, first), (second_code, second) = two_nodes(["--resume", str(shared)], ["--resume", str(stale)])
    assert second_code == 1 and f"{stale}: rank 1 sees `last` at step 2 there, rank 0 `last` at step 4; every node must see the same run directory" in second, second[-3000:]
    assert "stopped because rank 1 failed" in first and (shared / "metrics.jsonl").read_text() == metrics  # nothing trained or logged


@pytest.mark.slow
def test_a_checkpoint_rank_0_cannot_write_stops_the_other_nodes_with_its_reason(tmp_path, tiny_dataset):
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"steps_per_epoch": 3, "micro_batch": 2, "grad_accum": 4}, eval={"every_steps": 3})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    (first_code, first), (second_code, second) = two_nodes([str(path)], [str(path)], files_of_at_most(4 << 20))  # the weights take 12 MB
    assert (first_code, second_code) == (1, 1)
    # (the checkpoint named, not the temporary copy that the full disk stopped)
    reason = f"{tmp_path / 'run'}: could not write the checkpoint of step 3 ([Errno 27] File too large: '{tmp_path / 'run' / 'checkpoints' / 'step-00000003'}')"
    assert f"sutra: error: {reason}" in first, first[-3000:]
    assert "continue with `sutra train --resume" in first
    assert f"sutra: error: stopped because rank 0 failed: {reason}" in second, second[-3000:]
    assert "sutra/train" not in first + second, "only torchrun's own summary may show a traceback"
    assert all(re.search(r"exitcode\s*: 2 ", log) for log in (first, second)), "each process exits 2, as for a user's error"
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "data.json", "metrics.jsonl", "recipe.yaml"]
    assert list((run_dir / "checkpoints").iterdir()) == []  # the half-written checkpoint is gone

    resumed = run(sys.executable, "-m", "sutra", "train", "--resume", str(run_dir))  # with room again: no checkpoint yet, so from the start
    assert "done: 6 steps" in resumed.stderr and (run_dir / "e1-best").is_dir()


def test_a_metrics_line_that_cannot_be_written_stops_the_run_with_its_reason(tmp_path, tiny_dataset):
    recipe = micro_recipe(tiny_dataset, tmp_path / "run", train={"epochs": 1, "steps_per_epoch": 30}, eval={"every_steps": 100}, checkpoint={"every_steps": 100},
                          schedule={"warmup_steps": 1, "epochs": [{"peak_lr": 1e-3, "min_lr": 1e-4}]}, logging={"every_steps": 1})
    path = write_recipe(tmp_path / "micro.yaml", recipe)
    result = subprocess.run([sys.executable, "-m", "sutra", "train", str(path)], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300, preexec_fn=files_of_at_most(3000))  # the recipe fits; some 15 metrics lines do
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"sutra: error: \S+/run: could not write metrics.jsonl \(\[Errno 27\] File too large\)\. "
                     r"Make room there, then continue with `sutra train --resume \S+/run`", result.stderr), result.stderr[-2000:]
    written = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert 2000 < len(written) <= 3000 and not list((tmp_path / "run" / "checkpoints").glob("*"))
