"""Checking the offsite copy against the catalog: `offsite verify` and the scrub's offsite sample.

One listing of the prefix gives every object's size and ETag: an object missing, of the wrong size, or
whose ETag is not the one recorded when it was stored (overwritten behind draftsync's back) is found
without downloading anything. A sample is also HEADed (the BLAKE3 in its metadata) and, with `deep`,
downloaded and re-hashed. Objects that vanished are queued to be copied again; changed ones cannot be
(draftsync never overwrites) and stand as a problem until the owner moves them away.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from draftsync import log
from draftsync.offsite.plan import sidecar_key, target_id, video_key

if TYPE_CHECKING:
    from draftsync.catalog import Catalog
    from draftsync.config import Settings
    from draftsync.offsite.store import S3Store
    from draftsync.problems import Problems

_log = log.get("draftsync.offsite")

CHECK = "offsite:check"
SIDECAR_MAX = 1024 * 1024  # a sidecar is a few KiB; a bigger object under its key is not one


@dataclass
class CheckReport:
    objects: int = 0  # listed under the prefix
    checked: int = 0  # catalogued videos found in the bucket and compared
    ok: int = 0
    headed: int = 0
    rehashed: int = 0
    not_copied: int = 0  # the backlog: not expected in the bucket yet
    adopted: int = 0  # found there with the right content though the catalog did not know
    current: bool = True  # the configured target is the one the catalog's copy state is about
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.changed) + len(self.extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": self.objects, "checked": self.checked, "ok": self.ok, "headed": self.headed,
            "rehashed": self.rehashed, "not_copied": self.not_copied, "adopted": self.adopted,
            "problems": self.problems, "missing": self.missing, "changed": self.changed, "extra": self.extra,
        }  # fmt: skip


def choose_sample(hashes: list[str], fraction: float, rng: random.Random) -> set[str]:
    """A random `fraction` of the videos (at least one when there are any)."""
    if fraction >= 1:
        return set(hashes)
    if not hashes or fraction <= 0:
        return set()
    return set(rng.sample(hashes, max(1, math.ceil(len(hashes) * fraction))))


def sidecar_problem(video: str, meta_video: str | None, meta_blake3: str | None, content: str | None = None,
                    described: str | None = None) -> str:  # fmt: skip
    """Why a sidecar object is not one draftsync stored for `video` ('' when it is). `content` (its BLAKE3)
    and `described` (the hash its JSON names) are known only when it was downloaded."""
    if meta_video != video:
        return f"it describes {meta_video or 'no video (it has no draftsync metadata)'}, not {video}"
    if content is not None and content != meta_blake3:
        return f"its content hashes to {content}, its metadata says {meta_blake3}"
    if described is not None and described != video:
        return f"its JSON names {described or 'no hash'}, not {video}"
    return ""


def _check_sidecar(store: S3Store, key: str, video: str, deep: bool) -> str:
    """HEAD a sidecar object (and with `deep`, download it) and say what is wrong with it."""
    import json

    import blake3

    if not deep:
        head = store.head(key)
        return "vanished while being checked" if head is None else sidecar_problem(video, head.video, head.blake3)
    remote, body = store.get(key)
    hasher, data = blake3.blake3(), bytearray()
    for chunk in store.read_chunks(body, "downloading", key):
        hasher.update(chunk)
        if len(data) <= SIDECAR_MAX:
            data += chunk
    try:
        described = str(json.loads(data).get("hash") or "") if len(data) <= SIDECAR_MAX else ""
    except (ValueError, AttributeError):
        described = ""
    return sidecar_problem(video, remote.video, remote.blake3, "blake3:" + hasher.hexdigest(), described)


def verify(
    settings: Settings,
    catalog: Catalog,
    store: S3Store,
    *,
    sample: float = 1.0,
    deep: bool = False,
    chosen: set[str] | None = None,
    rng: random.Random | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
) -> CheckReport:
    """Compare the bucket with the catalog. `chosen` (hashes) overrides the random `sample`."""
    cfg = settings.offsite
    report = CheckReport()
    tid = target_id(cfg)
    report.current = here = catalog.offsite_target() in (None, tid)
    if here:
        catalog.offsite_retarget(tid)  # the first look records the target; it never moves state
        catalog.offsite_add_missing(clock())
    listing = {o.key: o for o in store.objects()}
    report.objects = len(listing)
    videos = catalog.iter_videos()
    # Another target than the copy's (an environment override, a typo): compared with what draftsync recorded
    # for it when it copied there, if ever, and nothing in the catalog changes; only a copy pass moves state.
    rows = {r["hash"]: r for r in (catalog.offsite_rows() if here else catalog.offsite_shelved(tid))}
    if chosen is None:
        chosen = choose_sample([v.hash for v in videos], sample, rng or random.Random())
    expected: set[str] = set()
    requeue: list[str] = []
    now = clock()
    for v in videos:
        if should_stop():
            break
        vkey, skey = video_key(cfg.prefix, v.archive_path), sidecar_key(cfg.prefix, v.archive_path)
        expected.update((vkey, skey))
        row = rows.get(v.hash) or {}
        stored = row.get("state") == "stored"
        obj = listing.get(vkey)
        if obj is None:
            if stored:
                report.missing.append(vkey)
                requeue.append(v.hash)
            else:
                report.not_copied += 1
            continue
        report.checked += 1
        why = ""
        if obj.size != v.size:
            why = f"size {obj.size}, the archive has {v.size}"
        else:
            etag_moved = bool(stored and row.get("etag") and obj.etag != row["etag"])
            if v.hash in chosen or etag_moved or not stored or not row.get("etag"):
                head = store.head(vkey)
                report.headed += 1
                if head is None:
                    why = "vanished while being checked"
                elif head.blake3 is not None and head.blake3 != v.hash:
                    why = f"its BLAKE3 metadata says {head.blake3}, the archive has {v.hash}"
                elif (deep and v.hash in chosen) or etag_moved or head.blake3 is None:
                    got = store.hash_object(vkey)
                    report.rehashed += 1
                    if got != v.hash:
                        why = f"its content hashes to {got}, the archive has {v.hash}"
        if why:
            report.changed.append(f"{vkey}: {why}")
            _log.error("offsite object changed", key=vkey, why=why)
            continue
        if skey not in listing:
            if stored:
                report.missing.append(skey)
                requeue.append(v.hash)
            else:
                report.not_copied += 1
            continue
        # The sidecar is what a restore trusts for the video's hash, label and date: it is checked as well.
        if v.hash in chosen or not stored:
            why = _check_sidecar(store, skey, v.hash, deep and v.hash in chosen)
            if why:
                report.changed.append(f"{skey}: {why}")
                _log.error("offsite object changed", key=skey, why=why)
                continue
        report.ok += 1
        if stored:
            if here:
                catalog.offsite_update(v.hash, checked_at=now)
            continue
        if here:
            catalog.offsite_update(v.hash, state="stored", etag=obj.etag, stored_at=now, checked_at=now, owner=None,
                                   reason="found in the bucket", upload_id=None, attempts=0)  # fmt: skip
        report.adopted += 1
    report.extra = sorted(k for k in listing if k not in expected)
    if requeue and here:
        catalog.offsite_requeue(requeue, "missing from the bucket; copied again")
    return report


def tell(report: CheckReport, problems: Problems | None, what: str) -> None:
    """Changed objects stand as a problem until a check finds none; vanished ones are a notice (they heal)."""
    if problems is None:
        return
    if report.changed:
        problems.report(CHECK, "offsite", (
            f"{what} found {len(report.changed)} object(s) in the bucket that are not what draftsync stored, e.g. "
            f"{report.changed[0]}; they are never overwritten: move them away, then run `draftsync offsite verify` (it "
            "finds them missing) and `draftsync offsite sync` (it copies them again)"
        ))  # fmt: skip
    else:
        problems.resolve(CHECK)
    if report.missing:
        problems.notice("offsite", f"{what} found {len(report.missing)} object(s) missing from the bucket, e.g. "
                        f"{report.missing[0]}; they are being copied again")  # fmt: skip


def scrub(
    settings: Settings,
    catalog: Catalog,
    store: S3Store,
    *,
    problems: Problems | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CheckReport | None:
    """The scheduled scrub's offsite part: the whole listing, plus the least recently checked
    `offsite.scrub_fraction` of the copy downloaded and re-hashed."""
    from draftsync.offsite.store import StoreError

    stored = catalog.offsite_counts()["videos"].get("stored", 0)
    n = math.ceil(stored * settings.offsite.scrub_fraction)
    chosen = {r["hash"] for r in catalog.offsite_for_scrub(n)} if n else set()
    from draftsync.offsite.plan import Kind
    from draftsync.offsite.upload import ACCESS

    try:
        report = verify(settings, catalog, store, deep=True, chosen=chosen, should_stop=should_stop)
    except StoreError as e:
        _log.warning("offsite scrub could not run", error=str(e))
        catalog.log_event("warning", "offsite_scrub", f"offsite scrub could not run: {e}")
        if e.kind in (Kind.AUTH, Kind.BUCKET) and problems is not None:
            # With nothing left to copy, the scrub is the only one asking the bucket: revoked credentials or a
            # deleted bucket must not wait for the next video to become visible. The daemon probes again.
            problems.report(ACCESS, "offsite", str(e))
        return None
    if problems is not None:
        problems.resolve(ACCESS)
    level = "error" if report.changed else "info"
    msg = (f"offsite scrub: {report.checked} objects compared, {report.rehashed} re-hashed, {len(report.missing)} "
           f"missing, {len(report.changed)} changed, {len(report.extra)} not draftsync's")  # fmt: skip
    catalog.log_event(level, "offsite_scrub", msg)
    getattr(_log, level)("offsite scrub done", **report.to_dict())
    tell(report, problems, "the offsite scrub")
    return report
