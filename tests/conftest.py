import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tokenizer():
    from sutra.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def teacher_dir():
    from sutra import assets

    return assets.ensure("smollm2-135m-instruct")
