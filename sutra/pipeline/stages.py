"""Running pipeline stages as `python -m sutra ...` subprocesses, each reused when its output exists.

A subprocess per stage keeps every stage's own progress bars and error messages, and a stage that
is killed leaves only what that stage itself leaves (each writes atomically and resumes).
"""

import shlex
import subprocess
import sys
import time
from pathlib import Path

from sutra.errors import SutraError

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def sutra(*args, allowed_codes: tuple[int, ...] = (0,)) -> int:
    """Run one `sutra` command with its output shown live; a failure stops the pipeline naming the command."""
    command = [sys.executable, "-m", "sutra", *map(str, args)]
    print("$ sutra " + shlex.join(command[3:]), flush=True)
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    if code not in allowed_codes:
        raise SutraError(f"stage failed (exit {code}): sutra {shlex.join(command[3:])}; fix the error above and re-run (finished stages are reused)")
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    return code


def reuse(path: Path) -> bool:
    """True (and says so) when a stage's output is already there."""
    if path.exists():
        print(f"   reusing {path}", flush=True)
        return True
    return False


def recipe_path(name: str) -> Path:
    path = REPO_RECIPES / name
    if not path.is_file():
        raise SutraError(f"{path}: recipe not found; run from a Sutra checkout (the recipes/ directory ships with the repository)")
    return path


def train_run(recipe: Path | str, run_dir: Path, overrides: list[str], epochs: int = 1) -> Path:
    """Train into run_dir unless its final checkpoint exists; continue a killed run from `last`."""
    final = run_dir / f"e{epochs}-final"
    if not reuse(final):
        if (run_dir / "last").is_dir():
            sutra("train", "--resume", run_dir)
        else:
            sutra("train", recipe, *[arg for item in [*overrides, f"run_dir={run_dir}"] for arg in ("--set", item)])
    return final


def evaluate(spec: Path, out: Path, tasks: str, limit: float | None, perplexity_data: Path | None = None, extra: tuple = ()) -> Path:
    if not reuse(out):
        limit_args = ("--limit", limit) if limit is not None else ()
        ppl = ("--perplexity", perplexity_data) if perplexity_data else ()
        sutra("eval", spec, "--tasks", tasks, *limit_args, *ppl, *extra, "--out", out)
    return out
