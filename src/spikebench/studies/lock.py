"""One study process per study directory: an exclusive ``flock`` on ``STUDY_DIR/.lock``.

The lock file holds the owner's PID so that a second process can name it. The kernel releases a
``flock`` when its holder exits, however it exits (SIGKILL included), so a lock file left by a dead
process is simply taken over; it is never trusted by its content alone.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from spikebench.registry import SpikebenchError

LOCK_NAME = ".lock"


class StudyLockedError(SpikebenchError):
    """Another process is running a study in the same directory."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


class StudyLock:
    """``with StudyLock(study_dir, wait=False):`` hold the directory's lock (creating the directory).

    Without ``wait`` a held lock raises :class:`StudyLockedError` at once; with ``wait`` it blocks until
    the holder is done (``poll`` seconds between tries).
    """

    def __init__(self, study_dir: Path, wait: bool = False, poll: float = 1.0) -> None:
        self.path = Path(study_dir) / LOCK_NAME
        self.wait, self.poll = wait, poll
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise SpikebenchError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise StudyLockedError(
                        f"{self.path.parent} is in use by {_holder(self.path)} (a study running there); "
                        "wait for it to finish, or pass --wait"
                    ) from None
                time.sleep(self.poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
