"""One run per output folder: an exclusive ``fcntl.flock`` on a lock file holding the pid.

The kernel drops a flock when its process dies, so a run killed with SIGKILL never blocks the
next one: its lock file is still there (with the dead pid) but unlocked, and is taken over with
a note. Without ``fcntl`` (not POSIX) the folder is not locked.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from hybridize.train.errors import RunInUseError, TrainError

LOCK_NAME = ".hybridize-run.lock"


def prepare_folder(folder: Path) -> bool:
    """Create the run folder (True when it was created here); a one-line error when it is a
    file or cannot be created."""
    if folder.exists() and not folder.is_dir():
        raise TrainError(f"--out {folder} is a file, not a folder; give a folder for the run")
    if folder.is_dir():
        return False
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise TrainError(
            f"cannot create the run folder {folder} ({exc.strerror}); choose another --out"
        ) from None
    return True


class RunLock:
    """Hold ``folder/.hybridize-run.lock`` for the life of a run (``acquire`` / ``release``)."""

    def __init__(self, folder: Path, created: bool = False) -> None:
        self.path = folder / LOCK_NAME
        self.created = created  # remove the folder on release if the run left it empty
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; return a note when a dead run's lock was taken over.

        Raises :class:`RunInUseError` when a live process holds it.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise  # no locking on this file system (e.g. ENOLCK): not "in use"
                # held by a live process
                owner = _read_pid(fd)
                os.close(fd)
                who = f"pid {owner}" if owner else "another process"
                raise RunInUseError(
                    f"another run ({who}) is writing to {self.path.parent}; wait for it to "
                    "finish or choose another --out"
                ) from None
            # the previous holder may have unlinked the file between our open and flock
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        if previous and previous != os.getpid():
            return (
                f"note: took over the lock in {self.path.parent} of an earlier run (pid "
                f"{previous}) that ended without releasing it"
            )
        return None

    def release(self) -> None:
        """Drop the lock and remove the lock file (unlinked first, so no waiter keeps it)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        if self.created:  # a run that stopped before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
