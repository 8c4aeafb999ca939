"""Watching: one watchdog observer per root (inotify, or polling for network shares), the ignore rules
applied before any watch is added, and the reconciliation walk that finds what events missed.

The watcher only enqueues: events become calls on a Settler, nothing else happens on watchdog's
threads. Observers are supervised; one that dies is restarted and the gap covered by a rescan.
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
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from draftsync import log
from draftsync.settle import IgnoreRules, Settler

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


def walk_files(root: str, rules: IgnoreRules, recursive: bool = True) -> Iterator[os.DirEntry[str]]:
    """Every wanted regular file under `root`, never entering ignored folders or following symlinks."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
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

_limit_hits: dict[str, int] = {}
_limit_lock = threading.Lock()


def _record_limit(root: str, err: int) -> None:
    with _limit_lock:
        _limit_hits.setdefault(root, err)


def take_limit_hit(root: str) -> int | None:
    with _limit_lock:
        return _limit_hits.pop(root, None)


class _FilteredWatchGroup(InotifyWatchGroup):
    rules: IgnoreRules | None = None
    root: str = ""

    def _add_all_callbacks(self, path: bytes) -> None:
        self._add_callback(path)
        if not (os.path.isdir(path) and self.is_recursive):
            return
        for dirpath, dirnames, _ in os.walk(path):
            keep = []
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    continue
                if self.rules is not None and self.rules.ignore_dir(os.fsdecode(d)):
                    continue
                keep.append(d)
                self._add_callback(full)
            dirnames[:] = keep

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
            if path == self.path:
                raise


def _emitter_for(rules: IgnoreRules, root: str) -> type[InotifyEmitter]:
    class _Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            group = _FilteredWatchGroup.__new__(_FilteredWatchGroup)
            group.rules = rules
            group.root = root
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
    def __init__(self, rules: IgnoreRules, root: str) -> None:
        super().__init__()
        self._emitter_class = _emitter_for(rules, root)


def _filtered_listdir(rules: IgnoreRules) -> Callable[[str | None], Iterator[os.DirEntry[Any]]]:
    def listdir(path: str | None) -> Iterator[os.DirEntry[Any]]:
        with os.scandir(path) as it:
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


# --- per-root watch ----------------------------------------------------------------------------------


class _Handler(FileSystemEventHandler):
    def __init__(self, watch: RootWatch) -> None:
        self.w = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        w = self.w
        w.last_event = time.time()
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            w.settler.forget(src)
            if w.wanted(dest):
                w.settler.observe(dest)
        elif isinstance(event, FileDeletedEvent):
            # Deletions are only noted by the rescan (sources marked gone); the archive never follows them.
            w.settler.forget(src)
        elif not w.wanted(src):
            return
        elif isinstance(event, FileModifiedEvent) and w.mode == "inotify":
            w.settler.modified(src)
        elif isinstance(event, FileClosedEvent):
            w.settler.closed(src)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            w.settler.observe(src)


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
    health: str = "starting"
    detail: str = ""
    last_event: float | None = None
    observer: BaseObserver | None = field(default=None, repr=False)

    def wanted(self, path: str) -> bool:
        return self.rules.wanted_path(self.root, path)

    def start(self) -> None:
        if not os.path.isdir(self.root):
            self.mode, self.health = "missing", "missing"
            self.detail = "folder does not exist (is the share mounted?)"
            _log.error("watch root missing", root=self.root, detail=self.detail)
            return
        fstype = mount_fstype(self.root)
        polling = self.force_polling or needs_polling(fstype)
        why = "watch.polling = true" if self.force_polling else f"network filesystem ({fstype})" if polling else ""
        if not polling:
            try:
                self._start_observer(FilteredInotifyObserver(self.rules, self.root), "inotify")
                hit = take_limit_hit(self.root)
                if hit is None:
                    return
                self.stop()
                why = f"inotify watch limit reached ({os.strerror(hit)})"
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                take_limit_hit(self.root)
                why = f"inotify watch limit reached ({e.strerror})"
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
        self._start_observer(
            PollingObserverVFS(os.stat, _filtered_listdir(self.rules), polling_interval=self.poll_seconds),
            "polling",
        )
        self.detail = why
        _log.info("polling", root=self.root, reason=why, every_seconds=self.poll_seconds)

    def _start_observer(self, obs: BaseObserver, mode: str) -> None:
        obs.schedule(_Handler(self), self.root, recursive=self.recursive)
        obs.daemon = True
        obs.start()
        self.observer, self.mode, self.health, self.detail = obs, mode, "ok", ""

    def stop(self) -> None:
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

    def check(self) -> bool:
        """Supervise: restart a dead observer or a late inotify-limit hit. True if a rescan is owed."""
        if not os.path.isdir(self.root):
            if self.mode != "missing":
                _log.error("watch root vanished", root=self.root, hint="is the share mounted? nothing is deleted")
            self.stop()
            self.mode, self.health, self.detail = (
                "missing",
                "missing",
                "folder does not exist (is the share mounted?)",
            )
            return False
        hit = take_limit_hit(self.root) if self.mode == "inotify" else None
        if self.mode == "missing" or hit is not None or not self.alive():
            why = (
                "inotify watch limit reached"
                if hit
                else "root reappeared"
                if self.mode == "missing"
                else "observer died"
            )
            _log.warning("restarting watch", root=self.root, reason=why)
            self.stop()
            if hit is not None:
                self.force_polling = True
                _log.error("inotify limit reached", root=self.root, hint=SYSCTL_HINT, limit=_max_watches())
            self.start()
            return True
        return False


def _max_watches() -> Any:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
