"""ingest: one file through the pipeline, in process, against real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.errors import ArchiveFull, ArchiveMissing, SourceChanged
from draftsync.ingest import Ingestor
from tests.conftest import Env, b3, make_video


@pytest.fixture
def ing(env: Env) -> Ingestor:
    env.write_config(labels=[{"label": "tiktok", "path": "**/TikTok/**"}])
    s, _ = load(str(env.config))
    return Ingestor(s, Catalog(s.catalog_path), Archive(s.archive.root, s.archive.layout))


def test_archives_once_with_a_complete_sidecar(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "TikTok" / "VID_20260501_183000.mp4", creation_time="2026-05-01T18:30:00Z")
    before = (src.stat().st_mtime_ns, src.read_bytes())
    out = ing.ingest(str(src), str(env.inbox))
    assert out.kind == "archived" and out.hash == b3(src)
    assert out.archive_path == f"2026/05/tiktok/2026-05-01_183000_{b3(src)[7:15]}.mp4"
    dest = env.archive / out.archive_path
    assert dest.read_bytes() == before[1]
    (sc,) = env.sidecars()
    assert sc["hash"] == b3(src) and sc["size"] == len(before[1]) and sc["label"] == "tiktok"
    assert sc["capture_time_source"] == "metadata" and sc["capture_time"].startswith("2026-05-01T18:30:00")
    assert sc["sources"][0]["path"] == str(src) and sc["media"]["video_codec"] == "h264"
    assert "first_seen" in sc and sc["probe_error"] is None
    # the source is untouched
    assert (src.stat().st_mtime_ns, src.read_bytes()) == before
    # a second look at the unchanged file does nothing
    assert ing.ingest(str(src), str(env.inbox)).kind == "known"


def test_identical_content_elsewhere_is_recorded_not_copied(env: Env, ing: Ingestor) -> None:
    a = make_video(env.inbox / "a.mp4", seed=1)
    b = env.inbox / "sub" / "copy of a.mp4"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert ing.ingest(str(a), str(env.inbox)).kind == "archived"
    out = ing.ingest(str(b), str(env.inbox))
    assert out.kind == "seen"
    assert len(env.archived_videos()) == 1
    (sc,) = env.sidecars()
    assert sorted(s["path"] for s in sc["sources"]) == sorted([str(a), str(b)])


def test_a_moved_file_is_recognised_without_reading_it(
    env: Env, ing: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_video(env.inbox / "a.mp4", seed=2)
    ing.ingest(str(a), str(env.inbox))
    moved = env.inbox / "renamed.mp4"
    os.rename(a, moved)
    import draftsync.ingest as mod

    def no_read(*_a: object, **_k: object) -> None:
        raise AssertionError("the moved file was read again")

    monkeypatch.setattr(mod, "hash_file", no_read)
    monkeypatch.setattr(mod, "probe", no_read)
    assert ing.ingest(str(moved), str(env.inbox)).kind == "seen"


def test_a_file_that_changes_during_the_copy_is_dropped(env: Env, ing: Ingestor) -> None:
    src = env.inbox / "growing.mp4"
    src.write_bytes(os.urandom(12 * 1024 * 1024))

    def append_once(n: int) -> None:
        if not getattr(append_once, "done", False):
            append_once.done = True  # type: ignore[attr-defined]
            with src.open("ab") as f:
                f.write(b"more bytes")

    ing.archive.progress = append_once
    with pytest.raises(SourceChanged):
        ing.ingest(str(src), str(env.inbox))
    assert env.archived_videos() == [] and env.temps() == []
    ing.archive.progress = None
    out = ing.ingest(str(src), str(env.inbox))  # once settled again it goes through whole
    assert out.kind == "archived" and (env.archive / out.archive_path).read_bytes() == src.read_bytes()


def test_new_content_under_the_same_name_is_a_new_version(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "v.mp4", seed=3)
    first = ing.ingest(str(src), str(env.inbox))
    make_video(src, seed=4)
    second = ing.ingest(str(src), str(env.inbox))
    assert second.kind == "archived" and second.hash != first.hash
    assert len(env.archived_videos()) == 2


def test_symlinks_are_never_followed(env: Env, ing: Ingestor, tmp_path: Path) -> None:
    outside = make_video(tmp_path / "outside.mp4", seed=5)
    link = env.inbox / "link.mp4"
    link.symlink_to(outside)
    out = ing.ingest(str(link), str(env.inbox))
    assert out.kind == "skipped" and "symbolic link" in out.detail
    (env.inbox / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    out = ing.ingest(str(env.inbox / "dirlink" / "outside.mp4"), str(env.inbox))
    assert out.kind == "skipped"
    assert env.archived_videos() == []


@pytest.mark.parametrize(
    "name",
    ["ümlaut 视频 🎬.mp4", "a" * 240 + ".mp4", "new\nline.mp4", "we:ird*na?me<>.mov", " lead and trail .mp4"],
)
def test_odd_names_are_archived(env: Env, ing: Ingestor, name: str) -> None:
    src = make_video(env.inbox / name, seed=6)
    out = ing.ingest(str(src), str(env.inbox))
    assert out.kind == "archived" and (env.archive / out.archive_path).read_bytes() == src.read_bytes()


def test_corrupt_and_non_video_files_are_still_backed_up_with_the_probe_error(env: Env, ing: Ingestor) -> None:
    bad = env.inbox / "VID_20260501_120000.mp4"
    bad.write_bytes(b"this is a text file with a video extension\n" * 10)
    out = ing.ingest(str(bad), str(env.inbox))
    assert out.kind == "archived"
    (sc,) = env.sidecars()
    assert sc["probe_error"] and sc["media"] is None
    assert sc["capture_time_source"] == "filename"


def test_truncated_video_is_backed_up(env: Env, ing: Ingestor) -> None:
    v = make_video(env.inbox / "t.mp4", seed=7)
    v.write_bytes(v.read_bytes()[:5000])
    assert ing.ingest(str(v), str(env.inbox)).kind == "archived"


def test_empty_files_are_placeholders_not_videos(env: Env, ing: Ingestor) -> None:
    e = env.inbox / "empty.mp4"
    e.touch()
    assert ing.ingest(str(e), str(env.inbox)).kind == "empty"
    assert env.archived_videos() == []


def test_a_placed_but_uncatalogued_video_is_adopted_after_a_crash(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "a.mp4", seed=8)
    out = ing.ingest(str(src), str(env.inbox))
    # Simulate a crash after placing: the catalog never heard of it.
    s, _ = load(str(env.config))
    ing.catalog.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(s.catalog_path) + suffix).unlink(missing_ok=True)
    fresh = Ingestor(s, Catalog(s.catalog_path), Archive(s.archive.root, s.archive.layout))
    again = fresh.ingest(str(src), str(env.inbox))
    assert again.kind == "archived" and again.archive_path == out.archive_path
    assert len(env.archived_videos()) == 1 and env.temps() == []


def test_archive_full_pauses_with_a_clear_error(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "a.mp4", seed=9)
    ing.settings.archive.min_free_mib = 10**9  # more than any disk has
    with pytest.raises(ArchiveFull, match="pauses until space returns"):
        ing.ingest(str(src), str(env.inbox))
    assert env.archived_videos() == [] and env.temps() == []


# --- faults ----------------------------------------------------------------------------------------------


def test_a_rewrite_in_place_during_the_copy_is_caught_by_the_ctime(env: Env, ing: Ingestor) -> None:
    src = env.inbox / "rewritten.mp4"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    st = src.stat()

    def rewrite_once(n: int) -> None:
        if not getattr(rewrite_once, "done", False):
            rewrite_once.done = True  # type: ignore[attr-defined]
            with src.open("r+b") as f:  # same size, other bytes, and the mtime put back
                f.write(os.urandom(1024))
            os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))

    ing.archive.progress = rewrite_once
    with pytest.raises(SourceChanged):
        ing.ingest(str(src), str(env.inbox))
    assert env.archived_videos() == [] and env.temps() == []  # no version that never existed


def test_a_file_replaced_during_its_copy_is_dropped_and_the_new_one_archived(env: Env, ing: Ingestor) -> None:
    src = env.inbox / "replaced.mp4"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    new = os.urandom(5 * 1024 * 1024)

    def replace_once(n: int) -> None:
        if not getattr(replace_once, "done", False):
            replace_once.done = True  # type: ignore[attr-defined]
            (env.inbox / ".tmp").write_bytes(new)
            os.rename(env.inbox / ".tmp", src)  # the sync tool swaps in a new version

    ing.archive.progress = replace_once
    with pytest.raises(SourceChanged):
        ing.ingest(str(src), str(env.inbox))
    ing.archive.progress = None
    out = ing.ingest(str(src), str(env.inbox))  # once it has settled again
    assert out.kind == "archived" and b3(env.archive / str(out.archive_path)) == b3(new)
    assert len(env.archived_videos()) == 1


def test_the_archived_copy_keeps_the_source_mtime(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "holiday.mp4", seed=20)
    os.utime(src, ns=(1_700_000_000_123_456_789, 1_741_082_400_987_654_321))
    out = ing.ingest(str(src), str(env.inbox))
    assert (env.archive / str(out.archive_path)).stat().st_mtime_ns == 1_741_082_400_987_654_321


def test_a_name_that_is_not_utf8_is_archived_recorded_and_recognised(env: Env, ing: Ingestor) -> None:
    raw = os.fsencode(env.inbox) + b"/Caf\xe9.mp4"
    with open(raw, "wb") as f:
        f.write(make_video(env.base / "x.mp4", seed=21).read_bytes())
    path = os.fsdecode(raw)
    out = ing.ingest(path, str(env.inbox))
    assert out.kind == "archived"
    (sc,) = env.sidecars()
    assert sc["sources"][0]["path_bytes"] == raw.hex() and sc["sources"][0]["path"].endswith("Caf\\xe9.mp4")
    assert ing.ingest(path, str(env.inbox)).kind == "known"  # the catalog finds it by its bytes
    assert ing.catalog.sources_of(str(out.hash)) == [path]


def test_an_mtime_beyond_sqlites_integer_does_not_break_the_catalog(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "clock ahead.mp4", seed=22)
    os.utime(src, ns=(10_413_792_000 * 10**9, 10_413_792_000 * 10**9 + 1))  # year 2300
    out = ing.ingest(str(src), str(env.inbox))
    assert out.kind == "archived"
    (sc,) = env.sidecars()
    assert sc["capture_time_source"] == "first_seen" and sc["sources"][0]["mtime_ns"] == 10_413_792_000 * 10**9 + 1
    assert ing.ingest(str(src), str(env.inbox)).kind == "known"
    assert ing.catalog.known_paths()[str(src)][1] == 10_413_792_000 * 10**9 + 1


def test_concurrent_sightings_of_one_content_never_lose_a_source(env: Env, ing: Ingestor) -> None:
    import threading

    first = make_video(env.inbox / "a.mp4", seed=23)
    ing.ingest(str(first), str(env.inbox))
    copies = [env.inbox / f"copy {i}.mp4" for i in range(12)]
    for c in copies:
        c.write_bytes(first.read_bytes())
    go = threading.Barrier(len(copies))

    def sight(p: Path) -> None:
        go.wait()
        assert ing.ingest(str(p), str(env.inbox)).kind == "seen"

    threads = [threading.Thread(target=sight, args=(c,)) for c in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (sc,) = env.sidecars()
    assert sorted(s["path"] for s in sc["sources"]) == sorted(str(p) for p in [first, *copies])


def test_a_bad_sidecar_is_described_anew_from_the_catalog_on_the_next_sighting(env: Env, ing: Ingestor) -> None:
    first = make_video(env.inbox / "a.mp4", seed=24)
    out = ing.ingest(str(first), str(env.inbox))
    side = env.archive / f"{out.archive_path}.json"
    side.write_text("{ broken")
    copy = env.inbox / "b.mp4"
    copy.write_bytes(first.read_bytes())
    assert ing.ingest(str(copy), str(env.inbox)).kind == "seen"
    sc = json.loads(side.read_text())
    assert sc["hash"] == out.hash and sorted(s["path"] for s in sc["sources"]) == [str(first), str(copy)]


def test_nothing_is_written_when_the_archive_is_missing(env: Env, ing: Ingestor, tmp_path: Path) -> None:
    a = make_video(env.inbox / "a.mp4", seed=25)
    ing.ingest(str(a), str(env.inbox))
    env.archive.rename(tmp_path / "unplugged")
    b = make_video(env.inbox / "b.mp4", seed=26)
    with pytest.raises(ArchiveMissing, match="does not exist"):
        ing.ingest(str(b), str(env.inbox))
    assert not env.archive.exists()


def test_a_file_moved_while_the_archive_disk_is_unmounted_writes_nothing_and_is_recorded_when_it_returns(
    env: Env, tmp_path: Path
) -> None:
    # A flat layout: sidecars live directly in the root, which is the disk's mount point.
    env.write_config(archive={"layout": "{date}_{hash8}{ext}"})
    s, _ = load(str(env.config))
    ing = Ingestor(s, Catalog(s.catalog_path), Archive(s.archive.root, s.archive.layout))
    a = make_video(env.inbox / "a.mp4", seed=27)
    ing.ingest(str(a), str(env.inbox))
    disk = tmp_path / "usb-disk"
    env.archive.rename(disk)
    env.archive.mkdir()  # the disk is unplugged: its bare mount point stays behind
    moved = env.inbox / "renamed.mp4"
    os.rename(a, moved)  # same inode: recognised without reading, so no copy would notice the missing disk
    with pytest.raises(ArchiveMissing, match="not marked"):
        ing.ingest(str(moved), str(env.inbox))
    assert list(env.archive.iterdir()) == []  # no sidecar under the bare mount point

    env.archive.rmdir()
    disk.rename(env.archive)  # the disk is back; the sighting is retried
    assert ing.ingest(str(moved), str(env.inbox)).kind == "seen"
    (sc,) = env.sidecars()
    assert sorted(x["path"] for x in sc["sources"]) == sorted([str(a), str(moved)])


def test_a_long_copy_beats_the_workers_heartbeat(env: Env, ing: Ingestor) -> None:
    beats: list[int] = []
    ing.beat = lambda: beats.append(1)
    src = env.inbox / "long.mp4"
    src.write_bytes(os.urandom(9 * 1024 * 1024))
    ing.ingest(str(src), str(env.inbox))
    assert len(beats) >= 6  # per chunk, copying and verifying


def test_a_copy_of_something_archived_is_read_once_and_never_written_to_disk(env: Env, ing: Ingestor,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = make_video(env.inbox / "VID_20260501_120000.mp4", seed=11)
    assert ing.ingest(str(src), str(env.inbox)).kind == "archived"
    copy = env.inbox / "again.mp4"
    copy.write_bytes(src.read_bytes())  # same size and content, another inode: not "moved"
    read_backs: list[object] = []
    real = Archive.read_back
    monkeypatch.setattr(Archive, "read_back", lambda self, *a, **k: read_backs.append(a) or real(self, *a, **k))
    out = ing.ingest(str(copy), str(env.inbox))
    assert out.kind == "seen" and out.hash == b3(src)
    assert read_backs == [] and env.temps() == [] and len(env.archived_videos()) == 1  # no fsync, no read-back


def test_the_archived_copy_is_checked_on_the_disk_and_left_out_of_memory(env: Env, ing: Ingestor) -> None:
    from tests.test_fingerprint import needs_a_disk, resident

    needs_a_disk(env.archive.parent)
    src = make_video(env.inbox / "VID_20260501_120500.mp4", seed=12, seconds=2)
    out = ing.ingest(str(src), str(env.inbox))
    assert out.archive_path is not None
    # The read-back dropped the copy's pages before reading it (so it read the disk) and after.
    assert resident(env.archive / out.archive_path) == 0.0


def test_the_catalog_row_may_be_lost_to_a_crash_and_the_rerun_adopts_the_placed_video(env: Env, ing: Ingestor) -> None:
    src = make_video(env.inbox / "VID_20260501_121000.mp4", seed=13)
    out = ing.ingest(str(src), str(env.inbox))
    (sc,) = env.sidecars()
    # What a power cut can do to a commit that did not wait for the disk: the row is gone, the video and its
    # sidecar (fsync'd with their folder before the row was written) are there.
    with ing.catalog.tx() as db:
        db.execute("DELETE FROM videos")
        db.execute("DELETE FROM sources")
    again = ing.ingest(str(src), str(env.inbox))
    assert (again.kind, again.archive_path) == ("archived", out.archive_path)
    assert len(env.archived_videos()) == 1 and env.temps() == []
    (sc2,) = env.sidecars()
    assert sc2["first_seen"] == sc["first_seen"] and ing.catalog.video(b3(src)) is not None
