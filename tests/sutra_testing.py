"""Helpers shared by tests in every package: import them with `from sutra_testing import ...`
(tests/ is on pytest's pythonpath; a package's own conftest.py would shadow a module named conftest)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_sutra(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `sutra` command in a subprocess (python -m sutra), capturing text output."""
    result = subprocess.run(
        [sys.executable, "-m", "sutra", *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sutra {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux /proc; [] elsewhere or once it has ended)."""
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def kill_pipeline(process: subprocess.Popen) -> None:
    """SIGKILL a `sutra demo`/`compare` process and its stage (which runs in a session of its own)."""
    for pid in children(process.pid):
        os.kill(pid, signal.SIGKILL)
    process.kill()
    process.communicate()
