"""The state lock: one process at a time ingests into a state dir (the daemon, `scan` or `reindex`)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from draftsync.errors import UsageError


class StateLock:
    HINTS = {
        "ingest": "The daemon already ingests continuously; stop it first (systemctl stop draftsync) if you need "
        "this command.",
        "push": "A push window is running; try again when it is done (see `draftsync queue`).",
    }

    def __init__(self, state_dir: Path, name: str = "ingest") -> None:
        self.path = state_dir / f"{name}.lock"
        self.hint = self.HINTS.get(name, "")
        self.fd: int | None = None

    def holder(self) -> int | None:
        """PID of the process holding the lock, or None if it is free."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self, what: str, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for its holder to finish."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the state dir is private from creation
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise UsageError(
                    f"cannot {what}: another draftsync (pid {text or '?'}) is working on {self.path.parent}. {self.hint}"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
