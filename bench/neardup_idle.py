"""The daemon with many signed videos: idle CPU over 60 s (target < 0.5 % of a core at 100,000
signatures) and resident memory with the near-duplicate index in use (target <= 300 MiB at 1,000,000).

The catalog is filled with synthetic videos and signatures (random frame hashes, an audio print each),
the band index file is built once (timed: what a first start after an upgrade or a reindex costs), then
`draftsync run` starts, one real video is dropped in (so the signer opens the index and compares), and
the daemon is measured while nothing happens. BENCH_SIGNATURES sets the count (default 100000).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import draftsync, real_video_bytes, workdir, write_config

N = int(os.environ.get("BENCH_SIGNATURES", "100000"))
SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) // 1024
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(db_path: Path, n: int) -> None:
    """n videos with signatures (32 samples, 300 landmarks each), written in bulk."""
    from draftsync.audioprint import AudioPrint
    from draftsync.catalog import Catalog
    from draftsync.perceptual import VERSION, Signature

    Catalog(db_path).close()  # the schema
    db = sqlite3.connect(db_path)
    rng = np.random.default_rng(0)
    now = time.time() - 86400
    batch = 5000
    for start in range(0, n, batch):
        vids, sigs = [], []
        hashes = rng.integers(1, 2**63, (batch, 32), dtype=np.uint64)
        for k in range(batch):
            i = start + k
            if i >= n:
                break
            h = f"blake3:{i:064x}"
            vids.append((h, 1000, f"2026/01/camera/v{i:07d}.mp4", "2026-01-01T00:00:00+00:00", "metadata", "camera",
                         None, None, now + i * 1e-3, now + i * 1e-3, None))  # fmt: skip
            au = AudioPrint(
                rng.integers(1, 2**23, 300).astype(np.uint32),
                np.sort(rng.integers(0, 900, 300)).astype(np.uint32),
                [(0.0, 30.0)],
            )
            s = Signature(np.arange(32, dtype=np.float32), hashes[k], hashes[k] | np.uint64(0xF0F0F0F0F0F0F0F0),
                          np.full(32, 0x8080, np.uint16), 32.0, 0.5625, au)  # fmt: skip
            sigs.append((h, VERSION, s.pack(), s.keys().astype("<u8").tobytes(), None, now))
        db.executemany("INSERT INTO videos(hash, size, archive_path, capture_time, capture_source, label, media, "
                       "probe_error, first_seen, archived_at, verified_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)", vids)  # fmt: skip
        db.executemany(
            "INSERT INTO signatures(hash, version, data, keys, error, computed_at) VALUES(?,?,?,?,?,?)", sigs
        )
        db.commit()
    db.close()


def main() -> None:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog
    from draftsync.neardup import NearDups

    base = workdir("neardup-idle")
    cfg = write_config(base, settle=1)
    (base / "archive").mkdir()
    state = base / "state"
    state.mkdir()
    t = time.perf_counter()
    fill(state / "catalog.db", N)
    filled = time.perf_counter() - t
    catalog = Catalog(state / "catalog.db")
    t = time.perf_counter()
    nd = NearDups(catalog, Archive(base / "archive", "{year}/{month}/{label}/{date}_{time}_{hash8}{ext}"))
    entries = len(nd.index)
    built = time.perf_counter() - t
    catalog.close()
    size = (state / "neardup.index").stat().st_size
    db_size = (state / "catalog.db").stat().st_size
    proc = subprocess.Popen(draftsync("run", config=cfg), stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)
        (base / "inbox" / "VID_20260601_120000.mp4").write_bytes(real_video_bytes(3.0))
        deadline = time.monotonic() + 300
        signed = None
        while time.monotonic() < deadline and signed is None:
            for sc in (base / "archive").rglob("*.json"):
                if '"perceptual"' in sc.read_text():
                    signed = sc
            time.sleep(1)
        time.sleep(10)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(SECONDS)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        mem = status(proc.pid)
        print(f"neardup idle: {N} signed videos in the catalog ({db_size / 2**20:.0f} MiB; filled in {filled:.0f} s)")
        print(f"  band index built from the catalog in {built:.1f} s ({entries} entries, file {size / 2**20:.0f} MiB)")
        print(f"  a new video signed and compared: {'yes' if signed else 'NO (timed out)'}")
        print(
            f"  idle {SECONDS:.0f} s: daemon CPU {c1 - c0:.2f} s = {100 * (c1 - c0) / (t1 - t0):.2f}% of one core (target < 0.5%)"
        )
        print(f"  daemon RSS {mem.get('VmRSS')} MiB, peak {mem.get('VmHWM')} MiB (target <= 300 MiB at 1,000,000)")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
