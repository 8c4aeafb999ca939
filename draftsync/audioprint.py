"""Audio fingerprints: landmarks (pairs of spectral peaks) of the audio track decoded at 8 kHz.

The same clip keeps its landmarks through re-encoding, resampling, a quieter copy and a trimmed start;
two takes of one scene, with different speech or music, share almost none. A print covers the whole
track of a short clip and evenly spaced segments of a long one (decoding audio is not free: a long
track's print costs a fifth of decoding it whole), and records which stretches it covers so a
comparison knows how many landmarks two prints *should* share.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import numpy as np

RATE = 8000
N_FFT = 512
HOP = 256
UNIT = HOP / RATE  # seconds per landmark time unit (32 ms)
F_LO, F_HI = 16, 240  # bins kept: about 250 Hz to 3.75 kHz (speech and music, not rumble or hiss)
PEAKS_PER_SECOND = 12
FAN_OUT = 3
MAX_DT = 40  # frames between the two peaks of a landmark (1.3 s)
MAX_DF = 60  # bins
SEGMENT = 3.0  # seconds decoded per segment of a long track
WHOLE_UP_TO = 16.0  # tracks up to this long are decoded whole
SPACING = 15.0  # segment starts in a long track (a fifth of it is decoded)
MIN_LANDMARKS = 24  # fewer than this (silence, a hum) is no print at all
MAX_LANDMARKS = 320  # a long track keeps a content-chosen subset (the same one in every copy)


@dataclass
class AudioPrint:
    hashes: np.ndarray  # uint32 landmark hashes
    times: np.ndarray  # uint32 anchor times in UNITs from the clip start
    covered: list[tuple[float, float]]  # seconds of the track the print was made from

    def to_json(self) -> dict[str, Any]:
        return {
            "hashes": base64.b64encode(self.hashes.astype("<u4").tobytes()).decode(),
            "times": base64.b64encode(self.times.astype("<u4").tobytes()).decode(),
            "covered": [[round(a, 3), round(b, 3)] for a, b in self.covered],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AudioPrint:
        return cls(
            np.frombuffer(base64.b64decode(d["hashes"]), "<u4").astype(np.uint32),
            np.frombuffer(base64.b64decode(d["times"]), "<u4").astype(np.uint32),
            [(float(a), float(b)) for a, b in d["covered"]],
        )

    def pack(self) -> bytes:
        """Compact bytes: times take two bytes each unless the track is longer than 35 minutes."""
        n, k = len(self.hashes), len(self.covered)
        wide = bool(len(self.times) and int(self.times.max()) > 0xFFFF)
        head = struct.pack("<IIB", n, k, wide) + b"".join(struct.pack("<ff", a, b) for a, b in self.covered)
        return head + self.hashes.astype("<u4").tobytes() + self.times.astype("<u4" if wide else "<u2").tobytes()

    @classmethod
    def unpack(cls, data: bytes) -> AudioPrint:
        n, k, wide = struct.unpack_from("<IIB", data)
        off = 9
        covered = [struct.unpack_from("<ff", data, off + 8 * i) for i in range(k)]
        off += 8 * k
        hashes = np.frombuffer(data, "<u4", n, off).astype(np.uint32)
        times = np.frombuffer(data, "<u4" if wide else "<u2", n, off + 4 * n).astype(np.uint32)
        return cls(hashes, times, [(float(a), float(b)) for a, b in covered])

    def landmarks_within(self, lo: float, hi: float) -> int:
        t = self.times.astype(np.float64) * UNIT
        return int(((t >= lo) & (t < hi)).sum())


def segments(duration: float) -> list[tuple[float, float]]:
    """Which stretches of the track to decode: all of a short one, 3 s every 15 s of a long one."""
    if duration <= WHOLE_UP_TO:
        return [(0.0, duration)]
    spacing = SPACING
    while duration / spacing > 50:  # a very long track: at most 50 segments
        spacing *= 2
    out = []
    t = 0.0
    while t < duration - 1.0:
        out.append((t, min(duration, t + SEGMENT)))
        t += spacing
    return out


# --- from samples to landmarks (pure) -----------------------------------------------------------------


def _sliding_max(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (size // 2, size // 2)
    padded = np.pad(a, pad, mode="constant", constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis).max(axis=-1)


def peaks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral peaks (frame index, bin) of an 8 kHz signal: local maxima that stand out, the strongest
    PEAKS_PER_SECOND of each second."""
    if len(x) < N_FFT:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spec = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1))[:, F_LO:F_HI]
    level = 20 * np.log10(spec + 1e-6)
    if not np.isfinite(level).any() or level.max() < -40:  # digital silence
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local = _sliding_max(_sliding_max(level, 7, 0), 15, 1)
    floor = np.median(level, axis=1, keepdims=True) + 12
    is_peak = (level == local) & (level > floor) & (level > level.max() - 70)
    t, f = np.nonzero(is_peak)
    strength = level[t, f]
    per = max(1, round(1.0 / UNIT))
    keep = np.zeros(len(t), dtype=bool)
    for start in range(0, len(level), per):
        sel = np.nonzero((t >= start) & (t < start + per))[0]
        if len(sel):
            keep[sel[np.argsort(-strength[sel])[:PEAKS_PER_SECOND]]] = True
    return t[keep], f[keep] + F_LO


