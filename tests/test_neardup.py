"""neardup: what counts as the same clip (a table), groups kept with one sidecar write per new member,
similar takes listed apart and never a reason to skip a push, exports by their end card, the signer
driven by archived videos (and quiet when nothing happens), and reindex restoring it all."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from draftsync.archive import Archive
from draftsync.audioprint import UNIT, AudioPrint
from draftsync.catalog import _MIGRATIONS, Catalog
from draftsync.config import load
from draftsync.neardup import MAX_VERIFY, NearDups, Signer, judge
from draftsync.perceptual import VERSION, Signature
from tests import corpus
from tests.conftest import Env, b3

# --- the decision, as a table ---------------------------------------------------------------------------

FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


def pictures(seed: int, seconds: float = 6.0, step: float = 0.125) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0, seconds, step, dtype=np.float32)
    return t, np.random.default_rng(seed).integers(1, 2**63, len(t), dtype=np.uint64)


def sound(seed: int, seconds: float = 6.0, start: float = 0.0) -> AudioPrint:
    """A landmark track: `seed` is the sound, `start` where this copy begins in it."""
    n = int(seconds * 30)
    rng = np.random.default_rng(seed)
    t_all = np.sort(rng.integers(0, int(60 / UNIT), 3000))
    h_all = rng.integers(1, 2**23, 3000).astype(np.uint32)
    lo, hi = int(start / UNIT), int((start + seconds) / UNIT)
    keep = (t_all >= lo) & (t_all < hi)
    return AudioPrint(h_all[keep][: n * 10], (t_all[keep] - lo).astype(np.uint32)[: n * 10], [(0.0, seconds)])


def make(seed: int = 1, *, seconds: float = 6.0, start: float = 0.0, aspect: float = 16 / 9, flip: float = 0.0,
         audio: int | None = None, audio_start: float | None = None) -> Signature:  # fmt: skip
    """A signature showing `seconds` of picture track `seed` from `start`, a share `flip` of frames other."""
    t, h = pictures(seed, seconds=60.0)
    keep = (t >= start - 1e-6) & (t < start + seconds - 1e-6)
    times, hashes = t[keep] - np.float32(start), h[keep].copy()
    rng = np.random.default_rng(seed + 99)
    other = rng.random(len(hashes)) < flip
    hashes[other] = rng.integers(1, 2**63, int(other.sum()), dtype=np.uint64)
    au = sound(audio, seconds, audio_start if audio_start is not None else start) if audio is not None else None
    colours = np.full(len(hashes), (128 << 8) | 128, np.uint16)
    return Signature(times, hashes, np.full(len(hashes), FULL), colours, seconds, aspect, au)


CASES = {
    "a copy with its sound": (make(audio=5), make(audio=5), "same"),
    "a trimmed copy with its sound": (make(audio=5), make(start=1.0, seconds=5.0, audio=5), "same"),
    "a silent copy": (make(), make(), "same"),
    "a copy, one side silent": (make(audio=5), make(), "same"),
    "another take: same pictures, other sound": (make(audio=5), make(audio=6), "similar"),
    "a silent look-alike (a tenth of the frames differ)": (make(), make(flip=0.1), "similar"),
    "portrait vs landscape": (make(), make(aspect=9 / 16), "similar"),
    "a 6 s excerpt of a minute": (make(seconds=60.0), make(start=20.0), "similar"),
    "unrelated": (make(1), make(2), None),
    "unrelated pictures, same sound": (make(1, audio=5), make(2, audio=5), None),
}


@pytest.mark.parametrize(("a", "b", "kind"), list(CASES.values()), ids=list(CASES))
def test_judge(a: Signature, b: Signature, kind: str | None) -> None:
    v = judge(a, b)
    assert v.kind == kind, v
    assert judge(b, a).kind == kind


# --- groups and similar takes in the catalog ------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "state" / "catalog.db")


def test_a_bridging_video_merges_groups_and_near_dupes_of_names_the_group(catalog: Catalog) -> None:
    catalog.join_group("a", "a", None, None, None)
    catalog.join_group("b", "a", "a", 0.9, None)
    catalog.join_group("c", "c", None, None, None)
    catalog.join_group("d", "c", "c", 0.95, 0.5)
    catalog.merge_groups("a", "c")  # "e" matched both
    catalog.join_group("e", "a", "b", 0.97, None)
    assert {h for h, _ in catalog.near_dupes_of("e")} == {"a", "b", "c", "d"}
    assert dict(catalog.near_dupes_of("b"))["a"] == 0.9  # what joined them
    catalog.add_similar("a", "x", 0.9, 0.01)
    assert catalog.near_dupes_of("x") == [] and catalog.similar_of("x") == [("a", 0.9, 0.01)]
    assert catalog.dupe_groups() == ["a"]


def test_migration_8_drops_the_pairwise_links_and_old_origins(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    for v in (1, 2, 3, 4):
        db.executescript(_MIGRATIONS[v].replace("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);", ""))
    db.execute("INSERT INTO meta VALUES('schema_version', '4')")
    db.execute(
        "INSERT INTO videos(hash, size, archive_path, first_seen, archived_at, origin) VALUES('h', 1, 'a.mp4', 0, 0, 'tiktok-export')"
    )
    db.execute("INSERT INTO near_dupes VALUES('h', 'g', 1.0)")
    db.execute("INSERT INTO signatures VALUES('h', 1, '{}', NULL, 0)")
    db.commit()
    db.close()
    c = Catalog(path)
    assert c.origin("h") is None and c.near_dupes_of("h") == []
    assert c.signature_counts(VERSION) == {"videos": 1, "signed": 0, "unsignable": 0}
    assert c.neardup_generation()


# --- signing in an archive: one sidecar write per new member ---------------------------------------------


class CountingArchive(Archive):
    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.writes: list[str] = []

    def update_sidecar(self, rel: str, fields: dict[str, Any]) -> None:
        self.writes.append(rel)
        super().update_sidecar(rel, fields)


def lookalikes(env: Env, n: int) -> list[Path]:
    """`n` copies of one short clip, each encoded a little differently (all different files)."""
    frames = list(corpus.clip_frames(7, seconds=2, size=(160, 90)))
    out = []
    for i in range(n):
        g = [f.copy() for f in frames]
        for f in g:
            f[0, 0, 0] = i
        p = corpus.encode(env.base / "gen" / f"VID_2026050{1 + i % 9}_12{i:04d}.mp4", g,
                          enc=corpus.Enc(crf=18 + i % 10))  # fmt: skip
        dest = env.inbox / p.name
        dest.write_bytes(p.read_bytes())
        os.utime(dest, (time.time() - 1000 + i, time.time() - 1000 + i))
        out.append(dest)
    return out


def test_each_new_member_costs_one_sidecar_write_and_a_bounded_comparison(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import draftsync.neardup as nd

    files = lookalikes(env, 24)
    assert env.cli("scan", "--no-compare").returncode == 0
    s, _ = load(str(env.config))
    catalog = Catalog(s.catalog_path)
    archive = CountingArchive(s.archive.root, s.archive.layout)
    judged: list[int] = []
    real = nd.judge
    monkeypatch.setattr(nd, "judge", lambda a, b: judged.append(1) or real(a, b))
    n = NearDups(catalog, archive)
    per_video = []
    for v in catalog.unsigned(VERSION, 100):
        before, j = len(archive.writes), len(judged)
        n.sign(v)
        per_video.append((len(archive.writes) - before, len(judged) - j))
    assert all(w == 1 for w, _ in per_video), per_video
    assert all(j <= MAX_VERIFY for _, j in per_video) and max(j for _, j in per_video[-5:]) <= 2  # groups collapse
    (grp,) = catalog.dupe_groups()
    assert len(catalog.group_members(grp)) == len(files)
    first = catalog.group_members(grp)[0]["hash"]
    assert len(catalog.near_dupes_of(first)) == len(files) - 1
    # the sidecar of a later member names its group and best match; earlier sidecars were left alone
    last = json.loads(
        (s.archive.root / catalog.video(catalog.group_members(grp)[-1]["hash"]).archive_path)
        .with_suffix(".mp4.json")
        .read_text()
    )  # type: ignore[union-attr]
    assert last["near_duplicate"]["group"] == grp and last["near_duplicate"]["of"] in {
        r["hash"] for r in catalog.group_members(grp)
    }
    catalog.close()


def test_the_index_survives_a_restart_and_is_rebuilt_after_a_reindex(env: Env) -> None:
    lookalikes(env, 3)
    assert env.cli("scan").returncode == 0
    s, _ = load(str(env.config))
    index_file = s.catalog_path.with_name("neardup.index")
    catalog = Catalog(s.catalog_path)
    n = NearDups(catalog, Archive(s.archive.root, s.archive.layout))
    assert len(n.index) > 0  # rebuilt from the catalog on first use, or read from the file
    n.index.merge()
    assert index_file.exists()
    catalog.close()
    assert env.cli("reindex").returncode == 0  # new signature ids: the old file must not be trusted
    catalog = Catalog(s.catalog_path)
    n = NearDups(catalog, Archive(s.archive.root, s.archive.layout))
    ids = [sid for sid, _ in catalog.iter_index_keys(VERSION)]
    keys = next(iter(catalog.iter_index_keys(VERSION)))[1]
    found = {o for o, _ in n.index.query(np.frombuffer(keys, "<u8").astype(np.uint64))}
    assert found and found <= set(ids)
    catalog.close()


# --- the signer: driven by archived videos, quiet when idle -----------------------------------------------


class FakeRuntime:
    def __init__(self) -> None:
        from draftsync.supervise import Supervisor

        self.supervisor = Supervisor()
        self.stop = threading.Event()
        self.hooks: list[Any] = []

    def on_archived(self, hook: Any) -> None:
        self.hooks.append(hook)


def test_the_signer_signs_what_is_archived_and_idles_without_queries(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    lookalikes(env, 2)
    assert env.cli("scan", "--no-compare").returncode == 0
    s, _ = load(str(env.config))
    catalog = Catalog(s.catalog_path)
    now = [0.0]
    signer = Signer(NearDups(catalog, Archive(s.archive.root, s.archive.layout)), recheck=300, clock=lambda: now[0])
    rt = FakeRuntime()
    monkeypatch.setattr(rt.supervisor, "spawn", lambda *a, **k: None)  # we drive `step` ourselves
    signer.start(rt)  # type: ignore[arg-type]
    assert len(rt.hooks) == 1
    assert signer.step(wait=0) == 2  # the start-up catch-up
    assert signer.step(wait=0) == 0
    queries: list[str] = []
    real_q = catalog._q
    monkeypatch.setattr(catalog, "_q", lambda sql, args=(): queries.append(sql) or real_q(sql, args))
    for _ in range(50):  # idle: no catalog query at all until the periodic check is due
        signer.step(wait=0)
    assert queries == []
    now[0] = 301.0
    signer.step(wait=0)
    assert len(queries) == 1 and "MAX(rowid)" in queries[0]
    # a video archived later arrives through the hook and is signed on the signer's thread
    more = lookalikes(env, 3)[-1]
    monkeypatch.setattr(catalog, "_q", real_q)
    assert env.cli("scan", "--no-compare").returncode == 0
    v = catalog.video(b3(more))
    assert v is not None and not catalog.is_signed(v.hash, VERSION)
    rt.hooks[0](v)
    assert signer.step(wait=0) == 1 and catalog.is_signed(v.hash, VERSION)
    catalog.close()


def test_a_video_the_signer_could_not_store_for_a_full_disk_is_signed_once_the_disk_is_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from draftsync.errors import StateFull

    (src,) = lookalikes(env, 1)
    assert env.cli("scan", "--no-compare").returncode == 0
    s, _ = load(str(env.config))
    catalog = Catalog(s.catalog_path)
    nd = NearDups(catalog, Archive(s.archive.root, s.archive.layout))
    signer = Signer(nd, recheck=1e9, clock=lambda: 0.0)
    signer._caught_up = True  # only what the archived hook brings
    v = catalog.video(b3(src))
    assert v is not None
    real_sign = nd.sign
    full = [True]

    def sign(video: Any) -> None:
        if full[0]:
            raise StateFull("the state disk is full: the catalog cannot be written")
        real_sign(video)

    monkeypatch.setattr(nd, "sign", sign)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    signer.archived(v)
    assert signer.step(wait=0) == 0 and signer.pending() == 1  # kept, not dropped
    assert signer.step(wait=0) == 0 and signer.pending() == 1
    full[0] = False
    assert signer.step(wait=0) == 1 and catalog.is_signed(v.hash, VERSION) and signer.pending() == 0
    catalog.close()


# --- end to end: scan, dupes, push, reindex -----------------------------------------------------------


@pytest.fixture
def family(env: Env, tmp_path: Path) -> dict[str, Path]:
    # 640x360 at 30 fps, 3 s: clips TikTok would accept, so only resemblance can keep them from a push
    size, fps, secs = (640, 360), 30, 3
    frames = list(corpus.clip_frames(3, size=size, fps=fps, seconds=secs))
    tune, other = corpus.melody(3, seconds=secs), corpus.melody(4, seconds=secs)
    d = tmp_path / "src"
    e = lambda name, f, snd, **k: corpus.encode(d / name, f, snd, fps=fps, **k)  # noqa: E731
    trimmed = frames[fps:]
    card = corpus.end_card(trimmed, seconds=3.0, fps=fps)
    out = {
        "original": e("VID_20260501_120000.mp4", frames, tune),
        "watermark": e("VID_20260501_120000_copy.mp4", corpus.watermark(frames), tune),
        "export": e("clip-export.mp4", card, np.concatenate([tune[corpus.AUDIO_RATE :], corpus.jingle()]),
                    enc=corpus.Enc(gop=None, bframes=True, preset="veryfast", audio_rate=44100)),
        "take": e("VID_20260501_121500.mp4", frames, other),  # the same pictures, another sound
        "other": e("VID_20260502_090000.mp4", list(corpus.clip_frames(5, size=size, fps=fps, seconds=secs)), tune),
        "named_export": e("7301234567890123456.mp4", list(corpus.clip_frames(6, size=size, fps=fps, seconds=secs)), None),
    }  # fmt: skip
    old = time.time() - 3600
    for i, (name, p) in enumerate(out.items()):
        dest = env.inbox / p.name
        dest.write_bytes(p.read_bytes())
        os.utime(dest, (old + i, old + i))  # the original is seen first
        out[name] = dest
    return out


def test_scan_groups_the_same_clip_lists_takes_apart_and_marks_exports(env: Env, family: dict[str, Path]) -> None:
    r = env.cli("scan")
    assert r.returncode == 0, r.stderr
    d = json.loads(env.cli("dupes", "--json").stdout)
    assert d["signatures"]["signed"] == d["signatures"]["videos"] == 6
    (group,) = d["groups"]
    assert {m["hash"] for m in group["members"]} == {b3(family[k]) for k in ("original", "watermark", "export")}
    assert group["all_pairs"] and len(group["pairs"]) == 3 and all(p["verdict"] == "same" for p in group["pairs"])
    take = b3(family["take"])
    assert any(take in (s["a"], s["b"]) for s in d["similar"])
    by_hash = {sc["hash"]: sc for sc in env.sidecars()}
    assert by_hash[b3(family["export"])]["origin"] == "tiktok-export"
    assert by_hash[b3(family["export"])]["origin_of"] in {b3(family["original"]), b3(family["watermark"])}
    assert by_hash[b3(family["named_export"])]["origin"] == "tiktok-export"
    assert by_hash[b3(family["original"])]["origin"] is None and by_hash[take]["origin"] is None
    assert by_hash[take]["near_duplicate"] is None
    # the later of the two records the similar take in its own sidecar (signing order follows ingest)
    assert any(take == x["hash"] or (h == take and sc["similar"]) for h, sc in by_hash.items() for x in sc["similar"])
    assert by_hash[b3(family["other"])]["near_duplicate"] is None
    human = env.cli("dupes").stdout
    assert "1 near-duplicate group" in human and "tiktok-export" in human and "similar takes" in human
    assert env.status()["perceptual"]["signed"] == 6


def test_reindex_restores_groups_takes_and_origins_without_decoding(env: Env, family: dict[str, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert env.cli("scan").returncode == 0
    before = json.loads(env.cli("dupes", "--json").stdout)
    s, _ = load(str(env.config))
    for suffix in ("", "-wal", "-shm"):
        Path(str(s.catalog_path) + suffix).unlink(missing_ok=True)
    # nothing may be decoded again: make every decode fail loudly in the reindex process
    r = env.cli("reindex", env={"PYTHONPATH": str(Path(__file__).parent / "nodecode")})
    assert r.returncode == 0, r.stderr
    after = json.loads(env.cli("dupes", "--json").stdout)
    assert after["signatures"] == before["signatures"]
    assert [sorted(m["hash"] for m in g["members"]) for g in after["groups"]] == [
        sorted(m["hash"] for m in g["members"]) for g in before["groups"]
    ]
    assert {(x["a"], x["b"]) for x in after["similar"]} == {(x["a"], x["b"]) for x in before["similar"]}


def test_push_skips_exports_and_the_same_clip_but_not_a_similar_take(env: Env, family: dict[str, Path]) -> None:
    from draftsync.push.queue import Pusher

    env.write_config(push={"enabled": True, "backend": "dry-run", "only_new": False})
    assert env.cli("scan").returncode == 0
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    Pusher(s, cat).select()
    rows = {r["hash"]: r for r in cat.push_rows()}
    assert rows[b3(family["export"])]["state"] == "skipped" and "TikTok export" in rows[b3(family["export"])]["reason"]
    assert rows[b3(family["named_export"])]["state"] == "skipped"
    orig, wm = rows[b3(family["original"])], rows[b3(family["watermark"])]
    assert "queued" in (orig["state"], wm["state"])
    skipped = wm if orig["state"] == "queued" else orig
    assert skipped["state"] == "skipped" and "near-duplicate" in skipped["reason"]
    assert rows[b3(family["take"])]["state"] == "queued"  # another take is another video
    assert rows[b3(family["other"])]["state"] == "queued"


def test_a_full_state_disk_does_not_lose_a_signature(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index file cannot be written: the video is still signed, grouped and its sidecar written; the
    additions stay in memory and the failure is logged."""
    import errno

    from draftsync.bandindex import BandIndex

    lookalikes(env, 3)
    assert env.cli("scan", "--no-compare").returncode == 0
    s, _ = load(str(env.config))
    catalog = Catalog(s.catalog_path)

    def full(self: BandIndex) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(BandIndex, "needs_merge", lambda self: True)
    monkeypatch.setattr(BandIndex, "merge", full)
    n = NearDups(catalog, Archive(s.archive.root, s.archive.layout))
    assert n.backfill() == 3
    (grp,) = catalog.dupe_groups()
    assert len(catalog.group_members(grp)) == 3
    assert all(sc.get("perceptual") for sc in env.sidecars())
    assert len(n.index) > 0  # in memory
    catalog.close()


