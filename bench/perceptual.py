"""Perceptual signatures and near-duplicates.

cost     a signature (pictures and sound) of one minute of 1080p video, for three keyframe layouts
         (1 s keyframes like a phone, x264's default GOP with B-frames, x265's default GOP), against a full
         decode of every frame (PyAV, threaded) and a keyframe-only decode, interleaved runs; target <= 0.05x
quality  precision and recall on the evaluation corpus (tests/corpus.py), per transformation and for the
         hard negatives (takes of one scene, portrait vs landscape, fractal zooms, ...); target recall >= 0.95,
         no false link
lookalike  `scan` of 2,000 look-alike files (copies of one clip) vs 2,000 distinct clips, and `dupes` on them
index    the band index with 1,000,000 signatures: build, file size, RSS, lookup time (target <= 50 ms)

BENCH_PERCEPTUAL=cost,quality,lookalike,index picks parts; BENCH_REPEAT sets interleaved repetitions.
"""

from __future__ import annotations

import itertools
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import draftsync, median, workdir, write_config

PARTS = os.environ.get("BENCH_PERCEPTUAL", "cost,quality,lookalike,index").split(",")
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
BASE = Path(os.environ.get("DRAFTSYNC_BENCH_DIR") or "/tmp")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - w, _cpu() - c


# --- cost ---------------------------------------------------------------------------------------------

LAYOUTS = {
    "1 s keyframes (phone), H.264": ("libx264", {"preset": "veryfast", "g": "30", "keyint_min": "30", "bf": "0"}),
    "x264 default GOP, B-frames": ("libx264", {"preset": "veryfast"}),
    "x265 default GOP": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error"}),
}


