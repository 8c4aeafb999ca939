"""Near-duplicates in the archive: whether two signed videos are the same clip, a similar take or
unrelated (`judge`, pure); signing new videos as they are archived (`Signer`, a hosted service) and
old ones by a catch-up (`NearDups.backfill`); groups of the same clip kept as a group id and each
member's best match; TikTok exports (metadata, name, or an earlier clip plus an appended end card);
and what `draftsync dupes` lists. A link is never a deletion.

Same clip: the pictures line up (and, when both have sound, the sound does too, at the same offset),
the shapes agree once bars are removed, and the clips cover each other (an export adds an end card and
trims a little; an excerpt of a long video is not the same clip). A similar take: the pictures line up
but the sound clearly differs (another take of one scene), or the evidence falls short of the same
clip. Similar takes are listed, never grouped, and never keep a video from being pushed.
"""

from __future__ import annotations

import math
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from draftsync import log
from draftsync.archive import Archive
from draftsync.audioprint import match_audio
from draftsync.bandindex import BandIndex
from draftsync.catalog import Catalog, VideoRecord
from draftsync.errors import ArchiveFull, ArchiveMissing, StateFull
from draftsync.perceptual import VERSION, Signature, compute, looks_like_tiktok_export, match_video

if TYPE_CHECKING:
    from draftsync.runtime import Runtime
    from draftsync.supervise import Loop

_log = log.get("draftsync.neardup")

TIKTOK_EXPORT = "tiktok-export"

# --- the decision (pure) ---------------------------------------------------------------------------

VIDEO_MIN = 0.8  # share of comparable samples that must agree for the pictures to line up at all
VIDEO_STRICT = 0.95  # ... when there is no sound to confirm it
STRICT_PAIRS = 8
# Without sound, the pictures must also be close on average: very close, or close over many different
# moments (a still picture, or a second of it, agrees with too many look-alikes to prove anything).
STRICT_SPREAD, STRICT_SPREAD_MOVING, STRICT_STATES = 4.5, 6.0, 5
STRICT_OVERLAP = 2.0  # seconds
STRICT_COLOUR = 14.0  # mean chroma within this (U and V summed, of 255): same clothes, walls and light; colour
# conversions (BT.601 vs BT.709, full vs video range) move it by up to ~10
COVERAGE = 0.4  # of the samples each side has in the stretch they share, at least this many must pair up
MIN_PAIRS = 6
ASPECT_TOLERANCE = 1.12  # shapes (bars removed) within 12 % of each other
AUDIO_SAME = 0.25  # share of the expected landmarks found at the pictures' offset
AUDIO_DIFFERENT = 0.08  # below this, with enough landmarks expected, the sound is another one
AUDIO_EXPECTED = 20


@dataclass(frozen=True)
class Verdict:
    kind: Literal["same", "similar"] | None
    similarity: float  # share of the pictures that agree
    audio: float | None  # share of the sound that agrees (None: no sound on one side)
    offset: float  # b's time = a's time + offset
    why: str


def _samples_within(s: Signature, lo: float, hi: float) -> int:
    t = s.times[s.content()]
    return int(((t >= lo - 0.05) & (t <= hi + 0.05)).sum())


