"""The reconciliation walk: every wanted file under a root with its lstat, in the order SQLite sorts
paths, so that a rescan can merge it with the catalog's rows without holding either side in memory.

One `os.scandir` per folder and one `fstatat` per wanted file (`DirEntry.stat`, relative to the open
folder, so the kernel does not resolve the whole path again); folders and unwanted names are told
apart by the entry type the listing already gave, without a stat. Entries of a folder are sorted by
name, a sub-folder as `name/`, which makes the whole walk come out in code-point order of the full
path: the order of SQLite's BINARY collation on UTF-8 text. The walk is iterative (any depth) and holds
only the folders on the way down; folders that cannot be listed are reported, never followed through a
symlink, and a folder that vanishes while it is walked is simply not there.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from draftsync.settle import IgnoreRules

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # vanished, or replaced by a file or a symlink


@dataclass(frozen=True)
class Folder:
    """A folder as a walk found it: its times (creating, removing or renaming an entry moves them) and the
    sub-folders it holds."""

    mtime_ns: int
    ctime_ns: int
    subdirs: tuple[str, ...]


@dataclass
class Folders:
    """What a walk may skip, and what it learnt for the next one.

    A folder whose mtime and ctime are still those `known` from the last walk holds the same entries, so
    it is not listed and its files are not stat'ed: their catalogued versions stand. An in-place rewrite
    moves no folder's times, so this is only for a watcher whose events see such writes, with a full walk
    now and then. Only folders whose times are older than `settled_before` (ns) are trusted: a change in
    the same clock tick as the last look would not move a coarse clock."""

    known: dict[str, Folder] = field(default_factory=dict)
    settled_before: int = 0
    started: int = 0  # when this walk started (ns): the next one trusts folders older than that
    found: dict[str, Folder] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)


def walk(
    root: str,
    rules: IgnoreRules,
    recursive: bool = True,
    unreadable: list[str] | None = None,
    folders: Folders | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every wanted regular file under `root`, in code-point order of the path.

    Paths are `root + "/" + ...` with `root` as given (less a trailing slash). Ignored folders are never
    entered and symlinks never followed (the root itself may be one). Folders that cannot be listed are
    appended to `unreadable` when given. With `folders`, unchanged folders are skipped (see `Folders`)."""
    base = root.rstrip("/") or "/"
    # What is still to come, last item first: (path, lstat) for a file, (path + "/", None) for a folder not
    # listed yet. Sorting these pairs is sorting by that key, so a folder's files and sub-folders come out
    # in the order of their full paths.
    if folders is None:
        stack = _list(base, True, recursive, rules, unreadable) or []
        while stack:
            item = stack.pop()
            if item[1] is not None:
                yield item  # type: ignore[misc]
            elif recursive:
                stack += _list(item[0][:-1], False, recursive, rules, unreadable) or []
        return
    times: dict[str, tuple[int, int]] = {}
    try:
        st = os.stat(base)
        times[base] = (st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        pass  # the listing says why
    stack = _visit(base, True, recursive, rules, unreadable, folders, times)
    while stack:
        item = stack.pop()
        if item[1] is not None:
            yield item  # type: ignore[misc]
        elif recursive:
            stack += _visit(item[0][:-1], False, recursive, rules, unreadable, folders, times)


def _visit(
    path: str,
    is_root: bool,
    recursive: bool,
    rules: IgnoreRules,
    unreadable: list[str] | None,
    folders: Folders,
    times: dict[str, tuple[int, int]],
) -> list[tuple[str, os.stat_result | None]]:
    """List a folder, or skip it if it is known and unchanged (then only its sub-folders are looked at)."""
    now = times.pop(path, None)
    k = folders.known.get(path)
    if (
        now is not None and k is not None and (k.mtime_ns, k.ctime_ns) == now
        and max(now) < folders.settled_before
    ):  # fmt: skip
        folders.skipped.add(path)
        folders.found[path] = k
        out: list[tuple[str, os.stat_result | None]] = []
        for sub in k.subdirs:
            try:
                st = os.lstat(sub)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                times[sub] = (st.st_mtime_ns, st.st_ctime_ns)
                out.append((sub + "/", None))
        out.sort(reverse=True)
        return out
    items = _list(path, is_root, recursive, rules, unreadable, times)
    if items is None:
        return []  # not listed: nothing learnt, so it is listed again next time
    if now is not None:
        folders.found[path] = Folder(now[0], now[1], tuple(p[:-1] for p, s in items if s is None))
    return items


def _list(
    path: str,
    is_root: bool,
    recursive: bool,
    rules: IgnoreRules,
    unreadable: list[str] | None,
    times: dict[str, tuple[int, int]] | None = None,
) -> list[tuple[str, os.stat_result | None]] | None:
    """One folder's wanted files and sub-folders, sorted, last first; None if it could not be listed. With
    `times`, each sub-folder's (mtime, ctime) is noted there."""
    try:
        fd = os.open(path, _DIR_FLAGS if is_root else _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno not in _GONE and unreadable is not None:
            unreadable.append(path)
        return None
    prefix = path + "/" if path != "/" else "/"
    ignore_dir, wanted_file = rules.ignore_dir, rules.wanted_file
    out: list[tuple[str, os.stat_result | None]] = []
    add = out.append
    try:
        with os.scandir(fd) as it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if recursive and not ignore_dir(e.name):
                            add((prefix + e.name + "/", None))
                            if times is not None:
                                st = e.stat(follow_symlinks=False)
                                times[prefix + e.name] = (st.st_mtime_ns, st.st_ctime_ns)
                    elif e.is_file(follow_symlinks=False) and wanted_file(e.name):
                        add((prefix + e.name, e.stat(follow_symlinks=False)))
                except OSError:
                    continue  # vanished between the listing and the stat
    except OSError as err:
        if err.errno not in _GONE and unreadable is not None:
            unreadable.append(path)
        return None
    finally:
        os.close(fd)
    out.sort(reverse=True)
    return out
