"""Restoring from the bucket alone: videos and sidecars under the prefix become an archive tree again, so
that `draftsync reindex` rebuilds the catalog from it. No catalog is needed.

Each video is downloaded into a temp file beside its final name, hashed on the way, and placed only if
its BLAKE3 is the one its sidecar (and its object metadata) records; nothing existing is ever replaced,
and a file already there with the same content is left as it is, so an interrupted restore is simply
run again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from draftsync import log
from draftsync.archive import SIDECAR_SUFFIX, Archive
from draftsync.atomic import AtomicFile, is_temp
from draftsync.errors import DraftsyncError
from draftsync.fingerprint import hash_file
from draftsync.offsite.plan import rel_of

if TYPE_CHECKING:
    from draftsync.config import Settings
    from draftsync.offsite.store import Remote, S3Store
    from draftsync.offsite.upload import Progress

_log = log.get("draftsync.offsite")


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already there with the same content
    skipped: int = 0  # left out by --label / --since
    labels: set[str] = field(default_factory=set)  # the labels seen (in keys or sidecars), to name a wrong --label
    unknown_label: bool = False  # --label names no video in the bucket
    foreign: list[str] = field(default_factory=list)  # objects draftsync did not write (no sidecar, no BLAKE3)
    bytes: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "present": self.present, "skipped": self.skipped, "bytes": self.bytes,
                "failed": self.failed, "foreign": self.foreign}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    rel: str
    video: Remote
    sidecar: Remote | None


def entries(objects: list[Remote], prefix: str) -> list[Entry]:
    """Pair each video object with its sidecar object; skip metadata folders, temp names and foreign keys."""
    videos: dict[str, Remote] = {}
    sidecars: dict[str, Remote] = {}
    for o in objects:
        rel = rel_of(prefix, o.key)
        if rel is None or any(p.startswith(".") for p in rel.split("/")) or is_temp(rel.rsplit("/", 1)[-1]):
            continue
        if rel.endswith(SIDECAR_SUFFIX):
            sidecars[rel[: -len(SIDECAR_SUFFIX)]] = o
        else:
            videos[rel] = o
    return [Entry(rel, videos[rel], sidecars.get(rel)) for rel in sorted(videos)]


def wanted(side: dict[str, Any] | None, label: str | None, since: str | None) -> bool:
    """Does a video pass --label and --since (capture date on or after it)? Without a sidecar, only if unfiltered."""
    if label is None and since is None:
        return True
    if side is None:
        return False
    if label is not None and side.get("label") != label:
        return False
    return not (since is not None and str(side.get("capture_time") or "")[:10] < since)


# What each layout field renders to, to read a key back (`key_fields`); other fields are any one name.
_FIELD_RE = {"year": r"\d{4}", "month": r"0[1-9]|1[0-2]", "day": r"\d\d", "date": r"\d{4}-\d\d-\d\d",
             "time": r"\d{6}", "hash8": r"[0-9a-f]{8}"}  # fmt: skip


def key_pattern(layout: str) -> re.Pattern[str] | None:
    """A regex that reads `year`, `month` and `label` back from a key, when the layout puts them in folders
    of their own (None when it puts none of them there); the file name may be anything."""
    from string import Formatter

    head = layout.split("/")[:-1]
    out, named = [], set()
    for part in head:
        fields = [f for _, f, _, _ in Formatter().parse(part) if f is not None]
        if len(fields) == 1 and part == "{" + fields[0] + "}" and fields[0] in ("year", "month", "label") \
                and fields[0] not in named:  # fmt: skip
            named.add(fields[0])
            out.append(f"(?P<{fields[0]}>{_FIELD_RE.get(fields[0], '[^/]+')})")
            continue
        rx = ""
        for literal, name, _, _ in Formatter().parse(part):
            rx += re.escape(literal)
            if name is not None:
                rx += f"(?:{_FIELD_RE.get(name, '[^/]+')})"
        out.append(rx)
    if not named:
        return None
    return re.compile("/".join([*out, "[^/]+"]))


def key_fields(pattern: re.Pattern[str] | None, rel: str) -> dict[str, str]:
    """`year`, `month` and `label` as the key shows them; empty when the key does not fit the layout (an
    object written under another layout is then judged by its sidecar alone)."""
    m = pattern.fullmatch(rel) if pattern is not None else None
    return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}


def label_folder(label: str) -> str:
    """A label as the layout writes it as a folder name."""
    from draftsync.archive import render_path

    return render_path("{label}/x", {"label": label}).split("/")[0]


def excluded_by_key(fields: dict[str, str], label: str | None, since: str | None) -> bool:
    """Does the key alone show that the video fails --label or --since (so its sidecar is not downloaded)?
    Only when sure: a month folder counts as left out only if even a day's time-zone difference could not
    bring its videos to `since`."""
    if label is not None and "label" in fields and fields["label"] != label_folder(label):
        return True
    if since is not None and "year" in fields and "month" in fields:
        y, m = int(fields["year"]), int(fields["month"])
        first_of_next = f"{y + m // 12:04d}-{m % 12 + 1:02d}-01"
        return first_of_next < since
    return False


def restore(
    settings: Settings,
    store: S3Store,
    to: Path,
    *,
    label: str | None = None,
    since: str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RestoreReport:
    report = RestoreReport()
    to.mkdir(parents=True, exist_ok=True)
    Archive(to, settings.archive.layout).sweep_temps(older_than=3600)
    todo: list[tuple[Entry, bytes | None, dict[str, Any] | None]] = []
    pattern = key_pattern(settings.archive.layout) if label is not None or since is not None else None
    unread = False  # a video left out by its key before its label was known
    for e in entries(list(store.objects()), store.prefix):
        body, side = None, None
        fields = key_fields(pattern, e.rel)
        if "label" in fields:
            report.labels.add(fields["label"])
        if excluded_by_key(fields, label, since):
            report.skipped += 1
            unread = unread or "label" not in fields
            continue
        if e.sidecar is not None:
            body = _download_small(store, e.sidecar.key)
            try:
                side = json.loads(body)
            except ValueError:
                report.failed.append(f"{e.rel}: its sidecar object {e.sidecar.key} is not JSON")
                continue
            if isinstance(side, dict) and side.get("label"):
                report.labels.add(str(side["label"]))
        if wanted(side, label, since):
            todo.append((e, body, side))
        else:
            report.skipped += 1
    if label is not None and not todo and not unread and not {label, label_folder(label)} & report.labels:
        report.unknown_label = True  # a typo, most likely: the caller names the labels that exist
        return report
    if progress is not None:
        progress.start(sum(e.video.size for e, _, _ in todo), len(todo))

    def one(item: tuple[Entry, bytes | None, dict[str, Any] | None]) -> None:
        e, body, side = item
        if should_stop():
            return
        try:
            outcome, detail = _restore_one(store, to, e, body, side, progress)
        except Exception as ex:  # one video's failure is reported with its name; the others go on
            outcome, detail = "failed", str(ex) if isinstance(ex, DraftsyncError) else f"{type(ex).__name__}: {ex}"
        if outcome == "restored":
            report.restored.append(e.rel)
            report.bytes += e.video.size
        elif outcome == "present":
            report.present.append(e.rel)
        elif outcome == "foreign":
            report.foreign.append(e.video.key)
        else:
            report.failed.append(f"{e.rel}: {detail}")
            _log.error("restore failed", archive_path=e.rel, reason=detail)
        if progress is not None:
            progress.item(e.rel, outcome, detail)

    with ThreadPoolExecutor(settings.offsite.concurrency, "offsite-restore") as ex:
        list(ex.map(one, todo))
    return report


def _download_small(store: S3Store, key: str) -> bytes:
    _, body = store.get(key)
    return b"".join(store.read_chunks(body, "downloading", key))


def _restore_one(store: S3Store, to: Path, e: Entry, side_body: bytes | None, side: dict[str, Any] | None,
                 progress: Progress | None) -> tuple[str, str]:  # fmt: skip
    final = to / e.rel
    want = str(side.get("hash")) if side else None
    if final.exists():
        if want is None:  # no sidecar: the object's metadata says what the file there must hold
            head = store.head(e.video.key)
            want = head.blake3 if head is not None else None
            if want is None:
                return "foreign", "neither a sidecar nor object metadata records its BLAKE3: not draftsync's"
        digest, _ = hash_file(final)
        if digest != want:
            return "failed", f"{final} exists with other content; it was not replaced"
        _place_sidecar(final, side_body)
        if progress is not None:
            progress.advance(e.video.size)
        return "present", ""
    remote, stream = store.get(e.video.key)
    want = want or remote.blake3
    if want is None:
        stream.close()
        return "foreign", "neither a sidecar nor object metadata records its BLAKE3: not draftsync's"
    if remote.blake3 is not None and remote.blake3 != want:
        stream.close()
        return "failed", f"its sidecar says {want} but the object's metadata says {remote.blake3}"
    hasher = blake3.blake3()
    with AtomicFile(final.parent) as f:
        n = 0
        for chunk in store.read_chunks(stream, "downloading", e.video.key):
            hasher.update(chunk)
            f.write(chunk)
            n += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
        got = "blake3:" + hasher.hexdigest()
        if got != want:
            return "failed", f"downloaded content hashes to {got}, expected {want}; not placed"
        try:
            f.commit(final, replace=False)
        except FileExistsError:
            return "failed", f"{final} appeared while restoring; it was not replaced"
    _place_sidecar(final, side_body)
    return "restored", ""


def _place_sidecar(video: Path, body: bytes | None) -> None:
    if body is None:
        return  # `reindex` describes a video without a sidecar anew
    path = video.with_name(video.name + SIDECAR_SUFFIX)
    if path.exists():
        return
    with AtomicFile(path.parent) as f:
        f.write(body)
        try:
            f.commit(path, replace=False)
        except FileExistsError:
            pass
