"""Rescan cost: `draftsync scan` over a tree whose every file is already in the catalog (nothing to do but
find that out) vs `find -printf '%s %T@'` over the same tree, interleaved runs.

Prints, per repetition and as medians: wall time of both and their ratio, the CPU seconds of both, the
scan's peak RSS (VmHWM of the scan process itself), the catalog's bytes per file, and, for scale, an
in-process bare `os.scandir` + `DirEntry.stat` walk (what Python costs before any work of ours).
Targets: <= 2x find at 100,000 and 1,000,000 files, peak RSS <= 150 MiB at 100k and <= 200 MiB at 1M,
zero bytes re-hashed (the scan archives nothing).

BENCH_TREE_FILES (default 100000) sets the size; the tree and its catalog are kept under
$DRAFTSYNC_BENCH_DIR/draftsync-bench-rescan-N and reused by later runs of the same size.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import load_average, median, precompile, write_config

N = int(os.environ.get("BENCH_TREE_FILES", "100000"))
REPS = int(os.environ.get("BENCH_REPS", "5"))
PER_DIR = 500


def base_dir() -> Path:
    import tempfile

    return Path(os.environ.get("DRAFTSYNC_BENCH_DIR") or tempfile.gettempdir()) / f"draftsync-bench-rescan-{N}"


def build_tree(base: Path, cfg: Path) -> None:
    """N small files in folders of 500, each catalogued as archived with its real (size, mtime, inode,
    ctime): what the catalog holds after they were ingested."""
    from draftsync.catalog import Catalog, SourceSighting
    from draftsync.config import load

    inbox = base / "inbox"
    s, _ = load(str(cfg))
    cat = Catalog(s.catalog_path)
    now = time.time()
    with cat.tx():
        for i in range(N):
            d = inbox / f"{i // PER_DIR:04d}"
            if i % PER_DIR == 0:
                d.mkdir(parents=True, exist_ok=True)
            p = d / f"VID_{i:07d}.mp4"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"v%d" % i)
            os.close(fd)
            st = os.lstat(p)
            digest = f"blake3:{i:064x}"
            cat.record_source(SourceSighting(str(p), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, str(inbox), now,
                                             st.st_ctime_ns), digest, "archived")  # fmt: skip
    cat.close()


def prepared() -> tuple[Path, Path]:
    base = base_dir()
    cfg = base / "draftsync.toml"
    if (base / ".built").exists():
        return base, cfg
    import shutil

    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    cfg = write_config(base, settle=0.1)
    t = time.perf_counter()
    build_tree(base, cfg)
    (base / ".built").write_text(str(N))
    print(f"built {N} files and their catalog rows in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return base, cfg


def catalog_bytes(db: Path) -> int:
    """Bytes in use in the catalog (pages not on the free list: a migration that dropped an index leaves its
    pages free until a VACUUM)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        pages, free, size = (
            con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
    finally:
        con.close()
    return int((pages - free) * size)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str] | str, **kw: object) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    c, t = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t, children_cpu() - c, out


def bare_walk(root: str) -> float:
    t = time.perf_counter()
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    e.stat(follow_symlinks=False)
    return time.perf_counter() - t


def periodic(cfg: Path) -> tuple[float, float, float]:
    """The daemon's periodic rescan, in this process: a full walk and merge, then one that skips folders
    unchanged since the last (what a healthy inotify root does between full walks). Returns both times and
    the time of one find."""
    from draftsync.catalog import Catalog
    from draftsync.config import load
    from draftsync.daemon import ignore_rules, reconcile
    from draftsync.settle import Settler
    from draftsync.walk import Folders

    s, _ = load(str(cfg))
    rules, root = ignore_rules(s), str(s.watch.paths[0])
    cat = Catalog(s.catalog_path)
    first = Folders(started=time.time_ns())
    t = time.perf_counter()
    full = reconcile(root, rules, cat, Settler(5.0, rules=rules), True, folders=first)
    full_s = time.perf_counter() - t
    # The tree was built before this walk started, so every folder is trusted (settled_before).
    second = Folders(known=first.found, settled_before=first.started)
    t = time.perf_counter()
    again = reconcile(root, rules, cat, Settler(5.0, rules=rules), True, folders=second)
    skip_s = time.perf_counter() - t
    cat.close()
    assert full.found == again.found == N and full.changed == again.changed == 0, (full, again)
    return full_s, skip_s, run(f"find '{Path(root)}' -type f -printf '%s %T@\\n' > /dev/null")[0]