def landmarks(t: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, anchor time) for each anchor peak paired with the next few peaks near it."""
    order = np.lexsort((f, t))
    t, f = t[order].astype(np.int64), f[order].astype(np.int64)
    n = len(t)
    if n < 2:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    k = min(n - 1, PEAKS_PER_SECOND * 2 + 8)  # peaks within MAX_DT frames of an anchor, at most
    idx = np.arange(n)[:, None] + np.arange(1, k + 1)[None, :]
    inside = idx < n
    idx = np.minimum(idx, n - 1)
    dt = t[idx] - t[:, None]
    df = f[idx] - f[:, None]
    valid = inside & (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
    valid &= np.cumsum(valid, axis=1) <= FAN_OUT
    ii, jj = np.nonzero(valid)
    hashes = (f[ii] << 15) | ((df[ii, jj] + 64) << 7) | dt[ii, jj]
    return hashes.astype(np.uint32), t[ii]


def print_of(pieces: list[tuple[float, np.ndarray]]) -> AudioPrint | None:
    """A print from (start second, 8 kHz samples) pieces; None when there is too little to go on."""
    hs, ts, covered = [], [], []
    for start, x in pieces:
        if len(x) < N_FFT:
            continue
        t, f = peaks(x)
        h, at = landmarks(t, f)
        hs.append(h)
        ts.append(np.round(start / UNIT).astype(np.int64) + at)
        covered.append((start, start + len(x) / RATE))
    if not hs:
        return None
    hashes = np.concatenate(hs)
    if len(hashes) < MIN_LANDMARKS:
        return None
    times = np.concatenate(ts)
    keep = 1
    while len(hashes) / keep > MAX_LANDMARKS:
        keep *= 2
    if keep > 1:  # by the hash, not by position: copies of a track keep the same landmarks
        chosen = ((hashes.astype(np.uint64) * np.uint64(2654435761)) >> np.uint64(16)) % np.uint64(keep) == 0
        hashes, times = hashes[chosen], times[chosen]
    return AudioPrint(hashes.astype(np.uint32), np.maximum(times, 0).astype(np.uint32), covered)


# --- reading the track (I/O) --------------------------------------------------------------------------


def fingerprint_stream(container: Any, stream: Any, duration: float) -> AudioPrint | None:
    """Decode the planned segments of an audio stream at 8 kHz mono and print them; None for silence."""
    import av

    tb = float(stream.time_base or Fraction(1, 48000))
    stream.codec_context.thread_type = "NONE"
    pieces: list[tuple[float, np.ndarray]] = []
    for lo, hi in segments(duration):
        try:
            container.seek(int(lo / tb), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            break
        # swresample's filter does the band limit and the rate change in one step, whatever the source rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks: list[np.ndarray] = []
        start: float | None = None
        got = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if start is None:  # until the segment begins (the seek lands at or before it)
                        if (
                            frame.pts is None
                            or float(frame.pts * tb) + frame.samples / (frame.sample_rate or 48000) < lo
                        ):
                            continue
                        start = float(frame.pts * tb)
                    for out in resampler.resample(frame):
                        chunks.append(np.frombuffer(cast(Any, out.planes[0]), np.float32, out.samples))
                        got += out.samples
                if start is not None and got >= (hi - start) * RATE:
                    break
        except (av.FFmpegError, ValueError):
            pass
        stream.codec_context.flush_buffers()
        if start is not None and chunks:
            pieces.append((max(0.0, start), np.concatenate(chunks)))
    return print_of(pieces)


# --- matching ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioMatch:
    """Landmarks two prints share at one offset (b's time = a's time + offset)."""

    shared: int
    expected: int  # landmarks the smaller side holds in the stretch both prints cover at this offset
    offset: float

    @property
    def score(self) -> float:
        return self.shared / self.expected if self.expected else 0.0


def _overlap(a: AudioPrint, b: AudioPrint, offset: float) -> int:
    """Landmarks each side has where both prints cover the track (at this offset); the smaller count."""
    na = nb = 0
    for lo_a, hi_a in a.covered:
        for lo_b, hi_b in b.covered:
            lo, hi = max(lo_a, lo_b - offset), min(hi_a, hi_b - offset)
            if hi - lo > 0.5:
                na += a.landmarks_within(lo, hi)
                nb += b.landmarks_within(lo + offset, hi + offset)
    return min(na, nb)


def match_audio(a: AudioPrint, b: AudioPrint, at: float | None = None) -> AudioMatch:
    """The best offset (or the given one, within 0.1 s) and how many landmarks agree there."""
    order = np.argsort(b.hashes, kind="stable")
    hb, tb = b.hashes[order], b.times[order].astype(np.int64)
    lo = np.searchsorted(hb, a.hashes, side="left")
    hi = np.searchsorted(hb, a.hashes, side="right")
    n = hi - lo
    common = (n > 0) & (n <= 8)  # a hash repeated everywhere (a loop, a tone) says nothing
    if not common.any():
        return AudioMatch(0, _overlap(a, b, at or 0.0), at or 0.0)
    ia = np.repeat(np.nonzero(common)[0], n[common])
    starts = np.repeat(lo[common], n[common])
    within = np.arange(len(ia)) - np.repeat(np.cumsum(n[common]) - n[common], n[common])
    deltas = tb[starts + within] - a.times[ia].astype(np.int64)
    if at is not None:
        k = round(at / UNIT)
        shared = int((np.abs(deltas - k) <= 3).sum())
        return AudioMatch(shared, _overlap(a, b, at), at)
    vals, counts = np.unique(deltas, return_counts=True)
    # a landmark time may be off by one unit between copies: count each bin with its neighbours
    smooth = counts.copy()
    for d in (-1, 1):
        pos = np.searchsorted(vals, vals + d)
        ok = (pos < len(vals)) & (vals[np.minimum(pos, len(vals) - 1)] == vals + d)
        smooth[ok] += counts[pos[ok]]
    best = int(np.argmax(smooth))
    offset = float(vals[best]) * UNIT
    return AudioMatch(int(smooth[best]), _overlap(a, b, offset), offset)
