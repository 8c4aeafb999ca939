"""The one small protocol every push back-end implements, and its three implementations.

A back-end creates the remote job for a video and sends its bytes (`begin`), picks up a job a crash
interrupted (`resume`), and reports on a job (`poll`). It calls `record` with the remote id the moment it
exists and before any byte of the video is sent, so the catalog always knows what was started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from draftsync import log
from draftsync.config import Settings
from draftsync.errors import AuthError, PushError
from draftsync.push.auth import TokenStore
from draftsync.push.postforme import PostForMe, draft_payload
from draftsync.push.tiktok import TikTok, Upload, UploadDead, chunk_plan

_log = log.get("draftsync.push")

# TikTok fail_reason values that mean the file itself will never pass (spec A.4).
PERMANENT_REASONS = {
    "file_format_check_failed", "duration_check_failed", "frame_rate_check_failed", "picture_size_check_failed",
    "spam_risk_user_banned_from_posting", "spam_risk_text", "spam_risk", "publish_cancelled",
}  # fmt: skip


@dataclass
class Job:
    """What a back-end needs to know about one push (a row of the catalog's pushes table, plus the file)."""

    hash: str
    path: Path
    size: int
    caption: str
    remote_id: str | None = None
    upload_url: str | None = None
    upload_started: float | None = None
    chunk_size: int | None = None
    chunk_count: int | None = None
    state: str = "queued"


@dataclass
class Poll:
    state: str  # processing | done | failed | dead | uploading
    reason: str = ""
    code: str = ""
    log_id: str = ""
    retry_at: float | None = None
    remote_detail: str = ""


Record = Callable[
    ..., None
]  # record(remote_id=..., upload_url=..., upload_started=..., chunk_size=..., chunk_count=...)
Counter = Callable[[str], Callable[[bool], None]]  # count("init") before the call; the result says if it succeeded


class Backend(Protocol):
    name: str

    def account(self) -> str: ...

    def check(self) -> str: ...

    def begin(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> None: ...

    def resume(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> Poll: ...

    def poll(self, job: Job, count: Counter) -> Poll: ...


class TikTokBackend:
    name = "tiktok"

    def __init__(self, settings: Settings, client: httpx.Client | None = None, should_stop: Callable[[], bool] = lambda: False,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.tokens = TokenStore(settings, client)
        self.api = TikTok(settings, self.tokens, client, should_stop, sleep)
        self.settings = settings

    def account(self) -> str:
        tok = self.tokens.load()
        return f"tiktok:{tok.open_id}" if tok else "tiktok:?"

    def check(self) -> str:
        tok = self.tokens.access_token()
        if "video.upload" not in tok.scope.split(","):
            raise AuthError("the TikTok token lacks video.upload; run `draftsync auth tiktok` again")
        return tok.open_id

    def begin(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> None:
        done = count("init")
        try:
            up = self.api.init(job.size)
        except PushError:
            done(False)
            raise
        done(True)
        # The publish id is durable before the first chunk leaves (never twice, spec C.3).
        record(remote_id=up.publish_id, upload_url=up.upload_url, upload_started=up.issued_at, chunk_size=up.chunk_size,
               chunk_count=up.count)  # fmt: skip
        _log.info("tiktok upload started", hash=job.hash, publish_id=up.publish_id, size=job.size, chunks=up.count)
        self.api.upload(job.path, up, job.size, progress=progress)

    def resume(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> Poll:
        if not job.remote_id:
            # Interrupted during init: no byte was sent, so no draft can exist. Start again.
            return Poll("dead", reason="interrupted before the upload began")
        p = self.poll(job, count)
        if p.state != "uploading":
            return p
        if not job.upload_url or not job.upload_started or time.time() - job.upload_started > 3600:
            return Poll("dead", reason="upload interrupted and its URL has expired")
        cs, n = job.chunk_size, job.chunk_count
        if not cs or not n:
            cs, n = chunk_plan(job.size, self.settings.tiktok.chunk_size)
        up = Upload(job.remote_id, job.upload_url, cs, n, job.upload_started)
        uploaded = int(p.remote_detail or 0)
        start = (uploaded // cs) * cs  # resend from the chunk TikTok has not fully got
        _log.info("tiktok upload resumed", hash=job.hash, publish_id=job.remote_id, from_byte=start)
        try:
            self.api.upload(job.path, up, job.size, start_byte=start, progress=progress)
        except UploadDead as e:
            return Poll("dead", reason=str(e))
        return Poll("processing")

    def poll(self, job: Job, count: Counter) -> Poll:
        assert job.remote_id
        done = count("status")
        try:
            data = self.api.status(job.remote_id)
        except UploadDead as e:
            done(False)
            return Poll("dead", reason=str(e))
        except PushError:
            done(False)
            raise
        done(True)
        status = str(data.get("status") or "")
        if status in ("SEND_TO_USER_INBOX", "PUBLISH_COMPLETE"):
            return Poll("done", reason=f"in the TikTok inbox (publish_id {job.remote_id})")
        if status == "FAILED":
            reason = str(data.get("fail_reason") or "unknown")
            if reason in PERMANENT_REASONS or reason.endswith("_check_failed"):
                return Poll("failed", reason=f"TikTok rejected the video: {reason}", code=reason)
            if reason == "auth_removed":
                raise AuthError("the TikTok account removed draftsync's access; run `draftsync auth tiktok` again",
                                code=reason)  # fmt: skip
            if reason == "spam_risk_too_many_posts":
                return Poll("dead", reason=reason, code=reason, retry_at=time.time() + 86400)
            return Poll("dead", reason=f"TikTok failed the upload: {reason}", code=reason, retry_at=time.time() + 3600)
        uploaded = data.get("uploaded_bytes")
        if job.state == "uploading" and (uploaded is None or int(uploaded) < job.size):
            return Poll("uploading", remote_detail=str(int(uploaded or 0)))
        return Poll("processing")


class PostForMeBackend:
    name = "postforme"

    def __init__(self, settings: Settings, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.api = PostForMe(settings, client, sleep)
        self.settings = settings

    def account(self) -> str:
        return f"postforme:{self.settings.postforme.social_account_id}"

    def check(self) -> str:
        return str(self.api.check_account().get("username") or self.settings.postforme.social_account_id)

    def begin(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> None:
        existing = self.api.find_existing(job.hash)
        if existing:
            record(remote_id=existing)
            return
        media_url = self.api.upload(job.path, job.size, progress)
        done = count("init")
        try:
            post_id = self.api.create_post(job.caption, media_url, job.hash)
        except PushError:
            done(False)
            raise
        done(True)
        record(remote_id=post_id)
        _log.info("post for me draft created", hash=job.hash, post_id=post_id)

    def resume(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> Poll:
        if not job.remote_id:
            existing = self.api.find_existing(job.hash)
            if not existing:
                return Poll("dead", reason="interrupted before the post was created")
            record(remote_id=existing)
            job.remote_id = existing
        return self.poll(job, count)

    def poll(self, job: Job, count: Counter) -> Poll:
        assert job.remote_id
        done = count("status")
        state, detail = self.api.poll(job.remote_id)
        done(True)
        if state == "processing":
            return Poll("processing")
        if state == "done":
            pd = detail.get("platform_data") or {}
            return Poll("done", reason=f"in the TikTok inbox via Post for Me (publish_id {pd.get('id', '?')})")
        text = f"{detail.get('error') or 'failed'} {detail.get('details') or ''}".strip()
        if "spam_risk_too_many_pending_share" in text or "rate_limit" in text:
            return Poll("dead", reason=f"Post for Me: {text}", code="tiktok_limit", retry_at=time.time() + 3600)
        return Poll("failed", reason=f"Post for Me: {text}", code="result_failed")


class DryRunBackend:
    """Logs and records what would be sent; sends nothing."""

    name = "dry-run"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def account(self) -> str:
        return "dry-run"

    def check(self) -> str:
        return "dry-run"

    def begin(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> None:
        payload: dict[str, Any] = {"tiktok_init": {"source_info": {"source": "FILE_UPLOAD", "video_size": job.size}},
                                   "postforme_post": draft_payload(job.caption, "spc_…", "<media url>", job.hash)}  # fmt: skip
        _log.info("dry run: would push", hash=job.hash, path=str(job.path), payload=payload)
        record(remote_id=f"dry-run:{job.hash[7:15]}")

    def resume(self, job: Job, record: Record, count: Counter, progress: Callable[[int], None] | None) -> Poll:
        return Poll("done", reason="dry run: nothing was sent")

    def poll(self, job: Job, count: Counter) -> Poll:
        return Poll("done", reason="dry run: nothing was sent")


def make_backend(settings: Settings, should_stop: Callable[[], bool] = lambda: False,
                 client: httpx.Client | None = None) -> Backend:  # fmt: skip
    name = settings.push.backend
    if name == "tiktok":
        return TikTokBackend(settings, client, should_stop)
    if name == "postforme":
        return PostForMeBackend(settings, client)
    return DryRunBackend(settings)
