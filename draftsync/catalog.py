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
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from draftsync import names
from draftsync.errors import CatalogCorrupt, ConfigError, StateFull

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
    # Ingest under faults: ctime completes a source's identity (a rewrite in place that restores size and
    # mtime still changes it); error_kind says why a file is held back (failing, unreadable).
    5: """
    ALTER TABLE sources ADD COLUMN ctime_ns INTEGER;
    ALTER TABLE sources ADD COLUMN error_kind TEXT;
    CREATE INDEX sources_state ON sources(state);
    """,
    # push: an explicit state machine. Items carry when they entered their state on the wall clock and on the
    # boot clock; the init ledger says what each answer proved; dry-run rows become plain queued ones; an
    # upload URL is kept only while its upload runs.
    6: """
    ALTER TABLE pushes ADD COLUMN since REAL;
    ALTER TABLE pushes ADD COLUMN since_boot TEXT;
    ALTER TABLE pushes ADD COLUMN since_mono REAL;
    ALTER TABLE pushes ADD COLUMN wait REAL NOT NULL DEFAULT 0;
    ALTER TABLE pushes ADD COLUMN ref TEXT;
    ALTER TABLE pushes ADD COLUMN upload_boot TEXT;
    ALTER TABLE pushes ADD COLUMN upload_mono REAL;
    UPDATE pushes SET since = updated_at, wait = MAX(0, COALESCE(next_try, 0) - updated_at);
    UPDATE pushes SET state = 'queued', remote_id = NULL WHERE state = 'dry_run';
    UPDATE pushes SET state = 'starting', ref = hash WHERE state = 'uploading' AND remote_id IS NULL;
    UPDATE pushes SET upload_url = NULL WHERE state != 'uploading';
    ALTER TABLE push_calls ADD COLUMN outcome TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE push_calls ADD COLUMN boot TEXT;
    ALTER TABLE push_calls ADD COLUMN mono REAL;
    ALTER TABLE push_calls ADD COLUMN span REAL NOT NULL DEFAULT 0;
    ALTER TABLE push_calls ADD COLUMN hash TEXT;
    UPDATE push_calls SET outcome = 'ok' WHERE ok = 1;
    DELETE FROM push_calls WHERE kind = 'status';
    CREATE INDEX push_calls_hash ON push_calls(hash)
    """,
    # Monitoring: thumbnails made (or why not), and the indexes the status page pages by.
    9: """
    CREATE TABLE thumbs(
        hash TEXT PRIMARY KEY,
        rel TEXT,
        error TEXT,
        made_at REAL NOT NULL
    );
    CREATE INDEX videos_archived ON videos(archived_at, hash);
    CREATE INDEX events_level ON events(level, id);
    CREATE INDEX IF NOT EXISTS sources_state ON sources(state);
    """,
    7: """
    CREATE TABLE offsite(
        hash TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        etag TEXT,
        upload_id TEXT,
        part_size INTEGER,
        owner INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        next_try REAL,
        queued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        stored_at REAL,
        checked_at REAL
    );
    CREATE INDEX offsite_state ON offsite(state);
    CREATE TABLE offsite_parts(
        hash TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        part INTEGER NOT NULL,
        etag TEXT NOT NULL,
        size INTEGER NOT NULL,
        checksum TEXT,
        PRIMARY KEY(hash, upload_id, part)
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
    # A compact catalog: a source row cost ~500 bytes, a third of it in two indexes that copied whole values.
    # Sources are found by hash through its 16 hex digits after "blake3:" (64 bits: the full value is compared
    # on the few rows that share them), and moved files by inode alone (then dev, size and mtime are compared).
    10: """
    DROP INDEX IF EXISTS sources_hash;
    CREATE INDEX sources_hash16 ON sources(substr(hash, 8, 16));
    DROP INDEX IF EXISTS sources_identity;
    CREATE INDEX sources_inode ON sources(inode)
    """,
    # The offsite copy's state per target: when [offsite] points somewhere else, the old target's rows and
    # the parts of its unfinished uploads are shelved here (not deleted), so switching back finds them and
    # the uploads draftsync started there can still be resumed or aborted.
    11: """
    CREATE TABLE offsite_shelf(
        target TEXT NOT NULL,
        hash TEXT NOT NULL,
        state TEXT NOT NULL,
        etag TEXT,
        upload_id TEXT,
        part_size INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        queued_at REAL NOT NULL,
        stored_at REAL,
        checked_at REAL,
        PRIMARY KEY(target, hash)
    );
    CREATE TABLE offsite_shelf_parts(
        target TEXT NOT NULL,
        hash TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        part INTEGER NOT NULL,
        etag TEXT NOT NULL,
        size INTEGER NOT NULL,
        checksum TEXT,
        PRIMARY KEY(target, hash, upload_id, part)
    )
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)


