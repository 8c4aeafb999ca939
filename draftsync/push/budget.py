"""TikTok's limits as a budget over a ledger of init calls kept in the catalog (pure functions).

Every init is written to the ledger before it is sent, as `unknown`; the answer marks it `ok` (a share
exists) or `refused` (the service said no). `ok` and `unknown` both hold one of the 5 pending slots for
24 h: an init whose answer was lost may have created a share (spec A.6, safe reading). Every attempt,
refused or not, counts toward 6 a minute. An account-wide pause the service asked for (429, pending cap)
is a `block` line with a span. Ages come from `machine.elapsed`, so they are measured on the boot clock
within one boot and no wall-clock jump frees a slot early.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal

from draftsync.push.machine import Instant, elapsed


@dataclass(frozen=True)
class Limits:
    """TikTok's limits (spec A.6), counted per account across tokens, processes and restarts."""

    pending_cap: int = 5  # inits that may have made a share, in any rolling 24 h
    pending_window: float = 86400.0
    init_per_minute: int = 6
    init_spacing: float = 10.0  # safe reading: one init per 10 s per user
    status_spacing: float = 2.0  # never faster than one status call per 2 s per user


@dataclass(frozen=True)
class Entry:
    """One line of the ledger."""

    id: int
    kind: Literal["init", "block"]
    at: Instant
    outcome: Literal["unknown", "ok", "refused"] = "unknown"
    span: float = 0.0  # block: seconds from `at`


@dataclass(frozen=True)
class Slot:
    wait: float  # seconds from now until an init is allowed (0: now)
    why: str  # the limit that decides it ("" when free)


def _midnight_after(wall: float, tz: tzinfo) -> float:
    d = datetime.fromtimestamp(wall, tz).date() + timedelta(days=1)
    return datetime.combine(d, datetime.min.time(), tz).timestamp()


def _today(entries: list[Entry], tz: tzinfo, now: Instant) -> list[Entry]:
    """Inits that may have made a share, made on now's calendar day (in `tz`). The day's bounds are computed
    once, not per entry: `turns` asks this for hundreds of future moments over a growing ledger."""
    day = datetime.fromtimestamp(now.wall, tz).date()
    start = datetime.combine(day, datetime.min.time(), tz).timestamp()
    end = _midnight_after(now.wall, tz)
    return [e for e in entries if e.kind == "init" and e.outcome != "refused" and start <= e.at.wall < end]


def counted(entries: list[Entry], limits: Limits, now: Instant) -> list[float]:
    """Ages of the inits holding a pending slot now, youngest first."""
    ages = [elapsed(e.at, now) for e in entries if e.kind == "init" and e.outcome != "refused"]
    return sorted(a for a in ages if a < limits.pending_window)


def next_slot(entries: list[Entry], limits: Limits, max_per_day: int, tz: tzinfo, now: Instant) -> Slot:
    """When the next init may be sent, and why not sooner."""
    waits = [Slot(0.0, "")]
    held = counted(entries, limits, now)
    if len(held) >= limits.pending_cap:
        waits.append(Slot(limits.pending_window - held[limits.pending_cap - 1],
                          f"{limits.pending_cap} drafts in 24 h (TikTok's cap)"))  # fmt: skip
    # push.max_per_day is the owner's own cap per calendar day, so it is read on the wall clock.
    today = _today(entries, tz, now)
    if len(today) >= max_per_day:
        waits.append(Slot(_midnight_after(now.wall, tz) - now.wall, f"push.max_per_day = {max_per_day}"))
    tries = sorted(elapsed(e.at, now) for e in entries if e.kind == "init")
    recent = [a for a in tries if a < 60.0]
    if len(recent) >= limits.init_per_minute:
        waits.append(Slot(60.0 - recent[limits.init_per_minute - 1], f"{limits.init_per_minute} inits a minute"))
    if tries:
        waits.append(Slot(limits.init_spacing - tries[0], f"{limits.init_spacing:.0f} s between inits"))
    for e in entries:
        if e.kind == "block":
            waits.append(Slot(e.span - elapsed(e.at, now), "TikTok asked to wait"))
    return max(waits, key=lambda s: s.wait)


def pending_block(entries: list[Entry], limits: Limits, now: Instant) -> float:
    """After TikTok reported the pending cap: no slot until some of the oldest inits are 24 h old (A.6);
    an hour when the ledger knows of none (they were made elsewhere)."""
    held = counted(entries, limits, now)
    return limits.pending_window - held[-1] if held else 3600.0


def summary(entries: list[Entry], limits: Limits, max_per_day: int, tz: tzinfo, now: Instant) -> dict[str, Any]:
    held = counted(entries, limits, now)
    today = _today(entries, tz, now)
    unknown = [e for e in entries if e.kind == "init" and e.outcome == "unknown"
               and elapsed(e.at, now) < limits.pending_window]  # fmt: skip
    slot = next_slot(entries, limits, max_per_day, tz, now)
    return {
        "drafts_last_24h": len(held), "left_24h": max(0, limits.pending_cap - len(held)),
        "unanswered_24h": len(unknown), "left_today": max(0, max_per_day - len(today)),
        "next_slot": now.wall + slot.wait if slot.wait > 0 else None, "next_slot_reason": slot.why if slot.wait > 0 else "",
    }  # fmt: skip


def turns(entries: list[Entry], due_after: list[float], limits: Limits, max_per_day: int, max_per_run: int,
          tz: tzinfo, now: Instant, windows: list[float], slot_wait: float) -> list[float | None]:  # fmt: skip
    """When each queued item (in queue order; `due_after` = seconds from now before it may start) gets its
    init, if windows open at `windows` (seconds from now) and each waits up to `slot_wait` for a slot:
    the same budget the real window obeys, walked forward. None: not within the windows given."""
    ledger = list(entries)
    out: list[float | None] = [None] * len(due_after)
    left = list(range(len(due_after)))
    for w in windows:
        # Inits two days old limit nothing any more (the 24 h cap, a calendar day of at most 25 h, a minute):
        # dropping them keeps each step's cost flat however far ahead the walk goes.
        ledger = [e for e in ledger if e.kind == "block" or elapsed(e.at, now.later(w)) < 2 * 86400.0]
        t, sent = w, 0
        for i in list(left):
            if sent >= max_per_run:
                break
            if due_after[i] > t:
                continue
            slot = next_slot(ledger, limits, max_per_day, tz, now.later(t))
            if t + slot.wait > w + slot_wait:
                break
            t += slot.wait
            out[i] = t
            ledger.append(Entry(-1, "init", now.later(t), "ok"))
            left.remove(i)
            sent += 1
        if not left:
            break
    return out
