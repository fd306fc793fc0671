"""Helpers shared by tests in every package: import them with `from sutra_testing import ...`
(tests/ is on pytest's pythonpath; a package's own conftest.py would shadow a module named conftest)."""

import os
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
