"""supervise: loops beat; a silent or ended loop is named as dead; an exception in a pass is survived."""

from __future__ import annotations

import threading

from draftsync.supervise import Supervisor
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
