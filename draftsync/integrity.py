"""Integrity: `verify` re-hashes the archive against the catalog, the scheduled scrub verifies a slice
of it, and `reindex` rebuilds the catalog from the sidecars alone.

`verify` is safe beside the ingesting daemon: a video placed while it runs is waited for (briefly) and
counted as new, not as unknown. `reindex` describes a video anew from its file when its sidecar is
missing, not JSON or holds a bad value, and keeps the bad sidecar under `.draftsync/damaged/`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from draftsync import log, names
from draftsync.archive import SIDECAR_SUFFIX, Archive, record_from_sidecar, sidecar_path
from draftsync.catalog import Catalog, VideoRecord
from draftsync.fingerprint import hash_file
from draftsync.marker import MARKER_NAME
from draftsync.supervise import RunResult

if TYPE_CHECKING:
    from draftsync.problems import Problems

_log = log.get("draftsync.integrity")


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    no_sidecar: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    # Placed while verify ran (the daemon ingesting): catalogued by now, or still being catalogued.
    new: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(len(x) for x in (self.missing, self.changed, self.unknown, self.no_sidecar, self.unreadable))

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked, "ok": self.ok, "bytes": self.bytes, "problems": self.problems,
            "missing": self.missing, "changed": self.changed, "unknown": self.unknown,
            "no_sidecar": self.no_sidecar, "unreadable": self.unreadable, "new": self.new,
        }  # fmt: skip


def _check(archive: Archive, catalog: Catalog, v: VideoRecord, report: VerifyReport) -> None:
    p = archive.root / v.archive_path
    report.checked += 1
    if not p.is_file():
        report.missing.append(v.archive_path)
        return
    try:
        digest, n = hash_file(p)
    except OSError:
        report.unreadable.append(v.archive_path)
        return
    report.bytes += n
    if digest != v.hash or n != v.size:
        report.changed.append(v.archive_path)
        _log.error("archived file changed", archive_path=v.archive_path, hash=v.hash, found=digest)
        return
    if not sidecar_path(p).is_file():
        report.no_sidecar.append(v.archive_path)
        return
    report.ok += 1
    catalog.mark_verified(v.hash, time.time())


# A video the daemon placed this recently (by its ctime: placing sets it, and the mtime is the source's)
# and has not catalogued yet is being ingested, not unknown; verify waits this long for it.
PLACING_WINDOW = 600.0
PLACING_WAIT = 10.0


def verify(
    archive: Archive,
    catalog: Catalog,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    ingesting: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyReport:
    """Every catalogued video hashed and compared; every file on disk accounted for.

    checked = ok + missing + changed + no_sidecar + unreadable; files on disk that the catalog did not
    list when verify began are either `new` (placed meanwhile) or `unknown`. While another process
    ingests (`ingesting`), a file it has just placed is waited for briefly."""
    report = VerifyReport()
    videos = catalog.iter_videos()
    total = sum(v.size for v in videos)
    for v in videos:
        _check(archive, catalog, v, report)
        if progress:
            progress(v.size, total, v.archive_path)
    known = {v.archive_path for v in videos}
    strangers = [rel for kind, rel in archive.walk() if kind == "video" and rel not in known]
    deadline = clock() + PLACING_WAIT
    while strangers:
        # A concurrent ingest places the file a moment before it catalogues it: ask again, briefly.
        report.new += [rel for rel in strangers if catalog.video_by_path(rel) is not None]
        strangers = [rel for rel in strangers if rel not in report.new]
        placing = [rel for rel in strangers if ingesting and _placed_recently(archive, rel)]
        if not placing or clock() >= deadline:
            break
        sleep(0.2)
    for rel in strangers:
        # Placed, described, not yet catalogued (the daemon's catalog write is due, or paused on a full disk).
        being_ingested = ingesting and _placed_recently(archive, rel) and sidecar_path(archive.root / rel).is_file()
        (report.new if being_ingested else report.unknown).append(names.readable(rel))
    return report


def _placed_recently(archive: Archive, rel: str) -> bool:
    try:
        return time.time() - os.lstat(archive.root / rel).st_ctime < PLACING_WINDOW
    except OSError:
        return False


def scrub(archive: Archive, catalog: Catalog, fraction: float, problems: Problems | None = None,
          now: Callable[[], float] = time.time) -> VerifyReport:  # fmt: skip
    """Verify the least recently verified slice of the archive (a fraction of it, at least one), and
    stand (or clear) the `integrity` problem so the owner is told, not only the log."""
    total = catalog.counts()["videos"]
    n = max(1, int(total * fraction + 0.999)) if total else 0
    report = VerifyReport()
    for v in catalog.videos_for_scrub(n):
        _check(archive, catalog, v, report)
    level = "error" if report.problems else "info"
    catalog.log_event(level, "scrub", f"scrub checked {report.checked}, {report.problems} problem(s)")
    getattr(_log, level)("scrub done", **report.to_dict())
    if problems is not None and not (archive.root / MARKER_NAME).is_file():
        _log.warning("scrub findings not judged: the archive disk went away during the scrub")
    elif problems is not None:
        message = scrub_problem(report, datetime.fromtimestamp(now()).astimezone().strftime("%Y-%m-%d %H:%M"))
        if message is None:
            problems.resolve(INTEGRITY, "the scrub found the archive whole again")
        else:
            problems.report(INTEGRITY, INTEGRITY, message)
    return report


INTEGRITY = "integrity"  # the problem's key and kind


def scrub_problem(report: VerifyReport, when: str) -> str | None:
    """What the owner is told about a scrub's findings (None: nothing wrong).

    A video that failed is not marked verified, so the next scrub looks at it first: a clean scrub means
    the earlier findings are mended. The time is in the message so the owner reads when a scrub last found
    them (the notification, one per problem, is not repeated; the scrub's ping follows `scrub_result`)."""
    if not report.problems:
        return None
    return (
        f"the scrub at {when} found archived videos that are not as archived: {_findings(report)}; "
        "run `draftsync verify` for the full list and restore them from a backup or the phone"
    )


def _findings(report: VerifyReport) -> str:
    parts = [(report.missing, "missing"), (report.changed, "changed"), (report.unreadable, "unreadable"),
             (report.no_sidecar, "without a sidecar"), (report.unknown, "unknown")]  # fmt: skip
    found = ", ".join(f"{len(xs)} {what}" for xs, what in parts if xs)
    example = next(xs[0] for xs, _ in parts if xs)
    return f"{found} (e.g. {example})"


def scrub_result(report: VerifyReport) -> RunResult:
    """The scrub's own verdict, for its ping: failed whenever this scrub found anything, even when the
    standing problem's message is the same as the last scrub's."""
    if not report.problems:
        return RunResult(True, f"checked {report.checked} video(s): all as archived")
    return RunResult(False, f"checked {report.checked} video(s), not as archived: {_findings(report)}")


@dataclass
class ReindexReport:
    videos: int = 0
    orphans_described: int = 0
    bad_sidecars: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "orphans_described": self.orphans_described,
            "bad_sidecars": self.bad_sidecars,
        }


