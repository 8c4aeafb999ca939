"""The push queue as the catalog keeps it: items in and out of their rows, when pushing took effect
(`only_new`), what `push add` and `push retry` change, and the read-only views that `status`, `queue`,
the dry run and the status page share. Nothing here sends anything, and the views never write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from draftsync import schedule
from draftsync.catalog import Catalog, VideoRecord
from draftsync.config import Settings
from draftsync.push import budget, machine
from draftsync.push.budget import Entry, Limits
from draftsync.push.clock import SystemClock
from draftsync.push.machine import ACTIVE, FINAL, Instant, Item, State, elapsed
from draftsync.push.select import caption_for, choose, matches, taken

if TYPE_CHECKING:
    from draftsync.problems import Problems

SLOT_WAIT = 900.0  # a window waits up to 15 minutes for a slot that is about to open
HALT = "push_halt"  # meta key: pushing stopped until a person has looked (`push retry` clears it)
REAUTH = "push_reauth"  # problem key (and kind)


def __getattr__(name: str) -> Any:  # `Pusher` lives in push.pusher (it needs the back-ends); importable here too
    if name == "Pusher":
        from draftsync.push.pusher import Pusher

        return Pusher
    raise AttributeError(name)


# --- when pushing took effect ----------------------------------------------------------------------------


def note_enabled(settings: Settings, catalog: Catalog, now: float | None = None) -> None:
    """Anchor `only_new` the first time any draftsync process (`run`, `scan`, `push`) loads a config with
    pushing enabled: videos archived from then on are queued. Call it before archiving anything."""
    if settings.push.enabled:
        catalog.mark_push_enabled(time.time() if now is None else now)


def enabled_at(catalog: Catalog) -> float | None:
    v = catalog.get_meta("push_enabled_at")
    return float(v) if v else None


# --- items and rows ---------------------------------------------------------------------------------------


def item_of(row: dict[str, Any]) -> Item:
    since = row.get("since") or row.get("updated_at") or 0.0
    issued = None
    if row.get("upload_started") is not None:
        issued = Instant(row["upload_started"], row.get("upload_boot") or "", row.get("upload_mono") or 0.0)
    return Item(
        hash=row["hash"], state=State(row["state"]),
        since=Instant(since, row.get("since_boot") or "", row.get("since_mono") or 0.0), wait=row.get("wait") or 0.0,
        attempt=row.get("attempts") or 0, ref=row.get("ref") or "", remote_id=row.get("remote_id"),
        upload_url=row.get("upload_url"), upload_issued=issued, chunk_size=row.get("chunk_size"),
        chunk_count=row.get("chunk_count"), reason=row.get("reason") or "", code=row.get("code") or "",
        log_id=row.get("log_id") or "",
    )  # fmt: skip


def fields_of(item: Item) -> dict[str, Any]:
    up = item.upload_issued
    return {
        "state": item.state.value, "since": item.since.wall, "since_boot": item.since.boot,
        "since_mono": item.since.mono, "wait": item.wait, "attempts": item.attempt, "ref": item.ref or None,
        "remote_id": item.remote_id, "upload_url": item.upload_url, "upload_started": up.wall if up else None,
        "upload_boot": up.boot if up else None, "upload_mono": up.mono if up else None,
        "chunk_size": item.chunk_size, "chunk_count": item.chunk_count, "reason": item.reason or None,
        "code": item.code or None, "log_id": item.log_id or None,
    }  # fmt: skip


def save(catalog: Catalog, item: Item, **extra: Any) -> None:
    catalog.save_push(item.hash, {**fields_of(item), **extra})


def account_of(settings: Settings) -> str:
    """The account the budget is kept for (read-only: the token file is only read)."""
    if settings.push.backend == "tiktok":
        try:
            data = json.loads(settings.token_path.read_text())
            return f"tiktok:{data.get('open_id', '?')}"
        except (OSError, ValueError, AttributeError):
            return "tiktok:?"
    if settings.push.backend == "postforme":
        return f"postforme:{settings.postforme.social_account_id}"
    return "dry-run"


def ledger(catalog: Catalog, account: str) -> list[Entry]:
    return [Entry(r["id"], r["kind"], Instant(r["at"], r["boot"] or "", r["mono"] or 0.0), r["outcome"], r["span"] or 0.0)
            for r in catalog.ledger(account)]  # fmt: skip


# --- when each item's turn comes ------------------------------------------------------------------------


def windows_ahead(settings: Settings, now: Instant, count: int = 62) -> list[float]:
    """Seconds from now to each of the next `count` scheduled windows."""
    tz = settings.push.tz()
    trig = schedule.trigger(settings.push.schedule, tz)
    out: list[float] = []
    at = datetime.fromtimestamp(now.wall, tz)
    for _ in range(count):
        nxt = trig.get_next_fire_time(None, at)
        if nxt is None:
            break
        out.append(max(0.0, nxt.timestamp() - now.wall))
        at = nxt + timedelta(seconds=1)
    return out


def turn_times(settings: Settings, catalog: Catalog, items: list[Item], now: Instant, *, run_now: bool = False,
               only_now: bool = False, ahead: list[float] | None = None) -> dict[str, float | None]:  # fmt: skip
    """Wall time at which each queued item (in queue order) gets its init under the budget, in the
    scheduled windows (and a window run now, if `run_now`; only that one, if `only_now`). `ahead`: the
    scheduled windows, when the caller has them already."""
    p = settings.push
    scheduled = windows_ahead(settings, now) if ahead is None else ahead
    windows = [0.0] if only_now else ([0.0] if run_now else []) + scheduled
    due = [max(0.0, it.wait - elapsed(it.since, now)) for it in items]
    at = budget.turns(ledger(catalog, account_of(settings)), due, Limits(), p.max_per_day, p.max_per_run, p.tz(), now,
                      windows, SLOT_WAIT)  # fmt: skip
    return {it.hash: (None if t is None else now.wall + t) for it, t in zip(items, at, strict=True)}


# --- views (read-only) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    """One line of `draftsync queue` and of the status page."""

    hash: str
    archive_path: str | None
    state: str
    reason: str
    turn_at: float | None  # queued: when its init is due under the budget (None: not within two months)
    updated_at: float
    remote_id: str | None = None
    code: str = ""
    log_id: str = ""
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def queue_view(settings: Settings, catalog: Catalog, *, limit: int | None = None, offset: int = 0,
               now: Instant | None = None) -> list[QueueEntry]:  # fmt: skip
    """Every video the queue knows, in queue order, with when each queued one's turn comes."""
    now = now or SystemClock().now()
    queued = [item_of(r) for r in catalog.push_rows((State.QUEUED.value,))]
    turns = turn_times(settings, catalog, queued, now) if settings.push.enabled else {}
    out = []
    for r in catalog.push_rows(limit=-1 if limit is None else limit, offset=offset):
        v = catalog.video(r["hash"])
        out.append(QueueEntry(
            hash=r["hash"], archive_path=v.archive_path if v else None, state=r["state"], reason=r["reason"] or "",
            turn_at=turns.get(r["hash"]), updated_at=r["updated_at"], remote_id=r["remote_id"], code=r["code"] or "",
            log_id=r["log_id"] or "", attempts=r["attempts"] or 0,
        ))  # fmt: skip
    return out


