"""Fingerprints: the BLAKE3 content hash, the media probe (PyAV), and a video's capture date with
where that date came from.

The hash itself is fed by the archive's copy loop, so the source is read once; this module owns the
hash's form and the decisions (pure functions) about dates.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

import blake3

HASH_PREFIX = "blake3:"
READ_CHUNK = 4 * 1024 * 1024
# A large file is read in large chunks, so that BLAKE3's threads each get a good share of every update.
CHECK_CHUNK = 16 * 1024 * 1024
# From this size a file is hashed on all cores. Below it, threads cost more than they save (measured on two
# cores: one thread hashes 4 MiB updates at 2.9 GiB/s, all cores at 2.2; 16 MiB updates at 3.2 and 3.0).
THREADED_FROM = 64 * 1024 * 1024


def new_hasher(size: int = 0) -> Any:
    """A BLAKE3 hasher for a file of `size` bytes: multi-threaded for large files (fed CHECK_CHUNK updates)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO if size >= THREADED_FROM else 1)


def chunk_for(size: int) -> int:
    """The read size for a file of `size` bytes: large for large files, never more than the file."""
    return min(CHECK_CHUNK if size >= THREADED_FROM else READ_CHUNK, size + 4096)


def hash_file(path: str | Path, *, should_stop: Any = None, beat: Any = None) -> tuple[str, int]:
    """Hash a whole archived file as the disk holds it (`hash_from_disk`): `verify`, the scrub and the
    adoption of a placed file check the disk, not what the page cache remembers. Returns (digest with
    prefix, bytes read). `beat` is called per chunk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        digest, n, _ = hash_from_disk(fd, should_stop=should_stop, beat=beat)
        drop_cached(fd)  # a whole archive read through must not push everything else out of memory
    finally:
        os.close(fd)
    return digest, n


def drop_cached(fd: int) -> bool:
    """Drop a file's pages from the page cache, so that the next read comes from the disk. Only clean
    pages can be dropped: fsync the file first. False where the system cannot (the read is then a cache
    read, and says nothing about the disk)."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        return False
    return True


def hash_from_disk(fd: int, *, should_stop: Any = None, beat: Any = None) -> tuple[str, int, bool]:
    """Hash an fsync'd file as the disk holds it: its cached pages are dropped first, then it is read
    back from the start in large chunks, each hashed on all cores. Returns (digest, bytes read, whether the
    read came from the disk rather than the page cache)."""
    from_disk = drop_cached(fd)
    size = os.fstat(fd).st_size
    h = new_hasher(size)
    n = 0
    # A small file gets a buffer its size (zeroing 16 MiB costs more than reading a 1 MB file).
    buf = bytearray(chunk_for(size))
    view = memoryview(buf)
    while True:
        if should_stop is not None and should_stop():
            from draftsync.errors import Abandoned

            raise Abandoned("stopped while reading a copy back")
        if beat is not None:
            beat()
        k = os.preadv(fd, [buf], n)
        if not k:
            break
        h.update(view[:k])
        n += k
    return HASH_PREFIX + h.hexdigest(), n, from_disk


def short(digest: str, n: int = 8) -> str:
    return digest.removeprefix(HASH_PREFIX)[:n]


@dataclass
class MediaFacts:
    container: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    rotation: int = 0
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    creation_time: str | None = None  # as stored in the container
    encoder: str | None = None
    comment: str | None = None
    make: str | None = None
    model: str | None = None

    @property
    def display_size(self) -> tuple[int, int] | None:
        if not self.width or not self.height:
            return None
        if self.rotation % 180 == 90:
            return self.height, self.width
        return self.width, self.height

    @property
    def orientation(self) -> str | None:
        size = self.display_size
        if size is None:
            return None
        w, h = size
        return "portrait" if h > w else "landscape" if w > h else "square"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["orientation"] = self.orientation
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> MediaFacts | None:
        if not d:
            return None
        known: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


# The first box types of an ISO base media file (MP4, QuickTime, 3GP: what phones write).
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def probe(path: str | Path) -> MediaFacts:
    """Media facts from the container (and, where it does not say the rotation, the first decoded frame).
    Raises ValueError if it is not a readable video.

    An MP4 or QuickTime file says everything in its header: FFmpeg is told not to decode frames while it
    looks at the streams (`skip_frame=all`; the same facts, in a quarter of the time) and the rotation is
    read from the track header. Whether such a stream decodes is then first tried by the perceptual
    signature, which decodes anyway. Other containers (Matroska, MPEG-TS) are probed by decoding."""
    import av

    from draftsync import names

    try:
        with open(path, "rb") as fh:
            iso = fh.read(8)[4:8] in _ISO_BOXES
            rotation = mp4_rotation(fh) if iso else None
    except (OSError, struct.error):
        iso, rotation = False, None
    options = {"probesize": "20000000", **({"skip_frame": "all"} if iso else {})}
    f = None
    container: Any
    try:
        if names.is_text(str(path)):
            container = av.open(str(path), options=options, timeout=30)
        else:
            # FFmpeg takes names as UTF-8 text; a name that is not is read through a file object.
            f = open(path, "rb")  # noqa: SIM115
            container = av.open(f, options=options, timeout=30)
    except (av.FFmpegError, OSError, UnicodeError) as e:
        if f is not None:
            f.close()
        raise ValueError(f"not a readable video: {e}") from None
    try:
        facts = _facts(container)
        if rotation is None:
            _decode_first_frame(container, facts)
        else:
            facts.rotation = rotation
        return facts
    finally:
        container.close()
        if f is not None:
            f.close()