def judge(a: Signature, b: Signature) -> Verdict:
    """Same clip, similar take, or unrelated (kind None)."""
    sound = match_audio(a.audio, b.audio) if a.audio is not None and b.audio is not None else None
    vm = None
    if sound is not None and sound.score >= AUDIO_SAME and sound.shared >= 10:
        # the sound gives the offset to within 32 ms; a repetitive picture might line up elsewhere too
        vm = match_video(a, b, at=sound.offset)
        vm = vm if vm is not None and vm.score >= VIDEO_MIN else None
    vm = vm or match_video(a, b)
    if vm is None or vm.score < VIDEO_MIN:
        return Verdict(None, vm.score if vm else 0.0, None, vm.offset if vm else 0.0, "pictures differ")
    lo, hi = max(0.0, -vm.offset), min(a.content_duration, b.content_duration - vm.offset)
    need = max(
        MIN_PAIRS, COVERAGE * min(_samples_within(a, lo, hi), _samples_within(b, lo + vm.offset, hi + vm.offset))
    )
    if vm.pairs < need:
        return Verdict(None, vm.score, None, vm.offset, "too few samples line up")
    sim = round(vm.score, 3)
    if abs(math.log(a.aspect / b.aspect)) > math.log(ASPECT_TOLERANCE):
        return Verdict("similar", sim, None, vm.offset, "another shape (portrait vs landscape, a crop)")
    short, long = sorted((a.content_duration, b.content_duration))
    if vm.overlap < 0.6 * short or long - vm.overlap > max(10.0, 0.35 * long):
        return Verdict("similar", sim, None, vm.offset, "one is an excerpt of the other")
    if sound is not None and a.audio is not None and b.audio is not None:
        if sound.score >= AUDIO_SAME and sound.shared >= 10 and abs(sound.offset - vm.offset) <= 0.6:
            return Verdict("same", sim, round(sound.score, 3), vm.offset, "pictures and sound agree")
        there = match_audio(a.audio, b.audio, at=vm.offset)
        if there.expected >= AUDIO_EXPECTED and there.score < AUDIO_DIFFERENT and sound.score < 0.1:
            return Verdict("similar", sim, round(there.score, 3), vm.offset, "same pictures, other sound")
    close = vm.spread <= STRICT_SPREAD or (vm.spread <= STRICT_SPREAD_MOVING and vm.states >= STRICT_STATES)
    close = close and not vm.colour > STRICT_COLOUR  # (an unknown colour, NaN, does not count against)
    if vm.score >= VIDEO_STRICT and vm.pairs >= STRICT_PAIRS and close and vm.overlap >= STRICT_OVERLAP:
        return Verdict("same", sim, None, vm.offset, "pictures agree closely (no sound to compare)")
    return Verdict("similar", sim, None, vm.offset, "pictures alike, not closely enough without sound")


def is_export_of(export: Signature, original: Signature, offset: float) -> bool:
    """`export` is `original` with an end card appended (and maybe its start trimmed); offset as judged
    with the original first (export time = original time + offset)."""
    if export.card is None or original.card is not None:
        return False
    card_in_original = export.card - offset
    return offset <= 0.5 and abs(card_in_original - original.duration) <= 1.5


# --- signing and grouping ----------------------------------------------------------------------------

MAX_VERIFY = 16  # candidates compared in full per new video (groups collapse: one member speaks for all)
MAX_SIMILAR = 10


@dataclass
class Compared:
    hash: str
    sig: Signature
    verdict: Verdict


