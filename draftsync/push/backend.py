"""The one small protocol every push back-end implements, and what each service's answers mean.

A back-end talks HTTP and returns one outcome of `machine.Outcome` for every call; it never changes an
item, counts a budget or sleeps for one. `create` makes the remote object (TikTok init, Post for Me
create-post) exactly once per call and is never retried inside; `lookup` tells, after a lost answer,
whether that object exists; `send` delivers bytes from where the service is; `poll` reports progress.
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
from draftsync.errors import AuthError, DraftsyncError, PushError
from draftsync.push.auth import TokenBusy, TokenStore
from draftsync.push.machine import (
    NOT_A_DRAFT,
    Dead,
    Deferred,
    InInbox,
    NeedsReauth,
    Outcome,
    Pending,
    Rejected,
    Sent,
    Started,
    Unknown,
)
from draftsync.push.postforme import DRAFT_PLATFORMS, Answer, PostForMe, confirms_draft
from draftsync.push.tiktok import TikTok, Unreachable, Upload, UploadDead, chunk_plan

_log = log.get("draftsync.push")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    """What a back-end needs to know about one push."""

    hash: str
    path: Path
    size: int
    caption: str
    ref: str = ""  # this attempt's own reference
    remote_id: str | None = None
    upload_url: str | None = None
    chunk_size: int | None = None
    chunk_count: int | None = None
    url_age: float = 0.0  # seconds since the upload URL was issued


class Backend(Protocol):
    name: str

    def account(self) -> str: ...

    def check(self) -> Outcome | None: ...

    def create(self, job: Job, progress: Progress | None = None) -> Outcome: ...

    def lookup(self, job: Job) -> Outcome:
        """What became of an earlier create. Never Deferred or NeedsReauth for a create whose answer was
        lost: to a `starting` item those mean "refused, nothing exists", and a second create would follow."""
        ...

    def send(self, job: Job, uploaded: int, progress: Progress | None = None) -> Outcome: ...

    def poll(self, job: Job) -> Outcome: ...


# --- TikTok -------------------------------------------------------------------------------------------------

# TikTok fail_reason values that mean the file itself will never pass (spec A.4).
PERMANENT_REASONS = {
    "file_format_check_failed", "duration_check_failed", "frame_rate_check_failed", "picture_size_check_failed",
    "spam_risk_user_banned_from_posting", "spam_risk_text", "spam_risk", "publish_cancelled",
}  # fmt: skip
_REAUTH = "; run `draftsync auth tiktok` again"


def _no_answer(e: DraftsyncError) -> Outcome:
    """A call that got no usable answer: a token or configuration problem or a connection never made
    changed nothing; a request that may have arrived is unknown."""
    if not isinstance(e, PushError):  # e.g. a secret file that cannot be read: the owner must act
        return NeedsReauth(str(e), "config")
    if isinstance(e, AuthError):
        return NeedsReauth(str(e), e.code)
    if isinstance(e, TokenBusy):
        return Deferred(str(e), e.retry_after, e.code, e.log_id, limit="service")
    if isinstance(e, Unreachable) and not e.sent:
        return Deferred(str(e), 60.0, e.code)
    return Unknown(str(e), e.code)


def tiktok_init_outcome(code: str, text: str, log_id: str, http: int) -> Outcome:
    """What an init error means (spec A.2, A.5). Only a 5xx may hide a share TikTok made anyway."""
    if code in ("rate_limit_exceeded",):
        return Deferred(text, 60.0, code, log_id, limit="minute")  # wait out the sliding minute
    if code == "spam_risk_too_many_pending_share":
        return Deferred(text, 3600.0, code, log_id, limit="pending")
    if code in ("access_token_invalid", "scope_not_authorized", "scope_permission_missed"):
        return NeedsReauth(text + _REAUTH, code)
    if code == "spam_risk_user_banned_from_posting":
        return NeedsReauth(text + "; TikTok does not let this account post, so pushing is paused", code)
    if http >= 500 or code in ("internal_error", "missing_error"):
        return Unknown(text, code)
    return Rejected(text, code, log_id)  # invalid_params, invalid_file_upload, url_ownership_unverified, ...


def tiktok_status_outcome(code: str, text: str, log_id: str, data: dict[str, object], publish_id: str,
                          size: int = 0) -> Outcome:  # fmt: skip
    """What a status answer means (spec A.4); `size` is the file's, to tell whether every byte arrived."""
    if code != "ok":
        if code in ("invalid_publish_id", "token_not_authorized_for_specified_publish_id"):
            return Dead(text, code, log_id=log_id, unknown_id=code == "invalid_publish_id")
        if code == "rate_limit_exceeded":
            return Deferred(text, 60.0, code, log_id)
        if code in ("access_token_invalid", "scope_not_authorized", "scope_permission_missed"):
            return NeedsReauth(text + _REAUTH, code)
        return Unknown(text, code)
    status = str(data.get("status") or "")
    if status in ("SEND_TO_USER_INBOX", "PUBLISH_COMPLETE"):
        return InInbox(f"in the TikTok inbox (publish_id {publish_id})")
    if status == "FAILED":
        reason = str(data.get("fail_reason") or "unknown")
        if reason in PERMANENT_REASONS or reason.endswith("_check_failed"):
            return Rejected(f"TikTok rejected the video: {reason}", reason, log_id)
        if reason == "auth_removed":
            return Dead("the account removed draftsync's access" + _REAUTH, reason, log_id=log_id)
        if reason == "spam_risk_too_many_posts":
            return Dead("TikTok: too many posts by this account today", reason, 86400.0, log_id)
        return Dead(f"TikTok failed the upload: {reason}", reason, 3600.0, log_id)
    if status in ("PROCESSING_UPLOAD", "PROCESSING_DOWNLOAD"):
        raw = data.get("uploaded_bytes")
        got = int(raw) if isinstance(raw, int | float | str) and str(raw).isdigit() else None
        return Pending(got, complete=bool(size) and got is not None and got >= size)
    return Unknown(f"TikTok answered an unknown status {status!r}", "status")


