"""The one directory where Sutra keeps downloaded and converted assets ($SUTRA_HOME)."""

import os
from pathlib import Path


def sutra_home() -> Path:
    home = Path(os.environ.get("SUTRA_HOME") or Path.home() / ".cache" / "sutra")
    home.mkdir(parents=True, exist_ok=True)
    return home


def assets_dir() -> Path:
    path = sutra_home() / "assets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_dir() -> Path:
    path = sutra_home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path
