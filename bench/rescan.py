"""Rescan cost: start-up reconciliation over a 100,000-file tree already in the catalog vs
`find -printf '%s %T@'`. Targets: <= 3x find, zero bytes re-hashed, peak RSS <= 150 MiB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import median, timed, workdir, write_config

N = int(os.environ.get("BENCH_TREE_FILES", "100000"))


def build_tree(base: Path, cfg: Path) -> None:
    from draftsync.catalog import Catalog, SourceSighting
    from draftsync.config import load

    inbox = base / "inbox"
    per_dir = 500
    paths = []
    for i in range(N):
        d = inbox / f"{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"VID_{i:06d}.mp4"
        p.write_bytes(b"v%d" % i)
        paths.append(p)
    s, _ = load(str(cfg))
    cat = Catalog(s.catalog_path)
    with cat.tx():
        for p in paths:
            st = p.stat()
            cat.record_source(
                SourceSighting(str(p), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, str(inbox), time.time()),
                "blake3:" + "0" * 64, "archived",
            )  # fmt: skip
    cat.close()


def main() -> None:
    base = workdir("rescan")
    cfg = write_config(base, settle=0.1)
    build_tree(base, cfg)
    find_times, ds_times = [], []
    rss = 0
    for _ in range(3):
        find_times.append(timed(f"find '{base}/inbox' -type f -printf '%s %T@\\n' > /dev/null"))
        # Run the CLI in a wrapper that reports its own VmHWM (ru_maxrss of a child would include this
        # parent's peak, which fork+exec carries over).
        wrapper = (
            "import sys; from draftsync.cli import main; rc = main(sys.argv[1:]); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], file=sys.stderr); "
            "sys.exit(rc)"
        )
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", wrapper, "--config", str(cfg), "scan"], capture_output=True,
                             text=True, check=True)  # fmt: skip
        ds_times.append(time.perf_counter() - t)
        rss = max(rss, int(out.stderr.strip().splitlines()[-1]))
        assert out.stdout.startswith(f"0 archived, {N} already"), out.stdout
    f, d = median(find_times), median(ds_times)
    print(f"rescan: {N} files already catalogued")
    print(f"  find -printf      {f:6.2f} s")
    print(f"  draftsync scan    {d:6.2f} s   (whole process: start-up, walk, catalog compare)")
    print(f"  ratio draftsync/find = {d / f:.2f}x  (target <= 3x)")
    print(f"  bytes re-hashed: 0 (scan archived nothing: {out.stdout.strip()!r})")
    print(f"  peak RSS of the scan process: {rss / 1024:.0f} MiB  (target <= 150 MiB)")
    print(json.dumps({"find_s": f, "scan_s": d, "ratio": d / f, "rss_mib": rss / 1024}))


if __name__ == "__main__":
    main()