# The CLI in a wrapper that reports its own VmHWM (ru_maxrss of a child would include this parent's peak,
# which fork+exec carries over).
WRAPPER = (
    "import sys; from draftsync.cli import main; rc = main(sys.argv[1:]); "
    "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], file=sys.stderr); "
    "sys.exit(rc)"
)


def main() -> None:
    precompile()
    base, cfg = prepared()
    inbox = str(base / "inbox")
    find_cmd = f"find '{inbox}' -type f -printf '%s %T@\\n' > /dev/null"
    run([sys.executable, "-c", WRAPPER, "--config", str(cfg), "scan"])  # warm the caches once
    rows = []
    for i in range(REPS):
        fw, fc, _ = run(find_cmd)
        sw, sc, out = run([sys.executable, "-c", WRAPPER, "--config", str(cfg), "scan"])
        bw = bare_walk(inbox)
        rss = int(out.stderr.strip().splitlines()[-1]) / 1024
        assert out.stdout.startswith(f"0 archived, {N} already"), out.stdout
        rows.append({"find_s": fw, "find_cpu": fc, "scan_s": sw, "scan_cpu": sc, "bare_walk_s": bw, "rss_mib": rss,
                     "load": load_average()})  # fmt: skip
        print(f"  rep {i + 1}: find {fw:.3f} s ({fc:.3f} CPU), scan {sw:.3f} s ({sc:.3f} CPU) = {sw / fw:.2f}x, "
              f"bare walk {bw:.3f} s = {bw / fw:.2f}x, RSS {rss:.0f} MiB, load {load_average():.1f}")  # fmt: skip
    db_bytes = catalog_bytes(base / "state" / "catalog.db")
    f, s = median([r["find_s"] for r in rows]), median([r["scan_s"] for r in rows])
    fc, sc = median([r["find_cpu"] for r in rows]), median([r["scan_cpu"] for r in rows])
    ratios = sorted(r["scan_s"] / r["find_s"] for r in rows)
    rss = max(r["rss_mib"] for r in rows)
    print(f"rescan: {N} files already catalogued, {REPS} interleaved repetitions")
    print(f"  find -printf      {f:7.3f} s  ({fc:.3f} s CPU)")
    print(f"  draftsync scan    {s:7.3f} s  ({sc:.3f} s CPU; whole process: start-up, walk, catalog merge)")
    print(f"  ratio scan/find   {s / f:.2f}x wall (per run {ratios[0]:.2f}-{ratios[-1]:.2f}x), {sc / fc:.2f}x CPU")
    print(f"  bare scandir+stat walk in Python: {median([r['bare_walk_s'] for r in rows]) / f:.2f}x find")
    print(f"  peak RSS {rss:.0f} MiB; catalog {db_bytes / N:.0f} bytes per file; bytes re-hashed: 0 (nothing archived)")
    full_s, skip_s, find_s = periodic(cfg)
    print(f"  daemon's periodic rescan (in process): full walk and merge {full_s:.3f} s = {full_s / find_s:.2f}x find, "
          f"skipping unchanged folders {skip_s:.3f} s = {skip_s / find_s:.2f}x find")  # fmt: skip
    print(json.dumps({"files": N, "find_s": f, "scan_s": s, "ratio": s / f, "cpu_ratio": sc / fc, "rss_mib": rss,
                      "catalog_bytes_per_file": db_bytes / N, "periodic_full": full_s / find_s,
                      "periodic_skipping": skip_s / find_s}))  # fmt: skip


if __name__ == "__main__":
    main()
