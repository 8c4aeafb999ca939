"""Problems that need the owner: reported once, visible in `status`, the health check and notifications
until they clear, and announced again when they do.

A *problem* is a condition with a stable key (the archive is missing; this watched folder is degraded);
reporting it again while it stands changes nothing, so a loop that hits the same wall every second
logs it once. A *notice* is a one-off happening (a watcher had to be restarted). Listeners (the
notifier) hear about both; they must not block: they are called on the reporting thread.

Problems are kept in the catalog so that `status` and the health check of another process see them; if
the catalog cannot be written (state disk full) they are still logged and kept in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from draftsync import log

if TYPE_CHECKING:
    from draftsync.catalog import Catalog

_log = log.get("draftsync.problems")

Severity = Literal["error", "warning"]

# What the owner can be told about; `[notify] events` chooses among these.
KINDS: dict[str, str] = {
    # Ingest (keys: the kind itself, or "root_missing:<path>" / "root_degraded:<path>" per watched folder).
    "archive_missing": "the archive root (or its disk) is missing, not marked, another archive's, locked by "
    "another draftsync, or read-only; ingest is paused",
    "archive_full": "the archive disk is full (bytes or inodes); ingest is paused",
    "state_full": "the state disk (catalog) is full; ingest is paused",
    "root_missing": "a watched folder is missing or empty (an unmounted share?)",
    "root_degraded": "a watched folder is watched only partly (unreadable sub-folders, polling after the inotify "
    "limit)",
    "files_failing": "files keep failing to archive (3 attempts or more)",
    "watcher_restarted": "a watcher had to be restarted (notice; its folder is rescanned at once)",
    "loop_dead": "an internal loop stopped; the daemon needs a restart",
    "timezone": "the local time zone is unknown, so dates are in UTC (set archive.timezone)",
    "loop_failing": "an internal loop fails on every pass (it retries with back-off; the log has the traceback)",
    "push_reauth": "TikTok (or Post for Me) needs re-authorising, or pushing is paused",
    "push_failed": "a push failed for good, or got no answer for 3 h (`push retry` checks it first)",
    "integrity": "verify or the scrub found missing or changed files",
    "offsite": "the offsite copy is failing (credentials, bucket, clash)",
    "notify": "notifications cannot be delivered to one of [notify] urls",
    "web": "the status page cannot serve (address in use, unreadable token file)",
    "digest": "the weekly digest",
    "test": "a test message",
}


@dataclass(frozen=True)
class Problem:
    key: str  # stable: "archive_missing", "root_degraded:/srv/inbox"
    kind: str  # one of KINDS
    message: str  # a complete sentence: what, where, what to do
    severity: Severity = "error"
    since: float = 0.0


@dataclass(frozen=True)
class Change:
    """What listeners hear: a problem raised, changed or cleared, or a one-off notice."""

    action: Literal["raised", "cleared", "notice"]
    problem: Problem
    at: float


Listener = Callable[[Change], None]


class Problems:
    def __init__(self, catalog: Catalog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, Problem] = {}
        self._listeners: list[Listener] = []
        if catalog is not None:
            for p in catalog.problems():
                self._active[p.key] = p

    def subscribe(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def report(self, key: str, kind: str, message: str, *, severity: Severity = "error") -> bool:
        """Raise (or update) a standing problem; True if it is new or its message changed."""
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        now = self.clock()
        with self._lock:
            old = self._active.get(key)
            if old is not None and (old.message, old.severity, old.kind) == (message, severity, kind):
                return False
            p = Problem(key, kind, message, severity, old.since if old else now)
            self._active[key] = p
        getattr(_log, severity)("problem", key=key, kind=kind, message=message)
        self._store(lambda c: _record(c, severity, kind, message, set_=p))
        self._tell(Change("raised", p, now))
        return True

    def resolve(self, key: str, message: str = "") -> bool:
        """Clear a standing problem; True if it was standing."""
        now = self.clock()
        with self._lock:
            old = self._active.pop(key, None)
        if old is None:
            return False
        text = message or f"resolved: {old.message}"
        _log.info("problem cleared", key=key, kind=old.kind, message=text)
        self._store(lambda c: _record(c, "info", old.kind, text, clear=key))
        self._tell(Change("cleared", Problem(key, old.kind, text, old.severity, old.since), now))
        return True

    def resolve_prefix(self, prefix: str) -> None:
        """Clear every problem whose key starts with `prefix` (e.g. all roots no longer configured)."""
        for key in [k for k in self.active_keys() if k.startswith(prefix)]:
            self.resolve(key)

    def notice(self, kind: str, message: str, *, severity: Severity = "warning") -> None:
        """A one-off happening worth telling (logged, recorded, passed to listeners), not a standing state."""
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        now = self.clock()
        getattr(_log, severity)("notice", kind=kind, message=message)
        self._store(lambda c: _record(c, severity, kind, message))
        self._tell(Change("notice", Problem(f"notice:{kind}", kind, message, severity, now), now))

    def active(self) -> list[Problem]:
        with self._lock:
            return sorted(self._active.values(), key=lambda p: (p.since, p.key))

    def active_keys(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def get(self, key: str) -> Problem | None:
        with self._lock:
            return self._active.get(key)

    def _store(self, write: Callable[[Catalog], None]) -> None:
        if self.catalog is None:
            return
        try:
            write(self.catalog)
        except Exception as e:  # the state disk may be the problem; the log and memory still know
            _log.warning("could not record a problem in the catalog", error=str(e))

    def _tell(self, change: Change) -> None:
        for fn in list(self._listeners):
            try:
                fn(change)
            except Exception as e:  # a listener's fault never hides the problem itself
                _log.exception("problem listener failed", error=str(e))


def _record(c: Catalog, level: str, kind: str, message: str, *, set_: Problem | None = None,
            clear: str | None = None) -> None:  # fmt: skip
    with c.tx():
        if set_ is not None:
            c.set_problem(set_)
        if clear is not None:
            c.clear_problem(clear)
        c.log_event(level, kind, message)
