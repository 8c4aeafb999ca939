"""Perceptual video signatures: what makes two differently encoded files the same picture sequence.

A signature is a list of samples (presentation time, a 64-bit difference hash of the picture with the
mask of its clear bits, the picture's mean colour) plus the clip's duration, the aspect of its picture once
letterbox, pillarbox or padding bars of any colour are removed, where an appended end card starts, and
the sound's print (`audioprint`). The samples come from a decoding *plan*, a pure function of the
keyframe layout: keyframes are decoded on their own and, where the budget allows, a short window of
frames after some of them; nothing else is decoded, so the cost stays a few percent of a full decode
whether keyframes come every second (phones) or every ten (x264's and x265's defaults). Times are the
decoded frames' presentation timestamps, never the container index's decode timestamps.

Matching finds the time offset at which the two sequences agree (voting over close hash pairs), pairs
each sample with the nearest one on the other side, and counts a pair only when the time gap between
the two is small compared with how fast the picture changes there; a whole sequence must line up, so
a shared black intro, one similar frame or a shared end card never makes two clips alike.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from draftsync.audioprint import AudioPrint

VERSION = 2
BLANK = np.uint64(0)  # an uninformative (flat or near-black) frame
MATCH_BITS = 12  # two frames shown at the same moment differ on at most this share of 64 clear bits
MAX_DRIFT_BITS = 8  # a pair further apart in time than the picture allows is not evidence either way
MAX_GAP = 0.7  # seconds: samples further apart than this are never paired
MIN_PAIRS = 4


# --- the decoding plan (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """How much decoding a signature may cost, in units of one inter frame of the clip's size."""

    rate: float = 0.025  # of what decoding every frame would cost
    floor_pixels: float = 80e6  # short or small clips may decode this much (a few seconds of a small clip)
    intra_cost: float = 3.5  # a keyframe decodes about this many times slower than an inter frame
    max_samples: int = 64  # frames kept as samples (windows are thinned evenly beyond this)
    ladder: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0)


@dataclass(frozen=True)
class Gop:
    """One group of pictures: its keyframe's ordinal among keyframes, its time, and its packet count."""

    ordinal: int
    time: float
    packets: int


@dataclass(frozen=True)
class Window:
    """Decode the keyframe `ordinal` and the `extra` packets that follow it in decode order."""

    ordinal: int
    extra: int


def plan(gops: list[Gop], pixels: int, budget: Budget = Budget()) -> list[Window]:
    """Which keyframes to decode, and how many frames after each, within the budget.

    Keyframes are taken on a fixed ladder of spacings (all of them when they are affordable), so two
    copies with the same keyframe layout pick the same ones; what is left of the budget becomes windows
    after the chosen keyframes, in proportion to their GOP's length (long GOPs get long windows).
    """
    if not gops:
        return []
    frames = sum(g.packets for g in gops)
    full = frames + len(gops) * (budget.intra_cost - 1)
    units = max(budget.rate * full, budget.floor_pixels / max(1, pixels))
    chosen: list[Gop] = gops
    for spacing in budget.ladder:
        chosen = _on_grid(gops, spacing)
        if len(chosen) * budget.intra_cost <= 0.7 * units or len(chosen) <= 2:
            break
    left = units - len(chosen) * budget.intra_cost
    span = sum(g.packets for g in chosen) or 1
    out = []
    for g in chosen:
        extra = int(max(0.0, left) * g.packets / span)
        out.append(Window(g.ordinal, min(max(0, g.packets - 1), extra)))
    return out


def _on_grid(gops: list[Gop], spacing: float) -> list[Gop]:
    """The keyframe nearest each multiple of `spacing` (all keyframes for spacing 0), and the last one."""
    if spacing <= 0 or len(gops) <= 2:
        return list(gops)
    times = np.array([g.time for g in gops])
    t0 = times[0]
    picks = {0, len(gops) - 1}
    for k in range(int((times[-1] - t0) / spacing) + 1):
        picks.add(int(np.argmin(np.abs(times - (t0 + k * spacing)))))
    return [gops[i] for i in sorted(picks)]


# --- one frame ------------------------------------------------------------------------------------------


