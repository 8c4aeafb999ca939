"""web: the read-only status page, /healthz and /metrics: where it listens and who may read it (tables),
keyset pagination, thumbnails served safely, the push queue with each item's turn; then the real daemon
serving them over HTTP, a taken port told as a problem, and /healthz when the archive disk goes away."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from draftsync.catalog import Catalog, VideoRecord
from draftsync.config import is_loopback, load, parse_listen
from draftsync.lock import StateLock
from draftsync.problems import Problems
from draftsync.thumbs import thumb_rel
from draftsync.web import App, page_number, push_queue
from tests.conftest import DaemonProc, Env, make_video, wait_for
from tests.receiver import Receiver, start_receiver

LOCAL = {"Host": "127.0.0.1:8080"}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("8080", ("127.0.0.1", 8080)),  # a bare port is loopback
        ("127.0.0.1:9", ("127.0.0.1", 9)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),  # only when written out
        ("::1:8080", ValueError),
        ("host:99999", ValueError),
        (":8080", ValueError),
        ("http://x:1", ValueError),
    ],
)
def test_listen_addresses(text: str, want: Any) -> None:
    if want is ValueError:
        with pytest.raises(ValueError):
            parse_listen(text)
    else:
        assert parse_listen(text) == want


@pytest.mark.parametrize(
    ("host", "loop"), [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
                       ("0.0.0.0", False), ("192.0.2.7", False), ("::", False), ("nas.lan", False)],
)  # fmt: skip
def test_what_counts_as_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_listening_beyond_loopback_needs_a_token_file(env: Env, tmp_path: Path) -> None:
    from draftsync.cli import _to_toml
    from draftsync.errors import ConfigError

    env.write_config(web={"listen": "0.0.0.0:8080"})
    with pytest.raises(ConfigError, match="token_file"):
        load(str(env.config))
    tok = tmp_path / "token"
    tok.write_text("s3cret-token-value\n")
    env.write_config(web={"listen": "0.0.0.0:8080", "token_file": str(tok)})
    s, _ = load(str(env.config))
    assert s.web.read_token() == "s3cret-token-value"
    assert "s3cret-token-value" not in _to_toml(s.model_dump(mode="json"))  # what `config show` prints
    env.write_config(web={"listen": 8080})
    s, _ = load(str(env.config))
    assert s.web.listen == "8080" and parse_listen(s.web.listen) == ("127.0.0.1", 8080)
    env.write_config()
    assert load(str(env.config))[0].web.listen == ""  # off by default


# --- the app, in process ---------------------------------------------------------------------------------


def _video(i: int, at: float) -> VideoRecord:
    h = f"blake3:{i:064x}"
    return VideoRecord(h, 1000 + i, f"2026/11/camera/clip_{i:05d}.mp4", "2026-11-01T10:00:00+00:00", "mtime",
                       "camera", {"duration": 12.4, "width": 1080, "height": 1920}, None, at, at)  # fmt: skip


@pytest.fixture
def filled(env: Env) -> Iterator[tuple[Any, Catalog]]:
    env.write_config(web={"listen": "8080", "page_size": 50}, push={"enabled": True, "backend": "dry-run"})
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    with cat.tx():
        for i in range(130):
            cat.add_video(_video(i, 1_000_000.0 + i))
    yield s, cat
    cat.close()


def _app(s: Any, token: str = "", clock: Callable[[], float] = time.time) -> App:
    return App(s, Catalog.open_readonly(s.catalog_path), token, clock=clock)


def test_pages_walk_the_archive_newest_first_without_overlap(filled: tuple[Any, Catalog]) -> None:
    s, _ = filled
    app = _app(s)
    seen: list[str] = []
    target = "/"
    for want in (50, 50, 30):
        r = app.handle("GET", target, LOCAL)
        assert r.status == 200
        html = r.body.decode()
        names = [x.split(".mp4")[0] for x in html.split('class="name" title="2026/11/camera/')[1:]]
        assert len(names) == want
        seen += names
        nxt = html.split('href="/?before=')[1].split('"')[0] if 'rel="next"' in html else None
        target = f"/?before={nxt}" if nxt else ""
    assert target == ""  # the last page has no "older" link
    assert seen == [f"clip_{i:05d}" for i in range(129, -1, -1)]
    assert app.handle("GET", "/?before=garbage", LOCAL).status == 200  # a bad cursor is the first page


def test_the_page_cannot_write(filled: tuple[Any, Catalog]) -> None:
    s, _ = filled
    app = _app(s)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        app.catalog.set_meta("x", "y")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert app.handle(method, "/", LOCAL).status == 405


TOKEN = "t0ken-of-the-owner"


@pytest.mark.parametrize(
    ("token", "target", "headers", "status"),
    [
        ("", "/", LOCAL, 200),
        ("", "/", {"Host": "localhost:8080"}, 200),
        ("", "/", {"Host": "[::1]:8080"}, 200),
        ("", "/healthz", {"Host": "attacker.example:8080"}, 403),  # DNS rebinding
        ("", "/", {}, 403),
        (TOKEN, "/", {"Host": "nas.lan:8080"}, 401),
        (TOKEN, "/metrics", {"Host": "nas.lan:8080", "Authorization": "Bearer wrong"}, 401),
        (TOKEN, "/metrics", {"Host": "nas.lan:8080", "Authorization": f"Bearer {TOKEN}"}, 200),
        (TOKEN, "/", {"Host": "nas.lan", "Cookie": f"a=b; draftsync_token={TOKEN}"}, 200),
        (TOKEN, f"/?token={TOKEN}", {"Host": "nas.lan"}, 303),
        (TOKEN, "/?token=nope", {"Host": "nas.lan"}, 401),
    ],
)
def test_who_may_read(filled: tuple[Any, Catalog], token: str, target: str, headers: dict[str, str],
                      status: int) -> None:  # fmt: skip
    s, _ = filled
    assert _app(s, token).handle("GET", target, headers).status == status


def test_a_token_in_the_address_becomes_a_cookie_and_leaves_the_address(filled: tuple[Any, Catalog]) -> None:
    s, _ = filled
    r = _app(s, TOKEN).handle("GET", f"/dupes?page=2&token={TOKEN}", {"Host": "nas.lan"})
    assert r.status == 303 and r.headers["Location"] == "/dupes?page=2"
    assert r.headers["Set-Cookie"].startswith(f"draftsync_token={TOKEN};") and "HttpOnly" in r.headers["Set-Cookie"]


def test_thumbnails_are_served_only_from_the_thumbnail_folder(filled: tuple[Any, Catalog], env: Env) -> None:
    s, cat = filled
    h = _video(7, 0).hash
    rel = thumb_rel(h)
    (env.archive / rel).parent.mkdir(parents=True)
    (env.archive / rel).write_bytes(b"\xff\xd8\xfffake jpeg\xff\xd9")
    cat.set_thumb(h, rel, None)
    app = _app(s)
    r = app.handle("GET", f"/thumbs/{h[7:]}", LOCAL)
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and r.body == b"\xff\xd8\xfffake jpeg\xff\xd9"
    assert app.handle("GET", "/thumbs/../../etc/passwd", LOCAL).status == 404
    assert app.handle("GET", f"/thumbs/{_video(8, 0).hash[7:]}", LOCAL).status == 404  # none made
    h9 = _video(9, 0).hash
    (env.archive / thumb_rel(h9)).parent.mkdir(parents=True, exist_ok=True)
    (env.archive / thumb_rel(h9)).symlink_to("/etc/passwd")
    cat.set_thumb(h9, thumb_rel(h9), None)
    assert app.handle("GET", f"/thumbs/{h9[7:]}", LOCAL).status == 404  # never follows a link out
    cat.set_thumb(h9, "../../etc/passwd", None)  # a hand-edited catalog
    assert app.handle("GET", f"/thumbs/{h9[7:]}", LOCAL).status == 404


@pytest.mark.parametrize(
    ("text", "pages", "want"),
    [("1", 3, 1), ("2", 3, 2), ("", 3, 1), ("0", 3, 1), ("-1", 3, 1), ("abc", 3, 1), ("2.5", 3, 1), ("²", 3, 1),
     ("99", 3, 3), ("9" * 5000, 3, 3), (" 2 ", 3, 2), ("7", 1, 1)],
)  # fmt: skip
def test_page_numbers_as_typed_or_tampered_with(text: str, pages: int, want: int) -> None:
    assert page_number(text, pages) == want


ODD = ["/dupes?page=" + "9" * 5000, "/dupes?page=-3", "/dupes?page=%C2%B2", "/?before=" + "9" * 5000 + "_" + "a" * 64,
       "/?before=1e999_" + "a" * 64, "/?before=%ZZ&x=%00&before=", "/?" + "&".join(f"k{i}=v" for i in range(2000)),
       "/thumbs/" + "A" * 64, "/thumbs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/thumbs/", "//etc/passwd",
       "/static/../web.py", "/healthz/", "/%00", "/metrics?name[]=x"]  # fmt: skip


@pytest.mark.parametrize("target", ODD, ids=lambda t: t[:40])
def test_odd_addresses_get_an_answer_never_a_server_error(filled: tuple[Any, Catalog], target: str,
                                                          capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    r = _app(filled[0]).handle("GET", target, LOCAL)
    assert r.status in (200, 404, 503), (r.status, r.body[:200])
    assert "web request failed" not in capfd.readouterr().err


def test_a_damaged_thumbnail_is_not_served_and_the_thumbnailer_is_asked_to_make_it_again(
    filled: tuple[Any, Catalog], env: Env
) -> None:
    s, cat = filled
    h = _video(7, 0).hash
    rel = thumb_rel(h)
    (env.archive / rel).parent.mkdir(parents=True)
    (env.archive / rel).write_bytes(b"\xff\xd8\xff\xe0 cut short by a full disk")
    cat.set_thumb(h, rel, None)
    asked: list[str] = []
    app = App(s, Catalog.open_readonly(s.catalog_path), remake=asked.append)
    r = app.handle("GET", f"/thumbs/{h[7:]}", LOCAL)
    assert r.status == 404 and b"damaged" in r.body
    assert asked == [h]
    (env.archive / rel).write_bytes(b"\xff\xd8\xff\xe0 made again \xff\xd9")  # what the thumbnailer does
    assert app.handle("GET", f"/thumbs/{h[7:]}", LOCAL).status == 200 and asked == [h]


def _same_clip(cat: Catalog, a: str, b: str, similarity: float) -> None:
    """Two videos the signer found to be the same clip: one group, b's best match is a."""
    cat.join_group(a, a, None, None, None)
    cat.join_group(b, a, a, similarity, None)


