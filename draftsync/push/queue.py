"""The push queue: which archived videos are pushed, TikTok's limits as a budget kept in the catalog, and
the state machine that makes each push happen exactly once.

States: queued -> uploading -> processing -> in_inbox, or failed / skipped (terminal, with reasons), or
back to queued with `next_try` (deferred). `dry_run` marks what the dry-run back-end logged. The remote
id is recorded before any byte is sent; after a crash, `startup` asks the back-end about every
uploading/processing item and resumes, restarts or finishes it instead of starting a second one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from draftsync import log
from draftsync.catalog import Catalog, VideoRecord
from draftsync.config import SelectRule, Settings
from draftsync.errors import AuthError, PushError
from draftsync.lock import StateLock
from draftsync.push.backend import Backend, Job, Poll, make_backend
from draftsync.push.tiktok import MAX_VIDEO

_log = log.get("draftsync.push")

ACTIVE = ("uploading", "processing")
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Limits:
    """TikTok's limits (spec A.6), counted per user across tokens and restarts."""

    pending_cap: int = 5  # successful inits in any rolling 24 h
    pending_window: float = 86400.0
    init_per_minute: int = 6
    init_spacing: float = 10.0  # safe reading: one init per 10 s per user
    status_per_minute: int = 30
    status_spacing: float = 2.0  # never faster than one status call per 2 s per user


# --- selection and media requirements -------------------------------------------------------------

_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "webm"}
_CODECS = {"h264", "hevc", "vp8", "vp9"}


def media_problem(v: VideoRecord) -> str | None:
    """Why TikTok would certainly reject this video (spec A.7), or None if it may go."""
    ext = Path(v.archive_path).suffix.lower()
    if ext not in _CONTAINERS:
        return f"container {ext or '?'} is not MP4, MOV or WebM"
    m = v.media
    if not m:
        return f"not a decodable video ({v.probe_error or 'no media facts'})"
    if v.size > MAX_VIDEO:
        return f"{v.size} bytes is over TikTok's 4 GB limit"
    if m.get("video_codec") not in _CODECS:
        return f"video codec {m.get('video_codec')} is not H.264, H.265, VP8 or VP9"
    fps = m.get("fps")
    if fps is None or not 23 <= float(fps) <= 60:
        return f"frame rate {fps} is outside 23-60 fps"
    w, h = m.get("width"), m.get("height")
    if not w or not h or not (360 <= w <= 4096 and 360 <= h <= 4096):
        return f"picture size {w}x{h} is outside 360-4096 pixels"
    dur = m.get("duration")
    if dur is None or dur > 600:
        return f"duration {dur} s is over the 10-minute upload limit"
    # Minimum duration is unconfirmed; third parties say 3 s. Safe reading: a failed upload costs one
    # of five daily slots, so do not send what is likely to fail.
    if dur < 3:
        return f"duration {dur} s is under 3 s"
    return None


def matches(v: VideoRecord, rules: list[SelectRule]) -> bool:
    if not rules:
        return True
    m = v.media or {}
    for r in rules:
        if r.labels is not None and v.label not in r.labels:
            continue
        if r.orientation is not None and m.get("orientation") != r.orientation:
            continue
        dur = m.get("duration")
        if r.min_duration is not None and (dur is None or dur < r.min_duration):
            continue
        if r.max_duration is not None and (dur is None or dur > r.max_duration):
            continue
        if r.captured_after is not None and v.capture_time[:10] < r.captured_after[:10]:
            continue
        return True
    return False


def caption_for(template: str, v: VideoRecord, catalog: Catalog) -> str:
    sources = catalog.sources_of(v.hash)
    name = Path(sources[0]).name if sources else Path(v.archive_path).name
    fields = {"stem": Path(name).stem, "name": name, "label": v.label, "date": v.capture_time[:10]}
    try:
        text = template.format(**fields)
    except (KeyError, IndexError, ValueError):
        text = f"{fields['stem']} ({fields['date']})"
    return text.strip()[:2000] or fields["stem"]


