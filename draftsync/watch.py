"""Watching: one watchdog observer per root (inotify, or polling for network shares), the ignore rules
applied before any watch is added, and the reconciliation walk that finds what events missed.

The watcher only enqueues: each event becomes a `RawEvent` in the Settler's inbox, nothing else happens
on watchdog's threads. Observers are supervised; one that dies, a root that was remounted and an inotify
queue overflow are each followed by a rescan at once. Every walk is iterative (a folder nested 1,000
deep is just a long list), and folders that cannot be read are remembered so that the root is shown as
degraded rather than silently half-watched.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter
from watchdog.utils.dirsnapshot import DirectorySnapshot

from draftsync import log
from draftsync.settle import EventKind, IgnoreRules, RawEvent, Settler

_log = log.get("draftsync.watch")

NETWORK_FS = {
    "cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "afs", "ceph", "glusterfs", "davfs", "ncpfs", "sshfs",
    "virtiofs", "vboxsf", "vmhgfs",
}  # fmt: skip
SYSCTL_HINT = (
    "raise the limit with `sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/); "
    "polling this folder meanwhile"
)


def mount_fstype(path: str, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The filesystem type of the mount that holds `path` (longest matching mount point)."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, parts[2]
    return best_type


def needs_polling(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NETWORK_FS or fstype.startswith("fuse"))


def walk_files(
    root: str, rules: IgnoreRules, recursive: bool = True, unreadable: list[str] | None = None
) -> Iterator[os.DirEntry[str]]:
    """Every wanted regular file under `root`, never entering ignored folders or following symlinks.

    Iterative (any depth); folders that cannot be listed are appended to `unreadable` when given."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue  # vanished while we walked
        except OSError:
            if unreadable is not None:
                unreadable.append(d)
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if recursive and not rules.ignore_dir(e.name):
                            stack.append(e.path)
                    elif e.is_file(follow_symlinks=False) and rules.wanted_file(e.name):
                        yield e
                except OSError:
                    continue


# --- inotify with ignore rules and limit detection -----------------------------------------------
# watchdog's recursive inotify watch adds a watch for every sub-folder and swallows the errors of
# all but the root. We subclass its watch group to skip ignored folders before a watch is added and
# to report a hit watch limit, so that the root can fall back to polling instead of going blind.

from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup  # noqa: E402
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, Mask  # noqa: E402

_limit_hits: dict[str, int] = {}
_limit_lock = threading.Lock()


def _record_limit(root: str, err: int) -> None:
    with _limit_lock:
        _limit_hits.setdefault(root, err)


def take_limit_hit(root: str) -> int | None:
    with _limit_lock:
        return _limit_hits.pop(root, None)


def _subdirs(path: bytes, rules: IgnoreRules | None, unreadable: Callable[[bytes], None]) -> Iterator[bytes]:
    """Every sub-folder under `path` to watch (iteratively: depth is no limit), ignored ones skipped."""
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        except OSError:
            unreadable(d)
            continue
        with it:
            for e in it:
                try:
                    if not e.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                if rules is not None and rules.ignore_dir(os.fsdecode(e.name)):
                    continue
                stack.append(e.path)
                yield e.path


class _FilteredWatchGroup(InotifyWatchGroup):
    rules: IgnoreRules | None = None
    root: str = ""
    watch: RootWatch | None = None

    def _unreadable(self, path: bytes) -> None:
        if self.watch is not None:
            self.watch.note_unreadable(os.fsdecode(path))

    def _add_all_callbacks(self, path: bytes) -> None:
        self._add_callback(path)
        if not (os.path.isdir(path) and self.is_recursive):
            return
        for sub in _subdirs(path, self.rules, self._unreadable):
            self._add_callback(sub)

    def _recursive_simulate(self, src_path: bytes) -> list[InotifyEvent]:
        # watchdog walks a moved-in folder recursively; this does the same without recursion.
        events = []
        for d in [src_path, *_subdirs(src_path, self.rules, self._unreadable)]:
            wd_root = self._active_callbacks_by_path.get(d)
            if wd_root is None:
                continue
            try:
                with os.scandir(d) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            except OSError:
                continue
            for name, is_dir in entries:
                mask = Mask(InotifyConstants.IN_CREATE | (InotifyConstants.IN_ISDIR if is_dir else 0))
                events.append(InotifyEvent(wd_root, mask, 0, name))
        return events

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.watch is not None:
            self.watch.sink(RawEvent("overflow", self.root))

    def _add_callback(self, path: bytes) -> None:
        name = os.fsdecode(os.path.basename(path))
        if path != self.path and self.rules is not None and self.rules.ignore_dir(name):
            return
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EMFILE):
                _record_limit(self.root, e.errno)
            elif e.errno in (errno.EACCES, errno.EPERM, errno.EIO):
                self._unreadable(path)
            if path == self.path:
                raise


