"""One coordinator per run directory: an exclusive lock held for the coordinator's lifetime.

An advisory `flock` on <run dir>/coordinator.lock: the kernel drops it when the process dies, however it
dies, so a killed coordinator never blocks its own resume. The file names the holder (PID and host) for
the message the second coordinator prints.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class RunDirLocked(Exception):
    pass


class RunLock:
    NAME = "coordinator.lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirLocked(f"{self.path.parent}: another coordinator is running it ({holder}); "
                               "wait for it to finish, or stop it and run the same command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self):
        return self if self.held else self.acquire()

    def __exit__(self, *exc):
        self.release()