def test_the_page_shows_problems_folders_dupes_queue_and_errors(filled: tuple[Any, Catalog], env: Env) -> None:
    s, cat = filled
    Problems(cat).report("root_missing:/srv/a", "root_missing", "the watched folder /srv/a is missing",
                         severity="warning")  # fmt: skip
    cat.update_root(str(env.inbox), mode="inotify", health="degraded", detail="2 unreadable sub-folders")
    _same_clip(cat, _video(1, 0).hash, _video(2, 0).hash, 0.93)
    from draftsync.push.clock import SystemClock
    from draftsync.push.machine import Item, State
    from draftsync.push.queue import save

    save(cat, Item(_video(3, 0).hash, State.QUEUED, SystemClock().now()))
    cat.log_event("error", "ingest_failed", "cannot read VID_1.mp4: permission denied", "/srv/a/VID_1.mp4")
    html = _app(s).handle("GET", "/", LOCAL).body.decode()
    assert "daemon not running" in html and "/srv/a is missing" in html
    assert str(env.inbox) in html and "2 unreadable sub-folders" in html
    sheet = html.split('id="dupes"')[1].split("</section>")[0]
    assert "clip_00001.mp4" in sheet and "clip_00002.mp4" in sheet and "0.93" in sheet
    queue = html.split('id="queue"')[1].split("</section>")[0]
    assert "clip_00003.mp4" in queue and "queued" in queue and "next push window" in queue
    assert "permission denied" in html.split('id="errors"')[1]
    assert "<script" not in html