class NearDups:
    """Signs videos, keeps the band index, and records groups, similar takes and origins."""

    def __init__(self, catalog: Catalog, archive: Archive, should_stop: Callable[[], bool] = lambda: False,
                 index_path: Path | None = None) -> None:  # fmt: skip
        self.catalog = catalog
        self.archive = archive
        self.should_stop = should_stop
        self._lock = threading.Lock()  # the signer and a push window may sign at the same time
        self._index_path = index_path if index_path is not None else catalog.path.with_name("neardup.index")
        self._index: BandIndex | None = None
        self._known = 0

    @property
    def index(self) -> BandIndex:
        """The band index, opened on first use (a missing or stale file is rebuilt from the catalog)."""
        if self._index is None:
            index = BandIndex(self._index_path, self.catalog.neardup_generation())
            if index.covered == 0:
                t = time.monotonic()
                rows = ((sid, _keys(k)) for sid, k in self.catalog.iter_index_keys(VERSION))
                try:
                    index.rebuild(rows)
                except OSError as e:  # the state disk is full or read-only: keep the index in memory
                    _log.error("near-duplicate index not saved; it is kept in memory", path=str(self._index_path),
                               error=str(e))  # fmt: skip
                    index = BandIndex(None, self.catalog.neardup_generation())
                    index.rebuild((sid, _keys(k)) for sid, k in self.catalog.iter_index_keys(VERSION))
                if len(index):
                    _log.info(
                        "near-duplicate index rebuilt", entries=len(index), seconds=round(time.monotonic() - t, 1)
                    )
            self._index, self._known = index, index.highest
            self._refresh()
        return self._index

    def _refresh(self) -> None:
        """Index signatures another process (a `push` run, a reindex) stored since we last looked."""
        assert self._index is not None
        for sid, k in self.catalog.iter_index_keys(VERSION, after_id=self._known):
            self._index.add(sid, _keys(k))
            self._known = sid
        self._merge()

    def _merge(self) -> None:
        """Fold recent additions into the index file; if that fails (state disk full, read-only), they stay
        in memory and the catalog still has them: nothing is lost, and the failure is logged."""
        if self._index is None or not self._index.needs_merge():
            return
        try:
            self._index.merge()
        except OSError as e:
            _log.error("near-duplicate index not saved; recent additions stay in memory", path=str(self._index_path),
                       error=str(e))  # fmt: skip

    def backfill(self, limit: int = 50) -> int:
        """Sign up to `limit` videos that have no signature yet, oldest first."""
        done = 0
        for v in self.catalog.unsigned(VERSION, limit):
            if self.should_stop():
                break
            self.sign(v)
            done += 1
        return done

    def sign(self, v: VideoRecord) -> list[Compared]:
        """Sign one video and place it: its group (same clip), similar takes, origin. Returns what it was
        compared with. Writes this video's sidecar once (and an earlier export's, when this is its original)."""
        with self._lock:
            if self.catalog.is_signed(v.hash, VERSION):
                return []
            try:
                sig = compute(self.archive.root / v.archive_path)
            except ValueError as e:
                self.catalog.save_signature(v.hash, VERSION, None, str(e))
                self.archive.update_sidecar(v.archive_path, {"perceptual": None, "perceptual_error": str(e)})
                return []
            except Exception as e:  # a media library fault must not stop the backfill
                _log.exception("signature failed", hash=v.hash, archive_path=v.archive_path, error=str(e))
                self.catalog.save_signature(v.hash, VERSION, None, f"{type(e).__name__}: {e}")
                return []
            index = self.index
            self._refresh()
            compared = self._compare(v.hash, sig)
            keys = sig.keys()
            sid = self.catalog.save_signature(v.hash, VERSION, sig.pack(), None, keys.astype("<u8").tobytes())
            index.add(sid, keys)
            self._known = max(self._known, sid)
            self._merge()
            same = [c for c in compared if c.verdict.kind == "same"]
            similar = sorted((c for c in compared if c.verdict.kind == "similar"), key=lambda c: -c.verdict.similarity)
            member = self._join(v, same)
            for c in similar[:MAX_SIMILAR]:
                self.catalog.add_similar(v.hash, c.hash, c.verdict.similarity, c.verdict.audio)
            origin, origin_of = self._origin(v, sig, same)
            self.catalog.set_origin(v.hash, origin)
            self.archive.update_sidecar(v.archive_path, {
                "perceptual": sig.to_json(), "perceptual_error": None, "origin": origin, "origin_of": origin_of,
                "near_duplicate": member, "similar": [_similar_json(c) for c in similar[:MAX_SIMILAR]],
                "near_duplicates": None,  # the version 1 pairwise list, if any: superseded
            })  # fmt: skip
            if same or similar:
                _log.info("near-duplicates", hash=v.hash, archive_path=v.archive_path, origin=origin,
                          same=[c.hash for c in same], similar=[c.hash for c in similar[:MAX_SIMILAR]])  # fmt: skip
            return compared

    def _compare(self, h: str, sig: Signature) -> list[Compared]:
        """Judge the new signature against the index's best candidates, one member per group."""
        cands = self.index.query(sig.keys(64), limit=4 * MAX_VERIFY)
        rows = {sid: (hh, data) for sid, hh, data in self.catalog.signatures_by_id([c for c, _ in cands], VERSION)}
        out: list[Compared] = []
        joined: set[str] = set()
        for sid, _ in cands:
            if len(out) >= MAX_VERIFY:
                break
            if sid not in rows or rows[sid][0] == h:
                continue
            other_hash, data = rows[sid]
            grp = self.catalog.group_of(other_hash) or other_hash
            if grp in joined:
                continue
            try:
                other = Signature.unpack(data)
            except (ValueError, struct.error) as e:  # a damaged row: compare with the others
                _log.warning("unreadable signature in the catalog", hash=other_hash, error=str(e))
                continue
            verdict = judge(other, sig)  # the earlier one first: offsets read "new = old + offset"
            if verdict.kind == "same":
                joined.add(grp)
            out.append(Compared(other_hash, other, verdict))
        return out

    def _join(self, v: VideoRecord, same: list[Compared]) -> dict[str, Any] | None:
        """Put `v` in the group of its best match, merging groups it bridges. Catalog rows only: no other
        video's sidecar changes (each sidecar names its own best match; groups follow from those)."""
        if not same:
            return None
        best = max(same, key=lambda c: (c.verdict.similarity, c.verdict.audio or 0.0))
        groups: dict[str, str] = {}  # member -> its group (a member with no group founds one)
        for c in same:
            grp = self.catalog.group_of(c.hash)
            if grp is None:
                self.catalog.join_group(c.hash, c.hash, None, None, None)
                grp = c.hash
            groups[c.hash] = grp
        keep = min(set(groups.values()), key=self._founded)
        for gone in set(groups.values()) - {keep}:
            self.catalog.merge_groups(keep, gone)
        self.catalog.join_group(v.hash, keep, best.hash, best.verdict.similarity, best.verdict.audio)
        return {
            "group": keep, "of": best.hash, "similarity": best.verdict.similarity, "audio": best.verdict.audio,
            "also": sorted(c.hash for c in same if c.hash != best.hash),
        }  # fmt: skip

    def _founded(self, grp: str) -> tuple[float, str]:
        founder = self.catalog.video(grp)
        return (founder.first_seen if founder is not None else float("inf")), grp

    def _origin(self, v: VideoRecord, sig: Signature, same: list[Compared]) -> tuple[str | None, str | None]:
        sources = self.catalog.sources_of(v.hash)
        name = Path(sources[0]).name if sources else Path(v.archive_path).name
        if looks_like_tiktok_export(name, v.media):
            return TIKTOK_EXPORT, None
        for c in same:
            if is_export_of(sig, c.sig, c.verdict.offset):
                return TIKTOK_EXPORT, c.hash
        # archived the other way round: an earlier file is this one's export
        for c in same:
            if self.catalog.origin(c.hash) is None and is_export_of(c.sig, sig, -c.verdict.offset):
                self.catalog.set_origin(c.hash, TIKTOK_EXPORT)
                other = self.catalog.video(c.hash)
                if other is not None:
                    self.archive.update_sidecar(other.archive_path, {"origin": TIKTOK_EXPORT, "origin_of": v.hash})
        return None, None


