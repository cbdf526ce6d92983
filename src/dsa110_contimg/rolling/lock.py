"""One rolling run at a time: an advisory lock on a file (``run.lock_file``).

The lock is ``flock``-ed, so it dies with its process: a run killed by the
OOM killer or a reboot leaves no stale lock behind. The file keeps the
holder's pid, host and start time for the message a second run prints.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager


class RunLockedError(RuntimeError):
    """Another rolling run holds the lock."""


@contextmanager
def run_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, or raise :class:`RunLockedError` at once."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "unknown holder"
            raise RunLockedError(
                f"another contimg run is running ({holder}); lock {path} is held, exiting"
            ) from None
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {now}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