def _facts(container: Any) -> MediaFacts:

    facts = MediaFacts(container=container.format.name)
    md = {k.lower(): v for k, v in container.metadata.items()}
    if container.duration:
        facts.duration = round(container.duration / 1_000_000, 3)
    facts.encoder = md.get("encoder")
    facts.comment = md.get("comment") or md.get("description")
    facts.make = md.get("com.apple.quicktime.make") or md.get("make")
    facts.model = md.get("com.apple.quicktime.model") or md.get("model")
    # Apple's creationdate carries the local offset; creation_time is UTC.
    facts.creation_time = md.get("com.apple.quicktime.creationdate") or md.get("creation_time")
    if not container.streams.video:
        raise ValueError("no video stream")
    v = container.streams.video[0]
    facts.video_codec = v.codec_context.name
    facts.width = v.codec_context.width or None
    facts.height = v.codec_context.height or None
    rate = v.average_rate or v.guessed_rate
    facts.fps = round(float(rate), 3) if rate else None
    if facts.creation_time is None:
        facts.creation_time = v.metadata.get("creation_time")
    if facts.duration is None and v.duration and v.time_base:
        facts.duration = round(float(v.duration * v.time_base), 3)
    if container.streams.audio:
        facts.audio_codec = container.streams.audio[0].codec_context.name
    return facts


def _decode_first_frame(container: Any, facts: MediaFacts) -> None:
    """Rotation from the first decoded frame's display matrix (containers without a track header to read);
    raises ValueError if the video stream does not decode."""
    import av

    v = container.streams.video[0]
    # One frame is not worth starting a thread pool.
    v.codec_context.thread_count = 1
    v.codec_context.skip_frame = "DEFAULT"
    facts.rotation = 0
    try:
        for frame in container.decode(v):
            facts.rotation = int(frame.rotation or 0) % 360
            break
    except (av.FFmpegError, ValueError) as e:
        raise ValueError(f"video stream does not decode: {e}") from None


_MOOV_MAX = 64 * 1024 * 1024


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF boxes in data[start:end]."""
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, i)
        head = 8
        if size == 1 and i + 16 <= end:
            size, head = struct.unpack_from(">Q", data, i + 8)[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            return
        yield kind, i + head, i + size
        i += size


def mp4_rotation(f: BinaryIO) -> int | None:
    """The display rotation (degrees, 0/90/180/270 as FFmpeg reports it) of the first video track of an
    MP4/QuickTime file, read from its track header's matrix without decoding anything; None when the file
    does not say (then the first frame is decoded)."""
    # Top-level boxes: find moov (before or after the media data) without reading the media.
    pos = 0
    moov = None
    while True:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return None
        size, kind = struct.unpack_from(">I4s", head)
        hl = 8
        if size == 1 and len(head) == 16:
            size, hl = struct.unpack_from(">Q", head, 8)[0], 16
        if kind == b"moov":
            if size == 0 or size > _MOOV_MAX + hl or size < hl:
                return None
            f.seek(pos + hl)
            moov = f.read(size - hl)
            break
        if size < hl:
            return None
        pos += size
    for kind, s, e in _boxes(moov, 0, len(moov)):
        if kind != b"trak":
            continue
        tkhd = handler = None
        for k2, s2, e2 in _boxes(moov, s, e):
            if k2 == b"tkhd":
                tkhd = (s2, e2)
            elif k2 == b"mdia":
                for k3, s3, e3 in _boxes(moov, s2, e2):
                    if k3 == b"hdlr" and e3 - s3 >= 12:
                        handler = moov[s3 + 8 : s3 + 12]
        if handler != b"vide" or tkhd is None:
            continue
        s2, e2 = tkhd
        off = s2 + (52 if moov[s2] == 1 else 40)
        if off + 36 > e2:
            return None
        a, b = struct.unpack_from(">ii", moov, off)
        if a == 0 and b == 0:
            return None
        # FFmpeg's av_display_rotation_get on the matrix mov.c builds from these coefficients.
        return round(-math.degrees(math.atan2(b, a))) % 360
    return None


# --- capture date ------------------------------------------------------------------------------

_MIN_PLAUSIBLE = datetime(1995, 1, 1, tzinfo=UTC)


def parse_container_time(value: str | None) -> datetime | None:
    """Parse a container timestamp; QuickTime creation_time is UTC, Apple's creationdate has an offset."""
    if not value:
        return None
    v = value.strip().replace(" ", "T", 1)
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    m = re.match(r"^(.*[T ]\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d{2})(\d{2})$", v)
    if m:  # +0200 -> +02:00
        v = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # QuickTime stores UTC without saying so
    if dt < _MIN_PLAUSIBLE or dt > datetime.now(UTC) + timedelta(days=2):
        return None  # 1904/1970 epochs and clocks set wrong are not capture dates
    return dt


