"""One process at a time writes an output folder: a training workdir, or a checkpoint folder being replaced.

`hold(folder)` takes an exclusive lock on `folder/run.lock` through the `filelock` package (`fcntl.flock`,
which the kernel releases when the process ends, however it ends: a crash or a kill -9 leaves no stale
lock) and writes the holder's pid and host into that file; another process is refused with OutputInUse
naming them. The lock file stays (an unlinked lock file could be locked by two processes at once).
"""
import contextlib
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from vdsr_jax.errors import OutputInUse

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def hold(folder):
    """`with hold(folder):` this process owns the existing `folder`; OutputInUse naming the holder where
    another process owns it."""
    path = Path(folder) / LOCK_FILE
    holder = _read_holder(path)  # before trying: the file is the holder's to write
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputInUse(f"{folder} is in use by another run ({holder or 'a process'}); wait for it to end, or "
                          "write to another folder (--workdir, --out)") from None
    try:
        path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        yield
    finally:
        lock.release()


def _read_holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
