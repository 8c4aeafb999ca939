"""integrity: verify finds every missing, changed and unknown file; reindex rebuilds from sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.ingest import Ingestor
from draftsync.integrity import scrub, verify
from tests.conftest import Env, make_video


@pytest.fixture
def filled(env: Env) -> Env:
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    ing = Ingestor(s, cat, Archive(s.archive.root, s.archive.layout))
    for i in range(3):
        v = make_video(env.inbox / f"v{i}.mp4", seed=100 + i)
        assert ing.ingest(str(v), str(env.inbox)).kind == "archived"
    cat.close()
    return env


def test_verify_is_clean_on_a_fresh_archive(filled: Env) -> None:
    r = filled.cli("verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["checked"] == 3 and d["ok"] == 3 and d["problems"] == 0


def test_verify_reports_changed_missing_unknown_and_exits_1(filled: Env) -> None:
    a, b, c = filled.archived_videos()
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0xFF
    a.write_bytes(bytes(data))  # bit rot
    b.unlink()  # lost
    (c.parent / "stranger.mp4").write_bytes(b"who put this here")
    r = filled.cli("verify", "--json")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    rel = lambda p: str(p.relative_to(filled.archive))  # noqa: E731
    assert d["changed"] == [rel(a)] and d["missing"] == [rel(b)]
    assert d["unknown"] == [rel(c.parent / "stranger.mp4")]
    human = filled.cli("verify")
    assert human.returncode == 1 and "changed: " + rel(a) in human.stdout


def test_reindex_rebuilds_the_catalog_from_sidecars_alone(filled: Env) -> None:
    before = filled.status()["archive"]
    s, _ = load(str(filled.config))
    for suffix in ("", "-wal", "-shm"):
        Path(str(s.catalog_path) + suffix).unlink(missing_ok=True)
    assert filled.status()["archive"]["videos"] == 0
    r = filled.cli("reindex", check=True)
    assert "3 videos" in r.stdout
    after = filled.status()["archive"]
    assert (after["videos"], after["bytes"]) == (before["videos"], before["bytes"])
    assert filled.cli("verify").returncode == 0
    # and the sources came back: a rescan does not re-read the inbox
    r = filled.cli("scan", check=True)
    assert r.stdout.startswith("0 archived, 3 already in the archive")


def test_reindex_describes_a_video_whose_sidecar_was_lost(filled: Env) -> None:
    a = filled.archived_videos()[0]
    Path(str(a) + ".json").unlink()
    r = filled.cli("reindex", check=True)
    assert "1 described anew" in r.stdout
    assert Path(str(a) + ".json").is_file()
    assert filled.cli("verify").returncode == 0


def test_scrub_verifies_a_slice_least_recently_verified_first(filled: Env) -> None:
    s, _ = load(str(filled.config))
    cat = Catalog(s.catalog_path)
    arch = Archive(s.archive.root, s.archive.layout)
    first = scrub(arch, cat, 0.34)
    second = scrub(arch, cat, 0.34)
    assert first.checked == second.checked == 2 and first.problems == 0
    assert cat.counts()["never_verified"] == 0  # the second slice took the ones the first skipped


def test_a_video_being_placed_by_the_daemon_is_new_not_unknown_and_counts_add_up(filled: Env) -> None:
    s, _ = load(str(filled.config))
    cat = Catalog(s.catalog_path)
    arch = Archive(s.archive.root, s.archive.layout)
    a = filled.archived_videos()[0]
    placed = a.parent / "placed-just-now.mp4"  # linked and described; its catalog row is a moment away
    placed.write_bytes(b"fresh video")
    Path(f"{placed}.json").write_text("{}")
    stranger = a.parent / "dropped-by-hand.mp4"
    stranger.write_bytes(b"who put this here")
    t = [0.0]
    naps: list[float] = []

    def sleep(dt: float) -> None:
        naps.append(dt)
        t[0] += dt

    r = verify(arch, cat, ingesting=True, clock=lambda: t[0], sleep=sleep)
    rel = lambda p: str(p.relative_to(filled.archive))  # noqa: E731
    assert r.new == [rel(placed)] and r.unknown == [rel(stranger)]
    assert 0 < sum(naps) <= 10.5  # it waited, boundedly, for the catalog row
    assert r.checked == 3 == r.ok + len(r.missing) + len(r.changed) + len(r.no_sidecar) + len(r.unreadable)
    alone = verify(arch, cat, ingesting=False, clock=lambda: 0.0, sleep=lambda _dt: None)
    assert sorted(alone.unknown) == sorted([rel(placed), rel(stranger)]) and alone.new == []


def test_reindex_describes_videos_with_bad_sidecars_anew_and_keeps_the_bad_ones(filled: Env) -> None:
    a, b, _ = filled.archived_videos()
    Path(f"{a}.json").write_text("{ not json")
    sc = json.loads(Path(f"{b}.json").read_text())
    Path(f"{b}.json").write_text(json.dumps(sc | {"hash": "md5:123"}))
    r = filled.cli("reindex")
    assert r.returncode == 1 and "3 videos (2 described anew" in r.stdout
    assert "invalid JSON" in r.stderr and "not a blake3 digest" in r.stderr
    for v in (a, b):
        assert json.loads(Path(f"{v}.json").read_text())["hash"].startswith("blake3:")
    kept = sorted(p.name.split(".json.")[0] for p in (filled.archive / ".draftsync" / "damaged").rglob("*.json.*"))
    assert kept == sorted([a.name, b.name])  # the bad ones are kept for a look, not deleted
    assert filled.cli("verify").returncode == 0


def test_verify_reindex_and_scan_refuse_an_archive_that_is_not_there(filled: Env, tmp_path: Path) -> None:
    filled.archive.rename(tmp_path / "unplugged")
    for cmd in ("verify", "reindex", "scan"):
        r = filled.cli(cmd)
        assert r.returncode == 1 and "does not exist: is its disk mounted?" in r.stderr, r.stderr
    assert not filled.archive.exists()
