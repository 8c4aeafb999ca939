"""File names as the kernel holds them (bytes) and as people and JSON read them (text).

Linux names are bytes; Python hands them over as text with undecodable bytes escaped as lone
surrogates (PEP 383). Such text cannot be stored in SQLite or written as UTF-8 JSON, so every place that
stores or shows a name goes through here: `is_text` says whether a name is plain UTF-8, `readable` is
a display form (undecodable bytes as `\\xNN`), `as_latin1` a best guess for old Samba/Windows shares
(Café rather than Caf\\xe9), and `to_hex`/`from_hex` the lossless form kept beside the readable one.
"""

from __future__ import annotations

import os


def is_text(name: str) -> bool:
    """True if `name` is valid Unicode text (no escaped raw bytes), so it can be stored as it is."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raw(name: str) -> bytes:
    """The bytes the kernel has for this name."""
    return os.fsencode(name)


def readable(name: str) -> str:
    """Valid UTF-8 text for logs, `status` and sidecars; raw bytes that are not UTF-8 appear as \\xNN."""
    if is_text(name):
        return name
    return raw(name).decode("utf-8", "backslashreplace")


def as_latin1(name: str) -> str:
    """A name for the archive: UTF-8 as it is; otherwise the bytes read as Latin-1 (old SMB shares)."""
    if is_text(name):
        return name
    b = raw(name)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def to_hex(name: str) -> str:
    return raw(name).hex()


def from_hex(h: str) -> str:
    """The name back from `to_hex`, as Python's os functions take it."""
    return os.fsdecode(bytes.fromhex(h))
