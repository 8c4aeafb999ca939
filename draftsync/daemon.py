"""The daemon: wiring of the stages, its threads and queue, scheduler jobs, signals and sd_notify.

Watchdog threads enqueue events for the Settler; a settle loop moves ready paths into a bounded queue; a
small worker pool ingests them. APScheduler runs the periodic rescans, supervision, the scrub and the
push window. `scan` uses the same pipeline once and exits.

Whatever stops archiving as a whole (the archive missing or not ours, its disk full, the state disk full)
pauses ingest with one problem (`problems.py`), retried every few seconds, resumed by itself; a fault of
one file is recorded and retried with back-off. SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from draftsync import config as config_mod
from draftsync import log, names, schedule
from draftsync.archive import Archive, free_space
from draftsync.catalog import Catalog, SourceRow, make_private_dir
from draftsync.config import Settings
from draftsync.errors import (
    Abandoned,
    ArchiveFull,
    ArchiveMissing,
    ConfigError,
    ItemError,
    SourceChanged,
    SourceGone,
    SourceUnreadable,
    StateFull,
)
from draftsync.ingest import INODES_PER_VIDEO, Ingestor, Outcome
from draftsync.lock import StateLock
from draftsync.marker import ArchiveGuard
from draftsync.offsite.service import OffsiteService
from draftsync.problems import Problems
from draftsync.runtime import Runtime, Service
from draftsync.sdnotify import Notifier
from draftsync.settle import IgnoreRules, Settler, Version, unchanged
from draftsync.supervise import RunResult, Supervisor
from draftsync.walk import Folder, Folders, walk

if TYPE_CHECKING:
    from draftsync.watch import RootWatch

# `scan` imports this module too: what only the daemon needs (APScheduler, watchdog, the push queue, the
# scrub) is imported where the daemon starts, so a scan does not pay for it.

_log = log.get("draftsync.daemon")

WORKERS = 2
RETRY_DELAYS = (30.0, 120.0, 600.0, 3600.0)
RESUME_EVERY = 2.0  # seconds between checks whether a paused ingest may resume (cheap: a stat or two)
# After resuming, the problem stands until a file is archived, nothing is left to retry, or this long has
# passed: a cause that comes straight back (a quota the free-space figure does not show, full filesystem
# metadata) is a relapse, not a new problem, so it neither flaps in status nor floods the log.
CONFIRM_AFTER = 120.0


def relapse_wait(relapses: int) -> float:
    """Seconds before trying to resume again after the cause came back `relapses` times in a row."""
    return min(600.0, RESUME_EVERY * 2 ** min(relapses, 10))


FAILING_AFTER = 3  # attempts before a failing file becomes a standing problem
FAILING_EVERY = 30.0  # seconds between looks at failing files
# Periodic rescans of a healthy inotify root skip folders unchanged since the last walk (an in-place write is
# an event); every this many seconds one walks everything anyway.
FULL_WALK_EVERY = 6 * 3600.0
HELD_SHOWN = 50  # held-back files listed in the heartbeat (status shows them)


def ignore_rules(settings: Settings) -> IgnoreRules:
    return IgnoreRules(frozenset(settings.watch.extensions), tuple(settings.watch.ignore))


def cron(expr: str, tz: Any) -> Any:
    """An APScheduler trigger for a crontab(5) expression (config load has already checked it)."""
    try:
        return schedule.trigger(expr, tz)
    except ValueError as e:
        raise ConfigError(f"invalid cron expression {expr!r}: {e}") from None


@dataclass
class Pause:
    """Why ingest as a whole is paused: archive_missing, archive_full or state_full (problem kinds)."""

    kind: str
    message: str
    needed: int = 0  # bytes the archive disk must have free again (archive_full)


@dataclass
class Pipeline:
    """What `run` and `scan` share: ingest one path, classify what went wrong, remember retries, pause."""

    settings: Settings
    catalog: Catalog
    archive: Archive
    stop: threading.Event = field(default_factory=threading.Event)
    problems: Problems = field(default_factory=Problems)
    guard: ArchiveGuard | None = None
    beat: Callable[[], None] | None = None
    roots: list[str] = field(default_factory=list)
    retries: dict[str, tuple[float, int]] = field(default_factory=dict)
    pause: Pause | None = None
    counts: dict[str, int] = field(default_factory=dict)
    on_archived: Callable[[Outcome], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _told: set[str] = field(default_factory=set)
    _resumed: tuple[str, float] | None = None  # a pause's kind and when ingest resumed, until confirmed
    _relapses: int = 0
    resume_not_before: float = 0.0  # monotonic: after relapses, resuming waits longer

    def __post_init__(self) -> None:
        self.roots = [str(p) for p in self.settings.watch.paths]
        self.guard = self.guard or ArchiveGuard(self.archive.root, self.catalog)
        self.ingestor = Ingestor(self.settings, self.catalog, self.archive, should_stop=self.stop.is_set,
                                 guard=self.guard, beat=self.beat)  # fmt: skip

    @property
    def paused_until_space(self) -> int:
        p = self.pause
        return max(p.needed, 1) if p is not None and p.kind == "archive_full" else 0

    def root_of(self, path: str) -> str:
        best = ""
        for r in self.roots:
            if (path == r or path.startswith(r.rstrip("/") + "/")) and len(r) > len(best):
                best = r
        return best or os.path.dirname(path)

    def handle(self, path: str, resettle: Callable[[str], None]) -> Outcome | None:
        """Ingest one path; item errors are recorded and scheduled for retry, never raised."""
        shown = names.readable(path)
        try:
            out = self.ingestor.ingest(path, self.root_of(path))
        except SourceChanged as e:
            _log.info("source still changing", path=shown, detail=str(e))
            resettle(path)
            return None
        except SourceGone as e:
            _log.info("source vanished", path=shown, detail=str(e))
            return None
        except ArchiveMissing as e:
            self.pause_for(Pause("archive_missing", str(e)))
            self.retry_now(path)
            return None
        except ArchiveFull as e:
            self.pause_for(Pause("archive_full", str(e), e.needed))
            self.retry_now(path)
            return None
        except StateFull as e:
            self.pause_for(Pause("state_full", str(e)))
            self.retry_now(path)
            return None
        except ItemError as e:
            kind = "unreadable" if isinstance(e, SourceUnreadable) else "failing"
            try:
                attempts = self.catalog.record_failure(path, self.root_of(path), str(e), kind)
            except StateFull as full:
                self.pause_for(Pause("state_full", str(full)))
                self.retry_now(path)
                return None
            delay = RETRY_DELAYS[min(attempts - 1, len(RETRY_DELAYS) - 1)]
            with self._lock:
                self.counts["failed"] = self.counts.get("failed", 0) + 1
                self.retries[path] = (time.monotonic() + delay, attempts)
            _log.error("ingest failed", path=shown, error=str(e), attempts=attempts, retry_in_seconds=delay)
            with contextlib.suppress(StateFull):
                self.catalog.log_event("error", "ingest_failed", str(e), path)
            return None
        with self._lock:
            self.counts[out.kind] = self.counts.get(out.kind, 0) + 1
            self.retries.pop(path, None)
        if out.kind == "archived":
            self.confirm(archived=True)
        if out.kind in ("skipped", "empty"):
            self._tell_once(path, out.detail or out.kind)
        if out.kind == "archived" and self.on_archived is not None:
            self.on_archived(out)
        return out

    def counts_now(self) -> dict[str, int]:
        """A copy of the counts, taken while no worker is changing them."""
        with self._lock:
            return dict(self.counts)

    def count(self, key: str, n: int) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def _tell_once(self, path: str, why: str) -> None:
        """Skipped files (empty, symlinks) are logged once, at debug level."""
        key = f"{why}\0{path}"
        with self._lock:
            if key in self._told:
                return
            if len(self._told) > 10_000:
                self._told.clear()
            self._told.add(key)
        _log.debug("skipped", path=names.readable(path), reason=why)

    def retry_now(self, path: str) -> None:
        with self._lock:
            self.retries[path] = (time.monotonic(), 0)

    def pause_for(self, p: Pause) -> None:
        """Pause ingest (once: the problem is reported when it appears or its message changes; a cause that
        comes back before the resume was confirmed is a relapse, and resuming waits longer each time)."""
        with self._lock:
            relapse = self._resumed is not None and self._resumed[0] == p.kind
            first = (self.pause is None or self.pause.kind != p.kind) and not relapse
            if self.pause is not None and self.pause.kind == p.kind:
                p.needed = max(p.needed, self.pause.needed)
            self.pause = p
            if relapse:
                self._resumed = None
                self._relapses += 1
                self.resume_not_before = time.monotonic() + relapse_wait(self._relapses)
        if first:
            _log.error(p.kind.replace("_", " "), message=p.message, detail="ingest paused; retried every few seconds")
        elif relapse:
            _log.warning("the cause came back right after ingest resumed", kind=p.kind, message=p.message,
                         retry_in_seconds=relapse_wait(self._relapses))  # fmt: skip
        self.problems.report(p.kind, p.kind, p.message)

    def confirm(self, *, archived: bool = False, idle: bool = False, now: float | None = None) -> None:
        """A resume is confirmed (its problem cleared) by a file archived, by nothing left to retry, or by
        `CONFIRM_AFTER` seconds without the cause coming back."""
        with self._lock:
            r = self._resumed
            if r is None or not (archived or idle or (now or time.monotonic()) - r[1] >= CONFIRM_AFTER):
                return
            self._resumed = None
            self._relapses = 0
        self.problems.resolve(r[0])

    def try_resume(self) -> bool:
        """While paused: has the cause gone? If so resume (and clear the problem)."""
        p = self.pause
        if p is None:
            return True
        if time.monotonic() < self.resume_not_before:
            return False
        ok = False
        if p.kind == "archive_missing":
            assert self.guard is not None
            msg = self.guard.check()
            ok = msg is None
            if msg is not None and msg != p.message:
                self.pause_for(Pause(p.kind, msg))
        elif p.kind == "archive_full":
            fs = free_space(self.archive.root)
            ok = fs is not None and fs[0] >= p.needed and fs[1] >= INODES_PER_VIDEO
        elif p.kind == "state_full":
            try:
                self.catalog.set_meta("state_probe", str(time.time()))
                ok = True
            except StateFull:
                ok = False
        if not ok:
            return False
        with self._lock:
            if self.pause is p:
                self.pause = None
            self._resumed = (p.kind, time.monotonic())
        _log.info("ingest resumes", cause=p.kind)
        return True

    def due_retries(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = [p for p, (t, _) in self.retries.items() if t <= now]
            for p in due:
                del self.retries[p]
        return due


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier | None = None, config_arg: str | None = None) -> None:
        self.settings = settings
        self.config_arg = config_arg
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.hup = threading.Event()
        self.lock = StateLock(settings.state.dir)
        self.rules = ignore_rules(settings)
        self.settler = Settler(settings.watch.settle_seconds, settings.watch.open_write_timeout, rules=self.rules)
        self.work: queue.Queue[str] = queue.Queue(maxsize=256)
        self.in_flight: set[str] = set()
        self.threads: list[threading.Thread] = []
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = BackgroundScheduler(timezone=settings.archive.tz())
        self.supervisor = Supervisor()
        self.watches: list[RootWatch] = []
        self.services: list[Service] = []
        from draftsync import notify, thumbs, web  # loaded by `run` only: `scan` starts without them

        self.services += [t := thumbs.ThumbService(), n := notify.NotifyService(), web.WebService(n, t.remake)]
        self.services.append(OffsiteService())
        self.started = time.time()
        self._flight_lock = threading.Lock()
        self._dead_reported = False
        self._failing_reported: set[str] = set()
        self._next_resume = 0.0
        self._next_failing_check = 0.0
        self._swept = False
        # Per root: when the last walk started (ns) and the folders it found, and when the last full walk ran.
        self._folders: dict[str, tuple[int, dict[str, Folder]]] = {}
        self._full_walk_at: dict[str, float] = {}

    # --- start-up ------------------------------------------------------------------------------------

    def prepare_folders(self) -> None:
        """Create the state dir and the default inbox and name them. The archive root is the guard's."""
        s = self.settings
        if not s.state.dir.exists():
            make_private_dir(s.state.dir)
            _log.info("created folder", path=str(s.state.dir))
        for p in s.watch.paths:
            if not p.exists() and p == type(s.watch)().paths[0]:
                p.mkdir(parents=True, exist_ok=True)
                _log.info("created the default inbox; point your sync tool at it", path=str(p))

    def run(self) -> int:
        self.prepare_folders()
        self.lock.acquire("start the daemon")
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> int:
        from apscheduler.triggers.interval import IntervalTrigger

        from draftsync.watch import RootWatch

        s = self.settings
        self.catalog = Catalog(s.catalog_path)
        _note_push_enabled(s, self.catalog)
        self.archive = Archive(s.archive.root, s.archive.layout)
        self.problems = Problems(self.catalog)
        s.archive.tz()  # resolves the local zone now, so that a fallback to UTC is known below
        if config_mod.LOCAL_TZ_PROBLEM:  # clips would be dated in UTC: the owner should hear of it
            self.problems.report("timezone", "timezone", " ".join(config_mod.LOCAL_TZ_PROBLEM), severity="warning")
        else:
            self.problems.resolve("timezone")
        # Conditions of the last run that are only noticed when they recur are cleared; the others (archive,
        # folders, failing files) are looked at afresh below and cleared only if they no longer hold.
        roots = {str(p) for p in s.watch.paths}
        for key in self.problems.active_keys():
            kind, _, where = key.partition(":")
            if kind in ("archive_full", "state_full", "loop_dead") or (
                kind in ("root_missing", "root_degraded") and where not in roots
            ):
                self.problems.resolve(key, "looked at afresh at start-up")
        self.guard = ArchiveGuard(s.archive.root, self.catalog, lock_owner=str(s.state.dir))
        missing = self.guard.check()
        self.guard.refuse_if_taken()
        if missing is None:
            self.problems.resolve("archive_missing")
        self.rt = Runtime(s, self.catalog, self.archive, self.problems, self.supervisor, self.scheduler, self.stop)
        self.pipeline = Pipeline(s, self.catalog, self.archive, self.stop, problems=self.problems, guard=self.guard,
                                 beat=self.supervisor.beat_current, on_archived=self._archived)  # fmt: skip
        if missing is not None:
            self.pipeline.pause_for(Pause("archive_missing", missing))
        try:
            self._swept = begin_ingest(self.catalog, self.archive, sweep=missing is None)
        except StateFull as e:
            self.pipeline.pause_for(Pause("state_full", str(e)))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.hup.set())
        _log.info(
            "starting", roots=[str(p) for p in s.watch.paths], archive=str(s.archive.root), state=str(s.state.dir),
            settle_seconds=s.watch.settle_seconds, push="on" if s.push.enabled else "off",
            timezone=str(s.archive.tz()),
        )  # fmt: skip

        for p in s.watch.paths:
            w = RootWatch(
                str(p), self.rules, self.settler, recursive=s.watch.recursive, force_polling=s.watch.polling,
                poll_seconds=s.watch.poll_seconds,
            )  # fmt: skip
            try:
                w.start()
            except Exception as e:  # a watcher that cannot start is supervised like one that died
                _log.exception("watch could not start; retried by supervision", root=str(p), error=str(e))
            self.watches.append(w)
            self._report_root(w)
        self._publish_roots()

        for i in range(WORKERS):
            # A worker beats per chunk of a copy, so silence means it is stuck, not busy.
            lp = self.supervisor.spawn(f"ingest-{i}", self._work_one, self.stop, interval=0, max_silence=600)
            assert lp.thread is not None
            self.threads.append(lp.thread)
        self.supervisor.spawn("settle", self._settle_once, self.stop, interval=0.25, max_silence=120)

        rt = self.rt
        rt.add_job("rescan", self.rescan, IntervalTrigger(minutes=s.watch.rescan_minutes),
                   max_silence=s.watch.rescan_minutes * 60 * 2 + 3600, next_run_time=_now_dt())  # fmt: skip
        # Every 2 s (stats and reads only): a dead watcher or a remounted share is watched again at once. The
        # job also proves the scheduler thread itself is alive.
        rt.add_job("supervise", self.supervise, IntervalTrigger(seconds=2), max_silence=120)
        rt.add_job("scrub", self._scrub, cron(s.archive.scrub_schedule, s.archive.tz()), misfire_grace_time=3600)
        from draftsync.neardup import NearDups, Signer

        self.neardups = NearDups(self.catalog, self.archive, self.stop.is_set)
        with contextlib.suppress(StateFull):  # what `status` counts signatures of (without importing numpy)
            from draftsync.perceptual import VERSION

            self.catalog.set_meta("signature_version", str(VERSION))
        # Signs each archived video; catches up at start; waits while the archive is not there.
        self.services.append(Signer(self.neardups, ready=lambda: self.guard.ok))
        self._add_push_job()
        for svc in self.services:
            svc.start(rt)
        self.scheduler.start()
        self._heartbeat(notify=False)  # `status` sees a running daemon from the moment it says it is ready
        self.notifier.ready(self._status_line())
        _log.info("ready", watch_modes={w.root: w.mode for w in self.watches}, next_runs=self._next_runs())

        next_ping = time.monotonic() + min(5.0, self.notifier.watchdog_interval or 5.0)
        while not self.stop.wait(1.0):
            if self.hup.is_set():
                self.hup.clear()
                self.reload()
            now = time.monotonic()
            if now >= next_ping:
                self._heartbeat()
                next_ping = now + min(5.0, self.notifier.watchdog_interval or 5.0)
        return self.shutdown()

    def reload(self) -> None:
        """SIGHUP: read the config again. The log level and format apply at once; any other change is named
        and waits for a restart (a half-applied config would be worse). A bad file changes nothing."""
        try:
            new, _ = config_mod.load(self.config_arg)
        except ConfigError as e:
            _log.error("config reload failed; the running configuration stays in force", error=str(e))
            return
        changed = _changed_keys(self.settings.model_dump(mode="json"), new.model_dump(mode="json"))
        log.register_secrets(config_mod.secrets_of(new))
        applied = [k for k in changed if k.startswith("log.")]
        if applied:
            log.setup(new.log.level, new.log.format)
            self.settings.log = new.log
        pending = [k for k in changed if k not in applied]
        _log.info("config reloaded", applied=applied, restart_needed=pending,
                  hint="restart draftsync to apply the others" if pending else None)  # fmt: skip

    def shutdown(self) -> int:
        self.notifier.stopping()
        _log.info("stopping")
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:
            pass
        for svc in reversed(self.services):
            try:
                svc.stop()
            except Exception as e:
                _log.exception("service did not stop cleanly", service=svc.name, error=str(e))
        for w in self.watches:
            w.stop()
        for t in self.threads:
            t.join(timeout=30)
        if self._swept and not any(t.is_alive() for t in self.threads):
            with contextlib.suppress(StateFull):
                end_ingest(self.catalog)
        try:
            self._publish_roots(mode_override="stopped")
            self.catalog.set_meta("daemon", json.dumps({"pid": None, "stopped": time.time()}))
        except StateFull as e:
            _log.error("could not record the stop in the catalog", error=str(e))
        self.guard.release()
        _log.info("stopped")
        return 0

    # --- loops -----------------------------------------------------------------------------------

    def _settle_once(self) -> None:
        for root in self.settler.take_gaps():
            _log.warning("events were lost (inotify queue overflow); rescanning now", root=root)
            with contextlib.suppress(StateFull):
                self.catalog.log_event("warning", "events_lost", f"{root}: inotify queue overflow; rescanned", root)
            self._rescan_soon(root)
        pl = self.pipeline
        with self._flight_lock:
            idle = not self.in_flight
        pl.confirm(idle=idle and not pl.retries and self.work.empty() and not len(self.settler))
        if pl.pause is not None:
            now = time.monotonic()
            if now >= self._next_resume:
                self._next_resume = now + RESUME_EVERY
                pl.try_resume()
            if pl.pause is not None:
                return
        for p in pl.due_retries():
            self.settler.observe(p, age=self.settings.watch.settle_seconds)
        for path in self.settler.ready():
            self._enqueue(path)

    def _enqueue(self, path: str) -> None:
        with self._flight_lock:
            if path in self.in_flight:
                # Being ingested right now; look again once that attempt is over.
                self.settler.observe(path)
                return
            self.in_flight.add(path)
        while not self.stop.is_set():
            try:
                self.work.put(path, timeout=0.5)
                return
            except queue.Full:
                # Workers busy with long copies: waiting here is progress, not a hung settle loop.
                self.supervisor.beat_current()
                continue

    def _work_one(self) -> None:
        try:
            path = self.work.get(timeout=0.5)
        except queue.Empty:
            return
        try:
            if self.pipeline.pause is not None:
                self.pipeline.retry_now(path)
                return
            self.pipeline.handle(path, self.settler.observe)
        except Abandoned:
            _log.info("copy abandoned for shutdown; nothing partial left", path=names.readable(path))
        except Exception as e:  # a bug in one file's handling must not kill the worker
            _log.exception("unexpected error", path=names.readable(path), error=str(e))
            self.pipeline.retries[path] = (time.monotonic() + RETRY_DELAYS[-1], 0)
        finally:
            with self._flight_lock:
                self.in_flight.discard(path)

    # --- jobs ------------------------------------------------------------------------------------

    def _rescan_soon(self, root: str) -> None:
        """Rescan one root at once (after lost events or a watcher restart), off the caller's thread."""
        self.rt.add_job(f"rescan-now:{root}", lambda: self.rescan(only=root), None, next_run_time=_now_dt(),
                        replace_existing=True)  # fmt: skip

    def rescan(self, only: str | None = None) -> None:
        """Reconcile each root with the catalog: new or changed files go to the settler."""
        try:
            self._rescan(only)
        except StateFull as e:
            self.pipeline.pause_for(Pause("state_full", str(e)))

    def _rescan(self, only: str | None) -> None:
        for w in self.watches:
            if only and w.root != only:
                continue
            unreadable: list[str] = []
            folders = self._folders_for(w, full=only is not None)
            r = reconcile(w.root, self.rules, self.catalog, self.settler, self.settings.watch.recursive, unreadable,
                          waiting=self.pipeline.retries, folders=folders)  # fmt: skip
            self._folders[w.root] = (folders.started, folders.found)
            found = r.found
            key = f"root_missing:{w.root}"
            if not os.path.isdir(w.root) or (found == 0 and self.catalog.present_sources_under(w.root) > 0):
                missing = not os.path.isdir(w.root)
                detail = "folder missing" if missing else "folder is empty"
                _log.error("watch root missing or empty; not treating it as deletion", root=w.root, detail=detail,
                           hint="is the share mounted?")  # fmt: skip
                w.health, w.detail = "missing" if missing else "empty", detail
                if self.problems.report(key, "root_missing", f"the watched folder {w.root} is "
                                        f"{'missing' if missing else 'empty'}: is the share mounted? Nothing it "
                                        "held is treated as deleted", severity="warning"):  # fmt: skip
                    self.catalog.log_event("error", "root_missing", f"{w.root}: {detail}", w.root)
            else:
                if r.gone:
                    self.catalog.mark_gone(r.gone)
                    _log.info("source files gone (archive keeps them)", root=w.root, count=len(r.gone))
                if w.health in ("empty", "missing") and w.mode != "missing":
                    w.health, w.detail = "ok", ""
                self.problems.resolve(key)
                if w.mode == "inotify" and set(w.unreadable()) - set(unreadable):
                    # Folders that were unreadable can be read now: watch them (a restart adds the watches).
                    w.restart()
                w.set_unreadable(unreadable)  # the full walk is the authority on what cannot be read
                w.assess()
                self._report_root(w)
            self.catalog.update_root(w.root, last_rescan=time.time())
        self._publish_roots()

    def _folders_for(self, w: RootWatch, *, full: bool) -> Folders:
        """What this walk of a root may skip: folders unchanged since the last walk, while an inotify watcher
        that is fully healthy sees every write in place; nothing at start-up, after lost events or a restart
        (`full`), while polling or degraded, and once every FULL_WALK_EVERY seconds."""
        now = time.monotonic()
        last = self._folders.get(w.root)
        full = full or last is None or w.mode != "inotify" or w.health != "ok" or (
            now - self._full_walk_at.get(w.root, -FULL_WALK_EVERY) >= FULL_WALK_EVERY)  # fmt: skip
        started = time.time_ns()
        if full or last is None:
            self._full_walk_at[w.root] = now
            return Folders(started=started)
        # A folder changed within two seconds of the last look may have changed again in the same tick of a
        # coarse clock (FAT, some shares): it is listed again.
        return Folders(known=last[1], settled_before=last[0] - 2_000_000_000, started=started)

    def _report_root(self, w: RootWatch) -> None:
        """A watched folder's standing problems follow its health."""
        if w.health == "degraded":
            self.problems.report(f"root_degraded:{w.root}", "root_degraded",
                                 f"the watched folder {w.root} is watched only partly: {w.detail}",
                                 severity="warning")  # fmt: skip
        else:
            self.problems.resolve(f"root_degraded:{w.root}")
        if w.mode == "missing":
            self.problems.report(f"root_missing:{w.root}", "root_missing",
                                 f"the watched folder {w.root} is missing: is the share mounted? Nothing it held is "
                                 "treated as deleted", severity="warning")  # fmt: skip

    def supervise(self) -> None:
        changed = False
        for w in self.watches:
            try:
                before = (w.mode, w.health, w.detail)
                why = w.check()
                changed = changed or why is not None or before != (w.mode, w.health, w.detail)
                if why is not None:
                    if why != "the folder reappeared":
                        self.problems.notice("watcher_restarted",
                                             f"the watcher of {w.root} was restarted ({why}); rescanning it now")  # fmt: skip
                    self._rescan_soon(w.root)
                self._report_root(w)
            except Exception as e:
                _log.exception("watch restart failed", root=w.root, error=str(e))
        now = time.monotonic()
        if now >= self._next_failing_check:
            self._next_failing_check = now + FAILING_EVERY
            try:
                self._check_failing()
            except StateFull as e:
                self.pipeline.pause_for(Pause("state_full", str(e)))
        if self.pipeline.pause is None:
            try:
                self.guard.require()  # a stat or three while nothing changed; a remount is a new lock file
            except ArchiveMissing as e:
                self.pipeline.pause_for(Pause("archive_missing", str(e)))
        if changed:
            self._publish_roots()  # (the heartbeat publishes them every 5 s anyway)

    def _check_failing(self) -> None:
        n = self.catalog.failing_count(FAILING_AFTER)
        if not n:
            self.problems.resolve("files_failing")
            return
        worst = next((f for f in self.catalog.failures(50) if f["attempts"] >= FAILING_AFTER), None)
        eg = f", e.g. {worst['path']}: {worst['last_error']}" if worst else ""
        self.problems.report("files_failing", "files_failing",
                             f"{n} file(s) keep failing to archive{eg}; they are retried (see `draftsync status`)")  # fmt: skip

    def _scrub(self) -> RunResult:
        """The scheduled scrub; its result decides its ping (a skipped scrub checked nothing: it failed)."""
        if not self.guard.ok:
            _log.warning("scrub skipped: the archive is not available", detail=self.guard.message)
            return RunResult(False, f"scrub skipped: the archive is not available ({self.guard.message})")
        from draftsync.integrity import scrub, scrub_result

        return scrub_result(scrub(self.archive, self.catalog, self.settings.archive.scrub_fraction, self.problems))

    def _add_push_job(self) -> None:
        if self.settings.push.enabled:
            from draftsync.push.pusher import PushService

            self.services.append(PushService(neardups=self.neardups))

    def _archived(self, out: Outcome) -> None:
        """Tell the hosted services about a newly archived video."""
        if out.hash is None:
            return
        v = self.catalog.video(out.hash)
        if v is not None:
            self.pipeline.count("archived_bytes", v.size)  # /metrics' counter of what this process archived
            self.rt.archived(v)

    # --- status ----------------------------------------------------------------------------------

    def _status_line(self) -> str:
        c = self.pipeline.counts
        p = self.pipeline.pause
        return (
            f"{c.get('archived', 0)} archived, {len(self.settler)} settling, "
            f"{'paused: ' + p.kind.replace('_', ' ') if p else 'watching'}"
        )

    def _next_runs(self) -> dict[str, str]:
        out = {}
        for job in self.scheduler.get_jobs():
            nxt = getattr(job, "next_run_time", None)
            if nxt is not None and job.id in ("scrub", "push", "rescan"):
                out[job.id] = nxt.isoformat()
        return out

    def held(self) -> list[dict[str, Any]]:
        """Files held back and why (settling, open for write, being archived), for `status`."""
        out = [{"path": names.readable(h.path), "reason": h.reason, "quiet_for": round(h.quiet_for, 1),
                "need": h.need} for h in self.settler.held()]  # fmt: skip
        with self._flight_lock:
            out += [{"path": names.readable(p), "reason": "being archived"} for p in self.in_flight]
        return out

    def _heartbeat(self, notify: bool = True) -> None:
        dead = self.supervisor.dead()
        if dead:
            # Stop feeding systemd's watchdog: a restarted daemon beats a deaf one kept alive.
            if not self._dead_reported:
                self.problems.report("loop_dead", "loop_dead", "internal loop(s) stopped: " + "; ".join(dead)
                                     + "; the daemon stops feeding the watchdog so that systemd restarts it")  # fmt: skip
                self._dead_reported = True
        else:
            if notify:
                self.notifier.watchdog()
            if self._dead_reported:
                self.problems.resolve("loop_dead")
                self._dead_reported = False
        self._report_failing()
        if notify:
            self.notifier.status(self._status_line())
        p = self.pipeline.pause
        held = self.held()
        try:
            self.catalog.set_meta(
                "daemon",
                json.dumps({
                    "pid": os.getpid(), "started": self.started, "heartbeat": time.time(),
                    "settling": len(self.settler), "queued": self.work.qsize(), "in_flight": len(self.in_flight),
                    "paused_archive_full": p is not None and p.kind == "archive_full",
                    "paused": {"kind": p.kind, "message": p.message} if p else None,
                    "counts": self.pipeline.counts_now(), "dead_loops": dead, "held": held[:HELD_SHOWN],
                    "held_count": len(held), "next_runs": self._next_runs(), "timezone": str(self.settings.archive.tz()),
                }),
            )  # fmt: skip
        except StateFull as e:
            self.pipeline.pause_for(Pause("state_full", str(e)))
            return
        self._publish_roots()

    def _report_failing(self) -> None:
        """A loop that raises on every pass still beats, so it is not dead; name it as a warning."""
        now = self.supervisor.failing()
        for name, error in now.items():
            self.problems.report(f"loop_failing:{name}", "loop_failing", f"internal loop {name} fails on every pass "
                                 f"({error}); it retries with back-off, the log has the traceback",
                                 severity="warning")  # fmt: skip
        for name in self._failing_reported - now.keys():
            self.problems.resolve(f"loop_failing:{name}")
        self._failing_reported = set(now)

    def _publish_roots(self, mode_override: str | None = None) -> None:
        try:
            for w in self.watches:
                self.catalog.update_root(
                    w.root,
                    mode=mode_override or w.mode,
                    health=w.health,
                    detail=w.detail,
                    last_event=w.last_event,
                )
        except StateFull as e:
            self.pipeline.pause_for(Pause("state_full", str(e)))


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`section.key` names whose values differ between two config dumps (whole sections for lists)."""
    out = []
    for sec in sorted(set(old) | set(new)):
        a, b = old.get(sec), new.get(sec)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{sec}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(sec)
    return out


def _note_push_enabled(settings: Settings, catalog: Catalog) -> None:
    if settings.push.enabled:
        from draftsync.push.queue import note_enabled

        note_enabled(settings, catalog)


def _now_dt() -> Any:
    from datetime import datetime

    return datetime.now().astimezone()


@dataclass
class Reconciled:
    """What one walk of a root found: how many wanted files, how many were handed to the settler, and
    the catalogued sources that are no longer there (not counting those under folders it could not read)."""

    found: int = 0
    changed: int = 0
    gone: list[str] = field(default_factory=list)


_PRESENT = ("archived", "empty")
_MAY_GO = ("archived", "empty", "failed")


def reconcile(
    root: str,
    rules: IgnoreRules,
    catalog: Catalog,
    settler: Settler,
    recursive: bool,
    unreadable: list[str] | None = None,
    now: float | None = None,
    waiting: Container[str] = (),
    folders: Folders | None = None,
) -> Reconciled:
    """Walk one root and merge it with the catalog's sources under it, both in path order; hand new or
    changed files to the settler. Memory stays at a folder's worth, whatever the size of the tree. Files
    `waiting` for a retry (a failed attempt's back-off) are left to it. With `folders`, folders unchanged
    since the last walk are not listed (`walk.Folders`); their catalogued files count as found, unchanged.

    A file's age comes from its mtime only when that is in the past: a clock that lies (mtime in 2300)
    gives no head start, and the settler's own monotonic clock decides."""
    now = time.time() if now is None else now
    unreadable = [] if unreadable is None else unreadable
    out = Reconciled()
    learned: list[tuple[str, int]] = []
    rows = catalog.sources_under(root)
    odd = catalog.odd_sources_under(root)  # names that are not UTF-8: few, looked up by path
    skipped = folders.skipped if folders is not None else set()
    row = next(rows, None)
    for path, st in walk(root, rules, recursive, unreadable, folders):
        out.found += 1
        while row is not None and row[0] < path:
            _unmatched(out, row, unreadable, skipped)
            row = next(rows, None)
        if row is not None and row[0] == path:
            known: SourceRow | None = row
            row = next(rows, None)
        else:
            known = odd.pop(path, None) if odd else None
        # Exactly the catalogued version is unchanged by any reading; anything else is for the one predicate
        # to decide (a row rebuilt from an old sidecar knows no ctime).
        if known is not None and known[4] in _PRESENT:
            if (st.st_mtime_ns == known[2] and st.st_size == known[1] and st.st_ino == known[3]
                    and st.st_ctime_ns == known[5]):  # fmt: skip
                continue
            if unchanged(Version(known[1] or 0, known[2] or 0, known[3] or 0, known[5]), Version.of(st)):
                if known[5] is None:
                    learned.append((path, st.st_ctime_ns))  # next time the fast comparison above decides
                continue
        if path in waiting:
            continue  # failed before and due again at its back-off's time, not at every rescan
        out.changed += 1
        settler.observe(path, age=max(0.0, now - st.st_mtime))
    while row is not None:
        _unmatched(out, row, unreadable, skipped)
        row = next(rows, None)
    for r in odd.values():
        _unmatched(out, r, unreadable, skipped)
    if learned:
        catalog.learn_ctimes(learned)
    return out


def _unmatched(out: Reconciled, row: SourceRow, unreadable: list[str], skipped: set[str]) -> None:
    """A catalogued source the walk did not yield: in a folder it skipped as unchanged (there, as it was),
    in a folder it could not read (may well be there), or gone."""
    if skipped and row[0].rpartition("/")[0] in skipped:
        if row[4] != "gone":
            out.found += 1
        return
    if row[4] in _MAY_GO and not any(row[0].startswith(d.rstrip("/") + "/") for d in unreadable):
        out.gone.append(row[0])


# While a process ingests, this meta key holds its pid; a clean stop empties it. Temp files are left in the
# archive only by a process that died while ingesting (every other failure removes its own), so the whole
# archive is searched for them only after such a death (or when the catalog cannot say), not at every start.
INGESTING = "ingesting"


def begin_ingest(catalog: Catalog, archive: Archive, *, sweep: bool = True) -> bool:
    """Sweep the archive's temp files if the last ingesting process did not stop cleanly, then mark this one
    as ingesting. Returns whether the archive is known to be clean (False when `sweep` was not allowed
    because the archive is not there: the mark then stays until a start that can sweep)."""
    last = catalog.get_meta(INGESTING)
    clean = last == ""
    if not clean and sweep:
        removed = archive.sweep_temps()
        if removed:
            _log.info("removed partial copies left by an earlier stop", count=len(removed))
        clean = True
    catalog.set_meta(INGESTING, str(os.getpid()))
    return clean


def end_ingest(catalog: Catalog) -> None:
    """A clean stop: nothing of ours is left half-written in the archive."""
    catalog.set_meta(INGESTING, "")


def scan_once(settings: Settings, progress: Any = None, compare: bool = True) -> dict[str, Any]:
    """`draftsync scan`: ingest everything complete under the roots, then return a summary.

    Files that are not yet quiet (just written, or with an mtime in the future that says nothing) are
    watched for one settle period by scan's own monotonic clock; those still changing are left."""
    stop = threading.Event()
    # Ctrl-C, a closed ssh session (SIGHUP) and a stopped timer unit (SIGTERM) all end a scan the same way:
    # copies in flight are abandoned and removed, never left as partial files in the archive.
    prev = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    lock = StateLock(settings.state.dir)
    try:
        lock.acquire("scan")
        try:
            catalog = Catalog(settings.catalog_path)
            _note_push_enabled(settings, catalog)
            guard = ArchiveGuard(settings.archive.root, catalog, lock_owner=str(settings.state.dir))
            try:
                return _scan(settings, catalog, guard, stop, progress, compare)
            finally:
                guard.release()
                catalog.close()
        finally:
            lock.release()
    finally:
        for sig, handler in prev.items():
            signal.signal(sig, handler)


def _scan(settings: Settings, catalog: Catalog, guard: ArchiveGuard, stop: threading.Event, progress: Any,
          compare: bool) -> dict[str, Any]:  # fmt: skip
    missing_archive = guard.check()
    if missing_archive is not None:
        guard.refuse_if_taken()
        raise ArchiveMissing(missing_archive)
    archive = Archive(settings.archive.root, settings.archive.layout)
    pipeline = Pipeline(settings, catalog, archive, stop, problems=Problems(catalog), guard=guard)
    begin_ingest(catalog, archive)
    try:
        return _scan_roots(settings, catalog, archive, pipeline, stop, progress, compare)
    finally:
        with contextlib.suppress(StateFull):
            end_ingest(catalog)


def _scan_roots(settings: Settings, catalog: Catalog, archive: Archive, pipeline: Pipeline, stop: threading.Event,
                progress: Any, compare: bool) -> dict[str, Any]:  # fmt: skip
    rules = ignore_rules(settings)
    settler = Settler(settings.watch.settle_seconds, settings.watch.open_write_timeout, rules=rules)
    missing = []
    found = 0
    for r in pipeline.roots:
        if not os.path.isdir(r):
            missing.append(r)
            _log.error("watch root missing", root=r)
            continue
        found += reconcile(r, rules, catalog, settler, settings.watch.recursive).found
        catalog.update_root(r, last_rescan=time.time())
    unchanged_count = found - len(settler)
    import concurrent.futures as cf

    def one(p: str) -> Outcome | None:
        if stop.is_set():
            return None
        try:
            out = pipeline.handle(p, lambda _p: None)
        except Abandoned:  # stopped on request: the partial copy is gone, the summary says "interrupted"
            return None
        if progress is not None:
            progress.file_done(p)
        return out

    def ingest(paths: list[str]) -> None:
        with cf.ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(one, paths))

    ready = settler.ready()
    if progress is not None:
        progress.start(sum(_size(p) for p in ready), len(ready))
        archive.progress = progress.advance
    candidates = len(ready)
    ingest(ready)
    # What was not quiet yet gets one settle period, by our clock, not the file's.
    wait = max((h.need for h in settler.held()), default=0.0)
    deadline = time.monotonic() + wait + 0.5
    while len(settler) and not stop.is_set() and pipeline.pause is None and time.monotonic() < deadline:
        stop.wait(0.1)
        more = settler.ready()
        candidates += len(more)
        ingest(more)
    signed = 0
    if compare and not stop.is_set() and pipeline.pause is None and catalog.any_unsigned():
        from draftsync.neardup import NearDups  # numpy and PyAV load only when there is work

        signed = NearDups(catalog, archive, stop.is_set).backfill(limit=10**9)
    p = pipeline.pause
    return {
        "signed": signed,
        "candidates": candidates, "archived": pipeline.counts.get("archived", 0),
        "already_archived": unchanged_count + pipeline.counts.get("seen", 0) + pipeline.counts.get("known", 0),
        "empty": pipeline.counts.get("empty", 0), "skipped": pipeline.counts.get("skipped", 0),
        "failed": pipeline.counts.get("failed", 0),
        "still_being_written": len(settler),
        "archive_full": p is not None and p.kind == "archive_full",
        "paused": p.message if p is not None else None,
        "missing_roots": missing, "interrupted": stop.is_set(),
    }  # fmt: skip


def _size(p: str) -> int:
    try:
        return os.path.getsize(p)
    except OSError:
        return 0
