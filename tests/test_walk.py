"""walk: every wanted file with its lstat, in the order SQLite sorts paths; the rescan's merge with the
catalog (new, changed, unchanged, gone), and what it leaves alone."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from draftsync.catalog import Catalog, SourceSighting
from draftsync.config import VIDEO_EXTENSIONS
from draftsync.daemon import reconcile
from draftsync.settle import _TEMP, IgnoreRules, Settler, is_temp_name
from draftsync.walk import walk
from tests.conftest import BOUND_BY_PERMISSIONS

RULES = IgnoreRules(frozenset(VIDEO_EXTENSIONS), ())

# Names whose byte order, code-point order and "folder contents after the folder" order disagree if the
# walk gets it wrong: '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f), '0' and 'A' after it.
TRICKY = [
    "a.mp4", "a-b/x.mp4", "a/b.mp4", "a/c/d.mp4", "a0.mp4", "a.b/y.mp4", "A.mp4", "Z/z.mp4", "é.mp4",
    "ü/ß.mp4", "日本/動画.mp4", "a b/c.mp4", "ab.mp4", "a/b/c/d/e.mp4", "~x.mp4", "z.MP4",
]  # fmt: skip


def _tree(root: Path, rels: list[str]) -> list[str]:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    return [str(root / rel) for rel in rels]


def test_the_walk_comes_out_in_the_order_sqlite_sorts_the_same_paths(tmp_path: Path) -> None:
    paths = _tree(tmp_path, TRICKY)
    got = [p for p, _ in walk(str(tmp_path), RULES)]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t(p TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO t VALUES(?)", [(p,) for p in paths])
    assert got == [r[0] for r in db.execute("SELECT p FROM t ORDER BY p")] == sorted(paths)


def test_the_walk_gives_each_file_its_own_lstat_and_leaves_out_what_is_not_wanted(tmp_path: Path) -> None:
    keep = _tree(tmp_path, ["in/VID_1.mp4", "in/deep/VID_2.mov"])
    _tree(tmp_path, ["in/.hidden/x.mp4", "in/@eaDir/x.mp4", "in/notes.txt", "in/.part.mp4", "in/x.mp4.part"])
    os.symlink(tmp_path / "in" / "VID_1.mp4", tmp_path / "in" / "link.mp4")
    os.symlink(tmp_path / "in" / "deep", tmp_path / "in" / "linked-folder")
    got = list(walk(str(tmp_path / "in") + "/", RULES))
    assert [p for p, _ in got] == [keep[0], keep[1]]
    for p, st in got:
        assert (st.st_ino, st.st_size, st.st_mtime_ns) == (os.lstat(p).st_ino, os.lstat(p).st_size,
                                                            os.lstat(p).st_mtime_ns)  # fmt: skip
    assert [p for p, _ in walk(str(tmp_path / "in"), RULES, recursive=False)] == [keep[0]]
    assert list(walk(str(tmp_path / "nope"), RULES, unreadable := [])) == [] and unreadable == []  # type: ignore[arg-type]


def test_the_walk_goes_1000_folders_deep_without_recursion(tmp_path: Path) -> None:
    d = top = str(tmp_path / "deep")
    os.mkdir(top)
    try:
        for _ in range(1000):
            d += "/d"
            os.mkdir(d)
        with open(d + "/deep.mp4", "wb") as f:
            f.write(b"v")
        assert [p for p, _ in walk(top, RULES)] == [d + "/deep.mp4"]
    finally:
        os.unlink(d + "/deep.mp4")
        while d != top:  # rmtree recurses
            os.rmdir(d)
            d = os.path.dirname(d)


def test_the_quick_temp_name_test_agrees_with_the_patterns() -> None:
    # The cheap pre-check in is_temp_name must never change an answer of the regex alone.
    names = ["VID.mp4", ".x.mp4", "~syncthing~a.tmp", "a.partial", "a.part", "a.!sync", "a.crdownload", "a.tmp",
             "a.temp", "a.download", "a~", "a.tmp\n", "", ".~lock", "a.mov", "a.3gp", "a.hevc", "a.mkv"]  # fmt: skip
    rng = random.Random(7)
    alphabet = list("ab.~!ltcdpsyncthgirowm4\n_")
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    assert [n for n in names if is_temp_name(n) != (_TEMP.search(n) is not None)] == []


# --- the rescan's merge -------------------------------------------------------------------------------


def _catalogue(cat: Catalog, root: Path, path: Path, *, ctime: bool = True, state: str = "archived") -> None:
    st = os.lstat(path)
    sighting = SourceSighting(str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, str(root), time.time(),
                              st.st_ctime_ns if ctime else None)  # fmt: skip
    cat.record_source(sighting, "blake3:" + "0" * 64 if state == "archived" else None, state)


def test_a_rescan_hands_over_only_what_is_new_or_changed_and_names_what_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "in"
    same, grown, touched, rewritten, old_row, new, gone, odd = _tree(root, [
        "a/same.mp4", "a/grown.mp4", "b/touched.mp4", "b/rewritten.mp4", "c/old-row.mp4", "c/new.mp4",
        "c/gone.mp4", "odd.mp4"])  # fmt: skip
    odd_name = os.fsdecode(os.fsencode(str(root)) + b"/Caf\xe9.mp4")
    os.rename(odd, odd_name)
    cat = Catalog(tmp_path / "state" / "catalog.db")
    for p in (same, grown, touched, rewritten, gone, odd_name):
        _catalogue(cat, root, Path(p))
    _catalogue(cat, root, Path(old_row), ctime=False)  # a row rebuilt from an old sidecar
    outside = tmp_path / "in-other" / "x.mp4"  # shares the prefix "in", not the folder
    _tree(tmp_path, ["in-other/x.mp4"])
    _catalogue(cat, tmp_path / "in-other", outside)
    with open(grown, "ab") as f:
        f.write(b"more")
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    st = os.stat(rewritten)
    Path(rewritten).write_bytes(b"x" * st.st_size)  # same size, mtime put back: only the ctime tells
    os.utime(rewritten, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(gone)
    settler = Settler(5.0, rules=RULES)
    r = reconcile(str(root), RULES, cat, settler, True)
    assert r.found == 7 and r.changed == 4 and r.gone == [gone]
    assert sorted(h.path for h in settler.held()) == sorted([grown, touched, rewritten, new])
    # The row without a ctime was found unchanged otherwise and has learnt its ctime.
    assert [row[5] for row in cat.sources_under(str(root)) if row[0] == old_row] == [os.lstat(old_row).st_ctime_ns]
    assert set(cat.odd_sources_under(str(root))) == {odd_name}
    cat.close()


def test_a_rescan_leaves_a_failing_file_to_its_back_off(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (bad,) = _tree(root, ["bad.mp4"])
    cat = Catalog(tmp_path / "state" / "catalog.db")
    cat.record_failure(bad, str(root), "cannot read it")
    settler = Settler(5.0, rules=RULES)
    assert reconcile(str(root), RULES, cat, settler, True, waiting={bad: (1e12, 1)}).changed == 0
    assert len(settler) == 0
    # Without a retry scheduled (the daemon just started), the walk hands it over.
    assert reconcile(str(root), RULES, cat, settler, True).changed == 1
    cat.close()


def test_a_file_in_a_folder_that_cannot_be_read_is_not_gone(tmp_path: Path) -> None:
    # Permissions mean nothing to root: the walk runs as root without the powers to ignore them.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"draftsync-walk-{os.getpid()}"
    (base / "in" / "private").mkdir(parents=True)
    try:
        (base / "in" / "private" / "v.mp4").write_bytes(b"v")
        (base / "in" / "open.mp4").write_bytes(b"o")
        cat = Catalog(base / "state" / "catalog.db")
        for p in ("private/v.mp4", "open.mp4"):
            _catalogue(cat, base / "in", base / "in" / p)
        cat.close()
        os.chmod(base / "in" / "private", 0o000)
        code = textwrap.dedent(f"""
            from draftsync.catalog import Catalog
            from draftsync.daemon import reconcile
            from draftsync.settle import IgnoreRules, Settler
            rules = IgnoreRules(frozenset([".mp4"]), ())
            unreadable = []
            r = reconcile({str(base / "in")!r}, rules, Catalog(__import__("pathlib").Path({str(base / "state" / "catalog.db")!r})),
                          Settler(5.0, rules=rules), True, unreadable)
            print(r.found, r.gone, unreadable)
        """)  # fmt: skip
        out = subprocess.run([*BOUND_BY_PERMISSIONS, sys.executable, "-c", code],
                             capture_output=True, text=True, cwd=str(Path(__file__).parent.parent))  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["1", "[]", f"['{base / 'in' / 'private'}']"]
    finally:
        os.chmod(base / "in" / "private", 0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


@pytest.mark.parametrize("rows", [0, 3000])
def test_the_catalog_streams_a_root_s_rows_in_path_order_without_others(tmp_path: Path, rows: int) -> None:
    cat = Catalog(tmp_path / "catalog.db")
    with cat.tx():
        for i in range(rows):
            cat.record_source(SourceSighting(f"/r/{i % 7}/{i}.mp4", i, i, i, 1, "/r"), None, "archived")
        cat.record_source(SourceSighting("/r0/x.mp4", 1, 1, 1, 1, "/r0"), None, "archived")
        cat.record_source(SourceSighting("/q/x.mp4", 1, 1, 1, 1, "/q"), None, "archived")
    got = [r[0] for r in cat.sources_under("/r")]
    assert got == sorted(f"/r/{i % 7}/{i}.mp4" for i in range(rows))
    cat.close()


def test_folders_unchanged_since_the_last_walk_are_not_listed_again(tmp_path: Path) -> None:
    from draftsync.walk import Folders

    root = tmp_path / "in"
    a1, b1, _ = _tree(root, ["a/one.mp4", "b/two.mp4", "b/c/three.mp4"])
    cat = Catalog(tmp_path / "state" / "catalog.db")
    for p in Path(root).rglob("*.mp4"):
        _catalogue(cat, root, p)
    first = Folders(started=time.time_ns())
    r = reconcile(str(root), RULES, cat, Settler(5.0, rules=RULES), True, folders=first)
    assert (r.found, r.changed, first.skipped) == (3, 0, set())
    assert set(first.found) == {str(root), str(root / "a"), str(root / "b"), str(root / "b" / "c")}

    # Folders changed more than two seconds before the last walk are trusted: nothing is listed but the
    # folder that gained a file. A rewrite in place moves no folder: the watcher's events must see it.
    Path(a1).write_bytes(b"rewritten in place")
    (root / "b" / "new.mp4").write_bytes(b"new")
    second = Folders(known=first.found, settled_before=time.time_ns() + 10**9)
    settler = Settler(5.0, rules=RULES)
    r = reconcile(str(root), RULES, cat, settler, True, folders=second)
    assert second.skipped == {str(root), str(root / "a"), str(root / "b" / "c")}
    assert (r.found, r.gone) == (4, []) and [h.path for h in settler.held()] == [str(root / "b" / "new.mp4")]

    # A folder whose times are not older than the last look is listed again (a coarse clock may not have
    # moved), and without `folders` everything is.
    third = Folders(known=second.found, settled_before=0)
    r = reconcile(str(root), RULES, cat, Settler(5.0, rules=RULES), True, folders=third)
    assert third.skipped == set() and r.changed == 2  # one.mp4 rewritten, new.mp4 not catalogued
    os.unlink(b1)
    r = reconcile(str(root), RULES, cat, Settler(5.0, rules=RULES), True)
    assert r.gone == [b1]
    cat.close()
