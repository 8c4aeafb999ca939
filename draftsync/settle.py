"""Completeness: which names are sync tools' temporary files, and when a file counts as fully written.

A file is ready when its version (size, mtime, inode, ctime: `unchanged`) has been still for
`settle_seconds` *and* no writer is known to hold it open (inotify's modify without a later
close-write), with a generous upper bound for writers that die holding the file. Quiet time alone is not
proof, nor is a close-write alone: writers pause, and writers reopen and append. On polled roots
(network shares, where no close-write is ever seen) a file must also stay unchanged across more than
one poll. The copy itself stats before and after as a last check.

Watchers only enqueue raw events here; `normalise` (pure) turns a batch of them into one action per
path on the settle loop's thread. Time is injected (`clock`, `now=`), so tests never sleep.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from draftsync import log, names

_log = log.get("draftsync.settle")

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


# Every pattern above starts with '.' or '~' or ends (before an optional final newline: `$`) in one of
# these characters; a name that does neither cannot match, and most names (`.mp4`, `.mov`) are told so
# without running the regex.
_TEMP_LAST = frozenset("ltcdp~\n")


def is_temp_name(name: str) -> bool:
    """True for the in-progress names real sync tools write before renaming to the final name."""
    if name[-1:] not in _TEMP_LAST and name[:1] not in (".", "~"):
        return False
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


# --- versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One version of a file, told without reading it."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int | None = None  # None when not known (a catalog row rebuilt from an old sidecar)

    @classmethod
    def of(cls, st: os.stat_result) -> Version:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def unchanged(a: Version | None, b: Version | None) -> bool:
    """The one "is this source unchanged?" predicate, used by the walk, the settler and the ingest.

    Same size, mtime and inode, and the same ctime when both sides know it: a rewrite in place that
    keeps the size and restores the mtime (`touch -r`) still moves the ctime."""
    if a is None or b is None:
        return False
    if (a.size, a.mtime_ns, a.inode) != (b.size, b.mtime_ns, b.inode):
        return False
    return a.ctime_ns is None or b.ctime_ns is None or a.ctime_ns == b.ctime_ns


# --- events ----------------------------------------------------------------------------------------

EventKind = Literal["created", "changed", "modified", "closed", "deleted", "moved", "overflow"]
Action = Literal["observe", "modified", "closed", "forget"]


@dataclass(frozen=True)
class RawEvent:
    """What a watcher saw, as it saw it. `modified` is inotify's write (a writer holds the file);
    `changed` is a polled change (no writer is known); `overflow` means events were lost under `root`."""

    kind: EventKind
    root: str
    path: str = ""
    dest: str = ""
    at: float = 0.0  # when it happened (the settler's clock), stamped on enqueue


@dataclass
class Normalised:
    actions: dict[str, Action] = field(default_factory=dict)  # in the order paths were last touched
    at: dict[str, float] = field(default_factory=dict)  # when each path was last touched
    ignored: list[str] = field(default_factory=list)  # unwanted names (temp files, other extensions)
    gaps: set[str] = field(default_factory=set)  # roots whose events were lost: rescan them


def normalise(events: Iterable[RawEvent], wanted: Callable[[str, str], bool]) -> Normalised:
    """A batch of raw events as one action per path (pure: no I/O).

    The last word on a path wins: deleted or moved away -> forget; a write without a later close ->
    modified (open for writing); a close after the writes -> closed; anything else -> observe."""
    out = Normalised()
    writing: dict[str, bool | None] = {}
    gone: set[str] = set()

    def touch(path: str, root: str, w: bool | None, at: float, keep: bool = True) -> None:
        if not wanted(root, path):
            out.ignored.append(path)
            return
        gone.discard(path)
        prior = writing.pop(path, None) if keep else None
        writing[path] = prior if w is None else w  # re-insert: keeps "last touched" order
        out.at[path] = at

    for e in events:
        if e.kind == "overflow":
            out.gaps.add(e.root)
        elif e.kind == "deleted":
            writing.pop(e.path, None)
            gone.add(e.path)
        elif e.kind == "moved":
            writing.pop(e.path, None)
            gone.add(e.path)
            if e.dest:
                touch(e.dest, e.root, None, e.at, keep=False)
        elif e.kind == "modified":
            touch(e.path, e.root, True, e.at)
        elif e.kind == "closed":
            touch(e.path, e.root, False, e.at)
        else:  # created, changed
            touch(e.path, e.root, None, e.at)
    for p in gone:
        out.actions[p] = "forget"
    for p, w in writing.items():
        out.actions[p] = "observe" if w is None else "modified" if w else "closed"
    return out


# --- the stability gate ------------------------------------------------------------------------------


@dataclass
class _Pending:
    version: Version | None  # None until first stat'd
    quiet_since: float  # monotonic
    need: float  # quiet seconds required (more on polled roots)
    writing_since: float | None = None  # monotonic; set by a modify event, cleared by close-write


@dataclass(frozen=True)
class Held:
    """A file the settler is still holding back, and why."""

    path: str
    reason: Literal["settling", "open for write"]
    quiet_for: float
    need: float


@dataclass
class Settler:
    """Tracks candidate files until they are complete. Thread-safe: watchers enqueue, a loop polls it."""

    settle_seconds: float
    open_write_timeout: float = 3600.0
    clock: Callable[[], float] = field(default=time.monotonic)
    rules: IgnoreRules | None = None
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inbox: deque[RawEvent] = field(default_factory=deque)
    _quiet: dict[str, float] = field(default_factory=dict)  # root -> quiet seconds required there
    _gaps: set[str] = field(default_factory=set)
    _told: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def _now(self) -> float:
        return self.clock()

    # --- fed by watchers (no I/O on their threads) ---

    def enqueue(self, event: RawEvent) -> None:
        # Stamped now: the quiet period starts when the file was touched, not when the loop got to it.
        self._inbox.append(replace(event, at=self._now()) if not event.at else event)  # deque.append is atomic

    def require_quiet(self, root: str, seconds: float) -> None:
        """Files under `root` must be quiet this long (a polled share: more than one poll)."""
        with self._lock:
            if seconds > self.settle_seconds:
                self._quiet[root.rstrip("/") + "/"] = seconds
            else:
                self._quiet.pop(root.rstrip("/") + "/", None)

    def _need(self, path: str) -> float:
        need = self.settle_seconds
        for prefix, q in self._quiet.items():
            if path.startswith(prefix):
                need = max(need, q)
        return need

    def drain(self) -> None:
        """Apply what the watchers enqueued (on the caller's thread: the settle loop)."""
        batch: list[RawEvent] = []
        while self._inbox:
            batch.append(self._inbox.popleft())
        if not batch:
            return
        rules = self.rules
        n = normalise(batch, rules.wanted_path if rules is not None else lambda _r, _p: True)
        for path in n.ignored:
            self._tell_once(path, "ignored (temp name, ignored folder or not a video extension)")
        with self._lock:
            self._gaps |= n.gaps
        for path, action in n.actions.items():
            at = n.at.get(path) or None
            if action == "forget":
                self.forget(path)
            elif action == "modified":
                self.modified(path, now=at)
            elif action == "closed":
                self.closed(path, now=at)
            else:
                self.observe(path, now=at)

    def take_gaps(self) -> set[str]:
        """Roots whose events were lost (inotify overflow) since the last call: rescan them now."""
        self.drain()
        with self._lock:
            gaps, self._gaps = self._gaps, set()
        return gaps

    def _tell_once(self, path: str, why: str) -> None:
        """Log a skipped file once at debug level (bounded memory)."""
        key = f"{why}\0{path}"
        if key in self._told:
            return
        self._told[key] = None
        if len(self._told) > 10_000:
            self._told.popitem(last=False)
        _log.debug("skipped", path=names.readable(path), reason=why)

    def skipped(self, path: str, why: str) -> None:
        self._tell_once(path, why)

    # --- the gate ---

    def observe(self, path: str, *, age: float = 0.0, now: float | None = None) -> None:
        """A file was seen (event or scan). `age` is how long it is already known to have been quiet."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            self.forget(path)
            return
        v = Version.of(st)
        now = self._now() if now is None else now
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(v, now - max(0.0, age), self._need(path))
            elif not unchanged(p.version, v):
                p.version, p.quiet_since = v, max(p.quiet_since, now)

    def modified(self, path: str, now: float | None = None) -> None:
        """inotify saw a write: the file is open for writing until its close-write."""
        now = self._now() if now is None else now
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                p = self._pending[path] = _Pending(None, now, self._need(path))
            p.quiet_since = max(p.quiet_since, now)
            if p.writing_since is None:
                p.writing_since = now
        self.observe(path, now=now)

    def closed(self, path: str, now: float | None = None) -> None:
        """inotify saw a close-write: the writer let go, but the quiet period starts again."""
        now = self._now() if now is None else now
        with self._lock:
            p = self._pending.get(path)
            if p is not None:
                p.writing_since = None
                p.quiet_since = max(p.quiet_since, now)
        self.observe(path, now=now)

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
        self.drain()
        with self._lock:
            return list(self._pending)

    def held(self, now: float | None = None) -> list[Held]:
        """What is held back and why, for `status`."""
        now = self._now() if now is None else now
        with self._lock:
            items = list(self._pending.items())
        out = []
        for path, p in items:
            writing = p.writing_since is not None and now - p.writing_since < self.open_write_timeout
            out.append(Held(path, "open for write" if writing else "settling", max(0.0, now - p.quiet_since), p.need))
        return out

    def ready(self, now: float | None = None) -> list[str]:
        """Paths whose version has been still long enough and that no writer holds; removed."""
        self.drain()
        now = self._now() if now is None else now
        with self._lock:
            items = list(self._pending.items())
        out: list[str] = []
        for path, p in items:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                self.forget(path)
                continue
            v = Version.of(st)
            with self._lock:
                if self._pending.get(path) is not p:
                    continue
                if not unchanged(p.version, v):
                    p.version, p.quiet_since = v, now
                    continue
                if now - p.quiet_since < p.need:
                    continue
                if p.writing_since is not None and now - p.writing_since < self.open_write_timeout:
                    continue
                del self._pending[path]
            out.append(path)
        return out
