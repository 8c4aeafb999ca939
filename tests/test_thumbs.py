"""thumbs: one keyframe picture per video, turned as the phone meant it, stored as archive metadata,
listed in the sidecar, made newest first, never written into a missing archive, rebuilt by reindex."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.ingest import Ingestor
from draftsync.thumbs import MISSING, SUFFIX, THUMB_DIR, Thumbnailer, fit, looks_whole, render, thumb_rel
from tests.conftest import Env, make_video


def _size_of(data: bytes, tmp: Path) -> tuple[int, int, float]:
    """Width, height and mean brightness of an encoded picture, decoded back with PyAV."""
    import av

    tmp.write_bytes(data)
    with av.open(str(tmp)) as c:
        f = next(c.decode(video=0))
        return f.width, f.height, float(f.to_ndarray(format="gray").mean())


@pytest.mark.parametrize(
    ("size", "box", "want"),
    [
        ((1920, 1080), 320, (320, 180)),
        ((1080, 1920), 320, (180, 320)),
        ((320, 240), 320, (320, 240)),  # never enlarged
        ((100, 50), 320, (100, 50)),
        ((1001, 999), 320, (320, 318)),  # even sizes for 4:2:0
        ((4000, 3), 320, (320, 2)),
    ],
)
def test_fit_keeps_the_aspect_within_the_box(size: tuple[int, int], box: int, want: tuple[int, int]) -> None:
    assert fit(*size, box) == want


def test_thumbnail_paths_are_metadata_named_by_content() -> None:
    h = "blake3:" + "ab" * 32
    assert thumb_rel(h) == f"{THUMB_DIR}/ab/{'ab' * 32}.jpg"
    assert thumb_rel(h, "webp").endswith(".webp")
    assert THUMB_DIR.startswith(".")  # a dot-folder: metadata by the archive contract


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_a_rotated_phone_video_gives_an_upright_scaled_picture(tmp_path: Path, fmt: str) -> None:
    v = make_video(tmp_path / "portrait.mp4", seconds=1, size=(640, 360), rotation=90)
    data = render(v, fmt)
    assert data[:2] == b"\xff\xd8" if fmt == "jpeg" else data[:4] == b"RIFF"
    w, h, _ = _size_of(data, tmp_path / f"t.{fmt}")
    assert (w, h) == (180, 320)  # stored 640x360 landscape, shown portrait


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_a_made_thumbnail_looks_whole_and_a_damaged_one_does_not(tmp_path: Path, fmt: str) -> None:
    data = render(make_video(tmp_path / "v.mp4", seconds=1, size=(320, 240)), fmt)
    suffix = SUFFIX[fmt]
    assert looks_whole(data, suffix)
    assert not looks_whole(data[: len(data) // 2], suffix)  # cut short (a full disk, a crash)
    assert not looks_whole(b"garbage", suffix) and not looks_whole(b"", suffix)
    assert not looks_whole(bytes(len(data)), suffix)  # zeroed
    assert not looks_whole(data, ".webp" if fmt == "jpeg" else ".jpg")  # another kind than its name says


def _black_then_texture(path: Path, seconds: float = 2.0, fps: int = 30) -> Path:
    """A clip whose first 40 % is black (a fade-in), with a single keyframe at the start."""
    import av

    rng = np.random.default_rng(5)
    tex = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "1000"}
        n = int(seconds * fps)
        for i in range(n):
            img = np.zeros_like(tex) if i < 0.4 * n else tex
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_a_black_opening_is_skipped(tmp_path: Path) -> None:
    data = render(_black_then_texture(tmp_path / "fade.mp4"))
    _, _, brightness = _size_of(data, tmp_path / "t.jpg")
    assert brightness > 60  # the textured part, not the black intro


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 5000)
    with pytest.raises(ValueError, match=r"cannot open|no video|decode"):
        render(bad)


@pytest.fixture
def archived(env: Env) -> tuple[Catalog, Archive, list[str]]:
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    arc = Archive(s.archive.root, s.archive.layout)
    ing = Ingestor(s, cat, arc)
    hashes = []
    for i in range(3):
        out = ing.ingest(str(make_video(env.inbox / f"v{i}.mp4", seed=200 + i)), str(env.inbox))
        assert out.hash
        hashes.append(out.hash)
    return cat, arc, hashes


def test_made_thumbnails_are_stored_listed_in_the_sidecar_and_invisible_to_verify(
    env: Env, archived: tuple[Catalog, Archive, list[str]]
) -> None:
    cat, arc, hashes = archived
    t = Thumbnailer(cat, arc)
    assert t.backfill(limit=2) == 2
    assert t.backfill(limit=10) == 1 and t.backfill() == 0
    for h in hashes:
        v = cat.video(h)
        assert v is not None
        rel, err = cat.thumb(h) or (None, "none")
        assert err is None and rel == thumb_rel(h)
        assert (env.archive / rel).read_bytes()[:2] == b"\xff\xd8"
        assert json.loads((env.archive / (v.archive_path + ".json")).read_text())["thumbnail"] == rel
    assert cat.thumbs_attempted() == 3
    assert len(env.archived_videos()) == 3
    cat.close()
    r = env.cli("verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["unknown"] == []


def test_the_backfill_goes_newest_first(archived: tuple[Catalog, Archive, list[str]]) -> None:
    cat, arc, hashes = archived
    Thumbnailer(cat, arc).backfill(limit=1)
    assert cat.thumb(hashes[-1]) is not None and cat.thumb(hashes[0]) is None


def test_nothing_is_written_into_an_archive_whose_disk_is_gone(
    env: Env, archived: tuple[Catalog, Archive, list[str]], tmp_path: Path
) -> None:
    cat, arc, hashes = archived
    env.archive.rename(tmp_path / "unplugged")
    env.archive.mkdir()  # the empty mount point left behind
    assert Thumbnailer(cat, arc).backfill() == 0
    assert list(env.archive.iterdir()) == []
    v = cat.video(hashes[0])
    assert v is not None and Thumbnailer(cat, arc).make(v) is None
    assert list(env.archive.iterdir()) == [] and cat.thumb(hashes[0]) is None  # tried again later


def test_an_undecodable_or_vanished_video_is_recorded_with_its_reason(
    env: Env, archived: tuple[Catalog, Archive, list[str]]
) -> None:
    cat, arc, hashes = archived
    a, b = (cat.video(h) for h in hashes[:2])
    assert a is not None and b is not None
    (env.archive / a.archive_path).write_bytes(b"not a video at all" * 100)
    (env.archive / b.archive_path).unlink()
    t = Thumbnailer(cat, arc)
    assert t.make(a) is None and t.make(b) is None
    assert "cannot open" in (cat.thumb(a.hash) or ("", ""))[1] or "decode" in (cat.thumb(a.hash) or ("", ""))[1]
    assert cat.thumb(b.hash) == (None, MISSING)


def test_reindex_brings_back_missing_thumbnails(env: Env, archived: tuple[Catalog, Archive, list[str]],
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from draftsync.cli import _reindex

    archived[0].close()
    s, _ = load(str(env.config))
    assert _reindex(s) == 0
    assert "thumbnails: 0 in place, 3 made anew, 0 not possible" in capsys.readouterr().out
    thumbs = sorted((env.archive / THUMB_DIR).rglob("*.jpg"))
    assert len(thumbs) == 3
    thumbs[0].unlink()
    assert _reindex(s) == 0
    assert "thumbnails: 2 in place, 1 made anew" in capsys.readouterr().out
    assert all(p.is_file() for p in thumbs)
    assert all(sc.get("thumbnail", "").startswith(THUMB_DIR) for sc in env.sidecars())


def test_reindex_makes_a_damaged_thumbnail_again(env: Env, archived: tuple[Catalog, Archive, list[str]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from draftsync.cli import _reindex

    cat, arc, hashes = archived
    Thumbnailer(cat, arc).backfill()
    cat.close()
    damaged = env.archive / thumb_rel(hashes[0])
    damaged.write_bytes(damaged.read_bytes()[:300])
    s, _ = load(str(env.config))
    assert _reindex(s) == 0
    assert "thumbnails: 2 in place, 1 made anew" in capsys.readouterr().out
    assert looks_whole(damaged.read_bytes(), ".jpg")


def test_the_service_makes_a_thumbnail_when_a_video_is_archived_and_again_when_damaged(env: Env) -> None:
    import threading
    from datetime import UTC

    from apscheduler.schedulers.background import BackgroundScheduler

    from draftsync.problems import Problems
    from draftsync.runtime import Runtime
    from draftsync.supervise import Supervisor
    from draftsync.thumbs import ThumbService
    from tests.conftest import wait_for

    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    arc = Archive(s.archive.root, s.archive.layout)
    rt = Runtime(s, cat, arc, Problems(cat), Supervisor(), BackgroundScheduler(timezone=UTC), threading.Event())
    svc = ThumbService()
    svc.start(rt)
    try:
        wait_for(svc.idle.is_set, 20, what="the loop to find nothing to do and sleep (for a minute)")
        out = Ingestor(s, cat, arc).ingest(str(make_video(env.inbox / "new.mp4", seed=220)), str(env.inbox))
        v = cat.video(out.hash or "")
        assert v is not None
        rt.archived(v)  # what the daemon calls after each archived video
        wait_for(lambda: cat.thumb(v.hash) == (thumb_rel(v.hash), None), 20, what="the thumbnail")
        pic = env.archive / thumb_rel(v.hash)
        assert pic.is_file()
        # The status page found it damaged (it cannot write): the loop makes it again.
        wait_for(svc.idle.is_set, 20, what="the loop asleep again")
        pic.write_bytes(b"\xff\xd8\xff garbage")
        svc.remake(v.hash)
        wait_for(lambda: looks_whole(pic.read_bytes(), ".jpg"), 20, what="the thumbnail made again")
        assert not rt.supervisor.dead()
    finally:
        rt.stop.set()
        svc.stop()