def make_private_dir(path: Path) -> None:
    """Create the state dir (and parents) as 0700; an existing dir keeps the mode its owner chose."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)


@dataclass(frozen=True)
class Retarget:
    """What `offsite_retarget` did: the target moved away from (None when nothing changed), how many rows of
    the new target came back from the shelf, and the unfinished uploads (archive path, upload id) left on
    the old one."""

    previous: str | None
    restored: int
    unfinished: list[tuple[str, str]]


@dataclass
class SourceSighting:
    path: str
    size: int
    mtime_ns: int
    inode: int
    dev: int
    root: str = ""
    first_seen: float = 0.0
    ctime_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "inode": self.inode,
            "dev": self.dev, "root": self.root, "first_seen": self.first_seen, "ctime_ns": self.ctime_ns,
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


# --- values SQLite cannot hold as they are (ingest under faults) ------------------------------------
# A name that is not UTF-8 is stored as a BLOB of its raw bytes (lossless; equality still works), and a
# nanosecond time beyond SQLite's 64-bit integer (an mtime in year 2300) as tagged text.
_BIG = "ns:"


def _dbp(path: str) -> str | bytes:
    return path if names.is_text(path) else names.raw(path)


def _pyp(value: Any) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _dbi(v: int | None) -> int | str | None:
    return v if v is None or -(2**63) <= v < 2**63 else f"{_BIG}{v}"


def _pyi(v: Any) -> int | None:
    if isinstance(v, str) and v.startswith(_BIG):
        return int(v[len(_BIG) :])
    return None if v is None else int(v)


# A source as a rescan compares it: (path, size, mtime_ns, inode, state, ctime_ns).
SourceRow = tuple[str, int | None, int | None, int | None, str, int | None]


# Sources by content hash, through the index on its first 16 hex digits (two parameters: the hash twice). The
# `+` keeps SQLite's planner from preferring a scan because of the second term.
_BY_HASH = "substr(hash, 8, 16) = substr(?, 8, 16) AND +hash = ?"


def _under(root: str) -> tuple[str, str]:
    """The range of paths strictly below `root`: from `root/` up to `root0` ('0' follows '/')."""
    base = root.rstrip("/")
    return base + "/", base + "0"


def _translate(e: sqlite3.Error, path: Path) -> Exception:
    """A full state disk or a damaged file, told in words; any other SQLite error is returned as it is."""
    code = getattr(e, "sqlite_errorcode", None)
    text = str(e)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return StateFull(
            f"the state disk is full: the catalog {path} cannot be written ({text}); ingest pauses until there "
            "is space again"
        )
    if code == sqlite3.SQLITE_IOERR or "disk I/O error" in text:
        try:
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 1 << 20:
                return StateFull(f"the state disk is full: the catalog {path} cannot be written ({text})")
        except OSError:
            pass
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "not a database" in text or "malformed" in text:
        return CatalogCorrupt(
            f"the catalog {path} is damaged ({text}). Run `draftsync reindex` to rebuild it from the archive's "
            "sidecars (the damaged file is kept beside it)"
        )
    return e


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
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise _translate(e, path) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (nestable); BEGIN IMMEDIATE so two processes never deadlock on upgrade.

        `durable=False` commits without waiting for the disk (synchronous=NORMAL for this one commit): the
        rows survive a crash of the process, and a power cut only if a later durable commit (or a
        checkpoint) has fsync'd the log after them, as it does every earlier commit's. For rows that the
        archive can give back (a video placed and described by its sidecar), never for push state."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            try:
                if not durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                self._full_sync()
                raise _translate(e, self.path) from None
            self._depth = 1
            try:
                yield self._db
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # a failed COMMIT or a full disk may have ended the transaction already
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, self.path) from None
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as e:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise _translate(e, self.path) from None
            finally:
                self._depth = 0
                if not durable:
                    self._full_sync()

    def _full_sync(self) -> None:
        try:
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            pass  # not in a transaction here, so this cannot fail short of a closed connection

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise _translate(e, self.path) from None

    def _version(self) -> int:
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        # Read first: opening an up-to-date catalog writes nothing, so `status` works on a full state disk.
        if self._version() == SCHEMA_VERSION:
            return
        with self.tx() as db:
            version = self._version()
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

    def source_unchanged(self, path: str, size: int, mtime_ns: int, inode: int, ctime_ns: int | None = None) -> bool:
        """True if this exact version of `path` was already handled (archived or known empty).

        ctime is compared when both sides know it (rows rebuilt from old sidecars do not)."""
        rows = self._q(
            "SELECT 1 FROM sources WHERE path=? AND size=? AND mtime_ns=? AND inode=? AND state IN ('archived','empty') "
            "AND (ctime_ns IS NULL OR ? IS NULL OR ctime_ns=?)",
            (_dbp(path), size, _dbi(mtime_ns), inode, _dbi(ctime_ns), _dbi(ctime_ns)),
        )
        return bool(rows)

    def known_paths(self) -> dict[str, tuple[int, int, int, str, int | None]]:
        """path -> (size, mtime_ns, inode, state, ctime_ns) for every source; one query for a whole rescan."""
        with self._lock:
            cur = self._db.cursor()
            cur.row_factory = None  # plain tuples: this runs over every source on each rescan
            try:
                rows = cur.execute("SELECT path, size, mtime_ns, inode, state, ctime_ns FROM sources").fetchall()
            except sqlite3.Error as e:
                raise _translate(e, self.path) from None
        out: dict[str, tuple[int, int, int, str, int | None]] = {}
        for p, size, mt, ino, state, ct in rows:
            if isinstance(p, bytes) or isinstance(mt, str) or isinstance(ct, str):
                p, mt, ct = _pyp(p), _pyi(mt), _pyi(ct)
            out[p] = (size, mt, ino, state, ct)
        return out

    def sources_under(self, root: str) -> Iterator[SourceRow]:
        """Every source under `root` whose path is text, in SQLite's path order (BINARY on UTF-8: the
        code-point order `walk.walk` yields), streamed: a rescan merges them with its walk and never holds
        them all. Read through a connection of its own (a WAL snapshot), so writers are not held up."""
        lo, hi = _under(root)
        return self._stream(
            "SELECT path, size, mtime_ns, inode, state, ctime_ns FROM sources WHERE path >= ? AND path < ? "
            "ORDER BY path",
            (lo, hi),
        )

    def odd_sources_under(self, root: str) -> dict[str, SourceRow]:
        """Sources under `root` whose names are not UTF-8 (BLOBs, which sort after all text): few, by path."""
        lo, hi = _under(root)
        lo_b, hi_b = os.fsencode(lo), os.fsencode(hi)
        return {r[0]: r for r in self._stream(
            "SELECT path, size, mtime_ns, inode, state, ctime_ns FROM sources WHERE path >= ? AND path < ?",
            (lo_b, hi_b))}  # fmt: skip

    def _stream(self, sql: str, args: tuple[Any, ...]) -> Iterator[SourceRow]:
        try:
            db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?mode=ro", uri=True, timeout=30,
                                 check_same_thread=False)  # fmt: skip
        except sqlite3.Error as e:
            raise _translate(e, self.path) from None
        try:
            cur = db.execute(sql, args)
            while rows := cur.fetchmany(4096):
                for r in rows:
                    if type(r[0]) is bytes or type(r[2]) is str or type(r[5]) is str:
                        r = (_pyp(r[0]), r[1], _pyi(r[2]), r[3], r[4], _pyi(r[5]))
                    yield r
        except sqlite3.Error as e:
            raise _translate(e, self.path) from None
        finally:
            db.close()

    def learn_ctimes(self, found: list[tuple[str, int]]) -> None:
        """Record the ctime of sources catalogued without one (rows rebuilt from old sidecars) once a walk has
        found them unchanged otherwise."""
        with self.tx() as db:
            db.executemany("UPDATE sources SET ctime_ns=? WHERE path=? AND ctime_ns IS NULL",
                           [(_dbi(ct), _dbp(p)) for p, ct in found])  # fmt: skip

    def hash_by_identity(self, dev: int, inode: int, size: int, mtime_ns: int) -> str | None:
        """A file moved or renamed inside the inbox keeps its inode, size and mtime: no need to re-read."""
        rows = self._q(
            "SELECT hash FROM sources WHERE dev=? AND inode=? AND size=? AND mtime_ns=? AND state='archived' "
            "AND hash IS NOT NULL LIMIT 1",
            (dev, inode, size, _dbi(mtime_ns)),
        )
        return rows[0][0] if rows else None

    def record_source(self, s: SourceSighting, hash: str | None, state: str, *, durable: bool = True) -> None:
        now = time.time()
        with self.tx(durable=durable) as db:
            db.execute(
                """INSERT INTO sources(path, root, size, mtime_ns, inode, dev, hash, state, first_seen, last_seen,
                                       attempts, last_error, ctime_ns, error_kind)
                   VALUES(?,?,?,?,?,?,?,?,?,?,0,NULL,?,NULL)
                   ON CONFLICT(path) DO UPDATE SET root=excluded.root, size=excluded.size,
                     mtime_ns=excluded.mtime_ns, inode=excluded.inode, dev=excluded.dev, hash=excluded.hash,
                     state=excluded.state, last_seen=excluded.last_seen, attempts=0, last_error=NULL,
                     ctime_ns=excluded.ctime_ns, error_kind=NULL""",
                (_dbp(s.path), _dbp(s.root), s.size, _dbi(s.mtime_ns), s.inode, s.dev, hash, state,
                 s.first_seen or now, now, _dbi(s.ctime_ns)),
            )  # fmt: skip

    def record_failure(self, path: str, root: str, message: str, kind: str = "failing") -> int:
        """Count a failed attempt on `path` (`kind`: failing | unreadable); returns the attempts so far."""
        now = time.time()
        message = names.readable(message)
        with self.tx() as db:
            db.execute(
                """INSERT INTO sources(path, root, state, first_seen, last_seen, attempts, last_error, error_kind)
                   VALUES(?,?,'failed',?,?,1,?,?)
                   ON CONFLICT(path) DO UPDATE SET state='failed', attempts=attempts+1, last_error=excluded.last_error,
                     last_seen=excluded.last_seen, error_kind=excluded.error_kind""",
                (_dbp(path), _dbp(root), now, now, message, kind),
            )
            row = db.execute("SELECT attempts FROM sources WHERE path=?", (_dbp(path),)).fetchone()
        return int(row[0])

    def mark_gone(self, paths: list[str]) -> None:
        with self.tx() as db:
            db.executemany(
                "UPDATE sources SET state='gone' WHERE path=? AND state!='gone'", [(_dbp(p),) for p in paths]
            )

    def present_sources_under(self, root: str) -> int:
        rows = self._q("SELECT COUNT(*) FROM sources WHERE root=? AND state IN ('archived','empty')", (root,))
        return int(rows[0][0])

    def sources_of(self, hash: str) -> list[str]:
        rows = self._q(f"SELECT path FROM sources WHERE {_BY_HASH} ORDER BY first_seen", (hash, hash))
        return [_pyp(r[0]) for r in rows]

    def sightings_of(self, hash: str) -> list[SourceSighting]:
        """Every source path seen with this content: the truth a sidecar's `sources` is written from."""
        rows = self._q(
            f"SELECT path, size, mtime_ns, inode, dev, root, first_seen, ctime_ns FROM sources WHERE {_BY_HASH} "
            "AND state IN ('archived','gone') ORDER BY first_seen, path",
            (hash, hash),
        )
        return [
            SourceSighting(_pyp(r[0]), r[1] or 0, _pyi(r[2]) or 0, r[3] or 0, r[4] or 0, _pyp(r[5] or ""),
                           r[6] or 0.0, _pyi(r[7]))
            for r in rows
        ]  # fmt: skip

    # --- videos ----------------------------------------------------------------------------------

    def video(self, hash: str) -> VideoRecord | None:
        rows = self._q("SELECT * FROM videos WHERE hash=?", (hash,))
        return _row_to_video(rows[0]) if rows else None

    def video_by_path(self, archive_path: str) -> VideoRecord | None:
        if not names.is_text(archive_path):
            return None  # draftsync only places UTF-8 names
        rows = self._q("SELECT * FROM videos WHERE archive_path=?", (archive_path,))
        return _row_to_video(rows[0]) if rows else None

    def recent_videos(self, n: int) -> list[VideoRecord]:
        """The last `n` archived videos (to recognise the archive's disk by its content)."""
        rows = self._q("SELECT * FROM videos ORDER BY archived_at DESC LIMIT ?", (n,))
        return [_row_to_video(r) for r in rows]

    def video_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM videos")[0][0])

    def size_known(self, size: int) -> bool:
        return bool(self._q("SELECT 1 FROM videos WHERE size=? LIMIT 1", (size,)))

    def add_video(self, v: VideoRecord, *, durable: bool = True, event: tuple[str, str, str] | None = None) -> bool:
        """Insert a video; False if its hash is already there (another worker or process won). `event`
        (kind, message, source path) is logged in the same transaction; `durable=False`: see `tx`."""
        with self.tx(durable=durable) as db:
            if event is not None:
                self.log_event("info", event[0], event[1], event[2], v.hash)
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
                (time.time(), level, kind, names.readable(path) if path else path, hash, names.readable(message)),
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
            "SELECT path, attempts, last_error, last_seen, COALESCE(error_kind, 'failing') AS kind FROM sources "
            "WHERE state='failed' ORDER BY last_seen DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) | {"path": names.readable(_pyp(r["path"]))} for r in rows]

    def failing_count(self, min_attempts: int = 1) -> int:
        return int(self._q("SELECT COUNT(*) FROM sources WHERE state='failed' AND attempts>=?", (min_attempts,))[0][0])

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

    # --- push ---------------------------------------------------------------------------------------
    # The push queue (one row per video ever considered) and the ledger of init calls the budget reads.
    # push/queue.py turns rows into `machine.Item`s; the columns mirror its fields.

    _PUSH_COLUMNS = (
        "state", "backend", "account", "remote_id", "upload_url", "upload_started", "upload_boot", "upload_mono",
        "chunk_size", "chunk_count", "attempts", "ref", "reason", "code", "log_id", "since", "since_boot",
        "since_mono", "wait",
    )  # fmt: skip

    def push_row(self, hash: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM pushes WHERE hash=?", (hash,))
        return dict(rows[0]) if rows else None

    def push_rows(
        self, states: tuple[str, ...] | None = None, limit: int = -1, offset: int = 0
    ) -> list[dict[str, Any]]:
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        rows = self._q(f"SELECT * FROM pushes {where} ORDER BY queued_at, hash LIMIT ? OFFSET ?",
                       (*(states or ()), limit, offset))  # fmt: skip
        return [dict(r) for r in rows]

    def push_rows_latest(self, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
        """The `limit` rows in `states` changed last (the status page's finished items)."""
        rows = self._q(f"SELECT * FROM pushes WHERE state IN ({','.join('?' * len(states))}) "
                       "ORDER BY updated_at DESC, queued_at, hash LIMIT ?", (*states, limit))  # fmt: skip
        return [dict(r) for r in rows]

    def videos_of(self, hashes: list[str]) -> dict[str, VideoRecord]:
        """The videos with these hashes, by hash, in one query per 500 (those not catalogued are left out)."""
        out: dict[str, VideoRecord] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            for r in self._q(f"SELECT * FROM videos WHERE hash IN ({','.join('?' * len(chunk))})", tuple(chunk)):
                v = _row_to_video(r)
                out[v.hash] = v
        return out

    def push_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._q("SELECT state, COUNT(*) FROM pushes GROUP BY state")}

    def save_push(self, hash: str, fields: dict[str, Any], *, insert_only: bool = False) -> bool:
        """Write a push row (insert it if new). With `insert_only`, an existing row is left alone and
        False is returned."""
        bad = set(fields) - set(self._PUSH_COLUMNS)
        if bad:
            raise ValueError(f"unknown push fields {bad}")
        now = time.time()
        cols = ", ".join(fields)
        marks = ", ".join("?" * len(fields))
        conflict = (
            "NOTHING"
            if insert_only
            else "UPDATE SET " + ", ".join(f"{k}=excluded.{k}" for k in fields) + ", updated_at=excluded.updated_at"
        )
        with self.tx() as db:
            cur = db.execute(
                f"INSERT INTO pushes(hash, {cols}, queued_at, updated_at) VALUES(?, {marks}, ?, ?) "
                f"ON CONFLICT(hash) DO {conflict}",
                (hash, *fields.values(), now, now),
            )
            return cur.rowcount == 1

    def requeued(self, hash: str) -> None:
        """A video queued again on purpose goes to the back of the queue."""
        with self.tx() as db:
            db.execute("UPDATE pushes SET queued_at=? WHERE hash=?", (time.time(), hash))

    def ledger(self, account: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._q(
            "SELECT id, kind, at, boot, mono, outcome, span FROM push_calls WHERE account=? AND kind IN ('init','block') "
            "ORDER BY id", (account,))]  # fmt: skip

    def ledger_add(self, account: str, kind: str, at: float, boot: str, mono: float, *, outcome: str = "unknown",
                   span: float = 0.0, hash: str | None = None) -> int:  # fmt: skip
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO push_calls(at, account, kind, ok, outcome, boot, mono, span, hash) VALUES(?,?,?,?,?,?,?,?,?)",
                (at, account, kind, int(outcome == "ok"), outcome, boot, mono, span, hash),
            )
            return int(cur.lastrowid or 0)

    def ledger_mark(self, id: int, outcome: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE push_calls SET outcome=?, ok=? WHERE id=?", (outcome, int(outcome == "ok"), id))

    def ledger_last_unknown(self, account: str, hash: str) -> int | None:
        rows = self._q("SELECT id FROM push_calls WHERE account=? AND hash=? AND kind='init' AND outcome='unknown' "
                       "ORDER BY id DESC LIMIT 1", (account, hash))  # fmt: skip
        return int(rows[0][0]) if rows else None

    def ledger_move(self, id: int, at: float, boot: str, mono: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE push_calls SET at=?, boot=?, mono=? WHERE id=?", (at, boot, mono, id))

    def ledger_drop(self, ids: list[int]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM push_calls WHERE id=?", [(i,) for i in ids])

    def mark_push_enabled(self, at: float) -> None:
        """Remember when pushing was first enabled; later calls keep the first time."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES('push_enabled_at', ?)", (str(at),))

    def hash_of_source(self, path: str) -> str | None:
        rows = self._q("SELECT hash FROM sources WHERE path=? AND hash IS NOT NULL", (path,))
        return rows[0][0] if rows else None

    def videos_to_add(
        self, label: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[VideoRecord]:
        """Archived videos by label and capture date (ISO dates, inclusive), oldest first."""
        sql, args = "SELECT * FROM videos WHERE 1=1", []
        if label is not None:
            sql += " AND label=?"
            args.append(label)
        if since is not None:
            sql += " AND substr(capture_time, 1, 10) >= ?"
            args.append(since)
        if until is not None:
            sql += " AND substr(capture_time, 1, 10) <= ?"
            args.append(until)
        return [_row_to_video(r) for r in self._q(sql + " ORDER BY capture_time, hash", tuple(args))]

    def videos_by_hash_prefix(self, prefix: str, limit: int = 2) -> list[VideoRecord]:
        rows = self._q("SELECT * FROM videos WHERE hash >= ? AND hash < ? ORDER BY hash LIMIT ?",
                       (prefix, prefix + "\uffff", limit))  # fmt: skip
        return [_row_to_video(r) for r in rows]

    def count_unqueued_before(self, since: float) -> int:
        """Videos first seen before `since` that the push queue has never considered."""
        rows = self._q("SELECT COUNT(*) FROM videos v LEFT JOIN pushes p ON p.hash = v.hash "
                       "WHERE v.first_seen < ? AND p.hash IS NULL", (since,))  # fmt: skip
        return int(rows[0][0])

    def videos_since(self, since: float) -> list[VideoRecord]:
        rows = self._q("SELECT * FROM videos WHERE first_seen>=? ORDER BY first_seen, hash", (since,))
        return [_row_to_video(r) for r in rows]

    # --- monitoring: thumbnails, the status page, the digest, metrics ------------------------------

    @classmethod
    def open_readonly(cls, path: Path) -> Catalog:
        """A connection that cannot write (the web server's): SQLite refuses any write on it."""
        self = cls.__new__(cls)
        self.path = path
        try:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                       check_same_thread=False, isolation_level=None)  # fmt: skip
            self._db.execute("PRAGMA query_only=ON")
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the catalog {path} for reading: {e}") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        return self

    def set_thumb(self, hash: str, rel: str | None, error: str | None) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO thumbs(hash, rel, error, made_at) VALUES(?,?,?,?)",
                (hash, rel, error, time.time()),
            )

    def thumb(self, hash: str) -> tuple[str | None, str | None] | None:
        """(relative path, error) of a video's thumbnail, or None if none was attempted."""
        rows = self._q("SELECT rel, error FROM thumbs WHERE hash=?", (hash,))
        return (rows[0][0], rows[0][1]) if rows else None

    def unthumbed(self, limit: int) -> list[VideoRecord]:
        """Videos with no thumbnail attempt yet, newest first (the status page fills from the top)."""
        rows = self._q(
            "SELECT v.* FROM videos v LEFT JOIN thumbs t ON t.hash = v.hash WHERE t.hash IS NULL "
            "ORDER BY v.archived_at DESC, v.hash DESC LIMIT ?",
            (limit,),
        )
        return [_row_to_video(r) for r in rows]

    def thumbs_attempted(self) -> int:
        """Videos with a thumbnail or a recorded reason for none (rows of videos gone are pruned by reindex)."""
        return int(self._q("SELECT COUNT(*) FROM thumbs")[0][0])

    def prune_thumbs(self) -> int:
        with self.tx() as db:
            return db.execute("DELETE FROM thumbs WHERE hash NOT IN (SELECT hash FROM videos)").rowcount

    def archive_totals(self) -> dict[str, Any]:
        """What the page and /metrics show on every request, from indexes only (no scan of the videos rows)."""
        n, total = self._q("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM videos")[0]  # covered by videos_size
        last = self._q("SELECT MAX(archived_at) FROM videos")[0][0]
        failing = self._q("SELECT COUNT(*) FROM sources WHERE state = 'failed'")[0][0]
        return {"videos": int(n), "bytes": int(total), "last_ingest": last, "failing": int(failing)}

    def videos_page(
        self, limit: int, before: tuple[float, str] | None = None
    ) -> list[tuple[VideoRecord, str | None, str | None]]:
        """One page of videos, newest archived first, each with its thumbnail path and error (keyset
        pagination: `before` is the last (archived_at, hash) of the previous page; no page reads the
        whole table)."""
        sql = (
            "SELECT v.*, t.rel AS thumb_rel, t.error AS thumb_error FROM videos v LEFT JOIN thumbs t ON t.hash = v.hash"
        )
        args: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE (v.archived_at, v.hash) < (?, ?)"
            args = before
        rows = self._q(sql + " ORDER BY v.archived_at DESC, v.hash DESC LIMIT ?", (*args, limit))
        return [(_row_to_video(r), r["thumb_rel"], r["thumb_error"]) for r in rows]

    def archived_between(self, start: float, end: float, limit: int) -> tuple[int, int, list[VideoRecord]]:
        """(count, bytes, the `limit` latest) of videos archived in [start, end)."""
        r = self._q("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM videos WHERE archived_at >= ? AND archived_at < ?",
                    (start, end))[0]  # fmt: skip
        rows = self._q(
            "SELECT * FROM videos WHERE archived_at >= ? AND archived_at < ? ORDER BY archived_at DESC, hash DESC "
            "LIMIT ?",
            (start, end, limit),
        )
        return int(r[0]), int(r[1]), [_row_to_video(x) for x in rows]

    def hashes_archived_between(self, start: float, end: float) -> set[str]:
        rows = self._q("SELECT hash FROM videos WHERE archived_at >= ? AND archived_at < ?", (start, end))
        return {x[0] for x in rows}

    def recent_events(self, levels: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(levels))
        rows = self._q(f"SELECT * FROM events WHERE level IN ({marks}) ORDER BY id DESC LIMIT ?", (*levels, limit))
        return [dict(r) for r in rows]

    def push_state_counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._q("SELECT state, COUNT(*) FROM pushes GROUP BY state")}

    def pushes_between(self, state: str, start: float, end: float) -> int:
        rows = self._q("SELECT COUNT(*) FROM pushes WHERE state=? AND updated_at >= ? AND updated_at < ?",
                       (state, start, end))  # fmt: skip
        return int(rows[0][0])

    # --- offsite copy (S3-compatible bucket) --------------------------------------------------------
    # One row per video once the uploader has looked at it: pending, uploading (owner = the pid copying
    # it), stored, or failed with a reason. A multipart upload in progress keeps its id and the parts the
    # store acknowledged, so a restarted process continues it instead of starting again.

    _OFFSITE_FIELDS = frozenset({
        "state", "etag", "upload_id", "part_size", "owner", "attempts", "reason", "next_try", "stored_at", "checked_at",
    })  # fmt: skip

    def offsite_add_missing(self, now: float | None = None) -> int:
        """A pending row for every catalogued video that has none yet; returns how many were added."""
        t = time.time() if now is None else now
        with self.tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO offsite(hash, state, queued_at, updated_at) "
                "SELECT v.hash, 'pending', ?, ? FROM videos v LEFT JOIN offsite o ON o.hash = v.hash "
                "WHERE o.hash IS NULL",
                (t, t),
            )
            return cur.rowcount

    def offsite_target(self) -> str | None:
        """The target (endpoint|bucket|prefix) the `offsite` table's rows are about; None before the first copy."""
        return self.get_meta("offsite_target")

    def offsite_retarget(self, target: str, now: float | None = None) -> Retarget:
        """Make `target` the one the `offsite` table is about. The previous target's rows go to the shelf
        (nothing is forgotten) and `target`'s shelved rows, if it was used before, come back; a row that was
        being copied comes back pending, its multipart upload kept for a resume."""
        t = time.time() if now is None else now
        with self.tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='offsite_target'").fetchone()
            old = row[0] if row is not None else None
            if old == target:
                return Retarget(None, 0, [])
            if old is not None:
                db.execute("DELETE FROM offsite_shelf WHERE target=?", (old,))
                db.execute("DELETE FROM offsite_shelf_parts WHERE target=?", (old,))
                db.execute(
                    "INSERT INTO offsite_shelf(target, hash, state, etag, upload_id, part_size, attempts, reason, "
                    "queued_at, stored_at, checked_at) SELECT ?, hash, state, etag, upload_id, part_size, attempts, "
                    "reason, queued_at, stored_at, checked_at FROM offsite",
                    (old,),
                )
                db.execute(
                    "INSERT INTO offsite_shelf_parts SELECT ?, p.hash, p.upload_id, p.part, p.etag, p.size, p.checksum "
                    "FROM offsite_parts p JOIN offsite o ON o.hash = p.hash AND o.upload_id = p.upload_id",
                    (old,),
                )
                db.execute("DELETE FROM offsite")
                db.execute("DELETE FROM offsite_parts")
            back = db.execute(
                "INSERT INTO offsite(hash, state, etag, upload_id, part_size, owner, attempts, reason, next_try, "
                "queued_at, updated_at, stored_at, checked_at) SELECT s.hash, CASE s.state WHEN 'uploading' THEN "
                "'pending' ELSE s.state END, s.etag, s.upload_id, s.part_size, NULL, s.attempts, s.reason, NULL, "
                "s.queued_at, ?, s.stored_at, s.checked_at FROM offsite_shelf s JOIN videos v ON v.hash = s.hash "
                "WHERE s.target=?",
                (t, target),
            ).rowcount
            db.execute(
                "INSERT INTO offsite_parts SELECT p.hash, p.upload_id, p.part, p.etag, p.size, p.checksum "
                "FROM offsite_shelf_parts p JOIN offsite o ON o.hash = p.hash AND o.upload_id = p.upload_id "
                "WHERE p.target=?",
                (target,),
            )
            db.execute("DELETE FROM offsite_shelf WHERE target=?", (target,))
            db.execute("DELETE FROM offsite_shelf_parts WHERE target=?", (target,))
            db.execute("INSERT OR REPLACE INTO meta VALUES('offsite_target', ?)", (target,))
            left = (
                [(str(r[0]), str(r[1])) for r in db.execute(
                    "SELECT v.archive_path, s.upload_id FROM offsite_shelf s JOIN videos v ON v.hash = s.hash "
                    "WHERE s.target=? AND s.upload_id IS NOT NULL ORDER BY v.archive_path", (old,))]
                if old is not None else []
            )  # fmt: skip
            return Retarget(old, back, left)

    def offsite_shelved(self, target: str) -> list[dict[str, Any]]:
        """The shelved rows of a target draftsync copied to before (read-only commands look, never move)."""
        rows = self._q(
            "SELECT s.*, v.archive_path, v.size FROM offsite_shelf s JOIN videos v ON v.hash = s.hash "
            "WHERE s.target=? ORDER BY v.archive_path",
            (target,),
        )
        return [dict(r) for r in rows]

    def offsite_shelved_uploads(self) -> list[tuple[str, str, str, str]]:
        """Unfinished multipart uploads on targets draftsync moved away from: (target, hash, path, upload id)."""
        rows = self._q(
            "SELECT s.target, s.hash, v.archive_path, s.upload_id FROM offsite_shelf s JOIN videos v ON v.hash = s.hash "
            "WHERE s.upload_id IS NOT NULL ORDER BY s.target, v.archive_path"
        )
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def offsite_shelf_forget_upload(self, target: str, hash: str) -> None:
        """A shelved multipart upload was aborted: its row waits without it (switching back starts it anew)."""
        with self.tx() as db:
            db.execute("UPDATE offsite_shelf SET upload_id=NULL WHERE target=? AND hash=?", (target, hash))
            db.execute("DELETE FROM offsite_shelf_parts WHERE target=? AND hash=?", (target, hash))

    def offsite_due(self, now: float, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
        """Rows in `states` whose retry time has come, oldest first, with the video's path and size."""
        marks = ",".join("?" * len(states))
        rows = self._q(
            f"SELECT o.*, v.archive_path, v.size FROM offsite o JOIN videos v ON v.hash = o.hash "
            f"WHERE o.state IN ({marks}) AND COALESCE(o.next_try, 0) <= ? "
            f"ORDER BY o.upload_id IS NULL, o.queued_at, v.archive_path LIMIT ?",
            (*states, now, limit),
        )
        return [dict(r) for r in rows]

    def offsite_take(self, hash: str, owner: int, expect_owner: int | None, now: float) -> bool:
        """Claim a row for `owner` if it is still held by `expect_owner` (compare-and-set across processes)."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE offsite SET state='uploading', owner=?, updated_at=? WHERE hash=? AND owner IS ? "
                "AND state != 'stored'",
                (owner, now, hash, expect_owner),
            )
            return cur.rowcount == 1

    def offsite_row(self, hash: str) -> dict[str, Any] | None:
        rows = self._q(
            "SELECT o.*, v.archive_path, v.size FROM offsite o JOIN videos v ON v.hash = o.hash WHERE o.hash=?", (hash,)
        )
        return dict(rows[0]) if rows else None

    def offsite_rows(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT o.*, v.archive_path, v.size FROM offsite o JOIN videos v ON v.hash = o.hash"
        args: tuple[Any, ...] = ()
        if states:
            sql += f" WHERE o.state IN ({','.join('?' * len(states))})"
            args = states
        return [dict(r) for r in self._q(sql + " ORDER BY v.archive_path", args)]

    def offsite_update(self, hash: str, *, now: float | None = None, **fields: Any) -> None:
        bad = set(fields) - self._OFFSITE_FIELDS
        if bad:
            raise ValueError(f"unknown offsite fields {bad}")
        sets = "".join(f"{k}=?, " for k in fields)
        with self.tx() as db:
            db.execute(
                f"UPDATE offsite SET {sets}updated_at=? WHERE hash=?",
                (*fields.values(), time.time() if now is None else now, hash),
            )
            if "upload_id" in fields and fields["upload_id"] is None:
                db.execute("DELETE FROM offsite_parts WHERE hash=?", (hash,))

    def offsite_requeue(self, hashes: list[str], reason: str) -> None:
        """Back to pending (an object that vanished from the bucket is copied again)."""
        now = time.time()
        with self.tx() as db:
            db.executemany(
                "UPDATE offsite SET state='pending', etag=NULL, owner=NULL, reason=?, next_try=NULL, updated_at=? "
                "WHERE hash=?",
                [(reason, now, h) for h in hashes],
            )

    def offsite_due_now(self) -> int:
        """Waiting videos are due at once (the store answers again, so their backoff has no reason left)."""
        with self.tx() as db:
            return db.execute(
                "UPDATE offsite SET next_try=NULL WHERE state='pending' AND next_try IS NOT NULL"
            ).rowcount

    def offsite_add_part(
        self, hash: str, upload_id: str, part: int, etag: str, size: int, checksum: str | None
    ) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO offsite_parts(hash, upload_id, part, etag, size, checksum) VALUES(?,?,?,?,?,?)",
                (hash, upload_id, part, etag, size, checksum),
            )
            db.execute("UPDATE offsite SET updated_at=? WHERE hash=?", (time.time(), hash))

    def offsite_parts(self, hash: str, upload_id: str) -> dict[int, tuple[str, int, str | None]]:
        rows = self._q(
            "SELECT part, etag, size, checksum FROM offsite_parts WHERE hash=? AND upload_id=?", (hash, upload_id)
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def offsite_upload_ids(self) -> set[str]:
        """Every multipart upload id draftsync recorded, for the current target and shelved ones."""
        return {r[0] for r in self._q("SELECT upload_id FROM offsite WHERE upload_id IS NOT NULL UNION "
                                      "SELECT upload_id FROM offsite_shelf WHERE upload_id IS NOT NULL")}  # fmt: skip

    def offsite_for_scrub(self, limit: int) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT o.*, v.archive_path, v.size FROM offsite o JOIN videos v ON v.hash = o.hash "
            "WHERE o.state='stored' ORDER BY COALESCE(o.checked_at, 0), v.archive_path LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    def offsite_counts(self) -> dict[str, Any]:
        """Videos and bytes per state (videos without a row count as pending), and bytes already sent in parts."""
        rows = self._q(
            "SELECT COALESCE(o.state, 'pending'), COUNT(*), COALESCE(SUM(v.size), 0) FROM videos v "
            "LEFT JOIN offsite o ON o.hash = v.hash GROUP BY 1"
        )
        parts = self._q(
            "SELECT COALESCE(SUM(p.size), 0) FROM offsite_parts p JOIN offsite o ON o.hash = p.hash "
            "AND o.upload_id = p.upload_id WHERE o.state != 'stored'"
        )[0][0]
        return {"videos": {r[0]: r[1] for r in rows}, "bytes": {r[0]: r[2] for r in rows}, "sent_in_parts": parts}
