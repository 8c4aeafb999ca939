"""Thumbnails: one keyframe picture (JPEG or WebP) per archived video, for the status page and the digest.

A thumbnail is metadata of the archive: it lives under the archive's metadata folder
(`<root>/.draftsync/thumbs/ab/<hash>.jpg`, a dot-folder, so the archive contract keeps holding), it is
listed in the video's sidecar (`"thumbnail"`), and the catalog remembers which videos have one (or why
not). The picture is decoded from the keyframe nearest a tenth of the clip (seek, decode one frame: the
file is never decoded whole), turned as the phone meant it (display rotation) and scaled to fit
320 x 320.

Made after each video is archived (the `on_archived` hook wakes the thumbnailer) and by the same loop as
a backfill of older videos, newest first; `reindex` makes any that are missing. Nothing is written when
the archive's disk is not there: a thumbnail is made only for a video file it can read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from draftsync import log
from draftsync.atomic import write_atomic
from draftsync.errors import DraftsyncError
from draftsync.marker import archive_present

if TYPE_CHECKING:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog, VideoRecord
    from draftsync.runtime import Runtime

_log = log.get("draftsync.thumbs")

THUMB_DIR = ".draftsync/thumbs"
MAX_SIDE = 320
MAX_FORWARD = 90  # frames decoded past a keyframe to reach the wanted time
SUFFIX = {"jpeg": ".jpg", "webp": ".webp"}
MEDIA_TYPE = {".jpg": "image/jpeg", ".webp": "image/webp"}
MISSING = "the video file is missing from the archive"


def thumb_rel(hash: str, fmt: str = "jpeg") -> str:
    """Where a video's thumbnail lives, relative to the archive root (stable: named by content hash)."""
    hexd = hash.split(":", 1)[-1]
    return f"{THUMB_DIR}/{hexd[:2]}/{hexd}{SUFFIX[fmt]}"


def fit(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Scale (width, height) to fit a max_side square, keeping the aspect; even sizes for 4:2:0 encoders."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _quarter_turns(rotation: int) -> int:
    """np.rot90 turns counter-clockwise, as the display matrix's rotation angle is measured."""
    return round((rotation or 0) / 90) % 4


def _informative(rgb: Any) -> bool:
    """Not a black or flat frame (fade-ins, black intros)."""
    return bool(rgb.mean() > 16 and rgb.std() > 6)


def render(path: str | Path, fmt: str = "jpeg", max_side: int = MAX_SIDE) -> bytes:
    """The thumbnail of one video, encoded. Raises ValueError for a file that does not decode."""
    import av
    import numpy as np

    try:
        container = av.open(str(path), timeout=30)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot open: {e}") from None
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        tb = stream.time_base
        duration = (container.duration / 1_000_000) if container.duration else float((stream.duration or 0) * (tb or 0))
        best: Any = None
        rotation = 0
        error = "no frame decodes"
        # A tenth of the way in skips most fade-ins; if that frame is black, try further on.
        for at in (0.1, 0.3, 0.5) if duration > 0 else (0.0,):
            try:
                frame = _frame_near(container, stream, at * duration)
            except (av.FFmpegError, ValueError) as e:
                error = f"does not decode: {e}"
                continue
            if frame is None:
                continue
            rotation = int(getattr(frame, "rotation", 0) or 0)
            w, h = fit(frame.width, frame.height, max_side)
            rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            best = rgb
            if _informative(rgb):
                break
        if best is None:
            raise ValueError(error)
    picture = np.ascontiguousarray(np.rot90(best, _quarter_turns(rotation)))
    return encode(picture, fmt)


def _frame_near(container: Any, stream: Any, t: float) -> Any:
    """The frame at about `t` seconds: seek to the keyframe before it, then decode forward a bounded
    number of frames (phones put a keyframe every second or so; a sparse file costs at most MAX_FORWARD)."""
    tb = stream.time_base
    if tb and t > 0:
        container.seek(int(t / tb), stream=stream, backward=True, any_frame=False)
    frame = None
    for i, f in enumerate(container.decode(stream)):
        frame = f
        if f.time is None or f.time >= t - 0.02 or i >= MAX_FORWARD:
            break
    return frame


def encode(rgb: Any, fmt: str) -> bytes:
    """An RGB picture (h x w x 3, uint8, even sizes) as one JPEG or WebP image, with PyAV's encoders."""
    import av

    h, w = rgb.shape[:2]
    codec = {"jpeg": "mjpeg", "webp": "libwebp"}[fmt]
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height = w, h
    ctx.time_base = Fraction(1, 25)
    if fmt == "jpeg":
        ctx.pix_fmt = "yuvj420p"
        ctx.qscale = True
        ctx.global_quality = 4 * 118  # -q:v 4 (FF_QP2LAMBDA = 118): good enough for a 320 px preview
    else:
        ctx.pix_fmt = "yuv420p"
        ctx.options = {"quality": "75"}
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=ctx.pix_fmt)
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    if not data:
        raise ValueError(f"the {fmt} encoder produced nothing")
    return data


def looks_whole(data: bytes, suffix: str) -> bool:
    """Is this a complete picture of its kind? A JPEG opens with SOI and ends with EOI; a WebP is a RIFF
    whose stated length is the file's. Enough to catch a truncated or overwritten thumbnail without
    decoding it on every request."""
    if suffix == ".jpg":
        return len(data) > 4 and data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    if suffix == ".webp":
        return (len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
                and int.from_bytes(data[4:8], "little") + 8 == len(data))  # fmt: skip
    return False


