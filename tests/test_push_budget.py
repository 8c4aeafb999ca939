"""push.budget: TikTok's limits over the init ledger, with injected instants (no sleeping)."""

from __future__ import annotations

from datetime import UTC

import pytest

from draftsync.push.budget import Entry, Limits, next_slot, pending_block, summary, turns
from draftsync.push.machine import Instant

L = Limits()
NOW = Instant(1_800_003_600.0, "boot-a", 100_000.0)  # 2027-01-15 09:00 UTC


def init(age: float, outcome: str = "ok", boot: str = "boot-a", wall_skew: float = 0.0) -> Entry:
    at = NOW.later(-age)
    mono = at.mono if boot == NOW.boot else 5.0  # another boot's clock reading means nothing here
    at = Instant(at.wall + wall_skew, boot, mono)
    return Entry(0, "init", at, outcome)  # type: ignore[arg-type]


def slot(entries: list[Entry], max_per_day: int = 5, now: Instant = NOW) -> tuple[float, str]:
    s = next_slot(entries, L, max_per_day, UTC, now)
    return round(s.wait, 3), s.why


@pytest.mark.parametrize(
    ("entries", "wait", "why"),
    [
        ([], 0, ""),
        ([init(3600)] * 4, 0, ""),
        ([init(3600 * h) for h in (1, 2, 3, 4, 5)], 86400 - 5 * 3600, "5 drafts in 24 h (TikTok's cap)"),
        # an init whose answer was lost holds a slot too (spec A.6, safe reading) ...
        ([init(3600 * h, "unknown") for h in (1, 2, 3, 4, 5)], 86400 - 5 * 3600, "5 drafts in 24 h (TikTok's cap)"),
        # ... a refused one does not
        ([init(3600 * h, "refused") for h in (1, 2, 3, 4, 5)], 0, ""),
        ([init(86400 + 1)] * 5, 0, ""),
        ([init(3)], 7, "10 s between inits"),
        ([init(50 - i * 10, "refused") for i in range(6)], 10, "6 inits a minute"),
        ([Entry(0, "block", NOW.later(-20), "refused", 60)], 40, "TikTok asked to wait"),
    ],
)
def test_next_slot(entries: list[Entry], wait: float, why: str) -> None:
    assert slot(entries) == (wait, why)


def test_max_per_day_is_a_calendar_day_in_the_configured_zone() -> None:
    two_today = [init(3600), init(7200)]
    assert slot(two_today, max_per_day=2) == (15 * 3600, "push.max_per_day = 2")  # until midnight UTC
    assert slot(two_today, max_per_day=3) == (0, "")


def test_a_wall_clock_jump_within_one_boot_frees_nothing() -> None:
    """The boot clock says an hour passed; the wall clock claims two days. TikTok counts real time."""
    five = [init(3600 * h) for h in (1, 2, 3, 4, 5)]
    jumped = Instant(NOW.wall + 2 * 86400, NOW.boot, NOW.mono)
    assert slot(five, now=jumped)[1] == "5 drafts in 24 h (TikTok's cap)"
    six_a_minute = [init(50 - i * 8, "refused") for i in range(6)]  # answered 429: still attempts
    assert slot(six_a_minute, now=Instant(NOW.wall + 3600, NOW.boot, NOW.mono))[1] == "6 inits a minute"


def test_across_a_reboot_only_the_wall_clock_is_left_and_the_future_counts_as_now() -> None:
    old_boot = [init(3600, boot="boot-0") for _ in range(5)]
    assert slot(old_boot)[0] == pytest.approx(86400 - 3600)
    future = [init(3600, boot="boot-0", wall_skew=3 * 86400) for _ in range(5)]  # recorded with a clock ahead
    assert slot(future)[0] == pytest.approx(86400)


def test_pending_block_waits_for_the_oldest_counted_init() -> None:
    assert pending_block([init(3600 * h) for h in (2, 5, 20)], L, NOW) == pytest.approx(4 * 3600)
    assert pending_block([], L, NOW) == 3600


def test_summary_counts_unanswered_inits() -> None:
    s = summary([init(60), init(120, "unknown"), init(180, "refused")], L, 5, UTC, NOW)
    assert s["drafts_last_24h"] == 2 and s["left_24h"] == 3 and s["unanswered_24h"] == 1 and s["left_today"] == 3
    assert s["next_slot"] is None and s["next_slot_reason"] == ""


def test_turns_follow_the_budget_across_windows() -> None:
    day = 86400.0
    windows = [i * day for i in range(5)]  # a window now, then daily
    got = turns([], [0.0] * 12, L, 5, 5, UTC, NOW, windows, 900)
    assert [round(t if t is not None else -1) for t in got[:5]] == [0, 10, 20, 30, 40]  # 10 s apart
    # day 2: each slot frees 24 h after its init, so the window waits a few seconds for each
    assert [round((t or 0) - day) for t in got[5:10]] == [0, 10, 20, 30, 40]
    assert got[10] is not None and got[10] >= 2 * day and got[11] is not None


def test_turns_respect_max_per_run_an_items_own_wait_and_the_horizon() -> None:
    got = turns([], [0.0, 0.0, 0.0], L, 5, 2, UTC, NOW, [0.0, 3600.0], 900)
    assert got[0] == 0 and got[1] == 10 and got[2] == 3600
    waiting = turns([], [7200.0, 0.0], L, 5, 5, UTC, NOW, [0.0, 3600.0], 900)
    assert waiting == [None, 0.0]  # the first may not start yet; the second goes; no window after 7200
    full = [init(3600 * h) for h in (1, 2, 3, 4, 5)]
    assert turns(full, [0.0], L, 5, 5, UTC, NOW, [0.0], 900) == [None]
