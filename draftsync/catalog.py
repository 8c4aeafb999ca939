"""The catalog: one SQLite file under `state.dir` that remembers what we have, where it is, and what
happened. This is the only module that writes SQL.

WAL mode, one connection per process guarded by a lock (one writer), `synchronous=FULL` because the
push state machine relies on a row being on disk before bytes leave the machine. The catalog is a
cache of the archive: `reindex` rebuilds it from the sidecars.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from draftsync.errors import ConfigError

if TYPE_CHECKING:
    from draftsync.problems import Problem

# Migrations run in key order; numbers may have gaps (each feature takes its own number), and a catalog
# records the highest one applied.
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE videos(
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        archive_path TEXT NOT NULL UNIQUE,
        capture_time TEXT,
        capture_source TEXT,
        label TEXT,
        media TEXT,
        probe_error TEXT,
        first_seen REAL NOT NULL,
        archived_at REAL NOT NULL,
        verified_at REAL
    );
    CREATE INDEX videos_size ON videos(size);
    CREATE INDEX videos_first_seen ON videos(first_seen);
    CREATE TABLE sources(
        path TEXT PRIMARY KEY,
        root TEXT,
        size INTEGER,
        mtime_ns INTEGER,
        inode INTEGER,
        dev INTEGER,
        hash TEXT,
        state TEXT NOT NULL,
        first_seen REAL,
        last_seen REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX sources_identity ON sources(dev, inode, size, mtime_ns);
    CREATE INDEX sources_hash ON sources(hash);
    CREATE TABLE events(
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        level TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT,
        hash TEXT,
        message TEXT
    );
    CREATE TABLE roots(
        path TEXT PRIMARY KEY,
        mode TEXT,
        health TEXT,
        detail TEXT,
        last_event REAL,
        last_rescan REAL,
        updated REAL
    );
    """,
    2: """
    CREATE TABLE pushes(
        hash TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        backend TEXT,
        account TEXT,
        remote_id TEXT,
        upload_url TEXT,
        upload_started REAL,
        chunk_size INTEGER,
        chunk_count INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        code TEXT,
        log_id TEXT,
        queued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        next_try REAL
    );
    CREATE INDEX pushes_state ON pushes(state);
    CREATE TABLE push_calls(
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        ok INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX push_calls_at ON push_calls(account, kind, at);
    """,
    3: """
    ALTER TABLE videos ADD COLUMN origin TEXT;
    CREATE TABLE signatures(
        hash TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        data TEXT,
        error TEXT,
        computed_at REAL NOT NULL
    );
    CREATE TABLE near_dupes(
        a TEXT NOT NULL,
        b TEXT NOT NULL,
        similarity REAL NOT NULL,
        PRIMARY KEY(a, b)
    );
    CREATE INDEX near_dupes_b ON near_dupes(b);
    """,
    4: """
    CREATE TABLE problems(
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        since REAL NOT NULL
    );
    """,
    # 8: near-duplicates by groups (a group id and each member's best match), similar takes apart, and
    # compact signatures with the row id the band index names them by; version 1 signatures, the
    # pairwise links and the origins they implied are dropped (the backfill signs every video again).
    8: """
    DROP TABLE IF EXISTS near_dupes;
    DROP TABLE IF EXISTS signatures;
    CREATE TABLE signatures(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hash TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        data BLOB,
        keys BLOB,
        error TEXT,
        computed_at REAL NOT NULL
    );
    CREATE TABLE dupe_members(
        hash TEXT PRIMARY KEY,
        grp TEXT NOT NULL,
        best TEXT,
        similarity REAL,
        audio REAL
    );
    CREATE INDEX dupe_members_grp ON dupe_members(grp);
    CREATE TABLE similar_takes(
        a TEXT NOT NULL,
        b TEXT NOT NULL,
        similarity REAL NOT NULL,
        audio REAL,
        PRIMARY KEY(a, b)
    );
    CREATE INDEX similar_takes_b ON similar_takes(b);
    UPDATE videos SET origin = NULL;
    INSERT OR REPLACE INTO meta VALUES('neardup_generation', lower(hex(randomblob(8))));
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)


def make_private_dir(path: Path) -> None:
    """Create the state dir (and parents) as 0700; an existing dir keeps the mode its owner chose."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)


