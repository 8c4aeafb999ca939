"""The band index: which signatures hold a frame hash close to a given one, without a scan.

Multi-index hashing: a 64-bit hash is cut into four 16-bit bands, and for each band and each of its
65,536 values the index lists the signature ids (catalog row ids) that hold it. Two hashes a few bits
apart share at least one band exactly, so a query is a few hundred bucket reads.

The buckets live in one file (for each band, the owners sorted by band value, and the 65,537 bucket
offsets), read with `pread`: only the offsets stay in memory (2 MiB), so a million signatures cost
the daemon almost nothing in RSS. Recent additions stay in a small in-memory delta until they are
merged into a new file (streamed, written atomically); the catalog is the source of truth, so the file
may be missing, stale or from another catalog generation and is then rebuilt from it.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from draftsync import log
from draftsync.atomic import AtomicFile

_log = log.get("draftsync.bandindex")

BANDS = 4
VALUES = 1 << 16
_MAGIC = b"DSBANDS1"
_HEAD = struct.Struct("<8s16sQQ")  # magic, catalog generation, entries per band, highest owner covered
_MERGE_MIN = 200_000  # entries held in memory before they are merged into the file


def bands(keys: np.ndarray) -> np.ndarray:
    """(len(keys), BANDS) band values of 64-bit hashes."""
    k = np.asarray(keys, dtype=np.uint64)
    return np.stack([((k >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64) for b in range(BANDS)], axis=1)


class BandIndex:
    def __init__(self, path: Path | None = None, generation: str = "") -> None:
        self.path = path
        self.generation = generation.encode()[:16].ljust(16, b"\0")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._offsets = np.zeros((BANDS, VALUES + 1), dtype=np.int64)
        self._entries = 0  # per band, in the file
        self.covered = 0  # the file holds every owner <= this
        self._delta_keys: list[np.ndarray] = []
        self._delta_owners: list[np.ndarray] = []
        self._delta_n = 0
        self._highest = 0
        self._frozen: tuple[np.ndarray, np.ndarray] | None = None  # delta sorted by key, per band
        if path is not None:
            self._open()

    # --- the file ------------------------------------------------------------------------------

    def _open(self) -> None:
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            head = os.pread(fd, _HEAD.size, 0)
            magic, gen, entries, covered = _HEAD.unpack(head)
            if magic != _MAGIC or gen != self.generation:
                raise ValueError("another catalog generation")
            raw = os.pread(fd, BANDS * (VALUES + 1) * 8, _HEAD.size)
            offsets = np.frombuffer(raw, "<i8").reshape(BANDS, VALUES + 1).astype(np.int64)
            size = os.fstat(fd).st_size
            if size != self._data_start() + BANDS * entries * 4 or int(offsets[:, -1].max(initial=0)) != entries:
                raise ValueError("truncated")
        except (ValueError, struct.error, OSError) as e:
            os.close(fd)
            _log.warning("near-duplicate index unusable; it will be rebuilt", path=str(self.path), reason=str(e))
            return
        self._fd, self._offsets, self._entries, self.covered = fd, offsets, int(entries), int(covered)

    @staticmethod
    def _data_start() -> int:
        return _HEAD.size + BANDS * (VALUES + 1) * 8

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _bucket(self, band: int, value: int) -> np.ndarray:
        lo, hi = int(self._offsets[band, value]), int(self._offsets[band, value + 1])
        if hi <= lo or self._fd is None:
            return np.zeros(0, dtype=np.uint32)
        start = self._data_start() + (band * self._entries + lo) * 4
        return np.frombuffer(os.pread(self._fd, (hi - lo) * 4, start), "<u4")

    # --- adding and querying -------------------------------------------------------------------

    def add(self, owner: int, keys: np.ndarray) -> None:
        """Remember that signature `owner` holds these frame hashes."""
        if len(keys) == 0:
            return
        with self._lock:
            self._delta_keys.append(bands(keys).astype(np.uint16))
            self._delta_owners.append(np.full(len(keys), owner, dtype=np.uint32))
            self._delta_n += len(keys)
            self._frozen = None
            self._highest = max(self._highest, owner)

    @property
    def highest(self) -> int:
        """The highest owner held, in the file or in memory."""
        return max(self.covered, self._highest)

    def __len__(self) -> int:
        return self._entries + self._delta_n

    def _delta(self) -> tuple[np.ndarray, np.ndarray]:
        if self._frozen is None:
            if self._delta_keys:
                keys = np.concatenate(self._delta_keys)
                owners = np.concatenate(self._delta_owners)
            else:
                keys, owners = np.zeros((0, BANDS), np.uint16), np.zeros(0, np.uint32)
            self._frozen = (keys, owners)
        return self._frozen

    def query(self, keys: np.ndarray, *, min_hits: int = 2, limit: int = 64,
              crowded: int = 20_000) -> list[tuple[int, int]]:  # fmt: skip
        """Signatures sharing at least `min_hits` band values with these hashes: (owner, hits), most
        hits first. A bucket holding more than `crowded` owners (a value every flat gradient has) is
        skipped: it would name everybody."""
        if len(keys) == 0:
            return []
        q = bands(keys)
        found: list[np.ndarray] = []
        with self._lock:
            dkeys, downers = self._delta()
            for b in range(BANDS):
                wanted = np.unique(q[:, b])
                in_file = self._offsets[b, wanted + 1] - self._offsets[b, wanted]
                in_delta = np.zeros(len(wanted), dtype=np.int64)
                hit = np.zeros(0, dtype=bool)
                if len(dkeys):
                    hit = np.isin(dkeys[:, b], wanted.astype(np.uint16))
                    vals, counts = np.unique(dkeys[hit, b], return_counts=True)
                    in_delta[np.searchsorted(wanted, vals.astype(np.int64))] = counts
                ok = (in_file + in_delta) <= crowded
                for v, n in zip(wanted[ok], in_file[ok], strict=True):
                    if n:
                        found.append(self._bucket(b, int(v)))
                if hit.any():
                    allowed = np.isin(dkeys[:, b], wanted[ok].astype(np.uint16)) & hit
                    found.append(downers[allowed])
        if not found:
            return []
        owners, counts = np.unique(np.concatenate(found), return_counts=True)
        keep = counts >= min_hits
        owners, counts = owners[keep], counts[keep]
        order = np.argsort(-counts, kind="stable")[:limit]
        return [(int(owners[i]), int(counts[i])) for i in order]

    # --- merging the delta into the file --------------------------------------------------------

    def needs_merge(self) -> bool:
        return self.path is not None and self._delta_n >= max(_MERGE_MIN, self._entries // 20)

    def merge(self) -> None:
        """Write base + delta as a new file (streamed, bucket range by bucket range) and switch to it."""
        if self.path is None:
            return
        with self._lock:
            dkeys, downers = self._delta()
            covered = max(self.covered, int(downers.max(initial=0)))
            self._write(self.path, self._merged(dkeys, downers), self._entries + len(downers), covered)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._delta_keys, self._delta_owners, self._delta_n, self._frozen = [], [], 0, None
            self._open()

    def _merged(self, dkeys: np.ndarray, downers: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(band, bucket counts, owners sorted by value) chunks of the merged index, band by band."""
        step = 4096
        for b in range(BANDS):
            order = np.argsort(dkeys[:, b], kind="stable") if len(dkeys) else np.zeros(0, np.int64)
            dk = dkeys[order, b].astype(np.int64) if len(dkeys) else np.zeros(0, np.int64)
            do = downers[order]
            dcounts = np.bincount(dk, minlength=VALUES) if len(dk) else np.zeros(VALUES, np.int64)
            dstarts = np.concatenate([[0], np.cumsum(dcounts)])
            for v0 in range(0, VALUES, step):
                v1 = v0 + step
                lo, hi = int(self._offsets[b, v0]), int(self._offsets[b, v1])
                old = (np.frombuffer(os.pread(self._fd, (hi - lo) * 4, self._data_start() + (b * self._entries + lo) * 4),
                                     "<u4") if self._fd is not None and hi > lo else np.zeros(0, np.uint32))  # fmt: skip
                old_counts = np.diff(self._offsets[b, v0 : v1 + 1])
                new = do[dstarts[v0] : dstarts[v1]]
                keys = np.concatenate([np.repeat(np.arange(v0, v1), old_counts), dk[dstarts[v0] : dstarts[v1]]])
                owners = np.concatenate([old, new]).astype(np.uint32)
                sort = np.argsort(keys, kind="stable")
                yield b, old_counts + dcounts[v0:v1], owners[sort]

    def _write(self, path: Path, chunks: Iterable[tuple[int, np.ndarray, np.ndarray]], entries: int,
               covered: int) -> None:  # fmt: skip
        offsets = np.zeros((BANDS, VALUES + 1), dtype=np.int64)
        filled = [0] * BANDS
        with AtomicFile(path.parent, mode=0o600) as f:
            f.write(b"\0" * self._data_start())  # the header and offsets are written last, in place
            for b, counts, owners in chunks:
                v0 = filled[b]
                offsets[b, v0 + 1 : v0 + 1 + len(counts)] = offsets[b, v0] + np.cumsum(counts)
                filled[b] += len(counts)
                f.write(owners.astype("<u4").tobytes())
            f.f.seek(0)
            f.write(_HEAD.pack(_MAGIC, self.generation, entries, covered))
            f.write(offsets.astype("<i8").tobytes())
            f.commit(path, replace=True)

    def rebuild(self, rows: Iterable[tuple[int, np.ndarray]]) -> None:
        """Start over from (owner, keys) rows, e.g. every signature in the catalog, and write the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._offsets = np.zeros((BANDS, VALUES + 1), dtype=np.int64)
            self._entries, self.covered, self._highest = 0, 0, 0
            self._delta_keys, self._delta_owners, self._delta_n, self._frozen = [], [], 0, None
        for owner, keys in rows:
            self.add(owner, keys)
            if self.path is not None and self._delta_n >= 10 * _MERGE_MIN:
                self.merge()  # bounded memory while a million signatures go in
        if self.path is not None and self._delta_n:
            self.merge()
