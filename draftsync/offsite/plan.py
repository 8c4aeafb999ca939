"""The offsite copy's decisions, as pure functions: which key an archived file gets, how a large video
is cut into parts, what an S3 error means, how long to wait before trying again, and the per-video state
machine (`step`), tested as a table. Nothing here talks to the network or the catalog except `status`,
a thin reader for `draftsync status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from draftsync.catalog import Catalog
    from draftsync.config import OffsiteConfig, Settings

MIB = 1024 * 1024
MIN_PART = 5 * MIB  # S3's smallest part (all but the last)
MAX_PARTS = 10_000  # S3's most parts in one upload
STATES = ("pending", "uploading", "stored", "failed")
# A multipart upload nobody in the catalog knows about is aborted once it is this old (an upload started by
# another process a moment ago is not yet in our catalog; a day-old one is a crash's leftover).
ORPHAN_AGE = 24 * 3600.0
# How often abandoned uploads are looked for (one ListMultipartUploads), whether or not there is work.
CLEANUP_EVERY = 24 * 3600.0

# --- keys --------------------------------------------------------------------------------------------


def video_key(prefix: str, archive_path: str) -> str:
    """The object key of an archived video: the archive layout under the prefix."""
    return prefix + archive_path


def sidecar_key(prefix: str, archive_path: str) -> str:
    return video_key(prefix, archive_path) + ".json"


def rel_of(prefix: str, key: str) -> str | None:
    """The archive-relative path an object key stands for, or None when it is outside the prefix or unsafe."""
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix) :]
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\x00" in rel:
        return None
    return rel


def target_id(cfg: OffsiteConfig) -> str:
    """What identifies the copy's place; the catalog keeps the copy state per target (see `offsite_retarget`)."""
    return f"{cfg.endpoint_url or 'aws'}|{cfg.bucket}|{cfg.prefix}"


def target_config(cfg: OffsiteConfig, target: str) -> OffsiteConfig:
    """`cfg` pointed at another target (same credentials and region): to reach a target draftsync left."""
    endpoint, bucket, prefix = target.split("|", 2)
    return cfg.model_copy(
        update={"url": f"s3://{bucket}/{prefix}", "endpoint_url": "" if endpoint == "aws" else endpoint}
    )


def describe_target(target: str) -> str:
    """A target as a person reads it: s3://bucket/prefix at endpoint."""
    endpoint, bucket, prefix = target.split("|", 2)
    return f"s3://{bucket}/{prefix}" + ("" if endpoint == "aws" else f" at {endpoint}")


# --- abandoned multipart uploads ----------------------------------------------------------------------


def cleanup_due(last: float | None, now: float) -> bool:
    """Is it time to look for abandoned uploads (at most once a day, whether or not there is work)?"""
    return last is None or now - last >= CLEANUP_EVERY or now < last


def abandoned(uploads: list[tuple[str, str, float]], known: set[str], video_keys: set[str], prefix: str,
              now: float) -> list[tuple[str, str]]:  # fmt: skip
    """Which multipart uploads in progress draftsync may abort: a day old, not one it is still using, and
    one it started itself: the key of a catalogued video (a crash between starting an upload and recording
    its id), or any key under a non-empty prefix (draftsync's own folder). With an empty prefix the bucket
    is shared with whoever else writes to it, so another tool's upload is never touched."""
    out = []
    for key, uid, started in uploads:
        if uid in known or not started or now - started <= ORPHAN_AGE:
            continue
        if key in video_keys or (prefix and rel_of(prefix, key) is not None):
            out.append((key, uid))
    return out


# --- parts -------------------------------------------------------------------------------------------