@dataclass
class SourceSighting:
    path: str
    size: int
    mtime_ns: int
    inode: int
    dev: int
    root: str = ""
    first_seen: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "inode": self.inode,
            "dev": self.dev, "root": self.root, "first_seen": self.first_seen,
        }  # fmt: skip


@dataclass
class VideoRecord:
    """One archived video, as the catalog and the sidecar hold it."""

    hash: str
    size: int
    archive_path: str  # relative to archive.root, '/'-separated
    capture_time: str
    capture_source: str
    label: str
    media: dict[str, Any] | None
    probe_error: str | None
    first_seen: float
    archived_at: float
    sources: list[SourceSighting] = field(default_factory=list)
    verified_at: float | None = None


def _row_to_video(r: sqlite3.Row) -> VideoRecord:
    return VideoRecord(
        hash=r["hash"], size=r["size"], archive_path=r["archive_path"], capture_time=r["capture_time"],
        capture_source=r["capture_source"], label=r["label"],
        media=json.loads(r["media"]) if r["media"] else None, probe_error=r["probe_error"],
        first_seen=r["first_seen"], archived_at=r["archived_at"], verified_at=r["verified_at"],
    )  # fmt: skip


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            make_private_dir(path.parent)
            # The catalog holds source paths and push state: readable by its owner only, from creation.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"cannot open the catalog {path}: {e}") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nestable); BEGIN IMMEDIATE so two processes never deadlock on upgrade."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _migrate(self) -> None:
        with self.tx() as db:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            version = 0
            if has_meta:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the catalog {self.path} was written by a newer draftsync (schema {version}); upgrade draftsync"
                )
            for v in sorted(k for k in _MIGRATIONS if k > version):
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute("INSERT OR REPLACE INTO meta VALUES('schema_version', ?)", (str(v),))

    # --- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    # --- sources ---------------------------------------------------------------------------------

    def source_unchanged(self, path: str, size: int, mtime_ns: int, inode: int) -> bool:
        """True if this exact version of `path` was already handled (archived or known empty)."""
        rows = self._q(
            "SELECT 1 FROM sources WHERE path=? AND size=? AND mtime_ns=? AND inode=? AND state IN ('archived','empty')",
            (path, size, mtime_ns, inode),
        )
        return bool(rows)

    def known_paths(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (size, mtime_ns, inode, state) for every source; one query for a whole rescan."""
        with self._lock:
            cur = self._db.cursor()
            cur.row_factory = None  # plain tuples: this runs over every source on each rescan
            rows = cur.execute("SELECT path, size, mtime_ns, inode, state FROM sources").fetchall()
        return {r[0]: r[1:] for r in rows}

    def hash_by_identity(self, dev: int, inode: int, size: int, mtime_ns: int) -> str | None:
        """A file moved or renamed inside the inbox keeps its inode, size and mtime: no need to re-read."""
        rows = self._q(
            "SELECT hash FROM sources WHERE dev=? AND inode=? AND size=? AND mtime_ns=? AND state='archived' "
            "AND hash IS NOT NULL LIMIT 1",
            (dev, inode, size, mtime_ns),
        )
        return rows[0][0] if rows else None

    def record_source(self, s: SourceSighting, hash: str | None, state: str) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute(
                """INSERT INTO sources(path, root, size, mtime_ns, inode, dev, hash, state, first_seen, last_seen,
                                       attempts, last_error)
                   VALUES(?,?,?,?,?,?,?,?,?,?,0,NULL)
                   ON CONFLICT(path) DO UPDATE SET root=excluded.root, size=excluded.size,
                     mtime_ns=excluded.mtime_ns, inode=excluded.inode, dev=excluded.dev, hash=excluded.hash,
                     state=excluded.state, last_seen=excluded.last_seen, attempts=0, last_error=NULL""",
                (s.path, s.root, s.size, s.mtime_ns, s.inode, s.dev, hash, state, s.first_seen or now, now),
            )

    def record_failure(self, path: str, root: str, message: str) -> int:
        """Count a failed attempt on `path`; returns the number of attempts so far."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                """INSERT INTO sources(path, root, state, first_seen, last_seen, attempts, last_error)
                   VALUES(?,?,'failed',?,?,1,?)
                   ON CONFLICT(path) DO UPDATE SET state='failed', attempts=attempts+1, last_error=excluded.last_error,
                     last_seen=excluded.last_seen""",
                (path, root, now, now, message),
            )
            row = db.execute("SELECT attempts FROM sources WHERE path=?", (path,)).fetchone()
        return int(row[0])

    def mark_gone(self, paths: list[str]) -> None:
        with self.tx() as db:
            db.executemany("UPDATE sources SET state='gone' WHERE path=? AND state!='gone'", [(p,) for p in paths])

    def present_sources_under(self, root: str) -> int:
        rows = self._q("SELECT COUNT(*) FROM sources WHERE root=? AND state IN ('archived','empty')", (root,))
        return int(rows[0][0])

    def sources_of(self, hash: str) -> list[str]:
        return [r[0] for r in self._q("SELECT path FROM sources WHERE hash=? ORDER BY first_seen", (hash,))]

    # --- videos ----------------------------------------------------------------------------------

    def video(self, hash: str) -> VideoRecord | None:
        rows = self._q("SELECT * FROM videos WHERE hash=?", (hash,))
        return _row_to_video(rows[0]) if rows else None

    def video_by_path(self, archive_path: str) -> VideoRecord | None:
        rows = self._q("SELECT * FROM videos WHERE archive_path=?", (archive_path,))
        return _row_to_video(rows[0]) if rows else None

    def size_known(self, size: int) -> bool:
        return bool(self._q("SELECT 1 FROM videos WHERE size=? LIMIT 1", (size,)))

    def add_video(self, v: VideoRecord) -> bool:
        """Insert a video; False if its hash is already there (another worker or process won)."""
        with self.tx() as db:
            cur = db.execute(
                """INSERT OR IGNORE INTO videos(hash, size, archive_path, capture_time, capture_source, label, media,
                                               probe_error, first_seen, archived_at, verified_at)
                   VALUES(?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    v.hash, v.size, v.archive_path, v.capture_time, v.capture_source, v.label,
                    json.dumps(v.media) if v.media is not None else None, v.probe_error, v.first_seen,
                    v.archived_at, v.verified_at,
                ),
            )  # fmt: skip
            for s in v.sources:
                self.record_source(s, v.hash, "archived")
            return cur.rowcount == 1

    def iter_videos(self) -> list[VideoRecord]:
        return [_row_to_video(r) for r in self._q("SELECT * FROM videos ORDER BY archive_path")]

    def videos_for_scrub(self, limit: int) -> list[VideoRecord]:
        rows = self._q("SELECT * FROM videos ORDER BY COALESCE(verified_at, 0), archive_path LIMIT ?", (limit,))
        return [_row_to_video(r) for r in rows]

    def mark_verified(self, hash: str, at: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE videos SET verified_at=? WHERE hash=?", (at, hash))

    def clear_for_reindex(self) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM videos")
            db.execute("DELETE FROM sources")
            self._clear_neardup(db)

    # --- near-duplicates: signatures, groups, similar takes ----------------------------------------

    def _clear_neardup(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM signatures")
        db.execute("DELETE FROM dupe_members")
        db.execute("DELETE FROM similar_takes")
        # signature row ids start over: an index file built before names other signatures
        db.execute("INSERT OR REPLACE INTO meta VALUES('neardup_generation', lower(hex(randomblob(8))))")

    def neardup_generation(self) -> str:
        return self.get_meta("neardup_generation") or ""

    def unsigned(self, version: int, limit: int) -> list[VideoRecord]:
        """Videos with no signature of this version (nor a recorded failure), oldest first."""
        rows = self._q(
            "SELECT v.* FROM videos v WHERE NOT EXISTS "
            "(SELECT 1 FROM signatures s WHERE s.hash = v.hash AND s.version = ?) ORDER BY v.first_seen LIMIT ?",
            (version, limit),
        )
        return [_row_to_video(r) for r in rows]

    def any_unsigned(self) -> bool:
        """Cheap check before loading the signature machinery at all."""
        return bool(
            self._q("SELECT 1 FROM videos v LEFT JOIN signatures s ON s.hash = v.hash WHERE s.hash IS NULL LIMIT 1")
        )

    def last_video_rowid(self) -> int:
        """The newest video's row id: the backfill's cheap 'anything new?' (one index lookup)."""
        return int(self._q("SELECT COALESCE(MAX(rowid), 0) FROM videos")[0][0])

    def videos_after(self, rowid: int, limit: int = 1000) -> list[tuple[int, VideoRecord]]:
        rows = self._q("SELECT rowid AS r, * FROM videos WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit))
        return [(int(r["r"]), _row_to_video(r)) for r in rows]

    def is_signed(self, hash: str, version: int) -> bool:
        return bool(self._q("SELECT 1 FROM signatures WHERE hash=? AND version=?", (hash, version)))

    def save_signature(self, hash: str, version: int, data: bytes | None, error: str | None,
                       keys: bytes | None = None) -> int:  # fmt: skip
        """Store (or replace) a video's signature and the frame hashes the band index holds for it; returns
        its row id, the name the band index uses."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO signatures(hash, version, data, keys, error, computed_at) VALUES(?,?,?,?,?,?) "
                "ON CONFLICT(hash) DO UPDATE SET version=excluded.version, data=excluded.data, keys=excluded.keys, "
                "error=excluded.error, computed_at=excluded.computed_at",
                (hash, version, data, keys, error, time.time()),
            )
            row = db.execute("SELECT id FROM signatures WHERE hash=?", (hash,)).fetchone()
        return int(row[0])

    def signatures_by_id(self, ids: list[int], version: int) -> list[tuple[int, str, bytes]]:
        """(id, video hash, data) of the given signatures that exist, have data and are of this version."""
        out: list[tuple[int, str, bytes]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._q(
                f"SELECT id, hash, data FROM signatures WHERE id IN ({marks}) AND version=? AND data IS NOT NULL",
                (*chunk, version),
            )
            out += [(int(r[0]), r[1], bytes(r[2])) for r in rows]
        return out

    def signature_of(self, hash: str, version: int) -> tuple[int, bytes] | None:
        rows = self._q("SELECT id, data FROM signatures WHERE hash=? AND version=? AND data IS NOT NULL",
                       (hash, version))  # fmt: skip
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def iter_index_keys(self, version: int, after_id: int = 0, batch: int = 5000) -> Iterator[tuple[int, bytes]]:
        """(id, index keys) of every signature, in id order, a batch at a time (bounded memory)."""
        last = after_id
        while True:
            rows = self._q(
                "SELECT id, keys FROM signatures WHERE id > ? AND version=? AND keys IS NOT NULL ORDER BY id LIMIT ?",
                (last, version, batch),
            )
            if not rows:
                return
            for r in rows:
                yield int(r[0]), bytes(r[1])
            last = int(rows[-1][0])

    def signature_counts(self, version: int) -> dict[str, int]:
        done = self._q("SELECT COUNT(*), SUM(error IS NOT NULL) FROM signatures WHERE version=?", (version,))[0]
        total = self._q("SELECT COUNT(*) FROM videos")[0][0]
        return {"videos": total, "signed": int(done[0] or 0), "unsignable": int(done[1] or 0)}

    # groups: each member row names the group (its first member's hash) and the member it matched best

    def group_of(self, hash: str) -> str | None:
        rows = self._q("SELECT grp FROM dupe_members WHERE hash=?", (hash,))
        return rows[0][0] if rows else None

    def join_group(self, hash: str, grp: str, best: str | None, similarity: float | None,
                   audio: float | None) -> None:  # fmt: skip
        with self.tx() as db:
            db.execute(
                "INSERT INTO dupe_members(hash, grp, best, similarity, audio) VALUES(?,?,?,?,?) "
                "ON CONFLICT(hash) DO UPDATE SET grp=excluded.grp, best=COALESCE(excluded.best, best), "
                "similarity=COALESCE(excluded.similarity, similarity), audio=COALESCE(excluded.audio, audio)",
                (hash, grp, best, similarity, audio),
            )

    def merge_groups(self, keep: str, gone: str) -> None:
        """One group absorbs another (a new video matched both): one UPDATE, no sidecar rewritten."""
        with self.tx() as db:
            db.execute("UPDATE dupe_members SET grp=? WHERE grp=?", (keep, gone))

    def link_members(self, a: str, b: str) -> None:
        """Put two videos in one group (union of their groups), as a reindex rebuilds groups from links."""
        with self.tx() as db:
            ga = db.execute("SELECT grp FROM dupe_members WHERE hash=?", (a,)).fetchone()
            gb = db.execute("SELECT grp FROM dupe_members WHERE hash=?", (b,)).fetchone()
            if ga and gb:
                if ga[0] != gb[0]:
                    keep, gone = sorted((ga[0], gb[0]))
                    db.execute("UPDATE dupe_members SET grp=? WHERE grp=?", (keep, gone))
                return
            grp = ga[0] if ga else gb[0] if gb else min(a, b)
            for h in (a, b):
                db.execute("INSERT OR IGNORE INTO dupe_members(hash, grp) VALUES(?, ?)", (h, grp))

    def group_members(self, grp: str) -> list[dict[str, Any]]:
        rows = self._q("SELECT hash, grp, best, similarity, audio FROM dupe_members WHERE grp=? ORDER BY rowid", (grp,))
        return [dict(r) for r in rows]

    def dupe_groups(self) -> list[str]:
        return [r[0] for r in self._q("SELECT grp FROM dupe_members GROUP BY grp HAVING COUNT(*) > 1 ORDER BY grp")]

    def near_dupes_of(self, hash: str) -> list[tuple[str, float]]:
        """The other members of this video's group (the same clip), with the similarity that joined them."""
        rows = self._q(
            "SELECT m.hash, m.best, m.similarity, me.best, me.similarity FROM dupe_members me "
            "JOIN dupe_members m ON m.grp = me.grp AND m.hash != me.hash WHERE me.hash=?",
            (hash,),
        )
        out = []
        for other, other_best, other_sim, my_best, my_sim in rows:
            if my_best == other and my_sim is not None:
                sim = my_sim
            elif other_best == hash and other_sim is not None:
                sim = other_sim
            else:
                sim = min(x for x in (my_sim, other_sim, 1.0) if x is not None)
            out.append((other, float(sim)))
        return out

    def add_similar(self, a: str, b: str, similarity: float, audio: float | None) -> None:
        a, b = min(a, b), max(a, b)
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO similar_takes(a, b, similarity, audio) VALUES(?,?,?,?)",
                (a, b, similarity, audio),
            )

    def similar_of(self, hash: str) -> list[tuple[str, float, float | None]]:
        rows = self._q(
            "SELECT b, similarity, audio FROM similar_takes WHERE a=? UNION ALL "
            "SELECT a, similarity, audio FROM similar_takes WHERE b=?",
            (hash, hash),
        )
        return [(r[0], float(r[1]), r[2]) for r in rows]

    def all_similar(self) -> list[tuple[str, str, float, float | None]]:
        return [(r[0], r[1], float(r[2]), r[3]) for r in self._q("SELECT a, b, similarity, audio FROM similar_takes")]

    def set_origin(self, hash: str, origin: str | None) -> None:
        with self.tx() as db:
            db.execute("UPDATE videos SET origin=? WHERE hash=?", (origin, hash))

    def origin(self, hash: str) -> str | None:
        rows = self._q("SELECT origin FROM videos WHERE hash=?", (hash,))
        return rows[0][0] if rows else None

    # --- events, roots, status -------------------------------------------------------------------

    def log_event(self, level: str, kind: str, message: str, path: str | None = None, hash: str | None = None) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO events(at, level, kind, path, hash, message) VALUES(?,?,?,?,?,?)",
                (time.time(), level, kind, path, hash, message),
            )
            # Keep the log bounded: it is for `status`, not an audit trail.
            db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - 5000")

    def last_event(self, level: str | None = None, kind: str | None = None) -> dict[str, Any] | None:
        sql, args = "SELECT * FROM events WHERE 1=1", []
        if level:
            sql += " AND level=?"
            args.append(level)
        if kind:
            sql += " AND kind=?"
            args.append(kind)
        rows = self._q(sql + " ORDER BY id DESC LIMIT 1", tuple(args))
        return dict(rows[0]) if rows else None

    def update_root(self, path: str, **fields: Any) -> None:
        bad = set(fields) - {"mode", "health", "detail", "last_event", "last_rescan"}
        if bad:
            raise ValueError(f"unknown root fields {bad}")
        sets = "".join(f"{k}=?, " for k in fields)
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO roots(path, updated) VALUES(?, ?)", (path, time.time()))
            db.execute(f"UPDATE roots SET {sets}updated=? WHERE path=?", (*fields.values(), time.time(), path))

    def roots(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._q("SELECT * FROM roots ORDER BY path")]

    def counts(self) -> dict[str, Any]:
        v = self._q("SELECT COUNT(*), COALESCE(SUM(size),0), MAX(archived_at) FROM videos")[0]
        by_state = {r[0]: r[1] for r in self._q("SELECT state, COUNT(*) FROM sources GROUP BY state")}
        unverified = self._q("SELECT COUNT(*) FROM videos WHERE verified_at IS NULL")[0][0]
        probe_errors = self._q("SELECT COUNT(*) FROM videos WHERE probe_error IS NOT NULL")[0][0]
        return {
            "videos": v[0], "bytes": v[1], "last_ingest": v[2], "sources": by_state,
            "never_verified": unverified, "probe_errors": probe_errors,
        }  # fmt: skip

    def failures(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT path, attempts, last_error, last_seen FROM sources WHERE state='failed' ORDER BY last_seen DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    # --- problems --------------------------------------------------------------------------------

    def set_problem(self, p: Problem) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO problems(key, kind, severity, message, since) VALUES(?,?,?,?,?)",
                (p.key, p.kind, p.severity, p.message, p.since),
            )

    def clear_problem(self, key: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM problems WHERE key=?", (key,))

    def problems(self) -> list[Problem]:
        from draftsync.problems import Problem

        rows = self._q("SELECT key, kind, message, severity, since FROM problems ORDER BY since, key")
        return [Problem(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # --- push (issue: push stage) ----------------------------------------------------------------

    def push_row(self, hash: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM pushes WHERE hash=?", (hash,))
        return dict(rows[0]) if rows else None

    def push_rows(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self._q(f"SELECT * FROM pushes WHERE state IN ({marks}) ORDER BY queued_at, hash", states)
        else:
            rows = self._q("SELECT * FROM pushes ORDER BY queued_at, hash")
        return [dict(r) for r in rows]

    def enqueue_push(self, hash: str, state: str = "queued", reason: str | None = None) -> bool:
        now = time.time()
        with self.tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO pushes(hash, state, reason, queued_at, updated_at) VALUES(?,?,?,?,?)",
                (hash, state, reason, now, now),
            )
            return cur.rowcount == 1

    def update_push(self, hash: str, **fields: Any) -> None:
        allowed = {
            "state", "backend", "account", "remote_id", "upload_url", "upload_started", "chunk_size", "chunk_count",
            "attempts", "reason", "code", "log_id", "next_try",
        }  # fmt: skip
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown push fields {bad}")
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as db:
            db.execute(f"UPDATE pushes SET {sets}, updated_at=? WHERE hash=?", (*fields.values(), time.time(), hash))

    def record_call(self, account: str, kind: str, ok: bool = True, at: float | None = None) -> int:
        """Count a call against the budget (before it is made: an attempt counts even if refused)."""
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO push_calls(at, account, kind, ok) VALUES(?,?,?,?)",
                (at if at is not None else time.time(), account, kind, int(ok)),
            )
            db.execute("DELETE FROM push_calls WHERE at < ?", (time.time() - 8 * 86400,))
            return int(cur.lastrowid or 0)

    def mark_call_ok(self, call_id: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE push_calls SET ok=1 WHERE id=?", (call_id,))

    def calls_since(self, account: str, kind: str, since: float, ok_only: bool = False) -> list[float]:
        sql = "SELECT at FROM push_calls WHERE account=? AND kind=? AND at>=?"
        if ok_only:
            sql += " AND ok=1"
        return [r[0] for r in self._q(sql + " ORDER BY at", (account, kind, since))]

    def videos_since(self, since: float) -> list[VideoRecord]:
        rows = self._q("SELECT * FROM videos WHERE first_seen>=? ORDER BY first_seen, hash", (since,))
        return [_row_to_video(r) for r in rows]
