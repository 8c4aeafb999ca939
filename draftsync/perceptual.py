"""Perceptual signatures: what makes two differently encoded files the same clip to a person.

A signature is a sequence of (time, 64-bit difference hash) pairs sampled on a fixed time grid between 5 %
and 95 % of the duration, each taken from a frame reached by seeking to the keyframe before the sample
time and decoding at most a few frames (never the whole file). Frames are scaled down, black bars are
cropped, and near-black frames count as uninformative. Two signatures match when, for some time
offset (found by voting over close hash pairs), most overlapping samples agree: a whole sequence must
line up, so a shared black intro or one similar frame never links two clips.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1
HASH_BITS = 64
MATCH_BITS = 12  # two frames "agree" within this Hamming distance
MIN_SCORE = 0.75  # fraction of overlapping informative samples that must agree
MIN_PAIRS = 4
BLANK = np.uint64(0)  # an uninformative (near-black, flat) frame
_WORK = 128  # frames are scaled to this square before bars are cropped


@dataclass
class Signature:
    times: np.ndarray  # float32 seconds
    hashes: np.ndarray  # uint64, BLANK for uninformative frames
    duration: float
    aspect: float

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION, "duration": round(self.duration, 3), "aspect": round(self.aspect, 4),
            "times": [round(float(t), 3) for t in self.times], "hashes": [f"{int(h):016x}" for h in self.hashes],
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signature:
        return cls(
            np.array(d["times"], dtype=np.float32), np.array([int(h, 16) for h in d["hashes"]], dtype=np.uint64),
            float(d["duration"]), float(d["aspect"]),
        )  # fmt: skip

    def informative(self) -> np.ndarray:
        return self.hashes != BLANK


def grid_step(duration: float) -> float:
    """A fixed ladder, so a clip and its slightly longer or shorter copy sample the same times."""
    # Whole seconds beyond 40 s line up with the 1 s keyframe interval phones use: one decode a sample.
    for limit, step in ((12.0, 0.25), (40.0, 0.5), (600.0, 2.0)):
        if duration <= limit:
            return step
    return 5.0


# --- the hash of one frame ------------------------------------------------------------------------------


def _crop_bars(img: np.ndarray) -> np.ndarray | None:
    """Drop letterbox/pillarbox bars; None if the whole frame is near-black or flat."""
    if img.std() < 6:
        return None
    rows = (img.mean(axis=1) > 20) | (img.std(axis=1) > 8)
    cols = (img.mean(axis=0) > 20) | (img.std(axis=0) > 8)
    if rows.sum() < 8 or cols.sum() < 8:
        return None
    r0, r1 = np.argmax(rows), len(rows) - np.argmax(rows[::-1])
    c0, c1 = np.argmax(cols), len(cols) - np.argmax(cols[::-1])
    return img[r0:r1, c0:c1]


def _resize_to(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-average resize to rows x cols (numpy only)."""
    h, w = img.shape
    ys = (np.arange(rows + 1) * h / rows).astype(int)
    xs = (np.arange(cols + 1) * w / cols).astype(int)
    csum = np.cumsum(np.cumsum(np.pad(img.astype(np.float64), ((1, 0), (1, 0))), axis=0), axis=1)
    tot = csum[ys[1:, None], xs[None, 1:]] - csum[ys[:-1, None], xs[None, 1:]] - csum[ys[1:, None], xs[None, :-1]]
    tot += csum[ys[:-1, None], xs[None, :-1]]
    area = np.maximum(1, (ys[1:] - ys[:-1])[:, None] * (xs[1:] - xs[:-1])[None, :])
    return tot / area


def frame_hash(gray: np.ndarray) -> int:
    """64-bit perceptual (difference) hash of a grayscale frame (0 for an uninformative frame)."""
    crop = _crop_bars(gray)
    if crop is None:
        return 0
    # Corners and edges carry watermarks, captions and UI bars; the centre carries the clip.
    h, w = crop.shape
    my, mx = int(h * 0.14), int(w * 0.14)
    small = _resize_to(crop[my : h - my, mx : w - mx], 8, 9)  # 8 rows x 9 columns of block means
    # Difference hash: is each block brighter than its right-hand neighbour? Compression, scaling and a
    # local overlay flip few of these; flat low-contrast spectra (noise, texture) do not destabilise it.
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    value = value or 1  # never collide with BLANK
    return value & 0xFFFFFFFFFFFFFFFF


