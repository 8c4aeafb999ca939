"""Completeness: which names are sync tools' temporary files, and when a file counts as fully written.

A file is ready when its size and mtime have been still for `settle_seconds` *and* no writer is known
to hold it open (inotify's modify without a later close-write), with a generous upper bound for
writers that die holding the file. Quiet time alone is not proof, nor is a close-write alone: writers
pause, and writers reopen and append. The copy itself stats before and after as a last check.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import time
from dataclasses import dataclass, field

# Folders that are never watched or scanned: NAS thumbnails, sync tools' own state, VCS, trash.
IGNORED_DIRS = frozenset(
    {
        "@eaDir", "#recycle", "#snapshot", ".stfolder", ".stversions", ".git", ".hg", ".svn",
        ".Trash", ".Trashes", ".Spotlight-V100", ".fseventsd", ".TemporaryItems", "$RECYCLE.BIN",
        ".sync", ".dropbox.cache", "lost+found", ".thumbnails", ".nextcloudsync.log",
    }
)  # fmt: skip

_TEMP_PATTERNS = [
    r"^\.syncthing\..*\.tmp$",  # Syncthing
    r"^~syncthing~.*\.tmp$",  # Syncthing on Windows-style shares
    r"\.partial$",  # rclone
    r"\.part$",  # Nextcloud / ownCloud / browsers
    r"^\.~",  # Nextcloud / LibreOffice lock files
    r"\.!sync$",  # Resilio Sync
    r"\.crdownload$",  # Chrome
    r"\.tmp$",
    r"\.temp$",
    r"\.download$",  # Safari
    r"^\.",  # dotfiles, including rsync's .name.XXXXXX temp files
    r"~$",
]
# One alternation: the rescan asks this of every file in the tree.
_TEMP = re.compile("|".join(f"(?:{p})" for p in _TEMP_PATTERNS), re.DOTALL)


def is_temp_name(name: str) -> bool:
    """True for the in-progress names real sync tools write before renaming to the final name."""
    return _TEMP.search(name) is not None


@dataclass(frozen=True)
class IgnoreRules:
    """What is never looked at: ignored folders, temp names, and anything not a video extension."""

    extensions: frozenset[str]
    extra: tuple[str, ...] = ()

    def ignore_dir(self, name: str) -> bool:
        return name in IGNORED_DIRS or name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in self.extra)

    def wanted_file(self, name: str) -> bool:
        dot = name.rfind(".")
        if dot <= 0 or name[dot:].lower() not in self.extensions:
            return False
        if is_temp_name(name):
            return False
        return not self.extra or not any(fnmatch.fnmatch(name, p) for p in self.extra)

    def wanted_path(self, root: str, path: str) -> bool:
        """A file under `root` is wanted if its name is and no folder between them is ignored."""
        rel = os.path.relpath(path, root)
        if rel.startswith(".."):
            return False
        parts = rel.split(os.sep)
        return self.wanted_file(parts[-1]) and not any(self.ignore_dir(p) for p in parts[:-1])


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    quiet_since: float  # monotonic
    writing_since: float | None = None  # monotonic; set by a modify event, cleared by close-write


@dataclass
class Settler:
    """Tracks candidate files until they are complete. Thread-safe: watchers feed it, a loop polls it."""

    settle_seconds: float
    open_write_timeout: float = 3600.0
    clock: object = field(default=time.monotonic)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator]

    def observe(self, path: str, *, age: float = 0.0) -> None:
        """A file was seen (event or scan). `age` is how long it is already known to have been quiet."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            self.forget(path)
            return
        now = self._now()
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now - max(0.0, age))
            elif (p.size, p.mtime_ns) != (st.st_size, st.st_mtime_ns):
                p.size, p.mtime_ns, p.quiet_since = st.st_size, st.st_mtime_ns, now

    def modified(self, path: str) -> None:
        """inotify saw a write: the file is open for writing until its close-write."""
        now = self._now()
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                p = self._pending[path] = _Pending(-1, -1, now)
            p.quiet_since = now
            if p.writing_since is None:
                p.writing_since = now
        self.observe(path)

    def closed(self, path: str) -> None:
        """inotify saw a close-write: the writer let go, but the quiet period starts again."""
        now = self._now()
        with self._lock:
            p = self._pending.get(path)
            if p is not None:
                p.writing_since = None
                p.quiet_since = now
        self.observe(path)

    def forget(self, path: str) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def move(self, src: str, dest: str) -> None:
        with self._lock:
            p = self._pending.pop(src, None)
            if p is not None:
                self._pending[dest] = p

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def ready(self) -> list[str]:
        """Paths whose size and mtime have been still long enough and that no writer holds; removed."""
        now = self._now()
        with self._lock:
            items = list(self._pending.items())
        out: list[str] = []
        for path, p in items:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                self.forget(path)
                continue
            with self._lock:
                if self._pending.get(path) is not p:
                    continue
                if (p.size, p.mtime_ns) != (st.st_size, st.st_mtime_ns):
                    p.size, p.mtime_ns, p.quiet_since = st.st_size, st.st_mtime_ns, now
                    continue
                if now - p.quiet_since < self.settle_seconds:
                    continue
                if p.writing_since is not None and now - p.writing_since < self.open_write_timeout:
                    continue
                del self._pending[path]
            out.append(path)
        return out
