"""The near-duplicate evaluation corpus, made with PyAV: sources of several kinds (synthetic scenes and
ffmpeg's lavfi generators: Game of Life, cellular automata, fractal zooms, test patterns), each with its
own sound or none, the copies a creator's camera roll really holds (re-encoded small with sparse
keyframes and B-frames, HEVC, watermarked, letterboxed, exported with a trimmed start and an end card,
screen-recorded into a 1080x1600 canvas with grey bars, all of these at once), and hard negatives:
takes of one scene with other motion and other sound, portrait and landscape of one pattern, fractal
zooms, a shared black intro, one test pattern with different boxes and sounds.

`build(root)` writes every file once and returns a `Corpus` that says which files are the same clip;
`cached(root)` does the same but reuses a previous build made by this very source file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

W, H, FPS, SECONDS = 480, 270, 15, 6
AUDIO_RATE = 48000

Frames = list[np.ndarray]  # RGB; a few helpers hand yuv420p VideoFrames straight to the encoder


# --- sources: pictures ------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    small = rng.random((h // scale + 2, w // scale + 2))
    return np.kron(small, np.ones((scale, scale)))[:h, :w]


def clip_frames(seed: int, *, black_intro: float = 0.0, static_bg: int | None = None, seconds: float = SECONDS,
                size: tuple[int, int] = (W, H), fps: int = FPS) -> Iterator[np.ndarray]:  # fmt: skip
    """RGB frames of one synthetic clip; `seed` picks the kind and its randomness."""
    w, h = size
    rng = np.random.default_rng(seed)
    kind = seed % 4
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg_rng = np.random.default_rng(static_bg if static_bg is not None else seed + 1000)
    bg = np.stack([_smooth_noise(bg_rng, h, w, 24) * 180 + 30 for _ in range(3)], axis=-1)
    shapes = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-60, 60), rng.uniform(-40, 40), rng.uniform(30, 70),
               rng.integers(0, 255, 3)) for _ in range(5)]  # fmt: skip
    noise = _smooth_noise(rng, h * 2, w * 2, 16)
    colors = rng.integers(0, 255, (2, 3))
    glyphs = rng.random((8, 40)) > 0.5
    spin, phase = rng.uniform(0.3, 1.2) * rng.choice([-1, 1]), rng.uniform(0, 2 * np.pi)
    band_speed, band_width = rng.uniform(20, 90), rng.uniform(15, 45)
    stretch, offsets = rng.uniform(0.6, 2.5, 3), rng.uniform(0, 255, 3)
    for i in range(int(seconds * fps)):
        t = i / fps
        if t < black_intro:
            yield np.zeros((h, w, 3), dtype=np.uint8)
            continue
        if static_bg is not None or kind == 0:  # moving shapes over a textured background
            f = bg.copy()
            for x0, y0, vx, vy, r, c in shapes:
                cx, cy = (x0 + vx * t) % w, (y0 + vy * t) % h
                f[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = c
        elif kind == 1:  # a drifting noise field
            oy, ox = int(20 * t) % h, int(35 * t) % w
            n = noise[oy : oy + h, ox : ox + w]
            f = np.stack([n * colors[0][k] + (1 - n) * colors[1][k] for k in range(3)], axis=-1)
        elif kind == 2:  # rotating gradients with a moving band, all parameters drawn per clip
            a = spin * t + phase
            g = (np.cos(a) * xx + np.sin(a) * yy) / (w + h)
            band = np.abs(((xx + band_speed * t) % w) - w / 2) < band_width
            f = np.stack([(g * 255 * stretch[k] + offsets[k]) % 255 for k in range(3)], axis=-1)
            f[band] = 255 - f[band]
        else:  # scrolling blocky "text" lines on a gradient
            f = np.stack([xx / w * colors[0][k] + yy / h * colors[1][k] for k in range(3)], axis=-1) * 0.8
            shift = int(25 * t)
            for row in range(8):
                for col in range(40):
                    if glyphs[row, (col + shift // 12) % 40]:
                        y, x = 20 + row * 30, (col * 12 - shift % 12) % w
                        f[y : y + 18, x : x + 8] = 250
        yield np.clip(f, 0, 255).astype(np.uint8)


def lavfi(name: str, args: str, *, seconds: float = SECONDS, fps: int = FPS, size: tuple[int, int] = (W, H)) -> Frames:
    """Frames of one of ffmpeg's generators, run through PyAV's filter graph."""
    graph = av.filter.Graph()
    src = graph.add(name, f"size={size[0]}x{size[1]}:rate={fps}" + (f":{args}" if args else ""))
    fmt = graph.add("format", "pix_fmts=rgb24")
    sink = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    return [sink.pull().to_ndarray() for _ in range(int(seconds * fps))]  # type: ignore[union-attr]


def take(scene: int, path_seed: int, *, seconds: float = SECONDS) -> Frames:
    """One take of a scene: the same room (background) and subject (a figure of fixed colour and size)
    moving along a path of its own."""
    rng = np.random.default_rng(path_seed)
    bg_rng = np.random.default_rng(scene)
    bg = np.stack([_smooth_noise(bg_rng, H, W, 24) * 180 + 30 for _ in range(3)], axis=-1)
    color = bg_rng.integers(0, 255, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    x0, y0 = rng.uniform(80, W - 80), rng.uniform(60, H - 60)
    ax, ay, fx, fy = rng.uniform(40, 140), rng.uniform(20, 70), rng.uniform(0.3, 1.1), rng.uniform(0.3, 1.1)
    out = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        cx, cy = x0 + ax * np.sin(fx * t * 2), y0 + ay * np.sin(fy * t * 2 + 1)
        f = bg.copy()
        f[((xx - cx) / 45) ** 2 + ((yy - cy) / 80) ** 2 < 1] = color  # a body
        f[(xx - cx) ** 2 + (yy - cy + 95) ** 2 < 26**2] = color * 0.8  # a head
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


# --- sources: sounds ---------------------------------------------------------------------------------


def melody(seed: int, seconds: float = SECONDS, rate: int = AUDIO_RATE) -> np.ndarray:
    """A tune of random notes with harmonics and a little noise (a stand-in for music or a voice)."""
    rng = np.random.default_rng(seed + 7_000)
    n = int(seconds * rate)
    out = np.zeros(n, dtype=np.float64)
    t = 0.0
    while t < seconds:
        dur = float(rng.uniform(0.12, 0.45))
        f0 = float(110 * 2 ** (rng.integers(0, 36) / 12))
        a, b = int(t * rate), min(n, int((t + dur) * rate))
        tt = np.arange(b - a) / rate
        env = np.minimum(1, tt / 0.01) * np.exp(-tt / max(0.05, dur))
        note = sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in (1, 2, 3, 5))
        out[a:b] += 0.3 * env * note
        t += dur * float(rng.uniform(0.6, 1.0))
    out += 0.01 * rng.standard_normal(n)
    return out.astype(np.float32)


def jingle(seconds: float = 3.0, rate: int = AUDIO_RATE) -> np.ndarray:
    """The end card's sound: the same short chime on every export."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.25 * np.sin(2 * np.pi * 880 * t) * np.exp(-t * 2) + 0.2 * np.sin(2 * np.pi * 1320 * t)
            * np.exp(-np.maximum(0, t - 0.5) * 3) * (t > 0.5)).astype(np.float32)  # fmt: skip


