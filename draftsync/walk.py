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
from collections.abc import Iterator

from draftsync.settle import IgnoreRules

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # vanished, or replaced by a file or a symlink


def walk(
    root: str, rules: IgnoreRules, recursive: bool = True, unreadable: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every wanted regular file under `root`, in code-point order of the path.

    Paths are `root + "/" + ...` with `root` as given (less a trailing slash). Ignored folders are never
    entered and symlinks never followed (the root itself may be one). Folders that cannot be listed are
    appended to `unreadable` when given."""
    base = root.rstrip("/") or "/"
    # What is still to come, last item first: (path, lstat) for a file, (path + "/", None) for a folder not
    # listed yet. Sorting these pairs is sorting by that key, so a folder's files and sub-folders come out
    # in the order of their full paths.
    stack = _list(base, True, recursive, rules, unreadable)
    while stack:
        item = stack.pop()
        if item[1] is not None:
            yield item  # type: ignore[misc]
        elif recursive:
            stack += _list(item[0][:-1], False, recursive, rules, unreadable)


def _list(
    path: str, is_root: bool, recursive: bool, rules: IgnoreRules, unreadable: list[str] | None
) -> list[tuple[str, os.stat_result | None]]:
    """One folder's wanted files and sub-folders, sorted, last first."""
    try:
        fd = os.open(path, _DIR_FLAGS if is_root else _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno not in _GONE and unreadable is not None:
            unreadable.append(path)
        return []
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
                    elif e.is_file(follow_symlinks=False) and wanted_file(e.name):
                        add((prefix + e.name, e.stat(follow_symlinks=False)))
                except OSError:
                    continue  # vanished between the listing and the stat
    except OSError as err:
        if err.errno not in _GONE and unreadable is not None:
            unreadable.append(path)
        return []
    finally:
        os.close(fd)
    out.sort(reverse=True)
    return out
