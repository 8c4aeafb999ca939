"""What a running daemon shares with the services it hosts (push windows, notifications, the web page,
the offsite uploader): settings, catalog, archive, problems, the supervisor, the scheduler, the stop
event, and the "archived" hook that tells a service about each new video.

A service is started once with the runtime and stopped on shutdown; any thread or job it runs goes
through the supervisor, so a dead loop in a service stops the watchdog like one in ingest would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from draftsync import log

if TYPE_CHECKING:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog, VideoRecord
    from draftsync.config import Settings
    from draftsync.problems import Problems
    from draftsync.supervise import Supervisor

_log = log.get("draftsync.runtime")

ArchivedHook = Callable[["VideoRecord"], None]


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    archive: Archive
    problems: Problems
    supervisor: Supervisor
    scheduler: Any  # apscheduler BackgroundScheduler
    stop: threading.Event
    _archived_hooks: list[ArchivedHook] = field(default_factory=list)

    def on_archived(self, hook: ArchivedHook) -> None:
        """Call `hook(record)` after each new video is archived (on the ingest worker: keep it quick)."""
        self._archived_hooks.append(hook)

    def archived(self, record: VideoRecord) -> None:
        for hook in list(self._archived_hooks):
            try:
                hook(record)
            except Exception as e:  # a service's fault never fails an ingest that already succeeded
                _log.exception("archived hook failed", hash=record.hash, error=str(e))

    def add_job(self, name: str, func: Callable[[], object], trigger: Any, *, max_silence: float | None = None,
                **kw: Any) -> None:  # fmt: skip
        """A scheduler job under supervision (coalesced, one instance at a time, run however late unless told
        otherwise)."""
        kw.setdefault("coalesce", True)
        kw.setdefault("max_instances", 1)
        # APScheduler drops a run that starts more than 1 s late by default, silently but for a log line: a
        # one-off job added before a slow start-up (the first rescan, a missed digest), a follow-up push window
        # after a wall-clock jump or a suspend. Late is better than never; a job that must not run late says so.
        kw.setdefault("misfire_grace_time", None)
        self.scheduler.add_job(self.supervisor.job(name, func, max_silence), trigger, id=name, **kw)


class Service(Protocol):
    """Something the daemon hosts beside ingest."""

    name: str

    def start(self, rt: Runtime) -> None: ...

    def stop(self) -> None: ...
