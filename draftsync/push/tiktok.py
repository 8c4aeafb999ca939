"""TikTok Content Posting API, inbox (draft) upload: init, chunked FILE_UPLOAD streamed from disk, status.

Implements ../shared/spec/draft-apis.md part A. Success is decided from `error.code`, never from the
HTTP status alone (A.0); where the spec says "unconfirmed", the safe reading is taken and says so here.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from draftsync import log
from draftsync.config import Settings
from draftsync.errors import PushError
from draftsync.push.auth import TokenStore

_log = log.get("draftsync.push.tiktok")

# Byte bounds, the stricter reading of TikTok's undefined "MB" (spec A.3.1).
MIN_CHUNK = 5_242_880
MAX_CHUNK = 64_000_000
MAX_FINAL_CHUNK = 128_000_000
MAX_CHUNKS = 1000
MAX_VIDEO = 4_000_000_000
UPLOAD_URL_LIFETIME = 3600.0
PIECE = 1024 * 1024
CHUNK_RETRIES = 8

CONTENT_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}


def chunk_plan(video_size: int, preferred: int = 10_000_000) -> tuple[int, int]:
    """(chunk_size, total_chunk_count) valid under every reading of the spec (A.3.1)."""
    if video_size <= 0:
        raise ValueError("an empty file cannot be uploaded")
    if video_size > MAX_VIDEO:
        raise ValueError(f"{video_size} bytes is over TikTok's {MAX_VIDEO}-byte limit")
    if video_size < MIN_CHUNK:  # rule 4: sent whole
        return video_size, 1
    cs = min(max(preferred, MIN_CHUNK), MAX_CHUNK)
    if video_size < 2 * cs:  # floor would be 1
        if video_size <= MAX_CHUNK:
            # Safe reading: whenever one PUT carries the whole file, announce chunk_size = video_size.
            return video_size, 1
        cs = video_size // 2  # > MAX_CHUNK: two chunks, both in bounds
    return cs, video_size // cs


def chunk_range(i: int, video_size: int, chunk_size: int, count: int) -> tuple[int, int]:
    """Zero-based inclusive (first, last) byte of chunk i; the leftover goes into the last chunk."""
    first = i * chunk_size
    last = video_size - 1 if i == count - 1 else first + chunk_size - 1
    return first, last


@dataclass
class Upload:
    publish_id: str
    upload_url: str
    chunk_size: int
    count: int
    issued_at: float  # time.monotonic() when the URL was issued (or the deadline's origin on a resume)


class UploadDead(PushError):
    """The upload URL is expired or unknown (403/404): only a new init can continue."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, retryable=True, status=status, code="upload_dead")


class Unreachable(PushError):
    """No answer. `sent`: the request may have reached TikTok (a timeout or a dropped connection), as
    opposed to a connection that was never made."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message, retryable=True, code="unreachable" if sent else "no_connection")
        self.sent = sent


def transport_error(what: str, e: httpx.HTTPError) -> Unreachable:
    # Only a failed connect proves the request never left; anything later may have been acted on.
    sent = not isinstance(e, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return Unreachable(f"{what} did not answer ({type(e).__name__})", sent)


@dataclass(frozen=True)
class Reply:
    """One answer of a posting endpoint, decoded from TikTok's envelope (A.0)."""

    code: str
    message: str
    log_id: str
    data: dict[str, Any]
    http: int

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def text(self) -> str:
        return f"TikTok answered {self.code}" + (f": {self.message}" if self.message else "") + (
            f" (log_id {self.log_id})" if self.log_id else "")  # fmt: skip


def _decode(r: httpx.Response) -> Reply:
    try:
        body = r.json()
    except ValueError:
        body = {}
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or (f"http_{r.status_code}" if not (200 <= r.status_code < 300) else "missing_error"))
    data = body.get("data") if isinstance(body, dict) else None
    return Reply(code, str(err.get("message") or ""), str(err.get("log_id") or ""),
                 data if isinstance(data, dict) else {}, r.status_code)  # fmt: skip


def _backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    # Exponential with full jitter, so retries from several clients do not line up.
    return random.uniform(0, min(cap, base * (2**attempt)))


