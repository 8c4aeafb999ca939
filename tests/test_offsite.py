"""The offsite copy against a real S3 server (SeaweedFS on 127.0.0.1, one per session, a bucket per test):
the whole flow through the daemon with the server stopped and started again, kill -9 in the middle of a
multipart upload, objects overwritten or deleted behind draftsync's back, restore from the bucket alone,
wrong credentials, a missing bucket and a key that holds someone else's object."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest

from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.problems import Change, Problems
from tests.conftest import DaemonProc, Env, b3, make_video, wait_for
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, session_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def s3() -> S3Server:
    return session_server()


@dataclass
class Off:
    env: Env
    s3: S3Server
    bucket: str
    prefix: str
    secret_file: Path

    @property
    def client(self) -> Any:
        return self.s3.client()

    def configure(self, **offsite: Any) -> None:
        cfg = {"url": f"s3://{self.bucket}/{self.prefix}", "endpoint_url": self.s3.endpoint, "access_key_id": ACCESS_KEY,
               "secret_access_key_file": str(self.secret_file), "part_size_mib": 5, "concurrency": 2} | offsite  # fmt: skip
        self.env.write_config(offsite=cfg)

    def objects(self) -> list[str]:
        r = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in r.get("Contents") or [])

    def uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads") or [])

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def key_of(self, archived: Path) -> str:
        return self.prefix + "/" + archived.relative_to(self.env.archive).as_posix()


@pytest.fixture
def off(env: Env, s3: S3Server, tmp_path: Path) -> Off:
    secret = tmp_path / "s3-secret"
    secret.write_text(SECRET_KEY + "\n")
    o = Off(env, s3, s3.new_bucket(), "home", secret)
    o.configure()
    return o


def run(env: Env, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start, boto3 loaded once): exit code, stdout, stderr."""
    from draftsync.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(env.config), *args])
    return code, out.getvalue(), err.getvalue()


def scan(env: Env) -> None:
    """Archive what is in the inbox (written a minute ago as far as the settle gate can tell)."""
    for p in env.inbox.rglob("*"):
        t = p.stat().st_mtime - 60
        os.utime(p, (t, t))
    code, out, err = run(env, "scan", "--no-compare")
    assert code == 0 and "0 still being written" in out, out + err


def status(env: Env) -> dict[str, Any]:
    code, out, err = run(env, "status", "--json")
    assert code in (0, 1, 3), err  # 3 when no daemon runs; the JSON is printed either way
    data: dict[str, Any] = json.loads(out)
    return data


