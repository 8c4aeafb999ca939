"""integrity: verify finds every missing, changed and unknown file; reindex rebuilds from sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.ingest import Ingestor
from draftsync.integrity import scrub
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
