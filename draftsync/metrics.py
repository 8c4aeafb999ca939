"""Prometheus metrics: what `/metrics` exposes, named by prometheus-client's conventions (a `draftsync_`
prefix, base units in the name, `_total` on counters, `_info` for build facts).

Every value is read at scrape time from the catalog (through the web server's read-only connection) and
the daemon's heartbeat record, so the numbers are the ones `status` shows; nothing is kept in memory but
the notification counters the daemon passes in. A part that fails to read is left out of that scrape (and
logged), never turned into a failed scrape.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from draftsync import __version__, log

if TYPE_CHECKING:
    from draftsync.catalog import Catalog
    from draftsync.config import Settings

_log = log.get("draftsync.metrics")

WATCH_MODES = ("inotify", "polling", "missing", "stopped")
PUSH_STATES = ("queued", "uploading", "processing", "in_inbox", "failed", "skipped")

# name (without prefix) -> (type, help): the list the README documents, checked by the tests.
METRICS: dict[str, tuple[str, str]] = {
    "build_info": ("gauge", "Version of draftsync and Python (value 1)."),
    "healthy": ("gauge", "1 while the daemon beats, every loop is alive and nothing blocks archiving; else 0."),
    "heartbeat_age_seconds": ("gauge", "Seconds since the daemon's last heartbeat."),
    "problems": ("gauge", "Standing problems by kind and severity."),
    # The archive's size is a gauge: it falls when videos go (a `reindex` after files were removed). What
    # this process archived only rises (and starts again at 0 with the process): that one is a counter.
    "archive_videos": ("gauge", "Videos in the archive (the catalog's count; falls after a reindex finds fewer)."),
    "archive_bytes": ("gauge", "Bytes of video in the archive (the catalog's total)."),
    "archived_videos_total": ("counter", "Videos archived by this daemon since it started."),
    "archived_bytes_total": ("counter", "Bytes of video archived by this daemon since it started."),
    "last_ingest_timestamp_seconds": ("gauge", "Unix time of the latest archived video."),
    "ingest_failures_total": ("counter", "Failed ingest attempts since the daemon started."),
    "files_failing": ("gauge", "Source files that failed and wait for a retry."),
    "files_settling": ("gauge", "Files waiting to be completely written."),
    "files_queued": ("gauge", "Settled files waiting for (or in) an ingest worker."),
    "watch_root_mode": ("gauge", "Watch mode of each watched folder (1 for the current mode)."),
    "watch_root_healthy": ("gauge", "1 while a watched folder is present and fully watched."),
    "archive_free_bytes": ("gauge", "Free bytes on the archive disk."),
    "state_free_bytes": ("gauge", "Free bytes on the disk holding the catalog."),
    "signatures_pending": ("gauge", "Videos not yet compared for near-duplicates."),
    "thumbnails_pending": ("gauge", "Videos without a thumbnail attempt yet."),
    "push_drafts": ("gauge", "Pushed and queued videos by state."),
    "push_budget_remaining": ("gauge", "Drafts that may still be sent: in the rolling 24 h, and today."),
    "notifications_total": ("counter", "Notification deliveries since the daemon started, by result."),
}


class DraftsyncCollector:
    """A custom collector: one consistent reading of the catalog per scrape."""

    def __init__(self, settings: Settings, catalog: Catalog,
                 notifications: Callable[[], dict[str, int]] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.catalog = catalog
        self.notifications = notifications

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the families depend on what the catalog holds

    def collect(self) -> Iterator[Any]:
        for part in (self._build, self._health, self._archive, self._ingest, self._roots, self._disks,
                     self._backfills, self._push, self._notify):  # fmt: skip
            try:
                yield from part()
            except Exception as e:  # one unreadable part never fails the scrape
                _log.warning("metrics part failed", part=part.__name__, error=str(e))

    def _family(self, name: str, labels: list[str] | None = None) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        kind, doc = METRICS[name]
        if kind == "counter":
            return CounterMetricFamily(f"draftsync_{name.removesuffix('_total')}", doc, labels=labels)
        return GaugeMetricFamily(f"draftsync_{name}", doc, labels=labels)

    def _one(self, name: str, value: float | None) -> Iterator[Any]:
        if value is not None:
            f = self._family(name)
            f.add_metric([], float(value))
            yield f

    def _daemon(self) -> dict[str, Any]:
        raw = self.catalog.get_meta("daemon")
        try:
            d = json.loads(raw) if raw else {}
        except ValueError:
            d = {}
        return d if isinstance(d, dict) else {}

    def _build(self) -> Iterator[Any]:
        f = self._family("build_info", ["version", "python"])
        f.add_metric([__version__, platform.python_version()], 1.0)
        yield f

    def _health(self) -> Iterator[Any]:
        import time

        from draftsync.health import read

        h = read(self.settings, self.catalog, time.time())
        yield from self._one("healthy", 1.0 if h.healthy else 0.0)
        yield from self._one("heartbeat_age_seconds", h.heartbeat_age)
        f = self._family("problems", ["kind", "severity"])
        counts: dict[tuple[str, str], int] = {}
        for p in self.catalog.problems():
            counts[(p.kind, p.severity)] = counts.get((p.kind, p.severity), 0) + 1
        for (kind, sev), n in sorted(counts.items()):
            f.add_metric([kind, sev], float(n))
        yield f

    def _archive(self) -> Iterator[Any]:
        c = self.catalog.archive_totals()
        yield from self._one("archive_videos", c["videos"])
        yield from self._one("archive_bytes", c["bytes"])
        yield from self._one("last_ingest_timestamp_seconds", c["last_ingest"])
        yield from self._one("files_failing", c["failing"])

    def _ingest(self) -> Iterator[Any]:
        d = self._daemon()
        if not d.get("pid"):
            return
        counts = d.get("counts") or {}
        yield from self._one("archived_videos_total", counts.get("archived", 0))
        yield from self._one("archived_bytes_total", counts.get("archived_bytes", 0))
        yield from self._one("ingest_failures_total", counts.get("failed", 0))
        yield from self._one("files_settling", d.get("settling", 0))
        yield from self._one("files_queued", int(d.get("queued") or 0) + int(d.get("in_flight") or 0))

    def _roots(self) -> Iterator[Any]:
        configured = {str(p) for p in self.settings.watch.paths}
        mode = self._family("watch_root_mode", ["root", "mode"])
        healthy = self._family("watch_root_healthy", ["root"])
        for r in self.catalog.roots():
            if r["path"] not in configured:
                continue
            current = r["mode"] or "stopped"
            for m in sorted({*WATCH_MODES, current}):
                mode.add_metric([r["path"], m], 1.0 if m == current else 0.0)
            healthy.add_metric([r["path"]], 1.0 if (r["health"] or "ok") == "ok" and current != "missing" else 0.0)
        yield mode
        yield healthy

    def _disks(self) -> Iterator[Any]:
        from draftsync.archive import free_bytes

        root = self.settings.archive.root
        yield from self._one("archive_free_bytes", free_bytes(root) if root.is_dir() else None)
        yield from self._one("state_free_bytes", free_bytes(self.settings.state.dir))

    def _backfills(self) -> Iterator[Any]:
        from draftsync.perceptual import VERSION

        s = self.catalog.signature_counts(VERSION)
        yield from self._one("signatures_pending", max(0, s["videos"] - s["signed"]))
        if self.settings.web.thumbnails:
            yield from self._one("thumbnails_pending", max(0, s["videos"] - self.catalog.thumbs_attempted()))

    def _push(self) -> Iterator[Any]:
        counts = self.catalog.push_state_counts()
        f = self._family("push_drafts", ["state"])
        for st in sorted({*PUSH_STATES, *counts}):
            f.add_metric([st], float(counts.get(st, 0)))
        yield f
        if self.settings.push.enabled:
            from draftsync.push.queue import push_status

            b = push_status(self.settings, self.catalog)["budget"]
            g = self._family("push_budget_remaining", ["window"])
            g.add_metric(["24h"], float(b["left_24h"]))
            g.add_metric(["today"], float(b["left_today"]))
            yield g

    def _notify(self) -> Iterator[Any]:
        if self.notifications is None:
            return
        f = self._family("notifications_total", ["result"])
        for result, n in sorted(self.notifications().items()):
            f.add_metric([result], float(n))
        yield f


def registry(settings: Settings, catalog: Catalog, notifications: Callable[[], dict[str, int]] | None = None) -> Any:
    """A registry with draftsync's metrics and the standard process and Python ones."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(DraftsyncCollector(settings, catalog, notifications))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def exposition(reg: Any, accept: str = "") -> tuple[bytes, str]:
    """The exposition the scraper asked for (OpenMetrics or the text format) and its content type."""
    from prometheus_client.exposition import choose_encoder

    encoder, ctype = choose_encoder(accept)
    return encoder(reg), ctype