def make_minute(path: Path, codec: str, options: dict[str, str]) -> None:
    """One minute of 1080p at 30 fps with sound: moving shapes over texture, a little grain, a tune."""
    import av

    from tests.corpus import clip_frames, melody

    base = list(clip_frames(0, seconds=6, size=(960, 540), fps=30))
    rng = np.random.default_rng(0)
    grain = [rng.integers(-6, 7, (540, 960, 1), dtype=np.int16) for _ in range(7)]
    sound = np.concatenate([melody(k, seconds=6) for k in range(10)])
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream(codec, rate=30)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = options
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        for i in range(60 * 30):
            f = np.clip(base[i % len(base)].astype(np.int16) + grain[i % 7], 0, 255).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(1920, 1080, format="yuv420p")
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        from fractions import Fraction

        for k in range(0, len(sound), 1024):
            fr = av.AudioFrame.from_ndarray(sound[None, k : k + 1024], format="fltp", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 48000, k, Fraction(1, 48000)
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    tmp.rename(path)


def full_decode(path: Path) -> None:
    import av

    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for _ in c.decode(video=0):
            pass


def keyframe_decode(path: Path) -> None:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.skip_frame = "NONKEY"
        for _ in c.decode(s):
            pass


def cost() -> None:
    from draftsync.perceptual import compute

    inputs = BASE / "draftsync-bench-perceptual-inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    print(f"cost: one minute of 1080p30 with sound; medians of {REPEAT} interleaved runs (wall / CPU seconds)")
    print(
        "  | keyframes | full decode | keyframe-only decode | signature | vs full (wall) | vs full (CPU) | vs keyframe-only | samples |"
    )
    print("  | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, (codec, options) in LAYOUTS.items():
        path = inputs / f"minute-{codec}-{options.get('g', 'default')}.mp4"
        if not path.exists():
            make_minute(path, codec, options)
        runs: dict[str, list[tuple[float, float]]] = {"full": [], "key": [], "sig": []}
        for _ in range(REPEAT):
            runs["full"].append(_measure(lambda p=path: full_decode(p)))
            runs["key"].append(_measure(lambda p=path: keyframe_decode(p)))
            runs["sig"].append(_measure(lambda p=path: compute(p)))
        w = {k: median([x[0] for x in v]) for k, v in runs.items()}
        c = {k: median([x[1] for x in v]) for k, v in runs.items()}
        n = len(compute(path).times)
        print(f"  | {label} | {w['full']:.2f} / {c['full']:.2f} | {w['key']:.3f} / {c['key']:.3f} | "
              f"{w['sig']:.3f} / {c['sig']:.3f} | {w['sig'] / w['full']:.3f}x | {c['sig'] / c['full']:.3f}x | "
              f"{w['sig'] / w['key']:.2f}x | {n} |")  # fmt: skip


# --- quality ------------------------------------------------------------------------------------------


def quality() -> None:
    from draftsync.neardup import judge
    from draftsync.perceptual import compute
    from tests.corpus import build

    base = workdir("perceptual-quality")
    t = time.perf_counter()
    c = build(base)
    built = time.perf_counter() - t
    t = time.perf_counter()
    sigs = {p: compute(p) for p in c.files()}
    signed = time.perf_counter() - t
    family = c.family_of()
    print(f"quality: {len(c.families)} sources, {len(sigs)} files (built in {built:.0f} s, signed in {signed:.1f} s)")
    print("  | transformation | pairs (with the original) | same clip | recall |")
    print("  | --- | --- | --- | --- |")
    by_kind: dict[str, list[bool]] = {}
    for files in c.families.values():
        for p in files[1:]:
            by_kind.setdefault(c.kinds[p], []).append(judge(sigs[files[0]], sigs[p]).kind == "same")
    for a, b in c.long:
        by_kind.setdefault("60 s clip, 1 s trim + end card", []).append(judge(sigs[a], sigs[b]).kind == "same")
    for kind, hits in sorted(by_kind.items()):
        print(f"  | {kind} | {len(hits)} | {sum(hits)} | {sum(hits) / len(hits):.2f} |")
    tp = fn = fp = sim = 0
    files = list(dict.fromkeys([*family, *(p for _, a, b in c.negatives for p in (a, b))]))
    for a, b in itertools.combinations(files, 2):
        v = judge(sigs[a], sigs[b]).kind
        if family.get(a) is not None and family.get(a) == family.get(b):
            tp += v == "same"
            fn += v != "same"
        else:
            fp += v == "same"
            sim += v == "similar"
    print(f"  all pairs: recall {tp / (tp + fn):.3f} ({tp} of {tp + fn} same-clip pairs); false links {fp} of "
          f"{len(files) * (len(files) - 1) // 2 - tp - fn} other pairs ({sim} listed as similar)")  # fmt: skip
    print("  | hard negative | pairs | same clip (false link) | similar take | unrelated |")
    print("  | --- | --- | --- | --- | --- |")
    groups: dict[str, list[str | None]] = {}
    for why, a, b in c.negatives:
        groups.setdefault(why, []).append(judge(sigs[a], sigs[b]).kind)
    for why, kinds in groups.items():
        print(f"  | {why} | {len(kinds)} | {kinds.count('same')} | {kinds.count('similar')} | {kinds.count(None)} |")
    shutil.rmtree(base, ignore_errors=True)


# --- 2,000 look-alikes ----------------------------------------------------------------------------------


def lookalike() -> None:
    """`scan` of 2,000 copies of one clip (each re-encoded slightly differently: all one group) against
    2,000 distinct clips; then `dupes`."""
    import av

    from tests.corpus import clip_frames

    n = int(os.environ.get("BENCH_LOOKALIKES", "2000"))
    print(f"lookalike: scan of {n} look-alikes vs {n} distinct clips (3 s, 160x90, no sound), then dupes")
    results = {}
    for kind in ("distinct", "lookalike"):
        base = workdir(f"perceptual-{kind}")
        cfg = write_config(base, settle=0.5)
        frames = list(clip_frames(0, seconds=3, size=(160, 90), fps=15))
        for i in range(n):
            src = frames if kind == "lookalike" else list(clip_frames(1000 + i, seconds=3, size=(160, 90), fps=15))
            with av.open(str(base / "inbox" / f"v{i:05d}.mp4"), "w") as out:
                s = out.add_stream("libx264", rate=15)
                s.width, s.height, s.pix_fmt = 160, 90, "yuv420p"
                # a different quality per copy: every file has its own content hash
                s.options = {"preset": "ultrafast", "crf": str(18 + i % 12), "g": "15"}
                for _k, f in enumerate(src):
                    g = f.copy()
                    g[0, 0, 0] = i % 256  # and its own pixels
                    g[0, 1, 0] = (i // 256) % 256
                    for p in s.encode(av.VideoFrame.from_ndarray(g, format="rgb24")):
                        out.mux(p)
                for p in s.encode():
                    out.mux(p)
            old = time.time() - 3600  # long settled
            os.utime(base / "inbox" / f"v{i:05d}.mp4", (old, old))
        t0 = time.perf_counter()
        subprocess.run(draftsync("scan", config=cfg), check=True, capture_output=True)
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = subprocess.run(draftsync("dupes", "--json", config=cfg), check=True, capture_output=True, text=True)
        dupes_s = time.perf_counter() - t0
        import json

        d = json.loads(r.stdout)
        results[kind] = scan_s
        sizes = [len(g["members"]) for g in d["groups"]]
        print(
            f"  {kind}: scan {scan_s:.1f} s, dupes {dupes_s:.2f} s; groups {len(sizes)} (largest {max(sizes, default=0)})"
        )
        shutil.rmtree(base, ignore_errors=True)
    print(f"  look-alikes / distinct: {results['lookalike'] / results['distinct']:.2f}x (target: about 1x)")


# --- the index at 1,000,000 signatures ----------------------------------------------------------------


def index() -> None:
    from draftsync.bandindex import BandIndex

    n = int(os.environ.get("BENCH_INDEX_SIGNATURES", "1000000"))
    keys_per = 16
    base = workdir("perceptual-index")
    rng = np.random.default_rng(0)
    idx = BandIndex(base / "neardup.index", "bench")
    t = time.perf_counter()

    def rows() -> object:
        for i in range(1, n + 1):
            yield i, rng.integers(1, 2**63, keys_per, dtype=np.uint64)

    idx.rebuild(rows())  # type: ignore[arg-type]
    build = time.perf_counter() - t
    idx.close()
    size = (base / "neardup.index").stat().st_size
    # lookups in a fresh process, as the daemon would do them: what does the open index cost in memory?
    probe = f"""
import sys, time, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from draftsync.bandindex import BandIndex
def rss():
    return [int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')][0]
before = rss()
t = time.perf_counter(); idx = BandIndex(__import__('pathlib').Path({str(base / "neardup.index")!r}), 'bench'); opened = time.perf_counter() - t
rng = np.random.default_rng(1)
target = np.random.default_rng(0).integers(1, 2**63, {keys_per}, dtype=np.uint64)  # signature 1's keys
flips = np.uint64(1) << rng.integers(0, 63, {keys_per}).astype(np.uint64)
q = np.concatenate([target ^ flips, rng.integers(1, 2**63, 48, dtype=np.uint64)])
ts = []
for _ in range(21):
    t = time.perf_counter(); found = idx.query(q); ts.append(time.perf_counter() - t)
for i in range(2000):
    idx.add({n} + 1 + i, rng.integers(1, 2**63, {keys_per}, dtype=np.uint64))
t2 = []
for _ in range(21):
    t = time.perf_counter(); idx.query(q); t2.append(time.perf_counter() - t)
print(before, rss(), opened, sorted(ts)[10], sorted(t2)[10], found[:1])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split(
        maxsplit=5
    )
    before, after, opened, lookup, lookup_delta, found = out
    print(f"index: {n} signatures x {keys_per} frame hashes, 4 bands")
    print(f"  built in {build:.1f} s (once: a first start after an upgrade or a reindex); file {size / 2**20:.0f} MiB")
    print(f"  a fresh process: RSS {before} MiB before opening it, {after} MiB after 42 lookups (opened in "
          f"{float(opened) * 1000:.0f} ms; buckets are read with pread)")  # fmt: skip
    print(f"  lookup median {float(lookup) * 1000:.1f} ms (with 2,000 unmerged additions {float(lookup_delta) * 1000:.1f} ms; "
          f"target <= 50 ms); best candidate {found.strip()}")  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    for part in PARTS:
        {"cost": cost, "quality": quality, "lookalike": lookalike, "index": index}[part.strip()]()
