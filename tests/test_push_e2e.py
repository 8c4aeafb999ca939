"""push end to end: the real daemon and CLI as subprocesses against the fake APIs on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from draftsync.catalog import Catalog
from draftsync.config import load
from tests.conftest import DaemonProc, Env, b3, make_video, wait_for
from tests.fakeapi import FakeServer, tiktok_config
from tests.test_push import give_token

pytestmark = pytest.mark.slow


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    f = FakeServer()
    yield f
    f.close()


def configure(env: Env, fake: FakeServer, **push: object) -> None:
    fake.state.processing_polls = 0  # in the inbox at the first status call: the CLI's window runs in real time
    env.write_config(
        push={"enabled": True, "backend": "tiktok", "only_new": False, "schedule": "0 9 * * *", **push},
        tiktok=tiktok_config(fake.base, str(env.state / "tiktok-token.json"), chunk_size=5_242_880),
    )


def archive_one(env: Env, pad: int, seed: int = 700) -> Path:
    v = make_video(env.inbox / "VID_20260501_120000.mp4", seconds=3, size=(360, 640), seed=seed)
    with v.open("ab") as f:
        f.write(os.urandom(pad))
    old = time.time() - 3600
    os.utime(v, (old, old))
    assert env.cli("scan").returncode == 0
    return v


def test_kill_9_during_an_upload_then_restart_makes_exactly_one_draft(env: Env, fake: FakeServer,
                                                                     daemon: Callable[..., DaemonProc]) -> None:  # fmt: skip
    configure(env, fake)
    s, _ = load(str(env.config))
    give_token(s, fake)
    v = archive_one(env, pad=26_000_000)  # five 5 MiB chunks
    cat = Catalog(s.catalog_path)
    cat.set_meta("push_last_window", str(time.time() - 3 * 86400))  # the daemon was down over a window
    cat.close()
    fake.state.put_delay = 0.6
    d = daemon()
    wait_for(lambda: sum(1 for r in fake.state.requests if r[0] == "PUT") >= 2, 60, what="upload under way")
    d.kill9()
    assert fake.state.completed_drafts() == []
    fake.state.put_delay = 0.0
    d2 = daemon()
    wait_for(lambda: fake.state.completed_drafts(), 60, what="the interrupted upload to finish")
    wait_for(lambda: json.loads(env.cli("queue", "--json").stdout)["items"][0]["state"] == "in_inbox", 30)
    assert d2.stop() == 0
    (task,) = fake.state.completed_drafts()
    assert task.digest == b3(v)
    assert len(fake.state.tasks) == 1 and len(fake.state.inits) == 1  # resumed, not re-initialised
    # a restart does not run the window again
    d3 = daemon()
    time.sleep(2)
    assert d3.stop() == 0
    assert len(fake.state.inits) == 1
    log_text = "".join(p.read_text() for p in env.base.glob("daemon-*.log"))
    assert "cs_test_secret_value" not in log_text and "act." not in log_text and "rft." not in log_text


def test_push_now_queue_and_status_from_the_cli(env: Env, fake: FakeServer) -> None:
    configure(env, fake, only_new=True)  # the default: scan, with pushing on, anchors "new" before it archives
    s, _ = load(str(env.config))
    give_token(s, fake)
    archive_one(env, pad=0)
    dry = env.cli("push", "--dry-run")
    assert dry.returncode == 0 and "would send 1 now, 0 later" in dry.stdout and fake.state.inits == []
    r = env.cli("push", "--now")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "in_inbox" in r.stdout and "1 sent" in r.stdout
    q = json.loads(env.cli("queue", "--json").stdout)
    assert [i["state"] for i in q["items"]] == ["in_inbox"] and q["budget"]["left_24h"] == 4
    st = env.status()
    assert st["push"]["budget"]["drafts_last_24h"] == 1
    status = env.cli("status").stdout
    assert "4 of 5 drafts left in 24 h" in status and "()" not in status and "last window" in status
    assert env.cli("push").returncode == 2  # no --now: explains the schedule
    path = q["items"][0]["archive_path"]
    again = env.cli("push", "add", path)
    assert again.returncode == 0 and "already in_inbox" in again.stdout
    assert "0 queued again" in env.cli("push", "retry", "--all").stdout


def test_push_add_from_the_cli_queues_an_old_video_and_says_when(env: Env, fake: FakeServer) -> None:
    env.write_config()  # pushing off while the camera roll is archived
    v = archive_one(env, pad=0)
    s0, _ = load(str(env.config))
    assert stat.S_IMODE(s0.state.dir.stat().st_mode) == 0o700  # made by draftsync: private from the start
    assert stat.S_IMODE(s0.catalog_path.stat().st_mode) == 0o600
    configure(env, fake, only_new=True)
    s, _ = load(str(env.config))
    give_token(s, fake)
    idle = env.cli("push", "--dry-run").stdout
    assert "would send 0 now" in idle and "pushing takes effect" in idle and "push add" in idle
    hash8 = b3(v).removeprefix("blake3:")[:8]
    dry = env.cli("push", "add", hash8, "--dry-run")
    assert dry.returncode == 0 and "would queue 1" in dry.stdout and "in the inbox by" in dry.stdout
    assert env.cli("push", "add", "no/such/video.mp4").returncode == 1
    added = env.cli("push", "add", "--all", "--since", "2026-05-01", "--until", "2026-05-01")
    assert added.returncode == 0 and "queued 1 video(s)" in added.stdout, added.stdout + added.stderr
    (item,) = json.loads(env.cli("queue", "--json").stdout)["items"]
    assert item["state"] == "queued" and item["turn_at"]
    assert env.cli("push", "add", "--since", "May 1").returncode == 2
    r = env.cli("push", "--now")
    assert "1 sent" in r.stdout, r.stdout + r.stderr


def test_push_refuses_when_disabled(env: Env) -> None:
    r = env.cli("push", "--now")
    assert r.returncode == 2 and "pushing is off" in r.stderr


def test_a_multi_gib_upload_keeps_client_memory_flat(env: Env, fake: FakeServer, tmp_path: Path) -> None:
    configure(env, fake)
    s, _ = load(str(env.config))
    give_token(s, fake)
    big = tmp_path / "big.mp4"
    size = 2 * 1024**3 + 12345
    with big.open("wb") as f:
        f.truncate(size)  # sparse: the bytes are real to the reader, cheap on disk
    script = textwrap.dedent(f"""
        from pathlib import Path
        from draftsync.config import load
        from draftsync.push.auth import TokenStore
        from draftsync.push.tiktok import TikTok
        s, _ = load({str(env.config)!r})
        api = TikTok(s, TokenStore(s))
        up = api.init({size})
        api.upload(Path({str(big)!r}), up, {size})
        # VmHWM is this program's own peak (ru_maxrss would carry the forking parent's across exec)
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
        print(up.count, hwm)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    count, rss_kib = map(int, r.stdout.split())
    assert count > 200
    (task,) = fake.state.tasks.values()
    assert task.received == size and task.status == "PROCESSING_UPLOAD"
    assert rss_kib < 100 * 1024, f"client peak RSS {rss_kib / 1024:.0f} MiB"