def _whole_file(path: Path) -> bool:
    try:
        return looks_whole(path.read_bytes(), path.suffix)
    except OSError:
        return False


class Thumbnailer:
    """The I/O shell: make, store, list in the sidecar, record in the catalog."""

    def __init__(self, catalog: Catalog, archive: Archive, fmt: str = "jpeg",
                 should_stop: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.catalog = catalog
        self.archive = archive
        self.fmt = fmt
        self.should_stop = should_stop

    def make(self, v: VideoRecord) -> str | None:
        """Make (or remake) one video's thumbnail; its relative path, or None (the reason is recorded)."""
        video = self.archive.path_of(v.archive_path)
        if not video.is_file():
            if archive_present(self.archive.root):
                self.catalog.set_thumb(v.hash, None, MISSING)
            return None
        try:
            data = render(video, self.fmt)
        except ValueError as e:
            self.catalog.set_thumb(v.hash, None, str(e))
            _log.info("no thumbnail for this video", archive_path=v.archive_path, reason=str(e))
            return None
        rel = thumb_rel(v.hash, self.fmt)
        out = self.archive.root / rel
        if not archive_present(self.archive.root):
            return None  # the disk went away while rendering: the ingest stage reports it; retry later
        try:
            # Folders only below the root, never the root itself (the disk may vanish at any moment).
            self.archive.make_dirs(str(PurePosixPath(rel).parent))
            write_atomic(out, data, mode=0o644, replace=True, mkdir=False)
        except (OSError, DraftsyncError) as e:  # a full, read-only or missing archive disk: retry later
            _log.warning("cannot write a thumbnail", archive_path=v.archive_path, error=str(e))
            return None
        self.archive.update_sidecar(v.archive_path, {"thumbnail": rel})
        self.catalog.set_thumb(v.hash, rel, None)
        return rel

    def backfill(self, limit: int = 20) -> int:
        """Thumbnails for up to `limit` videos that have none yet, newest first; how many were attempted."""
        if not archive_present(self.archive.root):
            return 0
        done = 0
        for v in self.catalog.unthumbed(limit):
            if self.should_stop():
                break
            self.make(v)
            done += 1
        return done

    def rebuild_missing(self, page: int = 500) -> dict[str, int]:
        """`reindex`: every video gets its thumbnail back: recorded if the file is there, made if not."""
        counts = {"kept": 0, "made": 0, "failed": 0}
        self.catalog.prune_thumbs()  # videos that are no longer in the catalog
        for v in _all_videos(self.catalog, page):
            if self.should_stop():
                break
            known = self.catalog.thumb(v.hash)
            found = next((r for r in _candidates(v.hash, known) if _whole_file(self.archive.root / r)), None)
            if found is not None:
                if known != (found, None):
                    self.catalog.set_thumb(v.hash, found, None)
                counts["kept"] += 1
            elif self.make(v) is not None:
                counts["made"] += 1
            else:
                counts["failed"] += 1
        return counts


def _candidates(hash: str, known: tuple[str | None, str | None] | None) -> list[str]:
    out = [known[0]] if known and known[0] else []
    return out + [thumb_rel(hash, f) for f in SUFFIX if thumb_rel(hash, f) not in out]


def _all_videos(catalog: Catalog, page: int) -> Iterator[VideoRecord]:
    before: tuple[float, str] | None = None
    while True:
        rows = catalog.videos_page(page, before)
        if not rows:
            return
        for v, _, _ in rows:
            yield v
        before = (rows[-1][0].archived_at, rows[-1][0].hash)


class ThumbService:
    """Hosted by the daemon: one supervised loop that makes thumbnails, woken by each archived video."""

    name = "thumbnails"

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.idle = threading.Event()  # set while the loop sleeps with nothing to do
        self.maker: Thumbnailer | None = None
        self._damaged: set[str] = set()  # hashes whose thumbnail file the page found damaged
        self._lock = threading.Lock()

    def remake(self, hash: str) -> None:
        """Called by the status page (which cannot write) when a thumbnail file is damaged: this loop,
        which may, makes it again. Bounded: a page full of damaged pictures waits for the next views."""
        with self._lock:
            if len(self._damaged) < 500:
                self._damaged.add(hash)
        self.wake.set()

    def _remake_damaged(self) -> int:
        assert self.maker is not None
        with self._lock:
            todo, self._damaged = self._damaged, set()
        for h in todo:
            v = self.maker.catalog.video(h)
            if v is not None and self.maker.make(v) is not None:
                _log.info("damaged thumbnail made again", archive_path=v.archive_path)
        return len(todo)

    def start(self, rt: Runtime) -> None:
        if not rt.settings.web.thumbnails:
            return
        self.maker = Thumbnailer(rt.catalog, rt.archive, rt.settings.web.thumbnail_format, rt.stop.is_set)
        rt.on_archived(lambda _v: self.wake.set())
        stop = rt.stop

        def once() -> None:
            assert self.maker is not None
            if self._remake_damaged() + self.maker.backfill(20) == 0:
                self.idle.set()
                self.wake.wait(60.0)  # nothing to do: sleep until a video is archived (or a minute passes)
                self.idle.clear()
                self.wake.clear()

        rt.supervisor.spawn("thumbnails", once, stop, interval=0, max_silence=900)

    def stop(self) -> None:
        self.wake.set()