class TikTokBackend:
    name = "tiktok"

    def __init__(self, settings: Settings, client: httpx.Client | None = None,
                 should_stop: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.tokens = TokenStore(settings, client)
        self.api = TikTok(settings, self.tokens, client, should_stop, sleep)
        self.settings = settings

    def account(self) -> str:
        try:
            tok = self.tokens.load()
        except AuthError:
            tok = None
        return f"tiktok:{tok.open_id}" if tok else "tiktok:?"

    def check(self) -> Outcome | None:
        try:
            tok = self.tokens.access_token()
        except DraftsyncError as e:
            return _no_answer(e)
        if "video.upload" not in tok.scope.split(","):
            return NeedsReauth("the TikTok token lacks video.upload" + _REAUTH, "scope_not_authorized")
        return None

    def create(self, job: Job, progress: Progress | None = None) -> Outcome:
        try:
            reply, cs, n = self.api.init_reply(job.size)
        except ValueError as e:  # chunk_plan: size out of bounds
            return Rejected(str(e), "size")
        except DraftsyncError as e:
            return _no_answer(e)
        if not reply.ok:
            return tiktok_init_outcome(reply.code, reply.text(), reply.log_id, reply.http)
        pid, url = reply.data.get("publish_id"), reply.data.get("upload_url")
        if not pid or not url:
            return Unknown("TikTok's init answer lacks publish_id or upload_url", "init_answer")
        _log.info("tiktok upload started", hash=job.hash, publish_id=pid, size=job.size, chunks=n)
        return Started(str(pid), str(url), cs, n, reply.log_id)

    def lookup(self, job: Job) -> Outcome:
        if job.remote_id:
            return self.poll(job)
        # TikTok cannot be asked about an init whose answer was lost (there is no publish id), but without
        # its upload URL no byte can reach it, so it can never become a draft. The slot it may hold stays
        # counted in the ledger for 24 h.
        return Dead("the answer to an init was lost; it cannot become a draft without its upload URL",
                    "init_lost")  # fmt: skip

    def send(self, job: Job, uploaded: int, progress: Progress | None = None) -> Outcome:
        if job.size and uploaded >= job.size:
            return Sent()  # every byte arrived before the interruption
        if not job.remote_id or not job.upload_url:
            return Dead("no upload URL is known for this upload", "no_url")
        cs, n = job.chunk_size, job.chunk_count
        if not cs or not n:
            cs, n = chunk_plan(job.size, self.settings.tiktok.chunk_size)
        up = Upload(job.remote_id, job.upload_url, cs, n, time.monotonic() - job.url_age)
        start = (uploaded // cs) * cs  # resend from the chunk TikTok has not fully got
        if start:
            _log.info("tiktok upload resumed", hash=job.hash, publish_id=job.remote_id, from_byte=start)
        try:
            self.api.upload(job.path, up, job.size, start_byte=start, progress=progress)
        except UploadDead as e:
            # A refused URL may follow a last chunk that landed with its answer lost: if TikTok holds every
            # byte (or has delivered), the share finishes without the URL and a new init would be a second
            # draft; so look first, and only a share known unfinished is dead.
            seen = self.poll(job)
            if isinstance(seen, InInbox | Unknown) or (isinstance(seen, Pending) and seen.complete):
                return seen  # (no answer: it stays uploading and is looked at again, never re-initialised blindly)
            return Dead(str(e), e.code)
        except PushError as e:
            return Unknown(str(e), e.code) if e.retryable else Rejected(str(e), e.code)
        except OSError as e:
            return Rejected(f"cannot read the archived copy {job.path}: {e.strerror}", "unreadable")
        return Sent()

    def poll(self, job: Job) -> Outcome:
        assert job.remote_id
        try:
            r = self.api.status(job.remote_id)
        except DraftsyncError as e:
            return _no_answer(e)
        return tiktok_status_outcome(r.code, r.text(), r.log_id, r.data, job.remote_id, job.size)


# --- Post for Me --------------------------------------------------------------------------------------------


def _pfm_refusal(a: Answer, created_on_5xx: bool) -> Outcome:
    """What a non-2xx Post for Me answer means (B.1, B.8)."""
    if a.status == 401:
        return NeedsReauth(a.text() + "; check postforme.api_key", "unauthorized")
    if a.status == 429:
        return Deferred(a.text(), a.retry_after(), "rate_limited", limit="service")
    if a.status >= 500:
        return (
            Unknown(a.text(), f"http_{a.status}") if created_on_5xx else Deferred(a.text(), 300.0, f"http_{a.status}")
        )
    return Rejected(a.text(), f"http_{a.status}")


class PostForMeBackend:
    name = "postforme"

    def __init__(self, settings: Settings, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.api = PostForMe(settings, client, sleep)
        self.settings = settings
        self.platform = ""

    def account(self) -> str:
        return f"postforme:{self.settings.postforme.social_account_id}"

    def check(self) -> Outcome | None:
        if not self.settings.postforme.social_account_id:
            return NeedsReauth("postforme.social_account_id is not set", "config")
        try:
            a = self.api.social_account()
        except DraftsyncError as e:
            return _no_answer(e)
        if a.status == 404:
            return NeedsReauth(f"Post for Me has no account {self.api.account}; check postforme.social_account_id")
        if not a.ok:
            return _pfm_refusal(a, False)
        acc = a.body if isinstance(a.body, dict) else {}
        if acc.get("status") != "connected":
            return NeedsReauth(f"the Post for Me account {self.api.account} is {acc.get('status')}; reconnect it "
                               "in Post for Me", "disconnected")  # fmt: skip
        platform = str(acc.get("platform") or "")
        if platform not in DRAFT_PLATFORMS:
            return NeedsReauth(f"the Post for Me account {self.api.account} is a {platform or 'unknown'} account; "
                               "draftsync cannot confirm that Post for Me makes drafts (not posts) there, so it "
                               "does not push to it", "platform")  # fmt: skip
        self.platform = platform
        return None

    def _draft_or_halt(self, post: dict[str, object]) -> Outcome:
        pid = str(post.get("id") or "")
        if not pid:
            return Unknown("Post for Me's answer lacks the post id", "post_answer")
        if not confirms_draft(post, self.api.account, self.platform or "tiktok"):
            return Rejected(f"Post for Me made post {pid} without confirming it is a TikTok draft (it may be "
                            "published); check it in Post for Me", NOT_A_DRAFT, halt=True)  # fmt: skip
        return Started(pid)

    def create(self, job: Job, progress: Progress | None = None) -> Outcome:
        if not self.platform and (o := self.check()) is not None:
            return o
        try:
            media = self.api.upload(job.path, job.size, progress)
        except DraftsyncError as e:  # the media upload creates nothing that could be published
            return Deferred(str(e), 60.0, "unreachable") if isinstance(e, Unreachable) else _no_answer(e)
        except OSError as e:
            return Rejected(f"cannot read the archived copy {job.path}: {e.strerror}", "unreadable")
        if isinstance(media, Answer):
            return _pfm_refusal(media, False)
        try:
            a = self.api.create_post(job.caption, media, job.ref)
        except DraftsyncError as e:
            return _no_answer(e)
        if not a.ok:
            return _pfm_refusal(a, True)
        out = self._draft_or_halt(a.body if isinstance(a.body, dict) else {})
        if isinstance(out, Started):
            _log.info("post for me draft created", hash=job.hash, post_id=out.remote_id, external_id=job.ref)
        return out

    def lookup(self, job: Job) -> Outcome:
        if job.remote_id:
            return self.poll(job)
        o = self._find(job)
        if isinstance(o, Deferred | NeedsReauth):
            # Said of a look-up, these mean only that it could not be made, not that the create was refused
            # (which is what they mean to a `starting` item): the post may exist, so it stays unknown.
            return Unknown(f"could not look up the post whose answer was lost: {o.reason}", o.code or "lookup")
        return o

    def _find(self, job: Job) -> Outcome:
        try:
            a = self.api.posts_by_external_id(job.ref)
        except DraftsyncError as e:
            return _no_answer(e)
        if not a.ok:
            return NeedsReauth(a.text(), "unauthorized") if a.status == 401 else Unknown(a.text(), f"http_{a.status}")
        data = a.body.get("data") if isinstance(a.body, dict) else None
        posts = [p for p in data or [] if isinstance(p, dict) and p.get("external_id") == job.ref]
        if not posts:
            return Dead("the answer to creating the post was lost, and Post for Me holds no post for it",
                        "post_absent", absent=True)  # fmt: skip
        if len(posts) > 1:
            _log.error("Post for Me holds several posts for one attempt", hash=job.hash, external_id=job.ref,
                       posts=[p.get("id") for p in posts])  # fmt: skip
        return self._draft_or_halt(posts[0])

    def send(self, job: Job, uploaded: int, progress: Progress | None = None) -> Outcome:
        return Sent()  # the media went up before the post was created

    def poll(self, job: Job) -> Outcome:
        assert job.remote_id
        try:
            a = self.api.post(job.remote_id)
            if a.ok and isinstance(a.body, dict) and a.body.get("status") == "processed":
                a = self.api.results(job.remote_id)
                return self._result(a, job)
        except DraftsyncError as e:
            return _no_answer(e)
        if a.status == 404:
            return Dead(f"Post for Me does not know post {job.remote_id}", "post_absent", unknown_id=True)
        if not a.ok:
            return _pfm_refusal(a, False) if a.status in (401, 429) else Unknown(a.text(), f"http_{a.status}")
        return Pending()

    def _result(self, a: Answer, job: Job) -> Outcome:
        if not a.ok:
            return _pfm_refusal(a, False) if a.status in (401, 429) else Unknown(a.text(), f"http_{a.status}")
        data = a.body.get("data") if isinstance(a.body, dict) else None
        mine = [x for x in data or [] if isinstance(x, dict) and x.get("social_account_id") in (self.api.account, None)]
        if not mine:
            return Pending()
        res = mine[0]
        details = _dict(res.get("details"))
        if res.get("success") is True:
            said = str(details.get("status") or "")
            if "draft" not in said.lower():
                return Rejected(f"Post for Me reports post {job.remote_id} as {said or 'done'!r}, not as a draft: "
                                "check the TikTok profile", NOT_A_DRAFT, halt=True)  # fmt: skip
            pd = _dict(res.get("platform_data"))
            return InInbox(f"in the TikTok inbox via Post for Me (publish_id {pd.get('id', '?')})")
        text = f"Post for Me: {res.get('error') or 'failed'} {details or ''}".strip()
        if "spam_risk_too_many_pending_share" in text:
            return Dead(text, "spam_risk_too_many_pending_share", 3600.0)
        if "rate_limit" in text:
            return Dead(text, "rate_limit_exceeded", 60.0)
        return Rejected(text, "result_failed")


def _dict(x: object) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def make_backend(settings: Settings, should_stop: Callable[[], bool] = lambda: False,
                 client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep) -> Backend | None:  # fmt: skip
    """The configured back-end; None for `dry-run`, whose windows only plan. `sleep` paces its short
    retries of one call (a chunk, a read)."""
    name = settings.push.backend
    if name == "tiktok":
        return TikTokBackend(settings, client, should_stop, sleep)
    if name == "postforme":
        return PostForMeBackend(settings, client, sleep)
    return None
