"""The status page in a real headless browser (Debian's chromium driven by Playwright): the daemon archives
real clips, and the page shows them with every thumbnail loaded, near-duplicates side by side, and health.

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


def test_the_status_page_shows_the_archive_with_its_thumbnails(env: Env, daemon: Callable[..., DaemonProc],
                                                               tmp_path: Path) -> None:  # fmt: skip
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for this test (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    env.write_config(web={"listen": port}, labels=[{"label": "tiktok", "name": "*tiktok*"}])
    clips = [encode(env.inbox / f"clip{s}.mp4", islice(clip_frames(s), 45), bitrate=600_000) for s in (3, 4, 5, 6, 9)]
    clips.append(encode(env.inbox / "clip3_saved_from_tiktok.mp4", watermark(decode(clips[0]))))
    old = time.time() - 60
    for c in clips:
        os.utime(c, (old, old))
    assert env.cli("scan").returncode == 0  # archives and compares; the daemon then makes the thumbnails
    d = daemon()
    wait_for(lambda: all(x in _metrics(port) for x in ("draftsync_archived_videos_total 6.0",
             "draftsync_thumbnails_pending 0.0", "draftsync_signatures_pending 0.0")), 60,
             what="6 videos archived, with thumbnails and signatures")  # fmt: skip
    archived = [p.name for p in env.archived_videos()]
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
