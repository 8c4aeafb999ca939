"""Notifications: telling the owner through Apprise (ntfy, Gotify, email, Telegram, Discord, Matrix, a JSON
webhook...) when something needs them, when it clears, and once a week what happened; and
Healthchecks-style pings so that an outside service notices when draftsync itself goes quiet.

It listens to `Problems`. What to send when is decided by a pure `Outbox` (time injected): one message
per problem until it clears and one when it clears, changes arriving together grouped into one message,
never more than `max_per_hour` (the rest wait and go out together). The listener only records the change;
a supervised background thread sends, with retries per URL, so a dead notification service never slows
ingest. Which problems were told, the messages still owed (waiting for a retry) and when the last ones
went out are kept in the catalog in one transaction, so a restart neither repeats nor forgets them, and
the hourly limit holds across it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from draftsync import log
from draftsync.problems import Change, Problem
from draftsync.supervise import RunResult

if TYPE_CHECKING:
    from draftsync.catalog import Catalog
    from draftsync.config import Settings
    from draftsync.runtime import Runtime

_log = log.get("draftsync.notify")

Level = Literal["info", "success", "warning", "failure"]

# Short names for titles; the problem's own message says what, where and what to do.
TITLES = {
    "archive_missing": "archive missing", "archive_full": "archive disk full", "state_full": "state disk full",
    "root_missing": "watched folder missing", "root_degraded": "watched folder degraded",
    "files_failing": "files failing", "watcher_restarted": "watcher restarted", "loop_dead": "daemon stuck",
    "push_reauth": "TikTok needs re-authorising", "push_failed": "push failed", "integrity": "archive integrity",
    "offsite": "offsite copy failing", "notify": "notifications failing", "web": "status page down",
    "digest": "weekly digest", "test": "test message",
}  # fmt: skip
RETRY_DELAYS = (30.0, 120.0, 600.0, 1800.0, 3600.0)  # then the message is given up (and logged)
MAX_DELIVERIES = 100  # messages waiting for delivery; the oldest is dropped (and logged) beyond this
META_ANNOUNCED = "notify_announced"
META_DIGEST = "notify_digest_last"
META_OUTBOX = "notify_outbox"  # messages owed and recent send times; written with META_ANNOUNCED


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    level: Level = "info"
    attachments: tuple[str, ...] = ()


# --- the pure part: what to send, and when -------------------------------------------------------------


@dataclass
class _Pending:
    raised: Problem | None = None
    cleared: Problem | None = None
    notices: list[Problem] = field(default_factory=list)


class Outbox:
    """Changes in, messages out. Keeps which problems were told (`announced`, key -> message)."""

    def __init__(self, events: list[str], group_seconds: float, max_per_hour: int,
                 announced: dict[str, str] | None = None, host: str = "") -> None:  # fmt: skip
        self.events = set(events)
        self.group_seconds = group_seconds
        self.max_per_hour = max_per_hour
        self.announced: dict[str, str] = dict(announced or {})
        self.host = host
        self.pending: dict[str, _Pending] = {}
        self.first_at: float | None = None
        self.sent: deque[float] = deque()

    def add(self, c: Change, now: float) -> bool:
        """Take one change; True if it will be told."""
        p, key = c.problem, c.problem.key
        if c.action == "notice":
            if p.kind not in self.events:
                return False
            self._slot(key, now).notices.append(p)
            return True
        if c.action == "raised":
            if p.kind not in self.events or key in self.announced:
                return False  # one message per problem until it clears
            slot = self._slot(key, now)
            slot.raised, slot.cleared = p, None
            return True
        # cleared: told only if its raising was told (or is about to be)
        slot_now = self.pending.get(key)
        if key not in self.announced and (slot_now is None or slot_now.raised is None):
            return False
        self._slot(key, now).cleared = p
        return True

    def _slot(self, key: str, now: float) -> _Pending:
        if self.first_at is None:
            self.first_at = now
        return self.pending.setdefault(key, _Pending())

    def sent_in_last_hour(self, now: float) -> int:
        while self.sent and self.sent[0] <= now - 3600:
            self.sent.popleft()
        return len(self.sent)

    def next_due(self, now: float) -> float | None:
        """When `due` may next give a message (None: nothing waits)."""
        if self.first_at is None:
            return None
        at = self.first_at + self.group_seconds
        if self.sent_in_last_hour(now) >= self.max_per_hour:
            at = max(at, self.sent[0] + 3600)
        return at

    def due(self, now: float) -> Message | None:
        """The grouped message to send now, if one is due."""
        nxt = self.next_due(now)
        if nxt is None or now < nxt:
            return None
        lines: list[tuple[str, Problem]] = []
        for key, slot in self.pending.items():
            if slot.raised and slot.cleared:
                lines.append(("flapped", replace(slot.raised, message=f"{slot.raised.message} (since cleared)")))
            elif slot.raised:
                lines.append(("problem", slot.raised))
                self.announced[key] = slot.raised.message
            elif slot.cleared:
                lines.append(("resolved", slot.cleared))
                self.announced.pop(key, None)
            lines += [("notice", n) for n in slot.notices]
        self.pending.clear()
        self.first_at = None
        if not lines:
            return None
        self.sent.append(now)
        return compose(lines, self.host)


_LABEL = {"problem": "PROBLEM", "resolved": "RESOLVED", "notice": "NOTICE", "flapped": "PROBLEM"}


def compose(lines: list[tuple[str, Problem]], host: str = "") -> Message:
    """One message for a group of changes: the title names it, the body says each in full."""
    where = f"draftsync on {host}" if host else "draftsync"
    what = [w for w, _ in lines]
    if len(lines) == 1:
        w, p = lines[0]
        title = f"{where}: {TITLES.get(p.kind, p.kind.replace('_', ' '))}" + (" resolved" if w == "resolved" else "")
        body = p.message
    else:
        counts = [(what.count("problem") + what.count("flapped"), "problem(s)"), (what.count("resolved"), "resolved"),
                  (what.count("notice"), "notice(s)")]  # fmt: skip
        title = f"{where}: " + ", ".join(f"{n} {label}" for n, label in counts if n)
        body = "\n".join(f"{_LABEL[w]}: {p.message}" for w, p in lines)
    if any(w in ("problem", "flapped") and p.severity == "error" for w, p in lines):
        level: Level = "failure"
    elif any(w != "resolved" for w in what):
        level = "warning"
    else:
        level = "success"
    return Message(title, body, level)


# --- the weekly digest ---------------------------------------------------------------------------------


@dataclass
class Digest:
    start: float
    end: float
    archived: int
    archived_bytes: int
    latest: list[tuple[str, str]]  # (file name, capture date) of the latest few
    thumbnails: list[str]  # absolute paths, attached where the service takes attachments
    total_videos: int
    total_bytes: int
    new_groups: int  # near-duplicate groups with a member archived this week
    pushed: int  # drafts that reached the inbox this week
    waiting: int  # queued for the inbox
    push_enabled: bool
    problems: list[str]
    failing_files: int
    archive_free: int | None
    state_free: int | None


def compose_digest(d: Digest, host: str = "") -> Message:
    """The weekly reminder: what was backed up, what waits in the inbox, what needs attention."""
    days = max(1, round((d.end - d.start) / 86400))
    lines = [f"Archived this {'week' if days == 7 else f'{days} days'}: {d.archived} video(s), {size(d.archived_bytes)}"
             f" (archive: {d.total_videos} videos, {size(d.total_bytes)})."]  # fmt: skip
    lines += [f"  {name}  {when[:16].replace('T', ' ')}" for name, when in d.latest]
    if d.new_groups:
        lines.append(f"Near-duplicates: {d.new_groups} group(s) with a video from this week (see `draftsync dupes`).")
    if d.push_enabled:
        lines.append(f"Drafts sent to the TikTok inbox: {d.pushed}; still waiting: {d.waiting}. "
                     "Time to go through your drafts in the app.")  # fmt: skip
    else:
        lines.append("Time to go through your drafts in the TikTok app.")
    if d.problems or d.failing_files:
        lines.append("Needs attention:")
        lines += [f"  {p}" for p in d.problems]
        if d.failing_files:
            lines.append(f"  {d.failing_files} file(s) keep failing to archive (see `draftsync status`).")
    else:
        lines.append("Nothing is failing.")
    space = [f"{name} {size(free)} free" for name, free in (("archive disk", d.archive_free), ("state disk", d.state_free))
             if free is not None]  # fmt: skip
    if space:
        lines.append("Disk space: " + ", ".join(space) + ".")
    where = f"draftsync on {host}" if host else "draftsync"
    level: Level = "warning" if d.problems or d.failing_files else "info"
    return Message(f"{where}: weekly digest, {d.archived} video(s) backed up", "\n".join(lines), level,
                   tuple(d.thumbnails))  # fmt: skip


def gather_digest(settings: Settings, catalog: Catalog, problems: list[Problem], now: float,
                  days: float = 7.0) -> Digest:  # fmt: skip
    """The digest's facts, from paginated catalog queries (never the whole catalog)."""
    from draftsync.archive import free_bytes

    start = now - days * 86400
    count, nbytes, latest = catalog.archived_between(start, now, 4)
    thumbs = []
    for v in latest:
        t = catalog.thumb(v.hash)
        if t and t[0] and (settings.archive.root / t[0]).is_file():
            thumbs.append(str(settings.archive.root / t[0]))
    totals = catalog.counts()
    week = catalog.hashes_archived_between(start, now) if count else set()
    new_groups = 0
    if week:
        from draftsync.neardup import groups

        new_groups = sum(1 for g in groups(catalog) if any(m["hash"] in week for m in g["members"]))
    counts = catalog.push_state_counts()
    return Digest(
        start=start, end=now, archived=count, archived_bytes=nbytes,
        latest=[(Path(v.archive_path).name, v.capture_time) for v in latest], thumbnails=thumbs,
        total_videos=totals["videos"], total_bytes=totals["bytes"], new_groups=new_groups,
        pushed=catalog.pushes_between("in_inbox", start, now), waiting=counts.get("queued", 0),
        push_enabled=settings.push.enabled, problems=[p.message for p in problems],
        failing_files=totals["sources"].get("failed", 0),
        archive_free=free_bytes(settings.archive.root) if settings.archive.root.is_dir() else None,
        state_free=free_bytes(settings.state.dir),
    )  # fmt: skip


