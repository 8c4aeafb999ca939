"""bandindex: candidates by shared bands, recent additions in memory, a file that survives restarts and
is ignored (to be rebuilt) when it is stale, foreign or damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from draftsync.bandindex import BandIndex


def keys(seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 2**63, n, dtype=np.uint64)


def noisy(k: np.ndarray, seed: int = 0) -> np.ndarray:
    flips = np.uint64(1) << np.random.default_rng(seed).integers(0, 63, len(k)).astype(np.uint64)
    return k ^ flips


def filled(path: Path | None, n: int = 500) -> BandIndex:
    idx = BandIndex(path, "gen-a")
    for i in range(1, n + 1):
        idx.add(i, keys(i))
    return idx


def test_a_noisy_copy_finds_its_original_first() -> None:
    idx = filled(None)
    found = idx.query(noisy(keys(7)))
    assert found[0][0] == 7 and found[0][1] >= 16
    assert all(owner != 7 for owner, _ in found[1:])
    assert idx.query(keys(10_000)) == []  # unrelated hashes share too few bands


def test_the_file_survives_a_restart_and_new_additions_stay_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "neardup.index"
    idx = filled(path)
    idx.merge()
    assert path.exists() and idx.covered == 500
    idx.add(501, keys(501))  # after the merge: in memory only
    idx.close()
    again = BandIndex(path, "gen-a")
    assert again.covered == 500 and len(again) == 500 * 16
    assert again.query(noisy(keys(123)))[0][0] == 123
    assert again.query(keys(501)) == []  # the caller re-adds what the catalog has beyond `covered`
    again.add(501, keys(501))
    assert again.query(keys(501))[0][0] == 501
    again.merge()
    assert BandIndex(path, "gen-a").query(keys(501))[0][0] == 501


def test_a_file_from_another_catalog_generation_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "neardup.index"
    filled(path).merge()
    other = BandIndex(path, "gen-b")  # e.g. after a reindex renumbered the signatures
    assert other.covered == 0 and len(other) == 0 and other.query(keys(3)) == []


def test_a_damaged_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "neardup.index"
    filled(path).merge()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    idx = BandIndex(path, "gen-a")
    assert idx.covered == 0 and idx.query(keys(3)) == []
    path.write_bytes(b"not an index")
    assert BandIndex(path, "gen-a").covered == 0


def test_rebuild_replaces_everything(tmp_path: Path) -> None:
    path = tmp_path / "neardup.index"
    idx = filled(path, 50)
    idx.merge()
    idx.rebuild((i, keys(1000 + i)) for i in range(1, 21))
    assert idx.covered == 20 and len(idx) == 20 * 16
    assert idx.query(keys(5)) == [] and idx.query(keys(1005))[0][0] == 5


def test_a_crowded_bucket_is_skipped() -> None:
    """Flat gradients give everybody the same band values: such a bucket would name every signature."""
    idx = BandIndex()
    common = np.full(4, 0x0000_0000_0000_0000 | 1, dtype=np.uint64)
    for i in range(1, 300):
        idx.add(i, common)
    assert idx.query(common, crowded=100) == []
    assert len(idx.query(common, crowded=5000, limit=500)) == 299