def reindex(
    archive: Archive, catalog: Catalog, describe_orphan: Callable[[str], VideoRecord | None] | None = None
) -> ReindexReport:
    """Rebuild videos and sources from the sidecars. A video without a sidecar is described anew."""
    report = ReindexReport()
    records: list[VideoRecord] = []
    orphans: list[str] = []
    damaged: list[str] = []
    entries = list(archive.walk())
    sidecars = {rel for kind, rel in entries if kind == "sidecar"}
    for kind, rel in entries:
        if kind != "video":
            continue
        if not names.is_text(rel):
            report.bad_sidecars.append(f"{names.readable(rel)}: the file name is not valid UTF-8; rename the file")
            continue
        sc = rel + SIDECAR_SUFFIX
        if sc not in sidecars:
            orphans.append(rel)
            continue
        problem = archive.sidecar_problem(rel)
        if problem is None:
            data = archive.read_sidecar(rel)
            try:
                records.append(record_from_sidecar(data or {}, rel))
                continue
            except ValueError as e:  # changed under us
                problem = str(e)
        report.bad_sidecars.append(f"{sc}: {problem}; the video is described anew from its file")
        damaged.append(rel)
    for rel in damaged:
        kept = archive.set_aside(rel + SIDECAR_SUFFIX)
        _log.warning("bad sidecar set aside", sidecar=rel + SIDECAR_SUFFIX, kept_as=str(kept) if kept else None)
        orphans.append(rel)
    with catalog.tx():
        catalog.clear_for_reindex()
        for r in records:
            if catalog.add_video(r):
                report.videos += 1
                _restore_perceptual(catalog, archive.read_sidecar(r.archive_path) or {}, r.hash)
            else:
                report.bad_sidecars.append(f"{r.archive_path}{SIDECAR_SUFFIX}: duplicate content hash {r.hash}")
    for rel in orphans:
        rec = describe_orphan(rel) if describe_orphan else None
        if rec is not None:
            archive.write_sidecar(rec)
            if catalog.add_video(rec):
                report.videos += 1
                report.orphans_described += 1
    _log.info("reindex done", **report.to_dict())
    return report


def _restore_perceptual(catalog: Catalog, data: dict[str, Any], h: str) -> None:
    """Signatures, groups, similar takes and origin come back from the sidecar too: nothing is decoded again."""
    from draftsync.neardup import restore

    restore(catalog, h, data)
