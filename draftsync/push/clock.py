"""Time for the push stage: the wall clock to show and persist, the boot clock for intervals.

CLOCK_BOOTTIME keeps counting across suspend and across every process of one boot, so budget windows and
timeouts measured on it survive restarts and ignore wall-clock jumps (NTP stepping a Raspberry Pi's clock
at boot, a manual `date -s`). The boot id tells whether a stored boot-clock reading is comparable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from draftsync.push.machine import Instant


class Clock(Protocol):
    def now(self) -> Instant: ...

    def sleep(self, seconds: float) -> None: ...


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""  # no boot id: stored readings are never compared, only the wall clock is used


def _boot_clock() -> Callable[[], float]:
    if hasattr(time, "CLOCK_BOOTTIME"):
        return lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic


class SystemClock:
    def __init__(self) -> None:
        self.boot = boot_id()
        self._mono = _boot_clock()

    def now(self) -> Instant:
        return Instant(time.time(), self.boot, self._mono())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
