"""marker: whether ingest may write under archive.root (a table), the marker, and the archive lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from draftsync.catalog import Catalog, VideoRecord
from draftsync.errors import ArchiveMissing
from draftsync.marker import MARKER_NAME, ArchiveGuard, ArchiveLock, Observed, decide

R = "/mnt/usb/archive"
MISSING, FILE, EMPTY = Observed("missing"), Observed("file"), Observed("dir")
OURS, OTHER, BROKEN = Observed("dir", marker_id="A"), Observed("dir", marker_id="B"), Observed("dir", marker_error="x")


@pytest.mark.parametrize(
    ("seen", "recorded", "videos", "ours_present", "may_create", "action", "words"),
    [
        # a brand-new install may create its archive
        (MISSING, None, 0, False, True, "create", "created"),
        (EMPTY, None, 0, False, True, "mark", "new archive"),
        # a catalog that knows videos never creates anything under a missing or unmarked root
        (MISSING, None, 3, False, True, "pause", "does not exist"),
        (MISSING, "A", 0, False, True, "pause", "does not exist"),
        (EMPTY, "A", 3, False, True, "pause", "not marked"),
        (EMPTY, None, 3, False, True, "pause", "not marked"),
        # ... unless the videos it knows are there: an archive from before markers is marked
        (EMPTY, None, 3, True, True, "mark", "marked"),
        (EMPTY, "A", 3, True, True, "mark", "marked"),
        # markers
        (OURS, "A", 3, False, True, "ready", ""),
        (OURS, None, 0, False, True, "adopt", "using"),  # a new state dir (reindex) takes the archive's id
        (OTHER, "A", 3, False, True, "pause", "another draftsync archive"),
        (BROKEN, "A", 3, False, True, "pause", "cannot be read"),
        (FILE, None, 0, False, True, "pause", "is a file"),
        # a read-only disk (the kernel's answer to disk errors) is never "ready": its first write would fail
        (Observed("dir", marker_id="A", read_only=True), "A", 3, False, True, "pause", "read-only"),
        (Observed("dir", read_only=True), None, 0, False, True, "pause", "read-only"),
        (Observed("dir", read_only=True), "A", 3, False, True, "pause", "not marked"),  # the mount point first
        # reindex never starts an archive
        (MISSING, None, 0, False, False, "pause", "does not exist"),
        (EMPTY, None, 0, False, False, "pause", "not marked"),
        (EMPTY, None, 0, True, False, "mark", "marked"),
    ],
)
def test_when_ingest_may_write_under_the_archive_root(
    seen: Observed, recorded: str | None, videos: int, ours_present: bool, may_create: bool, action: str, words: str
) -> None:
    v = decide(R, seen, recorded, videos, ours_present, may_create=may_create, new_id="N")
    assert v.action == action
    assert words in v.message
    if action in ("create", "mark"):
        assert v.archive_id == (recorded or "N")


def _video(rel: str, size: int) -> VideoRecord:
    return VideoRecord(hash="blake3:" + "1" * 64, size=size, archive_path=rel, capture_time="2026-01-01T00:00:00",
                       capture_source="mtime", label="camera", media=None, probe_error=None, first_seen=1.0,
                       archived_at=1.0)  # fmt: skip


def test_a_fresh_install_creates_and_marks_its_archive_then_guards_it(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "state" / "c.db")
    root = tmp_path / "disk" / "archive"
    g = ArchiveGuard(root, cat)
    assert g.check() is None
    aid = json.loads((root / MARKER_NAME).read_text())["archive_id"]
    assert cat.get_meta("archive_id") == aid
    g.require()  # cheap while nothing changed
    (root / MARKER_NAME).unlink()  # the disk was swapped for an empty one
    cat.add_video(_video("2026/01/camera/a.mp4", 10))
    with pytest.raises(ArchiveMissing, match="not marked"):
        g.require()
    assert sorted(p.name for p in root.iterdir()) == []


def test_a_missing_root_is_never_created_once_the_catalog_knows_videos(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.db")
    cat.add_video(_video("2026/01/camera/a.mp4", 10))
    root = tmp_path / "media" / "usb" / "archive"
    (tmp_path / "media" / "usb").mkdir(parents=True)
    assert "does not exist" in (ArchiveGuard(root, cat).check() or "")
    assert list((tmp_path / "media" / "usb").iterdir()) == []


def test_an_archive_from_before_markers_is_recognised_by_its_videos(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.db")
    root = tmp_path / "archive"
    (root / "2026/01/camera").mkdir(parents=True)
    (root / "2026/01/camera/a.mp4").write_bytes(b"x" * 10)
    cat.add_video(_video("2026/01/camera/a.mp4", 10))
    assert ArchiveGuard(root, cat).check() is None
    assert (root / MARKER_NAME).is_file() and cat.get_meta("archive_id")


def test_two_draftsyncs_with_different_state_dirs_cannot_lock_one_archive(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    a, b = ArchiveLock(root, "/var/lib/a"), ArchiveLock(root, "/var/lib/b")
    assert a.acquire() is None and a.valid()
    held = b.acquire()
    assert held is not None and "in use by another draftsync" in held and "/var/lib/a" in held
    a.release()
    assert b.acquire() is None
    # A remounted disk has another lock file: the old lock is no longer valid and is taken again.
    (root / ".draftsync").rename(root / ".old")
    assert not b.valid() and b.acquire() is None and b.valid()
    b.release()


def test_the_lock_never_creates_a_missing_root(tmp_path: Path) -> None:
    lock = ArchiveLock(tmp_path / "gone", "/s")
    assert lock.acquire() is not None
    assert not (tmp_path / "gone").exists()
