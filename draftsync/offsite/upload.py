"""Copying the backlog: each archived video and then its sidecar become objects under the prefix, with
bounded concurrency and memory, never replacing an object, resumable after any crash.

Order for one video (what makes kill -9 harmless at every point):
1. claim its catalog row (compare-and-set on the owner, so the daemon and `offsite sync` share the work);
2. HEAD the key: the same content there already is success (adopted), other content is a clash;
3. small videos go in one conditional PutObject; large ones as a multipart upload whose id is written to
   the catalog before the first part is sent and whose parts are recorded as the store acknowledges them;
   a restarted copy asks the store which parts it holds and sends only the rest;
4. every byte sent is hashed on the way; if the BLAKE3 differs from the catalog's, nothing is completed;
5. CompleteMultipartUpload with If-None-Match (no partial object is ever visible), then the sidecar;
6. the row becomes `stored` with the object's ETag.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import blake3

from draftsync import log
from draftsync.archive import sidecar_path
from draftsync.marker import archive_present
from draftsync.offsite.plan import (
    Kind,
    Outcome,
    abandoned,
    cleanup_due,
    describe_target,
    part_size_for,
    parts,
    sidecar_key,
    step,
    target_config,
    target_id,
    video_key,
)
from draftsync.offsite.store import Remote, S3Store, StoreError, Throttle

if TYPE_CHECKING:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog
    from draftsync.config import Settings
    from draftsync.problems import Problems

_log = log.get("draftsync.offsite")

STALE_CLAIM = 900.0  # a claim not touched for this long is a dead process's, even if its pid was reused
UNREACHABLE_AFTER = 3600.0  # the store failing this long (with work waiting) becomes a standing problem
ACCESS = "offsite:access"  # credentials or bucket: one problem, one clear message
FAILED = "offsite:failed"
UNREACHABLE = "offsite:unreachable"
LEFT_BEHIND = "offsite:left-behind"  # unfinished uploads on a target draftsync moved away from


def clash_key(key: str) -> str:
    return f"offsite:clash:{key}"


class Progress(Protocol):
    def start(self, total_bytes: int, files: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def item(self, rel: str, outcome: str, detail: str) -> None: ...


class _Stopped(Exception):
    pass


class _Done(Exception):
    """An item's fate is decided before the end of its copy (clash, local change, adopted)."""

    def __init__(self, outcome: Outcome, detail: str = "", etag: str | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.etag = etag


@dataclass
class PassReport:
    stored: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    paused: str | None = None  # credentials or bucket
    transient: str | None = None  # the last network or server error
    stopped: bool = False
    busy_elsewhere: int = 0  # videos another live process is copying
    left: int = 0  # videos not stored after the pass

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored, "adopted": self.adopted, "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "paused": self.paused, "transient": self.transient, "stopped": self.stopped, "left": self.left,
        }  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset`; returns the bytes read (fewer only at the end of the file)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            break
        got += n
    return got


class Buffers:
    """The bytes in flight: `n` reusable part buffers. Taking one is the concurrency bound, and memory stays
    at n x part size however large the video and however many videos are copied at once."""

    def __init__(self, n: int) -> None:
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(n):
            self._free.put(bytearray())

    def take(self, size: int, waiting: Callable[[], None]) -> bytearray:
        while True:
            try:
                buf = self._free.get(timeout=0.25)
                break
            except queue.Empty:
                waiting()
        if len(buf) < size:
            buf = bytearray(size)
        return buf

    def give(self, buf: bytearray) -> None:
        self._free.put(buf)


class Uploader:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        archive: Archive,
        *,
        store: S3Store | None = None,
        problems: Problems | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        owner: int | None = None,
        clock: Callable[[], float] = time.time,
        beat: Callable[[], None] = lambda: None,
        nice: int = 0,
    ) -> None:
        self.settings = settings
        self.cfg = settings.offsite
        self.catalog = catalog
        self.archive = archive
        self.concurrency = self.cfg.concurrency
        throttle = Throttle(self.cfg.bandwidth_limit) if self.cfg.bandwidth_limit else None
        self.store = store or S3Store(self.cfg, concurrency=self.concurrency, throttle=throttle)
        self.problems = problems
        self.should_stop = should_stop
        self.owner = owner if owner is not None else os.getpid()
        self.clock = clock
        self.beat = beat
        self.nice = nice  # the daemon copies at a lower CPU priority than ingest
        self.progress: Progress | None = None
        self._buffers = Buffers(self.concurrency)
        self._halt: str | None = None
        self._report = PassReport()
        self._lock = threading.Lock()

    # --- one pass -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Bring the catalog's copy state up to date: the configured target's state becomes the current one
        (the previous target's is shelved, not forgotten); every video gets a row."""
        moved = self.catalog.offsite_retarget(target_id(self.cfg), self.clock())
        if moved.previous is not None:
            _log.warning("the offsite target changed; the previous one's copy state is kept for a switch back",
                         previous=describe_target(moved.previous), url=self.cfg.url,
                         known_here=moved.restored, unfinished_there=len(moved.unfinished))  # fmt: skip
            if moved.unfinished:
                self._abort_left_behind()
        self.catalog.offsite_add_missing(self.clock())

    def _moving_busy(self) -> str | None:
        """Another live process copying to the current target: the state must not move under its feet."""
        now = self.clock()
        for r in self.catalog.offsite_rows(("uploading",)):
            owner = r["owner"]
            if owner not in (None, self.owner) and _alive(owner) and r["updated_at"] > now - STALE_CLAIM:
                return (f"another draftsync process (pid {owner}) is copying to "
                        f"{describe_target(self.catalog.offsite_target() or '')}; the offsite copy moves to "
                        f"{self.cfg.url} once it has stopped")  # fmt: skip
        return None

    def check(self) -> bool:
        """Can we reach the bucket? An unreachable or refusing store is recorded; False then."""
        try:
            self.store.check()
        except StoreError as e:
            self._store_failed(e)
            return False
        self._reachable()
        return True

    def drain(self, *, retry_failed: bool = False, now: bool = False, progress: Progress | None = None) -> PassReport:
        """Copy every due video (and, if asked, the failed ones again); return what happened.

        `now` ignores the backoffs: `offsite sync` is the owner asking for the backlog at once, and a video
        still waiting out a backoff must not make it end with work left and nothing said."""
        self._report = report = PassReport()
        self._halt = None
        self.progress = progress
        moving = self.catalog.offsite_target() not in (None, target_id(self.cfg))
        if moving:
            # The copy state moves to a new target only once that target answers: a typo in endpoint_url or
            # the bucket changes nothing, and the old target's unfinished uploads are not touched for it.
            busy = self._moving_busy()
            if busy is not None:
                report.transient = busy
                report.left = self._left()
                return report
            if not self.check():
                report.left = self._left()
                return report
        self.prepare()
        states = ("pending", "uploading", "failed") if retry_failed else ("pending", "uploading")
        paused = self.problems is not None and self.problems.get(ACCESS) is not None
        if not paused and not self.catalog.offsite_due(float("inf") if now else self.clock(), states, 1):
            self._housekeeping()
            report.left = self._left()
            return report  # nothing to copy (but a pause is probed until it lifts)
        if not moving and not self.check():
            report.left = self._left()
            return report
        # The backoffs were about the store (down, refusing); it answers now, so everything waiting goes.
        self.catalog.offsite_due_now()
        self._housekeeping()
        if progress is not None:
            c = self.catalog.offsite_counts()
            todo = [s for s in states if s in c["bytes"]]
            progress.start(max(0, sum(c["bytes"][s] for s in todo) - c["sent_in_parts"]),
                           sum(c["videos"][s] for s in todo))  # fmt: skip
        tried: set[str] = set()

        def init() -> None:
            if self.nice:
                try:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
                except OSError:
                    pass

        with (
            ThreadPoolExecutor(self.concurrency, "offsite-part", initializer=init) as self._parts,
            ThreadPoolExecutor(self.concurrency, "offsite-item", initializer=init) as items,
        ):
            running: dict[Future[tuple[Outcome, str, str | None]], dict[str, Any]] = {}
            while True:
                if self._halt or self.should_stop():
                    break
                free = self.concurrency - len(running)
                if free > 0:
                    for row in self._claim(states, free, tried, {r["hash"] for r in running.values()}):
                        tried.add(row["hash"])
                        running[items.submit(self._one, row)] = row
                if not running:
                    break
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                self.beat()
                for f in done:
                    row = running.pop(f)
                    outcome, detail, etag = f.result()
                    self._finish(row, outcome, detail, etag)
                    if outcome is Outcome.UPLOAD_GONE:
                        tried.discard(row["hash"])
            for f in list(running):
                outcome, detail, etag = f.result()
                self._finish(running.pop(f), outcome, detail, etag)
        report.stopped = self.should_stop()
        report.left = self._left()
        self._after_pass(report)
        return report

    def _left(self) -> int:
        c = self.catalog.offsite_counts()["videos"]
        return sum(c.values()) - c.get("stored", 0)

    def _claim(self, states: tuple[str, ...], n: int, tried: set[str], running: set[str]) -> list[dict[str, Any]]:
        now = self.clock()
        out: list[dict[str, Any]] = []
        self._report.busy_elsewhere = 0
        for row in self.catalog.offsite_due(now, states, n + len(tried) + len(running) + 16):
            h, owner = row["hash"], row["owner"]
            if h in running or h in tried:
                continue
            if owner not in (None, self.owner) and _alive(owner) and row["updated_at"] > now - STALE_CLAIM:
                self._report.busy_elsewhere += 1
                continue
            if self.catalog.offsite_take(h, self.owner, owner, now):
                out.append(row)
                if len(out) >= n:
                    break
        return out

    # --- one video ------------------------------------------------------------------------------------

    def _one(self, row: dict[str, Any]) -> tuple[Outcome, str, str | None]:
        rel, h = row["archive_path"], row["hash"]
        key = video_key(self.cfg.prefix, rel)
        try:
            path = self.archive.path_of(rel)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                if not archive_present(self.archive.root):
                    # The disk is away, not the file: it waits (the daemon reports archive_missing).
                    return Outcome.TRANSIENT, f"the archive {self.archive.root} is not available; {rel} waits", None
                return Outcome.LOCAL_MISSING, f"{rel} is missing from the archive (see `draftsync verify`)", None
            try:
                if os.fstat(fd).st_size != row["size"]:
                    raise _Done(Outcome.LOCAL_CHANGED, self._changed_msg(rel))
                remote = self.store.head(key)
                if remote is not None:
                    etag = self._judge(remote, row, key)
                    self._sidecar(path, rel, h)
                    return Outcome.ADOPTED, "", etag
                if row["size"] <= self.cfg.part_size_mib * 1024 * 1024:
                    etag = self._put(fd, row, key)
                else:
                    etag = self._multipart(fd, row, key)
            finally:
                os.close(fd)
            self._sidecar(path, rel, h)
            return Outcome.STORED, "", etag
        except _Done as d:
            return d.outcome, d.detail, d.etag
        except _Stopped:
            return Outcome.STOPPED, "", None
        except StoreError as e:
            return self._store_failed(e), str(e), None
        except OSError as e:
            return Outcome.TRANSIENT, f"cannot read {rel} in the archive: {e.strerror or e}", None

    def _changed_msg(self, rel: str) -> str:
        return (f"{rel} no longer has the content the catalog recorded (its BLAKE3 or size differs); nothing was "
                "copied. Run `draftsync verify`")  # fmt: skip

    def _meta(self, h: str) -> dict[str, str]:
        return {"blake3": h}

    def _judge(self, remote: Remote, row: dict[str, Any], key: str) -> str:
        """An object already has the key: ours (return its ETag) or a clash (raise)."""
        if remote.size == row["size"] and remote.blake3 == row["hash"]:
            return remote.etag
        if remote.size == row["size"] and remote.blake3 is None and self.store.hash_object(key) == row["hash"]:
            # Copied there by another tool (no metadata) but the very same bytes.
            return remote.etag
        raise _Done(Outcome.CLASH, (
            f"the bucket already holds a different object at {key} (size {remote.size}, BLAKE3 "
            f"{remote.blake3 or 'not recorded'}; the archive has size {row['size']}, {row['hash']}); draftsync never "
            "overwrites: move or delete that object, then run `draftsync offsite sync`"
        ))  # fmt: skip

    def _take(self, size: int) -> bytearray:
        def waiting() -> None:
            self.beat()
            if self.should_stop() or self._halt:
                raise _Stopped()

        return self._buffers.take(size, waiting)

    def _sent(self) -> Callable[[int], None] | None:
        return (lambda n: self.beat()) if self.store.throttle is not None else None

    def _put(self, fd: int, row: dict[str, Any], key: str) -> str:
        size = row["size"]
        buf = self._take(size)
        try:
            data = memoryview(buf)[:size]
            if _read_into(fd, data, 0) != size or "blake3:" + blake3.blake3(data).hexdigest() != row["hash"]:
                raise _Done(Outcome.LOCAL_CHANGED, self._changed_msg(row["archive_path"]))
            try:
                etag = self.store.put(key, data, self._meta(row["hash"]), self._sent())
            except StoreError as e:
                if e.kind is not Kind.PRECONDITION:
                    raise
                # Someone (another process, or our own earlier try) created it between HEAD and PUT.
                remote = self.store.head(key)
                if remote is None:
                    raise
                return self._judge(remote, row, key)
            if self.progress is not None:
                self.progress.advance(size)
            self.beat()
            return etag
        finally:
            self._buffers.give(buf)

    def _multipart(self, fd: int, row: dict[str, Any], key: str) -> str:
        h, size, rel = row["hash"], row["size"], row["archive_path"]
        upload_id: str | None = row["upload_id"]
        ps = row["part_size"] or part_size_for(size, self.cfg.part_size_mib * 1024 * 1024)
        have: dict[int, tuple[str, int, str | None]] = {}
        if upload_id:
            held = self.store.list_parts(key, upload_id)
            if held is None:
                _log.info("the unfinished upload is gone from the store; starting it again", archive_path=rel)
                self.catalog.offsite_update(h, upload_id=None)
                upload_id = None
            else:
                # Only parts both sides agree on are kept; anything else is sent (again).
                have = {n: p for n, p in self.catalog.offsite_parts(h, upload_id).items() if held.get(n) == p[:2]}
                _log.info("resuming an upload", archive_path=rel, parts_held=len(have), upload_id=upload_id)
        if not upload_id:
            ps = part_size_for(size, self.cfg.part_size_mib * 1024 * 1024)
            upload_id = self.store.create_upload(key, self._meta(h))
            # Recorded before the first part leaves, so a crash from here on resumes this upload.
            self.catalog.offsite_update(h, upload_id=upload_id, part_size=ps)
        hasher = blake3.blake3()
        futures: list[Future[None]] = []
        short = False
        try:
            for n, off, length in parts(size, ps):
                if self.should_stop() or self._halt:
                    raise _Stopped()
                if any(f.done() and f.exception() for f in futures):
                    break
                buf: bytearray | None = self._take(length)
                assert buf is not None
                try:
                    data = memoryview(buf)[:length]
                    if _read_into(fd, data, off) != length:
                        short = True
                        break
                    hasher.update(data)
                    if n in have:  # the store holds this part already: it is only hashed
                        if self.progress is not None:
                            self.progress.advance(length)
                        continue
                    futures.append(self._parts.submit(self._send_part, h, key, upload_id, n, buf, length))
                    buf = None  # the part's sender gives it back
                finally:
                    if buf is not None:
                        self._buffers.give(buf)
        finally:
            wait(futures)
        for f in futures:
            e = f.exception()
            if e is not None:
                raise e
        if short or "blake3:" + hasher.hexdigest() != h:
            self.store.abort(key, upload_id)
            self.catalog.offsite_update(h, upload_id=None)
            raise _Done(Outcome.LOCAL_CHANGED, self._changed_msg(rel))
        done = self.catalog.offsite_parts(h, upload_id)
        try:
            return self.store.complete(key, upload_id, [(n, p[0], p[2]) for n, p in done.items()])
        except StoreError as e:
            if e.kind not in (Kind.PRECONDITION, Kind.NO_UPLOAD):
                raise
            remote = self.store.head(key)
            if e.kind is Kind.PRECONDITION:
                self.store.abort(key, upload_id)
            if remote is None:
                raise _Done(Outcome.UPLOAD_GONE, str(e)) from None
            return self._judge(remote, row, key)

    def _send_part(self, h: str, key: str, upload_id: str, n: int, buf: bytearray, length: int) -> None:
        try:
            etag, crc = self.store.upload_part(key, upload_id, n, memoryview(buf)[:length], self._sent())
            self.catalog.offsite_add_part(h, upload_id, n, etag, length, crc)
            if self.progress is not None:
                self.progress.advance(length)
            self.beat()
        finally:
            self._buffers.give(buf)

    def _sidecar(self, video: Any, rel: str, h: str) -> None:
        """The sidecar as it is now; an existing sidecar object of the same video is fine (it may be older)."""
        skey = sidecar_key(self.cfg.prefix, rel)
        try:
            body = sidecar_path(video).read_bytes()
        except FileNotFoundError:
            _log.warning("no sidecar beside an archived video; copying the video alone", archive_path=rel)
            return
        meta = {"blake3": "blake3:" + blake3.blake3(body).hexdigest(), "video-blake3": h}
        try:
            self.store.put(skey, body, meta)
        except StoreError as e:
            if e.kind is not Kind.PRECONDITION:
                raise
            remote = self.store.head(skey)
            if remote is not None and remote.video != h:
                raise _Done(Outcome.CLASH, (
                    f"the bucket already holds a different sidecar at {skey} (it describes "
                    f"{remote.video or 'an unknown video'}); draftsync never overwrites: move or delete it, then run "
                    "`draftsync offsite sync`"
                )) from None  # fmt: skip

    # --- results --------------------------------------------------------------------------------------

    def _finish(self, row: dict[str, Any], outcome: Outcome, detail: str, etag: str | None) -> None:
        now = self.clock()
        h, rel = row["hash"], row["archive_path"]
        st = step(row["attempts"], outcome, now, detail)
        fields: dict[str, Any] = {"state": st.state, "attempts": st.attempts, "reason": st.reason,
                                  "next_try": st.next_try, "owner": None}  # fmt: skip
        if st.state == "stored":
            fields.update(etag=etag, stored_at=now, checked_at=now)
        if not st.keep_upload:
            fields["upload_id"] = None
        if not st.keep_upload and row["upload_id"] and outcome not in (Outcome.STORED, Outcome.ADOPTED):
            try:
                self.store.abort(video_key(self.cfg.prefix, rel), row["upload_id"])
            except StoreError:
                pass
        self.catalog.offsite_update(h, now=now, **fields)
        key = video_key(self.cfg.prefix, rel)
        r = self._report
        if outcome is Outcome.STORED:
            r.stored.append(rel)
            _log.info("copied offsite", archive_path=rel, key=key)
        elif outcome is Outcome.ADOPTED:
            r.adopted.append(rel)
            _log.info("already in the bucket", archive_path=rel, key=key)
        elif st.state == "failed":
            r.failed.append((rel, detail))
            self._last_error(detail)
            if outcome is Outcome.CLASH and self.problems is not None:
                self.problems.report(clash_key(key), "offsite", detail)
            else:
                _log.error("offsite copy failed", archive_path=rel, reason=detail)
        if st.state == "stored" and self.problems is not None:
            self.problems.resolve(clash_key(key))
        if self.progress is not None:
            self.progress.item(rel, outcome.value, detail)

    def _store_failed(self, e: StoreError) -> Outcome:
        """Record a store failure; AUTH/BUCKET halt the pass and pause, TRANSIENT halts it for a backoff."""
        msg = str(e)
        with self._lock:
            self._last_error(msg)
            if e.kind in (Kind.AUTH, Kind.BUCKET):
                first = self._halt is None
                self._halt = msg
                self._report.paused = msg
                if first:
                    if self.problems is not None:
                        self.problems.report(ACCESS, "offsite", msg)
                    else:
                        _log.error("offsite copy paused", error=msg)
                    self.store.reset()
                return Outcome.PAUSED
            if e.kind is Kind.TRANSIENT:
                self._halt = self._halt or msg
                self._report.transient = msg
                # The record `status` shows is the daemon's, which does try again after a backoff.
                self._last_error(f"{msg}; it is retried later")
                _log.warning("offsite store unreachable or failing; retrying later", error=msg)
                return Outcome.TRANSIENT
            if e.kind is Kind.NO_UPLOAD:
                return Outcome.UPLOAD_GONE
            return Outcome.REJECTED

    def _last_error(self, msg: str) -> None:
        self.catalog.set_meta("offsite_last_error", json.dumps({"at": self.clock(), "message": msg}))

    def _reachable(self) -> None:
        self.catalog.set_meta("offsite_last_ok", str(self.clock()))
        if self.problems is not None:
            self.problems.resolve(ACCESS)
            self.problems.resolve(UNREACHABLE)

    def _after_pass(self, report: PassReport) -> None:
        if report.stored or report.adopted:
            self._reachable()
        if self.problems is None:
            return
        if report.transient and report.left:
            last_ok = float(self.catalog.get_meta("offsite_last_ok") or 0)
            if last_ok and self.clock() - last_ok >= UNREACHABLE_AFTER:
                self.problems.report(UNREACHABLE, "offsite", (
                    f"the offsite store has been failing since {time.strftime('%Y-%m-%d %H:%M', time.localtime(last_ok))} "
                    f"with {report.left} video(s) waiting: {report.transient}"
                ), severity="warning")  # fmt: skip
        failed = [r for r in self.catalog.offsite_rows(("failed",)) if not (r["reason"] or "").startswith("the bucket")]
        if failed:
            eg = failed[0]
            self.problems.report(FAILED, "offsite", (
                f"{len(failed)} video(s) cannot be copied offsite, e.g. {eg['archive_path']}: {eg['reason']}; "
                "`draftsync offsite sync` tries them again"
            ))  # fmt: skip
        else:
            self.problems.resolve(FAILED)

    # --- housekeeping --------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        """Once a day, copying or not: abort the multipart uploads draftsync abandoned (they cost storage)."""
        now = self.clock()
        last = self.catalog.get_meta("offsite_cleanup_at")
        if not cleanup_due(float(last) if last else None, now):
            return
        self.catalog.set_meta("offsite_cleanup_at", str(now))  # tried, even if the store fails: once a day
        self._abort_orphans()
        self._abort_left_behind()

    def _abort_orphans(self) -> None:
        """Abort day-old multipart uploads draftsync started on this target and no longer tracks (see
        `plan.abandoned`: never another tool's, even with an empty prefix)."""
        try:
            uploads = self.store.list_uploads()
            known = self.catalog.offsite_upload_ids()
            keys = {video_key(self.cfg.prefix, r["archive_path"]) for r in self.catalog.offsite_rows()}
            for key, uid in abandoned(uploads, known, keys, self.cfg.prefix, self.clock()):
                self.store.abort(key, uid)
                _log.info("aborted an abandoned multipart upload", key=key, upload_id=uid)
        except StoreError as e:
            _log.warning("could not look for abandoned uploads", error=str(e))

    def _abort_left_behind(self) -> None:
        """Abort the unfinished uploads draftsync recorded on targets it moved away from (same credentials).
        Their videos stay shelved as not copied there; what cannot be aborted stands as a problem, since
        storage services charge for the parts until someone does."""
        stuck: dict[str, list[str]] = {}
        for target, h, rel, uid in self.catalog.offsite_shelved_uploads():
            there = target_config(self.cfg, target)
            key = video_key(there.prefix, rel)
            try:
                S3Store(there, concurrency=1).abort(key, uid)
            except StoreError as e:
                stuck.setdefault(target, []).append(f"{key} (upload id {uid}): {e}")
                continue
            self.catalog.offsite_shelf_forget_upload(target, h)
            _log.info("aborted an unfinished upload on a target draftsync moved away from",
                      target=describe_target(target), key=key, upload_id=uid)  # fmt: skip
        if stuck:
            target, items = next(iter(stuck.items()))
            msg = (f"{sum(map(len, stuck.values()))} unfinished multipart upload(s) that draftsync started on "
                   f"{describe_target(target)} before [offsite] pointed elsewhere could not be aborted, e.g. "
                   f"{items[0]}; they use storage there until aborted: point [offsite] back at it (they resume), "
                   "or abort them with your storage's tools or a lifecycle rule; draftsync tries again daily")  # fmt: skip
            if self.problems is not None:
                self.problems.report(LEFT_BEHIND, "offsite", msg, severity="warning")
            else:
                _log.error("unfinished uploads left behind", message=msg)
        elif self.problems is not None:
            self.problems.resolve(LEFT_BEHIND)
