"""The near-duplicate evaluation corpus, made with PyAV: distinct synthetic clips with real motion and
texture, and for each the transformations a creator's camera roll really holds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

W, H, FPS, SECONDS = 480, 270, 15, 6


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    small = rng.random((h // scale + 2, w // scale + 2))
    big = np.kron(small, np.ones((scale, scale)))[:h, :w]
    return big


def clip_frames(seed: int, *, black_intro: float = 0.0, static_bg: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames of one synthetic clip; `seed` picks the kind and its randomness."""
    rng = np.random.default_rng(seed)
    kind = seed % 4
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg_rng = np.random.default_rng(static_bg if static_bg is not None else seed + 1000)
    bg = np.stack([_smooth_noise(bg_rng, H, W, 24) * 180 + 30 for _ in range(3)], axis=-1)
    shapes = [(rng.uniform(0, W), rng.uniform(0, H), rng.uniform(-60, 60), rng.uniform(-40, 40), rng.uniform(30, 70),
               rng.integers(0, 255, 3)) for _ in range(5)]  # fmt: skip
    noise = _smooth_noise(rng, H * 2, W * 2, 16)
    colors = rng.integers(0, 255, (2, 3))
    glyphs = rng.random((8, 40)) > 0.5
    spin, phase = rng.uniform(0.3, 1.2) * rng.choice([-1, 1]), rng.uniform(0, 2 * np.pi)
    band_speed, band_width = rng.uniform(20, 90), rng.uniform(15, 45)
    stretch, offsets = rng.uniform(0.6, 2.5, 3), rng.uniform(0, 255, 3)
    for i in range(int(SECONDS * FPS)):
        t = i / FPS
        if t < black_intro:
            yield np.zeros((H, W, 3), dtype=np.uint8)
            continue
        if static_bg is not None or kind == 0:  # moving shapes over a textured background
            f = bg.copy()
            for x0, y0, vx, vy, r, c in shapes:
                cx, cy = (x0 + vx * t) % W, (y0 + vy * t) % H
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
                f[mask] = c
        elif kind == 1:  # a drifting noise field
            oy, ox = int(20 * t) % H, int(35 * t) % W
            n = noise[oy : oy + H, ox : ox + W]
            f = np.stack([n * colors[0][k] + (1 - n) * colors[1][k] for k in range(3)], axis=-1)
        elif kind == 2:  # rotating gradients with a moving band, all parameters drawn per clip
            a = spin * t + phase
            g = (np.cos(a) * xx + np.sin(a) * yy) / (W + H)
            band = np.abs(((xx + band_speed * t) % W) - W / 2) < band_width
            f = np.stack([(g * 255 * stretch[k] + offsets[k]) % 255 for k in range(3)], axis=-1)
            f[band] = 255 - f[band]
        else:  # scrolling blocky "text" lines on a gradient
            f = np.stack([xx / W * colors[0][k] + yy / H * colors[1][k] for k in range(3)], axis=-1) * 0.8
            shift = int(25 * t)
            for row in range(8):
                for col in range(40):
                    if glyphs[row, (col + shift // 12) % 40]:
                        y, x = 20 + row * 30, (col * 12 - shift % 12) % W
                        f[y : y + 18, x : x + 8] = 250
        yield np.clip(f, 0, 255).astype(np.uint8)


def encode(path: Path, frames: Iterator[np.ndarray], *, codec: str = "libx264", bitrate: int | None = None,
           size: tuple[int, int] | None = None, fps: int = FPS) -> Path:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = None
        for arr in frames:
            if s is None:
                h, w = arr.shape[:2]
                s = out.add_stream(codec, rate=fps)
                s.width, s.height = size or (w, h)
                s.pix_fmt = "yuv420p"
                s.options = (
                    {"preset": "ultrafast"}
                    if codec == "libx264"
                    else {"preset": "ultrafast", "x265-params": "log-level=error"}
                )
                if bitrate:
                    s.bit_rate = bitrate
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if size and (arr.shape[1], arr.shape[0]) != size:
                vf = vf.reformat(width=size[0], height=size[1])
            for p in s.encode(vf):
                out.mux(p)
        assert s is not None
        for p in s.encode():
            out.mux(p)
    return path


def decode(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def watermark(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    for f in frames:
        g = f.copy()
        h, w = g.shape[:2]
        g[h - h // 7 - 6 : h - 6, w - w // 4 - 6 : w - 6] = 235  # a burnt-in logo box in a corner
        g[h - h // 7 : h - 12, w - w // 4 : w - 12 : 6] = 30
        yield g


def letterbox_portrait(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """16:9 into a 9:16 canvas (black above and below)."""
    for f in frames:
        h, w = f.shape[:2]
        ph, pw = w * 16 // 9, w
        canvas = np.zeros((ph - ph % 2, pw, 3), dtype=np.uint8)
        top = (canvas.shape[0] - h) // 2
        canvas[top : top + h] = f
        yield canvas


def trim_and_endcard(frames: Iterator[np.ndarray], trim_s: float = 1.0, card_s: float = 3.0,
                     fps: int = FPS) -> Iterator[np.ndarray]:  # fmt: skip
    last = None
    for i, f in enumerate(frames):
        last = f
        if i >= int(trim_s * fps):
            yield f
    assert last is not None
    h, w = last.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(int(card_s * fps)):  # an end card: dark background, a pulsing logo
        card = np.full((h, w, 3), 18, dtype=np.uint8)
        r = min(h, w) // 6 + i % 6
        card[(yy - h // 2) ** 2 + (xx - w // 2) ** 2 < r * r] = (37, 244, 238)
        yield card


Transform = Callable[[Path, Path], Path]


def transforms() -> dict[str, Transform]:
    br = 200_000  # a quarter of the originals' 800 kbit/s
    return {
        "reencode_720p_quarter": lambda src, dst: encode(dst, decode(src), bitrate=br, size=(1280, 720)),
        "hevc": lambda src, dst: encode(dst, decode(src), codec="libx265"),
        "watermark": lambda src, dst: encode(dst, watermark(decode(src))),
        "letterbox_9x16": lambda src, dst: encode(dst, letterbox_portrait(decode(src))),
        "trim_endcard": lambda src, dst: encode(dst, trim_and_endcard(decode(src))),
        "combined": lambda src, dst: encode(
            dst, trim_and_endcard(letterbox_portrait(watermark(decode(src)))), bitrate=br, size=(720, 1280)
        ),
    }


def build(root: Path, clips: int = 30) -> tuple[dict[int, Path], dict[tuple[int, str], Path], list[tuple[Path, Path]]]:
    """Originals, transformed copies, and the hard negative pairs (shared black intro, same static scene)."""
    originals = {s: encode(root / f"clip{s:02d}.mp4", clip_frames(s), bitrate=800_000) for s in range(clips)}
    variants: dict[tuple[int, str], Path] = {}
    for s, src in originals.items():
        for name, fn in transforms().items():
            variants[(s, name)] = fn(src, root / f"clip{s:02d}_{name}.mp4")
    hard = [
        (encode(root / "intro_a.mp4", clip_frames(101, black_intro=2.0)),
         encode(root / "intro_b.mp4", clip_frames(102, black_intro=2.0))),
        (encode(root / "static_a.mp4", clip_frames(200, static_bg=7)),
         encode(root / "static_b.mp4", clip_frames(204, static_bg=7))),
    ]  # fmt: skip
    return originals, variants, hard


__all__ = ["FPS", "SECONDS", "H", "W", "build", "clip_frames", "decode", "encode", "transforms"]
