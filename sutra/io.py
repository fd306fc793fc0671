"""Atomic file writes (a reader never sees a half-written file or directory), and input reads that
fail in one line."""

import errno
import glob
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from sutra.errors import SutraError
from sutra.processes import has_ended


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path: str | os.PathLike, directory: bool = False) -> Path:
    """`path` as an output a command can write (a file, or with `directory` a directory): one clear
    error, before any work, where it is the wrong kind or lies under a file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():  # mkdir and open would fail on it, or replace the link
        raise SutraError(f"{path}: a link to {os.readlink(path)}, which does not exist; create that, or give another path to write")
    if path.exists() and path.is_dir() != directory:
        raise SutraError(f"{path}: is a {'file' if directory else 'directory'}; give a {'directory' if directory else 'file'} path to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SutraError(f"{path}: cannot be written: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise SutraError(f"{path}: cannot be written: no permission to write in {parent}")
            break
    return path


# the write failures a user mends by making room or choosing another place (other OSErrors are bugs or reads)
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _naming(path: Path, exc: BaseException, tmp: Path | None = None) -> BaseException:
    """`exc` as an OSError that names the output it failed to write (a failed write() names no file,
    a nested atomic write names its temporary copy, safetensors puts the OS error in its message
    only), or `exc` itself."""
    if isinstance(exc, OSError):
        inside = tmp is not None and exc.filename is not None and (Path(exc.filename) == tmp or tmp in Path(exc.filename).parents)
        return OSError(exc.errno, exc.strerror, str(path)) if exc.filename is None or inside else exc
    found = re.search(r"(?:os error|code:) (\d+)", str(exc)) if type(exc).__name__ == "SafetensorError" else None
    if found and int(found.group(1)) in WRITE_FAILURES:
        return OSError(int(found.group(1)), os.strerror(int(found.group(1))), str(path))
    return exc


def check_replaceable(path: str | os.PathLike, kind: str, is_kind, inputs=()) -> Path:
    """An output file that may be (re)written: not one of the command's `inputs` or inside one (a
    model directory, a dataset), and, if it exists, a `kind` this command writes (`is_kind(path)`),
    so a slip in --out never replaces weights, data or hours of results."""
    path = check_output_path(path)
    resolved = path.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if resolved == source or source in resolved.parents:
            where = "is" if resolved == source else f"is inside {source},"
            raise SutraError(f"{path}: {where} an input of this command; write the {kind} somewhere else")
    if path.exists() and not is_kind(path):
        raise SutraError(f"--out {path} exists and is not a {kind}, so it is not replaced; name a new file (or an earlier {kind}) to write")
    return path


def json_format(path: str | os.PathLike) -> str | None:
    """The `format` field of a JSON object file (how Sutra's files say what wrote them), or None for
    anything else: unreadable, not UTF-8, not JSON, not an object, nested past the recursion limit."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return None
    return document.get("format") if isinstance(document, dict) else None


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None):
    """A file to write `path` through, for output too large to hold in memory: it is a temporary
    sibling that replaces `path` (flushed and fsynced) when the block ends, and is removed if the
    block raises, leaving `path` as it was."""
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        try:
            with os.fdopen(fd, mode, encoding=encoding) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _naming(path, exc) from exc
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# where a replaced directory waits for one rename: a name no one gives their own files (a user's
# `.NAME.old` backup must never be taken for it and deleted)
REPLACED_SUFFIX = ".sutra-replaced"


@contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary sibling directory; on success it becomes `path` in one rename.

    An existing `path` is first renamed aside, so a reader may find neither for an instant, and a
    crash between the two renames leaves the old directory aside, which the next call puts back.
    If the block raises, the temporary directory is removed and `path` is untouched.
    """
    path = check_output_path(path, directory=True)
    old = path.with_name(f".{path.name}{REPLACED_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() and old.is_dir():  # a crash between the two renames of a replacement below
            os.replace(old, path)
        _remove_stale_temporaries(path)
        # named by this process, so a later call can tell a killed write's leftovers from one in progress
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"))
    except OSError as exc:  # a place the permission bits allow but the filesystem refuses (/sys, /proc)
        raise SutraError(f"{path}: cannot be written ({exc.strerror}); give another path to write") from None
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        try:
            yield tmp
        except Exception as exc:  # a full disk under a writer that names no file (safetensors, write())
            named = _naming(path, exc, tmp)
            if named is exc:
                raise
            raise named from exc
        for child in tmp.rglob("*"):
            if child.is_file():
                child.chmod(0o666 & ~_umask())  # ordinary permissions: safetensors' save_file makes 0600
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
            elif child.is_dir():
                fsync_dir(child)
        fsync_dir(tmp)  # its entries, so the renamed directory is complete after a power loss too
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temporaries(path: Path) -> None:
    """The temporary siblings killed writes of `path` left (`.NAME.PID.RANDOM.tmp`, of a process
    that is gone): each may be as large as the output."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = re.fullmatch(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp", stale.name)
        if match and has_ended(int(match.group(1))):
            shutil.rmtree(stale, ignore_errors=True)


def read_input(path: Path, missing: str = "no such file") -> bytes:
    """The bytes of input file `path`: where there is none, the error `missing` says what to pass
    instead; where it cannot be read (a directory or a named pipe in its place, no permission) one
    line says why."""
    try:
        if not path.exists():
            raise SutraError(f"{path}: {missing}")
        if path.is_fifo():  # (reading one would wait for a writer forever)
            raise OSError(errno.EINVAL, "a named pipe, not a file")
        return path.read_bytes()
    except OSError as exc:
        raise SutraError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def decode_text(path: Path, data: bytes) -> str:
    """`data` read from `path` as UTF-8 (utf-8-sig: a byte-order mark some editors put first is no
    part of the text); one error naming the line where it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SutraError(f"{path}:{line}: cannot read it (not UTF-8 text, byte {exc.start}); save the file as UTF-8") from None


def read_text_input(path: Path, missing: str = "no such file") -> str:
    return decode_text(path, read_input(path, missing))


def invalid_yaml(path: Path, exc: Exception) -> SutraError:
    """One line naming the file, the line and what YAML (or JSON) found wrong there."""
    if isinstance(exc, json.JSONDecodeError):
        return SutraError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})")
    mark = getattr(exc, "problem_mark", None)
    at = f":{mark.line + 1}" if mark else ""
    return SutraError(f"{path}{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})")