def test_near_duplicate_groups_are_refreshed_in_the_background(filled: tuple[Any, Catalog]) -> None:
    s, cat = filled
    now = [1000.0]
    app = _app(s, clock=lambda: now[0])
    _same_clip(cat, _video(1, 0).hash, _video(2, 0).hash, 0.93)
    assert len(app.groups()) == 1
    _same_clip(cat, _video(5, 0).hash, _video(6, 0).hash, 0.88)
    assert len(app.groups()) == 1  # cached
    now[0] += 61
    assert len(app.groups()) == 1  # stale, served while the new ones are computed
    wait_for(lambda: len(app.groups()) == 2, 20, what="the refreshed groups")
    html = app.handle("GET", "/dupes", LOCAL).body.decode()
    assert html.count('class="sheet"') == 2 and "clip_00005.mp4" in html


def test_each_queued_item_says_when_its_turn_comes(filled: tuple[Any, Catalog]) -> None:
    from datetime import datetime

    from draftsync.push.clock import SystemClock
    from draftsync.push.machine import Item, State
    from draftsync.push.queue import save
    from draftsync.schedule import next_fire

    s, cat = filled
    t = SystemClock().now()
    save(cat, Item(_video(0, 0).hash, State.QUEUED, t, wait=30 * 3600, reason="TikTok rate limit"))
    for i in range(1, 7):
        save(cat, Item(_video(i, 0).hash, State.QUEUED, t))
    now = t.wall
    q = push_queue(s, cat, now)
    assert len(q) == 7 and all(x.state == "queued" for x in q)
    nxt = next_fire(s.push.schedule, s.push.tz(), datetime.fromtimestamp(now).astimezone())  # "0 9 * * *"
    assert nxt is not None
    nine = nxt.timestamp()
    # push.max_per_run = 5 per window, 10 s apart; TikTok's 5-per-24 h cap then holds the sixth until a day after
    # those five; the deferred one comes no earlier than its own time (30 h away).
    assert [x.name for x in q[:5]] == [f"clip_0000{i}.mp4" for i in range(1, 6)]
    first = [x.turn_at for x in q[:5]]
    assert all(t is not None and nine <= t < nine + 600 for t in first) and first == sorted(first)
    assert all(x.turn_note == "next push window" for x in q[:5])
    rest = {x.name: x for x in q[5:]}
    assert set(rest) == {"clip_00000.mp4", "clip_00006.mp4"}
    sixth, deferred = rest["clip_00006.mp4"], rest["clip_00000.mp4"]
    assert sixth.turn_at is not None and sixth.turn_at >= first[0] + 86400  # type: ignore[operator]
    assert deferred.turn_at is not None and deferred.turn_at >= now + 30 * 3600
    assert deferred.turn_note == "TikTok rate limit"


