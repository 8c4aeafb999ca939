"""Every service on in one daemon: the S3 server and the API die and come back (tests/allon.py)."""

# ruff: noqa: F811  (tests take the shared fixtures by name)
from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

# The shared fixtures, for pytest to find in this module:
from tests.allon import AllOn, allon, api_down, api_up, drop, fake, mounts, no_traceback, proxy, receiver, s3  # noqa: F401
from tests.conftest import DaemonProc, wait_for

pytestmark = pytest.mark.slow


# --- 3: the S3 server and the API die and come back ------------------------------------------------------


def test_offsite_and_push_outages_are_reported_nothing_is_duplicated_and_both_resume(
    allon: AllOn, daemon: Callable[..., DaemonProc]
) -> None:
    env = allon.env
    allon.configure()
    allon.give_token()
    d = daemon()
    a = drop(env, "VID_a.mp4", seed=930)
    wait_for(lambda: {a} <= allon.offsite_videos(), 60, 0.2, "the first copy")
    allon.push_now()
    assert allon.drafts() == [a]

    allon.proxy.down()
    api_down(allon.fake)
    later = {drop(env, f"VID_{i}.mp4", seed=940 + i) for i in range(2)}
    wait_for(lambda: later <= allon.archived(), 60, 0.2, "archived while S3 and the API are down")
    # A push window opened now finds the API gone; it keeps the videos queued and says why.
    window = subprocess.Popen([sys.executable, "-m", "draftsync", "--config", str(env.config), "push", "--now"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: "did not answer" in json.dumps(env.status()["push"]) or "did not answer" in json.dumps(
            allon.problems()) or "did not answer" in env.cli("queue").stdout, 60, 0.5, "the push outage shown")  # fmt: skip
        st = wait_for(lambda: (s := env.status())["offsite"]["last_error"] and s, 60, 0.5, "an offsite error")
        # A passing outage is shown, not an unhealthy daemon: restarting it would not help (health.py).
        assert st["offsite"]["backlog"] >= 2 and "retried later" in st["offsite"]["last_error"]["message"]

        # The owner loses patience with the window that waits for the API (Ctrl-C), brings it back, and
        # opens another one: what the first had begun is looked up, never created twice.
        window.send_signal(signal.SIGINT)
        out, _ = window.communicate(timeout=60)
    finally:
        if window.poll() is None:
            window.kill()
            window.wait(10)
    assert window.returncode == 130 and "Traceback" not in out, out
    allon.proxy.up()
    api_up(allon.fake)
    allon.push_now()
    every = {a} | later
    assert sorted(allon.drafts()) == sorted(every)
    # The offsite uploader retries on its own (with back-off); a new video wakes it at once.
    late = drop(env, "VID_late.mp4", seed=950)
    every.add(late)
    wait_for(lambda: every <= allon.offsite_videos(), 120, 0.5, "the offsite backlog copied")
    allon.push_now()
    wait_for(lambda: sorted(allon.drafts()) == sorted(every), 60, 0.5, "every video pushed")
    assert len(allon.drafts()) == len(set(allon.drafts())), "a video pushed twice"
    objs = allon.objects()
    assert len(objs) == 2 * len(every) and len(set(objs)) == len(objs)
    wait_for(lambda: allon.check() == 0, 60, 0.5, "healthy again")
    assert d.stop() == 0
    no_traceback(d)