def queue_page(settings: Settings, catalog: Catalog, limit: int, now: Instant | None = None) -> list[QueueEntry]:
    """The first `limit` lines of the status page's queue: active items, then queued ones in the order their
    turns come (those with none last, in queue order), then the latest finished ones. The same lines and
    turns as sorting all of `queue_view`, at a cost bounded by `limit` and the budget's horizon instead
    of the queue's length (the page must stay fast with thousands queued)."""
    now = now or SystemClock().now()
    active = catalog.push_rows(tuple(s.value for s in ACTIVE), limit=limit)
    rows: list[dict[str, Any]] = list(active)
    room = limit - len(rows)
    if room > 0:
        rows += _queued_by_turn(settings, catalog, room, now)
    turns = {r["hash"]: r.pop("_turn", None) for r in rows}
    room = limit - len(rows)
    if room > 0:
        rows += catalog.push_rows_latest(tuple(s.value for s in FINAL), room)
    videos = catalog.videos_of([r["hash"] for r in rows])
    return [_entry(r, videos.get(r["hash"]), turns.get(r["hash"])) for r in rows]


def _queued_by_turn(settings: Settings, catalog: Catalog, n: int, now: Instant) -> list[dict[str, Any]]:
    """The first `n` queued rows in turn order, each with its turn under `_turn`.

    `budget.turns` walks the queue in order and gives a window at most push.max_per_run items, so over W
    windows at most W x max_per_run items get a turn. Once a prefix of the queue holds that many items
    that are due now, every window fills (or runs out of budget) inside the prefix: the items after it get
    no turn, and the prefix's own turns are what the whole queue would give them. So only that prefix is
    read and walked; the rest is read only as far as the page shows turn-less items."""
    queued = (State.QUEUED.value,)
    if not settings.push.enabled:
        return catalog.push_rows(queued, limit=n)
    ahead = windows_ahead(settings, now)
    need = len(ahead) * max(1, settings.push.max_per_run)
    prefix: list[dict[str, Any]] = []
    due, chunk, done = 0, max(need, 256), False
    while due < need and not done:
        got = catalog.push_rows(queued, limit=chunk, offset=len(prefix))
        done = len(got) < chunk  # the whole queue is read
        for i, r in enumerate(got):
            prefix.append(r)
            due += item_of(r).due(now)
            if due >= need:
                done = done and i == len(got) - 1
                break
    items = [item_of(r) for r in prefix]
    turns = turn_times(settings, catalog, items, now, ahead=ahead)
    for r in prefix:
        r["_turn"] = turns.get(r["hash"])
    timed = sorted((r for r in prefix if r["_turn"] is not None), key=lambda r: float(r["_turn"]))
    out = (timed + [r for r in prefix if r["_turn"] is None])[:n]
    if len(out) < n and not done:
        out += catalog.push_rows(queued, limit=n - len(out), offset=len(prefix))
    return out


