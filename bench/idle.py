"""Idle cost and memory: the daemon with 100,000 files watched and catalogued (no signatures), nothing
happening. CPU over 60 s (target < 1% of one core; < 0.5% is the aim with signatures, see perceptual.py) and
resident memory after the start-up walk and watches (target <= 150 MiB), with the peak (VmHWM) beside it.
Baseline in the same run: `find` walking the same tree once.

The tree and its catalog are the rescan benchmark's (BENCH_TREE_FILES, reused between runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import draftsync, load_average, precompile, timed
from rescan import N, prepared

SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def main() -> None:
    precompile()
    base, cfg = prepared()
    find_s = timed(f"find '{base}/inbox' -type f -printf '%s %T@\\n' > /dev/null")
    proc = subprocess.Popen(draftsync("run", config=cfg), stderr=subprocess.DEVNULL)
    try:
        # Wait for the start-up rescan to finish (the roots table records it), then let things settle.
        import sqlite3

        t0 = time.monotonic()
        while time.monotonic() - t0 < 300:
            time.sleep(1)
            try:
                db = sqlite3.connect(f"file:{base}/state/catalog.db?mode=ro", uri=True)
                (done,) = db.execute(
                    "SELECT COUNT(*) FROM roots WHERE last_rescan > ?", (time.time() - 600,)
                ).fetchone()
                db.close()
            except sqlite3.Error:
                done = 0
            if done:
                break
        startup = time.monotonic() - t0
        time.sleep(10)
        m0 = memory(proc.pid)
        c0, t1 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(SECONDS)
        c1, t2 = cpu_seconds(proc.pid), time.monotonic()
        m1 = memory(proc.pid)
        pct = 100 * (c1 - c0) / (t2 - t1)
        print(f"idle: {SECONDS:.0f} s with {N} files watched (inotify) and catalogued, no signatures")
        print(f"  start-up walk done after {startup:.1f} s (for scale, one find over the tree: {find_s:.2f} s)")
        print(f"  daemon CPU {c1 - c0:.2f} s = {pct:.2f}% of one core (target < 1%); load {load_average():.1f}")
        print(f"  daemon RSS {m0['VmRSS']:.0f} MiB after start-up, {m1['VmRSS']:.0f} MiB after {SECONDS:.0f} s idle, "
              f"peak {m1['VmHWM']:.0f} MiB (target <= 150 MiB)")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
