"""The archive tree: the path template, labels, the one atomic-write helper used for videos and sidecars
alike, sidecars, verify, scrub and reindex.

Contract (design.md): under `archive.root`, files ending in `.json` and anything under a dot-folder is
metadata; every other file is an archived video with a sidecar `<name>.json` beside it. Nothing here
ever replaces an existing video; sidecars are replaced atomically, one update at a time. Archive names
are safe on every filesystem the archive may live on or be browsed from (no Windows-reserved names, no
characters an SMB client cannot open) and a video's name never ends in `.json`. Nothing here creates
the archive root itself: folders are made only below a root that exists (see marker.py).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from string import Formatter
from typing import Any, BinaryIO

from draftsync import names
from draftsync.atomic import AtomicFile, is_temp
from draftsync.catalog import SourceSighting, VideoRecord
from draftsync.config import LabelRule
from draftsync.errors import Abandoned, ArchiveFull, ArchiveMissing, ItemError
from draftsync.fingerprint import READ_CHUNK, MediaFacts, chunk_for, drop_cached, hash_file, hash_from_disk, short

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
MAX_NAME_BYTES = 200

# --- path template -------------------------------------------------------------------------------

# Separators, control characters (C0 and C1) and what Windows/SMB clients cannot open.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f/\\<>:"|?*]')
# Names Windows reserves whatever their extension (CON, con.mp4, COM1.tar ...); an SMB client cannot open them.
# Windows drops spaces before the dot when it looks for a device name, so "CON .mp4" is CON too.
_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$) *(\..*)?$", re.IGNORECASE)


def sanitize_component(value: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component: no separators or control characters, never '.', '..' or hidden, no
    Windows-reserved name, no trailing dot or space (SMB), valid UTF-8 whatever bytes the source had."""
    v = unicodedata.normalize("NFC", names.as_latin1(str(value)))
    v = _UNSAFE.sub("_", v)
    v = v.strip().lstrip(".").rstrip(". ")
    if not v:
        v = "_"
    raw = v.encode("utf-8")
    if len(raw) > max_bytes:
        v = raw[:max_bytes].decode("utf-8", "ignore").rstrip(". ") or "_"
    if _RESERVED.match(v):
        stem, dot, rest = v.partition(".")
        v = f"{stem}_{dot}{rest}"
    return v


def layout_fields(
    *, captured: datetime, digest: str, label: str, ext: str, stem: str, orientation: str | None
) -> dict[str, str]:
    return {
        "year": f"{captured.year:04d}",
        "month": f"{captured.month:02d}",
        "day": f"{captured.day:02d}",
        "date": captured.strftime("%Y-%m-%d"),
        "time": captured.strftime("%H%M%S"),
        "hash8": short(digest, 8),
        "hash": short(digest, 64),
        "label": label,
        "ext": ext.lower(),
        "stem": stem,
        "orientation": orientation or "unknown",
    }


def render_path(layout: str, fields: dict[str, str]) -> str:
    """The archive-relative path for a video: every value sanitized, so none can leave the root."""
    parts = layout.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        rendered = ""
        for literal, name, _spec, _conv in Formatter().parse(part):
            rendered += literal
            if name is None:
                continue
            value = fields[name]
            if name == "ext":
                value = "." + sanitize_component(value.lstrip("."), max_bytes=16) if value else ""
            else:
                value = _UNSAFE.sub("_", value)
            rendered += value
        budget = MAX_NAME_BYTES
        if last and "{ext}" in part:
            ext = "." + sanitize_component(fields["ext"].lstrip("."), max_bytes=16) if fields["ext"] else ""
            stem_part = rendered[: len(rendered) - len(ext)] if ext and rendered.endswith(ext) else rendered
            comp = sanitize_component(stem_part, max_bytes=budget - len(ext.encode())) + ext
            if _RESERVED.match(comp):
                comp = sanitize_component(comp)
        else:
            comp = sanitize_component(rendered, max_bytes=budget)
        if last:
            comp = video_name(comp)
        out.append(comp)
    return "/".join(out)


