"""Post for Me: media upload URL, PUT of the file, then a social post that lands in the TikTok inbox.

Implements ../shared/spec/draft-apis.md part B. The draft flag is
`platform_configurations.tiktok.is_draft = true` (a JSON boolean); the root-level `isDraft` would keep
the post inside Post for Me, and unknown keys are silently dropped and the post published publicly, so
the payload is built in one place and tested.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from draftsync import log
from draftsync.config import Settings
from draftsync.errors import AuthError, PushError
from draftsync.push.tiktok import read_pieces

_log = log.get("draftsync.push.postforme")

CONTENT_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime"}


def draft_payload(caption: str, account: str, media_url: str, external_id: str) -> dict[str, Any]:
    """The create-post body that makes a TikTok inbox draft, and nothing else (B.3)."""
    return {
        "caption": caption,
        "social_accounts": [account],
        "media": [{"url": media_url}],
        "platform_configurations": {"tiktok": {"is_draft": True}},
        "external_id": external_id,
    }


class PostForMe:
    def __init__(
        self,
        settings: Settings,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.base = settings.postforme.api_base.rstrip("/")
        self.account = settings.postforme.social_account_id
        self.client = client or httpx.Client(timeout=httpx.Timeout(120.0, connect=15.0))
        self.sleep = sleep

    def _headers(self) -> dict[str, str]:
        key = self.settings.postforme.key()
        if not key:
            raise AuthError("postforme.api_key is not set (config, DRAFTSYNC_POSTFORME__API_KEY or api_key_file)")
        return {"Authorization": f"Bearer {key}"}

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        for attempt in range(4):
            try:
                r = self.client.request(method, f"{self.base}{path}", headers=self._headers(), **kw)
            except httpx.HTTPError as e:
                if attempt == 3:
                    raise PushError(f"Post for Me unreachable ({type(e).__name__})", retryable=True) from None
                self.sleep(2.0 * (attempt + 1))
                continue
            if 200 <= r.status_code < 300:
                return r.json() if r.content else {}
            try:
                body = r.json()
            except ValueError:
                body = {}
            msg = body.get("message") if isinstance(body, dict) else None
            errors = body.get("errors") if isinstance(body, dict) else None
            text = f"Post for Me answered {r.status_code}: {msg or r.reason_phrase}" + (f" {errors}" if errors else "")
            if r.status_code == 401:
                raise AuthError(text + "; check postforme.api_key", code="unauthorized")
            if r.status_code == 429:
                wait = float(r.headers.get("Retry-After") or 60)
                if attempt < 3 and wait <= 30:
                    self.sleep(wait)
                    continue
                raise PushError(text, code="rate_limited", retryable=True, defer=True, status=429)
            if r.status_code >= 500 and attempt < 3:
                self.sleep(2.0 * (attempt + 1))
                continue
            raise PushError(text, code=f"http_{r.status_code}", retryable=r.status_code >= 500, status=r.status_code)
        raise AssertionError("unreachable")

    def check_account(self) -> dict[str, Any]:
        if not self.account:
            raise AuthError("postforme.social_account_id is not set")
        acc = self._call("GET", f"/v1/social-accounts/{self.account}")
        if acc.get("status") != "connected":
            raise AuthError(
                f"the Post for Me account {self.account} is {acc.get('status')}; reconnect it in Post for Me"
            )
        if acc.get("platform") not in ("tiktok", "tiktok_business"):
            raise AuthError(f"the Post for Me account {self.account} is a {acc.get('platform')} account, not TikTok")
        return dict(acc)

    def find_existing(self, external_id: str) -> str | None:
        """A post made for this video before (a crash after creating it): never create a second."""
        page = self._call("GET", "/v1/social-posts", params={"external_id": external_id, "limit": 10})
        for post in page.get("data") or []:
            if post.get("external_id") == external_id:
                return str(post["id"])
        return None

    def upload(self, path: Path, size: int, progress: Callable[[int], None] | None = None) -> str:
        """Create a signed upload URL and PUT the file there; returns the media URL."""
        urls = self._call("POST", "/v1/media/create-upload-url")
        upload_url, media_url = urls.get("upload_url"), urls.get("media_url")
        if not upload_url or not media_url:
            raise PushError("Post for Me's upload URL answer lacks upload_url or media_url", retryable=True)
        ctype = CONTENT_TYPES.get(path.suffix.lower(), "video/mp4")
        try:
            r = self.client.put(
                upload_url,
                content=_stream(path, size, progress),
                headers={"Content-Type": ctype, "Content-Length": str(size)},
            )
        except httpx.HTTPError as e:
            raise PushError(f"upload to Post for Me storage failed ({type(e).__name__})", retryable=True) from None
        if not (200 <= r.status_code < 300):
            # Safe reading (B.2): request a new URL on any failure rather than PUT twice.
            raise PushError(f"upload to Post for Me storage failed ({r.status_code})", retryable=True)
        return str(media_url)

    def create_post(self, caption: str, media_url: str, external_id: str) -> str:
        post = self._call("POST", "/v1/social-posts", json=draft_payload(caption, self.account, media_url, external_id))
        return str(post["id"])

    def poll(self, post_id: str) -> tuple[str, dict[str, Any]]:
        """('processing'|'done'|'failed', details) for a post."""
        post = self._call("GET", f"/v1/social-posts/{post_id}")
        if post.get("status") != "processed":
            return "processing", post
        results = self._call("GET", "/v1/social-post-results", params={"post_id": post_id})
        mine = [x for x in results.get("data") or [] if x.get("social_account_id") in (self.account, None)]
        if not mine:
            return "processing", post
        res = mine[0]
        if res.get("success") is True:
            return "done", res
        return "failed", res


def _stream(path: Path, size: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield from read_pieces(fd, 0, size, progress)
    finally:
        os.close(fd)
