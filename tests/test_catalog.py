"""catalog: private from creation, migrations in order with gaps allowed."""

from __future__ import annotations

import stat
from pathlib import Path

from draftsync import catalog as cat_mod
from draftsync.catalog import Catalog


def test_a_new_state_dir_and_catalog_are_private(tmp_path: Path) -> None:
    c = Catalog(tmp_path / "state" / "catalog.db")
    c.set_meta("x", "y")
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    for name in ("catalog.db", "catalog.db-wal"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600, name


def test_migrations_apply_in_order_and_tolerate_gaps(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Catalog(tmp_path / "c.db").close()
    later = dict(cat_mod._MIGRATIONS)
    later[cat_mod.SCHEMA_VERSION + 3] = "CREATE TABLE later_feature(x INTEGER)"
    monkeypatch.setattr(cat_mod, "_MIGRATIONS", later)
    monkeypatch.setattr(cat_mod, "SCHEMA_VERSION", max(later))
    c = Catalog(tmp_path / "c.db")
    assert c.get_meta("schema_version") == str(max(later))
    assert c._q("SELECT name FROM sqlite_master WHERE name='later_feature'")


def test_a_commit_that_does_not_wait_for_the_disk_leaves_the_next_one_durable(tmp_path: Path) -> None:
    from draftsync.catalog import SourceSighting

    c = Catalog(tmp_path / "catalog.db")
    with c.tx(durable=False) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: this commit only
    c.record_source(SourceSighting("/in/a.mp4", 1, 2, 3, 4, "/in"), None, "empty", durable=False)
    assert c._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for push state and the rest
    assert [r[0] for r in c.sources_under("/in")] == ["/in/a.mp4"]
    c.close()


def test_sources_are_found_by_hash_and_inode_through_small_indexes(tmp_path: Path) -> None:
    from draftsync.catalog import SourceSighting

    c = Catalog(tmp_path / "catalog.db")
    h = "blake3:" + "ab" * 32
    with c.tx():
        for i in range(50):
            c.record_source(
                SourceSighting(f"/in/{i}.mp4", 10, 20, 1000 + i, 7, "/in"), h if i < 2 else None, "archived"
            )
    assert c.sources_of(h) == ["/in/0.mp4", "/in/1.mp4"] and [s.path for s in c.sightings_of(h)] == c.sources_of(h)
    assert c.hash_by_identity(7, 1001, 10, 20) == h
    plans = [
        " ".join(str(r[3]) for r in c._db.execute("EXPLAIN QUERY PLAN " + q, a))
        for q, a in (("SELECT path FROM sources WHERE " + cat_mod._BY_HASH, (h, h)),
                     ("SELECT hash FROM sources WHERE dev=? AND inode=? AND size=? AND mtime_ns=?", (7, 1001, 10, 20)))
    ]  # fmt: skip
    assert "sources_hash16" in plans[0] and "sources_inode" in plans[1], plans
    names = {r[0] for r in c._db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not {"sources_hash", "sources_identity"} & names  # the indexes that copied whole values are gone
    c.close()


def test_a_cleared_upload_url_leaves_no_copy_of_its_token_in_the_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "catalog.db"
    c = Catalog(path)
    token = "upload_token=SECRETv2c0ffee"
    url = f"https://open-upload.tiktokapis.com/upload/?{token}"
    c.save_push("blake3:" + "a" * 64, {"state": "uploading", "upload_url": url, "reason": "x" * 40})
    c.save_push("blake3:" + "a" * 64, {"state": "processing", "upload_url": None})
    c._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    leftovers = [p.name for p in path.parent.iterdir() if p.is_file() and token.encode() in p.read_bytes()]
    assert leftovers == []
