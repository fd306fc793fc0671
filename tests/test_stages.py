"""The pipeline's stage record: a re-run reuses only what was finished with the same settings from the
same upstream outputs, continues what was not finished, and refuses (deleting nothing) what is stale."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sutra_testing import REPO

from sutra.errors import SutraError
from sutra.pipeline.stages import StageLog, train_run

from train.train_helpers import micro_recipe, tiny_dataset, write_recipe  # noqa: F401 (tiny_dataset is a fixture)


def writer(path, text, calls):
    def make():
        calls.append(path.name)
        path.write_text(text)
    return make


def test_finished_stages_are_reused_and_changed_settings_are_refused(tmp_path, capsys):
    out, calls = tmp_path / "out", []
    a, b = out / "a.txt", out / "b.txt"
    out.mkdir()
    log = StageLog(out)
    log.run("a", a, {"n": 1}, writer(a, "a1", calls))
    log.run("b", b, {"path": str(out / "a.txt")}, writer(b, "b1", calls), needs=("a",))

    log = StageLog(out)  # a re-run reads the record back
    log.run("a", a, {"n": 1}, writer(a, "a2", calls))
    log.run("b", b, {"path": str(out / "a.txt")}, writer(b, "b2", calls), needs=("a",))
    assert calls == ["a.txt", "b.txt"] and a.read_text() == "a1"
    assert f"reusing {a}" in capsys.readouterr().out

    with pytest.raises(SutraError, match=rf"a\.txt was made with other settings \(n: 1 -> 2\); delete it and the outputs made after it \({re.escape(str(b))}\), "
                                         r"or choose another output directory \(nothing was deleted\)"):
        StageLog(out).run("a", a, {"n": 2}, writer(a, "a3", calls))
    assert a.read_text() == "a1"

    # the output directory moved: settings naming paths inside it still match
    moved = tmp_path / "moved"
    out.rename(moved)
    StageLog(moved).run("b", moved / "b.txt", {"path": str(moved / "a.txt")}, writer(moved / "b.txt", "b3", calls))
    assert calls == ["a.txt", "b.txt"]


def test_only_paths_under_out_are_recorded_relative_to_it(tmp_path):
    """OUT was replaced as text in the record: `/tmp/o2/x` became `{out}2/x` (a path outside OUT
    read as one inside it), and a non-ASCII OUT, escaped in the JSON text, was never found."""
    out, sibling, calls = tmp_path / "ö out", tmp_path / "ö out2", []
    out.mkdir()
    settings = {"command": [str(out / "a"), f"data.path={out / 'b'}", str(sibling / "c"), f"x{out}"]}
    StageLog(out).run("a", out / "a", settings, writer(out / "a", "a1", calls))
    assert json.loads((out / "stages.json").read_text())["a"]["settings"] == {"command": ["{out}/a", "data.path={out}/b", str(sibling / "c"), f"x{out}"]}
    moved = tmp_path / "moved"
    out.rename(moved)
    StageLog(moved).run("a", moved / "a", {"command": [str(moved / "a"), f"data.path={moved / 'b'}", str(sibling / "c"), f"x{out}"]},
                        writer(moved / "a", "a2", calls))
    assert calls == ["a"]  # reused after the move
    assert json.loads((moved / "stages.json").read_text())["a"]["output"] == "{out}/a"


def test_a_shipped_recipe_is_recorded_by_name_so_another_checkout_reuses_the_stage(tmp_path):
    """Its absolute path made a demo's stages 'made with other settings' when run from another clone
    of Sutra (the recipe's digest is recorded beside it); records written before still match."""
    from sutra.pipeline.stages import REPO_RECIPES

    out, calls = tmp_path / "out", []
    out.mkdir()
    recipe = str(REPO_RECIPES / "tiny-cpu.yaml")
    StageLog(out).run("a", out / "a", {"recipe": recipe}, writer(out / "a", "a1", calls))
    assert json.loads((out / "stages.json").read_text())["a"]["settings"] == {"recipe": "{recipes}/tiny-cpu.yaml"}
    records = json.loads((out / "stages.json").read_text())
    records["a"] |= {"settings": {"recipe": recipe}, "output": str(out / "a")}  # as an earlier version wrote it
    (out / "stages.json").write_text(json.dumps(records))
    StageLog(out).run("a", out / "a", {"recipe": recipe}, writer(out / "a", "a2", calls))
    assert calls == ["a"]


def test_an_output_made_from_an_upstream_made_again_is_refused(tmp_path):
    out, calls = tmp_path / "out", []
    a, b = out / "a.txt", out / "b.txt"
    out.mkdir()
    log = StageLog(out)
    log.run("a", a, {}, writer(a, "a1", calls))
    log.run("b", b, {}, writer(b, "b1", calls), needs=("a",))

    a.unlink()  # the user deletes the upstream output to make it again
    log = StageLog(out)
    log.run("a", a, {}, writer(a, "a2", calls))
    with pytest.raises(SutraError, match=rf"{b} was made from an earlier {a}, which has been made again since"):
        log.run("b", b, {}, writer(b, "b2", calls), needs=("a",))
    assert b.read_text() == "b1"

    b.unlink()  # deleting the stale output lets it be made again
    StageLog(out).run("b", b, {}, writer(b, "b3", calls), needs=("a",))
    assert b.read_text() == "b3" and calls == ["a.txt", "b.txt", "a.txt", "b.txt"]


def test_a_directory_of_other_files_is_refused_before_any_stage(tmp_path):
    """`sutra compare --out DIR` (or demo) on a directory it did not make: its comparison table
    would overwrite the user's comparison.md."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "comparison.md").write_text("my notes")
    with pytest.raises(SutraError, match=r"holds files but no stages\.json, so it is not this command's output; choose an empty or new"):
        StageLog(out)
    assert (out / "comparison.md").read_text() == "my notes" and not (out / "stages.json").exists()


def test_an_unfinished_stage_continues_and_an_unrecorded_output_is_refused(tmp_path):
    out = tmp_path / "out"
    work = out / "work"
    out.mkdir()
    StageLog(out).run("other", out / "other.txt", {}, writer(out / "other.txt", "o", []))
    work.mkdir()
    (work / "part-0").write_text("x")
    with pytest.raises(SutraError, match=r"exists but has no record in .*stages\.json"):
        StageLog(out).run("w", work, {}, lambda: None)

    (work / "part-0").unlink()
    work.rmdir()

    def killed():
        work.mkdir()
        (work / "part-0").write_text("x")
        raise SutraError("stage failed")

    with pytest.raises(SutraError, match="stage failed"):
        StageLog(out).run("w", work, {}, killed)
    StageLog(out).run("w", work, {}, lambda: (work / "part-1").write_text("y"))  # continued, not refused
    assert sorted(p.name for p in work.iterdir()) == ["part-0", "part-1"]

    for damaged in ("{not json", "[]", '{"w": {"output": "x"}}'):  # the last two were tracebacks
        (out / "stages.json").write_text(damaged)
        with pytest.raises(SutraError, match="unreadable stage record"):
            StageLog(out)


def _micro_training(tmp_path, dataset, steps: int):
    """A pipeline (a Python process) whose one stage trains the micro model for `steps` steps: (out, run_dir, recipe, process)."""
    out = tmp_path / "out"
    run_dir = out / "run"
    recipe = write_recipe(tmp_path / "micro.yaml", micro_recipe(
        dataset, run_dir, train={"epochs": 1, "steps_per_epoch": steps}, schedule={"kind": "cosine", "warmup_steps": 2, "epochs": [{"peak_lr": 1e-2, "min_lr": 1e-3}]},
        eval={"every_steps": 1000, "max_windows": 4}, checkpoint={"every_steps": 1000}))
    script = f"""
from pathlib import Path
from sutra.pipeline.stages import StageLog, train_run
from sutra.errors import SutraError
try:
    train_run(StageLog(Path({str(out)!r})), "run", Path({str(recipe)!r}), Path({str(run_dir)!r}), [], ())
except SutraError as exc:
    print(f"sutra: error: {{exc}}")
    raise SystemExit(exc.exit_code)
"""
    # a session of its own, as a terminal's job is: a signal to its group reaches the stage too
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return out, run_dir, recipe, process


def _wait_for(condition, process, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, f"{what} never happened: {process.communicate()[0][-3000:]}"
        time.sleep(0.02)


def _continued(out, run_dir, recipe, steps: int) -> None:
    """A re-run of the stage trains the run to its end, continuing it, and records it as made."""
    log = StageLog(out)
    final = train_run(log, "run", recipe, run_dir, [], ())
    assert final == run_dir / "e1-final" and final.is_dir()
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["steps_per_epoch"] == steps
    assert log.records["run"]["made"] is not None


def test_a_stage_whose_check_fails_is_made_again_not_reused(tmp_path, capsys):
    """`sutra demo`'s synth stage stopped short with nothing accepted was recorded as made, so every
    re-run reused it and failed the same way."""
    out = tmp_path / "out"
    out.mkdir()
    output = out / "entries"

    def check():
        if not output.exists():
            raise SutraError("nothing accepted")

    with pytest.raises(SutraError, match="nothing accepted"):
        StageLog(out).command("synth", output, ("--version",), check=check)
    assert StageLog(out).records["synth"]["made"] is None
    output.mkdir()  # (what a second try makes)
    StageLog(out).command("synth", output, ("--version",), check=check)
    StageLog(out).command("synth", output, ("--version",), check=check)
    assert capsys.readouterr().out.count("$ sutra --version") == 2 and StageLog(out).records["synth"]["made"] is not None


def test_a_training_is_reused_whatever_directory_its_recipe_was_named_from(tmp_path, capsys, monkeypatch):
    """The recipe was recorded as given (relative to the working directory): the same experiment run
    from another directory was refused as made with other settings. Records made so are still reused."""
    from sutra.pipeline.stages import file_digest

    out, recipe = tmp_path / "out", tmp_path / "exp" / "micro.yaml"
    recipe.parent.mkdir()
    recipe.write_text("name: micro\n")
    (out / "run").mkdir(parents=True)
    for given in ("exp/micro.yaml", str(recipe)):  # an older record (relative), then one of this version (absolute)
        settings = {"recipe": given, "recipe_digest": file_digest(recipe), "overrides": []}
        (out / "stages.json").write_text(json.dumps({"run": {"output": str(out / "run"), "settings": settings, "inputs": {}, "made": 1}}))
        monkeypatch.chdir(recipe.parent)  # and named from another directory
        assert train_run(StageLog(out), "run", Path("micro.yaml"), out / "run", [], ()) == out / "run" / "e1-final"
        assert f"reusing {out / 'run'}" in capsys.readouterr().out
    recipe.write_text("name: edited\n")
    with pytest.raises(SutraError, match="was made with other settings"):
        train_run(StageLog(out), "run", Path("micro.yaml"), out / "run", [], ())


def test_a_training_killed_before_its_first_checkpoint_is_continued(tmp_path, tiny_dataset):
    """The kill leaves recipe.yaml but no `last`: the stage must resume it, not start it again
    (a fresh start refuses a run directory that already holds a recipe)."""
    out, run_dir, recipe, started = _micro_training(tmp_path, tiny_dataset, 70)
    try:
        _wait_for(lambda: (run_dir / "recipe.yaml").is_file(), started, "recipe.yaml")
    finally:
        if started.poll() is None:
            os.killpg(started.pid, signal.SIGKILL)  # the stage's `sutra train` too
        started.communicate()
    assert (run_dir / "recipe.yaml").is_file() and not (run_dir / "last").exists()
    _continued(out, run_dir, recipe, 70)


@pytest.mark.parametrize("whom, code, name", [("group", 130, "Ctrl-C"), ("pipeline", -signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_stops_a_pipeline_training_after_its_step_and_a_re_run_continues_it(tmp_path, tiny_dataset, whom, code, name):
    """A terminal's Ctrl-C reaches the pipeline and its stage: the pipeline waits while the training
    saves `last` after the step in flight (it is not killed), then exits 130 with the stage not
    recorded as made. SIGTERM to the pipeline alone stops the stage too (it ends with its pipeline),
    which saves `last` the same way."""
    out, run_dir, recipe, started = _micro_training(tmp_path, tiny_dataset, 75)
    try:
        _wait_for(lambda: '"step": 3,' in ((run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""),
                  started, "step 3")
        if whom == "group":
            os.killpg(started.pid, signal.SIGINT)
        else:
            os.kill(started.pid, signal.SIGTERM)
        output = started.communicate(timeout=120)[0]
    finally:
        if started.poll() is None:
            started.kill()
    assert started.returncode == code, output[-3000:]
    assert f"({name}), `last` saved" in output, output[-3000:]
    if whom == "group":  # (a pipeline killed by SIGTERM ends at once; its stage stops on its own)
        assert "sutra: error: `sutra train " in output and f"was stopped (exit {code})" in output, output[-3000:]
    saved = json.loads((run_dir / "last" / "sutra.json").read_text())["training"]["step"]
    assert 3 <= saved < 75
    assert json.loads((out / "stages.json").read_text())["run"]["made"] is None
    (run_dir / "recipe.yaml").unlink()  # and the re-run continues from `last` (which records the recipe) even so
    _continued(out, run_dir, recipe, 75)
    assert json.loads((run_dir / "e1-final" / "sutra.json").read_text())["training"]["step"] == 75


def _running(pid: int) -> bool:
    try:
        state = next(line for line in open(f"/proc/{pid}/status") if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return "Z" not in state.split()[1]  # a zombie has ended (nobody reaped it yet)


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stage_killed_by_a_signal_says_so_and_how_to_continue(tmp_path):
    """An out-of-memory kill (SIGKILL) prints nothing, yet was "stage failed ... fix the error above"."""
    import socket
    import threading

    from sutra.pipeline.stages import sutra

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # never accepted: the stage waits
    out = tmp_path / "o"
    raised = []
    stage = threading.Thread(target=lambda: raised.append(pytest.raises(SutraError, sutra, "synth", "run", "--n", "1", "--out", out, "--base-url",
                                                                        f"http://127.0.0.1:{listener.getsockname()[1]}/v1")))
    stage.start()
    try:
        def started() -> list[int]:  # (the thread's children are listed under its own task)
            pids = [int(c) for path in Path("/proc/self/task").glob("*/children") for c in path.read_text().split()]
            return [pid for pid in pids if str(out).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
        deadline = time.monotonic() + 60
        while not started():
            assert time.monotonic() < deadline and stage.is_alive()
            time.sleep(0.05)
        os.kill(started()[0], signal.SIGKILL)
        stage.join(timeout=60)
    finally:
        listener.close()
    assert raised and "was killed by SIGKILL (out of memory?); run the same command again to continue" in str(raised[0].value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_stage_ends_when_its_pipeline_is_killed(tmp_path):
    """A stage outliving a SIGKILLed pipeline would race the copy a re-run starts. The stage here is
    a synth run waiting on a server that never answers (about 30 s of retries on its own)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # never accepted: every request hangs
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    script = f"from sutra.pipeline.stages import sutra; sutra('synth', 'run', '--n', '1', '--out', {str(tmp_path / 'o')!r}, '--base-url', {url!r})"
    pipeline = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _children(pipeline.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (stage,) = _children(pipeline.pid)
        time.sleep(1.0)
        assert _running(stage)
        pipeline.kill()
        pipeline.wait()
        deadline = time.monotonic() + 15
        while _running(stage) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(stage)
    finally:
        for pid in _children(pipeline.pid):
            os.kill(pid, signal.SIGKILL)
        if pipeline.poll() is None:
            pipeline.kill()
        listener.close()