def _hold_lock(s: Any, cat: Catalog) -> StateLock:
    lock = StateLock(s.state.dir)
    lock.acquire("test")
    cat.set_meta("daemon", json.dumps({"pid": os.getpid(), "heartbeat": time.time(), "dead_loops": []}))
    return lock


def test_healthz_is_200_when_healthy_and_503_with_reasons_otherwise(filled: tuple[Any, Catalog]) -> None:
    s, cat = filled
    app = _app(s)
    r = app.handle("GET", "/healthz", LOCAL)
    assert r.status == 503 and json.loads(r.body)["status"] == "not running"
    lock = _hold_lock(s, cat)
    try:
        r = app.handle("GET", "/healthz", LOCAL)
        assert r.status == 200 and json.loads(r.body) | {"heartbeat_age": 0} == {
            "status": "ok",
            "running": True,
            "healthy": True,
            "reasons": [],
            "warnings": [],
            "heartbeat_age": 0,
        }
        Problems(cat).report("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
        r = app.handle("GET", "/healthz", LOCAL)
        assert r.status == 503 and json.loads(r.body)["reasons"] == ["the archive disk /mnt/usb is not mounted"]
    finally:
        lock.release()


# --- the real daemon over HTTP ---------------------------------------------------------------------------

pytest_slow = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10, **kw)


def _up(port: int, path: str = "/healthz") -> httpx.Response | None:
    try:
        return get(port, path)
    except httpx.HTTPError:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