def _emitter_for(rules: IgnoreRules, root: str, watch: RootWatch | None) -> type[InotifyEmitter]:
    class _Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            group = _FilteredWatchGroup.__new__(_FilteredWatchGroup)
            group.rules = rules
            group.root = root
            group.watch = watch
            # dataclass __init__ activates the group, so the attributes above must exist first
            _FilteredWatchGroup.__init__(
                group,
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=False,
            )
            self._inotify = group

    return _Emitter


class FilteredInotifyObserver(InotifyObserver):
    def __init__(self, rules: IgnoreRules, root: str, watch: RootWatch | None = None) -> None:
        super().__init__()
        self._emitter_class = _emitter_for(rules, root, watch)


def _filtered_listdir(
    rules: IgnoreRules, unreadable: Callable[[str], None] | None = None
) -> Callable[[str | None], Iterator[os.DirEntry[Any]]]:
    def listdir(path: str | None) -> Iterator[os.DirEntry[Any]]:
        try:
            it = os.scandir(path)
        except PermissionError:
            if unreadable is not None and path is not None:
                unreadable(path)
            raise
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if not rules.ignore_dir(e.name):
                            yield e
                    elif rules.wanted_file(e.name):
                        yield e
                except OSError:
                    continue

    return listdir


class _Snapshot(DirectorySnapshot):
    """watchdog's snapshot with an iterative walk (its own recursion dies 1,000 folders deep)."""

    def walk(self, root: str) -> Iterator[tuple[str, os.stat_result]]:
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                paths = [os.path.join(d, e.name) for e in self.listdir(d)]
            except OSError:
                continue  # gone, replaced by a file, or unreadable (recorded by listdir)
            for p in paths:
                try:
                    st = self.stat(p)
                except OSError:
                    continue
                yield p, st
                if self.recursive and stat_is_dir(st):
                    stack.append(p)


