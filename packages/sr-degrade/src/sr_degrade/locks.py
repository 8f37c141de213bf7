"""Exclusive locks that the operating system frees when their holder dies.

    with exclusive(out / ".train.lock", f"the build in {out}"):
        ...  # only one process at a time gets here for this lock file

The lock is `flock` on a small file that holds the holder's PID and host name, so a second process
is told who holds it. The kernel releases the lock when the holder exits in any way (kill -9, a
crash, a lost node on a local disk), so a stale lock never blocks a `--resume`: there is nothing to
clean up. The lock file itself is left in place (deleting it would let two processes lock two
different files of one name). On network file systems flock works where the server supports it
(NFS v4, Lustre and GPFS with locking on); on Windows, where there is no fcntl, nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import LockError


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if not text:
        return "another process (PID not yet recorded)"
    pid, host = text[0], (text[1] if len(text) > 1 else "?")
    return f"process {pid} on {host}" if host != socket.gethostname() else f"process {pid}"


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on `path` (created with its folder if needed) for the `with` block.

    Raises LockError at once, naming `what` (e.g. "the build in shards/") and the holder's PID, when
    another process holds it; never waits. Not re-entrant: one holder per lock file, even inside a
    process (a second `exclusive` on the same file in the same process is refused too).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        yield Path(path)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(
                f"{what} is in use by {_holder(fd)} (lock {path}); wait for it to finish, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