def video_name(name: str) -> str:
    """A video's file name never reads as metadata: every `.json` file in the archive is a sidecar, and
    our temp names are swept at start-up."""
    if name.lower().endswith(SIDECAR_SUFFIX):
        name += "_"
    if is_temp(name):
        name = "_" + name
    return name


def split_layout(layout: str) -> tuple[str, str]:
    head, _, tail = layout.rpartition("/")
    return head, tail


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Glob with '**' (any number of folders), '*' and '?' (within one folder), '[...]'."""
    i, out = 0, ""
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out += re.escape(c)
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = j + 1
        else:
            out += re.escape(c)
            i += 1
    return re.compile("^" + out + "$", re.IGNORECASE)


def glob_match(pattern: str, path: str) -> bool:
    return bool(glob_to_regex(pattern).match(path))


def choose_label(rules: list[LabelRule], default: str, rel_path: str, name: str, facts: MediaFacts | None) -> str:
    """The first rule whose every condition holds names the label; else the default."""
    for r in rules:
        if r.path and not glob_match(r.path, rel_path):
            continue
        if r.name and not glob_match(r.name, name):
            continue
        if r.orientation and (facts is None or facts.orientation != r.orientation):
            continue
        dur = facts.duration if facts else None
        if r.min_duration is not None and (dur is None or dur < r.min_duration):
            continue
        if r.max_duration is not None and (dur is None or dur > r.max_duration):
            continue
        return r.label
    return default


# --- atomic writes ---------------------------------------------------------------------------------


def free_space(path: Path) -> tuple[int, int] | None:
    """(free bytes, free inodes) for unprivileged writers on the filesystem that holds (or will hold) `path`.

    A filesystem that does not count inodes (btrfs, many network ones) reports 0 files in total; its
    free inodes are given as a large number."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    inodes = st.f_favail if st.f_files else 1 << 62
    return st.f_bavail * st.f_frsize, inodes


def free_bytes(path: Path) -> int | None:
    """Free bytes for unprivileged writers on the filesystem that holds (or will hold) `path`."""
    fs = free_space(path)
    return None if fs is None else fs[0]


class ArchiveFile(AtomicFile):
    """The atomic file, with failures told in the archive's terms: a full disk (bytes or inodes) pauses
    ingest (ArchiveFull), a vanished or read-only disk pauses it too (ArchiveMissing), anything else is a
    per-item error. The target folder must exist unless `mkdir` (never for folders under archive.root,
    which `Archive.make_dirs` creates below a root that exists)."""

    def __init__(self, target_dir: Path, *, mode: int = 0o644, mkdir: bool = False) -> None:
        try:
            super().__init__(target_dir, mode=mode, mkdir=mkdir)
        except OSError as e:
            raise _write_error(e, target_dir) from None

    def write(self, data: bytes | memoryview) -> None:
        try:
            super().write(data)
        except OSError as e:
            raise _write_error(e, self.dir) from None

    def sync(self) -> None:
        try:
            super().sync()
        except OSError as e:
            raise _write_error(e, self.dir) from None

    def commit(self, final: Path, *, replace: bool, sync_dir: bool = True) -> None:
        try:
            super().commit(final, replace=replace, sync_dir=sync_dir)
        except FileExistsError:
            raise
        except OSError as e:
            raise _write_error(e, self.dir) from None


def _write_error(e: OSError, where: Path) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fs = free_space(where)
        if fs is not None and fs[1] == 0:
            return ArchiveFull(
                f"the archive disk has no free inodes (writing in {where}): it cannot hold another file although "
                f"{fs[0] // 2**20} MiB are free; ingest pauses until files can be created again",
                inodes=True,
            )
        return ArchiveFull(f"the archive disk is full (writing in {where}); ingest pauses until space returns")
    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ESTALE):
        return ArchiveMissing(f"the archive folder {where} vanished while writing ({e.strerror}): is its disk still "
                              "mounted? Ingest is paused")  # fmt: skip
    if e.errno == errno.EROFS:
        return ArchiveMissing(f"the archive disk is read-only ({where}); ingest is paused until it is writable")
    return ItemError(f"cannot write in the archive ({where}): {e.strerror or e}", str(where))