def stat_is_dir(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISDIR(st.st_mode)


class _PollingEmitter(PollingEmitter):
    def __init__(self, *a: Any, stat: Callable[[str], os.stat_result], listdir: Any, **kw: Any) -> None:
        super().__init__(*a, stat=stat, listdir=listdir, **kw)
        self._take_snapshot = lambda: _Snapshot(
            self.watch.path, recursive=self.watch.is_recursive, stat=stat, listdir=listdir
        )


class PollingObserver(BaseObserver):
    """Polls a root with our filtered listing and iterative snapshot."""

    def __init__(self, listdir: Any, *, polling_interval: float) -> None:
        from functools import partial

        super().__init__(partial(_PollingEmitter, stat=os.stat, listdir=listdir), timeout=polling_interval)  # type: ignore[arg-type]


# --- per-root watch ----------------------------------------------------------------------------------


def event_kind(event: FileSystemEvent, mode: str) -> EventKind | None:
    """What a watchdog event means to the settler (None: nothing). Pure."""
    if isinstance(event, FileMovedEvent):
        return "moved"
    if isinstance(event, FileDeletedEvent):
        # Deletions are only noted by the rescan (sources marked gone); the archive never follows them.
        return "deleted"
    if isinstance(event, FileModifiedEvent):
        return "modified" if mode == "inotify" else "changed"
    if isinstance(event, FileClosedEvent):
        return "closed"
    if isinstance(event, FileCreatedEvent | FileAttribEvent):
        return "created" if isinstance(event, FileCreatedEvent) else "changed"
    return None  # opened, closed without writing: our own reads among them


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: translate and enqueue, nothing else."""

    def __init__(self, watch: RootWatch) -> None:
        self.w = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event_kind(event, self.w.mode)
        if kind is None:
            return
        self.w.last_event = time.time()
        dest = os.fsdecode(event.dest_path) if kind == "moved" else ""
        self.w.sink(RawEvent(kind, self.w.root, os.fsdecode(event.src_path), dest))


@dataclass
class RootWatch:
    """One watched root: its observer, its mode and its health."""

    root: str
    rules: IgnoreRules
    settler: Settler
    recursive: bool = True
    force_polling: bool = False
    poll_seconds: float = 10.0
    mode: str = "stopped"  # inotify | polling | missing | stopped
    health: str = "starting"  # ok | degraded | missing | empty | starting
    detail: str = ""
    last_event: float | None = None
    observer: BaseObserver | None = field(default=None, repr=False)
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the root when watched: a remount changes it
    fallback: str = ""  # why inotify could not be used, when that degrades the root
    why_polling: str = ""
    _unreadable: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # start, stop and check run on the scheduler's threads (supervision, rescans): one at a time.
    _life: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if self.settler.rules is None:
            self.settler.rules = self.rules

    def wanted(self, path: str) -> bool:
        return self.rules.wanted_path(self.root, path)

    def sink(self, event: RawEvent) -> None:
        self.settler.enqueue(event)

    # --- folders that cannot be read ---

    def note_unreadable(self, path: str) -> None:
        with self._lock:
            self._unreadable.add(path)

    def set_unreadable(self, paths: list[str]) -> None:
        """What the last full walk could not read (replaces what the watcher noted)."""
        with self._lock:
            self._unreadable = set(paths)

    def unreadable(self) -> list[str]:
        with self._lock:
            return sorted(self._unreadable)

    def assess(self) -> None:
        """Health from what is known: ok, or degraded (sub-folders unreadable, inotify unavailable)."""
        if self.mode in ("missing", "stopped") or self.health in ("missing", "empty"):
            return
        why = []
        bad = self.unreadable()
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            why.append(f"{len(bad)} sub-folder(s) cannot be read and are not watched: {shown} (check permissions)")
        if self.fallback:
            why.append(f"polling instead of inotify: {self.fallback}")
        self.health = "degraded" if why else "ok"
        self.detail = "; ".join(why) if why else (self.why_polling if self.mode == "polling" else "")

    # --- life cycle ---

    def start(self) -> None:
        with self._life:
            self._start()

    def _start(self) -> None:
        try:
            st = os.stat(self.root)
        except OSError:
            st = None
        if st is None or not stat_is_dir(st):
            self.mode, self.health = "missing", "missing"
            self.detail = "folder does not exist (is the share mounted?)"
            _log.error("watch root missing", root=self.root, detail=self.detail)
            return
        self.identity = (st.st_dev, st.st_ino)
        self.why_polling = ""
        with self._lock:
            self._unreadable.clear()
        fstype = mount_fstype(self.root)
        polling = self.force_polling or needs_polling(fstype)
        why = "watch.polling = true" if self.force_polling else f"network filesystem ({fstype})" if polling else ""
        if self.fallback:
            why = self.fallback
        if not polling:
            try:
                self._start_observer(FilteredInotifyObserver(self.rules, self.root, self), "inotify")
                hit = take_limit_hit(self.root)
                if hit is None:
                    self.assess()
                    return
                self.stop()
                why = self.fallback = f"inotify watch limit reached ({os.strerror(hit)})"
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                take_limit_hit(self.root)
                why = self.fallback = f"inotify watch limit reached ({e.strerror})"
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
        self._start_observer(
            PollingObserver(_filtered_listdir(self.rules, self.note_unreadable), polling_interval=self.poll_seconds),
            "polling",
        )
        # A file on a polled root must stay unchanged across more than one poll (no close-write is seen).
        self.settler.require_quiet(self.root, 2 * self.poll_seconds)
        self.detail = self.why_polling = why
        self.assess()
        _log.info("polling", root=self.root, reason=why, every_seconds=self.poll_seconds)

    def _start_observer(self, obs: BaseObserver, mode: str) -> None:
        obs.schedule(_Handler(self), self.root, recursive=self.recursive)
        obs.daemon = True
        self.mode = mode  # before start: the handler reads it
        obs.start()
        self.observer, self.mode, self.health, self.detail = obs, mode, "ok", ""

    def stop(self) -> None:
        with self._life:
            self._stop()

    def restart(self) -> None:
        with self._life:
            self._stop()
            self._start()

    def _stop(self) -> None:
        obs, self.observer = self.observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=5)
            except Exception:
                pass
        self.mode = "stopped"

    def alive(self) -> bool:
        obs = self.observer
        if obs is None or not obs.is_alive():
            return False
        return all(e.is_alive() for e in list(getattr(obs, "emitters", [])))

    def check(self) -> str | None:
        """Supervise: restart a dead observer, a remounted root or a late inotify-limit hit.

        Returns why the watch was restarted (a rescan is owed at once), or None."""
        with self._life:
            return self._check()

    def _check(self) -> str | None:
        try:
            st = os.stat(self.root)
        except OSError:
            st = None
        if st is None or not stat_is_dir(st):
            if self.mode != "missing":
                _log.error("watch root vanished", root=self.root, hint="is the share mounted? nothing is deleted")
            self.stop()
            self.mode, self.health, self.detail = (
                "missing",
                "missing",
                "folder does not exist (is the share mounted?)",
            )
            return None
        hit = take_limit_hit(self.root) if self.mode == "inotify" else None
        replaced = self.identity is not None and self.identity != (st.st_dev, st.st_ino)
        if self.mode == "missing" or hit is not None or replaced or not self.alive():
            why = (
                "inotify watch limit reached"
                if hit
                else "the folder reappeared"
                if self.mode == "missing"
                else "the folder was replaced or remounted"
                if replaced
                else "the watcher stopped"
            )
            _log.warning("restarting watch", root=self.root, reason=why)
            self.stop()
            if hit is not None:
                self.force_polling = True
                self.fallback = f"inotify watch limit reached ({os.strerror(hit)})"
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
            self.start()
            return why
        self.assess()
        return None


def _max_watches() -> Any:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
