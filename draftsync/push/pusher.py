"""Push windows: a thin loop around `machine.step`, and the daemon service that runs them.

A window selects new videos, asks the back-end whether the account can be used, finishes what is on its
way (looks up lost creates, resumes uploads, polls), starts queued items while the budget allows, and
polls until everything sent has landed or the window's time is up. Every answer goes through
`machine.step`; this module only carries it out: it persists the item, marks the ledger, raises and
clears problems, and sleeps on the injected clock.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from draftsync import log, schedule
from draftsync.catalog import Catalog
from draftsync.config import Settings
from draftsync.lock import StateLock
from draftsync.marker import ArchiveGuard
from draftsync.problems import Problems
from draftsync.push import machine
from draftsync.push.backend import Backend, Job, make_backend
from draftsync.push.budget import Limits, Slot, next_slot, pending_block
from draftsync.push.clock import Clock, SystemClock
from draftsync.push.machine import (
    ACTIVE,
    Deferred,
    Instant,
    Item,
    NeedsReauth,
    Outcome,
    Pending,
    Rejected,
    State,
    elapsed,
    ledger_mark,
)
from draftsync.push.queue import (
    HALT,
    REAUTH,
    SLOT_WAIT,
    Plan,
    enabled_at,
    fields_of,
    idle_reason,
    item_of,
    ledger,
    new_candidates,
    note_enabled,
    plan,
    save,
)
from draftsync.push.select import Choice, caption_for, choose, taken
from draftsync.supervise import RunResult

if TYPE_CHECKING:
    from draftsync.runtime import Runtime

_log = log.get("draftsync.push")

Progress = Callable[[str, str, str], None]  # (hash, state or "bytes", message)
LEDGER_KEEP = 8 * 86400.0
MAX_PASSES = 5  # passes over the queue in one window (each must start something)
ARCHIVE_AWAY_RETRY = 120.0  # seconds until another window while the archive disk is away


@dataclass
class WindowReport:
    pushed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # new videos the selection skipped
    deferred: list[str] = field(default_factory=list)  # sent back to the queue to try later
    pending: list[str] = field(default_factory=list)  # still on their way when the window ended
    paused: str = ""  # the account needs its owner
    waiting: str = ""  # why nothing more could start now
    idle: str = ""  # why there was nothing to send
    retry_after: float | None = None  # a passing obstacle: run another window this much later
    busy: bool = False
    plan: Plan | None = None  # the dry-run back-end's plan

    def text(self) -> str:
        if self.paused:
            return f"paused: {self.paused}"
        parts = [f"{len(self.pushed)} in the inbox", f"{len(self.failed)} failed", f"{len(self.deferred)} to retry",
                 f"{len(self.pending)} still processing"]  # fmt: skip
        if self.plan is not None:
            parts = [f"dry run: would send {len(self.plan.now)} now, {len(self.plan.later)} later"]
        text = ", ".join(parts)
        for extra in (self.waiting, self.idle):
            if extra:
                text += f"; {extra}"
        return text


class _Paused(Exception):
    pass


class Pusher:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        should_stop: Callable[[], bool] = lambda: False,
        backend: Backend | None = None,
        limits: Limits = Limits(),
        clock: Clock | None = None,
        neardups: Any = None,
        problems: Problems | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.should_stop = should_stop
        self.clock = clock or SystemClock()
        self.backend = backend if backend is not None else make_backend(settings, should_stop, sleep=self.clock.sleep)
        if self.backend is not None and self.backend.name == "postforme":
            # Post for Me's per-key limits are unpublished; safe reading (spec B.8): a post at most every 5 s.
            limits = replace(limits, status_spacing=max(limits.status_spacing, 5.0))
        self.limits = limits
        self.problems = problems or Problems(catalog)
        self.lock = StateLock(settings.state.dir, "push")
        self.account = self.backend.account() if self.backend else "dry-run"
        self._neardups = neardups  # the daemon shares its own; a CLI run builds one when needed
        self._report = WindowReport()
        self._progress: Progress = lambda *_: None
        self._last_call: Instant | None = None
        self._no_more = ""  # set when an answer says no further item may start in this window

    # --- time ------------------------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> bool:
        """Sleep on the clock, in short steps so a stop request is heard; False if stopped."""
        end = self.clock.now().mono + max(0.0, seconds)
        while not self.should_stop():
            left = end - self.clock.now().mono
            if left <= 0:
                return True
            self.clock.sleep(min(left, 0.25))
        return False

    def _paced(self, call: Callable[[Job], Outcome], job: Job) -> Outcome:
        """A status-type call, never closer than `status_spacing` to the previous one (spec A.6)."""
        if self._last_call is not None:
            self._wait(self.limits.status_spacing - elapsed(self._last_call, self.clock.now()))
        self._last_call = self.clock.now()
        return call(job)

    def _slot(self) -> Slot:
        s = self.settings.push
        return next_slot(ledger(self.catalog, self.account), self.limits, s.max_per_day, s.tz(), self.clock.now())

    def _tidy_ledger(self) -> None:
        """Keep the ledger's wall times true: an entry of this boot whose wall time no longer matches its
        boot-clock age (the wall clock jumped) is re-dated, so that after a reboot its wall-clock age is
        right; an entry dated in the future counts from now; old entries go."""
        now = self.clock.now()
        old = []
        for e in ledger(self.catalog, self.account):
            age = elapsed(e.at, now)
            if age > LEDGER_KEEP:
                old.append(e.id)
            elif e.at.boot == now.boot and abs((now.wall - e.at.wall) - age) > 5.0:
                self.catalog.ledger_move(e.id, now.wall - age, e.at.boot, e.at.mono)
            elif e.at.boot != now.boot and e.at.wall > now.wall + 5.0:
                self.catalog.ledger_move(e.id, now.wall, now.boot, now.mono)
        if old:
            self.catalog.ledger_drop(old)

    # --- selection -------------------------------------------------------------------------------------------

    def select(self) -> list[Choice]:
        """Queue (or skip, with the reason) the videos archived since pushing took effect."""
        if self.settings.push.only_new and enabled_at(self.catalog) is None:
            note_enabled(self.settings, self.catalog, self.clock.now().wall)
        fresh = new_candidates(self.settings, self.catalog)
        if fresh:
            # Compare each candidate with the archive before it can be pushed (no push loops).
            if self._neardups is None:
                from draftsync.archive import Archive
                from draftsync.neardup import NearDups

                archive = Archive(self.settings.archive.root, self.settings.archive.layout)
                self._neardups = NearDups(self.catalog, archive, self.should_stop)
            self._neardups.backfill(limit=len(fresh) + 50)
        now = self.clock.now()
        choices = choose(self.catalog, fresh, taken(self.catalog))
        for c in choices:
            if c.problem:
                item = machine.skip(c.video.hash, now, c.problem)
                _log.info("push skipped", hash=c.video.hash, archive_path=c.video.archive_path, reason=c.problem)
                self._report.skipped.append(c.video.hash)
            else:
                item = machine.queue(c.video.hash, now)
            self.catalog.save_push(item.hash, fields_of(item), insert_only=True)
        return choices

    # --- windows ---------------------------------------------------------------------------------------------

    def startup(self) -> WindowReport:
        """At daemon start: finish what a crash interrupted, and run a window missed while down (once)."""
        last = self.catalog.get_meta("push_last_window")
        now = self.clock.now()
        if last:
            tz = self.settings.push.tz()
            trig = schedule.trigger(self.settings.push.schedule, tz)
            missed = trig.get_next_fire_time(None, datetime.fromtimestamp(float(last), tz) + timedelta(seconds=1))
            if missed is not None and missed.timestamp() <= now.wall:
                _log.info("running the push window missed while stopped", missed=missed.isoformat())
                return self.window()
        else:
            self.catalog.set_meta("push_last_window", str(now.wall))
        return self.window(new_items=False)

    def window(self, *, new_items: bool = True, wait_seconds: float = 0.0, poll_for: float = 1200.0,
               progress: Progress | None = None) -> WindowReport:  # fmt: skip
        """One push window. Bounded: slots are waited for up to SLOT_WAIT, polling for `poll_for` seconds."""
        report = WindowReport()
        try:
            self.lock.acquire("push", wait=wait_seconds)
        except Exception as e:
            _log.warning("another push window is running; skipping this one", detail=str(e))
            report.busy = True
            return report
        self._report, self._progress, self._no_more = report, progress or (lambda *_: None), ""
        try:
            if new_items:
                self.catalog.set_meta("push_last_window", str(self.clock.now().wall))
            try:
                self._window(report, new_items, poll_for)
            except _Paused as e:
                self._pause(report, str(e))
            report.pending = [r["hash"] for r in self.catalog.push_rows(tuple(s.value for s in ACTIVE))]
            if report.pending and not report.paused:
                report.retry_after = min(report.retry_after or 600.0, 600.0)
            self.catalog.set_meta("push_last_result", json.dumps({"at": self.clock.now().wall, "text": report.text()}))
            _log.info("push window done", account=self.account, summary=report.text())
            return report
        finally:
            self._report, self._progress = WindowReport(), lambda *_: None
            self.lock.release()

    def _window(self, report: WindowReport, new_items: bool, poll_for: float) -> None:
        away = self._archive_away()
        if away:
            # An unplugged archive disk is a passing obstacle, not a fault of each video: nothing is failed or
            # selected while it is away (the archive_missing problem is the daemon's to report).
            report.waiting, report.retry_after = f"the archive is not available: {away}", ARCHIVE_AWAY_RETRY
            _log.warning("push window postponed", reason=report.waiting, retry_in_seconds=ARCHIVE_AWAY_RETRY)
            return
        if new_items:
            self.select()
        if self.backend is None:  # dry-run: plan and log, send nothing
            report.plan = plan(self.settings, self.catalog, self.clock.now())
            for v, caption in report.plan.now:
                _log.info("dry run: would push", archive_path=v.archive_path, caption=caption)
            return
        halt = self.catalog.get_meta(HALT)
        if halt:
            raise _Paused(halt)
        o = self.backend.check()
        if isinstance(o, NeedsReauth):
            raise _Paused(o.reason)
        if isinstance(o, Deferred):
            report.waiting, report.retry_after = o.reason, o.after
            _log.warning("push window postponed", reason=o.reason, retry_in_seconds=o.after)
            return
        self._resume_pushing()
        self.account = self.backend.account()
        self._tidy_ledger()
        self._advance_all(ACTIVE)
        if new_items:
            self._fill()
        self._poll(poll_for)
        if not new_items or report.pushed or report.failed or report.deferred:
            return
        if not self.catalog.push_rows((State.QUEUED.value,), limit=1) and not report.waiting:
            report.idle = idle_reason(self.settings, self.catalog)
            _log.info("nothing to push", reason=report.idle)

    def _pause(self, report: WindowReport, reason: str) -> None:
        report.paused = reason
        self.problems.report(REAUTH, REAUTH, f"pushing is paused: {reason}")

    def _resume_pushing(self) -> None:
        if not self.problems.resolve(REAUTH) and any(p.key == REAUTH for p in self.catalog.problems()):
            self.catalog.clear_problem(REAUTH)  # raised by another process (`push --now`)

    def _job(self, item: Item) -> Job:
        v = self.catalog.video(item.hash)
        now = self.clock.now()
        return Job(
            hash=item.hash, path=self.settings.archive.root / (v.archive_path if v else ""), size=v.size if v else 0,
            caption=caption_for(self.settings.push.caption, v, self.catalog) if v else "", ref=item.ref,
            remote_id=item.remote_id, upload_url=item.upload_url, chunk_size=item.chunk_size,
            chunk_count=item.chunk_count, url_age=elapsed(item.upload_issued, now) if item.upload_issued else 0.0,
        )  # fmt: skip

    def _bytes(self, h: str) -> Callable[[int], None]:
        return lambda n: self._progress(h, "bytes", str(n))

    def _advance(self, item: Item) -> None:
        """Carry an item on its way one step further: look up, resume, or poll."""
        assert self.backend is not None
        job = self._job(item)
        if item.state is State.STARTING:
            self._apply(item, self._paced(self.backend.lookup, job))
            return
        o = self._paced(self.backend.poll, job)
        item = self._apply(item, o)
        if item.state is State.UPLOADING and isinstance(o, Pending):
            self._apply(item, self.backend.send(self._job(item), o.uploaded or 0, self._bytes(item.hash)))

    def _advance_all(self, states: tuple[State, ...]) -> None:
        for row in self.catalog.push_rows(tuple(s.value for s in states)):
            if self.should_stop():
                return
            self._advance(item_of(row))

    def _fill(self) -> None:
        """Start queued items while the budget and push.max_per_run allow. A create whose answer was lost
        is looked up at once, and an item sent back to the queue for a short while (a 429, a dead upload
        URL) gets its next turn in the same window."""
        left = self.settings.push.max_per_run
        for _ in range(MAX_PASSES):
            n = self._start(left)
            left -= n
            self._advance_all((State.STARTING,))
            if n == 0 or left <= 0 or self._no_more or self.should_stop():
                return
            now = self.clock.now()
            waits = [max(0.0, it.wait - elapsed(it.since, now))
                     for it in map(item_of, self.catalog.push_rows((State.QUEUED.value,)))]  # fmt: skip
            if not waits or min(waits) > SLOT_WAIT or not self._wait(min(waits)):
                return

    def _start(self, left: int) -> int:
        """One pass over the queue, in order: start each item that is due, up to `left` of them."""
        assert self.backend is not None
        started = 0
        for row in self.catalog.push_rows((State.QUEUED.value,)):
            if self.should_stop() or self._no_more:
                break
            item = item_of(row)
            if not item.due(self.clock.now()):
                continue
            if item.remote_id:  # an earlier attempt: see whether it landed after all before sending again
                item = self._apply(item, self._paced(self.backend.lookup, self._job(item)))
                if item.state is not State.QUEUED or item.remote_id:
                    continue
            if started >= left:
                self._report.waiting = "push.max_per_run reached; the rest wait for the next window"
                break
            if not self._wait_for_slot():
                break
            problem = self._file_problem(item)
            if problem:
                away = self._archive_away()
                if away:  # the disk went away during the window: a passing obstacle, not this video's fault
                    self._no_more = self._report.waiting = f"the archive is not available: {away}"
                    self._report.retry_after = ARCHIVE_AWAY_RETRY
                    break
                self._apply(item, Rejected(problem, "archive"))
                continue
            started += 1
            self._begin(item)
        return started

    def _wait_for_slot(self) -> bool:
        while not self.should_stop():
            slot = self._slot()
            if slot.wait <= 0:
                return True
            if slot.wait > SLOT_WAIT:
                at = datetime.fromtimestamp(self.clock.now().wall + slot.wait).astimezone()
                self._report.waiting = f"next slot {at:%a %Y-%m-%d %H:%M} ({slot.why})"
                return False
            _log.info("waiting for a push slot", seconds=round(slot.wait, 1), reason=slot.why)
            if not self._wait(slot.wait):
                return False
        return False

    def _archive_away(self) -> str:
        """Why the archive cannot be read now (its disk not mounted, not draftsync's), else "". Read-only."""
        v = ArchiveGuard(self.settings.archive.root, self.catalog, may_create=False).verdict()
        return v.message if v.action == "pause" else ""

    def _file_problem(self, item: Item) -> str:
        v = self.catalog.video(item.hash)
        if v is None:
            return "no longer in the catalog"
        path = self.settings.archive.root / v.archive_path
        try:
            if path.stat().st_size == v.size:
                return ""
        except OSError:
            pass
        return f"the archived copy {path} is missing or changed; run `draftsync verify`"

    def _begin(self, item: Item) -> None:
        assert self.backend is not None
        now = self.clock.now()
        ref = f"draftsync-{item.hash.removeprefix('blake3:')[:16]}-{secrets.token_hex(4)}"
        started = machine.begin(item, now, ref)
        # The intent and its ledger line are on disk before the create leaves: a crash or a lost answer
        # leaves a `starting` item, which is looked up, never blindly created again, and a counted slot.
        with self.catalog.tx():
            save(self.catalog, started, backend=self.backend.name, account=self.account)
            self.catalog.ledger_add(self.account, "init", now.wall, now.boot, now.mono, hash=item.hash)
        job = self._job(started)
        self._progress(item.hash, started.state.value, str(job.path))
        item = self._apply(started, self.backend.create(job, self._bytes(item.hash)))
        if item.state is State.UPLOADING:
            self._apply(item, self.backend.send(self._job(item), 0, self._bytes(item.hash)))

    def _poll(self, poll_for: float) -> None:
        """Poll everything processing, with backoff (5 s doubling to 60 s, spec A.4), for up to `poll_for`."""
        assert self.backend is not None
        start, delay = self.clock.now(), 5.0
        while not self.should_stop():
            rows = self.catalog.push_rows((State.PROCESSING.value,))
            for row in rows:
                if self.should_stop():
                    return
                item = item_of(row)
                self._apply(item, self._paced(self.backend.poll, self._job(item)))
            left = poll_for - elapsed(start, self.clock.now())
            if not rows or not self.catalog.push_rows((State.PROCESSING.value,), limit=1) or left <= 0:
                return
            self._wait(min(delay, left))
            delay = min(60.0, delay * 2)

    # --- carrying out a decision ---------------------------------------------------------------------------------

    def _apply(self, item: Item, o: Outcome) -> Item:
        now = self.clock.now()
        new = machine.step(item, o, now)
        effect = machine.for_account(o, item.state)
        with self.catalog.tx():
            if new != item:
                save(self.catalog, new)
            # (a look-up that leaves the item starting has proven nothing yet: its slot stays counted)
            mark = ledger_mark(o) if item.state is State.STARTING and new.state is not State.STARTING else None
            if mark and (call := self.catalog.ledger_last_unknown(self.account, item.hash)) is not None:
                self.catalog.ledger_mark(call, mark)
            if effect.block:
                span = effect.block_for
                if effect.block == "pending":
                    span = pending_block(ledger(self.catalog, self.account), self.limits, now)
                self.catalog.ledger_add(self.account, "block", now.wall, now.boot, now.mono, outcome="refused",
                                        span=span)  # fmt: skip
            if effect.halt:
                self.catalog.set_meta(HALT, effect.pause)
        self._tell(item, new)
        if effect.pause:
            raise _Paused(effect.pause)
        if effect.no_more:
            self._no_more = self._report.waiting = f"waiting: {new.reason.removeprefix('waiting: ')}"
            if effect.block == "service":
                self._report.retry_after = effect.block_for
        return new

    def _tell(self, old: Item, new: Item) -> None:
        h, r = new.hash, self._report
        if new.state is not old.state:
            if new.state is State.IN_INBOX:
                r.pushed.append(h)
                _log.info("pushed to the TikTok inbox", hash=h, remote_id=new.remote_id, detail=new.reason)
                self.catalog.log_event("info", "pushed", new.reason, None, h)
                if not self.problems.resolve(f"push_failed:{h}"):
                    self.catalog.clear_problem(f"push_failed:{h}")
            elif new.state is State.FAILED:
                r.failed.append(h)
                v = self.catalog.video(h)
                _log.error("push failed", hash=h, reason=new.reason, code=new.code, log_id=new.log_id)
                how = "gave up waiting" if new.code == machine.UNANSWERED else "failed"
                cmd = f"`draftsync push retry {h.removeprefix('blake3:')[:12]}`"
                bare = "`draftsync push retry`"  # a reason that names the command already gets the id in place
                why = new.reason.replace(bare, cmd) if bare in new.reason else f"{new.reason}; {cmd} tries again"
                self.problems.report(f"push_failed:{h}", "push_failed", f"pushing {v.archive_path if v else h} "
                                     f"{how}: {why}", severity="warning")  # fmt: skip
            elif new.state is State.QUEUED and old.state in ACTIVE:
                r.deferred.append(h)
                _log.warning("push will be tried again", hash=h, reason=new.reason, code=new.code)
                if new.wait <= 6 * 3600:  # soon enough to be worth another window before the scheduled one
                    r.retry_after = max(60.0, min(r.retry_after or new.wait, new.wait))
        elif new.reason != old.reason and new.reason:
            _log.info("push waits", hash=h, state=new.state.value, reason=new.reason)
        self._progress(h, new.state.value, new.reason)


# --- the daemon's service --------------------------------------------------------------------------------------


class PushService:
    """The daemon's push windows: on `push.schedule`, once at start-up (interrupted uploads, a missed
    window), and once more soon after a window that a passing obstacle cut short."""

    name = "push"

    def __init__(self, neardups: Any = None) -> None:
        self.neardups = neardups
        self.pusher: Pusher | None = None
        self._retries = 0

    def start(self, rt: Runtime) -> None:
        s = rt.settings
        self.rt = rt
        self.pusher = Pusher(s, rt.catalog, should_stop=rt.stop.is_set, neardups=self.neardups, problems=rt.problems)
        p = self.pusher
        rt.add_job("push", lambda: self._run(p.window), schedule.trigger(s.push.schedule, s.push.tz()))
        rt.add_job("push-startup", lambda: self._run(p.startup), None, next_run_time=datetime.now().astimezone())

    def stop(self) -> None:
        pass

    def _run(self, window: Callable[[], WindowReport]) -> RunResult:
        """One window; its result decides the window's Healthchecks ping (fail: something failed or pushing
        is paused, even when the problem saying so was already standing)."""
        try:
            report = window()
        except Exception as e:  # a fault in a window must not go unnoticed until the next one
            _log.exception("push window failed", error=str(e))
            self.rt.problems.report("push_window", REAUTH, f"pushing is paused: a push window failed "
                                    f"({type(e).__name__}: {e}); it is tried again soon, see the log")  # fmt: skip
            self._after(WindowReport(retry_after=600.0))
            return RunResult(False, f"the window failed: {type(e).__name__}: {e}")
        self.rt.problems.resolve("push_window")
        self._after(report)
        return RunResult(not report.failed and not report.paused, report.text())

    def _after(self, report: WindowReport) -> None:
        if report.retry_after is None or report.busy:
            self._retries = 0
            return
        from apscheduler.triggers.date import DateTrigger

        # Back off on repeated obstacles (an hour-long outage is retried a handful of times, not forever).
        delay = min(6 * 3600.0, max(report.retry_after, 60.0) * 2 ** min(self._retries, 6))
        self._retries += 1
        at = datetime.now().astimezone() + timedelta(seconds=delay)
        _log.info("another push window is scheduled", at=at.isoformat(timespec="seconds"), reason=report.waiting)
        p = self.pusher
        assert p is not None
        self.rt.add_job("push-retry", lambda: self._run(p.window), DateTrigger(run_date=at), replace_existing=True)