def write_json_atomic(path: Path, data: dict[str, Any], *, replace: bool = True) -> None:
    body = (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    with ArchiveFile(path.parent) as f:
        f.write(body)
        f.commit(path, replace=replace)


# --- sidecars --------------------------------------------------------------------------------------


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.name + SIDECAR_SUFFIX)


def _source_dict(s: SourceSighting) -> dict[str, Any]:
    d = s.to_dict() | {"first_seen": _iso(s.first_seen)}
    if not names.is_text(s.path):
        # The readable form for people and the raw bytes (hex) so that nothing is lost.
        d["path"], d["path_bytes"] = names.readable(s.path), names.to_hex(s.path)
    if not names.is_text(s.root):
        d["root"] = names.readable(s.root)
    return d


def sidecar_dict(v: VideoRecord) -> dict[str, Any]:
    return {
        "draftsync_sidecar": SIDECAR_FORMAT,
        "file": PurePosixPath(v.archive_path).name,
        "hash": v.hash,
        "size": v.size,
        "capture_time": v.capture_time,
        "capture_time_source": v.capture_source,
        "label": v.label,
        "first_seen": _iso(v.first_seen),
        "archived_at": _iso(v.archived_at),
        "media": v.media,
        "probe_error": v.probe_error,
        "sources": [_source_dict(s) for s in v.sources],
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _ts(s: str | float | None) -> float:
    if s is None:
        return 0.0
    if isinstance(s, int | float):
        return float(s)
    return datetime.fromisoformat(s).timestamp()


def record_from_sidecar(data: dict[str, Any], archive_path: str) -> VideoRecord:
    """Rebuild a catalog record from a sidecar; raises ValueError naming what is missing or wrong."""
    if not isinstance(data, dict):
        raise ValueError("sidecar is not a JSON object")
    for key in ("hash", "size", "capture_time", "label"):
        if key not in data:
            raise ValueError(f"sidecar lacks '{key}'")
    h = data["hash"]
    if not isinstance(h, str) or not re.fullmatch(r"blake3:[0-9a-f]{64}", h):
        raise ValueError(f"sidecar 'hash' is not a blake3 digest: {str(h)[:80]!r}")
    try:
        size = int(data["size"])
        if size < 0:
            raise ValueError
        sources = [_source_from(s) for s in data.get("sources") or []]
        media = data.get("media")
        if media is not None and not isinstance(media, dict):
            raise ValueError("'media' is not an object")
        return VideoRecord(
            hash=h, size=size, archive_path=archive_path,
            capture_time=str(data["capture_time"]), capture_source=str(data.get("capture_time_source", "unknown")),
            label=str(data["label"]), media=media, probe_error=data.get("probe_error"),
            first_seen=_ts(data.get("first_seen")), archived_at=_ts(data.get("archived_at")), sources=sources,
        )  # fmt: skip
    except (TypeError, KeyError, AttributeError, ValueError, OverflowError) as e:
        raise ValueError(f"sidecar holds a bad value ({type(e).__name__}: {e})".replace(" ()", "")) from None


def _source_from(s: dict[str, Any]) -> SourceSighting:
    path = names.from_hex(s["path_bytes"]) if s.get("path_bytes") else s["path"]
    if not isinstance(path, str):
        raise ValueError("a source path is not text")
    ct = s.get("ctime_ns")
    return SourceSighting(
        path=path, size=int(s.get("size") or 0), mtime_ns=int(s.get("mtime_ns") or 0),
        inode=int(s.get("inode") or 0), dev=int(s.get("dev") or 0), root=str(s.get("root") or ""),
        first_seen=_ts(s.get("first_seen")), ctime_ns=int(ct) if ct is not None else None,
    )  # fmt: skip


# --- the tree ---------------------------------------------------------------------------------------


@dataclass
class CopyResult:
    digest: str
    size: int
    temp: ArchiveFile


# Sidecar updates are read-modify-write (a new source path, a signature, near-duplicates): one at a time,
# whichever Archive object or thread does them, so that concurrent sightings never lose a source.
_SIDECARS = threading.RLock()


@dataclass
class Archive:
    root: Path
    layout: str
    progress: Callable[[int], None] | None = field(default=None, repr=False)

    def make_dirs(self, rel_dir: str) -> Path:
        """Create the folders of `rel_dir` below the root (never the root itself); the target folder."""
        d = self.root
        if not d.is_dir():
            raise ArchiveMissing(
                f"the archive folder {self.root} does not exist: is its disk mounted? Ingest is paused"
            )
        for part in [p for p in rel_dir.split("/") if p]:
            d = d / part
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                pass
            except OSError as e:
                raise _write_error(e, d) from None
        return d

    def path_of(self, rel: str) -> Path:
        p = self.root / rel
        # Belt and braces: the renderer cannot produce an escape, but a hand-edited catalog could.
        if os.path.commonpath([os.path.abspath(p), os.path.abspath(self.root)]) != os.path.abspath(self.root):
            raise ItemError(f"refusing a path outside the archive root: {rel}")
        return p

    def copy_in(
        self,
        src: BinaryIO,
        target_dir: Path,
        hasher: Any,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        beat: Callable[[], None] | None = None,
    ) -> CopyResult:
        """Copy `src` into a temp file in `target_dir`, hashing in the same pass; neither fsync'd nor placed
        (`read_back` makes it durable once the content is known to be new: a duplicate costs no fsync).

        `beat` is called per chunk: a long copy to a slow disk is progress, not a hung worker."""
        tmp = ArchiveFile(target_dir)
        try:
            try:
                size = os.fstat(src.fileno()).st_size
            except (OSError, AttributeError, ValueError, io.UnsupportedOperation):  # not a file: any size
                size = READ_CHUNK
            buf = bytearray(chunk_for(size))
            view = memoryview(buf)
            n = 0
            while True:
                if should_stop():
                    raise Abandoned("stopped during a copy; the partial copy was removed")
                if beat is not None:
                    beat()
                k = src.readinto(buf)  # type: ignore[attr-defined]
                if not k:
                    break
                chunk = view[:k]
                hasher.update(chunk)
                tmp.write(chunk)
                n += k
                if self.progress:
                    self.progress(k)
        except BaseException:
            tmp.abort()
            raise
        return CopyResult("blake3:" + hasher.hexdigest(), n, tmp)

    def read_back(
        self, result: CopyResult, *, should_stop: Callable[[], bool] = lambda: False,
        beat: Callable[[], None] | None = None,
    ) -> tuple[str, int, bool]:  # fmt: skip
        """Make a copy durable and read it back as the disk holds it: fsync, drop its pages from the cache,
        hash it again (all cores), and drop it again (an archive copy need not stay in memory). Returns
        (digest, size, whether the read came from the disk: False only where the system cannot drop
        cached pages, and the check then proves only what the kernel holds)."""
        result.temp.sync()
        result.temp.f.close()  # synced: placing it need not fsync it again
        try:
            fd = os.open(result.temp.tmp, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _write_error(e, result.temp.dir) from None
        try:
            digest, n, from_disk = hash_from_disk(fd, should_stop=should_stop, beat=beat)
            drop_cached(fd)
        except OSError as e:
            raise ItemError(f"cannot read the copy back in {result.temp.dir}: {e.strerror or e}") from None
        finally:
            os.close(fd)
        return digest, n, from_disk

    def place(self, tmp: ArchiveFile, rel: str, digest: str, size: int) -> tuple[str, bool]:
        """Link the verified temp under `rel`, adding a suffix on a clash with other content.

        Returns (final relative path, adopted): adopted is True when the same content was already
        there under that name (a crash between placing and cataloguing), and the temp is dropped.
        The folder is not fsync'd here: the sidecar written next into the same folder does it (one fsync
        for both names), and nothing is catalogued before that.
        """
        base = PurePosixPath(rel)
        for i in range(1000):
            cand = rel if i == 0 else str(base.with_name(f"{base.stem}_{i}{base.suffix}"))
            final = self.path_of(cand)
            try:
                tmp.commit(final, replace=False, sync_dir=False)
                return cand, False
            except FileExistsError:
                if _same_content(final, digest, size):
                    tmp.abort()
                    return cand, True
        tmp.abort()
        raise ItemError(f"too many name clashes for {rel}")

    def write_sidecar(self, v: VideoRecord) -> None:
        """Write the sidecar; keys other stages added (perceptual signature, near-duplicates, origin) stay."""
        with _SIDECARS:
            data = sidecar_dict(v)
            old = self.read_sidecar(v.archive_path)
            if old and old.get("hash") == v.hash:
                data = {**{k: x for k, x in old.items() if k not in data}, **data}
            write_json_atomic(sidecar_path(self.path_of(v.archive_path)), data, replace=True)

    def update_sidecar(self, rel: str, fields: dict[str, Any]) -> None:
        with _SIDECARS:
            data = self.read_sidecar(rel)
            if data is not None:
                data.update(fields)
                write_json_atomic(sidecar_path(self.path_of(rel)), data, replace=True)

    def sidecar_lock(self) -> threading.RLock:
        """Hold while reading a sidecar to rewrite it (the lock `write_sidecar` and `update_sidecar` take)."""
        return _SIDECARS

    def read_sidecar(self, video_rel: str) -> dict[str, Any] | None:
        try:
            with open(sidecar_path(self.path_of(video_rel)), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def sidecar_problem(self, video_rel: str) -> str | None:
        """Why this video's sidecar is unusable (missing, invalid JSON, a bad value), or None."""
        p = sidecar_path(self.path_of(video_rel))
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return "no sidecar"
        except (OSError, ValueError) as e:
            return f"invalid JSON ({e})"
        try:
            record_from_sidecar(data, video_rel)
        except ValueError as e:
            return str(e)
        return None

    def set_aside(self, rel: str) -> Path | None:
        """Move a damaged file (a bad sidecar) into `.draftsync/damaged/` for inspection; never deletes."""
        src = self.path_of(rel)
        dest = self.root / ".draftsync" / "damaged" / f"{rel}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            self.make_dirs(str(PurePosixPath(".draftsync", "damaged", rel).parent))
            os.rename(src, dest)
        except (OSError, ArchiveMissing, ItemError):
            return None
        return dest

    def walk(self) -> Iterator[tuple[str, str]]:
        """(kind, relative path) for everything in the tree: 'video', 'sidecar', 'temp' or 'meta' (dot-files
        such as the archive marker; draftsync never gives a video a name that starts with a dot)."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if is_temp(name):
                    yield "temp", rel
                elif name.startswith("."):
                    yield "meta", rel
                elif name.endswith(SIDECAR_SUFFIX):
                    yield "sidecar", rel
                else:
                    yield "video", rel

    def sweep_temps(self, older_than: float = 0.0) -> list[str]:
        """Remove temp files a crash left behind; they never carry a final name."""
        removed = []
        cutoff = time.time() - older_than
        for kind, rel in self.walk():
            if kind == "temp":
                p = self.root / rel
                try:
                    if p.lstat().st_mtime <= cutoff:
                        p.unlink()
                        removed.append(rel)
                except OSError:
                    pass
        return removed


def _same_content(path: Path, digest: str, size: int) -> bool:
    try:
        if path.is_symlink() or path.stat().st_size != size:
            return False
        return hash_file(path)[0] == digest
    except OSError:
        return False
