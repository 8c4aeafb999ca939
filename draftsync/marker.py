"""The archive's identity and ownership: the marker that says "this folder is draftsync archive X", the
decision whether anything may be written under `archive.root`, and the lock that keeps a second
draftsync (with another state dir) out of the same archive.

A USB disk or NAS share that is not mounted leaves an empty mount point (or nothing) where the archive
was. Writing there would strand videos on the wrong disk and hide them when the real one comes back, so
ingest writes only under a root that carries this catalog's marker `<root>/.draftsync-archive` (JSON
with the archive id, created atomically on a brand-new install only). The decision is one pure function
(`decide`) with a table test; `ArchiveGuard` is the thin I/O shell around it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from draftsync import log
from draftsync.atomic import write_atomic
from draftsync.errors import ArchiveMissing, UsageError

if TYPE_CHECKING:
    from draftsync.catalog import Catalog

_log = log.get("draftsync.marker")

MARKER_NAME = ".draftsync-archive"
META_DIR = ".draftsync"  # a dot-folder: metadata by the archive contract
LOCK_NAME = "lock"
META_KEY = "archive_id"  # the catalog's meta key for the id of its archive
SAMPLE = 5  # catalogued videos looked for when a root has no marker


@dataclass(frozen=True)
class Observed:
    """What is at archive.root right now."""

    kind: Literal["missing", "file", "dir"]
    marker_id: str | None = None
    marker_error: str | None = None  # a marker that is there but unreadable or not ours
    read_only: bool = False  # on a filesystem mounted read-only (or made so by the kernel after disk errors)


@dataclass(frozen=True)
class Verdict:
    action: Literal["ready", "create", "mark", "adopt", "pause"]
    archive_id: str | None = None
    message: str = ""


def decide(
    root: str,
    seen: Observed,
    recorded_id: str | None,
    videos: int,
    ours_present: bool,
    *,
    may_create: bool = True,
    new_id: str = "",
) -> Verdict:
    """May ingest write under `root`, and what must be done first? Pure.

    `recorded_id` is the archive id the catalog remembers, `videos` how many videos it knows, and
    `ours_present` whether catalogued videos (or, for an empty catalog, any sidecars) are found under
    the root. `may_create` is False for commands that must never start an archive (reindex)."""
    v = _decide(root, seen, recorded_id, videos, ours_present, may_create=may_create, new_id=new_id)
    if seen.read_only and v.action != "pause":
        # Without this the archive looks ready, the first write fails, and ingest would pause and resume
        # every few seconds. A missing or unmarked root keeps its own message: that is what to fix first.
        return Verdict("pause", message=(
            f"the archive disk holding {root} is read-only (mounted read-only, or switched to read-only by the "
            "kernel after disk errors: see dmesg); ingest is paused until it is writable again"
        ))  # fmt: skip
    return v


def _decide(
    root: str, seen: Observed, recorded_id: str | None, videos: int, ours_present: bool, *, may_create: bool,
    new_id: str,
) -> Verdict:  # fmt: skip
    knows = videos > 0 or recorded_id is not None
    if seen.kind == "missing":
        if knows or not may_create:
            return Verdict("pause", message=(
                f"the archive folder {root} does not exist: is its disk mounted? Ingest is paused and nothing is "
                "created there until it is back"
            ))  # fmt: skip
        return Verdict("create", new_id, f"created the archive {root}")
    if seen.kind == "file":
        return Verdict("pause", message=f"archive.root {root} is a file, not a folder; ingest is paused")
    if seen.marker_error is not None:
        return Verdict("pause", message=(
            f"the archive marker {root}/{MARKER_NAME} cannot be read ({seen.marker_error}); ingest is paused. "
            "Restore it, or remove it and draftsync recognises the archive by its videos"
        ))  # fmt: skip
    if seen.marker_id is not None:
        if recorded_id is None:
            return Verdict("adopt", seen.marker_id, f"using the archive {root} (id {seen.marker_id})")
        if seen.marker_id == recorded_id:
            return Verdict("ready", recorded_id)
        return Verdict("pause", message=(
            f"{root} holds another draftsync archive (id {seen.marker_id}; this catalog's archive is "
            f"{recorded_id}): is the right disk mounted? Ingest is paused"
        ))  # fmt: skip
    # A folder without a marker: a new archive, an archive from before markers, or an empty mount point.
    if ours_present:
        return Verdict("mark", recorded_id or new_id, f"marked the archive {root} as this catalog's")
    if not knows and may_create:
        return Verdict("mark", new_id, f"started a new archive in {root}")
    return Verdict("pause", message=(
        f"{root} is not marked as a draftsync archive and holds none of this catalog's videos: is the archive "
        "disk mounted? Ingest is paused and nothing is written there"
    ))  # fmt: skip


def observe(root: Path) -> Observed:
    try:
        st = os.stat(root)
    except OSError:
        return Observed("missing")
    if not stat.S_ISDIR(st.st_mode):
        return Observed("file")
    try:
        ro = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except OSError:
        ro = False
    try:
        with open(root / MARKER_NAME, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return Observed("dir", read_only=ro)
    except (OSError, ValueError) as e:
        return Observed("dir", marker_error=str(e), read_only=ro)
    aid = data.get("archive_id") if isinstance(data, dict) else None
    if not isinstance(aid, str) or not aid:
        return Observed("dir", marker_error="it has no archive_id", read_only=ro)
    return Observed("dir", marker_id=aid, read_only=ro)


def writable(root: Path) -> bool:
    """Can a file be created in this (marked) archive now? A disk the kernel switched to read-only after
    errors (ext4's errors=remount-ro) still says read-write to statvfs: only a write tells. Any error but
    EROFS is left for the real write to classify (a full disk is not a read-only one)."""
    meta = root / META_DIR
    probe = meta / f"write-probe-{os.getpid()}"
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(meta, 0o755)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
        os.unlink(probe)
    except OSError as e:
        return e.errno != errno.EROFS
    return True


def write_marker(root: Path, archive_id: str) -> None:
    body = {"draftsync_archive": 1, "archive_id": archive_id, "created": datetime.now().astimezone().isoformat()}
    # Never replaces: two creators racing both end up reading the one that won.
    write_atomic(root / MARKER_NAME, (json.dumps(body, indent=2) + "\n").encode(), replace=False, mkdir=False)


class ArchiveLock:
    """flock on `<root>/.draftsync/lock`: one draftsync writes an archive, whatever its state dir."""

    def __init__(self, root: Path, owner: str) -> None:
        self.root = root
        self.path = root / META_DIR / LOCK_NAME
        self.owner = owner
        self.fd: int | None = None

    def valid(self) -> bool:
        """Held, and still on the file at the path (a remounted disk has a different one)."""
        if self.fd is None:
            return False
        try:
            a, b = os.fstat(self.fd), os.stat(self.path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def acquire(self) -> str | None:
        """Take the lock; None on success, else who holds it. Never creates the root itself."""
        if self.valid():
            return None
        self.release()
        try:
            os.mkdir(self.root / META_DIR, 0o755)
        except FileExistsError:
            pass
        except OSError as e:
            return f"cannot create {self.root / META_DIR}: {e.strerror}"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            return f"cannot open the archive lock {self.path}: {e.strerror}"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            text = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return f"cannot lock the archive ({self.path}): {e.strerror}"
            return (
                f"the archive {self.root} is in use by another draftsync ({text or 'unknown'}); two draftsyncs "
                "must not write one archive. Stop the other one, or give this one its own archive.root"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, state dir {self.owner}".encode(), 0)
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def archive_present(root: Path) -> bool:
    """Whether the marked archive is there: an unmounted disk leaves an empty (or missing) mount point. A
    service that finds a file missing asks this before calling it lost (the disk may just be away), and
    writes metadata only while it holds (else it would land on the wrong disk)."""
    try:
        return (root / MARKER_NAME).is_file()
    except OSError:
        return False


class ArchiveGuard:
    """Asks `decide`, does what it says (create, mark, adopt), and remembers whether writing is allowed.

    With `lock_owner` (the daemon, scan, reindex) it also holds the archive lock while the archive is
    ready; `conflict` says the pause is another draftsync's lock rather than a missing disk."""

    def __init__(self, root: Path, catalog: Catalog, *, may_create: bool = True, lock_owner: str | None = None) -> None:
        self.root = root
        self.catalog = catalog
        self.may_create = may_create
        self.lock = ArchiveLock(root, lock_owner) if lock_owner is not None else None
        self.ok = False
        self.conflict = False
        self.message = ""

    def _ours_present(self, videos: int) -> bool:
        if videos:
            for v in self.catalog.recent_videos(SAMPLE):
                try:
                    if (self.root / v.archive_path).stat().st_size == v.size:
                        return True
                except OSError:
                    continue
            return False
        # An empty catalog (reindex after a lost state dir): any sidecar says this is an archive.
        return any(any(f.endswith(".json") for f in files) for _dirpath, _dirs, files in os.walk(self.root))

    def verdict(self, *, writing: bool = True) -> Verdict:
        """The decision for the archive as it is now, without acting on it. `writing=False` (verify) accepts
        an archive on a read-only disk."""
        seen = observe(self.root)
        recorded = self.catalog.get_meta(META_KEY)
        if not writing:
            seen = replace(seen, read_only=False)
        elif seen.marker_id is not None and recorded in (None, seen.marker_id) and not seen.read_only:
            # Probed only in an archive marked as ours (never on a bare mount point), and only when the
            # archive is looked at afresh (start-up, while paused), not before every write.
            seen = replace(seen, read_only=not writable(self.root))
        # Counting videos (a scan of an index) is needed only when there is no marker to go by.
        videos = self.catalog.video_count() if seen.marker_id is None else 0
        ours = False
        unmarked = seen.kind == "dir" and seen.marker_id is None and seen.marker_error is None
        if unmarked and (videos or recorded is not None or not self.may_create):
            ours = self._ours_present(videos)
        return decide(str(self.root), seen, recorded, videos, ours, may_create=self.may_create,
                      new_id=str(uuid.uuid4()))  # fmt: skip

    def check(self) -> str | None:
        """Make the archive ready if it may be; None when ingest may write, else why not (a sentence)."""
        v = self.verdict()
        try:
            if v.action == "create":
                self.root.mkdir(parents=True, exist_ok=True)
                _log.info("created folder", path=str(self.root))
            if v.action in ("create", "mark"):
                assert v.archive_id is not None
                try:
                    write_marker(self.root, v.archive_id)
                except FileExistsError:
                    return self.check()  # someone else marked it just now: decide again
            if v.action in ("create", "mark", "adopt"):
                assert v.archive_id is not None
                self.catalog.set_meta(META_KEY, v.archive_id)
                _log.info("archive marker", action=v.action, root=str(self.root), archive_id=v.archive_id,
                          detail=v.message)  # fmt: skip
        except OSError as e:
            v = Verdict("pause", message=f"cannot prepare the archive {self.root}: {e.strerror or e}; ingest is paused")
        self.conflict = False
        if v.action != "pause" and self.lock is not None:
            held = self.lock.acquire()
            if held is not None:
                v = Verdict("pause", message=held)
                self.conflict = "in use by another draftsync" in held
        self.ok = v.action != "pause"
        self.message = v.message if not self.ok else ""
        if not self.ok and self.lock is not None:
            self.lock.release()
        return None if self.ok else self.message

    def require(self) -> None:
        """Before writing: cheap when nothing changed, a full check otherwise. Raises ArchiveMissing."""
        if self.ok and (self.lock is None or self.lock.valid()):
            try:
                if stat.S_ISREG(os.stat(self.root / MARKER_NAME).st_mode):
                    return
            except OSError:
                pass
        msg = self.check()
        if msg is not None:
            raise ArchiveMissing(msg)

    def refuse_if_taken(self) -> None:
        """At start-up: another draftsync writing this archive is a usage error, not a pause."""
        if self.conflict:
            raise UsageError(f"cannot start: {self.message}")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