def rows(env: Env) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(f"file:{env.state / 'catalog.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        q = "SELECT o.*, v.archive_path FROM offsite o JOIN videos v ON v.hash = o.hash"
        return {r["archive_path"]: dict(r) for r in db.execute(q)}
    finally:
        db.close()


def parts_recorded(env: Env) -> int:
    try:
        db = sqlite3.connect(f"file:{env.state / 'catalog.db'}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM offsite_parts").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


class Proxy:
    """A TCP relay in front of the S3 server: `down()` is a stopped server (connection refused), `up()` a
    started one, on the same address."""

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        if self.listener is not None:
            # shutdown first: close() alone leaves the socket listening while accept() blocks on it.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                a, _ = s.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[Proxy]:
    p = Proxy(s3.endpoint)
    yield p
    p.down()


# --- the whole flow ----------------------------------------------------------------------------------


def test_whole_flow_through_a_stopped_server_then_verify_restore_and_reindex(
    off: Off, proxy: Proxy, daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    env = off.env
    off.configure(endpoint_url=proxy.endpoint)  # the server is stopped: nothing listens there
    d = daemon()
    vids = [make_video(env.inbox / f"VID_{i}.mp4", seed=40 + i) for i in range(2)]
    big = env.inbox / "long.mp4"
    big.write_bytes(os.urandom(11 * 1024 * 1024 + 17))  # a multipart upload (5 MiB parts)
    wait_for(lambda: status(env)["archive"]["videos"] == 3, 60, 0.25, "3 videos archived")
    st = wait_for(lambda: (s := status(env)["offsite"])["last_error"] and s, 60, 0.25, "an offsite error recorded")
    assert st["backlog"] == 3 and st["bytes_left"] > 11 * 1024 * 1024 and st["stored"] == 0
    assert "retried later" in st["last_error"]["message"]
    assert off.objects() == []

    proxy.up()  # the server is back; the next video wakes the uploader, which takes the whole backlog
    vids.append(make_video(env.inbox / "VID_late.mp4", seed=49))
    wait_for(lambda: (s := status(env))["archive"]["videos"] == 4 and s["offsite"]["backlog"] == 0, 90, 0.25,
             "the backlog copied")  # fmt: skip
    assert d.stop() == 0
    assert len(off.objects()) == 8 and off.uploads() == []
    for v in env.archived_videos():
        key = off.key_of(v)
        head = off.client.head_object(Bucket=off.bucket, Key=key)
        assert head["Metadata"]["blake3"] == b3(v) and head["ContentLength"] == v.stat().st_size
        assert off.get(key) == v.read_bytes()
        assert json.loads(off.get(key + ".json"))["hash"] == b3(v)

    code, out, err = run(env, "offsite", "verify", "--deep")
    assert code == 0, out + err
    assert "4 videos compared" in out and "0 problem(s)" in out

    # Restore from the bucket alone into an empty folder, rebuild a fresh catalog from it, verify it.
    restored = tmp_path / "restored"
    code, out, err = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 0 and "4 restored" in out, out + err
    assert sorted(b3(p) for p in restored.rglob("*.mp4")) == sorted(b3(v) for v in env.archived_videos())
    fresh = Env(tmp_path, env.inbox, restored, tmp_path / "state2", tmp_path / "fresh.toml")
    fresh.write_config(offsite={"url": f"s3://{off.bucket}/{off.prefix}", "endpoint_url": off.s3.endpoint,
                                "access_key_id": ACCESS_KEY, "secret_access_key_file": str(off.secret_file)})  # fmt: skip
    assert run(fresh, "reindex")[0] == 0
    code, out, err = run(fresh, "verify")
    assert code == 0 and "4 videos checked" in out, out + err
    code, out, err = run(fresh, "offsite", "verify")  # a new catalog learns the copy is already there
    assert code == 0 and "4 ok" in out, out + err
    assert status(fresh)["offsite"]["backlog"] == 0

    # Overwritten behind draftsync's back, keeping size and metadata: found, and named.
    v = env.archived_videos()[0]
    key = off.key_of(v)
    forged = bytearray(v.read_bytes())
    forged[len(forged) // 2] ^= 0xFF
    off.client.put_object(Bucket=off.bucket, Key=key, Body=bytes(forged), Metadata={"blake3": b3(v)})
    code, out, err = run(env, "offsite", "verify")
    assert code == 1 and f"changed: {key}: its content hashes to" in out, out + err
    code, out, _ = run(env, "offsite", "verify", "--json")
    assert code == 1 and json.loads(out)["changed"][0].startswith(key)
    assert any(p["kind"] == "offsite" and key in p["message"] for p in status(env)["problems"])


def test_offsite_sync_copies_at_once_what_waits_out_a_backoff_and_says_why_when_it_cannot(
    off: Off, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from draftsync.offsite import cli as offsite_cli
    from draftsync.offsite.plan import Outcome, step

    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=75)
    scan(env)
    off.configure(endpoint_url=proxy.endpoint)
    monkeypatch.setattr(offsite_cli, "RETRIES", (0.0,))
    # The video is waiting out a backoff, as after a network error in the daemon's last pass.
    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    try:
        catalog.offsite_retarget(f"{proxy.endpoint}|{off.bucket}|{off.prefix}/")
        catalog.offsite_add_missing()
        ((h, row),) = [(r["hash"], r) for r in catalog.offsite_rows()]
        st = step(row["attempts"], Outcome.TRANSIENT, time.time(), "connection reset")
        catalog.offsite_update(h, state=st.state, attempts=st.attempts, reason=st.reason, next_try=st.next_try)
    finally:
        catalog.close()

    code, out, err = run(env, "offsite", "sync")  # the server is down: the sync says so, the backlog stays
    assert code == 1 and "1 left to copy" in out, out + err
    assert f"draftsync: checking the bucket on s3://{off.bucket} at {proxy.endpoint} failed" in err
    st = status(env)["offsite"]
    assert st["backlog"] == 1 and f"; last error: checking the bucket on s3://{off.bucket}" in st["summary"]

    proxy.up()  # the server is back: the owner's sync does not wait for the backoff to run out
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out and "nothing left to copy" in out, out + err
    assert len(off.objects()) == 2 and "last error" not in status(env)["offsite"]["summary"]


def test_a_backlog_video_whose_archive_disk_is_away_waits_instead_of_failing(off: Off) -> None:
    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=76)
    scan(env)
    off.configure()
    away = env.base / "unplugged"
    env.archive.rename(away)  # the disk is unplugged: its mount point is empty
    code, out, err = run(env, "offsite", "sync")
    assert code == 1 and "1 left to copy" in out, out + err
    ((row),) = rows(env).values()
    assert row["state"] == "pending" and "not available" in row["reason"]
    assert not [p for p in status(env)["problems"] if "offsite" in json.dumps(p)] and off.objects() == []
    assert not env.archive.exists()
    away.rename(env.archive)
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out, out + err
    assert len(off.objects()) == 2


# --- crash in the middle of a multipart upload ------------------------------------------------------


def test_kill_9_during_a_multipart_upload_then_resume(off: Off) -> None:
    env = off.env
    data = os.urandom(21 * 1024 * 1024)  # 5 parts; the kill comes after 2, at least 2.7 s before the end
    (env.inbox / "long.mp4").write_bytes(data)
    scan(env)
    off.configure(bandwidth_limit="4MiB")
    sync = subprocess.Popen([sys.executable, "-m", "draftsync", "--config", str(env.config), "offsite", "sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: parts_recorded(env) >= 2, 15, what="two parts acknowledged")
    finally:
        sync.send_signal(signal.SIGKILL)
        sync.wait(10)
    (row,) = rows(env).values()
    key = f"{off.prefix}/{row['archive_path']}"
    assert row["state"] == "uploading" and row["upload_id"]
    assert off.objects() == []  # nothing partial is visible
    assert [u["UploadId"] for u in off.uploads()] == [row["upload_id"]]

    off.configure(bandwidth_limit=0)
    code, out, err = run(env, "offsite", "sync")
    assert code == 0, out + err
    resumed = [json.loads(x) for x in err.splitlines() if '"resuming an upload"' in x]
    assert resumed and resumed[0]["parts_held"] >= 2 and resumed[0]["upload_id"] == row["upload_id"]
    assert off.objects() == [key, key + ".json"] and off.uploads() == []
    assert off.get(key) == data
    assert rows(env)[row["archive_path"]]["state"] == "stored"
    code, out, _ = run(env, "offsite", "verify", "--deep")
    assert code == 0, out


# --- never overwrite ----------------------------------------------------------------------------------


def test_a_key_holding_other_content_is_a_loud_clash_and_the_same_content_is_adopted(off: Off) -> None:
    env = off.env
    for i in range(2):
        make_video(env.inbox / f"VID_{i}.mp4", seed=60 + i)
    scan(env)
    a, b = env.archived_videos()
    ka, kb = off.key_of(a), off.key_of(b)
    off.client.put_object(Bucket=off.bucket, Key=ka, Body=a.read_bytes(), Metadata={"blake3": b3(a)})
    off.client.put_object(Bucket=off.bucket, Key=kb, Body=b"someone else's file")

    code, out, err = run(env, "offsite", "sync")
    assert code == 1
    assert "1 copied" not in out and "1 failed" in out
    assert f"the bucket already holds a different object at {kb}" in err
    assert off.get(kb) == b"someone else's file"  # never overwritten
    assert off.get(ka) == a.read_bytes() and ka + ".json" in off.objects()
    st = status(env)
    assert st["offsite"]["failed"] == 1 and st["offsite"]["stored"] == 1
    assert [p for p in st["problems"] if p["key"] == f"offsite:clash:{kb}"]

    off.client.delete_object(Bucket=off.bucket, Key=kb)  # the owner moves it away
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out, out + err
    assert off.get(kb) == b.read_bytes()
    assert not [p for p in status(env)["problems"] if p["kind"] == "offsite"]


# --- faults: credentials, bucket ---------------------------------------------------------------------


def test_wrong_credentials_pause_with_one_clear_error_and_resume_when_fixed(off: Off) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from draftsync.archive import Archive
    from draftsync.offsite.service import OffsiteService
    from draftsync.runtime import Runtime
    from draftsync.supervise import Supervisor

    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=70)
    scan(env)
    off.secret_file.write_text("not-the-secret\n")
    code, out, err = run(env, "offsite", "sync")
    assert code == 1 and "refused draftsync's credentials" in err and "Traceback" not in err
    assert "not-the-secret" not in out + err
    code, out, err = run(env, "offsite", "verify")  # a refused HeadBucket: one sentence, each thing said once
    assert code == 1 and "refused draftsync's credentials when checking the bucket (HTTP 403" in err, out + err
    assert "403 403" not in err and "retried" not in err
    assert status(env)["offsite"]["paused"]

    # The daemon's service: paused with one problem however often it tries, resumed when the key works.
    off.configure(schedule="0 0 1 1 *")  # no background loop: the test drives the passes
    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    heard: list[Change] = []
    problems = Problems(catalog)
    problems.subscribe(heard.append)
    rt = Runtime(settings, catalog, Archive(settings.archive.root, settings.archive.layout), problems, Supervisor(),
                 BackgroundScheduler(), threading.Event())  # fmt: skip
    svc = OffsiteService()
    svc.start(rt)
    try:
        for _ in range(3):
            svc.run_pass()
        assert [c.action for c in heard if c.problem.key == "offsite:access"] == []  # already standing since the CLI
        (p,) = [p for p in problems.active() if p.kind == "offsite"]
        assert "credentials" in p.message and "not-the-secret" not in p.message
        assert rows(env)[next(iter(rows(env)))]["attempts"] == 0 and off.objects() == []

        off.secret_file.write_text(SECRET_KEY + "\n")
        svc.run_pass()
        assert [c.action for c in heard if c.problem.key == "offsite:access"] == ["cleared"]
        assert len(off.objects()) == 2 and {r["state"] for r in rows(env).values()} == {"stored"}
    finally:
        svc.stop()
        catalog.close()


def test_a_missing_bucket_is_reported_and_never_created(off: Off) -> None:
    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=80)
    scan(env)
    off.bucket = "no-such-bucket-" + off.bucket[2:]
    off.configure()
    code, _, err = run(env, "offsite", "sync")
    assert code == 1 and f"the bucket '{off.bucket}' does not exist" in err and "never creates buckets" in err
    assert off.bucket not in {b["Name"] for b in off.client.list_buckets()["Buckets"]}
    st = status(env)
    assert st["offsite"]["backlog"] == 1 and "does not exist" in st["offsite"]["paused"]
    code, _, err = run(env, "offsite", "verify")
    assert code == 1 and "does not exist" in err


def test_revoked_credentials_with_nothing_to_copy_are_found_by_the_scrub_and_cleared_when_fixed(off: Off) -> None:
    from draftsync.archive import Archive
    from draftsync.offsite.check import scrub
    from draftsync.offsite.store import S3Store
    from draftsync.offsite.upload import Uploader

    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=85)
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0  # all copied: the uploader has no reason to ask the bucket
    off.secret_file.write_text("revoked\n")
    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    problems = Problems(catalog)
    try:
        assert scrub(settings, catalog, S3Store(settings.offsite), problems=problems) is None
        (p,) = problems.active()
        assert p.key == "offsite:access" and "refused draftsync's credentials" in p.message
        assert "revoked" not in p.message

        # The daemon's next pass probes the standing pause although nothing waits, and lifts it once the key works.
        up = Uploader(settings, catalog, Archive(settings.archive.root, settings.archive.layout), problems=problems)
        assert up.drain().paused is not None and problems.get("offsite:access") is not None
        off.secret_file.write_text(SECRET_KEY + "\n")
        report = up.drain()
        assert report.paused is None and report.left == 0 and problems.active() == []
    finally:
        catalog.close()


# --- the scrub, and restore of a damaged copy --------------------------------------------------------


def test_scrub_heals_vanished_objects_reports_changed_ones_and_restore_refuses_them(off: Off, tmp_path: Path) -> None:
    from draftsync.offsite.check import scrub
    from draftsync.offsite.store import S3Store

    env = off.env
    for i in range(3):
        make_video(env.inbox / f"VID_{i}.mp4", seed=90 + i)
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    gone, changed, _ = env.archived_videos()
    off.client.delete_object(Bucket=off.bucket, Key=off.key_of(gone))
    off.client.put_object(Bucket=off.bucket, Key=off.key_of(changed), Body=b"x" * changed.stat().st_size,
                          Metadata={"blake3": b3(changed)})  # fmt: skip
    off.client.put_object(Bucket=off.bucket, Key=f"{off.prefix}/stray.bin", Body=b"?")

    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    problems = Problems(catalog)
    try:
        report = scrub(settings, catalog, S3Store(settings.offsite), problems=problems)
    finally:
        catalog.close()
    assert report is not None
    assert report.missing == [off.key_of(gone)] and [c.split(":")[0] for c in report.changed] == [off.key_of(changed)]
    assert report.extra == [f"{off.prefix}/stray.bin"]
    assert rows(env)[gone.relative_to(env.archive).as_posix()]["state"] == "pending"  # copied again
    assert [p.key for p in problems.active()] == ["offsite:check"]

    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out, out + err
    assert off.get(off.key_of(gone)) == gone.read_bytes()

    restored = tmp_path / "restored"
    code, out, err = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 1 and "2 restored" in out and "1 failed" in out and f"e.g. {off.prefix}/stray.bin" in out
    assert f"{changed.relative_to(env.archive).as_posix()}: downloaded content hashes to" in err
    assert not (restored / changed.relative_to(env.archive)).exists()
    assert [p for p in restored.rglob("*") if p.name.startswith(".draftsync-")] == []
    # Run again: what is there is kept, the damaged one still refused; a label nothing has is named as such.
    code, out, _ = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 1 and "0 restored" in out and "2 already there" in out
    code, out, err = run(env, "offsite", "restore", "--to", str(tmp_path / "r2"), "--label", "nothing-has-this")
    assert code == 2 and "has the label 'nothing-has-this'; the labels there: camera" in err, out + err
    assert list((tmp_path / "r2").rglob("*.mp4")) == []


def test_a_sidecar_object_changed_behind_draftsyncs_back_is_found_by_verify(off: Off) -> None:
    env = off.env
    for i in range(2):
        make_video(env.inbox / f"VID_{i}.mp4", seed=95 + i)
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    a, b = env.archived_videos()
    ka, kb = off.key_of(a) + ".json", off.key_of(b) + ".json"
    # One replaced by another tool (no draftsync metadata); one forged with the right metadata copied over.
    off.client.put_object(Bucket=off.bucket, Key=ka, Body=b'{"hash": "blake3:00"}')
    meta = off.client.head_object(Bucket=off.bucket, Key=kb)["Metadata"]
    forged = json.loads(off.get(kb)) | {"label": "someone-else", "hash": "blake3:00"}
    off.client.put_object(Bucket=off.bucket, Key=kb, Body=json.dumps(forged).encode(), Metadata=meta)

    code, out, err = run(env, "offsite", "verify")
    assert code == 1 and f"changed: {ka}: it describes no video" in out and "1 problem(s)" in out, out + err
    code, out, err = run(env, "offsite", "verify", "--deep", "--json")
    assert code == 1, out + err
    changed = json.loads(out)["changed"]
    assert [c.split(": ")[0] for c in changed] == sorted([ka, kb])
    assert any(c.startswith(f"{kb}: its content hashes to") for c in changed)
    (p,) = [p for p in status(env)["problems"] if p["key"] == "offsite:check"]
    assert "offsite verify" in p["message"]

    # The owner moves them away as told: verify finds them missing, sync copies them again, all clean.
    off.client.delete_objects(Bucket=off.bucket, Delete={"Objects": [{"Key": ka}, {"Key": kb}]})
    code, out, _ = run(env, "offsite", "verify")
    assert code == 1 and f"missing: {ka}" in out and f"missing: {kb}" in out
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "2 already in the bucket" in out, out + err
    code, out, err = run(env, "offsite", "verify", "--deep")
    assert code == 0 and "0 problem(s)" in out, out + err
    assert json.loads(off.get(kb))["hash"] == b3(b)
    assert not [p for p in status(env)["problems"] if p["kind"] == "offsite"]


def test_restore_never_counts_a_different_file_as_already_there(off: Off, tmp_path: Path) -> None:
    env = off.env
    make_video(env.inbox / "VID_1.mp4", seed=88)
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    (v,) = env.archived_videos()
    rel = v.relative_to(env.archive)
    off.client.delete_object(Bucket=off.bucket, Key=off.key_of(v) + ".json")  # only the object metadata is left
    restored = tmp_path / "restored"
    (restored / rel).parent.mkdir(parents=True)
    (restored / rel).write_bytes(b"a different file under the same name")

    code, out, err = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 1 and "0 already there" in out and "1 failed" in out, out + err
    assert f"{rel.as_posix()}: {restored / rel} exists with other content; it was not replaced" in err
    assert (restored / rel).read_bytes() == b"a different file under the same name"
    (restored / rel).unlink()
    code, out, err = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 0 and "1 restored" in out and b3(restored / rel) == b3(v), out + err
    code, out, err = run(env, "offsite", "restore", "--to", str(restored))
    assert code == 0 and "1 already there" in out, out + err


def test_put_is_conditional_at_the_store(off: Off) -> None:
    from draftsync.config import OffsiteConfig
    from draftsync.offsite.plan import Kind
    from draftsync.offsite.store import S3Store, StoreError

    cfg = OffsiteConfig(url=f"s3://{off.bucket}/p", endpoint_url=off.s3.endpoint, access_key_id=ACCESS_KEY,
                        secret_access_key_file=off.secret_file)  # fmt: skip
    store = S3Store(cfg)
    h = "blake3:" + blake3.blake3(b"one").hexdigest()
    store.put("p/a", b"one", {"blake3": h})
    with pytest.raises(StoreError) as e:
        store.put("p/a", b"two", {"blake3": "other"})
    assert e.value.kind is Kind.PRECONDITION
    head = store.head("p/a")
    assert head is not None and head.blake3 == h and off.get("p/a") == b"one"
    uid = store.create_upload("p/a", {"blake3": "other"})
    etag, _ = store.upload_part("p/a", uid, 1, b"two")
    with pytest.raises(StoreError) as e:
        store.complete("p/a", uid, [(1, etag, None)])
    assert e.value.kind is Kind.PRECONDITION and off.get("p/a") == b"one"
    store.abort("p/a", uid)
    assert store.list_parts("p/a", uid) is None


def test_a_changed_archive_file_is_never_completed_and_abandoned_uploads_are_aborted(off: Off) -> None:
    import time

    from draftsync.archive import Archive
    from draftsync.offsite.upload import Uploader

    env = off.env
    (env.inbox / "long.mp4").write_bytes(os.urandom(12 * 1024 * 1024))
    make_video(env.inbox / "VID_1.mp4", seed=99)
    scan(env)
    long = next(p for p in env.archived_videos() if p.stat().st_size > 1 << 20)
    with long.open("r+b") as f:  # bit rot in the archive, same size
        f.seek(7 * 1024 * 1024)
        f.write(b"\x00rot")
    stray = off.client.create_multipart_upload(Bucket=off.bucket, Key=f"{off.prefix}/left/behind.mp4")["UploadId"]

    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    try:
        up = Uploader(settings, catalog, Archive(settings.archive.root, settings.archive.layout),
                      clock=lambda: time.time() + 2 * 86400)  # fmt: skip
        report = up.drain()
    finally:
        catalog.close()
    assert [p for p, _ in report.failed] == [long.relative_to(env.archive).as_posix()]
    assert "no longer has the content the catalog recorded" in report.failed[0][1]
    assert off.key_of(long) not in off.objects() and len(off.objects()) == 2  # the other video and its sidecar
    assert stray not in [u["UploadId"] for u in off.uploads()] and off.uploads() == []


# --- another target: state kept per target, read-only commands change nothing ---------------------------


def _stop_after_first_part(env: Env, settings: Any) -> None:
    """Leave a multipart upload in progress, as a stopped daemon does: stop once the store acknowledged a
    part (checked before each part, so with 5 parts and 2 buffers it stops before the last)."""
    from draftsync.archive import Archive
    from draftsync.offsite.upload import Uploader

    catalog = Catalog(settings.catalog_path)
    try:
        up = Uploader(settings, catalog, Archive(settings.archive.root, settings.archive.layout),
                      should_stop=lambda: parts_recorded(env) >= 1)  # fmt: skip
        assert up.drain().stopped
    finally:
        catalog.close()


def test_another_target_keeps_each_targets_state_and_read_only_commands_change_nothing(
    off: Off, monkeypatch: pytest.MonkeyPatch
) -> None:
    from draftsync.offsite import cli as offsite_cli

    env = off.env
    monkeypatch.setattr(offsite_cli, "RETRIES", ())
    make_video(env.inbox / "VID_1.mp4", seed=81)
    (env.inbox / "long.mp4").write_bytes(os.urandom(11 * 1024 * 1024))
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    before = rows(env)
    assert all(r["state"] == "stored" and r["etag"] for r in before.values())

    # A typo in endpoint_url, as a one-off override: verify and status fail or look, and change nothing.
    monkeypatch.setenv("DRAFTSYNC_OFFSITE__ENDPOINT_URL", "http://127.0.0.1:9")
    code, out, err = run(env, "offsite", "verify")
    assert code == 1 and "nothing was retried" in err and "retried later" not in err and "Traceback" not in err
    assert "the copy moves to" in status(env)["offsite"]["summary"]
    code, out, err = run(env, "offsite", "sync")  # the new target never answered: the state does not move
    assert code == 1 and "nothing copied to" in err and "run `draftsync offsite sync` again once" in err, out + err
    monkeypatch.delenv("DRAFTSYNC_OFFSITE__ENDPOINT_URL")
    assert rows(env) == before

    # Another bucket, read-only: compared with nothing recorded there, nothing changed here.
    other = off.s3.new_bucket()
    monkeypatch.setenv("DRAFTSYNC_OFFSITE__URL", f"s3://{other}/elsewhere")
    code, out, err = run(env, "offsite", "verify")
    assert code == 0 and "2 not copied yet" in out and "nothing was changed" in out, out + err
    monkeypatch.delenv("DRAFTSYNC_OFFSITE__URL")
    assert rows(env) == before

    # A third video's multipart upload is in progress when the copy moves to the other bucket: the upload
    # draftsync started there is aborted (storage services charge for its parts), nothing else is touched.
    (env.inbox / "long2.mp4").write_bytes(os.urandom(21 * 1024 * 1024))
    scan(env)
    settings, _ = load(str(env.config))
    _stop_after_first_part(env, settings)
    (pending,) = [u["UploadId"] for u in off.uploads()]
    monkeypatch.setenv("DRAFTSYNC_OFFSITE__URL", f"s3://{other}/elsewhere")
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "3 copied" in out, out + err
    assert off.uploads() == [] and len(off.objects()) == 4  # the two videos copied before and their sidecars
    assert "counts are for" not in status(env)["offsite"]["summary"]
    monkeypatch.delenv("DRAFTSYNC_OFFSITE__URL")

    # Back to the first bucket: its state is found again (nothing is asked of the store for the two stored
    # videos: their rows, ETags and times are the ones recorded), and the interrupted video starts over.
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied, 0 already in the bucket" in out, out + err
    after = rows(env)
    for rel, row in before.items():
        assert {k: after[rel][k] for k in ("state", "etag", "stored_at")} == {
            k: row[k] for k in ("state", "etag", "stored_at")
        }
    assert pending not in [u["UploadId"] for u in off.uploads()] and len(off.objects()) == 6

    # The recorded ETags survived the round trip: an object forged with the same size and metadata is found.
    v = next(p for p in env.archived_videos() if p.name.endswith(".mp4") and p.stat().st_size < 1 << 20)
    forged = bytearray(v.read_bytes())
    forged[len(forged) // 2] ^= 0xFF
    off.client.put_object(Bucket=off.bucket, Key=off.key_of(v), Body=bytes(forged), Metadata={"blake3": b3(v)})
    code, out, err = run(env, "offsite", "verify")
    assert code == 1 and f"changed: {off.key_of(v)}: its content hashes to" in out, out + err


def test_unfinished_uploads_left_on_an_unreachable_old_target_stand_as_a_problem(
    off: Off, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = off.env
    proxy.up()
    off.configure(endpoint_url=proxy.endpoint)
    (env.inbox / "long.mp4").write_bytes(os.urandom(21 * 1024 * 1024))
    scan(env)
    settings, _ = load(str(env.config))
    _stop_after_first_part(env, settings)
    (pending,) = [u["UploadId"] for u in off.uploads()]
    proxy.down()  # the old target cannot be reached to abort it; the new one (the same server, directly) can
    other = off.s3.new_bucket()
    monkeypatch.setenv("DRAFTSYNC_OFFSITE__URL", f"s3://{other}")
    monkeypatch.setenv("DRAFTSYNC_OFFSITE__ENDPOINT_URL", off.s3.endpoint)
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out, out + err
    (problem,) = [p for p in status(env)["problems"] if p["kind"] == "offsite"]
    assert "1 unfinished multipart upload(s)" in problem["message"] and pending in problem["message"]
    assert f"s3://{off.bucket}/{off.prefix}/ at {proxy.endpoint}" in problem["message"]
    assert [u["UploadId"] for u in off.uploads()] == [pending]  # still there, and still known

    monkeypatch.delenv("DRAFTSYNC_OFFSITE__URL")
    monkeypatch.delenv("DRAFTSYNC_OFFSITE__ENDPOINT_URL")
    proxy.up()  # back to it: the recorded upload resumes and completes
    code, out, err = run(env, "offsite", "sync")
    assert code == 0 and "1 copied" in out, out + err
    assert off.uploads() == [] and len(off.objects()) == 2


# --- abandoned uploads: only draftsync's, at most once a day, with or without work ----------------------


def test_with_an_empty_prefix_only_draftsyncs_own_abandoned_uploads_are_aborted_daily(off: Off) -> None:
    import time

    from draftsync.archive import Archive
    from draftsync.offsite.upload import Uploader

    env = off.env
    off.configure(url=f"s3://{off.bucket}")
    make_video(env.inbox / "VID_1.mp4", seed=83)
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    key = env.archived_videos()[0].relative_to(env.archive).as_posix()
    assert key in off.objects()

    def start(k: str) -> str:
        return str(off.client.create_multipart_upload(Bucket=off.bucket, Key=k)["UploadId"])

    foreign = start("backups/db.tar")  # another tool's upload in the same bucket
    crashed = start(key)  # draftsync's, from a crash between starting it and recording its id
    assert sorted(u["UploadId"] for u in off.uploads()) == sorted([foreign, crashed])
    now = [time.time() + 2 * 86400]
    settings, _ = load(str(env.config))
    catalog = Catalog(settings.catalog_path)
    try:
        up = Uploader(settings, catalog, Archive(settings.archive.root, settings.archive.layout), clock=lambda: now[0])
        report = up.drain()  # nothing to copy: the clean-up runs anyway
        assert report.left == 0 and report.stored == []
        assert sorted(u["UploadId"] for u in off.uploads()) == [foreign]
        again = start(key)
        up.drain()  # the same day: no second look
        assert sorted(u["UploadId"] for u in off.uploads()) == sorted([foreign, again])
        now[0] += 86400
        up.drain()
        assert [u["UploadId"] for u in off.uploads()] == [foreign]
    finally:
        catalog.close()


# --- restore a subset ----------------------------------------------------------------------------------


def test_restore_by_label_or_date_brings_exactly_that_subset_and_reindex_accepts_it(
    off: Off, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from draftsync.offsite.store import S3Store

    env = off.env
    env.config.write_text(env.config.read_text() + '[[labels]]\nlabel = "tiktok"\nname = "*tiktok*"\n')
    made = {
        "old": make_video(env.inbox / "VID_old.mp4", seed=84, creation_time="2023-05-01T10:00:00.000000Z"),
        "tiktok": make_video(env.inbox / "tiktok_b.mp4", seed=85, creation_time="2024-06-01T10:00:00.000000Z"),
        "new": make_video(env.inbox / "VID_new.mp4", seed=86, creation_time="2024-07-02T10:00:00.000000Z"),
    }
    want = {name: b3(p) for name, p in made.items()}
    scan(env)
    assert run(env, "offsite", "sync")[0] == 0
    assert sum(k.endswith(".json") for k in off.objects()) == 3

    got: list[str] = []
    real_get = S3Store.get

    def counting_get(self: S3Store, key: str) -> Any:
        got.append(key)
        return real_get(self, key)

    monkeypatch.setattr(S3Store, "get", counting_get)

    def restored(to: Path) -> set[str]:
        return {b3(p) for p in to.rglob("*.mp4")}

    by_label = tmp_path / "by-label"
    code, out, err = run(env, "offsite", "restore", "--to", str(by_label), "--label", "tiktok")
    assert code == 0 and "1 restored" in out and "2 left out by --label/--since" in out, out + err
    assert restored(by_label) == {want["tiktok"]}
    assert all("/tiktok/" in k for k in got), got  # the other labels' sidecars were never downloaded

    got.clear()
    by_date = tmp_path / "by-date"
    code, out, err = run(env, "offsite", "restore", "--to", str(by_date), "--since", "2024-07-01")
    assert code == 0 and "1 restored" in out and "2 left out" in out, out + err
    assert restored(by_date) == {want["new"]}
    assert not any("/2023/" in k for k in got), got  # a month folder wholly before --since is not read

    fresh = Env(tmp_path, env.inbox, by_date, tmp_path / "state2", tmp_path / "fresh.toml")
    fresh.write_config()
    assert run(fresh, "reindex")[0] == 0
    code, out, err = run(fresh, "verify")
    assert code == 0 and "1 videos checked" in out, out + err