class TikTok:
    """The HTTP side of the inbox flow. It only talks: what an answer means is push.backend's to say."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenStore,
        client: httpx.Client | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.base = settings.tiktok.api_base.rstrip("/")
        self.tokens = tokens
        self.client = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0))
        self.should_stop = should_stop
        self.sleep = sleep

    # --- posting endpoints ---------------------------------------------------------------------------

    def call(self, path: str, payload: dict[str, Any]) -> Reply:
        """POST a posting endpoint with the bearer token; one refresh and one retry on access_token_invalid.
        Raises AuthError/PushError when no token can be had (nothing was sent), Unreachable on no answer."""
        tok = self.tokens.access_token()
        for attempt in range(2):
            try:
                r = self.client.post(
                    f"{self.base}{path}",
                    json=payload,
                    headers={
                        "Authorization": f"Bearer {tok.access_token}",
                        "Content-Type": "application/json; charset=UTF-8",
                    },
                )
            except httpx.HTTPError as e:
                raise transport_error("TikTok", e) from None
            reply = _decode(r)
            if reply.code == "access_token_invalid" and attempt == 0:
                tok = self.tokens.access_token(force_refresh=True, stale=tok.access_token)
                continue
            return reply
        raise AssertionError("unreachable")

    def init_reply(self, size: int) -> tuple[Reply, int, int]:
        cs, n = chunk_plan(size, self.settings.tiktok.chunk_size)
        body = {"source_info": {"source": "FILE_UPLOAD", "video_size": size, "chunk_size": cs, "total_chunk_count": n}}
        return self.call("/v2/post/publish/inbox/video/init/", body), cs, n

    def init(self, size: int) -> Upload:
        """Init and return the upload (a convenience for benchmarks and tools; the pusher maps answers itself)."""
        reply, cs, n = self.init_reply(size)
        if not reply.ok or not reply.data.get("publish_id") or not reply.data.get("upload_url"):
            raise PushError(reply.text(), code=reply.code, log_id=reply.log_id)
        return Upload(str(reply.data["publish_id"]), str(reply.data["upload_url"]), cs, n, time.monotonic())

    def status(self, publish_id: str) -> Reply:
        return self.call("/v2/post/publish/status/fetch/", {"publish_id": publish_id})

    def user_info(self) -> dict[str, Any]:
        tok = self.tokens.access_token()
        r = self.client.get(
            f"{self.base}/v2/user/info/",
            params={"fields": "open_id,display_name"},
            headers={"Authorization": f"Bearer {tok.access_token}"},
        )
        reply = _decode(r)
        if not reply.ok:
            raise PushError(reply.text(), code=reply.code, log_id=reply.log_id)
        user = reply.data.get("user")
        return user if isinstance(user, dict) else {}

    # --- bytes -----------------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        up: Upload,
        size: int,
        *,
        start_byte: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Send chunks in order from `start_byte` (a chunk boundary), streamed from disk."""
        ctype = CONTENT_TYPES.get(path.suffix.lower(), "video/mp4")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != size:
                raise PushError(f"{path} is not the size recorded in the catalog; run `draftsync verify`")
            i = min(start_byte // up.chunk_size, up.count - 1) if start_byte < size else up.count
            while i < up.count:
                if self.should_stop():
                    raise PushError("stopped during an upload; it resumes on the next start", retryable=True)
                if time.monotonic() - up.issued_at > UPLOAD_URL_LIFETIME:
                    raise UploadDead("the upload URL is older than 60 minutes")
                first, last = chunk_range(i, size, up.chunk_size, up.count)
                nxt = self._put_chunk(fd, up, first, last, size, ctype)
                if progress:
                    progress(last - first + 1)
                if nxt >= size:
                    return
                i = nxt // up.chunk_size
                if i * up.chunk_size != nxt:
                    raise PushError(f"TikTok reports a position ({nxt}) off the chunk grid", retryable=True)
        finally:
            os.close(fd)

    def _put_chunk(self, fd: int, up: Upload, first: int, last: int, size: int, ctype: str) -> int:
        """PUT one chunk with bounded retries; returns the byte offset the next chunk starts at."""
        length = last - first + 1
        headers = {
            "Content-Type": ctype,
            "Content-Length": str(length),
            "Content-Range": f"bytes {first}-{last}/{size}",
        }
        for attempt in range(CHUNK_RETRIES + 1):
            try:
                r = self.client.put(up.upload_url, content=read_pieces(fd, first, length), headers=headers)
            except httpx.HTTPError as e:
                # A dropped connection or timeout is a 5xx-equivalent: re-send the same chunk (A.3.3).
                _log.warning("chunk upload interrupted", publish_id=up.publish_id, first=first, error=type(e).__name__)
                self.sleep(_backoff(attempt))
                continue
            if r.status_code in (200, 201, 206):
                return _next_offset(r, last + 1)
            if r.status_code == 416:
                # An earlier attempt may have landed; continue after what the server has (safe reading:
                # X in "bytes 0-X/TOTAL" is the last received byte index).
                nxt = _next_offset(r, None)
                if nxt is None:
                    raise PushError("TikTok answered 416 without a usable Content-Range", retryable=True)
                return nxt
            if r.status_code in (403, 404):
                raise UploadDead(f"the upload URL was refused ({r.status_code})", r.status_code)
            if r.status_code >= 500 or r.status_code == 429:
                _log.warning("chunk upload failed, retrying", publish_id=up.publish_id, status=r.status_code)
                self.sleep(_backoff(attempt))
                continue
            raise PushError(f"TikTok refused a chunk ({r.status_code}); this is a draftsync bug, please report it",
                            status=r.status_code, code=f"chunk_http_{r.status_code}")  # fmt: skip
        raise PushError(f"a chunk failed {CHUNK_RETRIES + 1} times; the upload resumes later", retryable=True)


_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _next_offset(r: httpx.Response, default: int | None) -> Any:
    m = _RANGE.search(r.headers.get("Content-Range", ""))
    return int(m.group(2)) + 1 if m else default


def read_pieces(fd: int, offset: int, length: int, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """`length` bytes of an open file from `offset`, 1 MiB at a time: uploads never hold a file in memory."""
    end = offset + length
    pos = offset
    while pos < end:
        b = os.pread(fd, min(PIECE, end - pos), pos)
        if not b:
            raise PushError("the archived file got shorter while it was uploaded", retryable=True)
        pos += len(b)
        if progress:
            progress(len(b))
        yield b
