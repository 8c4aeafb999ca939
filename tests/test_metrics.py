"""metrics: /metrics parsed with prometheus-client's own parsers says what the catalog says, named by the
conventions, every metric documented in the README, and a failing part never fails the scrape."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from draftsync import __version__
from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.ingest import Ingestor
from draftsync.lock import StateLock
from draftsync.metrics import METRICS, exposition, registry
from draftsync.problems import Problems
from draftsync.thumbs import Thumbnailer
from tests.conftest import Env, make_video

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str, parser: Any = text_string_to_metric_families) -> dict[str, float]:
    """'name{a="x",b="y"}' -> value, labels sorted."""
    out = {}
    for fam in parser(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, (k, _) in METRICS.items()])
def test_names_follow_prometheus_conventions(name: str, kind: str) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert name.endswith("_total") == (kind == "counter")
    assert not re.search(r"(^|_)(kib|mib|gib|ms|milliseconds|minutes|hours)(_|$)", name)  # base units: bytes, seconds
    if "bytes" in name or "seconds" in name or "timestamp" in name:
        assert re.search(r"_(bytes|seconds)(_total)?$", name)


def test_every_metric_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Monitoring and notifications", 1)[1].split("\n## ", 1)[0]
    missing = [n for n in METRICS if f"draftsync_{n}" not in section]
    assert missing == []


@pytest.fixture
def world(env: Env) -> tuple[Any, Catalog]:
    env.write_config(push={"enabled": True, "backend": "dry-run", "max_per_day": 3})
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    arc = Archive(s.archive.root, s.archive.layout)
    ing = Ingestor(s, cat, arc)
    for i in range(3):
        assert ing.ingest(str(make_video(env.inbox / f"v{i}.mp4", seed=500 + i)), str(env.inbox)).kind == "archived"
    Thumbnailer(cat, arc).backfill(limit=2)
    cat.record_failure(str(env.inbox / "broken.mp4"), str(env.inbox), "cannot read: permission denied")
    cat.update_root(str(env.inbox), mode="polling", health="degraded", detail="fell back to polling")
    h = cat.videos_page(1)[0][0].hash
    from draftsync.push.clock import SystemClock
    from draftsync.push.machine import Item, State
    from draftsync.push.queue import save

    save(cat, Item(h, State.QUEUED, SystemClock().now()))
    Problems(cat).report("root_degraded:x", "root_degraded", "x is watched partly", severity="warning")
    return s, cat


def test_the_scrape_says_what_the_catalog_says(world: tuple[Any, Catalog], env: Env) -> None:
    s, _ = world
    reader = Catalog.open_readonly(s.catalog_path)
    body, ctype = exposition(registry(s, reader, lambda: {"sent": 4, "failed": 1}))
    assert ctype.startswith("text/plain; version=0.0.4")
    m = samples(body.decode())
    total = sum(p.stat().st_size for p in env.archived_videos())
    assert m["draftsync_archive_videos"] == 3 and m["draftsync_archive_bytes"] == total
    assert m[f'draftsync_build_info{{python="{__import__("platform").python_version()}",version="{__version__}"}}'] == 1
    assert m["draftsync_healthy"] == 0  # no daemon runs here
    assert m["draftsync_files_failing"] == 1
    assert m[f'draftsync_watch_root_mode{{mode="polling",root="{env.inbox}"}}'] == 1
    assert m[f'draftsync_watch_root_mode{{mode="inotify",root="{env.inbox}"}}'] == 0
    assert m[f'draftsync_watch_root_healthy{{root="{env.inbox}"}}'] == 0
    assert m['draftsync_problems{kind="root_degraded",severity="warning"}'] == 1
    assert m["draftsync_signatures_pending"] == 3 and m["draftsync_thumbnails_pending"] == 1
    assert m['draftsync_push_drafts{state="queued"}'] == 1 and m['draftsync_push_drafts{state="in_inbox"}'] == 0
    assert m['draftsync_push_budget_remaining{window="today"}'] == 3
    assert m['draftsync_push_budget_remaining{window="24h"}'] == 5
    assert m['draftsync_notifications_total{result="sent"}'] == 4
    assert m["draftsync_archive_free_bytes"] > 0 and m["draftsync_state_free_bytes"] > 0
    assert abs(m["draftsync_last_ingest_timestamp_seconds"] - time.time()) < 600
    assert "process_resident_memory_bytes" in m
    assert "draftsync_files_settling" not in m  # only while the daemon runs (below)
    assert "draftsync_archived_videos_total" not in m  # what a running daemon archived: none runs here


def test_no_counter_falls_when_a_reindex_finds_fewer_videos(world: tuple[Any, Catalog], env: Env) -> None:
    """Prometheus treats a counter that goes down as a restart (rate() sees a reset): only what only rises
    may be one. The archive's size is a gauge."""
    from draftsync.integrity import reindex

    s, cat = world

    def scrape() -> dict[str, tuple[str, float]]:
        fams = text_string_to_metric_families(exposition(registry(s, cat))[0].decode())
        return {x.name: (f.type, x.value) for f in fams if f.name.startswith("draftsync_") for x in f.samples}

    before = scrape()
    gone = env.archived_videos()[0]
    gone.unlink()
    Path(f"{gone}.json").unlink()  # removed by hand, sidecar and all; the owner runs `reindex`
    reindex(Archive(s.archive.root, s.archive.layout), cat)
    after = scrape()
    fell = [n for n, (kind, v) in after.items() if kind == "counter" and n in before and v < before[n][1]]
    assert fell == []
    assert after["draftsync_archive_videos"] == ("gauge", 2.0)


def test_a_running_daemon_adds_its_live_counts(world: tuple[Any, Catalog]) -> None:
    s, cat = world
    lock = StateLock(s.state.dir)
    lock.acquire("test")
    try:
        cat.set_meta("daemon", json.dumps({"pid": os.getpid(), "heartbeat": time.time() - 3, "settling": 2,
                                           "queued": 1, "in_flight": 1, "dead_loops": [],
                                           "counts": {"failed": 7, "archived": 2, "archived_bytes": 5000}}))  # fmt: skip
        m = samples(exposition(registry(s, cat))[0].decode())
    finally:
        lock.release()
    assert m["draftsync_healthy"] == 1 and 0 <= m["draftsync_heartbeat_age_seconds"] < 60
    assert m["draftsync_files_settling"] == 2 and m["draftsync_files_queued"] == 2
    assert m["draftsync_ingest_failures_total"] == 7
    assert m["draftsync_archived_videos_total"] == 2 and m["draftsync_archived_bytes_total"] == 5000
    assert m["draftsync_archive_videos"] == 3  # the archive holds more than this daemon archived
    assert "draftsync_notifications_total" not in str(m)  # no notifier configured


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(world: tuple[Any, Catalog]) -> None:
    s, cat = world
    body, ctype = exposition(registry(s, cat), "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert ctype.startswith("application/openmetrics-text")
    m = samples(body.decode(), om_families)
    assert m["draftsync_archive_videos"] == 3


def test_a_part_that_cannot_be_read_leaves_the_rest_of_the_scrape(world: tuple[Any, Catalog]) -> None:
    s, cat = world

    def broken() -> list[Any]:
        raise OSError("disk I/O error")

    cat.roots = broken  # type: ignore[method-assign]
    m = samples(exposition(registry(s, cat))[0].decode())
    assert m["draftsync_archive_videos"] == 3
    assert not any(k.startswith("draftsync_watch_root") for k in m)
