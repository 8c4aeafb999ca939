"""The error hierarchy: what went wrong, where, and what to do, with the exit code it maps to.

Two families: *item* errors concern one file and are recorded and retried while the daemon goes on;
everything else is fatal for the command that hit it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class DraftsyncError(Exception):
    """Base class; `str(err)` is a complete sentence fit for the user."""

    exit_code = EXIT_USAGE


class ConfigError(DraftsyncError):
    """The configuration is missing, unreadable or invalid."""


class UsageError(DraftsyncError):
    """The command cannot run as asked (e.g. another draftsync holds the state lock)."""


class ItemError(DraftsyncError):
    """A problem with one file; recorded in the catalog and retried later."""

    exit_code = EXIT_PROBLEMS

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SourceChanged(ItemError):
    """The source file changed while it was being read; wait for it to settle again."""


class SourceGone(ItemError):
    """The source file vanished before or while it was read."""


class SourceUnreadable(ItemError):
    """The source file exists but cannot be read (permissions, I/O error)."""


class ArchiveFull(DraftsyncError):
    """The archive disk has no room; ingest pauses until space returns."""

    exit_code = EXIT_PROBLEMS

    def __init__(self, message: str, needed: int = 0, *, inodes: bool = False) -> None:
        super().__init__(message)
        self.needed = needed
        self.inodes = inodes  # out of inodes (files) rather than bytes


class ArchiveMissing(DraftsyncError):
    """The archive root is missing, not marked as ours, another archive's, or locked by another draftsync;
    ingest pauses (nothing is created under the root) until it is back."""

    exit_code = EXIT_PROBLEMS


class StateFull(DraftsyncError):
    """The disk holding the catalog is full; ingest pauses until the catalog can be written again."""

    exit_code = EXIT_PROBLEMS


class CatalogCorrupt(DraftsyncError):
    """The catalog file is damaged; `draftsync reindex` rebuilds it from the sidecars."""


class Abandoned(DraftsyncError):
    """Work stopped on request (SIGTERM); nothing partial was left behind."""


class PushError(DraftsyncError):
    """A push back-end failed; `retryable` says whether the item may be tried again later."""

    exit_code = EXIT_PROBLEMS

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        log_id: str = "",
        retryable: bool = False,
        defer: bool = False,
        reauth: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.log_id = log_id
        self.retryable = retryable
        self.defer = defer
        self.reauth = reauth
        self.status = status


class AuthError(PushError):
    """The stored authorization is missing or dead; the user must run `draftsync auth tiktok`."""

    def __init__(self, message: str, *, code: str = "", log_id: str = "") -> None:
        super().__init__(message, code=code, log_id=log_id, reauth=True)
