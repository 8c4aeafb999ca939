"""Schedules: cron expressions as crontab(5) means them, checked at config load and turned into
APScheduler triggers only when a job is added.

APScheduler 3.x numbers weekdays from Monday = 0, so a crontab line handed over as is runs a day late
(`0 4 * * 0` on Monday). Here numeric weekdays are translated to names (0 and 7 = Sunday), and when both
day-of-month and day-of-week are restricted the job runs when either matches, as cron does.
Validation is pure Python so that loading a config never imports the scheduler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
FIELDS = (
    ("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES), ("day of week", 0, 7, DAY_NAMES),
)  # fmt: skip
_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


@dataclass(frozen=True)
class Cron:
    """A validated crontab(5) expression, split into its five fields."""

    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str  # crontab numbering (0 and 7 = Sunday)

    @property
    def text(self) -> str:
        return " ".join((self.minute, self.hour, self.day, self.month, self.day_of_week))


def _value(token: str, lo: int, hi: int, names: list[str] | None, field: str) -> int:
    if token.isdigit():
        v = int(token)
    elif names and token[:3] in names and len(token) == 3:
        v = names.index(token) + (1 if names is MONTH_NAMES else 0)
    else:
        raise ValueError(f"{field}: {token!r} is not a number" + (" or a name" if names else ""))
    if not lo <= v <= hi:
        raise ValueError(f"{field}: {v} is outside {lo}-{hi}")
    return v


def _expand(spec: str, lo: int, hi: int, names: list[str] | None, field: str) -> set[int]:
    """The set of values a cron field selects (for checking and for weekday translation)."""
    out: set[int] = set()
    for item in spec.split(","):
        m = _ITEM.match(item)
        if not m:
            raise ValueError(f"{field}: {item!r} is not a cron field (use *, N, A-B, */N or lists of them)")
        step = int(m.group("step")) if m.group("step") else 1
        if step < 1:
            raise ValueError(f"{field}: a step must be at least 1")
        rng = m.group("range")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            x, y = rng.split("-", 1)
            a, b = _value(x, lo, hi, names, field), _value(y, lo, hi, names, field)
            if a > b:
                raise ValueError(f"{field}: the range {rng!r} runs backwards")
        else:
            a = _value(rng, lo, hi, names, field)
            b = hi if m.group("step") else a
        out.update(range(a, b + 1, step))
    return out


def parse(expr: str) -> Cron:
    """Check a crontab(5) expression (five fields or an @macro); ValueError says what is wrong."""
    text = " ".join(str(expr).lower().split())
    text = MACROS.get(text, text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise ValueError(
            f"{expr!r} is not a cron expression: it needs five fields (minute hour day-of-month month "
            "day-of-week), e.g. '0 9 * * 1-5' for 09:00 on weekdays"
        )
    for part, (field, lo, hi, names) in zip(parts, FIELDS, strict=True):
        _expand(part, lo, hi, names, field)
    return Cron(*parts)


def _weekday_names(spec: str) -> str:
    """crontab weekdays (0/7 = Sunday) as names APScheduler cannot misread."""
    if spec == "*":
        return "*"
    days = {d % 7 for d in _expand(spec, 0, 7, DAY_NAMES, "day of week")}
    # APScheduler's own order is mon..sun; list the names in that order.
    return ",".join(DAY_NAMES[d] for d in (1, 2, 3, 4, 5, 6, 0) if d in days)


def trigger(expr: str | Cron, tz: tzinfo) -> Any:
    """An APScheduler trigger that fires exactly when crontab(5) would."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    c = expr if isinstance(expr, Cron) else parse(expr)
    dow = _weekday_names(c.day_of_week)

    def make(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=c.minute, hour=c.hour, day=day, month=c.month, day_of_week=day_of_week,
                           timezone=tz)  # fmt: skip

    if c.day != "*" and c.day_of_week != "*":
        # cron(5): "if both fields are restricted, the command runs when either field matches".
        return OrTrigger([make(c.day, "*"), make("*", dow)])
    return make(c.day, dow)


def next_fire(expr: str | Cron, tz: tzinfo, now: datetime) -> datetime | None:
    """When the schedule next fires after `now` (an aware datetime), in `tz`."""
    t = trigger(expr, tz)
    nxt = t.get_next_fire_time(None, now)
    return nxt.astimezone(tz) if nxt is not None else None