def _entry(r: dict[str, Any], v: VideoRecord | None, turn: float | None) -> QueueEntry:
    return QueueEntry(hash=r["hash"], archive_path=v.archive_path if v else None, state=r["state"],
                      reason=r["reason"] or "", turn_at=turn, updated_at=r["updated_at"], remote_id=r["remote_id"],
                      code=r["code"] or "", log_id=r["log_id"] or "", attempts=r["attempts"] or 0)  # fmt: skip


def paused_reason(catalog: Catalog) -> str:
    halt = catalog.get_meta(HALT)
    if halt:
        return halt
    for p in catalog.problems():
        if p.key == REAUTH:
            return p.message.removeprefix("pushing is paused: ")
    return ""


def idle_reason(settings: Settings, catalog: Catalog) -> str:
    """Why a window finds nothing new to send, in words."""
    if not settings.push.only_new:
        return "every archived video is already queued, pushed or skipped"
    since = enabled_at(catalog)
    if since is None:
        return (
            "pushing takes effect the first time `run`, `scan` or `push --now` loads a config with it on; "
            "videos archived after that are queued, and `draftsync push add` queues older ones"
        )
    old = catalog.count_unqueued_before(since)
    text = f"nothing new since pushing was enabled on {_local(since)}"
    if old:
        text += f"; {old} video(s) archived before that are not queued (only_new): see `draftsync push add`"
    return text


