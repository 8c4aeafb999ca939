"""The catalog under faults: names that are not UTF-8, times beyond SQLite's integer, a full state disk and
a damaged file are told in words (StateFull, CatalogCorrupt) and lose nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from draftsync.catalog import Catalog, SourceSighting
from draftsync.errors import CatalogCorrupt

BIG = 10_413_792_000 * 10**9 + 7  # 2300-01-01 in ns: more than a 64-bit integer holds


def test_paths_that_are_not_utf8_and_huge_times_round_trip(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.db")
    path = os.fsdecode(b"/srv/in/Caf\xe9 \xff.mp4")
    s = SourceSighting(path, 10, BIG, 5, 1, "/srv/in", 1.0, BIG + 1)
    cat.record_source(s, "blake3:" + "a" * 64, "archived")
    assert cat.source_unchanged(path, 10, BIG, 5, BIG + 1)
    assert not cat.source_unchanged(path, 10, BIG, 5, BIG + 2)  # ctime moved: a rewrite in place
    assert cat.known_paths()[path] == (10, BIG, 5, "archived", BIG + 1)
    assert cat.hash_by_identity(1, 5, 10, BIG) == "blake3:" + "a" * 64
    assert [x.path for x in cat.sightings_of("blake3:" + "a" * 64)] == [path]
    assert cat.record_failure(path + "x", "/srv/in", "cannot read \udce9", "unreadable") == 1
    assert cat.failures()[0]["path"].endswith("\\xff.mp4x") and cat.failures()[0]["kind"] == "unreadable"
    cat.mark_gone([path])
    assert cat.known_paths()[path][3] == "gone"


def test_a_damaged_catalog_is_named_with_what_to_do(tmp_path: Path) -> None:
    p = tmp_path / "catalog.db"
    p.write_bytes(b"garbage " * 1000)
    with pytest.raises(CatalogCorrupt, match="draftsync reindex"):
        Catalog(p)


FULL_DISK = """
import sys
from pathlib import Path
from draftsync.catalog import Catalog
from draftsync.errors import StateFull
p = Path(sys.argv[1]) / "catalog.db"
daemon = Catalog(p)  # the daemon holds the catalog open while the disk fills
with open(Path(sys.argv[1]) / "ballast", "wb") as f:
    try:
        while True:
            f.write(b"\\0" * 65536)
            f.flush()
    except OSError:
        pass
cat = Catalog(p)  # status opens and reads an up-to-date catalog without writing
print("videos", cat.counts()["videos"])
try:
    for i in range(10000):
        daemon.log_event("info", "x", "y" * 1000)
    print("no error")
except StateFull as e:
    print("StateFull", e)
"""


def test_a_full_state_disk_is_state_full_and_reading_still_works(tmp_path: Path) -> None:
    mnt = tmp_path / "state"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=2m tmpfs "$1" && exec "$2" -c "$3" "$1"'
    for prefix in (["sh", "-c"], ["unshare", "-rm", "sh", "-c"]):
        r = subprocess.run([*prefix, script, "sh", str(mnt), sys.executable, FULL_DISK], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        if r.returncode == 0:
            break
    else:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    assert r.stdout.startswith("videos 0\nStateFull the state disk is full"), r.stdout + r.stderr
