"""Every service on in one daemon: SIGHUP with a changed config, then SIGTERM mid-everything (tests/allon.py)."""

# ruff: noqa: F811  (tests take the shared fixtures by name)
from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

# The shared fixtures, for pytest to find in this module:
from tests.allon import AllOn, allon, drop, fake, mounts, no_traceback, proxy, receiver, s3  # noqa: F401
from tests.conftest import DaemonProc, b3, wait_for

pytestmark = pytest.mark.slow


# --- 4: SIGHUP with a changed config, then SIGTERM in the middle of everything ---------------------------


def test_sighup_then_sigterm_mid_everything_exit_cleanly_and_a_restart_continues(
    allon: AllOn, daemon: Callable[..., DaemonProc]
) -> None:
    env = allon.env
    allon.configure()
    allon.give_token()
    d = daemon()
    first = drop(env, "VID_first.mp4", seed=960)
    wait_for(lambda: first in allon.archived(), 60, 0.2, "the first video")
    allon.configure(log={"level": "debug"}, notify={"max_per_hour": 500})
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.logged("config reloaded"), 30, 0.2, "the reload")
    (reload,) = d.logged("config reloaded")
    assert "log.level" in reload["applied"] and "notify.max_per_hour" in reload["restart_needed"]

    # A burst: a big file mid-copy, small ones settling, thumbnails and uploads under way.
    big = env.inbox / "VID_big.mp4"
    big.write_bytes(os.urandom(16 * 1024 * 1024))  # a multipart upload offsite (5 MiB parts)
    burst = {drop(env, f"VID_b{i}.mp4", seed=970 + i) for i in range(3)}
    wait_for(lambda: d.logged("archived") or len(allon.archived()) > 1, 60, 0.1, "the burst under way")
    assert d.stop() == 0
    assert env.temps() == [] and not list(env.archive.rglob("*.tmp")), "partial files left in the archive"
    no_traceback(d)

    d2 = daemon()
    videos = {first} | burst  # the big file is bytes, not a picture: archived and copied, never thumbnailed
    every = videos | {b3(big)}
    wait_for(lambda: every <= allon.archived(), 90, 0.2, "the burst archived after the restart")
    wait_for(lambda: videos <= allon.thumbed() and every <= allon.offsite_videos(), 90, 0.2, "the rest done")
    allon.push_now()
    assert sorted(allon.drafts()) == sorted(videos)
    uploads = allon.s3.client().list_multipart_uploads(Bucket=allon.bucket).get("Uploads") or []
    assert uploads == [] and len(allon.objects()) == 2 * len(every), "an upload left behind or doubled"
    assert d2.stop() == 0
    assert env.cli("verify").returncode == 0
    no_traceback(d2)
