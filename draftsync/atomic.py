"""Atomic files: the one way draftsync writes anything that must never be seen half-written.

A temp file in the target folder, created with its final mode, written, fsync'd, then linked or
renamed into place and the folder fsync'd (borg's SaveFile habit). This module knows nothing about
archives, tokens or thumbnails; it raises plain OSError and callers say what the failure means to them.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Self

TEMP_PREFIX = ".draftsync-"
TEMP_SUFFIX = ".part"


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A temp file in `target_dir`: write, then `commit()` (fsync, link or rename into place, fsync the folder).

    `replace=False` never replaces an existing name (FileExistsError instead). On any exit without a
    commit the temp file is removed, so nothing partial ever carries a final name. `mkdir=False` refuses
    to create a missing folder (the caller decides whether a missing folder is an error).
    """

    def __init__(self, target_dir: Path, *, mode: int = 0o644, mkdir: bool = True) -> None:
        self.dir = target_dir
        if mkdir:
            target_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = target_dir / f"{TEMP_PREFIX}{secrets.token_hex(6)}{TEMP_SUFFIX}"
        # The mode is set at creation: a secret is never readable by others, not even for a moment.
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; we want exactly `mode`
        except OSError:
            pass
        self.f: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self.done = False

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self.f.write(view)
            view = view[n or 0 :]

    def sync(self) -> None:
        os.fsync(self.f.fileno())

    def commit(self, final: Path, *, replace: bool, sync_dir: bool = True) -> None:
        """Fsync, link (or rename) into place, fsync the folder. `sync_dir=False` leaves the folder's fsync to
        the caller, who must make it before anything relies on the name being durable."""
        if not self.f.closed:  # a retry under another name after EEXIST finds it closed already
            self.sync()
            self.f.close()
        if replace:
            os.replace(self.tmp, final)
        else:
            try:
                os.link(self.tmp, final)  # fails with EEXIST: never replaces
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # Filesystems without hard links (some SMB/FUSE): check, then rename.
                if os.path.lexists(final):
                    raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
                os.rename(self.tmp, final)
            self._unlink_tmp()
        if sync_dir:
            fsync_dir(self.dir)
        self.done = True

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self._unlink_tmp()
        self.done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.done:
            self.abort()


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, replace: bool = True, mkdir: bool = True) -> None:
    """Write `data` as `path` in one step: readers see the old file or the new one, never a mix."""
    with AtomicFile(path.parent, mode=mode, mkdir=mkdir) as f:
        f.write(data)
        f.commit(path, replace=replace)
