"""Ingest throughput: `draftsync scan --no-compare` of >= 1 GiB of videos into an empty archive (every copy fsync'd,
read back and verified, sidecars written) vs `cp -r` + `sync` of the same files. Target <= 1.3x."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import draftsync, median, timed, workdir, write_config

FILES = int(os.environ.get("BENCH_FILES", "16"))
SIZE = int(os.environ.get("BENCH_FILE_MIB", "64")) * 1024 * 1024


def main() -> None:
    from _common import real_video_bytes

    base = workdir("ingest")
    cfg = write_config(base)
    head = real_video_bytes()
    for i in range(FILES):
        with open(base / "inbox" / f"VID_20260501_1200{i:02d}.mp4", "wb") as f:
            f.write(head)
            f.write(os.urandom(SIZE - len(head)))
    old = 1_700_000_000
    for p in (base / "inbox").iterdir():
        os.utime(p, (old, old))
    total = FILES * SIZE
    subprocess.run("sync", check=True)
    cp_times, ds_times, full_times = [], [], []
    for _ in range(2):
        dst = base / "cp-copy"
        cp_times.append(timed(f"cp -r '{base}/inbox' '{dst}' && sync"))
        shutil.rmtree(dst)
        subprocess.run("sync", check=True)
        for args, into in ((("scan", "--no-compare"), ds_times), (("scan",), full_times)):
            into.append(timed(draftsync(*args, config=cfg), stdout=subprocess.DEVNULL))
            shutil.rmtree(base / "archive")
            shutil.rmtree(base / "state")
            subprocess.run("sync", check=True)
    cp, ds, full = median(cp_times), median(ds_times), median(full_times)
    gib = total / 2**30
    print(f"ingest: {FILES} files, {gib:.2f} GiB")
    print(f"  cp -r + sync    {cp:6.2f} s  ({gib / cp:.2f} GiB/s)")
    print(f"  draftsync scan --no-compare  {ds:6.2f} s  ({gib / ds:.2f} GiB/s)")
    print(f"  ratio draftsync/cp = {ds / cp:.2f}x  (target <= 1.3x)")
    print(f"  draftsync scan (also signs and compares every video) {full:6.2f} s = {full / cp:.2f}x cp")
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
