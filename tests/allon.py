"""What the all-services-on tests share (tests/test_all_on_*.py): every service on at once, under faults: one real daemon with ingest, thumbnails, the signer, the offsite
copy (a real SeaweedFS behind a relay that can be stopped), pushing (the fake TikTok API), the status page
and notifications (a real receiver), all on 127.0.0.1.

The rule under test: no failure is silent (it heals by itself or it is loud in `status`, `/healthz`,
`status --check` and a notification), and nothing is ever written under a missing archive's bare mount
point, by any service. Everything polls with bounded deadlines; nothing asserts wall-clock gaps."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from draftsync.config import load
from tests.conftest import DaemonProc, Env, b3, make_video
from tests.fakeapi import FakeServer, tiktok_config
from tests.receiver import Receiver, start_receiver
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, session_server
from tests.test_faults import mounts  # noqa: F401 (the fixture, for the all-on tests)
from tests.test_offsite import Proxy
from tests.test_push import give_token

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
