"""Supervision: every long-lived loop of the daemon reports a heartbeat, an unexpected exception in one
pass is logged with its traceback and the loop goes on, and `dead()` names the loops that stopped
beating, so the systemd watchdog is fed only while all of them are alive (huey's check_worker_health
habit: a deaf daemon is restarted, not kept alive).

A loop whose every pass fails (a bug, a file it cannot read) would otherwise spin: it waits `backoff()`
after each failed pass, doubling up to a minute, and `failing()` names it so the daemon can say so in
`status` and notifications instead of only in the log.

Time is injected (`clock`, monotonic by default) so tests decide what "too long" means without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from draftsync import log

_log = log.get("draftsync.supervise")

BACKOFF_FIRST = 0.5  # seconds after the first failed pass
BACKOFF_MAX = 60.0
FAILING_AFTER = 3  # consecutive failed passes before a loop is named by `failing()`


@dataclass(frozen=True)
class RunResult:
    """What a scheduled job says of its own run, so its start/success/fail ping follows the run itself
    (not whether some problem's message happened to change while it ran)."""

    ok: bool
    detail: str = ""


def backoff(streak: int) -> float:
    """Seconds to wait before the next pass after `streak` consecutive failed ones (0: none failed)."""
    if streak <= 0:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(streak - 1, 16))


@dataclass
class Loop:
    """One supervised loop: dead when it has not beaten for `max_silence` seconds, or its thread died."""

    name: str
    max_silence: float
    clock: Callable[[], float]
    last_beat: float = 0.0
    errors: int = 0
    streak: int = 0  # consecutive passes that raised; 0 after one that did not
    last_error: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)
    busy: str = ""  # what a long pass is doing, for the reason when it is declared dead

    def beat(self) -> None:
        self.last_beat = self.clock()

    def silent_for(self, now: float | None = None) -> float:
        return (self.clock() if now is None else now) - self.last_beat

    def is_dead(self, now: float | None = None) -> bool:
        if self.thread is not None and not self.thread.is_alive():
            return True
        return self.silent_for(now) > self.max_silence

    def guard(self, body: Callable[[], object]) -> object:
        """One pass of the loop: beats, and logs (never raises) an unexpected exception."""
        self.beat()
        try:
            out = body()
        except Exception as e:
            self.errors += 1
            self.streak += 1
            error = f"{type(e).__name__}: {e}"
            if error != self.last_error or self.streak in (1, FAILING_AFTER) or self.streak % 100 == 0:
                # The same error on every pass is logged with its traceback once, then every 100th time.
                _log.exception("unexpected error in a loop; it goes on", loop=self.name, error=error,
                               failed_passes=self.streak, retry_in=backoff(self.streak))  # fmt: skip
            self.last_error = error
            return None
        else:
            self.streak = 0
            return out
        finally:
            self.beat()


class Supervisor:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._loops: dict[str, Loop] = {}
        self._lock = threading.Lock()

    def register(self, name: str, max_silence: float) -> Loop:
        loop = Loop(name, max_silence, self.clock)
        loop.beat()
        with self._lock:
            self._loops[name] = loop
        return loop

    def unregister(self, name: str) -> None:
        with self._lock:
            self._loops.pop(name, None)

    def beat_current(self) -> None:
        """Beat the loop running on this thread (a worker in the middle of a long copy), if any."""
        me = threading.current_thread()
        for lp in self.loops():
            if lp.thread is me:
                lp.beat()
                return

    def loops(self) -> list[Loop]:
        with self._lock:
            return list(self._loops.values())

    def failing(self) -> dict[str, str]:
        """Loops whose last `FAILING_AFTER` passes or more all raised: name → last error."""
        return {lp.name: lp.last_error for lp in self.loops() if lp.streak >= FAILING_AFTER}

    def dead(self, now: float | None = None) -> list[str]:
        """Names of loops that stopped (thread ended or silent too long), each with why."""
        out = []
        for lp in self.loops():
            if lp.thread is not None and not lp.thread.is_alive():
                out.append(f"{lp.name}: thread ended")
            elif lp.is_dead(now):
                what = f" while {lp.busy}" if lp.busy else ""
                out.append(f"{lp.name}: silent for {lp.silent_for(now):.0f} s{what}")
        return out

    def spawn(
        self,
        name: str,
        body: Callable[[], object],
        stop: threading.Event,
        *,
        interval: float,
        max_silence: float,
    ) -> Loop:
        """Run `body` every `interval` seconds on its own thread until `stop` is set, supervised; after a
        pass that raised, wait at least `backoff(streak)`."""
        loop = self.register(name, max_silence)

        def run() -> None:
            while not stop.is_set():
                loop.guard(body)
                stop.wait(max(interval, backoff(loop.streak)))

        t = threading.Thread(target=run, name=name, daemon=True)
        loop.thread = t
        t.start()
        return loop

    def job(self, name: str, func: Callable[[], object], max_silence: float | None = None) -> Callable[[], object]:
        """Wrap a scheduler job: exceptions are logged with a traceback. An interval job gives
        `max_silence` and is declared dead when it stops running; a cron job (weekly) gives None. The job's
        return value goes back to the scheduler (its listeners see it); a run that raised returns a failed
        `RunResult`, since the scheduler no longer sees the exception."""
        loop = self.register(name, max_silence) if max_silence is not None else Loop(name, float("inf"), self.clock)

        def run() -> object:
            out = loop.guard(func)
            return RunResult(False, loop.last_error) if loop.streak else out

        return run