@pytest_slow
def test_a_taken_port_is_told_as_a_problem_and_cleared_when_free(env: Env, daemon: Callable[..., DaemonProc],
                                                                  receiver: Receiver) -> None:  # fmt: skip
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    env.write_config(web={"listen": port}, notify={"urls": [receiver.url()], "group_seconds": 0,
                                                   "ping_url": receiver.http("/ping/{check}")})  # fmt: skip
    d = daemon()
    wait_for(lambda: receiver.messages(), 30, what="a notification that the page cannot listen")
    wait_for(lambda: "/ping/heartbeat" in receiver.paths(), 30, what="a heartbeat ping (healthy: a taken port "
             "does not stop archiving)")  # fmt: skip
    (m,) = receiver.messages()
    assert "status page down" in m["title"] and f"127.0.0.1:{port}" in m["message"]
    st = env.status()
    assert [p["kind"] for p in st["problems"]] == ["web"]
    squatter.close()
    wait_for(lambda: len(receiver.messages()) >= 2, 30, what="the cleared notification")
    assert "resolved" in receiver.messages()[1]["title"]
    assert get(port, "/healthz").status_code == 200
    assert env.status()["problems"] == []
    assert d.stop() == 0
    assert len(receiver.messages()) == 2  # once each way


@pytest_slow
def test_healthz_turns_503_and_the_owner_is_told_when_the_archive_bind_mount_goes_away(
    env: Env, daemon: Callable[..., DaemonProc], receiver: Receiver, tmp_path: Path
) -> None:
    """Needs the daemon to report `archive_missing` when the archive's marker vanishes while the catalog
    knows videos."""
    disk = tmp_path / "usb-disk"
    disk.mkdir()
    env.archive.mkdir()
    if subprocess.run(["mount", "--bind", str(disk), str(env.archive)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        port = free_port()
        env.write_config(web={"listen": port}, notify={"urls": [receiver.url()], "group_seconds": 0},
                         watch={"rescan_minutes": 0.02})  # fmt: skip
        d = daemon()
        v = make_video(env.inbox / "keep.mp4", seed=410)
        wait_for(lambda: any(p.name.endswith(".mp4") for p in disk.rglob("*.mp4")), 30, what="archived on the disk")
        wait_for(lambda: (r := _up(port)) is not None and r.status_code == 200, 30, what="healthy")
        subprocess.run(["umount", "-l", str(env.archive)], check=True)  # the disk is unplugged
        wait_for(lambda: (r := _up(port)) is not None and r.status_code == 503, 30, what="/healthz 503")
        body = get(port, "/healthz").json()
        assert body["healthy"] is False and any("archive" in r for r in body["reasons"])
        r = env.cli("status", "--check")  # the same verdict for a container HEALTHCHECK
        assert r.returncode == 1 and r.stdout.startswith("unhealthy: ") and "archive" in r.stdout
        wait_for(lambda: any("archive missing" in m["title"] for m in receiver.messages()), 30, what="told")
        assert list(env.archive.iterdir()) == []  # nothing written onto the bare mount point
        subprocess.run(["mount", "--bind", str(disk), str(env.archive)], check=True)  # plugged back in
        wait_for(lambda: (r := _up(port)) is not None and r.status_code == 200, 60, what="/healthz 200 again")
        wait_for(lambda: any("resolved" in m["title"] for m in receiver.messages()), 30, what="told it cleared")
        assert sum("archive missing" in m["title"] and "resolved" not in m["title"] for m in receiver.messages()) == 1
        assert v.exists() and d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(env.archive)], capture_output=True)


def test_help_status_and_scan_start_without_the_monitoring_stack(env: Env) -> None:
    """Start-up time matters for the commands people type: apprise, Jinja2 and prometheus-client load only
    in the daemon (and `notify test`)."""
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from draftsync import cli\n"
        "for argv in (['--help'], ['--config', sys.argv[1], 'status'], ['--config', sys.argv[1], 'scan']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        cli.main(argv)\n"
        "heavy = ('apprise', 'jinja2', 'prometheus_client', 'playwright', 'draftsync.web', 'draftsync.notify')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(env.config)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_the_example_config_documents_the_defaults() -> None:
    import tomllib

    from draftsync.config import NotifyConfig, Settings, WebConfig

    example = Settings(**tomllib.loads((Path(__file__).parent.parent / "config/draftsync.example.toml").read_text()))
    assert example.notify.model_dump() == NotifyConfig().model_dump()
    assert example.web.model_dump() == WebConfig().model_dump()