# --- writing files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enc:
    """How a file is encoded: codec, keyframe interval (None: the encoder's default), B-frames, bitrate."""

    codec: str = "libx264"
    gop: int | None = FPS  # one keyframe a second, like a phone
    bframes: bool = False
    crf: int | None = None  # quality (x264/x265 constant rate factor); None: the encoder's default
    preset: str = "ultrafast"
    audio_rate: int = AUDIO_RATE
    audio_codec: str = "aac"


PHONE = Enc()
DESKTOP = Enc(gop=None, bframes=True, preset="superfast", crf=27)  # x264 default GOP, B-frames, scene cuts
TIKTOK = Enc(gop=None, bframes=True, preset="superfast", crf=27, audio_rate=44100)  # its exports are 44.1 kHz
HEVC = Enc(codec="libx265", gop=None, bframes=True)


def encode(path: Path, frames: Frames, sound: np.ndarray | None = None, enc: Enc = PHONE, *,
           fps: int = FPS, metadata: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write frames (RGB arrays, or ready yuv420p VideoFrames) and a sound as one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = frames[0]
    h, w = (first.height, first.width) if isinstance(first, av.VideoFrame) else first.shape[:2]
    track = _sound_file(path.parent, sound, enc) if sound is not None else None
    with av.open(str(path), "w") as out:
        for k, v in (metadata or {}).items():
            out.metadata[k] = v
        s = out.add_stream(enc.codec, rate=fps)
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        opts: dict[str, str] = {"preset": enc.preset}
        if enc.codec == "libx264":
            if enc.gop:
                opts.update(g=str(enc.gop), keyint_min=str(enc.gop), sc_threshold="0")
            opts["bf"] = "3" if enc.bframes else "0"
        else:
            params = ["log-level=error"] + ([f"keyint={enc.gop}", f"min-keyint={enc.gop}"] if enc.gop else [])
            params.append("bframes=3" if enc.bframes else "bframes=0")
            opts["x265-params"] = ":".join(params)
        if enc.crf is not None:
            opts["crf"] = str(enc.crf)
        s.options = opts
        inp = av.open(str(track)) if track is not None else None
        a = out.add_stream_from_template(inp.streams.audio[0]) if inp is not None else None
        for i, arr in enumerate(frames):
            if isinstance(arr, av.VideoFrame):
                vf = arr
                vf.pts = i
            else:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[: h - h % 2, : w - w % 2]), format="rgb24")
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if inp is not None and a is not None:
            # apps often pass the sound through: the track is encoded once per sound and copied
            for p in inp.demux(inp.streams.audio[0]):
                if p.dts is None:
                    continue
                p.stream = a
                out.mux(p)
            inp.close()
    return path