def size(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if f < 1024 or unit == "TiB":
            return f"{int(f)} B" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"


def digest_missed(last: float | None, schedule: str, tz: Any, now: float) -> bool:
    """A digest that fell due while draftsync was down (within two days) is sent at start-up."""
    from draftsync.schedule import next_fire

    if last is None:
        return False
    due = next_fire(schedule, tz, datetime.fromtimestamp(last + 1, tz))  # strictly after the last one
    return due is not None and due.timestamp() <= now and now - due.timestamp() < 2 * 86400


# --- pings -----------------------------------------------------------------------------------------------


def ping_url(base: str, check: str, event: Literal["start", "success", "fail"], rid: str = "") -> str:
    """Healthchecks' URL scheme: <url>, <url>/start, <url>/fail; '{check}' in the URL names the check
    (heartbeat, scrub, push), else runs share one check and are told apart by `rid`."""
    url = base.replace("{check}", check).rstrip("/")
    url += {"start": "/start", "success": "", "fail": "/fail"}[event]
    if rid and "{check}" not in base:
        url += ("&" if "?" in url else "?") + f"rid={rid}"
    return url


# --- sending ---------------------------------------------------------------------------------------------


def describe_url(url: str) -> str:
    """A URL as Apprise shows it with its secrets hidden (and without its tuning options)."""
    try:
        import apprise

        inst = apprise.Apprise.instantiate(url)
        shown = inst.url(privacy=True) if inst else url.split("://", 1)[0] + "://..."
    except Exception:
        shown = url.split("://", 1)[0] + "://..."
    return log.scrub(shown.split("?", 1)[0])


def send(url: str, msg: Message) -> tuple[bool, str]:
    """Send one message to one Apprise URL; (delivered, what the service answered, secrets scrubbed)."""
    import apprise

    logging.getLogger("apprise").propagate = False  # its lines come back through our log, scrubbed
    a = apprise.Apprise(asset=apprise.AppriseAsset(app_id="draftsync", app_desc="draftsync backups"))
    if not a.add(url):
        return False, "not a notification URL Apprise understands (see its list of services)"
    attach = None
    if msg.attachments:
        present = [p for p in msg.attachments if Path(p).is_file()]
        attach = apprise.AppriseAttachment(present) if present else None
    try:
        with apprise.LogCapture(level=logging.INFO, fmt="%(levelname)s %(message)s") as out:
            ok = bool(a.notify(body=msg.body, title=msg.title, notify_type=apprise.NotifyType(msg.level),
                               attach=attach))  # fmt: skip
            text = out.getvalue()
    except Exception as e:  # a plugin's bug is one failed delivery, not a dead thread
        return False, log.scrub(f"{type(e).__name__}: {e}")
    said = [ln.split(" ", 1)[-1] for ln in text.splitlines() if ln.strip()]
    answer = " / ".join(x for x in said if not x.startswith("Notifying "))
    return ok, log.scrub(answer or ("sent" if ok else "failed"))


Sender = Callable[[str, Message], tuple[bool, str]]


@dataclass(eq=False)  # one delivery is one object: two equal digests are two messages
class Delivery:
    message: Message
    todo: list[int]  # indexes into the URL list still to reach
    attempts: int = 0
    next_try: float = 0.0


_LEVELS: dict[str, Level] = {"info": "info", "success": "success", "warning": "warning", "failure": "failure"}


def url_id(url: str) -> str:
    """A URL's name in the catalog: a digest, never the URL itself (it carries a token)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def dump_owed(deliveries: list[Delivery], sent: list[float], urls: list[str]) -> str:
    """What a restart must not lose: each message still owed, to which URLs, after how many attempts; and
    when the last messages went out (for the hourly limit)."""
    return json.dumps({
        "deliveries": [{"title": d.message.title, "body": d.message.body, "level": d.message.level,
                        "attachments": list(d.message.attachments), "attempts": d.attempts,
                        "to": [url_id(urls[i]) for i in d.todo if i < len(urls)]} for d in deliveries],
        "sent": sent,
    })  # fmt: skip


def load_owed(raw: str | None, urls: list[str], now: float) -> tuple[list[Delivery], list[float]]:
    """The inverse of `dump_owed` against today's URLs: a URL no longer configured is owed nothing. A
    message owed from before the restart is tried at once (a restart is often the owner's fix)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    index = {url_id(u): i for i, u in enumerate(urls)}
    out = []
    for d in data.get("deliveries") or []:
        try:
            todo = sorted({index[t] for t in d["to"] if t in index})
            level = _LEVELS.get(str(d["level"]), "info")
            msg = Message(str(d["title"]), str(d["body"]), level, tuple(str(a) for a in d.get("attachments", ())))
            attempts = int(d["attempts"])
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry is dropped, not a failed start
        if todo:
            out.append(Delivery(msg, todo, attempts))
    sent = sorted(float(t) for t in data.get("sent") or [] if isinstance(t, int | float) and now - 3600 < t <= now)
    return out, sent


@dataclass
class Ping:
    url: str
    body: str = ""
    attempts: int = 0
    created: float = 0.0


class NotifyService:
    """Hosted by the daemon: hears problems, sends grouped notifications, the digest and the pings."""

    name = "notify"

    def __init__(self, sender: Sender = send, clock: Callable[[], float] = time.time) -> None:
        self.sender = sender
        self.clock = clock
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._changes: list[Change] = []
        self._deliveries: list[Delivery] = []
        self._pings: deque[Ping] = deque(maxlen=50)
        self._runs: dict[str, tuple[str, float]] = {}  # job id -> (rid, started)
        self._raised_at: list[tuple[float, str]] = []  # (when, kind) of problems raised, for job outcomes
        self._fails: dict[int, int] = {}  # url index -> consecutive failed attempts
        self._ping_failing = False  # the last ping was given up
        self._dirty = False  # deliveries changed outside the sender thread; it stores them
        self.urls: list[str] = []
        self.outbox: Outbox | None = None
        self.rt: Runtime | None = None
        self.sent_total = 0
        self.failed_total = 0

    # --- wiring ------------------------------------------------------------------------------------

    def start(self, rt: Runtime) -> None:
        if self.attach(rt):
            rt.supervisor.spawn("notify", self.pass_once, rt.stop, interval=0, max_silence=600)

    def attach(self, rt: Runtime) -> bool:
        """Listen, schedule the digest and the pings; False when nothing is configured. (Tests drive
        `pass_once` themselves after this, with their own clock.)"""
        cfg = rt.settings.notify
        self.rt = rt
        self.urls = cfg.all_urls()
        self.ping_base = cfg.ping_url.get_secret_value()
        for key in stale_delivery_problems(rt.problems.active(), self.urls, self.ping_base):
            rt.problems.resolve(key, "the notification settings changed; looked at afresh")
        if not self.urls and not self.ping_base:
            return False
        host = socket.gethostname()
        if self.urls:
            announced = _load_json(rt.catalog.get_meta(META_ANNOUNCED))
            self.outbox = Outbox(cfg.events, cfg.group_seconds, cfg.max_per_hour, announced, host)
            owed, sent = load_owed(rt.catalog.get_meta(META_OUTBOX), self.urls, self.clock())
            self.outbox.sent.extend(sent)
            self._deliveries = owed
            if owed:
                _log.info("notifications owed from before the restart are sent again", count=len(owed))
            self._reconcile(rt, announced)
            rt.problems.subscribe(self.heard)
            if "digest" in cfg.events:
                from draftsync.schedule import trigger

                rt.add_job(
                    "digest", self.digest_now, trigger(cfg.digest_schedule, cfg.tz()), misfire_grace_time=6 * 3600
                )
                self._catch_up_digest(rt)
        else:
            rt.problems.subscribe(self._note_raised)
        if self.ping_base:
            from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED
            from apscheduler.triggers.interval import IntervalTrigger

            rt.scheduler.add_listener(self._job_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
            rt.add_job("heartbeat-ping", self.heartbeat, IntervalTrigger(seconds=cfg.heartbeat_seconds),
                       max_silence=cfg.heartbeat_seconds * 3 + 600, next_run_time=datetime.now().astimezone())  # fmt: skip
        return True

    def stop(self) -> None:
        self.wake.set()

    def _reconcile(self, rt: Runtime, announced: dict[str, str]) -> None:
        """Problems raised before we listened (or while we were down) are told; ones that cleared too."""
        now = self.clock()
        active = {p.key: p for p in rt.problems.active()}
        for key, p in active.items():
            if key not in announced:
                self.heard(Change("raised", p, now))
        for key, message in announced.items():
            if key not in active:
                kind = key.split(":", 1)[0]
                gone = Problem(key, kind, f"resolved: {message}", "error", now)
                self.heard(Change("cleared", gone, now))

    def heard(self, c: Change) -> None:
        """The Problems listener: record and wake the sender; never blocks the reporting thread."""
        self._note_raised(c)
        with self._lock:
            self._changes.append(c)
            del self._changes[:-1000]  # bounded even if the sender were stuck
        self.wake.set()

    def _note_raised(self, c: Change) -> None:
        if c.action == "raised":
            with self._lock:
                self._raised_at.append((c.at, c.problem.kind))
                del self._raised_at[:-200]

    def submit(self, msg: Message) -> None:
        """Queue a message for every URL (the digest, a test), outside grouping and the hourly limit."""
        with self._lock:
            self._deliveries.append(Delivery(msg, list(range(len(self.urls)))))
            self._trim()
            self._dirty = True  # stored by the sender thread, the only one that writes the outbox
        self.wake.set()

    def _trim(self) -> None:
        while len(self._deliveries) > MAX_DELIVERIES:
            d = self._deliveries.pop(0)
            _log.error("notification dropped: too many waiting for delivery", title=d.message.title)

    # --- the sender thread -------------------------------------------------------------------------

    def pass_once(self, wait: float = 1.0) -> None:
        """One pass of the sender loop: group changes, send what is due, retry, ping; then wait a little."""
        now = self.clock()
        with self._lock:
            changes, self._changes = self._changes, []
            dirty, self._dirty = self._dirty, False
        if self.outbox is not None:
            for c in changes:
                self.outbox.add(c, now)
            msg = self.outbox.due(now)
            if msg is not None:
                with self._lock:
                    self._deliveries.append(Delivery(msg, list(range(len(self.urls)))))
                    self._trim()
                dirty = True
            if dirty:
                self._store()  # "told" and "owed" in one transaction: a restart resumes, never re-derives
        self._deliver(now)
        self._send_pings(now)
        self.wake.wait(self._wait_for(now, wait))
        self.wake.clear()

    def _wait_for(self, now: float, cap: float) -> float:
        times = [d.next_try for d in self._deliveries]
        nxt = self.outbox.next_due(now) if self.outbox is not None else None
        if nxt is not None:
            times.append(nxt)
        return max(0.0, min([cap, *[t - now for t in times]]))

    def _deliver(self, now: float) -> None:
        with self._lock:
            due = [d for d in self._deliveries if d.next_try <= now]
        for d in due:
            for i in list(d.todo):
                ok, answer = self.sender(self.urls[i], d.message)
                if ok:
                    with self._lock:
                        d.todo.remove(i)
                        if not d.todo and d in self._deliveries:  # (`_trim` may have dropped it)
                            self._deliveries.remove(d)
                    self._store()  # at once: a restart must not send it again
                    self.sent_total += 1
                    self._url_ok(i)
                else:
                    self.failed_total += 1
                    self._url_failed(i, answer)
            if not d.todo:
                _log.info("notification sent", title=d.message.title)
                continue
            d.attempts += 1
            if d.attempts > len(RETRY_DELAYS):
                with self._lock:
                    if d in self._deliveries:
                        self._deliveries.remove(d)
                self._store()
                _log.error("notification given up after retries", title=d.message.title,
                           urls=[describe_url(self.urls[i]) for i in d.todo])  # fmt: skip
                if self.rt is not None:
                    self.rt.catalog.log_event("error", "notify", f"notification given up: {d.message.title}")
            else:
                d.next_try = now + RETRY_DELAYS[d.attempts - 1]
                self._store()  # its attempts count: restarts do not make a dead service retried for ever

    def _url_ok(self, i: int) -> None:
        if self._fails.pop(i, 0) and self.rt is not None:
            self.rt.problems.resolve(f"notify:{i}")

    def _url_failed(self, i: int, answer: str) -> None:
        n = self._fails.get(i, 0) + 1
        self._fails[i] = n
        where = describe_url(self.urls[i])
        _log.warning("notification not delivered; will retry", url=where, answer=answer, failures=n)
        if n >= 2 and self.rt is not None:  # one failure is a blip; two in a row is worth telling
            self.rt.problems.report(
                f"notify:{i}", "notify",
                f"notifications to {where} are not delivered ({answer}); draftsync keeps retrying. "
                "Check the URL with `draftsync notify test`.", severity="warning",
            )  # fmt: skip

    def _store(self) -> None:
        """Record which problems were told and which messages are still owed, together. Called on the
        sender thread only (the Outbox is its own)."""
        if self.rt is None or self.outbox is None:
            return
        with self._lock:
            owed = dump_owed(self._deliveries, list(self.outbox.sent), self.urls)
            announced = json.dumps(self.outbox.announced)
        try:
            with self.rt.catalog.tx():
                self.rt.catalog.set_meta(META_ANNOUNCED, announced)
                self.rt.catalog.set_meta(META_OUTBOX, owed)
        except Exception as e:  # the state disk may be the problem being told
            _log.warning("could not record which notifications were told and which are owed", error=str(e))

    # --- digest ------------------------------------------------------------------------------------

    def digest_now(self) -> Message | None:
        rt = self.rt
        if rt is None:
            return None
        now = self.clock()
        msg = compose_digest(gather_digest(rt.settings, rt.catalog, rt.problems.active(), now), socket.gethostname())
        self.submit(msg)
        rt.catalog.set_meta(META_DIGEST, str(now))
        _log.info("weekly digest queued", title=msg.title)
        return msg

    def _catch_up_digest(self, rt: Runtime) -> None:
        cfg = rt.settings.notify
        raw = rt.catalog.get_meta(META_DIGEST)
        now = self.clock()
        if raw is None:
            rt.catalog.set_meta(META_DIGEST, str(now))  # the first digest covers from now on
        elif digest_missed(float(raw), cfg.digest_schedule, cfg.tz(), now):
            rt.add_job("digest-missed", self.digest_now, None, next_run_time=datetime.now().astimezone())

    # --- pings -------------------------------------------------------------------------------------

    def heartbeat(self, first_beat_wait: float = 30.0) -> None:
        """Success while healthy; fail, with the reasons, while not (so the outside service alerts)."""
        rt = self.rt
        if rt is None:
            return
        import os

        from draftsync.health import read

        # Right after start-up the daemon has not beaten yet: wait for its first beat, not report it dead.
        deadline = time.monotonic() + first_beat_wait
        while _load_json(rt.catalog.get_meta("daemon")).get("pid") != str(os.getpid()):
            if time.monotonic() >= deadline or rt.stop.wait(0.5):
                break
        h = read(rt.settings, rt.catalog, self.clock())
        if h.healthy:
            self._ping(ping_url(self.ping_base, "heartbeat", "success"), "ok")
        else:
            self._ping(ping_url(self.ping_base, "heartbeat", "fail"), "\n".join(h.reasons))

    def _job_event(self, event: Any) -> None:
        """Scheduler listener (on the scheduler's thread): start/success/fail around scrub and push windows."""
        from apscheduler.events import EVENT_JOB_SUBMITTED

        job = getattr(event, "job_id", "")
        if job not in WATCHED_JOBS:
            return
        now = self.clock()
        if event.code == EVENT_JOB_SUBMITTED:
            rid = str(uuid.uuid4())
            self._runs[job] = (rid, now)
            self._ping(ping_url(self.ping_base, job, "start", rid))
            return
        rid, started = self._runs.pop(job, ("", now))
        with self._lock:
            raised = [k for t, k in self._raised_at if t >= started and k in WATCHED_JOBS[job]]
        ok, why = run_verdict(getattr(event, "exception", None), getattr(event, "retval", None), raised)
        if ok:
            self._ping(ping_url(self.ping_base, job, "success", rid))
        else:
            self._ping(ping_url(self.ping_base, job, "fail", rid), why)

    def _ping(self, url: str, body: str = "") -> None:
        with self._lock:
            self._pings.append(Ping(url, body, created=self.clock()))
        self.wake.set()

    def _send_pings(self, now: float) -> None:
        import httpx

        while True:
            with self._lock:
                if not self._pings:
                    return
                p = self._pings.popleft()
            if now - p.created > 600:
                continue  # a ping that old says nothing true any more
            try:
                r = httpx.post(p.url, content=p.body.encode()[:10_000], timeout=10.0)
                ok = r.status_code < 400
                answer = f"HTTP {r.status_code}"
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:  # ValueError: a host IDNA cannot encode
                ok, answer = False, type(e).__name__
            if ok:
                self._ping_ok()
                continue
            p.attempts += 1
            _log.warning("ping not delivered", answer=answer, attempts=p.attempts)
            if p.attempts < PING_ATTEMPTS:
                with self._lock:
                    self._pings.appendleft(p)
            else:
                self._ping_given_up(answer)
            return  # try the rest on the next pass

    def _ping_ok(self) -> None:
        if self._ping_failing and self.rt is not None:
            self.rt.problems.resolve(PING_KEY)
        self._ping_failing = False

    def _ping_given_up(self, answer: str) -> None:
        """A ping that never arrives is silent twice over: the monitoring service may never have heard of
        this check (a mistyped URL), so it will not alert either. Tell the owner here."""
        self._ping_failing = True
        if self.rt is not None:
            self.rt.problems.report(
                PING_KEY, "notify",
                f"pings to {ping_host(self.ping_base)} are not delivered ({answer}); the monitoring service does not "
                "hear from draftsync. Check [notify] ping_url.", severity="warning",
            )  # fmt: skip


PING_ATTEMPTS = 3  # tries of one ping, one per sender pass; then it is given up and the owner told
PING_KEY = "notify:ping"


def ping_host(url: str) -> str:
    """Where pings go, without the path (the check's UUID or ping key is the secret)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return log.scrub(f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else ""))
    except ValueError:
        return "the ping URL"


# Jobs wrapped in start/success/fail pings, and the problem kinds that mean a run failed.
WATCHED_JOBS = {"scrub": ("integrity",), "push": ("push_failed", "push_reauth")}


def run_verdict(exception: BaseException | None, retval: object, raised: list[str]) -> tuple[bool, str]:
    """Did a watched job's run succeed, and what to say if not? Its own `RunResult` when it gives one (the
    scrub and the push window do); otherwise any problem of the job's kinds raised while it ran."""
    if exception is not None:
        return False, f"{type(exception).__name__}: {exception}"
    if isinstance(retval, RunResult):
        return retval.ok, "" if retval.ok else retval.detail
    return not raised, ", ".join(raised)


def stale_delivery_problems(active: list[Problem], urls: list[str], ping_base: str) -> list[str]:
    """Keys of "not delivered" problems that no longer describe the configuration (a URL removed, changed
    or moved in the list; pings turned off or sent elsewhere). Only a delivery to that same URL clears
    one, so without this it would stand for good after the owner fixed the URL and restarted."""
    out = []
    for p in active:
        if p.kind != "notify":
            continue
        where = p.key.removeprefix("notify:")
        if where == "ping":
            if not ping_base or f"pings to {ping_host(ping_base)} " not in p.message:
                out.append(p.key)
        elif not where.isdigit() or int(where) >= len(urls) or f"to {describe_url(urls[int(where)])} " not in p.message:
            out.append(p.key)
    return out


def _load_json(raw: str | None) -> dict[str, str]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


# --- `draftsync notify test` -------------------------------------------------------------------------------


def sample_message(now: datetime | None = None) -> Message:
    when = (now or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M")
    return Message(f"draftsync on {socket.gethostname()}: test message",
                   f"This is a test from draftsync ({when}). If you read this, notifications work.", "info")  # fmt: skip


def try_all(urls: list[str], sender: Sender = send) -> list[tuple[str, bool, str]]:
    """Send the test message to each URL now; (URL with secrets hidden, delivered, answer) for each."""
    msg = sample_message()
    return [(describe_url(u), *sender(u, msg)) for u in urls]
