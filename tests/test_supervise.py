"""supervise: loops beat; a silent or ended loop is named as dead; an exception in a pass is survived."""

from __future__ import annotations

import threading

from draftsync.supervise import BACKOFF_MAX, FAILING_AFTER, Supervisor, backoff
from tests.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_loop_that_stops_beating_is_dead_after_its_allowance() -> None:
    clock = Clock()
    sup = Supervisor(clock)
    settle = sup.register("settle", max_silence=120)
    sup.register("rescan", max_silence=3600)
    clock.t += 100
    settle.beat()
    clock.t += 119
    assert sup.dead() == []
    clock.t += 2
    assert sup.dead() == ["settle: silent for 121 s"]
    settle.beat()
    assert sup.dead() == []


def test_an_exception_in_a_pass_is_logged_and_the_loop_goes_on() -> None:
    sup = Supervisor()
    stop = threading.Event()
    passes: list[int] = []

    def body() -> None:
        passes.append(1)
        if len(passes) == 1:
            raise RuntimeError("one bad file")

    loop = sup.spawn("worker", body, stop, interval=0, max_silence=60)
    wait_for(lambda: len(passes) >= 3, 10, what="the loop to go on after an exception")
    stop.set()
    assert loop.errors == 1 and "one bad file" in loop.last_error
    assert loop.thread is not None
    loop.thread.join(5)


def test_a_loop_whose_thread_ended_is_dead_at_once() -> None:
    sup = Supervisor()
    stop = threading.Event()
    loop = sup.spawn("settle", lambda: None, stop, interval=0, max_silence=1e9)
    stop.set()
    assert loop.thread is not None
    loop.thread.join(5)
    assert sup.dead() == ["settle: thread ended"]


def test_cron_jobs_are_guarded_but_never_declared_dead() -> None:
    clock = Clock()
    sup = Supervisor(clock)
    ran: list[int] = []
    job = sup.job("scrub", lambda: ran.append(1) or 1 / 0)
    job()  # the ZeroDivisionError is logged, not raised into the scheduler
    clock.t += 10**7
    assert ran == [1] and sup.dead() == []


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded; it is set after `passes` waits."""

    def __init__(self, passes: int) -> None:
        super().__init__()
        self.passes = passes
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.passes:
            self.set()
        return self.is_set()


def test_backoff_doubles_after_each_failed_pass_up_to_a_minute() -> None:
    assert [backoff(n) for n in range(5)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert backoff(8) == BACKOFF_MAX and backoff(10**6) == BACKOFF_MAX


def test_a_loop_that_fails_on_every_pass_backs_off_instead_of_spinning() -> None:
    sup = Supervisor()
    stop = RecordingStop(passes=10)
    calls: list[int] = []

    def body() -> None:
        calls.append(1)
        if len(calls) <= 8:
            raise OSError("unreadable thumbnail folder")

    loop = sup.spawn("thumbnails", body, stop, interval=0, max_silence=900)
    assert loop.thread is not None
    loop.thread.join(10)
    assert stop.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 0, 0]
    assert loop.errors == 8 and loop.streak == 0  # one good pass ends the back-off


def test_a_loop_failing_again_and_again_is_named_until_a_pass_succeeds() -> None:
    sup = Supervisor()
    loop = sup.register("notify", max_silence=600)
    outcome: list[BaseException | None] = [OSError("disk gone")]

    def body() -> None:
        if outcome[0] is not None:
            raise outcome[0]

    for _ in range(FAILING_AFTER - 1):
        loop.guard(body)
    assert sup.failing() == {}
    loop.guard(body)
    assert sup.failing() == {"notify": "OSError: disk gone"}
    assert sup.dead() == []  # it still beats: failing, not dead
    outcome[0] = None
    loop.guard(body)
    assert sup.failing() == {}
