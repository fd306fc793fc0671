"""Process lifetimes: one writer per output directory, and children that end with their parent."""

import fcntl
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sutra.errors import SutraError

LOCK_FILE = ".lock"
# A long job stopped by a signal, having saved its work, exits as a shell reports that signal (128 + its
# number); a `sutra train` process stopped because another one was signalled exits as for SIGTERM.
STOPPED_EXIT_CODES = {"Ctrl-C": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


@contextmanager
def exclusive(out: Path, command: str, lock_file: str = LOCK_FILE, what: str | None = None) -> Iterator[None]:
    """Hold OUT/.lock (or OUT/`lock_file`) while `sutra COMMAND` writes OUT (or `what` in it): a second
    run on the same output would make the same files at once and each would overwrite the other's.
    The kernel releases the lock when the holder dies, even by SIGKILL; a holder that finishes
    removes the file, leaving OUT as it made it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. under /proc, or a read-only mount: what check_output_path cannot see
        raise SutraError(f"{out}: cannot be created ({exc.strerror or exc}); choose another output directory") from None
    path = out / lock_file
    while True:
        lock = open(path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder, _, where = lock.read().strip().partition("\n")
            holder = holder or "another process"
            lock.close()
            # killed, a holder's forked child may keep the lock a moment longer; another machine's or
            # container's pid (shared storage) means nothing here, so only this one's is looked up
            if where == process_space() and _has_ended(holder):
                raise SutraError(f"{what or out} is still locked by what {holder} started, though that process has ended; "
                                 f"run the command again in a moment") from None
            raise SutraError(f"{what or out} is in use by {holder}; wait for it to finish or choose another output directory") from None
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()  # locked a file its finishing holder had just removed: lock the new one
    try:
        lock.truncate(0)
        lock.write(f"sutra {command} (pid {os.getpid()})\n{process_space()}\n")
        lock.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so nobody holds a lock on a file that is gone
        lock.close()


def process_space() -> str:
    """Where this process's pid means something: the machine and its pid namespace (containers may share a hostname)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()} {namespace}"


def _has_ended(holder: str) -> bool:
    """Whether the process a lock file names ("sutra train (pid N)"), of this machine, is gone or a zombie."""
    import re

    match = re.search(r"\(pid (\d+)\)", holder)
    return bool(match) and has_ended(int(match.group(1)))


def has_ended(pid: int) -> bool:
    """Whether process `pid` of this machine is gone or a zombie (False where /proc cannot tell)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return Path("/proc/self").exists()  # no such process (where /proc tells)
    return state in ("Z", "X")


@contextmanager
def one_at_a_time(path: Path, waiting: str) -> Iterator[None]:
    """Wait for, then hold, the lock file `path` (printing `waiting` once if another process holds it):
    for work several processes may start at once (torchrun's ranks fetching one asset) that one
    must finish before the others look. The kernel releases it when the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send `sig` to this process when its parent dies, even by SIGKILL (Linux
    prctl PR_SET_PDEATHSIG; elsewhere nothing): a child left running would race the copy of
    itself that a re-run starts, or hold memory nobody reads."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before the prctl call
        os.kill(os.getpid(), sig)
