"""The offsite copy as a service of the daemon: the archived hook wakes a supervised loop (it never does
work on the ingest worker), which copies the backlog in the background; or, with a cron `schedule`, a job
does it at set times. The weekly scrub's offsite part runs here too, on `archive.scrub_schedule`.

Faults: a transient failure backs off (30 s doubling to an hour) and keeps the backlog; credentials or a
missing bucket pause the copy with one standing problem and are probed again every few minutes; the
problem clears when the probe succeeds.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from draftsync import log, schedule
from draftsync.offsite.plan import backoff

if TYPE_CHECKING:
    from draftsync.catalog import VideoRecord
    from draftsync.offsite.upload import Uploader
    from draftsync.runtime import Runtime
    from draftsync.supervise import Loop

_log = log.get("draftsync.offsite")

IDLE_WAIT = 30.0  # look again this often for retries that came due (a look costs no request when none is)
PAUSE_PROBE = 300.0  # how often a paused copy asks whether the credentials or bucket work again


class OffsiteService:
    name = "offsite"

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._rt: Runtime | None = None
        self._uploader: Uploader | None = None
        self._loop: Loop | None = None
        self._failures = 0  # passes in a row that ended on a transient error
        self._next = 0.0  # monotonic time of the next pass

    def start(self, rt: Runtime) -> None:
        cfg = rt.settings.offsite
        if not cfg.enabled:
            return
        from draftsync.offsite.upload import Uploader

        self._rt = rt
        self._uploader = Uploader(rt.settings, rt.catalog, rt.archive, problems=rt.problems,
                                  should_stop=self._stopping, beat=self._beat, nice=10)  # fmt: skip
        # Videos that failed for good are tried once more at each start (the owner may have fixed the cause).
        failed = [r["hash"] for r in rt.catalog.offsite_rows(("failed",))]
        if failed:
            rt.catalog.offsite_requeue(failed, "tried again after a restart")
        tz = rt.settings.archive.tz()
        if cfg.schedule == "continuous":
            rt.on_archived(self._archived)
            # A part at a low bandwidth limit may take long; the loop beats on every part and every wait.
            self._loop = rt.supervisor.spawn("offsite", self._tick, rt.stop, interval=0, max_silence=1800)
        else:
            rt.add_job("offsite", self.run_pass, schedule.trigger(cfg.schedule, tz), misfire_grace_time=3600)
        rt.add_job("offsite-scrub", self.scrub, schedule.trigger(rt.settings.archive.scrub_schedule, tz),
                   misfire_grace_time=3600)  # fmt: skip
        _log.info("offsite copy on", url=cfg.url, endpoint=cfg.endpoint_url or "aws", schedule=cfg.schedule)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self._rt is not None and self._rt.stop.is_set())

    def _beat(self) -> None:
        if self._loop is not None:
            self._loop.beat()

    def _archived(self, record: VideoRecord) -> None:
        """On the ingest worker: only a wake-up, so ingest never waits for the network."""
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------------

    def _tick(self) -> None:
        wait = self._next - self.clock()
        if wait > 0:
            self._wake.wait(min(wait, IDLE_WAIT))
            if self._stopping():
                return
            if self.clock() < self._next and not self._wake.is_set():
                return
        self._wake.clear()
        self.run_pass()

    def run_pass(self) -> None:
        """One pass over the due backlog, then decide when the next one is."""
        up = self._uploader
        if up is None or self._stopping():
            return
        report = up.drain()
        if report.paused:
            self._next = self.clock() + PAUSE_PROBE
        elif report.transient:
            self._failures += 1
            self._next = self.clock() + backoff(self._failures)
        else:
            self._failures = 0
            self._next = self.clock() + IDLE_WAIT

    # --- scrub ----------------------------------------------------------------------------------------

    def scrub(self) -> None:
        if self._rt is None or self._uploader is None:
            return
        from draftsync.offsite.check import scrub

        scrub(self._rt.settings, self._rt.catalog, self._uploader.store, problems=self._rt.problems,
              should_stop=self._stopping)  # fmt: skip
