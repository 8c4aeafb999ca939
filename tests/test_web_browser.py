"""The real daemon serving its web side: /healthz, /metrics (parsed with prometheus-client's parser),
thumbnails, and the status page in a real headless browser (Debian's chromium driven by Playwright): the
daemon archives real clips, and the page shows them with every thumbnail loaded, near-duplicates side by
side, and health.

Set DRAFTSYNC_SCREENSHOT=docs/status-page.png to keep the screenshot the README shows."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import httpx
import pytest

from tests.conftest import DaemonProc, Env, wait_for
from tests.corpus import clip_frames, decode, encode, watermark
from tests.test_web import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ALL_LOADED = "() => document.images.length > 0 && [...document.images].every(i => i.complete && i.naturalWidth > 0)"


def _metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return ""


def test_the_daemon_serves_health_metrics_thumbnails_and_a_page_a_browser_shows(env: Env, daemon: Callable[..., DaemonProc],
                                                               tmp_path: Path) -> None:  # fmt: skip
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for this test (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    env.write_config(web={"listen": port}, labels=[{"label": "tiktok", "name": "*tiktok*"}])
    clips = [encode(env.inbox / f"clip{s}.mp4", list(islice(clip_frames(s), 45))) for s in (3, 4, 5, 6, 9)]
    clips.append(encode(env.inbox / "clip3_saved_from_tiktok.mp4", watermark(decode(clips[0])[0])))
    old = time.time() - 60
    for c in clips:
        os.utime(c, (old, old))
    assert env.cli("scan").returncode == 0  # archives and compares; the daemon then makes the thumbnails
    d = daemon()
    wait_for(lambda: all(x in _metrics(port) for x in ("draftsync_archive_videos 6.0",
             "draftsync_thumbnails_pending 0.0", "draftsync_signatures_pending 0.0")), 60,
             what="6 videos archived, with thumbnails and signatures")  # fmt: skip
    archived = [p.name for p in env.archived_videos()]
    _check_http(env, d, port)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            resp = page.goto(f"http://127.0.0.1:{port}/")
            assert resp is not None and resp.status == 200
            page.wait_for_function(ALL_LOADED, timeout=30_000)
            videos = page.inner_text("#videos")
            assert all(name in videos for name in archived), (archived, videos)
            assert page.locator("#videos img").count() == 6
            assert page.locator("#dupes .sheet").count() == 1 and page.locator("#dupes .sheet img").count() == 2
            assert page.inner_text("#health").startswith("healthy")
            assert str(env.inbox) in page.inner_text("#roots")
            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("DRAFTSYNC_SCREENSHOT")
            if keep:
                shutil.copy(shot, keep)
        finally:
            browser.close()
    assert d.stop() == 0
    with pytest.raises(httpx.HTTPError):  # nothing listens once the daemon stopped
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def _check_http(env: Env, d: DaemonProc, port: int) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    # The daemon's first heartbeat follows "ready" by about a second; until then /healthz says "not running".
    r = wait_for(lambda: (x := httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)).status_code == 200 and x,
                 20, what="/healthz 200")  # fmt: skip
    assert r.status_code == 200 and r.json()["healthy"] is True and r.headers["content-type"] == "application/json"
    m = {s.name + str(sorted(s.labels.items())): s.value
         for f in text_string_to_metric_families(_metrics(port)) for s in f.samples}  # fmt: skip
    assert m["draftsync_archive_videos[]"] == 6 and m["draftsync_healthy[]"] == 1
    assert m["draftsync_archive_bytes[]"] == sum(p.stat().st_size for p in env.archived_videos())
    assert m["draftsync_archived_videos_total[]"] == 0  # `scan` archived them, not this daemon
    assert m[f"draftsync_watch_root_mode[('mode', 'inotify'), ('root', '{env.inbox}')]"] == 1
    assert m[f"draftsync_watch_root_healthy[('root', '{env.inbox}')]"] == 1
    assert m["draftsync_files_settling[]"] == 0 and m["draftsync_ingest_failures_total[]"] == 0
    assert abs(m["draftsync_last_ingest_timestamp_seconds[]"] - time.time()) < 600
    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'none'")
    srcs = {x.split('"')[0] for x in page.text.split('<img src="')[1:]}
    assert len(srcs) == 6
    for src in srcs:
        img = httpx.get(f"http://127.0.0.1:{port}{src}", timeout=10)
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
    assert httpx.post(f"http://127.0.0.1:{port}/", timeout=10).status_code == 405
    listening = [e for e in d.events() if e.get("event") == "status page listening"]
    assert listening and listening[0]["url"] == f"http://127.0.0.1:{port}/"
