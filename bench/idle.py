"""Idle cost: CPU used by the daemon over 60 s with 100,000 files watched and nothing happening.
Target: under 1% of one core. Baseline in the same run: `find` walking the same tree once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import draftsync, timed, workdir, write_config
from rescan import build_tree

SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    base = workdir("idle")
    cfg = write_config(base, settle=5)
    build_tree(base, cfg)
    find_s = timed(f"find '{base}/inbox' -type f -printf '%s %T@\\n' > /dev/null")
    proc = subprocess.Popen(draftsync("run", config=cfg), stderr=subprocess.DEVNULL)
    try:
        time.sleep(20)  # start-up walk and watches settle
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(SECONDS)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        pct = 100 * (c1 - c0) / (t1 - t0)
        print(f"idle: {SECONDS:.0f} s with 100,000 files watched (inotify)")
        print(f"  daemon CPU {c1 - c0:.2f} s = {pct:.2f}% of one core (target < 1%)")
        print(f"  for scale, one find over the tree: {find_s:.2f} s")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
