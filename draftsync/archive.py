"""The archive tree: the path template, labels, the one atomic-write helper used for videos and sidecars
alike, sidecars, verify, scrub and reindex.

Contract (design.md): under `archive.root`, files ending in `.json` and anything under a dot-folder is
metadata; every other file is an archived video with a sidecar `<name>.json` beside it. Nothing here
ever replaces an existing video; sidecars are replaced atomically.
"""

from __future__ import annotations

import errno
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

from draftsync.atomic import AtomicFile, is_temp
from draftsync.catalog import SourceSighting, VideoRecord
from draftsync.config import LabelRule
from draftsync.errors import Abandoned, ArchiveFull, ItemError
from draftsync.fingerprint import READ_CHUNK, MediaFacts, hash_file, short

SIDECAR_SUFFIX = ".json"
_SIDECAR_LOCK = threading.RLock()
SIDECAR_FORMAT = 1
MAX_NAME_BYTES = 200

# --- path template -------------------------------------------------------------------------------

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')


def sanitize_component(value: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component: no separators or control characters, never '.', '..' or hidden."""
    v = unicodedata.normalize("NFC", str(value))
    v = _UNSAFE.sub("_", v)
    v = v.strip().lstrip(".").rstrip(". ")
    if not v:
        v = "_"
    raw = v.encode("utf-8")
    if len(raw) > max_bytes:
        v = raw[:max_bytes].decode("utf-8", "ignore").rstrip(". ") or "_"
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
        else:
            comp = sanitize_component(rendered, max_bytes=budget)
        out.append(comp)
    return "/".join(out)


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


def free_bytes(path: Path) -> int | None:
    """Free bytes for unprivileged writers on the filesystem that holds (or will hold) `path`."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class ArchiveFile(AtomicFile):
    """The atomic file, with failures told in the archive's terms: a full disk pauses ingest
    (ArchiveFull), anything else is a per-item error."""

    def __init__(self, target_dir: Path, *, mode: int = 0o644) -> None:
        try:
            super().__init__(target_dir, mode=mode)
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

    def commit(self, final: Path, *, replace: bool) -> None:
        try:
            super().commit(final, replace=replace)
        except FileExistsError:
            raise
        except OSError as e:
            raise _write_error(e, self.dir) from None


def _write_error(e: OSError, where: Path) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArchiveFull(f"the archive disk is full (writing in {where}); ingest pauses until space returns")
    return ItemError(f"cannot write in the archive ({where}): {e.strerror or e}", str(where))


def write_json_atomic(path: Path, data: dict[str, Any], *, replace: bool = True) -> None:
    body = (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
    with ArchiveFile(path.parent) as f:
        f.write(body)
        f.commit(path, replace=replace)


# --- sidecars --------------------------------------------------------------------------------------


def sidecar_path(video: Path) -> Path:
    return video.with_name(video.name + SIDECAR_SUFFIX)


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
        "sources": [s.to_dict() | {"first_seen": _iso(s.first_seen)} for s in v.sources],
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
    """Rebuild a catalog record from a sidecar; raises ValueError naming what is missing."""
    for key in ("hash", "size", "capture_time", "label"):
        if key not in data:
            raise ValueError(f"sidecar lacks '{key}'")
    sources = [
        SourceSighting(
            path=s["path"],
            size=int(s.get("size") or 0),
            mtime_ns=int(s.get("mtime_ns") or 0),
            inode=int(s.get("inode") or 0),
            dev=int(s.get("dev") or 0),
            root=s.get("root") or "",
            first_seen=_ts(s.get("first_seen")),
        )  # fmt: skip
        for s in data.get("sources") or []
    ]
    return VideoRecord(
        hash=data["hash"], size=int(data["size"]), archive_path=archive_path,
        capture_time=data["capture_time"], capture_source=data.get("capture_time_source", "unknown"),
        label=data["label"], media=data.get("media"), probe_error=data.get("probe_error"),
        first_seen=_ts(data.get("first_seen")), archived_at=_ts(data.get("archived_at")), sources=sources,
    )  # fmt: skip


# --- the tree ---------------------------------------------------------------------------------------


@dataclass
class CopyResult:
    digest: str
    size: int
    temp: ArchiveFile


@dataclass
class Archive:
    root: Path
    layout: str
    progress: Callable[[int], None] | None = field(default=None, repr=False)

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
    ) -> CopyResult:
        """Copy `src` into a temp file in `target_dir`, hashing in the same pass; fsync'd, not placed."""
        tmp = ArchiveFile(target_dir)
        try:
            buf = bytearray(READ_CHUNK)
            view = memoryview(buf)
            n = 0
            while True:
                if should_stop():
                    raise Abandoned("stopped during a copy; the partial copy was removed")
                k = src.readinto(buf)  # type: ignore[attr-defined]
                if not k:
                    break
                chunk = view[:k]
                hasher.update(chunk)
                tmp.write(chunk)
                n += k
                if self.progress:
                    self.progress(k)
            tmp.sync()
        except BaseException:
            tmp.abort()
            raise
        return CopyResult("blake3:" + hasher.hexdigest(), n, tmp)

    def place(self, tmp: ArchiveFile, rel: str, digest: str, size: int) -> tuple[str, bool]:
        """Link the verified temp under `rel`, adding a suffix on a clash with other content.

        Returns (final relative path, adopted): adopted is True when the same content was already
        there under that name (a crash between placing and cataloguing), and the temp is dropped.
        """
        base = PurePosixPath(rel)
        for i in range(1000):
            cand = rel if i == 0 else str(base.with_name(f"{base.stem}_{i}{base.suffix}"))
            final = self.path_of(cand)
            try:
                tmp.commit(final, replace=False)
                return cand, False
            except FileExistsError:
                if _same_content(final, digest, size):
                    tmp.abort()
                    return cand, True
        tmp.abort()
        raise ItemError(f"too many name clashes for {rel}")

    def write_sidecar(self, v: VideoRecord) -> None:
        """Write the sidecar; keys other stages added (perceptual signature, near-duplicates, origin) stay."""
        with _SIDECAR_LOCK:
            data = sidecar_dict(v)
            old = self.read_sidecar(v.archive_path)
            if old and old.get("hash") == v.hash:
                data = {**{k: x for k, x in old.items() if k not in data}, **data}
            write_json_atomic(sidecar_path(self.path_of(v.archive_path)), data, replace=True)

    def update_sidecar(self, rel: str, fields: dict[str, Any]) -> None:
        # Read-modify-write: stages updating one sidecar from two threads (signatures, thumbnails) take turns.
        with _SIDECAR_LOCK:
            data = self.read_sidecar(rel)
            if data is not None:
                data.update(fields)
                write_json_atomic(sidecar_path(self.path_of(rel)), data, replace=True)

    def read_sidecar(self, video_rel: str) -> dict[str, Any] | None:
        try:
            with open(sidecar_path(self.path_of(video_rel)), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            return None

    def walk(self) -> Iterator[tuple[str, str]]:
        """(kind, relative path) for everything in the tree: 'video', 'sidecar' or 'temp'."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if is_temp(name):
                    yield "temp", rel
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
