"""The S3 store: the only module that talks to the bucket (boto3, loaded when a store is first made).

Every write is conditional (`If-None-Match: *` on PutObject and on CompleteMultipartUpload) so an object
that exists is never replaced; a refused write comes back as a `StoreError` of kind PRECONDITION and the
caller decides whether the object there is ours. Each failure is translated into a `StoreError` whose
`kind` (plan.Kind) says what it means and whose message says what to do; secrets never appear in it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from draftsync.errors import EXIT_PROBLEMS, DraftsyncError
from draftsync.offsite.plan import Kind, answer, classify

if TYPE_CHECKING:
    from draftsync.config import OffsiteConfig


class StoreError(DraftsyncError):
    """An S3 request failed; `kind` says whether to retry, pause or give up on the item."""

    exit_code = EXIT_PROBLEMS

    def __init__(self, message: str, kind: Kind, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Remote:
    """An object in the bucket: what a listing gives, plus the metadata a HEAD adds."""

    key: str
    size: int
    etag: str
    blake3: str | None = None  # the content hash draftsync stored in the object's metadata
    video: str | None = None  # for a sidecar: the hash of the video it describes
    last_modified: float = 0.0


class Throttle:
    """A token bucket shared by every upload thread: at most `rate` bytes per second, bursts of `burst` s.

    Time is injected (`clock`, `sleep`) so its arithmetic is tested without waiting.
    """

    def __init__(self, rate: int, *, burst: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._t = clock() - burst
        self._lock = threading.Lock()

    def delay(self, n: int) -> float:
        """Book `n` bytes; return how long the caller must wait before sending them."""
        with self._lock:
            now = self.clock()
            self._t = max(self._t, now - self.burst) + n / self.rate
            return max(0.0, self._t - now)

    def take(self, n: int) -> None:
        d = self.delay(n)
        if d > 0:
            self.sleep(d)


class _Body(io.RawIOBase):
    """Bytes handed to botocore as a stream, so that sending can be paced and counted."""

    CHUNK = 256 * 1024

    def __init__(self, data: bytes | memoryview, throttle: Throttle | None, sent: Callable[[int], None] | None) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._throttle = throttle
        self._sent = sent

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = len(self._view) - self._pos
        k = left if n is None or n < 0 else min(n, left)
        k = min(k, self.CHUNK)
        if k <= 0:
            return b""
        if self._throttle is not None:
            self._throttle.take(k)
        out = self._view[self._pos : self._pos + k].tobytes()
        self._pos += k
        if self._sent is not None:
            self._sent(k)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


def _etag(v: Any) -> str:
    return str(v or "").strip('"')


class S3Store:
    def __init__(self, cfg: OffsiteConfig, *, concurrency: int = 4, throttle: Throttle | None = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self.throttle = throttle
        self.where = f"s3://{cfg.bucket}" + (f" at {cfg.endpoint_url}" if cfg.endpoint_url else "")
        # AWS checks a CRC32 of every part; elsewhere (boto3 >= 1.36 would break many S3-compatible servers
        # with its default checksums) each body carries a Content-MD5 that the server checks instead.
        self.aws = not cfg.endpoint_url
        self._concurrency = concurrency
        self._client: Any = None
        self._client_lock = threading.Lock()

    # --- the client ---------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def reset(self) -> None:
        """Drop the client so the next call reads the credentials again (after they were fixed)."""
        with self._client_lock:
            self._client = None

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        cfg = self.cfg
        secret = cfg.secret()
        mode = "when_supported" if self.aws else "when_required"
        try:
            session = boto3.session.Session(
                profile_name=cfg.profile or None,
                aws_access_key_id=cfg.access_key_id or None,
                aws_secret_access_key=secret or None,
                region_name=cfg.region or (None if self.aws else "us-east-1"),
            )
            return session.client(
                "s3",
                endpoint_url=cfg.endpoint_url or None,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=10,
                    read_timeout=120,
                    max_pool_connections=self._concurrency + 4,
                    s3={"addressing_style": cfg.addressing_style},
                    request_checksum_calculation=mode,
                    response_checksum_validation=mode,
                    user_agent_extra="draftsync",
                ),
            )
        except BotoCoreError as e:
            name = type(e).__name__
            if name == "NoRegionError":
                raise StoreError(f"{self.where}: set offsite.region (e.g. us-east-1) for AWS", Kind.REJECTED) from None
            if name == "ProfileNotFound":
                raise StoreError(f"offsite.profile {cfg.profile!r} is not in ~/.aws/config or ~/.aws/credentials",
                                 Kind.AUTH, code=name) from None  # fmt: skip
            raise StoreError(f"cannot set up the S3 client for {self.where}: {e}", Kind.REJECTED, code=name) from None

    def _fail(self, e: Exception, what: str, key: str = "") -> StoreError:
        from botocore.exceptions import ClientError

        status: int | None = None
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code") or "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = str(err.get("Message") or code)
        else:
            code = type(e).__name__
            detail = str(e)
        kind = classify(status, code)
        on = f"{what} {key}".strip()
        said = answer(status, code, detail)
        if kind is Kind.AUTH:
            if code == "RequestTimeTooSkewed":
                msg = (f"{self.where} refused the request because this machine's clock is off ({detail}); fix the "
                       "clock (NTP); offsite copying is paused until then")  # fmt: skip
            else:
                msg = (f"{self.where} refused draftsync's credentials when {on} ({said}): check "
                       "offsite.access_key_id and secret_access_key_file (or the AWS environment or profile) and the "
                       "key's permissions; offsite copying is paused until they work")  # fmt: skip
        elif kind is Kind.BUCKET:
            msg = self._no_bucket()
        else:
            # Whether it is tried again is the caller's to say: the daemon retries, a command does not.
            msg = f"{on} on {self.where} failed ({said})"
        return StoreError(msg, kind, status=status, code=code)

    def _no_bucket(self) -> str:
        return (f"the bucket {self.bucket!r} does not exist ({self.where}); create it with the settings you want "
                "(region, versioning, lifecycle); draftsync never creates buckets. Offsite copying is paused until "
                "it exists")  # fmt: skip

    def _call(self, what: str, key: str, fn: str, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, fn)(Bucket=self.bucket, **kw)
        except (ClientError, BotoCoreError) as e:
            raise self._fail(e, what, key) from None

    # --- reads ---------------------------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and the credentials can reach it (HeadBucket)."""
        try:
            self._call("checking the bucket", "", "head_bucket")
        except StoreError as e:
            if e.kind is Kind.NOT_FOUND:
                raise StoreError(self._no_bucket(), Kind.BUCKET, status=404, code="NoSuchBucket") from None
            raise

    def head(self, key: str) -> Remote | None:
        try:
            r = self._call("reading", key, "head_object", Key=key)
        except StoreError as e:
            if e.kind is Kind.NOT_FOUND:
                return None
            raise
        meta = {k.lower(): v for k, v in (r.get("Metadata") or {}).items()}
        lm = r.get("LastModified")
        return Remote(key, int(r.get("ContentLength") or 0), _etag(r.get("ETag")), meta.get("blake3"),
                      meta.get("video-blake3"), lm.timestamp() if lm else 0.0)  # fmt: skip

    def objects(self) -> Iterator[Remote]:
        """Every object under the prefix (size and ETag; no metadata)."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": self.prefix, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            r = self._call("listing", self.prefix or "/", "list_objects_v2", **kw)
            for o in r.get("Contents") or []:
                lm = o.get("LastModified")
                yield Remote(o["Key"], int(o.get("Size") or 0), _etag(o.get("ETag")),
                             last_modified=lm.timestamp() if lm else 0.0)  # fmt: skip
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated") or not token:
                return

    def get(self, key: str) -> tuple[Remote, Any]:
        """The object's description and its body (a stream with iter_chunks and close)."""
        r = self._call("downloading", key, "get_object", Key=key)
        meta = {k.lower(): v for k, v in (r.get("Metadata") or {}).items()}
        rem = Remote(key, int(r.get("ContentLength") or 0), _etag(r.get("ETag")), meta.get("blake3"),
                     meta.get("video-blake3"))  # fmt: skip
        return rem, r["Body"]

    def read_chunks(self, body: Any, what: str, key: str, size: int = 1024 * 1024) -> Iterator[bytes]:
        """The body's chunks; a broken connection becomes a TRANSIENT StoreError."""
        from botocore.exceptions import BotoCoreError

        try:
            yield from body.iter_chunks(size)
        except (BotoCoreError, OSError) as e:
            raise self._fail(e, what, key) from None
        finally:
            body.close()

    def hash_object(self, key: str) -> str:
        """Download an object and return its BLAKE3 (what `--deep` and the scrub compare)."""
        import blake3

        _, body = self.get(key)
        hasher = blake3.blake3()
        for chunk in self.read_chunks(body, "downloading", key):
            hasher.update(chunk)
        return "blake3:" + hasher.hexdigest()

    # --- writes --------------------------------------------------------------------------------------

    def _body_args(self, data: bytes | memoryview, sent: Callable[[int], None] | None) -> dict[str, Any]:
        # A part lives in a reused buffer (a memoryview): botocore reads it as a stream, never copies it whole.
        plain = isinstance(data, bytes) and self.throttle is None and sent is None
        body: Any = data if plain else _Body(data, self.throttle, sent)
        kw: dict[str, Any] = {"Body": body}
        if not self.aws:
            kw["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        return kw

    def _class(self) -> dict[str, Any]:
        return {"StorageClass": self.cfg.storage_class} if self.cfg.storage_class else {}

    def put(self, key: str, data: bytes | memoryview, meta: dict[str, str],
            sent: Callable[[int], None] | None = None) -> str:  # fmt: skip
        """Create the object unless the key exists (PRECONDITION then); returns its ETag."""
        r = self._call("uploading", key, "put_object", Key=key, IfNoneMatch="*", Metadata=meta,
                       **self._body_args(data, sent), **self._class())  # fmt: skip
        return _etag(r.get("ETag"))

    def create_upload(self, key: str, meta: dict[str, str]) -> str:
        extra = {"ChecksumAlgorithm": "CRC32"} if self.aws else {}
        r = self._call("starting the upload of", key, "create_multipart_upload", Key=key, Metadata=meta,
                       **extra, **self._class())  # fmt: skip
        return str(r["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | memoryview,
                    sent: Callable[[int], None] | None = None) -> tuple[str, str | None]:  # fmt: skip
        """Send one part; returns its ETag and (on AWS) its CRC32."""
        extra = {"ChecksumAlgorithm": "CRC32"} if self.aws else {}
        r = self._call(f"uploading part {number} of", key, "upload_part", Key=key, UploadId=upload_id,
                       PartNumber=number, **self._body_args(data, sent), **extra)  # fmt: skip
        return _etag(r.get("ETag")), r.get("ChecksumCRC32")

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """Parts the store holds for the upload (number -> (ETag, size)), or None when the upload is gone."""
        out: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                r = self._call("resuming", key, "list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker)
            except StoreError as e:
                if e.kind in (Kind.NO_UPLOAD, Kind.NOT_FOUND):
                    return None
                raise
            for p in r.get("Parts") or []:
                out[int(p["PartNumber"])] = (_etag(p.get("ETag")), int(p.get("Size") or 0))
            if not r.get("IsTruncated"):
                return out
            marker = int(r.get("NextPartNumberMarker") or 0)
            if not marker:
                return out

    def complete(self, key: str, upload_id: str, done: list[tuple[int, str, str | None]]) -> str:
        """Make the upload an object unless the key exists (PRECONDITION then); returns its ETag."""
        parts = []
        for n, etag, crc in sorted(done):
            p: dict[str, Any] = {"PartNumber": n, "ETag": f'"{etag}"'}
            if crc:
                p["ChecksumCRC32"] = crc
            parts.append(p)
        r = self._call("completing the upload of", key, "complete_multipart_upload", Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")  # fmt: skip
        return _etag(r.get("ETag"))

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abandoning the upload of", key, "abort_multipart_upload", Key=key, UploadId=upload_id)
        except StoreError as e:
            if e.kind not in (Kind.NO_UPLOAD, Kind.NOT_FOUND):
                raise

    def list_uploads(self) -> list[tuple[str, str, float]]:
        """Multipart uploads in progress under the prefix: (key, upload id, started at)."""
        out: list[tuple[str, str, float]] = []
        kw: dict[str, Any] = {"Prefix": self.prefix}
        while True:
            r = self._call("listing uploads under", self.prefix or "/", "list_multipart_uploads", **kw)
            for u in r.get("Uploads") or []:
                t = u.get("Initiated")
                out.append((u["Key"], u["UploadId"], t.timestamp() if t else 0.0))
            if not r.get("IsTruncated"):
                return out
            kw = {"Prefix": self.prefix, "KeyMarker": r.get("NextKeyMarker"),
                  "UploadIdMarker": r.get("NextUploadIdMarker")}  # fmt: skip
