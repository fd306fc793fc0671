"""One writer per output directory (sutra.processes.exclusive), with real processes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sutra.errors import SutraError
from sutra.processes import exclusive

HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from sutra.processes import exclusive

    with exclusive(Path(sys.argv[1]), "train"):
        child = os.fork()  # inherits the locked file, as a forked worker does
        if child == 0:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)  # (off the test's pipes, which it reads to the end)
            os.dup2(null, 2)
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # killed, in effect: no cleanup, the child lives on
""")


def test_a_lock_left_by_a_killed_holders_child_says_to_retry_not_to_wait(tmp_path):
    """Right after a SIGKILL the lock can outlive the process it names, held by a child it forked:
    "in use by sutra train (pid N)" sent the user to wait for a process that no longer ran."""
    out = tmp_path / "run"
    holder = subprocess.run([sys.executable, "-c", HOLDER, str(out)], capture_output=True, text=True, timeout=60, check=True)
    child = int(holder.stdout)
    try:
        with pytest.raises(SutraError, match=r"run is still locked by what sutra train \(pid \d+\) started, though that process has ended; "
                                             r"run the command again in a moment"):
            with exclusive(out, "train"):
                pass
    finally:
        os.kill(child, signal.SIGKILL)  # (a grandchild: whoever reaps orphans here reaps it)
    for _ in range(200):  # the child's end releases the lock
        try:
            with exclusive(out, "train"):
                break
        except SutraError:
            time.sleep(0.05)
    else:
        pytest.fail("the lock was not released when the child ended")
    assert not (out / ".lock").exists()


def test_the_lock_records_the_pid_namespace_beside_the_machine(tmp_path):
    """Containers can share a hostname and storage: a pid means something only in its own namespace."""
    import socket

    from sutra.processes import process_space

    with exclusive(tmp_path / "out", "train"):
        holder, where = (tmp_path / "out" / ".lock").read_text().splitlines()
    assert holder == f"sutra train (pid {os.getpid()})" and where == process_space()
    assert where == f"{socket.gethostname()} {os.readlink('/proc/self/ns/pid')}"
