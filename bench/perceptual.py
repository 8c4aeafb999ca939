"""Perceptual signatures: (1) cost per minute of 1080p H.264 vs decoding every frame with PyAV (target
<= 0.1x); (2) near-duplicate lookup of one signature among 100,000 (target <= 50 ms median); (3) the
precision/recall table on the synthetic evaluation corpus. BENCH_PERCEPTUAL=cost,query,quality picks."""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import median, workdir

PARTS = os.environ.get("BENCH_PERCEPTUAL", "cost,query,quality").split(",")


def make_1080p_minute(path: Path, gop: int) -> None:
    import av

    from tests.corpus import clip_frames

    frames = list(clip_frames(0))  # 6 s of motion at 480x270, looped and scaled up
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop)}
        s.codec_context.gop_size = gop
        for i in range(60 * 30):
            vf = av.VideoFrame.from_ndarray(frames[(i // 2) % len(frames)], format="rgb24").reformat(1920, 1080)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def full_decode(path: Path) -> int:
    import av

    n = 0
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for _ in c.decode(video=0):
            n += 1
    return n


def cost() -> None:
    from draftsync.perceptual import compute

    base = workdir("perceptual-cost")
    print("cost: signature of one minute of 1080p H.264 vs decoding every frame (PyAV, threaded)")
    for gop, label in ((30, "1 s keyframe interval (phone-like)"), (250, "x264 default interval (sparse keyframes)")):
        v = base / f"minute_g{gop}.mp4"
        make_1080p_minute(v, gop)
        dec = median([_t(lambda v=v: full_decode(v)) for _ in range(2)])
        sig = median([_t(lambda v=v: compute(v)) for _ in range(2)])
        n = len(compute(v).times)
        print(
            f"  {label}: full decode {dec:.2f} s, signature {sig:.2f} s ({n} samples); ratio {sig / dec:.2f}x (target <= 0.1x)"
        )


def _t(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def query() -> None:
    from draftsync.perceptual import Index, Signature

    rng = np.random.default_rng(0)
    index = Index()
    n = 100_000
    for i in range(n):
        k = int(rng.integers(12, 40))
        hashes = rng.integers(1, 2**63, k, dtype=np.uint64) | np.uint64(1 << 63)
        index.add(f"v{i}", Signature(np.arange(k, dtype=np.float32) * 0.5, hashes, k * 0.5 / 0.9, 0.5625))
    target = index.sigs[1234]
    noisy = target.hashes ^ (np.uint64(1) << rng.integers(0, 63, len(target.hashes)).astype(np.uint64))
    probe = Signature(target.times + np.float32(0.01), noisy, target.duration, target.aspect)
    t = time.perf_counter()
    index.candidates(probe)  # builds the band tables once
    build = time.perf_counter() - t
    times, found = [], []
    for _ in range(21):
        t = time.perf_counter()
        found = index.query(probe)
        times.append(time.perf_counter() - t)
    print(f"query: one signature among {n} ({sum(len(s.hashes) for s in index.sigs)} frame hashes)")
    print(f"  index build {build:.2f} s (once, at daemon start); lookup median {median(times) * 1000:.1f} ms "
          f"(target <= 50 ms); found {found[:1]}")  # fmt: skip


def quality() -> None:
    from draftsync.perceptual import compute, is_match
    from tests.corpus import build

    base = workdir("perceptual-quality")
    originals, variants, hard = build(base, clips=30)
    files = [*originals.values(), *variants.values(), *(p for pair in hard for p in pair)]
    sigs = {p: compute(p) for p in files}
    family = {p: s for s, p in originals.items()} | {p: s for (s, _), p in variants.items()}
    print("quality: 30 synthetic clips x 6 transformations, plus 2 hard negative pairs")
    print("  | transformation | true pairs | found | recall |")
    print("  | --- | --- | --- | --- |")
    names = sorted({n for _, n in variants})
    for name in names:
        pairs = [(originals[s], p) for (s, n), p in variants.items() if n == name]
        hit = sum(is_match(sigs[a], sigs[b])[0] for a, b in pairs)
        print(f"  | {name} | {len(pairs)} | {hit} | {hit / len(pairs):.2f} |")
    neg = [(a, b) for a, b in itertools.combinations(family, 2) if family[a] != family[b]] + list(hard)
    fp = sum(is_match(sigs[a], sigs[b])[0] for a, b in neg)
    tp = sum(is_match(sigs[originals[s]], sigs[p])[0] for (s, _), p in variants.items())
    print(f"  all: recall {tp / len(variants):.3f}; false links {fp} of {len(neg)} distinct pairs; "
          f"precision {tp / max(1, tp + fp):.3f}")  # fmt: skip


if __name__ == "__main__":
    for part in PARTS:
        {"cost": cost, "query": query, "quality": quality}[part.strip()]()
