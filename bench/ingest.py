"""Ingest throughput: `draftsync scan --no-compare` into an empty archive (every copy fsync'd, read back from
the disk and compared, sidecars written, catalogued) vs `cp -r` + `sync` and `rsync -a` + `sync` of the same
files, interleaved repetitions on the same data set.

Two data sets (BENCH_SET = big | small | both, default both):
- big: 16 x 64 MiB (1 GiB), each a real 2 s video head followed by random bytes. Target <= 1.3x cp.
- small: 2,000 x 1 MB, built the same way. Target <= 2x cp.

Printed per repetition and as medians: wall time and CPU seconds of each tool, ratios to cp, and the bytes
draftsync read from the storage device (/proc/self/io read_bytes of the scan process): the read-back of
every copy comes from the disk, so that figure is about the size of the data set, not 0.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, median, precompile, real_video_bytes, workdir, write_config

REPS = int(os.environ.get("BENCH_REPS", "3"))
SETS = {"big": (16, 64 * 1024 * 1024), "small": (2000, 1_000_000)}

# The CLI in a wrapper that reports the bytes it read from the storage device.
WRAPPER = (
    "import sys; from draftsync.cli import main; rc = main(sys.argv[1:]); "
    "print([l for l in open('/proc/self/io') if l.startswith('read_bytes')][0].split()[1], file=sys.stderr); "
    "sys.exit(rc)"
)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str] | str) -> tuple[float, float, str]:
    c, t = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True)
    return time.perf_counter() - t, children_cpu() - c, out.stderr


def make_set(base: Path, files: int, size: int) -> None:
    head = real_video_bytes()
    for i in range(files):
        sub = base / "inbox" / f"{i // 500:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        with open(sub / f"VID_20260501_{i // 60 % 60:02d}{i % 60:02d}{i // 3600:02d}_{i}.mp4", "wb") as f:
            f.write(head)
            f.write(os.urandom(size - len(head)))
    old = 1_700_000_000
    for p in (base / "inbox").rglob("*.mp4"):
        os.utime(p, (old, old))


def clean(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            shutil.rmtree(p)
    subprocess.run("sync", check=True)


def bench(name: str, files: int, size: int) -> None:
    base = workdir(f"ingest-{name}")
    cfg = write_config(base)
    make_set(base, files, size)
    subprocess.run("sync", check=True)
    inbox, dst = base / "inbox", base / "copy"
    tools = {
        "cp -r + sync": f"cp -r '{inbox}' '{dst}' && sync",
        "rsync -a + sync": f"rsync -a '{inbox}/' '{dst}/' && sync",
        "draftsync scan --no-compare": [sys.executable, "-c", WRAPPER, "--config", str(cfg), "scan", "--no-compare"],
    }
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
    disk_read: list[int] = []
    for rep in range(REPS):
        # Rotate the order so that no tool always runs right after another's writeback.
        order = list(tools)[rep % len(tools) :] + list(tools)[: rep % len(tools)]
        line = []
        for tool in order:
            wall, cpu, err = timed(tools[tool])
            runs[tool].append((wall, cpu))
            if tool.startswith("draftsync"):
                disk_read.append(int(err.strip().splitlines()[-1]))
            clean(dst, base / "archive", base / "state")
            line.append(f"{tool.split()[0]} {wall:.2f} s")
        print(f"  rep {rep + 1} (load {load_average():.1f}): " + ", ".join(line))
    gib = files * size / 2**30
    cp = median([w for w, _ in runs["cp -r + sync"]])
    print(f"ingest ({name}): {files} files x {size / 2**20:.1f} MiB = {gib:.2f} GiB, {REPS} interleaved repetitions")
    for tool, rs in runs.items():
        w, c = median([x for x, _ in rs]), median([x for _, x in rs])
        print(f"  {tool:30s} {w:6.2f} s  {c:5.2f} s CPU  {gib / w:5.2f} GiB/s  {w / cp:.2f}x cp")
    print(f"  draftsync read {median([float(x) for x in disk_read]) / 2**30:.2f} GiB from the device (the read-back "
          "of every copy, after its pages were dropped from the cache)")  # fmt: skip
    shutil.rmtree(base)


def main() -> None:
    precompile()
    which = os.environ.get("BENCH_SET", "both")
    for name, (files, size) in SETS.items():
        if which in (name, "both"):
            bench(name, int(os.environ.get("BENCH_FILES", files)), size)


if __name__ == "__main__":
    main()