def _resize(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-average resize (numpy only): each output cell is the mean of the input pixels it covers."""
    h, w = img.shape
    if h < rows or w < cols:
        img = np.repeat(np.repeat(img, -(-rows // max(1, h)), axis=0), -(-cols // max(1, w)), axis=1)
        h, w = img.shape
    ys = (np.arange(rows) * h) // rows
    xs = (np.arange(cols) * w) // cols
    sums = np.add.reduceat(np.add.reduceat(img, ys, axis=0, dtype=np.float64), xs, axis=1)
    counts = np.diff(np.append(ys, h))[:, None] * np.diff(np.append(xs, w))[None, :]
    return (sums / counts).astype(np.float32)


_PLANAR_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
_PLANAR_HIGH = {"yuv420p10le": 10, "yuv422p10le": 10, "yuv444p10le": 10, "p010le": 16, "yuv420p12le": 12}
_LUMA = 320  # frames are kept at about this many rows and columns (a strided view: no resampling cost)


def luma(frame: Any) -> np.ndarray:
    """The frame's luma (uint8), every few rows and columns, display rotation applied."""
    fmt = frame.format.name
    plane = frame.planes[0]
    w, h = frame.width, frame.height
    sy, sx = max(1, h // _LUMA), max(1, w // _LUMA)
    if fmt in _PLANAR_8BIT:
        y = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[::sy, :w:sx]
    elif fmt in _PLANAR_HIGH:
        y16 = np.frombuffer(plane, "<u2").reshape(h, plane.line_size // 2)[::sy, :w:sx]
        y = (y16 >> (_PLANAR_HIGH[fmt] - 8)).astype(np.uint8)
    else:  # packed or unusual formats: let swscale make gray
        y = frame.reformat(format="gray").to_ndarray()[::sy, ::sx]
    return _upright(y, frame)


def _upright(img: np.ndarray, frame: Any) -> np.ndarray:
    turns = round((getattr(frame, "rotation", 0) or 0) / 90.0) % 4
    return np.ascontiguousarray(np.rot90(img, turns) if turns else img)


_CHROMA = 48  # chroma is kept coarser still: it only gives the picture's average colour


def chroma(frame: Any) -> np.ndarray | None:
    """The frame's two chroma planes (2 x rows x cols, uint8), upright; None for formats we do not read."""
    fmt = frame.format.name
    bits = 8 if fmt in _PLANAR_8BIT else _PLANAR_HIGH.get(fmt)
    if bits is None or fmt == "gray" or len(frame.planes) < 2:
        return None
    dtype, unit = (np.uint8, 1) if bits == 8 else ("<u2", 2)
    planes: list[np.ndarray] = []
    if fmt in ("nv12", "nv21", "p010le"):  # one plane of interleaved U, V pairs
        p = frame.planes[1]
        rows = np.frombuffer(p, dtype).reshape(p.height, p.line_size // unit)[:, : 2 * (frame.width // 2)]
        step = max(1, p.height // _CHROMA)
        first, second = rows[::step, 0::2][:, ::step], rows[::step, 1::2][:, ::step]
        planes = [second, first] if fmt == "nv21" else [first, second]
    else:
        for p in frame.planes[1:3]:
            arr = np.frombuffer(p, dtype).reshape(p.height, p.line_size // unit)[:, : p.width]
            step = max(1, p.height // _CHROMA)
            planes.append(arr[::step, ::step])
    if bits != 8:
        planes = [(np.asarray(x) >> (bits - 8)).astype(np.uint8) for x in planes]
    hh, ww = min(x.shape[0] for x in planes), min(x.shape[1] for x in planes)
    return np.stack([_upright(np.asarray(x)[:hh, :ww], frame) for x in planes])


def colour(uv: np.ndarray | None, bars: Bars) -> int:
    """The picture's mean chroma inside its bars as U << 8 | V (0: unknown)."""
    if uv is None:
        return 0
    u, v = bars.crop(uv[0]), bars.crop(uv[1])
    if u.size == 0:
        return 0
    return (round(float(u.mean())) << 8) | round(float(v.mean())) or 1


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|U - U'| + |V - V'| of packed mean chromas; NaN where either is unknown."""
    a16, b16 = a.astype(np.int32), b.astype(np.int32)
    d = np.abs((a16 >> 8) - (b16 >> 8)) + np.abs((a16 & 255) - (b16 & 255))
    return np.where((a16 == 0) | (b16 == 0), np.nan, d.astype(np.float64))


@dataclass(frozen=True)
class Bars:
    """Uniform bars (any colour) around the picture, as fractions of the frame's height and width."""

    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    right: float = 0.0

    def crop(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape
        r0, r1 = round(self.top * h), h - round(self.bottom * h)
        c0, c1 = round(self.left * w), w - round(self.right * w)
        return img[r0:r1, c0:c1]

    @property
    def area(self) -> tuple[float, float]:
        """(height, width) of the picture inside the bars, as fractions of the frame's."""
        return 1.0 - self.top - self.bottom, 1.0 - self.left - self.right


def _edge_run(mean: np.ndarray, std: np.ndarray) -> int:
    """How many leading lines are flat and of the first line's colour (from per-line mean and spread)."""
    flat = (std < 3.0) & (np.abs(mean - mean[0]) < 4.0)
    return int(np.argmin(flat)) if not flat.all() else len(flat)


def frame_bars(img: np.ndarray) -> Bars | None:
    """Bars of one frame; None when the whole frame is flat (nothing to learn from it)."""
    f = img.astype(np.float32)
    h, w = f.shape
    sq = f * f
    rows_m, cols_m = f.mean(axis=1), f.mean(axis=0)
    rows_s = np.sqrt(np.maximum(0.0, sq.mean(axis=1) - rows_m * rows_m))
    cols_s = np.sqrt(np.maximum(0.0, sq.mean(axis=0) - cols_m * cols_m))
    if float(rows_s.max(initial=0)) < 2.0 and float(rows_m.max() - rows_m.min()) < 2.0:
        return None
    return Bars(
        _edge_run(rows_m, rows_s) / h, _edge_run(rows_m[::-1], rows_s[::-1]) / h,
        _edge_run(cols_m, cols_s) / w, _edge_run(cols_m[::-1], cols_s[::-1]) / w,
    )  # fmt: skip


def clip_bars(per_frame: list[Bars | None]) -> Bars:
    """Bars are constant through a clip while content moves: the thinnest seen in any frame."""
    seen = [b for b in per_frame if b is not None]
    if not seen:
        return Bars()
    b = Bars(min(x.top for x in seen), min(x.bottom for x in seen), min(x.left for x in seen),
             min(x.right for x in seen))  # fmt: skip
    rows, cols = b.area
    return b if rows >= 0.1 and cols >= 0.1 else Bars()


MIN_STRONG = 6  # a frame with fewer clear gradients than this is uninformative


def describe(img: np.ndarray, bars: Bars = Bars()) -> tuple[int, int]:
    """(difference hash, strength mask) of the picture inside the bars; (0, 0) when it is uninformative.

    The hash has one bit per pair of neighbouring blocks of an 8x9 grid (is the left one darker?); the
    mask marks the pairs whose difference is clear (at least half the frame's typical difference), the
    ones a re-encode, a rescale or a watermark does not flip. Comparing only where both frames are
    clear keeps low-contrast textures (cellular automata, noise) comparable."""
    pic = bars.crop(img)
    h, w = pic.shape
    # Edges and corners carry watermarks, captions and app buttons; the centre carries the clip.
    my, mx = round(h * 0.08), round(w * 0.08)
    small = _resize(pic[my : h - my, mx : w - mx], 8, 9)
    diff = (small[:, :-1] - small[:, 1:]).flatten()
    # the typical difference, robust to a few huge ones (a burnt-in logo on a faint texture)
    typical = float(np.partition(np.abs(diff), 38)[38])  # the 60th percentile of 64
    if typical < 0.5:  # mostly flat: a logo or a title on a plain ground is still a picture
        typical = 0.5 * float(np.sqrt(np.mean(diff * diff)))
    if typical < 0.5 or float(small.max()) < 16.0:
        return 0, 0
    strong = np.abs(diff) >= 0.5 * typical
    if int(strong.sum()) < MIN_STRONG:
        return 0, 0
    value = int(np.packbits(diff > 0).view(">u8")[0])
    mask = int(np.packbits(strong).view(">u8")[0])
    return value or 1, mask  # a hash is never BLANK


def distance(ha: Any, ma: Any, hb: Any, mb: Any) -> np.ndarray:
    """How different two frames are, scaled to 64: a bit clear in both and of opposite sign counts fully,
    one clear in only one frame and of opposite sign counts half (the other side may be noise there),
    over the bits clear in either. 64 when too few bits are clear in both to compare."""
    both, either = ma & mb, ma | mb
    n = _popcount(both)
    flipped = ha ^ hb
    bad = _popcount(flipped & both) + 0.5 * _popcount(flipped & (ma ^ mb))
    return np.where(n >= MIN_STRONG, bad * 64.0 / np.maximum(_popcount(either), 1), 64.0)


# --- the signature --------------------------------------------------------------------------------------


@dataclass
class Signature:
    times: np.ndarray  # float32 seconds from the first frame
    hashes: np.ndarray  # uint64 difference hashes, BLANK for uninformative frames
    masks: np.ndarray  # uint64: which bits of each hash are clear (see `describe`)
    colours: np.ndarray  # uint16 mean chroma per sample (U << 8 | V, 0 unknown)
    duration: float
    aspect: float  # display width / height of the picture inside its bars
    audio: AudioPrint | None = None
    rate: np.ndarray = field(init=False, repr=False)  # how fast the picture changes, per sample
    card: float | None = field(init=False, repr=False)  # where an appended end card starts, if any

    def __post_init__(self) -> None:
        self.rate = _change_rate(self.times, self.hashes, self.masks)
        self.card = card_start(self.times, self.hashes, self.masks, self.duration)

    def informative(self) -> np.ndarray:
        return self.hashes != BLANK

    def content(self) -> np.ndarray:
        """Informative samples before any end card: what the clip itself looks like."""
        keep = self.informative()
        return keep & (self.times < self.card) if self.card is not None else keep

    @property
    def content_duration(self) -> float:
        return self.card if self.card is not None else self.duration

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION, "duration": round(self.duration, 3), "aspect": round(self.aspect, 4),
            "times": [round(float(t), 3) for t in self.times], "hashes": [f"{int(h):016x}" for h in self.hashes],
            "masks": [f"{int(m):016x}" for m in self.masks], "colours": [int(c) for c in self.colours],
            "audio": self.audio.to_json() if self.audio is not None else None,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signature:
        from draftsync.audioprint import AudioPrint

        if d.get("version") != VERSION:
            raise ValueError(f"signature version {d.get('version')} is not {VERSION}")
        hexes = lambda xs: np.array([int(h, 16) for h in xs], dtype=np.uint64)  # noqa: E731
        return cls(
            np.array(d["times"], dtype=np.float32), hexes(d["hashes"]), hexes(d["masks"]),
            np.array(d["colours"], dtype=np.uint16), float(d["duration"]), float(d["aspect"]),
            AudioPrint.from_json(d["audio"]) if d.get("audio") else None,
        )  # fmt: skip

    def pack(self) -> bytes:
        """Compact bytes for the catalog: header, times, hashes, masks, then the audio print."""
        audio = self.audio.pack() if self.audio is not None else b""
        head = struct.pack(_HEAD, VERSION, len(self.times), self.duration, self.aspect)
        body = self.times.astype("<f4").tobytes() + self.hashes.astype("<u8").tobytes()
        return head + body + self.masks.astype("<u8").tobytes() + self.colours.astype("<u2").tobytes() + audio

    @classmethod
    def unpack(cls, data: bytes) -> Signature:
        from draftsync.audioprint import AudioPrint

        version, n, duration, aspect = struct.unpack_from(_HEAD, data)
        if version != VERSION:
            raise ValueError(f"signature version {version} is not {VERSION}")
        off = struct.calcsize(_HEAD)
        times = np.frombuffer(data, "<f4", n, off).astype(np.float32)
        hashes = np.frombuffer(data, "<u8", n, off + 4 * n).astype(np.uint64)
        masks = np.frombuffer(data, "<u8", n, off + 12 * n).astype(np.uint64)
        colours = np.frombuffer(data, "<u2", n, off + 20 * n).astype(np.uint16)
        rest = data[off + 22 * n :]
        return cls(times, hashes, masks, colours, duration, aspect, AudioPrint.unpack(rest) if rest else None)

    def keys(self, n: int = 16) -> np.ndarray:
        """Up to `n` hashes spread over the clip's content: what the band index holds for it (never an end
        card's, which every export shares)."""
        h = self.hashes[self.content()]
        if len(h) <= n:
            return h
        return h[np.linspace(0, len(h) - 1, n).round().astype(int)]


_HEAD = "<HIdd"


def _change_rate(times: np.ndarray, hashes: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per sample, how fast the picture changes (distance units per second, from its nearest neighbours)."""
    n = len(times)
    rate = np.full(n, 64.0, dtype=np.float32)
    if n < 2:
        return rate
    dt = np.maximum(np.diff(times.astype(np.float64)), 1e-3)
    dist = distance(hashes[1:], masks[1:], hashes[:-1], masks[:-1])
    ok = (hashes[1:] != BLANK) & (hashes[:-1] != BLANK) & (dt <= 1.5)  # far neighbours say little
    step = np.where(ok, dist / dt, np.inf)
    best = np.minimum(np.concatenate([[np.inf], step]), np.concatenate([step, [np.inf]]))
    # with no close neighbour, assume a picture that changes fast (pairs far apart then prove nothing)
    return np.where(np.isfinite(best), best, 64.0).astype(np.float32)


# --- computing a signature (I/O) ---------------------------------------------------------------------


@dataclass
class _Probe:
    duration: float
    pixels: int
    aspect: float  # display aspect of the coded frame (sample aspect ratio applied, before rotation)


def compute(path: str | Path, budget: Budget = Budget(), audio: bool = True) -> Signature:
    """Sample the video (and fingerprint its audio) without decoding all of it.

    Raises ValueError for a file that cannot be opened or has no decodable video."""

    container = _open(path)
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        probe = _probe(container, stream)
        gops = _gops(container, stream)
        windows = plan(gops, probe.pixels, budget)
        frames = list(_decode(container, stream, gops, windows, budget.max_samples))
        if not frames:
            raise ValueError("no frame decodes")
        fp = None
        if audio and container.streams.audio:
            from draftsync.audioprint import fingerprint_stream

            fp = fingerprint_stream(container, container.streams.audio[0], probe.duration)
    start = min(f[0] for f in frames)
    bars = clip_bars([frame_bars(img) for _, img, _, _ in frames])
    rows, cols = bars.area
    aspect = (probe.aspect if frames[0][3] % 2 == 0 else 1 / probe.aspect) * cols / rows
    frames.sort(key=lambda f: f[0])
    times = np.array([f[0] - start for f in frames], dtype=np.float32)
    described = [describe(img, bars) for _, img, _, _ in frames]
    hashes = np.array([h for h, _ in described], dtype=np.uint64)
    masks = np.array([m for _, m in described], dtype=np.uint64)
    colours = np.array([colour(uv, bars) for _, _, uv, _ in frames], dtype=np.uint16)
    keep = np.concatenate([[True], np.diff(times) > 1e-4])
    return Signature(times[keep], hashes[keep], masks[keep], colours[keep], probe.duration, float(aspect), fp)


def _open(path: str | Path) -> Any:
    """Open without FFmpeg's stream probing (it decodes frames to learn what MP4/MOV headers already say);
    a container whose headers do not say (MPEG-TS, raw streams) is opened again the usual way."""
    import av

    try:
        container = av.open(str(path), timeout=30, options={"probesize": "32", "analyzeduration": "0"})
        v = container.streams.video[0] if container.streams.video else None
        if v is not None and v.codec_context.width and v.codec_context.format is not None:
            return container
        container.close()
        return av.open(str(path), timeout=30)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot open: {e}") from None


def _probe(container: Any, stream: Any) -> _Probe:
    tb = stream.time_base or Fraction(1, 90000)
    # the picture's own length: a longer sound track (an export's chime) does not stretch it
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    cc = stream.codec_context
    w, h = cc.width or 0, cc.height or 0
    if not w or not h or duration <= 0:
        raise ValueError("unknown frame size or duration")
    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    sar_f = float(sar) if sar else 1.0
    return _Probe(duration, w * h, (w * (sar_f or 1.0)) / h)


def _gops(container: Any, stream: Any) -> list[Gop]:
    """Keyframe layout from the container index (no reading), or from one pass over the packets."""
    tb = float(stream.time_base or Fraction(1, 90000))
    layout: list[tuple[float, bool]] = []
    try:
        entries = stream.index_entries
        layout = [(e.timestamp * tb, bool(e.is_keyframe)) for e in entries]
    except (AttributeError, TypeError):
        layout = []
    # An index with keyframes only (Matroska cues) says nothing about GOP lengths: read the packets.
    if not layout or (all(k for _, k in layout) and len(layout) < 4 * max(1.0, float(container.duration or 0) / 1e6)):
        layout = [(float(p.dts * tb), bool(p.is_keyframe)) for p in container.demux(stream) if p.dts is not None]
        container.seek(0, stream=stream, backward=True, any_frame=False)
    gops: list[Gop] = []
    for t, key in layout:
        if key or not gops:
            gops.append(Gop(len(gops), t, 1))
        else:
            last = gops[-1]
            gops[-1] = Gop(last.ordinal, last.time, last.packets + 1)
    return gops


def _decode(container: Any, stream: Any, gops: list[Gop], windows: list[Window],
            max_samples: int) -> Iterator[tuple[float, np.ndarray, np.ndarray | None, int]]:  # fmt: skip
    """(presentation time, luma, chroma, quarter turns) of every frame the plan decodes."""
    import av

    cc = stream.codec_context
    cc.thread_type = "NONE"  # frame threads would decode ahead of what we ask for
    # Deblocking and exact IDCT matter for viewing, not for 8x9 block means.
    cc.options = {"skip_loop_filter": "all", "skip_idct": "all"}
    # Frames nothing refers to (most B-frames) are skipped: a window then covers twice the time.
    cc.skip_frame = "NONREF"
    tb = stream.time_base or Fraction(1, 90000)
    total = sum(1 + w.extra for w in windows)
    keep_every = max(1, math.ceil(total / max_samples))
    by_ordinal = {w.ordinal: w for w in windows}
    tb_f = float(tb)

    def frames_of(packets: list[Any]) -> Iterator[tuple[float, np.ndarray, np.ndarray | None, int]]:
        out: list[Any] = []
        try:
            for p in packets:
                out.extend(cc.decode(p))
            out.extend(cc.decode(None))
        except (av.FFmpegError, ValueError):
            pass
        finally:
            cc.flush_buffers()
        for i, f in enumerate(out):
            if f.pts is None or (i % keep_every and not f.key_frame):
                continue
            turns = round((f.rotation or 0) / 90.0) % 4
            yield float(f.pts * tb_f), luma(f), chroma(f), turns

    ordinal = -1
    pending: list[Any] = []
    want = 0
    seekable = bool(getattr(stream, "index_entries", None))
    if seekable:
        for w in windows:
            g = gops[w.ordinal]
            try:
                container.seek(round(g.time / tb_f), stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                seekable = False
                break
            pending = []
            for p in container.demux(stream):
                if p.dts is None:
                    continue
                if not pending and not p.is_keyframe:
                    continue
                if not pending and p.dts * tb_f < g.time - 1e-6:
                    continue  # landed on an earlier keyframe: read on to ours
                pending.append(p)
                if len(pending) > w.extra:
                    break
            yield from frames_of(pending)
        if seekable:
            return
        container.seek(0, stream=stream, backward=True, any_frame=False)
    # No index to seek by: one pass over the packets, decoding only the planned windows.
    for p in container.demux(stream):
        if p.dts is None:
            continue
        if p.is_keyframe:
            ordinal += 1
            if pending:
                yield from frames_of(pending)
                pending = []
            w_ = by_ordinal.get(ordinal)
            want = 1 + w_.extra if w_ is not None else 0
        if want:
            pending.append(p)
            want -= 1
            if not want:
                yield from frames_of(pending)
                pending = []
    if pending:
        yield from frames_of(pending)


# --- matching -----------------------------------------------------------------------------------------


def _popcount(x: Any) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.array([bin(int(v)).count("1") for v in np.ravel(x)], dtype=np.int64).reshape(np.shape(x))


@dataclass(frozen=True)
class VideoMatch:
    """How two signatures line up at their best offset (b's time = a's time + offset)."""

    score: float  # fraction of decisive pairs that agree
    pairs: int  # decisive pairs (close enough in time for the picture to be comparable)
    states: int  # agreeing pairs that show a picture different from the previous one counted
    offset: float
    overlap: float  # seconds of the two clips' content (end cards aside) that coincide at this offset
    bits: float  # mean distance of the agreeing pairs
    spread: float  # mean distance of all the pairs compared (agreeing or not)
    colour: float  # median difference of mean chroma over the agreeing pairs (NaN: unknown)
    gap: float  # median time between paired samples (0 when both sample the same frames)
    weight: float  # the agreeing pairs, each counted by how close it is (1 for identical pictures)


STATE_BITS = 10  # a picture this far from the last one counted is new evidence, not the same still


def match_video(
    a: Signature, b: Signature, hints: tuple[float, ...] = (), at: float | None = None
) -> VideoMatch | None:
    """The best alignment of two signatures' content (end cards aside), or None when they never line
    up on enough samples. With `at`, only that offset is tried (e.g. the one the sound gives)."""
    ma, mb = a.content(), b.content()
    if ma.sum() < MIN_PAIRS or mb.sum() < MIN_PAIRS:
        return None
    sa: Side = (a.times[ma].astype(np.float64), a.hashes[ma], a.masks[ma], a.rate[ma].astype(np.float64), a.colours[ma])
    sb: Side = (b.times[mb].astype(np.float64), b.hashes[mb], b.masks[mb], b.rate[mb].astype(np.float64), b.colours[mb])
    if at is not None:
        return _score(sa, sb, at, a.content_duration, b.content_duration)
    ta, tb = sa[0], sb[0]
    d = distance(sa[1][:, None], sa[2][:, None], sb[1][None, :], sb[2][None, :])
    ii, jj = np.nonzero(d <= MATCH_BITS)
    offsets = list(hints)
    if len(ii):
        votes = np.round((tb[jj] - ta[ii]) / 0.1).astype(np.int64)
        vals, counts = np.unique(votes, return_counts=True)
        for k in vals[np.argsort(-counts, kind="stable")][:4]:
            near = np.abs(votes - k) <= 1
            offsets.append(float(np.median(tb[jj][near] - ta[ii][near])))
    best: VideoMatch | None = None
    for off in offsets:
        m = _score(sa, sb, off, a.content_duration, b.content_duration)
        # a still picture lines up at many offsets: prefer more evidence, then more of the clips in common
        if m is not None and (best is None or _rank(m) > _rank(best)):
            best = m
    if best is None or best.gap < 0.02:
        return best
    # votes come in 0.1 s bins and sparse samples pair across small gaps: settle on the offset, within
    # half a second, where the paired pictures are closest
    base = best.offset
    for step in np.arange(-0.5, 0.51, 1 / 30):
        m = _score(sa, sb, base + float(step), a.content_duration, b.content_duration)
        if m is not None and m.score >= best.score and m.pairs >= best.pairs * 0.8 and m.bits < best.bits - 0.25:
            best = m
    return best


def _rank(m: VideoMatch) -> tuple[float, float]:
    """More close agreement first; among equals (a still picture agrees at many offsets) more overlap."""
    return round(m.weight, 1), m.overlap


Side = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # times, hashes, masks, rates, colours


def _score(sa: Side, sb: Side, off: float, dur_a: float, dur_b: float) -> VideoMatch | None:
    ta, ha, ka, ra, ca = sa
    tb, hb, kb, rb, cb = sb
    shifted = ta + off
    idx = np.clip(np.searchsorted(tb, shifted), 1, max(1, len(tb) - 1))
    left = np.clip(idx - 1, 0, len(tb) - 1)
    right = np.clip(idx, 0, len(tb) - 1)
    nearest = np.where(np.abs(shifted - tb[left]) <= np.abs(shifted - tb[right]), left, right)
    gap = np.abs(tb[nearest] - shifted)
    drift = gap * np.maximum(ra, rb[nearest])
    decisive = np.nonzero((gap <= MAX_GAP) & (drift <= MAX_DRIFT_BITS))[0]
    # one b sample may be the nearest of several a samples: it counts once, with its closest partner
    order = decisive[np.argsort(gap[decisive], kind="stable")]
    _, first = np.unique(nearest[order], return_index=True)
    sel = np.sort(order[first])
    n = len(sel)
    if n < MIN_PAIRS:
        return None
    dist = distance(ha[sel], ka[sel], hb[nearest[sel]], kb[nearest[sel]])
    agree = dist <= MATCH_BITS + drift[sel]
    overlap = max(0.0, min(dur_a, dur_b - off) - max(0.0, -off))
    bits = float(dist[agree].mean()) if agree.any() else 64.0
    states = _states(ha[sel][agree], ka[sel][agree])
    cd = colour_distance(ca[sel][agree], cb[nearest[sel]][agree])
    col = float(np.nanmedian(cd)) if np.isfinite(cd).any() else float("nan")
    weight = float(np.clip(1 - dist[agree] / (MATCH_BITS + drift[sel][agree]), 0, 1).sum())
    return VideoMatch(float(agree.mean()), n, states, off, overlap, bits, float(dist.mean()), col,
                      float(np.median(gap[sel])), weight)  # fmt: skip


def _states(hashes: np.ndarray, masks: np.ndarray) -> int:
    """How many different pictures a run of agreeing samples shows (a still shot counts once)."""
    count, last = 0, -1
    for i in range(len(hashes)):
        if last < 0 or float(distance(hashes[i], masks[i], hashes[last], masks[last])) > STATE_BITS:
            count, last = count + 1, i
    return count


def _alike(h1: np.uint64, m1: np.uint64, h2: np.uint64, m2: np.uint64, bits: float = 16) -> bool:
    """The same picture (or nearly): close where both are clear, and clear in mostly the same places (a
    card with a few edges and a busy picture share too few clear bits for their distance to mean much)."""
    both, either = int(_popcount(np.uint64(m1 & m2))), int(_popcount(np.uint64(m1 | m2)))
    return both >= 0.5 * either and float(distance(h1, m1, h2, m2)) <= bits


CARD_MIN, CARD_MAX = 1.0, 8.0  # seconds an appended end card lasts
CUT_BITS = 24  # a picture this far from the previous one is a cut


def card_start(times: np.ndarray, hashes: np.ndarray, masks: np.ndarray, duration: float) -> float | None:
    """Where an appended end card begins: a still (or gently animated) tail of 1-8 s that reaches the
    end of the clip and follows a cut. None when the clip has no such tail."""
    info = np.nonzero(hashes != BLANK)[0]
    if len(info) < 3:
        return None
    last = info[-1]
    if duration - float(times[last]) > 1.5:
        return None
    k = len(info) - 1
    while k > 0 and _alike(hashes[info[k - 1]], masks[info[k - 1]], hashes[last], masks[last]):
        k -= 1
    if k == 0:
        return None  # the whole clip is one still picture: no card, nothing appended
    first, before = info[k], info[k - 1]
    if len(info) - k < 2 or float(times[last] - times[first]) < 0.5:
        return None  # one sample is not a still tail
    cut = not _alike(hashes[before], masks[before], hashes[first], masks[first], CUT_BITS)
    start = float(times[first])
    if not cut or not CARD_MIN <= duration - start <= CARD_MAX or start < 1.0:
        return None
    return (start + float(times[before])) / 2


# --- origin by metadata and name -------------------------------------------------------------------------

_TIKTOK_NAMES = ("tiktok", "snaptik", "ssstik", "musicaldown", "tikmate")


def looks_like_tiktok_export(name: str, media: dict[str, Any] | None) -> bool:
    """Container metadata or file-name patterns of TikTok's own 'save video' and downloaders."""
    low = name.lower()
    if any(k in low for k in _TIKTOK_NAMES):
        return True
    stem = Path(name).stem
    if stem.isdigit() and 18 <= len(stem) <= 20:  # TikTok video ids
        return True
    if media:
        text = " ".join(str(v) for v in (media.get("encoder"), media.get("comment"), media.get("make")) if v).lower()
        if "tiktok" in text or "bytedance" in text or text.startswith("vid:"):
            return True
    return False
