"""The one directory where Sutra keeps downloaded and converted assets ($SUTRA_HOME)."""

import os
from pathlib import Path


def _directory(path: Path) -> Path:
    """`path`, made if missing; where it cannot be (a file, a read-only place), one line naming $SUTRA_HOME."""
    if path.is_dir():
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from sutra.errors import SutraError

        reason = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        raise SutraError(f"{path}: cannot be Sutra's asset directory ({reason}); set SUTRA_HOME to a directory you can write") from None
    return path


def sutra_home() -> Path:
    return _directory(Path(os.environ.get("SUTRA_HOME") or Path.home() / ".cache" / "sutra"))


def assets_dir() -> Path:
    return _directory(sutra_home() / "assets")


def downloads_dir() -> Path:
    return _directory(sutra_home() / "downloads")