def _sound_file(folder: Path, sound: np.ndarray, enc: Enc) -> Path:
    """The sound encoded once (per codec and rate) into a file that encodes copy from."""
    key = hashlib.sha1(sound.tobytes() + f"{enc.audio_codec}{enc.audio_rate}".encode()).hexdigest()[:16]
    path = folder / ".sounds" / f"{key}.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = sound if enc.audio_rate == AUDIO_RATE else _resample(sound, AUDIO_RATE, enc.audio_rate)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        a = out.add_stream(enc.audio_codec, rate=enc.audio_rate)
        a.layout = "mono"
        if enc.audio_codec == "aac":
            a.options = {"aac_coder": "fast"}
        step = 1024
        for k in range(0, len(pcm), step):
            fr = av.AudioFrame.from_ndarray(pcm[None, k : k + step].astype(np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = enc.audio_rate, k, Fraction(1, enc.audio_rate)
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    n = round(len(x) * dst / src)
    return np.interp(np.arange(n) * src / dst, np.arange(len(x)), x).astype(np.float32)


def decode(path: Path) -> tuple[Frames, np.ndarray | None]:
    """Frames (RGB) and the sound (mono, AUDIO_RATE) of a file: what an app re-encoding it starts from."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, None
        rs = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks = [np.frombuffer(o.planes[0], np.float32, o.samples) for f in c.decode(audio=0) for o in rs.resample(f)]
    return frames, np.concatenate(chunks) if chunks else None


# --- what apps do to a clip -------------------------------------------------------------------------


def _graph(frames: Frames, chain: str) -> list[av.VideoFrame]:
    """Run RGB frames through an ffmpeg filter chain; yuv420p frames come out, ready to encode."""
    h, w = frames[0].shape[:2]
    graph = av.filter.Graph()
    src = graph.add("buffer", f"video_size={w}x{h}:pix_fmt=rgb24:time_base=1/{FPS}:pixel_aspect=1/1")
    last = src
    for step in [*chain.split(","), "format=pix_fmts=yuv420p"]:
        name, _, args = step.partition("=")
        node = graph.add(name, args)
        last.link_to(node)
        last = node
    sink = graph.add("buffersink")
    last.link_to(sink)
    graph.configure()
    out = []
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        graph.push(vf)
        out.append(graph.pull())
    return out  # type: ignore[return-value]


def scale(frames: Frames, size: tuple[int, int]) -> Frames:
    return [f.to_ndarray(format="rgb24") for f in _graph(frames, f"scale={size[0]}:{size[1]}")]


def watermark(frames: Frames, seed: int = 0) -> Frames:
    """A burnt-in logo box in a corner and a user name that moves, as TikTok's saved videos have."""
    out = []
    for i, f in enumerate(frames):
        g = f.copy()
        h, w = g.shape[:2]
        g[h - h // 7 - 6 : h - 6, w - w // 4 - 6 : w - 6] = 235
        g[h - h // 7 : h - 12, w - w // 4 : w - 12 : 6] = 30
        y = 8 if (i // (3 * FPS)) % 2 == 0 else h // 2
        g[y : y + h // 18, 8 : 8 + w // 5] = 200 + (seed % 3) * 20
        out.append(g)
    return out


def pad(frames: Frames, canvas: tuple[int, int], color: int) -> list[av.VideoFrame]:
    """Fit the picture inside a canvas of another shape: bars (any colour) fill the rest."""
    cw, ch = canvas
    h, w = frames[0].shape[:2]
    k = min(cw / w, ch / h)
    nw, nh = int(w * k) // 2 * 2, int(h * k) // 2 * 2
    return _graph(
        frames,
        f"scale={nw}:{nh},pad={cw}:{ch}:{(cw - nw) // 2}:{(ch - nh) // 2}:color=0x{color:02x}{color:02x}{color:02x}",
    )


def end_card(frames: Frames, seconds: float = 3.0, fps: int = FPS) -> Frames:
    """TikTok's end card: a dark screen with a pulsing logo, after the clip."""
    h, w = frames[0].shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    cards = []
    for r in range(min(h, w) // 6, min(h, w) // 6 + 6):
        card = np.full((h, w, 3), 18, dtype=np.uint8)
        card[(yy - h // 2) ** 2 + (xx - w // 2) ** 2 < r * r] = (37, 244, 238)
        card[h // 2 + r + 10 : h // 2 + r + 22, w // 2 - 40 : w // 2 + 40] = 230  # the user name
        cards.append(card)
    return list(frames) + [cards[i % 6] for i in range(int(seconds * fps))]


def trim(frames: Frames, sound: np.ndarray | None, seconds: float) -> tuple[Frames, np.ndarray | None]:
    k = round(seconds * FPS)
    return frames[k:], (sound[int(k / FPS * AUDIO_RATE) :] if sound is not None else None)


def export(frames: Frames, sound: np.ndarray | None, trim_s: float = 1.0) -> tuple[Frames, np.ndarray | None]:
    """TikTok's 'save video': a trimmed start, the end card and its chime appended."""
    f, s = trim(frames, sound, trim_s)
    f = end_card(watermark(f))
    if s is not None:
        s = np.concatenate([s, jingle()])
    return f, s


# --- the corpus -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    families: dict[str, list[Path]] = field(default_factory=dict)  # source name -> original and its copies
    kinds: dict[Path, str] = field(default_factory=dict)  # file -> what it is ("original", "hevc", ...)
    negatives: list[tuple[str, Path, Path]] = field(default_factory=list)  # (why, a, b) never the same clip
    exports: list[Path] = field(default_factory=list)  # files with TikTok's end card
    long: list[tuple[Path, Path]] = field(default_factory=list)  # a 60 s clip and its trimmed export

    def files(self) -> list[Path]:
        out = [p for fam in self.families.values() for p in fam]
        out += [p for _, a, b in self.negatives for p in (a, b)]
        out += [p for pair in self.long for p in pair]
        return list(dict.fromkeys(out))

    def family_of(self) -> dict[Path, str]:
        fam = {p: name for name, ps in self.families.items() for p in ps}
        for i, (a, b) in enumerate(self.long):
            fam[a] = fam[b] = f"long{i}"
        return fam

    def to_json(self) -> dict[str, object]:
        rel = lambda p: str(p.relative_to(self.root))  # noqa: E731
        return {
            "families": {k: [rel(p) for p in v] for k, v in self.families.items()},
            "kinds": {rel(p): k for p, k in self.kinds.items()},
            "negatives": [[why, rel(a), rel(b)] for why, a, b in self.negatives],
            "exports": [rel(p) for p in self.exports],
            "long": [[rel(a), rel(b)] for a, b in self.long],
        }

    @classmethod
    def from_json(cls, root: Path, d: dict[str, object]) -> Corpus:
        p = lambda s: root / str(s)  # noqa: E731
        c = cls(root)
        c.families = {k: [p(x) for x in v] for k, v in d["families"].items()}  # type: ignore[attr-defined]
        c.kinds = {p(k): v for k, v in d["kinds"].items()}  # type: ignore[attr-defined]
        c.negatives = [(w, p(a), p(b)) for w, a, b in d["negatives"]]  # type: ignore[attr-defined]
        c.exports = [p(x) for x in d["exports"]]  # type: ignore[attr-defined]
        c.long = [(p(a), p(b)) for a, b in d["long"]]  # type: ignore[attr-defined]
        return c


Variant = Callable[[Frames, np.ndarray | None, Path], Path]


def variants(seed: int, full_size: bool) -> dict[str, Variant]:
    """The copies of one source; encodings and sample rates differ on purpose. A screen recording is
    1080x1600 for some sources and half that for the others (same shape, a quarter of the encoding)."""
    screen = (1080, 1600) if full_size else (540, 800)
    return {
        "small_sparse_bframes": lambda f, s, p: encode(p, scale(f, (320, 180)), s, DESKTOP),
        **({"hevc": lambda f, s, p: encode(p, f, s, HEVC)} if full_size or seed % 2 else {}),  # x265 is slow
        "watermark": lambda f, s, p: encode(p, watermark(f, seed), s, PHONE),
        "letterbox_9x16": lambda f, s, p: encode(p, pad(f, (270, 480), 0), s, PHONE),
        "export": lambda f, s, p: encode(p, *export(f, s), TIKTOK),
        # a screen recording: the clip fit into a 1080x1600 canvas with grey bars; the mic was off
        "screen_recording": lambda f, s, p: encode(p, pad(f, screen, 90), None, Enc(gop=None)),
        "combined": lambda f, s, p: encode(p, pad(export(f, s)[0], (360, 640), 0), export(f, s)[1],
                                           Enc(gop=None, bframes=True, crf=30, audio_rate=44100)),
    }  # fmt: skip


def sources() -> dict[str, tuple[Callable[[], Frames], np.ndarray | None]]:
    """Source name -> (frames, sound). Half of them are silent."""
    out: dict[str, tuple[Callable[[], Frames], np.ndarray | None]] = {}
    for s in range(4):
        out[f"synthetic{s}"] = ((lambda s=s: list(clip_frames(s))), melody(s) if s % 2 == 0 else None)
    gens = {
        "life": ("life", "mold=10:ratio=0.2:seed=3:death_color=#C83232:life_color=#00FF00"),
        "cellauto": ("cellauto", "rule=110:seed=5:random_fill_ratio=0.5"),
        "cellauto_sparse": ("cellauto", "rule=18:seed=9"),
        "mandelbrot": ("mandelbrot", "end_pts=60:maxiter=256"),
        "testsrc2": ("testsrc2", ""),
        "sierpinski": ("sierpinski", "type=triangle:seed=2"),
    }
    for i, (name, (gen, args)) in enumerate(gens.items()):
        out[name] = ((lambda gen=gen, args=args: lavfi(gen, args)), melody(100 + i) if i % 2 else None)
    return out


def build(root: Path) -> Corpus:
    """Write every file of the corpus under `root` (a few hundred small encodes; about a minute)."""
    c = Corpus(root)
    for i, (name, (frames_of, sound)) in enumerate(sources().items()):
        frames = frames_of()
        orig = encode(root / f"{name}.mp4", frames, sound, PHONE)
        c.families[name] = [orig]
        c.kinds[orig] = "original"
        seed = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16)
        # copies are made from a decoded copy, as apps do (generation loss included)
        dframes, dsound = decode(orig)
        for vname, make in variants(seed, full_size=i % 4 == 0).items():
            p = make(dframes, dsound, root / f"{name}__{vname}.mp4")
            c.families[name].append(p)
            c.kinds[p] = vname
            if vname in ("export", "combined"):
                c.exports.append(p)
    _hard_negatives(c, root)
    _long(c, root)
    return c


def _hard_negatives(c: Corpus, root: Path) -> None:
    neg = root / "negatives"
    takes = [encode(neg / f"take{i}.mp4", take(21, 500 + i), melody(300 + i)) for i in range(4)]
    silent = [encode(neg / f"silent_take{i}.mp4", take(22, 600 + i)) for i in range(2)]
    for i in range(len(takes)):
        for j in range(i + 1, len(takes)):
            c.negatives.append(("take of the same scene, other motion and sound", takes[i], takes[j]))
    c.negatives.append(("take of the same scene, other motion, both silent", silent[0], silent[1]))
    # (a generator no source uses, so these only meet each other)
    land = encode(neg / "pattern_landscape.mp4", lavfi("testsrc", "", size=(480, 270)))
    port = encode(neg / "pattern_portrait.mp4", lavfi("testsrc", "", size=(270, 480)))
    c.negatives.append(("portrait and landscape of one pattern", land, port))
    zooms = [
        encode(
            neg / "zoom_a.mp4", lavfi("mandelbrot", "maxiter=256:end_pts=40:start_x=-0.743643887:start_y=0.131825904")
        ),
        encode(
            neg / "zoom_b.mp4",
            lavfi("mandelbrot", "maxiter=256:end_pts=80:start_x=-0.743643887:start_y=0.131825904", seconds=10),
        ),  # fmt: skip
        encode(neg / "zoom_c.mp4", lavfi("mandelbrot", "maxiter=256:end_pts=40:start_x=0.28:start_y=0.008")),
    ]
    for i in range(len(zooms)):
        for j in range(i + 1, len(zooms)):
            c.negatives.append(("two fractal zooms", zooms[i], zooms[j]))
    intro = [encode(neg / f"intro_{k}.mp4", list(clip_frames(101 + k, black_intro=2.0))) for k in range(2)]
    c.negatives.append(("shared 2 s black intro", intro[0], intro[1]))
    static = [encode(neg / f"static_{k}.mp4", list(clip_frames(200 + 4 * k, static_bg=7))) for k in range(2)]
    c.negatives.append(("same static scene, other motion", static[0], static[1]))
    base = list(clip_frames(202, seconds=4))  # a moving pattern no source uses
    boxes = []
    for k in range(4):
        frames = [f.copy() for f in base]
        for f in frames:
            f[100:170, 190:290] = ((k * 70) % 255, (80 + k * 50) % 255, (200 - k * 60) % 255)
        boxes.append(encode(neg / f"box_{k}.mp4", frames, melody(400 + k, seconds=4)))
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            c.negatives.append(("one test pattern, another box and sound", boxes[i], boxes[j]))


def _long(c: Corpus, root: Path) -> None:
    """Minute-long clips (small) whose export trims one second: alignment must not depend on short clips."""
    size = (320, 180)
    long = [
        (list(clip_frames(29, seconds=60, size=size)), melody(29, seconds=60)),
        (lavfi("cellauto", "rule=110:seed=11:random_fill_ratio=0.5", seconds=60, size=size), None),
    ]
    for k, (frames, sound) in enumerate(long):
        a = encode(root / f"long{k}.mp4", frames, sound, Enc(gop=None))
        b = encode(root / f"long{k}__export.mp4", *export(frames, sound), TIKTOK)
        c.long.append((a, b))
        c.exports.append(b)


def cached(root: Path) -> Corpus:
    """`build(root)` once per version of this file: a later session with the same source reuses it.
    Test processes running side by side (pytest-xdist workers) take turns: one builds, the others wait."""
    import fcntl

    stamp = hashlib.sha256(Path(__file__).read_bytes() + av.__version__.encode()).hexdigest()[:16]
    done = root / f"corpus-{stamp}.json"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return Corpus.from_json(root, json.loads(done.read_text()))
        if root.exists():
            shutil.rmtree(root)
        c = build(root)
        done.write_text(json.dumps(c.to_json()))
        return c


__all__ = ["FPS", "SECONDS", "Corpus", "H", "W", "build", "cached", "clip_frames", "decode", "encode"]


# --- shared by the test modules: one corpus and its signatures per session --------------------------

_SESSION: dict[str, object] = {}


def session_corpus(config: object, tmp_factory: object) -> tuple[Corpus, dict[Path, object]]:
    """The corpus (from pytest's cache folder when there is one, so a later session reuses it) and the
    signature of every file in it, computed once per session."""
    from draftsync.perceptual import compute

    if "corpus" not in _SESSION:
        cache = getattr(config, "cache", None)
        root = Path(cache.mkdir("draftsync-corpus")) if cache is not None else Path(tmp_factory.mktemp("corpus"))  # type: ignore[attr-defined]
        c = cached(root)
        _SESSION["corpus"] = c
        _SESSION["sigs"] = {p: compute(p) for p in c.files()}
    return _SESSION["corpus"], _SESSION["sigs"]  # type: ignore[return-value]
