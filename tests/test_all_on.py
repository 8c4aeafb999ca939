"""Every service on at once, under faults: one real daemon with ingest, thumbnails, the signer, the offsite
copy (a real SeaweedFS behind a relay that can be stopped), pushing (the fake TikTok API), the status page
and notifications (a real receiver), all on 127.0.0.1.

The rule under test: no failure is silent (it heals by itself or it is loud in `status`, `/healthz`,
`status --check` and a notification), and nothing is ever written under a missing archive's bare mount
point, by any service. Everything polls with bounded deadlines; nothing asserts wall-clock gaps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from draftsync.config import load
from tests.conftest import DaemonProc, Env, b3, make_video, wait_for
from tests.fakeapi import FakeServer, tiktok_config
from tests.receiver import Receiver, start_receiver
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, session_server
from tests.test_faults import mount, umount
from tests.test_offsite import Proxy
from tests.test_push import give_token

pytestmark = pytest.mark.slow

PREFIX = "home"


# --- the servers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3() -> S3Server:
    return session_server()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[Proxy]:
    p = Proxy(s3.endpoint)
    p.up()
    yield p
    p.down()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    f = FakeServer()
    f.state.processing_polls = 0  # a draft is in the inbox at the first status call
    yield f
    with contextlib.suppress(OSError):
        f.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    points: list[Path] = []
    yield points
    for p in reversed(points):
        umount(p)


def api_down(f: FakeServer) -> None:
    """The fake API stops: its port refuses connections."""
    f.httpd.shutdown()
    f.httpd.server_close()


def api_up(f: FakeServer) -> None:
    """The fake API starts again on the same port, with the same records (what it already accepted)."""
    handler = f.httpd.RequestHandlerClass
    f.httpd = ThreadingHTTPServer(("127.0.0.1", f.port), handler)
    f.httpd.daemon_threads = True
    f.thread = threading.Thread(target=f.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    f.thread.start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the daemon with everything on ------------------------------------------------------------------------


class AllOn:
    """One configuration with every service on, and the ways to look at what each of them did."""

    def __init__(self, env: Env, s3: S3Server, proxy: Proxy, fake: FakeServer, receiver: Receiver) -> None:
        self.env, self.s3, self.proxy, self.fake, self.receiver = env, s3, proxy, fake, receiver
        self.bucket = s3.new_bucket()
        self.port = free_port()
        self.secret = env.base / "s3-secret"
        self.secret.write_text(SECRET_KEY + "\n")

    def configure(self, **over: dict[str, Any]) -> None:
        env = self.env
        sections: dict[str, dict[str, Any]] = {
            # The scrub every minute: if it runs during an outage it must keep off the bare mount point too.
            "archive": {"root": str(env.archive), "scrub_schedule": "* * * * *"},
            "offsite": {
                "url": f"s3://{self.bucket}/{PREFIX}",
                "endpoint_url": self.proxy.endpoint,
                "access_key_id": ACCESS_KEY,
                "secret_access_key_file": str(self.secret),
                "part_size_mib": 5,
                "concurrency": 2,
            },  # fmt: skip
            # A window at 09:00 only: the test opens windows itself with `push --now`.
            "push": {"enabled": True, "backend": "tiktok", "only_new": False, "schedule": "0 9 * * *"},
            "tiktok": tiktok_config(self.fake.base, str(env.state / "tiktok-token.json")),
            "notify": {"urls": [self.receiver.url()], "group_seconds": 0, "max_per_hour": 1000},
            "web": {"listen": str(self.port)},
        }
        for k, v in over.items():
            sections.setdefault(k, {}).update(v)
        env.write_config(**sections)

    def give_token(self) -> None:
        give_token(load(str(self.env.config))[0], self.fake)

    # what each service did

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.env.state / 'catalog.db'}?mode=ro", uri=True, timeout=10)

    def q(self, sql: str) -> list[Any]:
        with contextlib.closing(self.db()) as db:
            return db.execute(sql).fetchall()

    def problems(self) -> dict[str, str]:
        return dict(self.q("SELECT key, message FROM problems"))

    def archived(self) -> set[str]:
        return {h for (h,) in self.q("SELECT hash FROM videos")}

    def thumbed(self) -> set[str]:
        return {h for (h,) in self.q("SELECT hash FROM thumbs WHERE error IS NULL AND rel IS NOT NULL")}

    def signed(self) -> set[str]:
        return {h for (h,) in self.q("SELECT hash FROM signatures WHERE error IS NULL")}

    def objects(self) -> list[str]:
        r = self.s3.client().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in r.get("Contents") or [])

    def offsite_videos(self) -> set[str]:
        """Hashes of the archived videos whose copy is in the bucket, by the object's own metadata."""
        c = self.s3.client()
        out = set()
        for k in self.objects():
            if not k.endswith(".json"):
                out.add(c.head_object(Bucket=self.bucket, Key=k)["Metadata"]["blake3"])
        return out

    def drafts(self) -> list[str]:
        """The content hash of every draft the API completed, one entry per draft."""
        return [t.digest for t in self.fake.state.completed_drafts()]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def push_now(self) -> str:
        r = self.env.cli("push", "--now")
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def check(self) -> int:
        return self.env.cli("status", "--check").returncode

    def messages(self) -> str:
        return json.dumps(self.receiver.messages()).lower()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (the kernel's own accounting)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def no_traceback(d: DaemonProc) -> None:
    text = d.text()
    assert "Traceback" not in text and '"exception"' not in text, text[-4000:]


def drop(env: Env, name: str, seed: int) -> str:
    """A phone syncs a video into the inbox; returns its content hash."""
    # Portrait and 3 s long: what the push selection takes (a smaller picture is skipped, not pushed).
    return b3(make_video(env.inbox / name, seconds=3, size=(360, 640), seed=seed))


@pytest.fixture
def allon(env: Env, s3: S3Server, proxy: Proxy, fake: FakeServer, receiver: Receiver) -> AllOn:
    return AllOn(env, s3, proxy, fake, receiver)


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
