"""Near-duplicates in the archive: the signature backfill, links between a new video and earlier ones,
origin detection (TikTok exports), and the groups `draftsync dupes` lists. A link is never a deletion.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from draftsync import log
from draftsync.archive import Archive
from draftsync.catalog import Catalog, VideoRecord
from draftsync.perceptual import VERSION, Index, Signature, compute, is_export_of, looks_like_tiktok_export

_log = log.get("draftsync.neardup")

TIKTOK_EXPORT = "tiktok-export"


class NearDups:
    def __init__(self, catalog: Catalog, archive: Archive, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.catalog = catalog
        self.archive = archive
        self.should_stop = should_stop
        self.index = Index()
        self._sigs: dict[str, Signature] = {}
        self._lock = threading.Lock()  # the backfill job and a push window may sign at the same time
        for h, data in catalog.signatures(VERSION):
            sig = Signature.from_json(json.loads(data))
            self.index.add(h, sig)
            self._sigs[h] = sig

    def backfill(self, limit: int = 50) -> int:
        """Sign up to `limit` videos that have no signature yet, linking each as it is signed."""
        done = 0
        with self._lock:
            for v in self.catalog.unsigned(VERSION, limit):
                if self.should_stop():
                    break
                self.sign(v)
                done += 1
        return done

    def sign(self, v: VideoRecord) -> list[tuple[str, float]]:
        path = self.archive.root / v.archive_path
        try:
            sig = compute(path)
        except ValueError as e:
            self.catalog.save_signature(v.hash, VERSION, None, str(e))
            self.archive.update_sidecar(v.archive_path, {"perceptual": None, "perceptual_error": str(e)})
            return []
        except Exception as e:  # a media library fault must not stop the backfill
            self.catalog.save_signature(v.hash, VERSION, None, f"{type(e).__name__}: {e}")
            return []
        matches = self.index.query(sig, exclude=v.hash)
        self.catalog.save_signature(v.hash, VERSION, json.dumps(sig.to_json()), None)
        self.index.add(v.hash, sig)
        self._sigs[v.hash] = sig
        for other, sim in matches:
            self.catalog.link(v.hash, other, sim)
        origin, origin_of = self._origin(v, sig, matches)
        self.catalog.set_origin(v.hash, origin)
        fields: dict[str, Any] = {
            "perceptual": sig.to_json(),
            "near_duplicates": self._described(v.hash),
            "origin": origin,
        }
        if origin_of:
            fields["origin_of"] = origin_of
        self.archive.update_sidecar(v.archive_path, fields)
        for other, _ in matches:
            ov = self.catalog.video(other)
            if ov is not None:
                self.archive.update_sidecar(ov.archive_path, {"near_duplicates": self._described(other)})
        if matches:
            _log.info("near-duplicates linked", hash=v.hash, archive_path=v.archive_path,
                      matches=[m[0] for m in matches], origin=origin)  # fmt: skip
        return matches

    def _origin(
        self, v: VideoRecord, sig: Signature, matches: list[tuple[str, float]]
    ) -> tuple[str | None, str | None]:
        sources = self.catalog.sources_of(v.hash)
        name = Path(sources[0]).name if sources else Path(v.archive_path).name
        if looks_like_tiktok_export(name, v.media):
            return TIKTOK_EXPORT, None
        for other, _ in matches:
            o = self.catalog.video(other)
            if o is not None and o.first_seen <= v.first_seen and is_export_of(sig, self._sigs[other]):
                return TIKTOK_EXPORT, other  # the clip plus an appended end card
        return None, None

    def _described(self, h: str) -> list[dict[str, Any]]:
        out = []
        for other, sim in sorted(self.catalog.near_dupes_of(h), key=lambda x: -x[1]):
            o = self.catalog.video(other)
            if o is not None:
                out.append({"hash": other, "archive_path": o.archive_path, "similarity": round(sim, 3)})
        return out


def groups(catalog: Catalog) -> list[dict[str, Any]]:
    """Connected groups of linked videos, each with its members and pairwise similarities."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    links = catalog.all_links()
    for a, b, _ in links:
        parent[find(a)] = find(b)
    members: dict[str, list[str]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    out = []
    for root, hs in members.items():
        vids = [catalog.video(h) for h in sorted(hs)]
        out.append({
            "members": [{
                "hash": v.hash, "archive_path": v.archive_path, "capture_time": v.capture_time,
                "resolution": f"{(v.media or {}).get('width')}x{(v.media or {}).get('height')}",
                "origin": catalog.origin(v.hash),
            } for v in vids if v is not None],
            "pairs": [{"a": a, "b": b, "similarity": s} for a, b, s in links if find(a) == root],
        })  # fmt: skip
    return sorted(out, key=lambda g: g["members"][0]["capture_time"] if g["members"] else "")