def push_status(settings: Settings, catalog: Catalog, now: Instant | None = None) -> dict[str, Any]:
    """The push part of `status`: one summary line and its parts. Never writes."""
    now = now or SystemClock().now()
    p = settings.push
    counts = catalog.push_counts()
    account = account_of(settings)
    b = {"account": account, **budget.summary(ledger(catalog, account), Limits(), p.max_per_day, p.tz(), now)}
    paused = paused_reason(catalog)
    nxt = windows_ahead(settings, now, 1) if p.enabled else []
    next_window = now.wall + nxt[0] if nxt else None
    last_raw = catalog.get_meta("push_last_result")
    last = json.loads(last_raw) if last_raw else None
    state = "off" if not p.enabled else f"PAUSED: {paused}" if paused else f"on ({p.backend})"
    parts = [state]
    if counts:
        parts.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    left = f"{b['left_24h']} of {Limits().pending_cap} drafts left in 24 h"
    if b["unanswered_24h"]:
        left += f" ({b['unanswered_24h']} counted because TikTok's answer was lost)"
    parts.append(f"{left}, {b['left_today']} today")
    if next_window:
        parts.append(f"next window {_local(next_window)}")
    if b["next_slot"] and b["next_slot_reason"]:
        parts.append(f"next slot {_local(b['next_slot'])} ({b['next_slot_reason']})")
    if last and last.get("text") and not paused:
        parts.append(f"last window {_local(last['at'])}: {last['text']}")
    return {"enabled": p.enabled, "backend": p.backend, "paused": paused, "counts": counts, "budget": b,
            "next_window": next_window, "enabled_at": enabled_at(catalog), "last_window": last,
            "summary": "; ".join(parts)}  # fmt: skip


