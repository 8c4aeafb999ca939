"""fingerprint: media facts from PyAV and the capture date with where it came from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from draftsync.fingerprint import capture_time, date_from_name, hash_file, parse_container_time, probe
from tests.conftest import b3, make_video

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")


def test_probe_reads_container_codec_size_fps_duration_and_rotation(tmp_path: Path) -> None:
    v = make_video(tmp_path / "a.mp4", seconds=1, size=(320, 240), fps=30, rotation=90,
                   creation_time="2026-05-01T22:30:00.000000Z", audio=True)  # fmt: skip
    f = probe(v)
    assert f.container and "mp4" in f.container
    assert (f.video_codec, f.width, f.height, f.fps) == ("h264", 320, 240, 30.0)
    assert f.audio_codec == "aac"
    assert f.rotation in (90, 270)
    assert f.orientation == "portrait"  # 320x240 turned a quarter
    assert f.duration is not None and 0.9 <= f.duration <= 1.2
    assert f.creation_time == "2026-05-01T22:30:00.000000Z"


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 1000])
def test_probe_rejects_undecodable_files_with_a_reason(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=r"."):
        probe(p)


def test_probe_rejects_a_truncated_video(tmp_path: Path) -> None:
    v = make_video(tmp_path / "t.mp4", seconds=1)
    data = v.read_bytes()
    v.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError):
        probe(v)


def test_hash_file_is_blake3_of_the_content(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 3_000_000)
    digest, n = hash_file(p)
    assert digest == b3(p) and n == 9_000_000


def test_quicktime_utc_is_converted_so_an_evening_clip_keeps_its_day() -> None:
    # 03:30 UTC on 2 May is 20:30 on 1 May in Los Angeles: the folder must say 1 May.
    dt, source = capture_time("2026-05-02T03:30:00.000000Z", "clip.mov", 0, LA)
    assert source == "metadata"
    assert (dt.year, dt.month, dt.day, dt.hour) == (2026, 5, 1, 20)


def test_apple_creationdate_with_offset_is_respected() -> None:
    dt = parse_container_time("2026-05-01T20:30:00+0200")
    assert dt == datetime(2026, 5, 1, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", ["1904-01-01T00:00:00.000000Z", "1970-01-01T00:00:00Z", "garbage", "", None])
def test_zero_epochs_and_garbage_are_not_capture_dates(value: str | None) -> None:
    assert parse_container_time(value) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VID_20260501_183005.mp4", datetime(2026, 5, 1, 18, 30, 5, tzinfo=BERLIN)),  # Android
        ("20260501_183005.mp4", datetime(2026, 5, 1, 18, 30, 5, tzinfo=BERLIN)),  # Samsung
        ("VID-20260501-WA0003.mp4", datetime(2026, 5, 1, 0, 0, 0, tzinfo=BERLIN)),  # WhatsApp
        ("ScreenRecording_05-01-2026 18-30-05_1.MP4", datetime(2026, 5, 1, 18, 30, 5, tzinfo=BERLIN)),  # iOS
        ("Screen Recording 2026-05-01 at 18.30.05.mov", datetime(2026, 5, 1, 18, 30, 5, tzinfo=BERLIN)),  # macOS
        ("Screen Recording 2026-05-01 at 6.30.05 PM.mov", datetime(2026, 5, 1, 18, 30, 5, tzinfo=BERLIN)),
        ("PXL_20260501_163005123.mp4", datetime(2026, 5, 1, 16, 30, 5, tzinfo=UTC)),  # Pixel names are UTC
    ],
)
def test_phone_file_names_give_capture_dates(name: str, expected: datetime) -> None:
    assert date_from_name(name, BERLIN) == expected
    dt, source = capture_time(None, name, 0, BERLIN)
    assert source == "filename" and dt == expected


def test_mtime_is_the_last_resort() -> None:
    dt, source = capture_time(None, "holiday.mp4", 1777660200.0, UTC)
    assert source == "mtime" and dt == datetime.fromtimestamp(1777660200.0, UTC)


def test_impossible_dates_in_names_are_ignored() -> None:
    assert date_from_name("VID_20261399_250000.mp4", UTC) is None


def resident(path: Path) -> float:
    """The fraction of a file's pages in the page cache (mincore(2))."""
    import ctypes
    import os

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    os.close(fd)
    pages = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * pages)()
    assert libc.mincore(addr, size, vec) == 0
    libc.munmap(addr, size)
    return sum(v & 1 for v in vec) / pages


def needs_a_disk(path: Path) -> None:
    """On tmpfs the page cache is the storage: nothing can be dropped from it."""
    from draftsync.watch import mount_fstype

    if mount_fstype(str(path)) in ("tmpfs", "ramfs"):
        pytest.skip("the test folder is in memory (tmpfs): there is no disk to read from")


def test_a_read_back_comes_from_the_disk_not_the_page_cache(tmp_path: Path) -> None:
    import os

    from draftsync.fingerprint import drop_cached, hash_from_disk

    needs_a_disk(tmp_path)

    p = tmp_path / "copy.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, os.urandom(3 * 1024 * 1024))
        assert resident(p) == 1.0  # just written: all of it in memory
        os.fsync(fd)
        assert drop_cached(fd) and resident(p) == 0.0  # what is read next comes from the disk
        digest, n, from_disk = hash_from_disk(fd)
    finally:
        os.close(fd)
    assert (digest, n, from_disk) == (b3(p), 3 * 1024 * 1024, True)
    hash_file(p)
    assert resident(p) == 0.0  # verify and the scrub read the disk and leave the cache as it was


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv"])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_the_track_header_gives_the_rotation_a_decoded_frame_would(tmp_path: Path, ext: str, rotation: int) -> None:
    import av

    from draftsync.fingerprint import MediaFacts, _decode_first_frame, mp4_rotation

    v = make_video(tmp_path / f"r{ext}", rotation=rotation)
    with av.open(str(v)) as c:
        decoded = MediaFacts()
        _decode_first_frame(c, decoded)
    with open(v, "rb") as f:
        header = mp4_rotation(f)
    assert decoded.rotation == rotation and probe(v).rotation == rotation
    assert header == (None if ext == ".mkv" else rotation)  # Matroska has no track header: a frame is decoded


@pytest.mark.parametrize(("codec", "ext", "audio"), [("libx264", ".mp4", True), ("libx264", ".mov", False),
                                                     ("libx265", ".mp4", False), ("mpeg4", ".3gp", True),
                                                     ("libx264", ".mkv", True)])  # fmt: skip
def test_the_probe_without_decoding_finds_what_decoding_finds(
    tmp_path: Path, codec: str, ext: str, audio: bool
) -> None:
    import av

    from draftsync.fingerprint import _decode_first_frame, _facts

    v = make_video(tmp_path / f"v{ext}", codec=codec, audio=audio, rotation=270, size=(320, 240),
                   creation_time="2026-05-01T10:00:00.000000Z")  # fmt: skip
    with av.open(str(v), options={"probesize": "20000000"}) as c:  # streams found by decoding, as before
        decoded = _facts(c)
        _decode_first_frame(c, decoded)
    assert probe(v) == decoded and decoded.rotation == 270