def test_an_unreadable_or_empty_token_file_keeps_the_page_off_and_says_so(env: Env, tmp_path: Path) -> None:
    import threading
    from datetime import UTC

    from apscheduler.schedulers.background import BackgroundScheduler

    from draftsync.archive import Archive
    from draftsync.runtime import Runtime
    from draftsync.supervise import Supervisor
    from draftsync.web import WebService

    port = free_port()
    tok = tmp_path / "token"
    tok.write_text("\n")
    env.write_config(web={"listen": f"0.0.0.0:{port}", "token_file": str(tok)})
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    for problem in ("is empty", "cannot read"):
        rt = Runtime(s, cat, Archive(s.archive.root, s.archive.layout), Problems(cat), Supervisor(),
                     BackgroundScheduler(timezone=UTC), threading.Event())  # fmt: skip
        WebService().start(rt)
        p = rt.problems.get("web")
        assert p is not None and "status page is off" in p.message and problem in p.message
        assert rt.supervisor.loops() == [] and _up(port) is None
        tok.unlink(missing_ok=True)


# --- slow clients: a health probe is always answered ----------------------------------------------------


@pytest.fixture
def server(env: Env) -> Iterator[Callable[..., Any]]:
    """A real status-page server on 127.0.0.1 with the given limits, serving on a thread."""
    import threading

    from draftsync.web import Limits, _Server

    started: list[Any] = []

    def start(**limits: Any) -> Any:
        s, _ = load(str(env.config))
        Catalog(s.catalog_path).close()
        srv = _Server(("127.0.0.1", 0), App(s, Catalog.open_readonly(s.catalog_path)), Limits(**limits))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _stalled(port: int, n: int) -> list[socket.socket]:
    """Clients that start a request and never finish it."""
    out = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1")
        out.append(c)
    return out


def _still_open(c: socket.socket) -> bool:
    c.setblocking(False)
    try:
        return c.recv(1) != b""  # data (never sent here) or EOF
    except BlockingIOError:
        return True  # nothing to read and not closed: the server still waits for this client
    except OSError:
        return False


def test_stalled_clients_cannot_keep_a_health_probe_out(server: Callable[..., Any]) -> None:
    from draftsync.web import MAX_CONCURRENT

    srv = server(head_seconds=600)  # they are not cut off here: the probe must get through beside them
    port = srv.server_address[1]
    stalled = _stalled(port, MAX_CONCURRENT + 8)
    try:
        r = get(port, "/healthz", headers=LOCAL)
        assert r.status_code in (200, 503) and "healthy" in r.json()  # an answer (503: no daemon runs here)
        assert get(port, "/", headers=LOCAL).status_code == 200  # and the page too
        assert all(_still_open(c) for c in stalled)
    finally:
        for c in stalled:
            c.close()


def test_a_client_sending_its_request_byte_by_byte_is_cut_off_after_the_head_time(server: Callable[..., Any]) -> None:
    srv = server(head_seconds=0.5)
    c = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
    request = b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 10_000
    deadline = time.monotonic() + 30  # far beyond the head time, far below the per-read timeout
    closed = False
    for byte in request:
        try:
            c.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        if not _still_open(c):
            closed = True
            break
        c.setblocking(True)
        assert time.monotonic() < deadline, "the server still waits for this client's headers"
        time.sleep(0.02)  # one byte at a time, each well within any per-read timeout
    c.close()
    assert closed


def test_healthz_has_slots_of_its_own_while_the_page_is_busy(server: Callable[..., Any]) -> None:
    srv = server(slot_wait=0.2)
    port = srv.server_address[1]
    taken = 0
    while srv.slots.acquire(timeout=0):  # every request slot busy answering (slow page renders)
        taken += 1
    try:
        assert "healthy" in get(port, "/healthz", headers=LOCAL).json()
        busy = get(port, "/", headers=LOCAL)
        assert busy.status_code == 503 and "busy" in busy.text and busy.headers["Retry-After"] == "5"
    finally:
        for _ in range(taken):
            srv.slots.release()