def _local(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%a %Y-%m-%d %H:%M")


# --- the dry run: the same selection and budget as a window run now ---------------------------------------------


@dataclass
class Plan:
    now: list[tuple[VideoRecord, str]] = field(default_factory=list)  # (video, caption) a window now would send
    later: list[tuple[VideoRecord, float | None]] = field(default_factory=list)  # (video, turn)
    skipped: list[tuple[VideoRecord, str]] = field(default_factory=list)  # new videos the selection would skip
    active: int = 0  # uploads a window would finish first
    uncompared: bool = False  # some videos are not compared yet: the real window compares first
    idle: str = ""


def new_candidates(settings: Settings, catalog: Catalog) -> list[VideoRecord]:
    """Archived videos the selection has not looked at yet (since `only_new`'s anchor)."""
    if settings.push.only_new:
        since = enabled_at(catalog)
        if since is None:
            return []
    else:
        since = 0.0
    return [v for v in catalog.videos_since(since)
            if catalog.push_row(v.hash) is None and matches(v, settings.push.select)]  # fmt: skip


def plan(settings: Settings, catalog: Catalog, now: Instant | None = None) -> Plan:
    now = now or SystemClock().now()
    out = Plan(active=sum(1 for _ in catalog.push_rows(tuple(s.value for s in ACTIVE))))
    fresh = new_candidates(settings, catalog)
    out.uncompared = bool(fresh) and catalog.any_unsigned()
    choices = choose(catalog, fresh, taken(catalog))
    out.skipped = [(c.video, c.problem) for c in choices if c.problem]
    queued = [item_of(r) for r in catalog.push_rows((State.QUEUED.value,))]
    queued += [machine.queue(c.video.hash, now) for c in choices if c.problem is None]
    in_this = turn_times(settings, catalog, queued, now, only_now=True)
    turns = turn_times(settings, catalog, queued, now, run_now=True)
    for it in queued:
        v = catalog.video(it.hash)
        if v is None:
            continue
        t = turns.get(it.hash)
        if in_this.get(it.hash) is not None:
            out.now.append((v, caption_for(settings.push.caption, v, catalog)))
        else:
            out.later.append((v, t))
    if not queued and not out.active:
        out.idle = idle_reason(settings, catalog)
    return out


# --- push add / push retry -------------------------------------------------------------------------------------------


@dataclass
class Added:
    queued: list[VideoRecord] = field(default_factory=list)
    already: list[tuple[VideoRecord, str]] = field(default_factory=list)  # (video, its state)
    refused: list[tuple[VideoRecord, str]] = field(default_factory=list)  # (video, why)
    unknown: list[str] = field(default_factory=list)  # arguments that name no archived video
    turns: dict[str, float | None] = field(default_factory=dict)


def resolve(settings: Settings, catalog: Catalog, target: str) -> list[VideoRecord]:
    """The archived video(s) an argument names: a content hash (or a prefix of 8+ hex digits), a path in
    the archive (relative to archive.root or absolute), or a source path it was archived from."""
    t = target.strip()
    hexpart = t.removeprefix("blake3:")
    if len(hexpart) >= 8 and all(c in "0123456789abcdef" for c in hexpart.lower()):
        found = catalog.videos_by_hash_prefix("blake3:" + hexpart.lower())
        if len(found) == 1:
            return found
    p = Path(t).expanduser()
    root = settings.archive.root
    rel = t
    if p.is_absolute():
        try:
            rel = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = ""
    v = catalog.video_by_path(rel) if rel else None
    if v is not None:
        return [v]
    h = catalog.hash_of_source(str(p.resolve()) if p.is_absolute() else t)
    v = catalog.video(h) if h else None
    return [v] if v else []


def add(settings: Settings, catalog: Catalog, videos: list[VideoRecord], *, force: bool = False,
        dry_run: bool = False, now: Instant | None = None) -> Added:  # fmt: skip
    """Queue archived videos on purpose, whatever `only_new` says. Still skipped unless `force`: TikTok
    exports and near-duplicates of something queued or pushed. Never queued: what TikTok would reject."""
    now = now or SystemClock().now()
    out = Added()
    held = taken(catalog)
    fresh = []
    for v in videos:
        row = catalog.push_row(v.hash)
        state = row["state"] if row else None
        if state in (State.QUEUED, *ACTIVE, State.IN_INBOX):
            out.already.append((v, str(state)))
        elif state == State.FAILED:
            out.refused.append((v, f"it failed earlier ({row['reason'] if row else ''}); `draftsync push retry` "
                                   "queues it again"))  # fmt: skip
        else:
            fresh.append(v)
    for c in choose(catalog, fresh, held, check_duplicates=not force):
        if c.problem:
            out.refused.append((c.video, c.problem))
            continue
        out.queued.append(c.video)
        if not dry_run:
            row = catalog.push_row(c.video.hash)
            save(catalog, machine.add(item_of(row) if row else None, c.video.hash, now))
            catalog.requeued(c.video.hash)
    queued = [item_of(r) for r in catalog.push_rows((State.QUEUED.value,))]
    if dry_run:
        queued += [machine.queue(v.hash, now) for v in out.queued]
    out.turns = turn_times(settings, catalog, queued, now)
    return out


@dataclass
class Retried:
    queued: list[str] = field(default_factory=list)
    not_failed: list[tuple[str, str]] = field(default_factory=list)  # (hash, state)
    halt_cleared: str = ""


def retry(catalog: Catalog, hashes: list[str] | None, problems: Problems, now: Instant | None = None) -> Retried:
    """Queue failed items again (all of them if `hashes` is None); clears their problems and a halt."""
    now = now or SystemClock().now()
    out = Retried()
    rows = catalog.push_rows((State.FAILED.value,)) if hashes is None else [
        r for h in hashes if (r := catalog.push_row(h)) is not None]  # fmt: skip
    for r in rows:
        it = item_of(r)
        if it.state is not State.FAILED:
            out.not_failed.append((it.hash, it.state.value))
            continue
        save(catalog, machine.retry(it, now))
        catalog.requeued(it.hash)
        problems.resolve(f"push_failed:{it.hash}")
        out.queued.append(it.hash)
    halt = catalog.get_meta(HALT)
    if halt and (out.queued or hashes is None):
        catalog.set_meta(HALT, "")
        out.halt_cleared = halt
        problems.resolve(REAUTH)
    return out
