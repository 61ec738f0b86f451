"""One run per output folder: a lock file holding the writer's pid, so a second run on the same
folder is refused (naming the holder) instead of interleaving its writes with the first's.

A killed run leaves its lock behind; the next run sees that the pid is gone and takes it over.
Creating the lock is also the first write into the folder, so a read-only or unusable output
folder is reported before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from docemb.errors import DocembError

LOCK_NAME = ".docemb.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _holder(lock: Path) -> tuple[int, str]:
    try:
        pid_text, _, command = lock.read_text().partition("\n")
        return int(pid_text), command.strip()
    except (OSError, ValueError):
        return -1, ""  # unreadable or half-written: treated as stale


def _create(lock: Path) -> bool:
    """Create the lock file with this process's pid; False if it exists already."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n{socket.gethostname()}: {' '.join(sys.argv)}\n")
    return True


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold `folder`'s lock (creating the folder) for the duration of the block."""
    folder = Path(folder)
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        taken = _create(lock)
        if not taken:
            pid, command = _holder(lock)
            if pid != os.getpid() and _alive(pid):
                raise DocembError(f"{folder}: in use by process {pid} ({command}); wait for it or choose another output folder")
            if pid == os.getpid():
                raise DocembError(f"{folder}: already in use by this process")
            lock.unlink(missing_ok=True)  # its holder was killed
            taken = _create(lock)
            if not taken:
                raise DocembError(f"{folder}: another run took the lock just now")
    except OSError as exc:
        reason = "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror
        raise DocembError(f"{folder}: cannot write there ({reason}); choose another output folder") from None
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