_NAME_PATTERNS: list[tuple[re.Pattern[str], bool]] = [
    # (pattern with named groups Y m d [H M S] [ampm], True if the name is in UTC)
    (re.compile(r"PXL_(?P<Y>\d{4})(?P<m>\d\d)(?P<d>\d\d)_(?P<H>\d\d)(?P<M>\d\d)(?P<S>\d\d)"), True),
    (
        re.compile(
            r"(?:VID|IMG|MVIMG|video)[_-](?P<Y>\d{4})(?P<m>\d\d)(?P<d>\d\d)[_-](?P<H>\d\d)(?P<M>\d\d)(?P<S>\d\d)",
            re.I,
        ),
        False,
    ),
    (re.compile(r"VID-(?P<Y>\d{4})(?P<m>\d\d)(?P<d>\d\d)-WA\d+", re.I), False),  # WhatsApp
    (
        re.compile(
            r"Screen ?Recording[ _](?P<m>\d\d)-(?P<d>\d\d)-(?P<Y>\d{4})[ _](?P<H>\d\d)-(?P<M>\d\d)-(?P<S>\d\d)",
            re.I,
        ),
        False,
    ),
    (
        re.compile(
            r"Screen Recording (?P<Y>\d{4})-(?P<m>\d\d)-(?P<d>\d\d) at (?P<H>\d{1,2})\.(?P<M>\d\d)\.(?P<S>\d\d)(?:\s?(?P<ampm>[AP]M))?",
            re.I,
        ),
        False,
    ),
    (
        re.compile(r"(?:^|[^\d])(?P<Y>(?:19|20)\d\d)(?P<m>\d\d)(?P<d>\d\d)_(?P<H>\d\d)(?P<M>\d\d)(?P<S>\d\d)"),
        False,
    ),  # Samsung
    (
        re.compile(r"(?P<Y>(?:19|20)\d\d)-(?P<m>\d\d)-(?P<d>\d\d)[ _T](?P<H>\d\d)[.:-](?P<M>\d\d)[.:-](?P<S>\d\d)"),
        False,
    ),
]


def date_from_name(name: str, tz: tzinfo) -> datetime | None:
    """The capture date encoded in common phone file names (local time unless the scheme is UTC)."""
    for pattern, is_utc in _NAME_PATTERNS:
        m = pattern.search(name)
        if not m:
            continue
        g = m.groupdict()
        try:
            hour = int(g.get("H") or 0)
            ampm = (g.get("ampm") or "").upper()
            if ampm == "PM" and hour < 12:
                hour += 12
            elif ampm == "AM" and hour == 12:
                hour = 0
            dt = datetime(
                int(g["Y"]), int(g["m"]), int(g["d"]), hour, int(g.get("M") or 0), int(g.get("S") or 0),
                tzinfo=UTC if is_utc else tz,
            )  # fmt: skip
        except ValueError:
            continue
        if _MIN_PLAUSIBLE <= dt <= datetime.now(UTC) + timedelta(days=2):
            return dt
    return None


def plausible_time(t: float, now: float | None = None) -> bool:
    """A file time that can be a capture date: after 1995 and not in the future (a camera clock set to
    2300 is not when the clip was shot)."""
    now = datetime.now(UTC).timestamp() if now is None else now
    return _MIN_PLAUSIBLE.timestamp() <= t <= now + 2 * 86400


def capture_time(
    container_time: str | None, name: str, mtime: float, tz: tzinfo, *, first_seen: float | None = None
) -> tuple[datetime, str]:
    """When the video was shot, in `tz`, and where that came from: metadata, filename, mtime, or (when
    the file's clock lied too) first_seen, the moment draftsync first saw it."""
    dt = parse_container_time(container_time)
    if dt is not None:
        return dt.astimezone(tz), "metadata"
    dt = date_from_name(name, tz)
    if dt is not None:
        return dt.astimezone(tz), "filename"
    if plausible_time(mtime) or first_seen is None:
        try:
            return datetime.fromtimestamp(mtime, tz), "mtime"
        except (OverflowError, OSError, ValueError):
            first_seen = datetime.now(UTC).timestamp() if first_seen is None else first_seen
    return datetime.fromtimestamp(first_seen, tz), "first_seen"
