"""One writer per run directory: an OS file lock that names its holder.

``RunLock`` holds ``fcntl.flock`` on ``RUN_DIR/.lock`` for as long as a process writes the run
(train, resume, bench). The file holds the holder's PID, so a second writer's error names it.
The kernel drops the lock when its process dies, so the lock of a killed run is taken over.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
from pathlib import Path
from typing import Any

from oodrec.errors import RunError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on ``RUN_DIR/.lock`` for the process writing a run.

    The lock file holds the writer's PID, command and start time. The kernel releases the lock
    when its process dies, so a lock left by a killed run is taken over (with a log line). The
    lock is re-entrant within a process (``oodrec bench`` and ``train`` may both take it).

    Args:
        run_path: the run directory (created if missing).
        command: what the holder does (``train``, ``resume``, ``bench``), for the message.
    """

    _held: dict[Path, list[int]] = {}  # resolved run path -> [fd, depth], this process only

    def __init__(self, run_path: str | Path, command: str = "train") -> None:
        self.run_path = Path(run_path)
        self.command = command

    @property
    def path(self) -> Path:
        return self.run_path / LOCK_FILE

    @staticmethod
    def _holder(fd: int) -> tuple[int | None, str]:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        first = text.split()[0] if text else ""
        return (int(first) if first.isdigit() else None), text

    def acquire(self) -> RunLock:
        """Take the lock.

        Raises:
            RunError: another process holds it (the message names its PID and command).
        """
        import fcntl

        key = self.run_path.resolve()
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            return self
        self.run_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid, text = self._holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"cannot lock {self.path}: {exc}") from None
            who = f"PID {pid}" if pid is not None else "another process"
            detail = f" ({' '.join(text.split()[1:])})" if len(text.split()) > 1 else ""
            raise RunError(
                f"{self.run_path} is being written by {who}{detail}; one process writes a run "
                f"at a time: wait for it to end or stop it"
                + (f" (kill {pid})" if pid is not None else "")
                + ", then retry"
            ) from None
        pid, _ = self._holder(fd)
        if pid is not None and pid != os.getpid():
            state = "no longer running" if not _pid_alive(pid) else "not holding it"
            logger.warning(
                "%s: taking over the lock left by PID %d (%s)", self.run_path, pid, state
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} oodrec {self.command} since {now()}\n".encode())
        RunLock._held[key] = [fd, 1]
        return self

    def release(self) -> None:
        """Release one level of the lock; the last level empties the file and unlocks it."""
        import fcntl

        key = self.run_path.resolve()
        held = RunLock._held.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del RunLock._held[key]
        fd = held[0]
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["LOCK_FILE", "RunLock", "now"]
