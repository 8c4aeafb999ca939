"""The daemon: wiring of the stages, its threads and queue, scheduler jobs, signals and sd_notify.

Watchdog threads feed the Settler; a settle loop moves ready paths into a bounded queue; a small worker
pool ingests them. APScheduler runs the periodic rescans, the scrub and the push window. `scan` uses
the same pipeline once and exits.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from draftsync import log, schedule
from draftsync.archive import Archive, free_bytes
from draftsync.catalog import Catalog, make_private_dir
from draftsync.config import Settings
from draftsync.errors import Abandoned, ArchiveFull, ConfigError, ItemError, SourceChanged, SourceGone
from draftsync.ingest import Ingestor, Outcome
from draftsync.integrity import scrub
from draftsync.lock import StateLock
from draftsync.problems import Problems
from draftsync.runtime import Runtime, Service
from draftsync.sdnotify import Notifier
from draftsync.settle import IgnoreRules, Settler
from draftsync.supervise import Supervisor
from draftsync.watch import RootWatch, walk_files

_log = log.get("draftsync.daemon")

WORKERS = 2
RETRY_DELAYS = (30.0, 120.0, 600.0, 3600.0)


def ignore_rules(settings: Settings) -> IgnoreRules:
    return IgnoreRules(frozenset(settings.watch.extensions), tuple(settings.watch.ignore))


def cron(expr: str, tz: Any) -> Any:
    """An APScheduler trigger for a crontab(5) expression (config load has already checked it)."""
    try:
        return schedule.trigger(expr, tz)
    except ValueError as e:
        raise ConfigError(f"invalid cron expression {expr!r}: {e}") from None


@dataclass
class Pipeline:
    """What `run` and `scan` share: ingest one path, classify what went wrong, remember retries."""

    settings: Settings
    catalog: Catalog
    archive: Archive
    stop: threading.Event = field(default_factory=threading.Event)
    roots: list[str] = field(default_factory=list)
    retries: dict[str, tuple[float, int]] = field(default_factory=dict)
    paused_until_space: int = 0  # bytes needed; 0 when not paused
    counts: dict[str, int] = field(default_factory=dict)
    on_archived: Callable[[Outcome], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.roots = [str(p) for p in self.settings.watch.paths]
        self.ingestor = Ingestor(self.settings, self.catalog, self.archive, should_stop=self.stop.is_set)

    def root_of(self, path: str) -> str:
        best = ""
        for r in self.roots:
            if (path == r or path.startswith(r.rstrip("/") + "/")) and len(r) > len(best):
                best = r
        return best or os.path.dirname(path)

    def handle(self, path: str, resettle: Callable[[str], None]) -> Outcome | None:
        """Ingest one path; item errors are recorded and scheduled for retry, never raised."""
        try:
            out = self.ingestor.ingest(path, self.root_of(path))
        except SourceChanged as e:
            _log.info("source still changing", path=path, detail=str(e))
            resettle(path)
            return None
        except SourceGone as e:
            _log.info("source vanished", path=path, detail=str(e))
            return None
        except ArchiveFull as e:
            with self._lock:
                if not self.paused_until_space:
                    _log.error("archive full", path=path, error=str(e), root=str(self.archive.root))
                    self.catalog.log_event("error", "archive_full", str(e), path)
                self.paused_until_space = max(e.needed, 1)
                self.retries[path] = (time.monotonic(), 0)
            return None
        except ItemError as e:
            attempts = self.catalog.record_failure(path, self.root_of(path), str(e))
            with self._lock:
                self.counts["failed"] = self.counts.get("failed", 0) + 1
            delay = RETRY_DELAYS[min(attempts - 1, len(RETRY_DELAYS) - 1)]
            with self._lock:
                self.retries[path] = (time.monotonic() + delay, attempts)
            _log.error("ingest failed", path=path, error=str(e), attempts=attempts, retry_in_seconds=delay)
            self.catalog.log_event("error", "ingest_failed", str(e), path)
            return None
        with self._lock:
            self.counts[out.kind] = self.counts.get(out.kind, 0) + 1
            self.retries.pop(path, None)
        if out.kind == "skipped":
            _log.info("skipped", path=path, reason=out.detail)
        if out.kind == "archived" and self.on_archived is not None:
            self.on_archived(out)
        return out

    def space_back(self) -> bool:
        """While paused for a full disk: has enough space returned?"""
        need = self.paused_until_space
        if not need:
            return True
        free = free_bytes(self.archive.root)
        if free is not None and free >= need:
            with self._lock:
                self.paused_until_space = 0
            _log.info("archive has space again; ingest resumes", root=str(self.archive.root))
            self.catalog.log_event("info", "archive_space", "space returned; ingest resumed")
            return True
        return False

    def due_retries(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = [p for p, (t, _) in self.retries.items() if t <= now]
            for p in due:
                del self.retries[p]
        return due


class Daemon:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.lock = StateLock(settings.state.dir)
        self.rules = ignore_rules(settings)
        self.settler = Settler(settings.watch.settle_seconds, settings.watch.open_write_timeout)
        self.work: queue.Queue[str] = queue.Queue(maxsize=256)
        self.in_flight: set[str] = set()
        self.threads: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(timezone=settings.archive.tz())
        self.supervisor = Supervisor()
        self.watches: list[RootWatch] = []
        self.services: list[Service] = []
        self.started = time.time()
        self._flight_lock = threading.Lock()
        self._dead_reported = False

    # --- start-up ------------------------------------------------------------------------------------

    def prepare_folders(self) -> None:
        """Create the folders of the embedded default (and any missing archive/state dir) and name them."""
        s = self.settings
        if not s.state.dir.exists():
            make_private_dir(s.state.dir)
            _log.info("created folder", path=str(s.state.dir))
        if not s.archive.root.exists():
            s.archive.root.mkdir(parents=True, exist_ok=True)
            _log.info("created folder", path=str(s.archive.root))
        for p in s.watch.paths:
            if not p.exists() and p == type(s.watch)().paths[0]:
                p.mkdir(parents=True, exist_ok=True)
                _log.info("created the default inbox; point your sync tool at it", path=str(p))

    def run(self) -> int:
        s = self.settings
        self.prepare_folders()
        self.lock.acquire("start the daemon")
        self.catalog = Catalog(s.catalog_path)
        self.archive = Archive(s.archive.root, s.archive.layout)
        self.problems = Problems(self.catalog)
        self.rt = Runtime(s, self.catalog, self.archive, self.problems, self.supervisor, self.scheduler, self.stop)
        self.pipeline = Pipeline(s, self.catalog, self.archive, self.stop, on_archived=self._archived)
        removed = self.archive.sweep_temps()
        if removed:
            _log.info("removed partial copies left by an earlier stop", count=len(removed))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        _log.info(
            "starting", roots=[str(p) for p in s.watch.paths], archive=str(s.archive.root), state=str(s.state.dir),
            settle_seconds=s.watch.settle_seconds, push="on" if s.push.enabled else "off",
        )  # fmt: skip

        for p in s.watch.paths:
            w = RootWatch(
                str(p), self.rules, self.settler, recursive=s.watch.recursive, force_polling=s.watch.polling,
                poll_seconds=s.watch.poll_seconds,
            )  # fmt: skip
            w.start()
            self.watches.append(w)
        self._publish_roots()

        for i in range(WORKERS):
            # A worker beats between files; one file may take long (a 4 GB copy to a slow USB disk).
            lp = self.supervisor.spawn(f"ingest-{i}", self._work_one, self.stop, interval=0, max_silence=1800)
            assert lp.thread is not None
            self.threads.append(lp.thread)
        self.supervisor.spawn("settle", self._settle_once, self.stop, interval=0.25, max_silence=120)

        rt = self.rt
        rt.add_job("rescan", self.rescan, IntervalTrigger(minutes=s.watch.rescan_minutes),
                   max_silence=s.watch.rescan_minutes * 60 * 2 + 3600, next_run_time=_now_dt())  # fmt: skip
        # The 5 s supervision job also proves the scheduler thread itself is alive.
        rt.add_job("supervise", self.supervise, IntervalTrigger(seconds=5), max_silence=120)
        rt.add_job("scrub", self._scrub, cron(s.archive.scrub_schedule, s.archive.tz()), misfire_grace_time=3600)
        from draftsync.neardup import NearDups, Signer

        self.neardups = NearDups(self.catalog, self.archive, self.stop.is_set)
        self.services.append(Signer(self.neardups))  # signs each archived video; catches up at start
        self._add_push_job()
        for svc in self.services:
            svc.start(rt)
        self.scheduler.start()
        self.notifier.ready(self._status_line())
        _log.info("ready", watch_modes={w.root: w.mode for w in self.watches})

        next_ping = 0.0
        while not self.stop.wait(1.0):
            now = time.monotonic()
            if now >= next_ping:
                self._heartbeat()
                next_ping = now + min(5.0, self.notifier.watchdog_interval or 5.0)
        return self.shutdown()

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
        self._publish_roots(mode_override="stopped")
        self.catalog.set_meta("daemon", json.dumps({"pid": None, "stopped": time.time()}))
        self.lock.release()
        _log.info("stopped")
        return 0

    # --- loops -----------------------------------------------------------------------------------

    def _settle_once(self) -> None:
        if self.pipeline.paused_until_space and not self.pipeline.space_back():
            self.stop.wait(5.0)
            return
        for p in self.pipeline.due_retries():
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
                continue

    def _work_one(self) -> None:
        try:
            path = self.work.get(timeout=0.5)
        except queue.Empty:
            return
        try:
            if self.pipeline.paused_until_space:
                self.pipeline.retries[path] = (time.monotonic(), 0)
                return
            self.pipeline.handle(path, self.settler.observe)
        except Abandoned:
            _log.info("copy abandoned for shutdown; nothing partial left", path=path)
        except Exception as e:  # a bug in one file's handling must not kill the worker
            _log.exception("unexpected error", path=path, error=str(e))
            self.pipeline.retries[path] = (time.monotonic() + RETRY_DELAYS[-1], 0)
        finally:
            with self._flight_lock:
                self.in_flight.discard(path)

    # --- jobs ------------------------------------------------------------------------------------

    def rescan(self, only: str | None = None) -> None:
        """Reconcile each root with the catalog: new or changed files go to the settler."""
        known = self.catalog.known_paths()
        for w in self.watches:
            if only and w.root != only:
                continue
            found, seen = reconcile(w.root, self.rules, known, self.settler, self.settings.watch.recursive)
            if not os.path.isdir(w.root) or (found == 0 and self.catalog.present_sources_under(w.root) > 0):
                detail = "folder missing" if not os.path.isdir(w.root) else "folder is empty"
                _log.error("watch root missing or empty; not treating it as deletion", root=w.root, detail=detail,
                           hint="is the share mounted?")  # fmt: skip
                w.health, w.detail = "missing" if detail == "folder missing" else "empty", detail
                self.catalog.log_event("error", "root_missing", f"{w.root}: {detail}", w.root)
            else:
                gone = [p for p, v in known.items() if v[3] in ("archived", "empty") and p not in seen
                        and (p.startswith(w.root.rstrip("/") + "/"))]  # fmt: skip
                if gone:
                    self.catalog.mark_gone(gone)
                    _log.info("source files gone (archive keeps them)", root=w.root, count=len(gone))
                if w.health in ("empty", "missing") and w.mode != "missing":
                    w.health, w.detail = "ok", ""
            self.catalog.update_root(w.root, last_rescan=time.time())
        self._publish_roots()

    def supervise(self) -> None:
        for w in self.watches:
            try:
                if w.check():
                    self.rescan(only=w.root)
            except Exception as e:
                _log.error("watch restart failed", root=w.root, error=str(e))
        self._publish_roots()

    def _scrub(self) -> None:
        scrub(self.archive, self.catalog, self.settings.archive.scrub_fraction)

    def _add_push_job(self) -> None:
        s = self.settings
        if not s.push.enabled:
            return
        from draftsync.push.queue import Pusher

        pusher = Pusher(s, self.catalog, should_stop=self.stop.is_set, neardups=self.neardups)
        self.pusher = pusher
        self.rt.add_job("push", pusher.window, cron(s.push.schedule, s.push.tz()), misfire_grace_time=None)
        # A window missed while we were down runs once now (coalesced), and interrupted uploads resume.
        self.rt.add_job("push-startup", pusher.startup, None, next_run_time=_now_dt())

    def _archived(self, out: Outcome) -> None:
        """Tell the hosted services about a newly archived video."""
        if out.hash is None:
            return
        v = self.catalog.video(out.hash)
        if v is not None:
            self.rt.archived(v)

    # --- status ----------------------------------------------------------------------------------

    def _status_line(self) -> str:
        c = self.pipeline.counts
        return (
            f"{c.get('archived', 0)} archived, {len(self.settler)} settling, "
            f"{'paused: archive full' if self.pipeline.paused_until_space else 'watching'}"
        )

    def _heartbeat(self) -> None:
        dead = self.supervisor.dead()
        if dead:
            # Stop feeding systemd's watchdog: a restarted daemon beats a deaf one kept alive.
            if not self._dead_reported:
                self.problems.report("loop_dead", "loop_dead", "internal loop(s) stopped: " + "; ".join(dead)
                                     + "; the daemon stops feeding the watchdog so that systemd restarts it")  # fmt: skip
                self._dead_reported = True
        else:
            self.notifier.watchdog()
            if self._dead_reported:
                self.problems.resolve("loop_dead")
                self._dead_reported = False
        self.notifier.status(self._status_line())
        self.catalog.set_meta(
            "daemon",
            json.dumps({
                "pid": os.getpid(), "started": self.started, "heartbeat": time.time(),
                "settling": len(self.settler), "queued": self.work.qsize(), "in_flight": len(self.in_flight),
                "paused_archive_full": bool(self.pipeline.paused_until_space), "counts": self.pipeline.counts,
                "dead_loops": dead,
            }),
        )  # fmt: skip
        self._publish_roots()

    def _publish_roots(self, mode_override: str | None = None) -> None:
        for w in self.watches:
            self.catalog.update_root(
                w.root,
                mode=mode_override or w.mode,
                health=w.health,
                detail=w.detail,
                last_event=w.last_event,
            )


def _now_dt() -> Any:
    from datetime import datetime

    return datetime.now().astimezone()


def reconcile(
    root: str,
    rules: IgnoreRules,
    known: dict[str, tuple[int, int, int, str]],
    settler: Settler,
    recursive: bool,
) -> tuple[int, set[str]]:
    """Walk one root; hand new or changed files to the settler. Returns (files found, paths seen)."""
    now = time.time()
    found = 0
    seen: set[str] = set()
    for e in walk_files(root, rules, recursive):
        found += 1
        seen.add(e.path)
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        k = known.get(e.path)
        if k is not None and k[3] in ("archived", "empty") and k[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            continue
        settler.observe(e.path, age=max(0.0, now - st.st_mtime))
    return found, seen


def scan_once(settings: Settings, progress: Any = None, compare: bool = True) -> dict[str, Any]:
    """`draftsync scan`: ingest everything already settled under the roots, then return a summary."""
    lock = StateLock(settings.state.dir)
    settings.archive.root.mkdir(parents=True, exist_ok=True)
    lock.acquire("scan")
    catalog = Catalog(settings.catalog_path)
    try:
        archive = Archive(settings.archive.root, settings.archive.layout)
        stop = threading.Event()
        pipeline = Pipeline(settings, catalog, archive, stop)
        archive.sweep_temps()
        rules = ignore_rules(settings)
        settler = Settler(settings.watch.settle_seconds, settings.watch.open_write_timeout)
        known = catalog.known_paths()
        missing = []
        found = 0
        for r in pipeline.roots:
            if not os.path.isdir(r):
                missing.append(r)
                _log.error("watch root missing", root=r)
                continue
            found += reconcile(r, rules, known, settler, settings.watch.recursive)[0]
            catalog.update_root(r, last_rescan=time.time())
        unsettled = len(settler)
        unchanged = found - unsettled
        ready = settler.ready()
        unsettled -= len(ready)
        sizes = {p: _size(p) for p in ready}
        if progress is not None:
            progress.start(sum(sizes.values()), len(ready))
            archive.progress = progress.advance
        import concurrent.futures as cf

        def one(p: str) -> Outcome | None:
            out = pipeline.handle(p, lambda _p: None)
            if progress is not None:
                progress.file_done(p)
            return out

        prev = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            with cf.ThreadPoolExecutor(WORKERS) as ex:
                list(ex.map(one, ready))
        finally:
            signal.signal(signal.SIGINT, prev)
        signed = 0
        if compare and not stop.is_set() and catalog.any_unsigned():
            from draftsync.neardup import NearDups  # numpy and PyAV load only when there is work

            signed = NearDups(catalog, archive, stop.is_set).backfill(limit=10**9)
        summary = {
            "signed": signed,
            "candidates": len(ready), "archived": pipeline.counts.get("archived", 0),
            "already_archived": unchanged + pipeline.counts.get("seen", 0) + pipeline.counts.get("known", 0),
            "empty": pipeline.counts.get("empty", 0), "skipped": pipeline.counts.get("skipped", 0),
            "failed": pipeline.counts.get("failed", 0),
            "still_being_written": unsettled, "archive_full": bool(pipeline.paused_until_space),
            "missing_roots": missing, "interrupted": stop.is_set(),
        }  # fmt: skip
        return summary
    finally:
        catalog.close()
        lock.release()


def _size(p: str) -> int:
    try:
        return os.path.getsize(p)
    except OSError:
        return 0