# --- computing a signature -----------------------------------------------------------------------------


def compute(path: str | Path) -> Signature:
    """Sample the video without decoding all of it. Raises ValueError for an undecodable file."""
    import av

    try:
        container = av.open(str(path), timeout=30)
    except (av.FFmpegError, OSError) as e:
        raise ValueError(f"cannot open: {e}") from None
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threading would decode extra frames before the first one
        tb = stream.time_base
        duration = (container.duration / 1_000_000) if container.duration else float((stream.duration or 0) * (tb or 0))
        if duration <= 0:
            raise ValueError("unknown duration")
        w, h = stream.codec_context.width, stream.codec_context.height
        step = grid_step(duration)
        start, end = 0.05 * duration, 0.95 * duration
        first = math.ceil(start / step) * step
        targets = np.arange(first, end + 1e-9, step)
        fps = float(stream.average_rate or 30)
        try:
            keyframes = sorted(float(e.timestamp * tb) for e in stream.index_entries if e.is_keyframe) if tb else []
        except (AttributeError, TypeError):
            keyframes = []
        times, hashes = _sample_all(container, stream, targets, keyframes, fps, step)
    aspect = (w / h) if w and h else 1.0
    return Signature(np.array(times, dtype=np.float32), np.array(hashes, dtype=np.uint64), duration, aspect)


def _sample_all(container: Any, stream: Any, targets: np.ndarray, keyframes: list[float], fps: float,
                step: float) -> tuple[list[float], list[int]]:  # fmt: skip
    """Frames at the grid times. A keyframe within reach of a target stands in for it (one decode);
    otherwise decode forward from the nearest keyframe before it, continuing the current decode when no
    keyframe lies in between (sparse-keyframe files then decode once, front to back)."""
    import bisect

    import av

    tb = stream.time_base
    snap = min(0.2, step / 2)
    half = 0.5 / fps
    times: list[float] = []
    hashes: list[int] = []
    gen: Any = None
    pos: float | None = None
    for t in (float(x) for x in targets):
        i = bisect.bisect_right(keyframes, t + snap) - 1
        near_kf = keyframes[i] if i >= 0 and abs(keyframes[i] - t) <= snap else None
        want = near_kf if near_kf is not None else t
        k_before = keyframes[bisect.bisect_right(keyframes, want) - 1] if keyframes and keyframes[0] <= want else 0.0
        try:
            if gen is None or pos is None or want < pos - half or k_before > pos + half:
                container.seek(int(want / tb), stream=stream, backward=True, any_frame=False)
                gen = container.decode(stream)
                pos = None
            frame = None
            for f in gen:
                if f.time is None:
                    continue
                pos = float(f.time)
                if pos >= want - half:
                    frame = f
                    break
        except (av.FFmpegError, ValueError):
            gen, pos = None, None
            continue
        if frame is None:
            break  # past the end
        ft = float(frame.time)
        if times and abs(ft - times[-1]) < 1e-3:
            continue
        gray = frame.reformat(width=_WORK, height=_WORK, format="gray").to_ndarray()
        times.append(ft)
        hashes.append(frame_hash(gray[:, :_WORK]))
    return times, hashes


# --- matching --------------------------------------------------------------------------------------------


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x) if hasattr(np, "bitwise_count") else np.array([bin(int(v)).count("1") for v in x])


def similarity(a: Signature, b: Signature) -> float:
    """0..1: the best fraction of aligned informative samples that agree (0 when too few overlap)."""
    ma, mb = a.informative(), b.informative()
    ta, ha = a.times[ma].astype(np.float64), a.hashes[ma]
    tb, hb = b.times[mb].astype(np.float64), b.hashes[mb]
    if len(ha) < MIN_PAIRS or len(hb) < MIN_PAIRS:
        return 0.0
    d = _popcount(ha[:, None] ^ hb[None, :])  # small: tens x tens
    close = np.argwhere(d <= MATCH_BITS)
    if len(close) == 0:
        return 0.0
    step = max(grid_step(a.duration), grid_step(b.duration))
    votes = Counter(round((tb[j] - ta[i]) / step) for i, j in close)
    best = 0.0
    for k, _ in votes.most_common(3):
        offset = k * step
        best = max(best, _score(ta, ha, tb, hb, offset, step))
    return best


