"""Every service on in one daemon: the normal flow, then the archive disk goes away and comes back (tests/allon.py)."""

# ruff: noqa: F811  (tests take the shared fixtures by name)
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# The shared fixtures, for pytest to find in this module:
from tests.allon import AllOn, allon, cpu_seconds, drop, fake, mounts, no_traceback, proxy, receiver, s3  # noqa: F401
from tests.conftest import DaemonProc, wait_for
from tests.test_faults import mount, umount

pytestmark = pytest.mark.slow


# --- 1 + 2: the normal flow, then the archive disk goes away and comes back ------------------------------


def test_every_service_stays_off_a_missing_archive_is_loud_and_resumes_by_itself(
    allon: AllOn, daemon: Callable[..., DaemonProc], tmp_path: Path, mounts: list[Path]
) -> None:
    env = allon.env
    disk, mnt = tmp_path / "usb-disk", tmp_path / "media" / "usb"
    disk.mkdir()
    mnt.mkdir(parents=True)
    if not mount("--bind", str(disk), str(mnt)):
        pytest.skip("cannot bind-mount here (needs root or a mount namespace)")
    mounts.append(mnt)
    env.archive = mnt / "archive"
    allon.configure()
    allon.give_token()
    d = daemon()

    # 1. The normal flow: each video archived, thumbnailed, signed, copied offsite, pushed once.
    first = {drop(env, f"VID_{i}.mp4", seed=900 + i) for i in range(2)}
    wait_for(lambda: first <= allon.archived(), 60, 0.2, "the first videos archived")
    wait_for(lambda: first <= allon.thumbed() and first <= allon.signed(), 60, 0.2, "thumbnails and signatures")
    wait_for(lambda: first <= allon.offsite_videos(), 60, 0.2, "the offsite copies")
    assert "2 sent to the inbox" in allon.push_now()
    assert sorted(allon.drafts()) == sorted(first)
    assert allon.get("/healthz")[0] == 200 and allon.check() == 0
    code, metrics = allon.get("/metrics")
    assert code == 200 and "draftsync_healthy 1.0" in metrics
    assert (env.archive / ".draftsync" / "thumbs").is_dir()

    # 2. The disk goes away while everything runs, and new videos keep arriving.
    # One video is archived but waits for its offsite copy (the store is away) and for its push window.
    allon.proxy.down()
    waiting = drop(env, "VID_ready_before.mp4", seed=910)
    wait_for(lambda: waiting in allon.archived(), 60, 0.2, "a video archived but not pushed yet")
    umount(mnt)
    allon.proxy.up()  # the uploader now finds its backlog's files gone with the disk
    during = {drop(env, f"VID_during_{i}.mp4", seed=920 + i) for i in range(2)}
    wait_for(lambda: "archive_missing" in allon.problems(), 30, 0.2, "the archive_missing problem")
    wait_for(lambda: "archive missing" in allon.messages(), 30, 0.2, "a notification of the missing archive")
    code, body = allon.get("/healthz")
    assert code == 503 and "archive" in body, body
    assert allon.check() == 1
    # The status page and its thumbnails are read while the disk is away (a missing thumbnail may be remade).
    assert allon.get("/")[0] == 200
    for h in first | {waiting}:
        assert allon.get(f"/thumbs/{h.removeprefix('blake3:')}")[0] == 404
    # A push window while the archive is away waits for it: the video is not failed for want of its disk.
    assert "archive is not available" in allon.push_now()
    assert not [k for k in allon.problems() if k.startswith("push")]
    # No loop spins while paused: a bounded look at the daemon's CPU time over a few seconds of its life.
    before, t0 = cpu_seconds(d.proc.pid), os.times().elapsed
    wait_for(lambda: os.times().elapsed - t0 >= 4, 30, 0.2, "a few seconds to pass")
    used, elapsed = cpu_seconds(d.proc.pid) - before, os.times().elapsed - t0
    assert used < 0.5 * elapsed, f"the paused daemon used {used:.2f} s of CPU in {elapsed:.2f} s"
    assert list(mnt.rglob("*")) == [], "written under the bare mount point"
    assert len(d.logged("archive missing")) == 1
    assert waiting not in allon.offsite_videos()
    assert not during & allon.archived()

    # The disk is back: everything resumes by itself.
    assert mount("--bind", str(disk), str(mnt))
    every = first | during | {waiting}
    wait_for(lambda: every <= allon.archived(), 60, 0.2, "the waiting videos archived")
    wait_for(lambda: "archive_missing" not in allon.problems(), 30, 0.2, "the problem to clear")
    wait_for(lambda: every <= allon.thumbed() and every <= allon.signed(), 60, 0.2, "thumbnails and signatures")
    wait_for(lambda: every <= allon.offsite_videos(), 60, 0.2, "the offsite copies")
    allon.push_now()
    assert sorted(allon.drafts()) == sorted(every), "each video pushed exactly once"
    wait_for(lambda: allon.check() == 0, 30, 0.5, "status --check healthy again")
    assert allon.problems() == {}, "a problem outlived the outage"
    assert allon.get("/healthz")[0] == 200
    assert {allon.get(f"/thumbs/{h.removeprefix('blake3:')}")[0] for h in every} == {200}
    wait_for(lambda: "archive missing resolved" in allon.messages(), 30, 0.2, "the resolved notification")
    titles = [m.get("title", "") for m in allon.receiver.messages()]
    assert sum(t.endswith("archive missing") for t in titles) == 1, titles  # told once, not at every retry
    assert d.stop() == 0
    no_traceback(d)