def _keys(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<u8").astype(np.uint64)


def _similar_json(c: Compared) -> dict[str, Any]:
    return {"hash": c.hash, "similarity": c.verdict.similarity, "audio": c.verdict.audio}


# --- the service: signing driven by new videos ---------------------------------------------------------


class Signer:
    """Signs each video the daemon archives (told by the runtime's archived hook), after a catch-up of
    whatever is unsigned at start-up. Idle, it waits on its queue; every `recheck` seconds it looks
    whether the catalog gained videos some other way (one indexed query)."""

    name = "signatures"

    def __init__(
        self,
        neardups: NearDups,
        *,
        recheck: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.neardups = neardups
        # False while the archive is not there: a video on an unmounted disk is not an unsignable video.
        self.ready = ready
        self.recheck = recheck
        self.clock = clock
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._caught_up = False
        self._high = 0
        self._next_check = 0.0
        self._stopping = False
        self._waiting_for = ""  # the disk condition signing last waited for, logged once
        self.loop: Loop | None = None

    def start(self, rt: Runtime) -> None:
        # the high-water mark is read before the catch-up: a video archived in between is seen twice, not never
        self._high = self.neardups.catalog.last_video_rowid()
        self._next_check = self.clock() + self.recheck
        rt.on_archived(self.archived)
        self.loop = rt.supervisor.spawn(self.name, self.step, rt.stop, interval=0, max_silence=6 * 3600)

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)

    def archived(self, v: VideoRecord) -> None:
        self._queue.put(v.hash)  # the ingest worker only queues; signing happens on our thread

    def step(self, wait: float = 30.0) -> int:
        """One pass: the start-up catch-up, or one queued video, or the periodic check. Returns videos signed."""
        nd = self.neardups
        if self._stopping or nd.should_stop() or not self.ready():
            time.sleep(min(wait, 1.0))  # the loop ends with the daemon's stop event; do not spin until then
            return 0
        if not self._caught_up:
            n = nd.backfill(limit=100)
            if n < 100:
                self._caught_up = True
            return n
        try:
            h = self._queue.get(timeout=wait)
        except queue.Empty:
            h = None
        signed = 0
        if h is not None:
            v = nd.catalog.video(h)
            if v is not None and not nd.catalog.is_signed(v.hash, VERSION):
                try:
                    nd.sign(v)
                except (StateFull, ArchiveFull, ArchiveMissing) as e:
                    # A disk that is full or gone: ingest pauses and reports it; this video is signed once
                    # the disk is back, not dropped (the periodic check only sees videos archived later).
                    self._queue.put(h)
                    if str(e) != self._waiting_for:
                        self._waiting_for = str(e)
                        _log.info("signing waits for the disk", hash=h, reason=str(e))
                    time.sleep(min(wait, 2.0))
                    return 0
                self._waiting_for = ""
                signed = 1
        if self.clock() >= self._next_check:
            self._next_check = self.clock() + self.recheck
            if nd.catalog.last_video_rowid() > self._high:
                for rowid, v in nd.catalog.videos_after(self._high):
                    self._high = rowid
                    if not nd.catalog.is_signed(v.hash, VERSION):
                        self._queue.put(v.hash)
        return signed

    def pending(self) -> int:
        return self._queue.qsize()


# --- what `dupes` lists -----------------------------------------------------------------------------

PAIRWISE_UP_TO = 25  # members; a bigger group lists each member's best match instead of every pair


def groups(catalog: Catalog) -> list[dict[str, Any]]:
    """Each group of the same clip: its members, and the similarity of every pair (computed now from the
    signatures) or, for a big group, of each member and its best match."""
    out = []
    for grp in catalog.dupe_groups():
        rows = catalog.group_members(grp)
        vids = {r["hash"]: catalog.video(r["hash"]) for r in rows}
        members = [{
            "hash": h, "archive_path": v.archive_path, "capture_time": v.capture_time,
            "resolution": f"{(v.media or {}).get('width')}x{(v.media or {}).get('height')}",
            "origin": catalog.origin(h),
        } for h, v in vids.items() if v is not None]  # fmt: skip
        members.sort(key=lambda m: m["capture_time"] or "")
        best = [{"a": r["best"], "b": r["hash"], "similarity": r["similarity"], "audio": r["audio"]}
                for r in rows if r["best"]]  # fmt: skip
        pairs = _pairwise(catalog, [m["hash"] for m in members]) if len(rows) <= PAIRWISE_UP_TO else []
        # Every pair when the group is small and its signatures are at hand; else each member's best match.
        complete = bool(pairs)
        pairs = pairs or best
        out.append({"group": grp, "members": members, "pairs": pairs, "all_pairs": complete})
    return sorted(out, key=lambda g: g["members"][0]["capture_time"] if g["members"] else "")


def _pairwise(catalog: Catalog, hashes: list[str]) -> list[dict[str, Any]]:
    sigs = {}
    for h in hashes:
        got = catalog.signature_of(h, VERSION)
        if got is not None:
            sigs[h] = Signature.unpack(got[1])
    pairs = []
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            if a in sigs and b in sigs:
                v = judge(sigs[a], sigs[b])
                pairs.append({"a": a, "b": b, "similarity": v.similarity, "audio": v.audio, "verdict": v.kind})
    return pairs


def similar(catalog: Catalog) -> list[dict[str, Any]]:
    """Similar takes: videos whose pictures line up but that are not the same clip."""
    out = []
    for a, b, sim, audio in catalog.all_similar():
        va, vb = catalog.video(a), catalog.video(b)
        if va is None or vb is None:
            continue
        out.append({"a": a, "b": b, "a_path": va.archive_path, "b_path": vb.archive_path, "similarity": sim,
                    "audio": audio})  # fmt: skip
    return sorted(out, key=lambda x: (x["a_path"], x["b_path"]))


# --- reindex: groups, similar takes and origin back from the sidecars ------------------------------


def restore(catalog: Catalog, h: str, data: dict[str, Any]) -> None:
    """What signing recorded for one video, from its sidecar: nothing is decoded again."""
    sig = data.get("perceptual")
    if isinstance(sig, dict) and sig.get("version") == VERSION:
        try:
            restored = Signature.from_json(sig)
            catalog.save_signature(h, VERSION, restored.pack(), None, restored.keys().astype("<u8").tobytes())
        except (ValueError, KeyError, TypeError) as e:
            _log.warning("unusable signature in a sidecar; it will be computed again", hash=h, error=str(e))
    elif data.get("perceptual_error"):
        catalog.save_signature(h, VERSION, None, str(data["perceptual_error"]))
    member = data.get("near_duplicate")
    if isinstance(member, dict) and isinstance(member.get("of"), str):
        for other in [member["of"], *(x for x in member.get("also") or [] if isinstance(x, str))]:
            catalog.link_members(h, other)
        catalog.join_group(h, catalog.group_of(h) or h, member["of"], _num(member.get("similarity")),
                           _num(member.get("audio")))  # fmt: skip
    for s in data.get("similar") or []:
        if isinstance(s, dict) and isinstance(s.get("hash"), str):
            catalog.add_similar(h, s["hash"], _num(s.get("similarity")) or 0.0, _num(s.get("audio")))
    if data.get("origin"):
        catalog.set_origin(h, str(data["origin"]))


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) else None