# --- the push queue at scale ------------------------------------------------------------------------------


def _fill_queue(cat: Catalog, n: int, t: Any) -> None:
    """`n` queued items (every 7th deferred for a while, one for months), one uploading, a few finished."""
    from dataclasses import replace

    from draftsync.push.machine import Item, State
    from draftsync.push.queue import save

    with cat.tx():
        for i in range(n):
            wait = 100 * 86400 if i == 3 else (i % 5 + 1) * 7 * 3600 if i % 7 == 0 else 0.0
            save(cat, Item(f"blake3:{i:064x}", State.QUEUED, t, wait=wait))
        save(cat, Item(f"blake3:{n:064x}", State.UPLOADING, t, remote_id="pid-1"))
        for j, state in enumerate((State.IN_INBOX, State.FAILED, State.SKIPPED, State.IN_INBOX)):
            save(cat, replace(Item(f"blake3:{n + 1 + j:064x}", state, t), reason=f"finished {j}"))


def _page_by_sorting_everything(s: Any, cat: Catalog, now: Any, limit: int) -> list[tuple[Any, ...]]:
    """What the page showed before it was bounded: every item of `queue_view`, sorted as the page shows them."""
    from draftsync.push.machine import ACTIVE
    from draftsync.push.queue import queue_view

    entries = queue_view(s, cat, now=now)
    active = [e for e in entries if e.state in {a.value for a in ACTIVE}]
    queued = sorted([e for e in entries if e.state == "queued"], key=lambda e: (e.turn_at is None, e.turn_at or 0.0))
    done = sorted([e for e in entries if e.state not in {"queued", *(a.value for a in ACTIVE)}],
                  key=lambda e: -(e.updated_at or 0))  # fmt: skip
    return [(e.hash, e.state, e.turn_at, e.archive_path, e.reason) for e in (active + queued + done)[:limit]]


@pytest.mark.parametrize(("schedule", "per_run"), [("0 9 * * *", 5), ("0 * * * *", 1), ("*/10 * * * *", 3)])
def test_the_bounded_page_queue_shows_what_sorting_the_whole_queue_showed(env: Env, schedule: str,
                                                                          per_run: int) -> None:  # fmt: skip
    from draftsync.push.clock import SystemClock
    from draftsync.push.queue import queue_page

    env.write_config(push={"enabled": True, "backend": "dry-run", "schedule": schedule, "max_per_run": per_run})
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    with cat.tx():
        for i in range(0, 420, 3):  # some queued items have no catalogued video (a name from the hash instead)
            cat.add_video(_video(i, 1_000_000.0 + i))
    now = SystemClock().now()
    _fill_queue(cat, 400, now)  # more than windows x max_per_run, so the bound is what decides
    for limit in (3, 20, 200, 500):
        got = [(e.hash, e.state, e.turn_at, e.archive_path, e.reason) for e in queue_page(s, cat, limit, now)]
        assert got == _page_by_sorting_everything(s, cat, now, limit), limit
    assert any(g[2] is None for g in got) and any(g[2] is not None for g in got)  # both kinds were compared
    cat.close()


def test_the_page_queue_reads_a_bounded_number_of_rows_however_long_the_queue(env: Env) -> None:
    from draftsync.push.clock import SystemClock

    env.write_config(push={"enabled": True, "backend": "dry-run"})
    s, _ = load(str(env.config))
    for n in (50, 3000):
        cat = Catalog(env.state / f"queue-{n}.db")
        now = SystemClock().now()
        _fill_queue(cat, n, now)
        statements: list[str] = []
        cat._db.set_trace_callback(statements.append)
        q = push_queue(s, cat, now.wall)
        cat._db.set_trace_callback(None)
        assert len(q) == 20 and q[0].state == "uploading"
        assert len(statements) <= 10, statements[:12]  # a few queries, none per item, however many are queued
        cat.close()
