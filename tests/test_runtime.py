"""runtime: scheduler jobs run under supervision, and a run that comes late is made, not dropped."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from draftsync.runtime import Runtime
from draftsync.supervise import Supervisor
from tests.conftest import wait_for


def runtime(scheduler: BackgroundScheduler) -> Runtime:
    none: Any = None  # the jobs here need neither settings nor a catalog
    return Runtime(none, none, none, none, Supervisor(), scheduler, threading.Event())


def test_a_one_off_job_that_comes_late_still_runs() -> None:
    """A job due before a slow start-up (or a follow-up window after the clock jumped) is late by more than
    APScheduler's default second of grace; it must run all the same, not be dropped with a log line."""
    sched = BackgroundScheduler(timezone="UTC")
    rt = runtime(sched)
    ran: list[str] = []
    late = datetime.now().astimezone() - timedelta(minutes=5)
    rt.add_job("rescan-now", lambda: ran.append("rescan-now"), None, next_run_time=late)
    sched.start()
    try:
        # ...and for the scheduler to have retired the one-off job, so that shutting down does not race it
        wait_for(lambda: ran and sched.get_job("rescan-now") is None, 20, what="the late job to run")
    finally:
        sched.shutdown()
    assert ran == ["rescan-now"]


def test_a_job_may_still_ask_not_to_run_late() -> None:
    sched = BackgroundScheduler(timezone="UTC")
    rt = runtime(sched)
    rt.add_job("scrub", lambda: None, None, next_run_time=datetime.now().astimezone(), misfire_grace_time=3600)
    job = sched.get_job("scrub")
    assert job.misfire_grace_time == 3600
    rt.add_job("digest-missed", lambda: None, None, next_run_time=datetime.now().astimezone())
    assert sched.get_job("digest-missed").misfire_grace_time is None