@pytest.mark.slow
def test_the_running_daemon_signs_each_archived_video_and_groups_it(env: Env, daemon: Any, tmp_path: Path) -> None:
    """No periodic job: the ingest's archived hook queues the video and the signer compares it at once."""
    from tests.conftest import wait_for

    frames = list(corpus.clip_frames(9, seconds=3, size=(320, 180)))
    tune = corpus.melody(9, seconds=3)
    a = corpus.encode(tmp_path / "VID_20260601_100000.mp4", frames, tune)
    b = corpus.encode(tmp_path / "VID_20260601_100500.mp4", corpus.watermark(frames), tune)
    d = daemon()
    (env.inbox / a.name).write_bytes(a.read_bytes())

    def signed(h: str) -> bool:
        return any(sc["hash"] == h and sc.get("perceptual") for sc in env.sidecars())

    wait_for(lambda: signed(b3(a)), 60, what="the first video signed")
    (env.inbox / b.name).write_bytes(b.read_bytes())
    wait_for(lambda: signed(b3(b)), 60, what="the second video signed")
    sc = next(x for x in env.sidecars() if x["hash"] == b3(b))
    assert sc["near_duplicate"]["of"] == b3(a)
    assert [e for e in d.events() if e.get("event") == "unexpected error in a loop"] == []
    assert d.stop() == 0
