"""schedule: cron expressions mean what crontab(5) says, whatever APScheduler numbers its weekdays."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from draftsync import schedule

BERLIN = ZoneInfo("Europe/Berlin")
TUESDAY_NOON = datetime(2026, 12, 1, 12, 0, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("expr", "next_run"),
    [
        ("0 4 * * 0", "Sun 2026-12-06 04:00"),  # the default scrub: Sunday, not Monday
        ("0 4 * * 7", "Sun 2026-12-06 04:00"),  # 7 is Sunday too
        ("0 9 * * 1-5", "Wed 2026-12-02 09:00"),  # weekdays, not Tuesday-Saturday
        ("0 9 * * 6", "Sat 2026-12-05 09:00"),
        ("30 18 * * sun", "Sun 2026-12-06 18:30"),
        ("@weekly", "Sun 2026-12-06 00:00"),
        ("@daily", "Wed 2026-12-02 00:00"),
        ("0 9 * * */2", "Thu 2026-12-03 09:00"),  # 0,2,4,6 = Sun, Tue, Thu, Sat
        ("0 9 * * 5-7", "Fri 2026-12-04 09:00"),
        ("0 0 13 * 5", "Fri 2026-12-04 00:00"),  # day-of-month OR day-of-week, as cron does
        ("0 0 2 * 5", "Wed 2026-12-02 00:00"),
        ("15 12 * * *", "Tue 2026-12-01 12:15"),
    ],
)
def test_next_fire_follows_crontab(expr: str, next_run: str) -> None:
    nxt = schedule.next_fire(expr, BERLIN, TUESDAY_NOON)
    assert nxt is not None and nxt.strftime("%a %Y-%m-%d %H:%M") == next_run


def test_next_fire_crosses_daylight_saving_in_local_time() -> None:
    before_spring = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    nxt = schedule.next_fire("0 9 * * *", BERLIN, before_spring)
    assert nxt is not None and (nxt.hour, nxt.utcoffset().total_seconds()) == (9, 7200)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("0 9 * *", "five fields"),
        ("0 9 * * * *", "five fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 0 0 * *", "day of month: 0 is outside 1-31"),
        ("0 0 * 13 *", "month: 13 is outside 1-12"),
        ("0 9 * * 8", "day of week: 8 is outside 0-7"),
        ("0 9 * * 5-1", "runs backwards"),
        ("0 9 * * mon/0", "step must be at least 1"),
        ("x 9 * * *", "minute: 'x' is not a number"),
        ("0 9 * * monday", "not a number or a name"),
        ("", "five fields"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        schedule.parse(expr)


def test_parse_normalises_spacing_and_case() -> None:
    assert schedule.parse("  0  9 * *  MON-FRI ").text == "0 9 * * mon-fri"