def _score(ta: np.ndarray, ha: np.ndarray, tb: np.ndarray, hb: np.ndarray, offset: float, step: float) -> float:
    shifted = ta + offset
    idx = np.clip(np.searchsorted(tb, shifted), 1, len(tb) - 1)
    left, right = tb[idx - 1], tb[idx]
    nearest = np.where(np.abs(shifted - left) <= np.abs(shifted - right), idx - 1, idx)
    gap = np.abs(tb[nearest] - shifted)
    paired = gap <= max(0.6 * step, 0.2)
    n = int(paired.sum())
    smaller = min(len(ha), len(hb))
    if n < max(MIN_PAIRS, int(0.5 * smaller)):
        return 0.0
    dist = _popcount(ha[paired] ^ hb[nearest[paired]])
    agree = dist <= MATCH_BITS
    return float(agree.mean())


def is_match(a: Signature, b: Signature) -> tuple[bool, float]:
    s = similarity(a, b)
    return s >= MIN_SCORE, s


# --- the index -------------------------------------------------------------------------------------------


class Index:
    """Multi-index hashing over all frame hashes: four 16-bit bands, each a sorted numpy array, so a
    query finds candidate videos with a few binary searches instead of a scan in Python."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sigs: list[Signature] = []
        self._built = False
        self._bands: list[np.ndarray] = []
        self._owners: list[np.ndarray] = []

    def add(self, key: str, sig: Signature) -> None:
        self.keys.append(key)
        self.sigs.append(sig)
        self._built = False

    def __len__(self) -> int:
        return len(self.keys)

    def _build(self) -> None:
        hashes, owners = [], []
        for i, s in enumerate(self.sigs):
            m = s.informative()
            hashes.append(s.hashes[m])
            owners.append(np.full(int(m.sum()), i, dtype=np.int64))
        allh = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        allo = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        self._bands, self._owners = [], []
        for b in range(4):
            band = ((allh >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.uint16)
            order = np.argsort(band, kind="stable")
            self._bands.append(band[order])
            self._owners.append(allo[order])
        self._built = True

    def candidates(self, sig: Signature, min_hits: int = 2) -> np.ndarray:
        if not self._built:
            self._build()
        q = sig.hashes[sig.informative()]
        if len(q) == 0 or not self.keys:
            return np.zeros(0, dtype=np.int64)
        found = []
        for b in range(4):
            qb = ((q >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.uint16)
            lo = np.searchsorted(self._bands[b], qb, side="left")
            hi = np.searchsorted(self._bands[b], qb, side="right")
            for s, e in zip(lo, hi, strict=True):
                if e > s:
                    found.append(self._owners[b][s:e])
        if not found:
            return np.zeros(0, dtype=np.int64)
        owners, counts = np.unique(np.concatenate(found), return_counts=True)
        return owners[counts >= min_hits]

    def query(self, sig: Signature, exclude: str | None = None) -> list[tuple[str, float]]:
        out = []
        for i in self.candidates(sig):
            key = self.keys[int(i)]
            if key == exclude:
                continue
            ok, s = is_match(sig, self.sigs[int(i)])
            if ok:
                out.append((key, round(s, 3)))
        return sorted(out, key=lambda x: -x[1])


# --- origin ----------------------------------------------------------------------------------------------

_TIKTOK_NAMES = ("tiktok", "snaptik", "ssstik", "musicaldown", "tikmate")


def looks_like_tiktok_export(name: str, media: dict[str, Any] | None) -> bool:
    """Container metadata or file-name patterns of TikTok's own 'save video' and downloaders."""
    low = name.lower()
    if any(k in low for k in _TIKTOK_NAMES):
        return True
    stem = Path(name).stem
    if stem.isdigit() and len(stem) >= 18:  # TikTok video ids
        return True
    if media:
        text = " ".join(str(v) for v in (media.get("encoder"), media.get("comment"), media.get("make")) if v).lower()
        if "tiktok" in text or "bytedance" in text or text.startswith("vid:"):
            return True
    return False


def is_export_of(export: Signature, original: Signature) -> bool:
    """An export is the original plus an appended end card: longer by a few seconds, aligned at the start."""
    extra = export.duration - original.duration
    return 1.0 <= extra <= 8.0
