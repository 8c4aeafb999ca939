"""The status page on 100,000 catalogued videos, and the cost of a thumbnail.

(1) page: median time to render the status page (first page, a page deep in the archive, the
near-duplicates page), /metrics and /healthz, in process and over HTTP from the real server, on a
catalog of 100,000 videos (each with a source row and a signature, half with thumbnails, 2,000 near-duplicate links, 10,000
queued push items and 280 finished ones, so the page's push queue has a long queue to bound). Baseline in
the same run, interleaved: reading the whole catalog once (`iter_videos`), which is what a page that
did not paginate would pay at least. Target: page median <= 100 ms, and a small fraction of the baseline.
(2) thumbnail: cost per video of `thumbs.render` vs `perceptual.compute` (the signature every video
already gets) on phone-like 1080x1920 H.264 with a keyframe a second. Target <= 0.5x.
BENCH_WEB=page,thumb picks."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import median, workdir, write_config

PARTS = os.environ.get("BENCH_WEB", "page,thumb").split(",")
N = 100_000
QUEUED = 10_000  # push items waiting their turn (the budget sends at most 5 a day)
REPS = 15


def fill(cfg: Path) -> Any:
    from draftsync.catalog import Catalog
    from draftsync.config import load

    s, _ = load(str(cfg))
    cat = Catalog(s.catalog_path)
    t0 = 1_700_000_000.0
    media = json.dumps({"duration": 23.5, "width": 1080, "height": 1920, "video_codec": "h264", "fps": 30.0})
    with cat.tx() as db:
        db.executemany(
            "INSERT INTO videos(hash, size, archive_path, capture_time, capture_source, label, media, probe_error, "
            "first_seen, archived_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (
                (f"blake3:{i:064x}", 20_000_000 + i, f"{2020 + i // 20000}/{i % 12 + 1:02d}/camera/clip_{i:06d}.mp4",
                 "2024-05-01T10:00:00+00:00", "metadata", "camera", media, None, t0 + i * 60, t0 + i * 60)
                for i in range(N)
            ),
        )  # fmt: skip
        sig = json.dumps({"version": 1, "duration": 23.5, "aspect": 0.5625, "times": [i * 0.5 for i in range(45)],
                          "hashes": [f"{i * 7919:016x}" for i in range(45)]})  # fmt: skip
        db.executemany(
            "INSERT INTO signatures(hash, version, data, error, computed_at) VALUES(?,1,?,NULL,?)",
            ((f"blake3:{i:064x}", sig, t0) for i in range(N)),
        )
        db.executemany(
            "INSERT INTO sources(path, root, size, mtime_ns, inode, dev, hash, state, first_seen, last_seen) "
            "VALUES(?,?,?,?,?,?,?,?,?,?)",
            ((f"/srv/inbox/DCIM/VID_{i:06d}.mp4", "/srv/inbox", 20_000_000 + i, i, i, 1, f"blake3:{i:064x}",
              "archived" if i % 1000 else "failed", t0, t0) for i in range(N)),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO thumbs(hash, rel, error, made_at) VALUES(?,?,?,?)",
            ((f"blake3:{i:064x}", f".draftsync/thumbs/00/{i:064x}.jpg", None, t0) for i in range(0, N, 2)),
        )
        db.executemany(  # 2,000 same-clip pairs (the groups table replaced near_dupes' links)
            "INSERT INTO dupe_members(hash, grp, best, similarity, audio) VALUES(?,?,?,?,NULL)",
            ((f"blake3:{i + k:064x}", f"blake3:{i:064x}", f"blake3:{i:064x}" if k else None, 0.9 if k else None)
             for i in range(0, 4000, 2) for k in (0, 1)),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO pushes(hash, state, queued_at, updated_at, since, wait) VALUES(?,?,?,?,?,?)",
            ((f"blake3:{N - 1 - i:064x}", "queued" if i < QUEUED else "in_inbox", t0 + i, t0 + i, time.time(),
              3600.0 * (i % 5 + 1) if i % 11 == 0 else 0.0) for i in range(QUEUED + 280)),  # every 11th deferred
        )  # fmt: skip
    for i in range(200):
        cat.log_event("error", "ingest_failed", f"cannot read /srv/inbox/VID_{i}.mp4: permission denied")
    return s, cat


def free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


def page() -> None:
    import httpx

    from draftsync.catalog import Catalog
    from draftsync.web import App, _Server

    base = workdir("web")
    cfg = write_config(base)
    with cfg.open("a") as f:
        f.write('[push]\nenabled = true\nbackend = "dry-run"\n[web]\nlisten = "8080"\n')
    t = time.perf_counter()
    s, cat = fill(cfg)
    print(f"page: catalog of {N:,} videos built in {time.perf_counter() - t:.1f} s "
          f"({s.catalog_path.stat().st_size / 2**20:.0f} MiB)")  # fmt: skip
    app = App(s, Catalog.open_readonly(s.catalog_path))
    host = {"Host": "127.0.0.1:8080"}
    deep = f"/?before={1_700_000_000.0 + 500 * 60!r}_{500:064x}"  # the 99,500th newest onwards
    targets = {"first page": "/", "deep page": deep, "near-duplicates": "/dupes", "/metrics": "/metrics",
               "/healthz": "/healthz"}  # fmt: skip
    for path in targets.values():  # warm: templates compiled, imports done, groups cached once
        assert app.handle("GET", path, host).status in (200, 503), path
    app.groups()
    times: dict[str, list[float]] = {k: [] for k in [*targets, "baseline"]}
    for _ in range(REPS):
        for name, path in targets.items():
            t = time.perf_counter()
            app.handle("GET", path, host)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        cat.iter_videos()
        times["baseline"].append(time.perf_counter() - t)
    b = median(times["baseline"])
    print(f"  baseline: reading the whole catalog once (iter_videos) median {b * 1000:.0f} ms")
    for name in targets:
        m = median(times[name])
        print(f"  {name:16} median {m * 1000:6.1f} ms  ({m / b:.3f}x the whole-catalog read)")

    srv = _Server(("127.0.0.1", free_port()), app)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    with httpx.Client() as c:
        c.get(url + "/")
        over = {name: median([_t(lambda p=path: c.get(url + p)) for _ in range(REPS)])
                for name, path in (("first page", "/"), ("deep page", deep), ("/metrics", "/metrics"))}  # fmt: skip
    srv.shutdown()
    print("  over HTTP (real server, keep-alive off):",
          ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in over.items()))  # fmt: skip
    group_time = _t(app._refresh_groups)
    print(f"  near-duplicate groups recomputed in the background (at most every 60 s): {group_time * 1000:.0f} ms "
          "for 2,000 links (neardup.groups)")  # fmt: skip


def _t(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_phone_clip(path: Path, seconds: int = 15) -> None:
    import av

    from tests.corpus import clip_frames

    frames = list(clip_frames(2))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1080, 1920, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "30", "keyint_min": "30"}
        for i in range(seconds * 30):
            vf = av.VideoFrame.from_ndarray(frames[(i // 2) % len(frames)], format="rgb24").reformat(1080, 1920)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def thumb() -> None:
    from draftsync.perceptual import compute
    from draftsync.thumbs import render

    base = workdir("web-thumb")
    v = base / "phone.mp4"
    make_phone_clip(v)
    print(
        f"thumbnail vs signature, 15 s of 1080x1920 H.264, keyframe every second ({v.stat().st_size / 2**20:.1f} MiB)"
    )
    for fmt in ("jpeg", "webp"):
        th, sg = [], []
        for _ in range(7):
            th.append(_t(lambda fmt=fmt: render(v, fmt)))
            sg.append(_t(lambda: compute(v)))
        a, b = median(th), median(sg)
        print(f"  {fmt}: thumbnail median {a * 1000:.0f} ms ({len(render(v, fmt)) / 1024:.0f} KiB), signature median "
              f"{b * 1000:.0f} ms; ratio {a / b:.2f}x (target <= 0.5x)")  # fmt: skip


if __name__ == "__main__":
    if "page" in PARTS:
        page()
    if "thumb" in PARTS:
        thumb()
