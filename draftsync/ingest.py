"""One file through the pipeline: a settled path is fingerprinted, looked up in the catalog, copied into
the archive once (hashing in the same read), verified, placed, described by its sidecar, catalogued.

The order is what makes a crash harmless: the video is placed (never over anything) before its sidecar,
and the sidecar before the catalog row; a rerun finds the placed file by name and content and adopts it.
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

from draftsync import log
from draftsync.archive import (
    Archive,
    choose_label,
    free_bytes,
    layout_fields,
    record_from_sidecar,
    render_path,
    split_layout,
)
from draftsync.catalog import Catalog, SourceSighting, VideoRecord
from draftsync.config import Settings
from draftsync.errors import ArchiveFull, ItemError, SourceChanged, SourceGone, SourceUnreadable
from draftsync.fingerprint import MediaFacts, capture_time, hash_file, new_hasher, probe

_log = log.get("draftsync.ingest")


@dataclass
class Outcome:
    kind: str  # archived | seen | known | empty | skipped
    path: str
    hash: str | None = None
    archive_path: str | None = None
    detail: str = ""


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


class Ingestor:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        archive: Archive,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.archive = archive
        self.should_stop = should_stop
        self.tz = settings.archive.tz()
        self._place_lock = threading.Lock()

    def _check_space(self, size: int) -> None:
        free = free_bytes(self.archive.root)
        if free is None:
            return
        need = size + self.settings.archive.min_free_mib * 1024 * 1024
        if free < need:
            raise ArchiveFull(
                f"the archive disk has {free // 2**20} MiB free and this video needs {need // 2**20} MiB "
                "(size plus archive.min_free_mib); ingest pauses until space returns",
                needed=need,
            )

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
        if self.catalog.source_unchanged(path, st.st_size, st.st_mtime_ns, st.st_ino):
            return Outcome("known", path)
        sighting = SourceSighting(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, root, time.time())
        if st.st_size == 0:
            # An empty file is a placeholder (a sync tool about to write, or a failed export), not a video.
            self.catalog.record_source(sighting, None, "empty")
            return Outcome("empty", path, detail="empty file, nothing to back up")

        moved = self.catalog.hash_by_identity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if moved is not None:
            return self._seen(sighting, moved, "same inode, size and mtime as an archived file (moved)")

        if self.catalog.size_known(st.st_size):
            # Possibly a copy of something archived: hash it first and skip the copy if so.
            try:
                digest, _ = hash_file(path, should_stop=self.should_stop)
            except OSError as e:
                raise _read_error(e, path) from None
            if self.catalog.video(digest) is not None:
                return self._seen(sighting, digest, "identical content already archived")

        facts: MediaFacts | None
        probe_error: str | None = None
        try:
            facts = probe(path)
        except ValueError as e:
            facts, probe_error = None, str(e)
        except Exception as e:  # a media library fault must not stop a backup
            facts, probe_error = None, f"probe failed: {type(e).__name__}: {e}"

        name = os.path.basename(path)
        captured, source_of_date = capture_time(facts.creation_time if facts else None, name, st.st_mtime, self.tz)
        rel_src = os.path.relpath(path, root).replace(os.sep, "/")
        label = choose_label(self.settings.labels, self.settings.archive.default_label, rel_src, name, facts)
        p = PurePosixPath(name)
        fields = layout_fields(
            captured=captured, digest="0" * 64, label=label, ext=p.suffix, stem=p.stem,
            orientation=facts.orientation if facts else None,
        )  # fmt: skip
        head, _ = split_layout(self.settings.archive.layout)
        rel_dir = render_path(head, fields) if head else ""
        target_dir = self.archive.root / rel_dir if rel_dir else self.archive.root
        self._check_space(st.st_size)

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceGone(f"{path} vanished before it could be archived", path) from None
        except OSError as e:
            raise _read_error(e, path) from None
        with os.fdopen(fd, "rb", buffering=0) as src:
            before = os.fstat(fd)
            if _identity(before) != _identity(st):
                raise SourceChanged(f"{path} changed before it was read; waiting for it to settle", path)
            try:
                result = self.archive.copy_in(src, target_dir, new_hasher(), should_stop=self.should_stop)
            except OSError as e:
                raise _read_error(e, path) from None
            after = os.fstat(fd)
        try:
            again = os.stat(path, follow_symlinks=False)
        except OSError:
            again = None
        if _identity(after) != _identity(before) or again is None or _identity(again) != _identity(before):
            result.temp.abort()
            raise SourceChanged(f"{path} changed while it was copied; the copy was dropped", path)
        if result.size != st.st_size:
            result.temp.abort()
            raise SourceChanged(f"{path} read {result.size} bytes, expected {st.st_size}", path)

        with result.temp as tmp:
            # Read the written copy back: what is on the archive disk must hash like the source did.
            check, _ = hash_file(tmp.tmp, should_stop=self.should_stop)
            if check != result.digest:
                raise ItemError(f"verification failed writing {path} into {target_dir}; the copy was dropped", path)
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
                self.archive.write_sidecar(record)
                self.catalog.add_video(record)
        self.catalog.log_event("info", "archived", f"archived as {final_rel}", path, result.digest)
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
                prior = record_from_sidecar(old, final_rel)
                record.first_seen, record.archived_at = prior.first_seen or now, prior.archived_at or now
                record.sources = _merge_sources(prior.sources, sighting)
        return record

    def _seen(self, sighting: SourceSighting, digest: str, why: str) -> Outcome:
        """Record a new sighting of archived content (no copy), in the catalog and the sidecar."""
        video = self.catalog.video(digest)
        self.catalog.record_source(sighting, digest, "archived")
        if video is not None:
            data = self.archive.read_sidecar(video.archive_path)
            if data is not None:
                rec = record_from_sidecar(data, video.archive_path)
                merged = _merge_sources(rec.sources, sighting)
                if merged != rec.sources:
                    rec.sources = merged
                    self.archive.write_sidecar(rec)
        _log.info("already archived", path=sighting.path, hash=digest, reason=why,
                  archive_path=video.archive_path if video else None)  # fmt: skip
        return Outcome("seen", sighting.path, digest, video.archive_path if video else None, why)


def _merge_sources(existing: list[SourceSighting], new: SourceSighting) -> list[SourceSighting]:
    out = [s for s in existing if s.path != new.path]
    prior = next((s for s in existing if s.path == new.path), None)
    if prior is not None:
        new = SourceSighting(new.path, new.size, new.mtime_ns, new.inode, new.dev, new.root, prior.first_seen)
    return [*out, new]


def _read_error(e: OSError, path: str) -> ItemError:
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
    captured, source = capture_time(facts.creation_time if facts else None, p.name, st.st_mtime, settings.archive.tz())
    now = time.time()
    return VideoRecord(
        hash=digest, size=size, archive_path=rel, capture_time=captured.isoformat(timespec="seconds"),
        capture_source=source, label=settings.archive.default_label, media=facts.to_dict() if facts else None,
        probe_error=err, first_seen=st.st_mtime, archived_at=now, sources=[],
    )  # fmt: skip