# --- budget ---------------------------------------------------------------------------------------------


class Budget:
    def __init__(self, catalog: Catalog, account: str, limits: Limits, max_per_day: int, tz: Any,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.catalog, self.account, self.limits, self.max_per_day, self.tz = catalog, account, limits, max_per_day, tz
        self.clock = clock

    def _midnight(self, now: float) -> float:
        d = datetime.fromtimestamp(now, self.tz).date()
        return datetime.combine(d, datetime.min.time(), self.tz).timestamp()

    def next_init_at(self) -> tuple[float, str]:
        """When the next init is allowed (<= now: now), and which limit decides it."""
        now, L = self.clock(), self.limits
        ok = self.catalog.calls_since(self.account, "init", now - L.pending_window, ok_only=True)
        at, why = now, ""
        if len(ok) >= L.pending_cap:
            at, why = ok[len(ok) - L.pending_cap] + L.pending_window, f"{L.pending_cap} drafts in 24 h (TikTok's cap)"
        midnight = self._midnight(now)
        today = [t for t in ok if t >= midnight]
        if len(today) >= self.max_per_day:
            nxt = datetime.fromtimestamp(midnight, self.tz).date() + timedelta(days=1)
            cand = datetime.combine(nxt, datetime.min.time(), self.tz).timestamp()
            if cand > at:
                at, why = cand, f"push.max_per_day = {self.max_per_day}"
        blocked = float(self.catalog.get_meta(f"push_blocked_until:{self.account}") or 0)
        if blocked > at:
            at, why = blocked, "TikTok reported too many pending drafts"
        attempts = self.catalog.calls_since(self.account, "init", now - 60)
        if len(attempts) >= L.init_per_minute and attempts[-L.init_per_minute] + 60 > at:
            at, why = attempts[-L.init_per_minute] + 60, "6 inits per minute"
        if attempts and attempts[-1] + L.init_spacing > at:
            at, why = attempts[-1] + L.init_spacing, "10 s between inits"
        return at, why

    def next_status_at(self) -> float:
        now, L = self.clock(), self.limits
        calls = self.catalog.calls_since(self.account, "status", now - 60)
        at = now
        if len(calls) >= L.status_per_minute:
            at = calls[-L.status_per_minute] + 60
        if calls:
            at = max(at, calls[-1] + L.status_spacing)
        return at

    def summary(self) -> dict[str, Any]:
        now, L = self.clock(), self.limits
        ok = self.catalog.calls_since(self.account, "init", now - L.pending_window, ok_only=True)
        today = [t for t in ok if t >= self._midnight(now)]
        at, why = self.next_init_at()
        return {
            "account": self.account, "drafts_last_24h": len(ok), "left_24h": max(0, L.pending_cap - len(ok)),
            "left_today": max(0, self.max_per_day - len(today)), "next_slot": None if at <= now else at,
            "next_slot_reason": why if at > now else "",
        }  # fmt: skip


# --- the pusher -----------------------------------------------------------------------------------------


@dataclass
class WindowReport:
    pushed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    paused: str = ""
    busy: bool = False


Progress = Callable[[str, str, str], None]  # (hash, state, message)


class Pusher:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        should_stop: Callable[[], bool] = lambda: False,
        backend: Backend | None = None,
        limits: Limits = Limits(),
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        neardups: Any = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.should_stop = should_stop
        self.backend = backend or make_backend(settings, should_stop)
        if self.backend.name == "postforme":
            # Post for Me's per-key limits are unpublished; safe reading (spec B.8): a post at most every 5 s.
            limits = replace(limits, status_spacing=max(limits.status_spacing, 5.0))
        self.limits = limits
        self.clock = clock
        self._sleep = sleep
        self.lock = StateLock(settings.state.dir, "push")
        self.archive_root = settings.archive.root
        self._report = WindowReport()
        self._neardups = neardups  # the daemon shares its own; a CLI run builds one when needed

    def sleep(self, seconds: float) -> None:
        """Bounded, stop-aware wait."""
        if self._sleep is not None:
            if seconds > 0:
                self._sleep(seconds)
            return
        end = time.monotonic() + max(0.0, seconds)
        while not self.should_stop():
            left = end - time.monotonic()
            if left <= 0:
                return
            (self._sleep or time.sleep)(min(left, 0.25))

    def budget(self) -> Budget:
        return Budget(self.catalog, self.backend.account(), self.limits, self.settings.push.max_per_day, self.settings.push.tz(),
                      self.clock)  # fmt: skip

    def _counter(self, budget: Budget) -> Callable[[str], Callable[[bool], None]]:
        def count(kind: str) -> Callable[[bool], None]:
            if kind == "status":
                self.sleep(budget.next_status_at() - self.clock())
            call_id = self.catalog.record_call(budget.account, kind, ok=False, at=self.clock())

            def done(ok: bool) -> None:
                if ok:
                    self.catalog.mark_call_ok(call_id)

            return done

        return count

    # --- selection ---------------------------------------------------------------------------------

    def enabled_since(self) -> float:
        v = self.catalog.get_meta("push_enabled_at")
        if v is None:
            now = self.clock()
            self.catalog.set_meta("push_enabled_at", str(now))
            return now
        return float(v)

    def select(self, persist: bool = True) -> list[tuple[VideoRecord, str | None]]:
        """New candidates (video, problem) not yet in the queue; persisted as queued/skipped if asked."""
        since = self.enabled_since() if self.settings.push.only_new else 0.0
        out = []
        fresh = [
            v for v in self.catalog.videos_since(since)
            if self.catalog.push_row(v.hash) is None and matches(v, self.settings.push.select)
        ]  # fmt: skip
        if fresh and persist:
            # Compare each candidate with the archive before it can be pushed (no push loops).
            if self._neardups is None:
                from draftsync.archive import Archive
                from draftsync.neardup import NearDups

                archive = Archive(self.archive_root, self.settings.archive.layout)
                self._neardups = NearDups(self.catalog, archive, self.should_stop)
            self._neardups.backfill(limit=len(fresh) + 50)
        for v in fresh:
            problem = self.duplicate_problem(v) or media_problem(v)
            out.append((v, problem))
            if persist:
                if problem:
                    self.catalog.enqueue_push(v.hash, "skipped", problem)
                    _log.info("push skipped", hash=v.hash, archive_path=v.archive_path, reason=problem)
                else:
                    self.catalog.enqueue_push(v.hash)
        return out

    def duplicate_problem(self, v: VideoRecord) -> str | None:
        """Why this video must not be pushed because of what it resembles, or None."""
        if self.catalog.origin(v.hash) == "tiktok-export":
            return "a TikTok export (came out of TikTok; pushing it back would loop)"
        for other, sim in self.catalog.near_dupes_of(v.hash):
            row = self.catalog.push_row(other)
            if row and row["state"] in ("queued", "uploading", "processing", "in_inbox", "dry_run"):
                o = self.catalog.video(other)
                return f"near-duplicate ({sim:.2f}) of {o.archive_path if o else other}, which is {row['state']}"
        return None

    # --- windows -----------------------------------------------------------------------------------

    def startup(self) -> WindowReport:
        """At daemon start: finish what a crash interrupted, and run a window missed while down (once)."""
        from draftsync import schedule

        last = self.catalog.get_meta("push_last_window")
        trigger = schedule.trigger(self.settings.push.schedule, self.settings.push.tz())
        if last is not None:
            missed = trigger.get_next_fire_time(None, datetime.fromtimestamp(float(last), self.settings.push.tz()))
            if missed is not None and missed.timestamp() <= self.clock():
                _log.info("running the push window missed while stopped", missed=missed.isoformat())
                return self.window()
        else:
            self.catalog.set_meta("push_last_window", str(self.clock()))
        return self.window(new_items=False)

    def window(self, *, new_items: bool = True, wait_seconds: float = 0.0, poll_deadline: float = 1200.0,
               progress: Progress | None = None) -> WindowReport:  # fmt: skip
        report = WindowReport()
        try:
            self.lock.acquire("push", wait=wait_seconds)
        except Exception as e:
            _log.warning("another push window is running; skipping this one", detail=str(e))
            report.busy = True
            return report
        try:
            if new_items:
                self.catalog.set_meta("push_last_window", str(self.clock()))
            self._report = report
            return self._window(report, new_items, poll_deadline, progress or (lambda *_: None))
        finally:
            self._report = WindowReport()
            self.lock.release()

    def _window(self, report: WindowReport, new_items: bool, poll_deadline: float, progress: Progress) -> WindowReport:
        if new_items:
            self.select()  # the queue fills even while pushing is paused
        try:
            who = self.backend.check()
        except (AuthError, PushError) as e:
            return self._pause(report, e)
        self.catalog.set_meta("push_paused", "")
        if self.backend.name != "dry-run":
            for row in self.catalog.push_rows(("dry_run",)):
                self.catalog.update_push(row["hash"], state="queued", reason=None)
        budget = self.budget()
        count = self._counter(budget)
        try:
            for row in self.catalog.push_rows(ACTIVE):
                self._resume(row, count, progress)
            if new_items:
                self._start_new(budget, count, progress, report)
            self._poll_all(count, progress, poll_deadline)
        except AuthError as e:
            return self._pause(report, e)
        for row in self.catalog.push_rows():
            h = row["hash"]
            if row["state"] in ACTIVE:
                report.pending.append(h)
        _log.info("push window done", account=who, pushed=len(report.pushed), failed=len(report.failed),
                  deferred=len(report.deferred), pending=len(report.pending))  # fmt: skip
        return report

    def _pause(self, report: WindowReport, e: Exception) -> WindowReport:
        msg = str(e)
        if self.catalog.get_meta("push_paused") != msg:
            _log.error("pushing paused", reason=msg)
            self.catalog.log_event("error", "push_paused", msg)
        self.catalog.set_meta("push_paused", msg)
        report.paused = msg
        return report

    def _job(self, row: dict[str, Any], v: VideoRecord) -> Job:
        return Job(
            hash=v.hash, path=self.archive_root / v.archive_path, size=v.size,
            caption=caption_for(self.settings.push.caption, v, self.catalog), remote_id=row.get("remote_id"),
            upload_url=row.get("upload_url"), upload_started=row.get("upload_started"),
            chunk_size=row.get("chunk_size"), chunk_count=row.get("chunk_count"), state=row["state"],
        )  # fmt: skip

    def _recorder(self, h: str, job: Job) -> Callable[..., None]:
        def record(**fields: Any) -> None:
            self.catalog.update_push(h, state="uploading", **fields)
            job.remote_id = fields.get("remote_id", job.remote_id)
            job.state = "uploading"

        return record

    def _start_new(self, budget: Budget, count: Any, progress: Progress, report: WindowReport) -> None:
        started = 0
        now = self.clock()
        for row in self.catalog.push_rows(("queued",)):
            if self.should_stop():
                return
            if row["next_try"] and row["next_try"] > now:
                continue
            if started >= self.settings.push.max_per_run:
                break
            at, why = budget.next_init_at()
            if at > self.clock() + 60:
                self._defer_rest(at, why, report)
                return
            self.sleep(at - self.clock())
            v = self.catalog.video(row["hash"])
            if v is None:
                self.catalog.update_push(row["hash"], state="failed", reason="no longer in the catalog")
                continue
            job = self._job(row, v)
            if not job.path.is_file() or job.path.stat().st_size != v.size:
                self.catalog.update_push(v.hash, state="failed", reason=f"archive copy missing or changed: {job.path}")
                report.failed.append(v.hash)
                continue
            started += 1
            self._begin(job, row, count, progress, report)

    def _defer_rest(self, at: float, why: str, report: WindowReport) -> None:
        when = datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M")
        for row in self.catalog.push_rows(("queued",)):
            if not row["next_try"] or row["next_try"] < at:
                self.catalog.update_push(row["hash"], next_try=at, reason=f"waiting for a slot ({why}) until {when}")
                report.deferred.append(row["hash"])

    def _begin(self, job: Job, row: dict[str, Any], count: Any, progress: Progress, report: WindowReport) -> None:
        h = job.hash
        attempts = (row.get("attempts") or 0) + 1
        self.catalog.update_push(h, backend=self.backend.name, account=self.backend.account(), attempts=attempts,
                                 reason=None, code=None, log_id=None, next_try=None)  # fmt: skip
        progress(h, "uploading", str(job.path))
        try:
            self.backend.begin(job, self._recorder(h, job), count, lambda n: progress(h, "bytes", str(n)))
        except AuthError:
            self._after_error(job, attempts, None, report)
            raise
        except PushError as e:
            self._after_error(job, attempts, e, report)
            progress(h, self.catalog.push_row(h)["state"], str(e))  # type: ignore[index]
            return
        if self.backend.name == "dry-run":
            self.catalog.update_push(h, state="dry_run", reason="dry run: nothing was sent")
            report.pushed.append(h)
            progress(h, "dry_run", "logged, nothing sent")
            return
        self.catalog.update_push(h, state="processing")
        progress(h, "processing", "all bytes sent; waiting for TikTok")

    def _after_error(self, job: Job, attempts: int, e: PushError | None, report: WindowReport) -> None:
        h = job.hash
        if e is None:  # auth: the item waits, nothing was created
            if not job.remote_id:
                self.catalog.update_push(h, state="queued")
            return
        detail = {"code": e.code or None, "log_id": e.log_id or None}
        dead = getattr(e, "code", "") == "upload_dead"
        if e.defer:
            budget = self.budget()
            retry = max(budget.next_init_at()[0], self.clock() + 60)
            if e.code == "spam_risk_too_many_pending_share":
                # No slot until some of the oldest inits are 24 h old (spec A.6): block the whole account.
                ok = self.catalog.calls_since(budget.account, "init", self.clock() - self.limits.pending_window, True)
                retry = max(retry, (ok[0] + self.limits.pending_window) if ok else self.clock() + 3600)
                self.catalog.set_meta(f"push_blocked_until:{budget.account}", str(retry))
            self.catalog.update_push(h, state="queued", remote_id=None, upload_url=None, next_try=retry,
                                     reason=f"deferred: {e}", **detail)  # fmt: skip
            report.deferred.append(h)
        elif (e.retryable or dead) and attempts < MAX_ATTEMPTS:
            if job.remote_id and not dead:
                # Bytes may be partly there: keep the id; the next window resumes this very upload.
                self.catalog.update_push(h, state="uploading", reason=f"will resume: {e}", **detail)
                report.pending.append(h)
            else:
                self.catalog.update_push(h, state="queued", remote_id=None, upload_url=None,
                                         next_try=self.clock() + 60 * attempts, reason=f"will retry: {e}", **detail)  # fmt: skip
                report.deferred.append(h)
        else:
            self.catalog.update_push(h, state="failed", reason=str(e), **detail)
            report.failed.append(h)
        _log.warning("push attempt failed", hash=h, error=str(e), code=e.code, log_id=e.log_id, attempts=attempts)

    def _resume(self, row: dict[str, Any], count: Any, progress: Progress) -> None:
        v = self.catalog.video(row["hash"])
        if v is None:
            return
        job = self._job(row, v)
        try:
            if row["state"] == "uploading":
                p = self.backend.resume(job, self._recorder(v.hash, job), count, lambda n: None)
            else:
                p = self.backend.poll(job, count)
        except AuthError:
            raise
        except PushError as e:
            _log.warning("could not check an interrupted push; will try again", hash=v.hash, error=str(e))
            return
        self._apply(job, p, progress)

    def _apply(self, job: Job, p: Poll, progress: Progress) -> None:
        h = job.hash
        if p.state == "done":
            self.catalog.update_push(h, state="in_inbox", reason=p.reason, code=None)
            self._report.pushed.append(h)
            _log.info("pushed to the TikTok inbox", hash=h, remote_id=job.remote_id)
            self.catalog.log_event("info", "pushed", p.reason, None, h)
        elif p.state == "failed":
            self.catalog.update_push(h, state="failed", reason=p.reason, code=p.code or None, log_id=p.log_id or None)
            self._report.failed.append(h)
            _log.error("push failed", hash=h, reason=p.reason, code=p.code)
        elif p.state == "dead":
            row = self.catalog.push_row(h) or {}
            attempts = row.get("attempts") or 0
            if attempts >= MAX_ATTEMPTS:
                self.catalog.update_push(h, state="failed", reason=f"gave up after {attempts} attempts: {p.reason}")
            else:
                self.catalog.update_push(h, state="queued", remote_id=None, upload_url=None, next_try=p.retry_at,
                                         reason=f"restarting: {p.reason}", code=p.code or None)  # fmt: skip
        elif p.state == "processing":
            self.catalog.update_push(h, state="processing")
        progress(h, (self.catalog.push_row(h) or {}).get("state", "?"), p.reason)

    def _poll_all(self, count: Any, progress: Progress, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        delay = 2.0
        while not self.should_stop() and time.monotonic() < deadline:
            rows = self.catalog.push_rows(("processing",))
            if not rows:
                return
            for row in rows:
                v = self.catalog.video(row["hash"])
                if v is None:
                    continue
                job = self._job(row, v)
                try:
                    p = self.backend.poll(job, count)
                except AuthError:
                    raise
                except PushError as e:
                    if e.defer:
                        delay = max(delay, 60.0)
                    _log.warning("status check failed; will retry", hash=v.hash, error=str(e))
                    continue
                self._apply(job, p, progress)
            if not self.catalog.push_rows(("processing",)):
                return
            self.sleep(delay)
            delay = min(60.0, delay * 2)


# --- reporting ------------------------------------------------------------------------------------------


def push_status(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    rows = catalog.push_rows()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    paused = catalog.get_meta("push_paused") or ""
    account = _account_of(settings, catalog)
    budget = Budget(catalog, account, Limits(), settings.push.max_per_day, settings.push.tz()).summary()
    state = "off" if not settings.push.enabled else ("PAUSED: " + paused) if paused else f"on ({settings.push.backend})"
    nxt = budget["next_slot"]
    summary = (
        f"{state}; " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ("; " if counts else "")
        + f"{budget['left_24h']} of {Limits().pending_cap} drafts left in 24 h, {budget['left_today']} today"
        + (f"; next slot {datetime.fromtimestamp(nxt).astimezone():%Y-%m-%d %H:%M} ({budget['next_slot_reason']})" if nxt else "")
    )  # fmt: skip
    return {"enabled": settings.push.enabled, "backend": settings.push.backend, "paused": paused, "counts": counts,
            "budget": budget, "summary": summary}  # fmt: skip


def _account_of(settings: Settings, catalog: Catalog) -> str:
    if settings.push.backend == "tiktok":
        try:
            data = json.loads(settings.token_path.read_text())
            return f"tiktok:{data.get('open_id', '?')}"
        except (OSError, ValueError):
            return "tiktok:?"
    if settings.push.backend == "postforme":
        return f"postforme:{settings.postforme.social_account_id}"
    return "dry-run"


def queue_rows(catalog: Catalog) -> list[dict[str, Any]]:
    out = []
    for r in catalog.push_rows():
        v = catalog.video(r["hash"])
        out.append({
            "hash": r["hash"], "state": r["state"], "archive_path": v.archive_path if v else None,
            "reason": r["reason"], "code": r["code"], "log_id": r["log_id"], "remote_id": r["remote_id"],
            "attempts": r["attempts"], "next_try": r["next_try"], "updated_at": r["updated_at"],
        })  # fmt: skip
    return out
