"""Latency: a 50 MB video renamed into the inbox until its sidecar exists, with the daemon running.
Target: median <= settle_seconds + 0.5 s. Baseline in the same run: `cp` of the same file + `sync`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import draftsync, median, real_video_bytes, timed, workdir, write_config

SETTLE = float(os.environ.get("BENCH_SETTLE", "1.0"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def main() -> None:
    base = workdir("latency")
    cfg = write_config(base, settle=SETTLE)
    staging = base / "staging"
    staging.mkdir()
    head = real_video_bytes()
    proc = subprocess.Popen(draftsync("run", config=cfg), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (base / "state" / "ingest.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        lat, cps = [], []
        for i in range(RUNS):
            src = staging / f"VID_20260501_1300{i:02d}.mp4"
            src.write_bytes(head + os.urandom(50_000_000 - len(head)))
            cps.append(timed(f"cp '{src}' '{base}/cp-{i}.mp4' && sync"))
            before = set((base / "archive").rglob("*.json")) if (base / "archive").exists() else set()
            t = time.perf_counter()
            os.rename(src, base / "inbox" / src.name)
            end = time.monotonic() + 60
            while time.monotonic() < end:
                now = set((base / "archive").rglob("*.json")) if (base / "archive").exists() else set()
                if now - before:
                    break
                time.sleep(0.01)
            lat.append(time.perf_counter() - t)
        m = median(lat)
        print(f"latency: 50 MB video renamed into the inbox -> sidecar exists, settle_seconds = {SETTLE}")
        print(f"  runs: {', '.join(f'{x:.2f}' for x in lat)} s")
        print(f"  median {m:.2f} s; target <= {SETTLE + 0.5:.2f} s; beyond settle: {m - SETTLE:.2f} s")
        print(
            f"  cp + sync of the same file: {median(cps):.2f} s; ratio (latency - settle)/cp = {(m - SETTLE) / median(cps):.2f}x"
        )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
