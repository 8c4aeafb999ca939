"""One file through the pipeline: a settled path is fingerprinted, looked up in the catalog, copied into
the archive once (hashing in the same read), verified, placed, described by its sidecar, catalogued.

The order is what makes a crash harmless: the video is placed (never over anything) before its sidecar,
and the sidecar before the catalog row; a rerun finds the placed file by name and content and adopts it.
Nothing is written under the archive root unless the guard says the archive is there and ours. A source
that changes while it is read (size, mtime, inode or ctime: `settle.unchanged`) is dropped and settles
again. The archived copy keeps the source's modification time.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from draftsync import log, names
from draftsync.archive import (
    Archive,
    choose_label,
    free_space,
    layout_fields,
    record_from_sidecar,
    render_path,
    split_layout,
)
from draftsync.catalog import Catalog, SourceSighting, VideoRecord
from draftsync.config import Settings
from draftsync.errors import ArchiveFull, ItemError, SourceChanged, SourceGone, SourceUnreadable
from draftsync.fingerprint import MediaFacts, capture_time, hash_file, new_hasher, probe
from draftsync.marker import ArchiveGuard
from draftsync.settle import Version, unchanged

_log = log.get("draftsync.ingest")


@dataclass
class Outcome:
    kind: str  # archived | seen | known | empty | skipped
    path: str
    hash: str | None = None
    archive_path: str | None = None
    detail: str = ""


# Files one video needs on the archive disk: the temp copy (linked to its name) and the sidecar's temp
# and final name, plus a folder or two.
INODES_PER_VIDEO = 8


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        archive: Archive,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        guard: ArchiveGuard | None = None,
        beat: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.archive = archive
        self.should_stop = should_stop
        self.guard = guard or ArchiveGuard(archive.root, catalog)
        self.beat = beat  # a worker's heartbeat, called per chunk of a long copy or hash
        self.tz = settings.archive.tz()
        self._place_lock = threading.Lock()

    def _check_space(self, size: int) -> None:
        fs = free_space(self.archive.root)
        if fs is None:
            return
        free, inodes = fs
        need = size + self.settings.archive.min_free_mib * 1024 * 1024
        if free < need:
            raise ArchiveFull(
                f"the archive disk has {free // 2**20} MiB free and this video needs {need // 2**20} MiB "
                "(size plus archive.min_free_mib); ingest pauses until space returns",
                needed=need,
            )
        if inodes < INODES_PER_VIDEO:
            raise ArchiveFull(
                f"the archive disk has no free inodes left ({inodes}): it cannot hold another file although "
                f"{free // 2**20} MiB are free; ingest pauses until files can be created again",
                needed=need, inodes=True,
            )  # fmt: skip

    def ingest(self, path: str, root: str) -> Outcome:
        """Archive `path` (under watch root `root`) once. Raises ItemError subclasses or ArchiveFull."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise SourceGone(f"{path} vanished before it could be archived", path) from None
        except OSError as e:
            raise SourceUnreadable(f"cannot stat {path}: {e.strerror}", path) from None
        if stat.S_ISLNK(st.st_mode):
            return Outcome("skipped", path, detail="symbolic link (never followed)")
        if not stat.S_ISREG(st.st_mode):
            return Outcome("skipped", path, detail="not a regular file")
        real_root = os.path.realpath(root)
        if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
            return Outcome("skipped", path, detail="resolves outside its watch root")
        version = Version.of(st)
        if self.catalog.source_unchanged(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
            return Outcome("known", path)
        sighting = SourceSighting(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, root, time.time(),
                                  st.st_ctime_ns)  # fmt: skip
        if st.st_size == 0:
            # An empty file is a placeholder (a sync tool about to write, or a failed export), not a video.
            self.catalog.record_source(sighting, None, "empty", durable=False)  # a rerun records it again
            return Outcome("empty", path, detail="empty file, nothing to back up")

        moved = self.catalog.hash_by_identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if moved is not None:
            return self._seen(sighting, moved, "same inode, size and mtime as an archived file (moved)")

        facts: MediaFacts | None
        probe_error: str | None = None
        try:
            facts = probe(path)
        except ValueError as e:
            facts, probe_error = None, str(e)
        except Exception as e:  # a media library fault must not stop a backup
            facts, probe_error = None, f"probe failed: {type(e).__name__}: {e}"

        name = os.path.basename(path)
        captured, source_of_date = capture_time(facts.creation_time if facts else None, name, st.st_mtime, self.tz,
                                                first_seen=sighting.first_seen)  # fmt: skip
        rel_src = os.path.relpath(path, root).replace(os.sep, "/")
        label = choose_label(self.settings.labels, self.settings.archive.default_label, rel_src, name, facts)
        p = PurePosixPath(names.as_latin1(name))
        fields = layout_fields(
            captured=captured, digest="0" * 64, label=label, ext=p.suffix, stem=p.stem,
            orientation=facts.orientation if facts else None,
        )  # fmt: skip
        head, _ = split_layout(self.settings.archive.layout)
        rel_dir = render_path(head, fields) if head else ""
        # Nothing is written (not even a folder) unless the archive is there and ours.
        self.guard.require()
        self._check_space(st.st_size)
        target_dir = self.archive.make_dirs(rel_dir)

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceGone(f"{path} vanished before it could be archived", path) from None
        except OSError as e:
            raise _read_error(e, path) from None
        with os.fdopen(fd, "rb", buffering=0) as src:
            before = Version.of(os.fstat(fd))
            if not unchanged(before, version):
                raise SourceChanged(f"{path} changed before it was read; waiting for it to settle", path)
            try:
                result = self.archive.copy_in(src, target_dir, new_hasher(st.st_size), should_stop=self.should_stop,
                                              beat=self.beat)  # fmt: skip
            except OSError as e:
                raise _read_error(e, path) from None
            except ArchiveFull as e:
                # Ingest resumes when this much is free again, not at the first free byte.
                e.needed = e.needed or st.st_size + self.settings.archive.min_free_mib * 1024 * 1024
                raise
            after = Version.of(os.fstat(fd))
        try:
            again: Version | None = Version.of(os.stat(path, follow_symlinks=False))
        except OSError:
            again = None
        # Rewritten in place (same size, mtime put back: the ctime still moves) or replaced by a new file:
        # this copy may be a version that never existed. Drop it; the file settles again.
        if not unchanged(after, before) or not unchanged(again, before):
            result.temp.abort()
            raise SourceChanged(f"{path} changed while it was copied; the copy was dropped", path)
        if result.size != st.st_size:
            result.temp.abort()
            raise SourceChanged(f"{path} read {result.size} bytes, expected {st.st_size}", path)
        if self.catalog.video(result.digest) is not None:
            # A copy of something archived: known now from the hash of the copy pass, so the source is read
            # once; the unsynced copy is dropped before it costs an fsync.
            result.temp.abort()
            return self._seen(sighting, result.digest, "identical content already archived")

        with result.temp as tmp:
            # fsync the copy, then read it back from the disk (its cached pages dropped first): what the disk
            # holds must hash like the source did.
            check, n, _ = self.archive.read_back(result, should_stop=self.should_stop, beat=self.beat)
            if check != result.digest or n != result.size:
                raise ItemError(f"verification failed writing {path} into {target_dir}; the copy was dropped", path)
            # The copy keeps the source's dates (as rsync -t, rclone and Phockup do), so file managers sort a
            # clip by when it was made. Set before the name appears, so the final name never has another.
            try:
                os.utime(tmp.tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            except (OSError, OverflowError, ValueError) as e:  # a date the archive's filesystem cannot hold
                _log.debug("could not keep the source's mtime", path=path, error=str(e))
            # Placing, describing and cataloguing one content hash happens once: two workers that copied
            # the same content at the same time must not both place it.
            with self._place_lock:
                if self.catalog.video(result.digest) is not None:
                    tmp.abort()
                    return self._seen(sighting, result.digest, "identical content already archived")
                fields["hash8"] = result.digest.removeprefix("blake3:")[:8]
                fields["hash"] = result.digest.removeprefix("blake3:")
                rel = render_path(self.settings.archive.layout, fields)
                final_rel, adopted = self.archive.place(tmp, rel, result.digest, result.size)
                record = self._record(result.digest, result.size, final_rel, captured, source_of_date, label,
                                      facts, probe_error, sighting, adopted)  # fmt: skip
                # The sidecar's write fsyncs the folder, which makes the video's name durable too.
                self.archive.write_sidecar(record)
                # Only now the catalog row, and without waiting for the disk: a power cut may lose it, but
                # the placed video and its sidecar are on disk, and a rerun finds the video under the same
                # name with the same content and adopts it, keeping what its sidecar says (`_record`).
                self.catalog.add_video(record, durable=False, event=("archived", f"archived as {final_rel}", path))
        _log.info(
            "archived", path=path, hash=result.digest, archive_path=final_rel, label=label, size=result.size,
            capture_time=record.capture_time, capture_source=source_of_date, probe_error=probe_error,
            adopted=adopted,
        )  # fmt: skip
        return Outcome("archived", path, result.digest, final_rel)

    def _record(
        self,
        digest: str,
        size: int,
        final_rel: str,
        captured: datetime,
        source_of_date: str,
        label: str,
        facts: MediaFacts | None,
        probe_error: str | None,
        sighting: SourceSighting,
        adopted: bool,
    ) -> VideoRecord:
        now = time.time()
        record = VideoRecord(
            hash=digest, size=size, archive_path=final_rel,
            capture_time=captured.isoformat(timespec="seconds"), capture_source=source_of_date, label=label,
            media=facts.to_dict() if facts else None, probe_error=probe_error, first_seen=sighting.first_seen,
            archived_at=now, sources=[sighting],
        )  # fmt: skip
        if adopted:
            # A crash left this very content placed but not catalogued: keep what its sidecar knew.
            old = self.archive.read_sidecar(final_rel)
            if old and old.get("hash") == digest:
                try:
                    prior = record_from_sidecar(old, final_rel)
                except ValueError as e:
                    _log.warning("sidecar unusable; describing the video anew", archive_path=final_rel, error=str(e))
                else:
                    record.first_seen, record.archived_at = prior.first_seen or now, prior.archived_at or now
                    record.sources = _merge_sources(prior.sources, sighting)
        return record

    def _seen(self, sighting: SourceSighting, digest: str, why: str) -> Outcome:
        """Record a new sighting of archived content (no copy), in the catalog and the sidecar."""
        # A moved file reaches here without a copy, so nothing else has asked whether the archive is there: an
        # unmounted disk would get its sidecar written onto the bare mount point, and a sighting recorded before
        # the write failed would never reach the real sidecar (the retry finds the source already known).
        self.guard.require()
        video = self.catalog.video(digest)
        # Not waiting for the disk: a sighting lost to a power cut is seen again by the next rescan.
        self.catalog.record_source(sighting, digest, "archived", durable=False)
        if video is not None:
            self._sources_to_sidecar(video)
        _log.info("already archived", path=sighting.path, hash=digest, reason=why,
                  archive_path=video.archive_path if video else None)  # fmt: skip
        return Outcome("seen", sighting.path, digest, video.archive_path if video else None, why)

    def _sources_to_sidecar(self, video: VideoRecord) -> None:
        """Write every known source of `video` into its sidecar. Serialised, and built from the catalog (where
        each sighting was recorded first), so concurrent sightings never lose a path; a sidecar that is
        invalid or holds a bad value is described anew from the catalog."""
        with self.archive.sidecar_lock():
            data = self.archive.read_sidecar(video.archive_path)
            rec = video
            if data is not None and data.get("hash") == video.hash:
                try:
                    rec = record_from_sidecar(data, video.archive_path)
                except ValueError as e:
                    _log.warning("sidecar unusable; rewriting it from the catalog", archive_path=video.archive_path,
                                 error=str(e))  # fmt: skip
                    rec = video
            elif data is None and self.archive.path_of(video.archive_path).is_file():
                _log.warning("sidecar missing or not valid JSON; rewriting it from the catalog",
                             archive_path=video.archive_path)  # fmt: skip
            known = self.catalog.sightings_of(video.hash)
            merged = list(rec.sources)
            for s in known:
                merged = _merge_sources(merged, s)
            if merged != rec.sources or rec is video:
                rec.sources = merged
                self.archive.write_sidecar(rec)


def _merge_sources(existing: list[SourceSighting], new: SourceSighting) -> list[SourceSighting]:
    out = [s for s in existing if s.path != new.path]
    prior = next((s for s in existing if s.path == new.path), None)
    if prior is not None:
        new = SourceSighting(new.path, new.size, new.mtime_ns, new.inode, new.dev, new.root,
                             min(prior.first_seen or new.first_seen, new.first_seen or prior.first_seen), new.ctime_ns)  # fmt: skip
    return [*out, new]


def _read_error(e: OSError, path: str) -> ItemError:
    """A read failure told in the item's terms (the archive's own failures are raised by archive.py)."""
    if isinstance(e, FileNotFoundError):
        return SourceGone(f"{path} vanished while it was read", path)
    return SourceUnreadable(f"cannot read {path}: {e.strerror or e}", path)


def describe_archived(settings: Settings, archive: Archive, rel: str) -> VideoRecord | None:
    """A catalog record for a video found in the archive without its sidecar (a crash window, a hand copy)."""
    p = archive.path_of(rel)
    try:
        st = p.stat()
        digest, size = hash_file(p)
    except OSError:
        return None
    try:
        facts: MediaFacts | None = probe(p)
        err = None
    except Exception as e:
        facts, err = None, str(e)
    now = time.time()
    captured, source = capture_time(facts.creation_time if facts else None, p.name, st.st_mtime, settings.archive.tz(),
                                    first_seen=now)  # fmt: skip
    return VideoRecord(
        hash=digest, size=size, archive_path=rel, capture_time=captured.isoformat(timespec="seconds"),
        capture_source=source, label=settings.archive.default_label, media=facts.to_dict() if facts else None,
        probe_error=err, first_seen=st.st_mtime, archived_at=now, sources=[],
    )  # fmt: skip