def part_size_for(size: int, wanted: int) -> int:
    """The part size for a video of `size` bytes: `wanted`, grown (in MiB steps) to stay within 10,000 parts."""
    ps = max(MIN_PART, wanted)
    if size > ps * MAX_PARTS:
        need = -(-size // MAX_PARTS)
        ps = -(-need // MIB) * MIB
    return ps


def parts(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number from 1, offset, length) covering `size` bytes."""
    out = []
    n, off = 1, 0
    while off < size:
        length = min(part_size, size - off)
        out.append((n, off, length))
        n += 1
        off += length
    return out


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failure in a row: 30 s doubling, at most an hour."""
    return float(min(30 * 2 ** max(0, attempts - 1), 3600))


# --- what an S3 error means -------------------------------------------------------------------------


class Kind(StrEnum):
    AUTH = "auth"  # credentials refused, or the clock too far off: pause everything, tell the owner
    BUCKET = "bucket"  # the bucket does not exist: pause, tell the owner, never create it
    PRECONDITION = "precondition"  # If-None-Match refused: an object has this key already
    TRANSIENT = "transient"  # network, 5xx, throttling, conflicting conditional writes: retry later
    NO_UPLOAD = "no_upload"  # the multipart upload is gone (aborted or expired)
    NOT_FOUND = "not_found"
    REJECTED = "rejected"  # the request itself was refused (a 4xx that retrying will not fix)


_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AccountProblem", "AllAccessDisabled", "InvalidSecurity", "RequestTimeTooSkewed",
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "UnauthorizedAccess",
    "Unauthorized", "Forbidden", "InvalidClientTokenId", "MissingSecurityHeader",
}  # fmt: skip
_TRANSIENT_CODES = {
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ConditionalRequestConflict",
    "OperationAborted", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ConnectionError", "ProxyConnectionError", "IncompleteReadError", "ResponseStreamingError", "HTTPClientError",
    "SSLError",
}  # fmt: skip


def classify(status: int | None, code: str) -> Kind:
    """What an S3 answer means for us, from its HTTP status and error code (or the exception's class name)."""
    if code in _AUTH_CODES or status in (401, 403):
        return Kind.AUTH
    if code == "NoSuchBucket":
        return Kind.BUCKET
    if code == "PreconditionFailed" or status == 412:
        return Kind.PRECONDITION
    if code == "NoSuchUpload":
        return Kind.NO_UPLOAD
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return Kind.NOT_FOUND
    if code in _TRANSIENT_CODES or status in (408, 409, 429) or (status is not None and status >= 500):
        return Kind.TRANSIENT if code != "NotImplemented" else Kind.REJECTED
    if status is not None and 400 <= status < 500:
        return Kind.REJECTED
    return Kind.TRANSIENT  # an unknown failure without an answer is most likely the network


def answer(status: int | None, code: str, detail: str) -> str:
    """The store's answer in a few words, each said once: "HTTP 403: Forbidden" (HeadBucket has no body,
    so its code is the status again), "HTTP 403 AccessDenied: Access Denied", "EndpointConnectionError: ..."."""
    words = [f"HTTP {status}"] if status else []
    if code and code != str(status):
        words.append(code)
    text = " ".join(words)
    if detail and detail not in (code, str(status)):
        text = f"{text}: {detail}" if text else detail
    return text or "no answer"


# --- the per-video state machine ----------------------------------------------------------------------


class Outcome(StrEnum):
    STORED = "stored"  # uploaded now
    ADOPTED = "adopted"  # the bucket already had this exact content under the key
    CLASH = "clash"  # the key holds different content; never overwritten
    LOCAL_CHANGED = "local_changed"  # the archived file no longer has its catalogued BLAKE3
    LOCAL_MISSING = "local_missing"  # the archived file is gone
    REJECTED = "rejected"  # the store refused this request for good
    TRANSIENT = "transient"  # try again after a backoff
    PAUSED = "paused"  # credentials or bucket: everything waits, this video loses nothing
    STOPPED = "stopped"  # shutdown: an upload in progress resumes next time
    UPLOAD_GONE = "upload_gone"  # the multipart upload vanished: start a new one


@dataclass(frozen=True)
class Step:
    state: str
    attempts: int
    reason: str | None
    next_try: float | None
    keep_upload: bool  # keep the multipart upload id and its parts for a resume


def step(attempts: int, outcome: Outcome, now: float, detail: str = "") -> Step:
    """What comes after `outcome` for a video that had failed `attempts` times in a row."""
    if outcome in (Outcome.STORED, Outcome.ADOPTED):
        return Step("stored", 0, "already in the bucket" if outcome is Outcome.ADOPTED else None, None, False)
    if outcome in (Outcome.CLASH, Outcome.LOCAL_CHANGED, Outcome.LOCAL_MISSING, Outcome.REJECTED):
        return Step("failed", attempts + 1, detail or outcome.value, None, False)
    if outcome is Outcome.TRANSIENT:
        return Step("pending", attempts + 1, detail or "network or server error", now + backoff(attempts + 1), True)
    if outcome is Outcome.PAUSED:
        return Step("pending", attempts, detail or "offsite copy paused", None, True)
    if outcome is Outcome.STOPPED:
        return Step("pending", attempts, "interrupted; resumes where it stopped", None, True)
    if outcome is Outcome.UPLOAD_GONE:
        return Step("pending", attempts, detail or "the multipart upload was gone; starting again", None, False)
    raise AssertionError(outcome)


# --- status -----------------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def summarize(counts: dict[str, Any], last_error: dict[str, Any] | None, paused: str | None,
              last_ok: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The `offsite` entry of `draftsync status`: backlog, bytes left, failures and the last error.

    The summary line names the last error while videos wait and the store has not answered since it: a
    network error is only a warning in the log, and the line is all `status` shows of the copy."""
    v, b = counts["videos"], counts["bytes"]
    total = sum(v.values())
    backlog = total - v.get("stored", 0)
    left = max(0, sum(b.values()) - b.get("stored", 0) - counts.get("sent_in_parts", 0))
    text = f"{v.get('stored', 0)} of {total} videos copied"
    text += f"; {backlog} to copy ({_size(left)} left)" if backlog else "; nothing left to copy"
    if v.get("failed"):
        text += f", {v['failed']} failed"
    if paused:
        text += f"; PAUSED: {paused}"
    elif backlog and last_error and float(last_error.get("at") or 0) > last_ok:
        text += f"; last error: {last_error['message']}"
    return {
        "videos": total, "stored": v.get("stored", 0), "backlog": backlog, "bytes_left": left,
        "pending": v.get("pending", 0), "uploading": v.get("uploading", 0), "failed": v.get("failed", 0),
        "last_error": last_error, "paused": paused, "summary": text,
    }  # fmt: skip


def status(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    raw = catalog.get_meta("offsite_last_error")
    last_error = json.loads(raw) if raw else None
    paused = next((p.message for p in catalog.problems() if p.key == "offsite:access"), None)
    out = summarize(catalog.offsite_counts(), last_error, paused, float(catalog.get_meta("offsite_last_ok") or 0))
    out["url"] = settings.offsite.url
    current = catalog.offsite_target()
    out["target"] = describe_target(current) if current else None
    if current not in (None, target_id(settings.offsite)):
        # Read-only: status only says so; the next copy pass moves the state (see `offsite_retarget`).
        out["summary"] += (f"; these counts are for {describe_target(current)}: the copy moves to "
                           f"{settings.offsite.url} at its next pass")  # fmt: skip
    return out
