"""Running pipeline stages as `python -m sutra ...` subprocesses, each reused when it was finished
with the same settings from the same upstream outputs.

A subprocess per stage keeps every stage's own progress bars and error messages, and a stage that
is killed leaves only what that stage itself leaves (each writes atomically and resumes).
"""

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sutra.cli import PIPELINE_PID_ENV
from sutra.errors import SutraError
from sutra.io import atomic_write_json
from sutra.processes import LOCK_FILE, STOPPED_EXIT_CODES
from sutra.train.recipe import LAST, RECIPE_FILE

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


class StageStopped(SutraError):
    """A stage stopped by Ctrl-C or SIGTERM: the pipeline exits as it did."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# what a stage stopped or killed by a signal leaves to do (each stage writes atomically and resumes)
TO_CONTINUE = "run the same command again to continue (finished stages are reused, this one continues from what it saved)"


def sutra(*args, allowed_codes: tuple[int, ...] = (0,)) -> int:
    """Run one `sutra` command with its output shown live; a failure stops the pipeline naming the command."""
    command = [sys.executable, "-m", "sutra", *map(str, args)]
    shown = "sutra " + shlex.join(command[3:])
    print("$ " + shown, flush=True)
    started = time.perf_counter()
    # A terminal's Ctrl-C reaches the stage too (one process group): this process waits for it to
    # stop as it does (a training saves `last` after its step) instead of killing it, as
    # subprocess.run does. (A handler, not SIG_IGN: the stage would inherit an ignored SIGINT.)
    # Nothing is passed on: the stage has its own SIGINT, and a second one would cut its cleanup
    # short; a SIGINT to this process alone is ignored while a stage runs (SIGTERM stops both).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None) if in_main_thread else None
    try:
        stage = subprocess.Popen(command, env={**os.environ, PIPELINE_PID_ENV: str(os.getpid())})  # it ends if we die
        code = stage.wait()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if code in STOPPED_EXIT_CODES.values():
        raise StageStopped(f"`{shown}` was stopped (exit {code}); {TO_CONTINUE}", code)
    if code < 0:  # killed by a signal: it printed no error
        try:
            killer = signal.Signals(-code).name
        except ValueError:
            killer = f"signal {-code}"
        raise SutraError(f"`{shown}` was killed by {killer}{' (out of memory?)' if -code == signal.SIGKILL else ''}; {TO_CONTINUE}")
    if code not in allowed_codes:
        raise SutraError(f"stage failed (exit {code}): {shown}; fix the error above and re-run (finished stages are reused)")
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    return code


class StageLog:
    """`OUT/stages.json`: each stage's settings, the upstream outputs it was made from, and whether
    it finished. A re-run reuses a finished stage, continues an unfinished one, and stops with a
    clear message (deleting nothing) when an output was made with other settings or from upstream
    outputs that have been made again since: reusing it would report numbers that belong to
    another configuration."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / "stages.json"
        # a directory of other files is not an earlier run: its comparison or report would be overwritten
        if not self.path.exists() and out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise SutraError(f"{out} holds files but no stages.json, so it is not this command's output; "
                             "choose an empty or new output directory (nothing was changed)")
        try:
            self.records: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError) as exc:
            raise SutraError(f"{self.path}: unreadable stage record ({exc}); delete {self.out} or choose another output directory") from None
        shaped = isinstance(self.records, dict) and all(
            isinstance(r, dict) and isinstance(r.get("settings"), dict) and isinstance(r.get("inputs"), dict) and "made" in r for r in self.records.values())
        if not shaped:
            raise SutraError(f"{self.path}: unreadable stage record (not the stages this command writes); delete {self.out} or choose "
                             "another output directory")

    def run(self, name: str, output: Path, settings: dict, make: Callable[[], object], needs: tuple[str, ...] = (),
            recheck: Callable[[], object] | None = None) -> Path:
        """Reuse, continue or make stage `name`, whose work is `output` (a file or directory); `recheck`
        runs before a reuse, to refuse one whose inputs (outside the pipeline) have changed since."""
        settings = self._within_out(json.loads(json.dumps(settings, default=str)))  # the same after moving OUT
        inputs = {need: self.records[need]["made"] for need in needs}
        record = self.records.get(name)
        if record is not None:
            recorded = self._within_out(record["settings"])  # (a record written before a path was written so)
            if "recipe_digest" in settings and recorded.get("recipe_digest") == settings["recipe_digest"] \
                    and Path(str(recorded.get("recipe"))).name == Path(str(settings.get("recipe"))).name:
                recorded["recipe"] = settings["recipe"]  # the same file, named from elsewhere (another directory or checkout)
            changed = [f"{key}: {recorded.get(key)!r} -> {settings.get(key)!r}" for key in settings.keys() | recorded.keys()
                       if settings.get(key) != recorded.get(key)]
            if changed and output.exists():
                raise self._stale(name, output, f"was made with other settings ({'; '.join(sorted(changed))})")
            remade = [need for need in needs if record["inputs"].get(need) != inputs[need]]
            if remade and output.exists():
                raise self._stale(name, output, f"was made from an earlier {', '.join(self._output(n) for n in remade)}, which has been made again since")
            if record["made"] and output.exists():
                if recheck is not None:
                    recheck()
                print(f"   reusing {output}", flush=True)
                return output
        elif output.exists():
            raise self._stale(name, output, f"exists but has no record in {self.path}, so what it was made from is unknown")
        self.records[name] = {"output": self._within_out(str(output)), "settings": settings, "inputs": inputs, "made": None}
        self._save()
        make()
        self.records[name]["made"] = time.time_ns()  # later stages record this to notice when it is made again
        self._save()
        return output

    def command(self, name: str, output: Path, args: tuple, needs: tuple[str, ...] = (), allowed_codes: tuple[int, ...] = (0,),
                rerun_to_check: bool = False, check: Callable[[], object] | None = None, **settings) -> Path:
        """A stage that is one `sutra` command; its settings are the command line (and `settings`).
        With `rerun_to_check`, the command runs before a reuse too: one that recognises its finished
        output (`data prepare`) refuses inputs changed since, which the command line cannot show.
        `check` runs after the command, before the stage counts as made: what it refuses is made again."""

        def make() -> None:
            sutra(*args, allowed_codes=allowed_codes)
            if check is not None:
                check()

        def recheck() -> None:
            try:
                sutra(*args, allowed_codes=allowed_codes)
            except StageStopped:
                raise
            except SutraError:
                raise self._stale(name, output, "was made from inputs that have changed since, or cannot be checked (see above)") from None

        return self.run(name, output, {"command": list(map(str, args)), **settings}, make, needs, recheck if rerun_to_check else None)

    def source(self, name: str, path: Path, fingerprint: str) -> None:
        """Record an input made outside the pipeline (an arm's own prepared dataset) by its content
        fingerprint, so the stages that need it are refused, not reused, once it is prepared again."""
        self.records[name] = {"output": str(path), "settings": {}, "inputs": {}, "made": fingerprint}
        self._save()

    def _within_out(self, value):
        """`value` with OUT written as {out}, and Sutra's own recipes directory as {recipes}, wherever
        it starts a path (a word, or after '='; `/tmp/o2` is no path under `/tmp/o`): the same after
        moving OUT, or running from another checkout of Sutra (a recipe's digest is recorded beside it)."""
        if isinstance(value, str):
            for root, name in ((self.out, "{out}"), (REPO_RECIPES, "{recipes}")):
                value = re.sub(rf"(?:^|(?<=[=\s])){re.escape(str(root))}(?=/|$|\s)", name, value)
            return value
        if isinstance(value, dict):
            return {key: self._within_out(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._within_out(item) for item in value]
        return value

    def _output(self, name: str) -> str:
        output = self.records[name]["output"]
        return str(self.out) + output[len("{out}"):] if output.startswith("{out}") else output

    def _stale(self, name: str, output: Path, why: str) -> SutraError:
        after = []  # the stages made from this one, and from those, in the record's order
        while found := [other for other, record in self.records.items() if other not in {name, *after} and {name, *after} & record["inputs"].keys()]:
            after += found
        existing = [self._output(other) for other in after if Path(self._output(other)).exists()]
        also = f" and the outputs made after it ({', '.join(existing)})" if existing else ""
        return SutraError(f"{output} {why}; delete it{also}, or choose another output directory (nothing was deleted)")

    def _save(self) -> None:
        atomic_write_json(self.path, self.records)


def file_digest(path: Path) -> str:
    """A short content hash, so an edited recipe file counts as changed settings."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def recipe_path(name: str) -> Path:
    path = REPO_RECIPES / name
    if not path.is_file():
        raise SutraError(f"{path}: recipe not found; run from a Sutra checkout (the recipes/ directory ships with the repository)")
    return path


def train_run(log: StageLog, name: str, recipe: Path, run_dir: Path, overrides: list[str], needs: tuple[str, ...], epochs: int = 1) -> Path:
    """Train into run_dir, or continue it when a kill left it unfinished; returns the final checkpoint."""

    def make():
        if (run_dir / RECIPE_FILE).is_file() or (run_dir / LAST).exists():  # started before (with or without a checkpoint yet)
            sutra("train", "--resume", run_dir)
        else:
            sutra("train", recipe, *[arg for item in [*overrides, f"run_dir={run_dir}"] for arg in ("--set", item)])

    log.run(name, run_dir, {"recipe": recipe.absolute(), "recipe_digest": file_digest(recipe), "overrides": overrides}, make, needs)
    return run_dir / f"e{epochs}-final"


def evaluate(log: StageLog, name: str, spec: Path, out: Path, tasks: str, limit: float | None, needs: tuple[str, ...],
             perplexity_data: Path | None = None, extra: tuple = ()) -> Path:
    limit_args = ("--limit", limit) if limit is not None else ()
    ppl = ("--perplexity", perplexity_data) if perplexity_data else ()
    from sutra.eval.store import LAYOUT

    args = ("eval", spec, "--tasks", tasks, *limit_args, *ppl, *extra, "--out", out)
    # the store's conversion layout: results scored on items an older Sutra converted differently are stale
    return log.command(name, out, args, needs, benchmark_store_layout=LAYOUT)
