"""Helpers shared by tests in every package: import them with `from sutra_testing import ...`
(tests/ is on pytest's pythonpath; a package's own conftest.py would shadow a module named conftest)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# pip configured for no network: no index, no user config (a test must never reach PyPI)
NO_INDEX = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}


def run_sutra(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `sutra` command in a subprocess (python -m sutra), capturing text output."""
    result = subprocess.run(
        [sys.executable, "-m", "sutra", *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sutra {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def write_wheel(path, name: str, version: str, payload: bytes, member: str = "data.bin"):
    """A minimal valid wheel, enough for `pip download --no-deps` to accept it from --find-links."""
    import zipfile

    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/{member}", payload)
        zf.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: sutra-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist_info}/RECORD", "")
    return path
