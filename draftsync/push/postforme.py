"""Post for Me: media upload URL, PUT of the file, a social post that lands in the TikTok inbox, and the
look-ups that make the create safe to resume.

Implements ../shared/spec/draft-apis.md part B. Post for Me reads `platform_configurations` keyed by the
account's platform (`tiktok` or `tiktok_business`, B.5) and drops unknown keys silently, publishing the
post publicly (B.3); so the draft flag is set under every TikTok platform key and for the account itself,
the payload is built in one place, and the created post is checked before it is called a draft.
`external_id` is a filter, not an idempotency key (B.3): each attempt has its own, and after a lost
answer the posts are listed by it before anything is created again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from draftsync import log
from draftsync.config import Settings
from draftsync.errors import AuthError
from draftsync.push.tiktok import read_pieces, transport_error

_log = log.get("draftsync.push.postforme")

CONTENT_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime"}
# The account platforms whose draft mode Post for Me documents (B.3, B.5); anything else is refused.
DRAFT_PLATFORMS = ("tiktok", "tiktok_business")


def draft_payload(caption: str, account: str, media_url: str, external_id: str) -> dict[str, Any]:
    """The create-post body that makes a TikTok inbox draft, and nothing else (B.3, B.5). The flag is a
    JSON boolean under each TikTok platform key and in the account's own configuration (most specific
    wins); the root `isDraft` would keep the post inside Post for Me, so it is never sent."""
    return {
        "caption": caption,
        "social_accounts": [account],
        "media": [{"url": media_url}],
        "platform_configurations": {p: {"is_draft": True} for p in DRAFT_PLATFORMS},
        "account_configurations": [{"social_account_id": account, "configuration": {"is_draft": True}}],
        "external_id": external_id,
    }


def confirms_draft(post: dict[str, Any], account: str, platform: str) -> bool:
    """Does Post for Me's answer say this post is an inbox draft for `account`? The account's own
    configuration wins over its platform's (B.3)."""
    if post.get("isDraft"):
        return False  # stored inside Post for Me only: it would never reach TikTok
    for ac in post.get("account_configurations") or []:
        if isinstance(ac, dict) and ac.get("social_account_id") == account:
            conf = ac.get("configuration") or {}
            if "is_draft" in conf:
                return conf.get("is_draft") is True
    conf = (post.get("platform_configurations") or {}).get(platform) or {}
    return isinstance(conf, dict) and conf.get("is_draft") is True


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        b = self.body if isinstance(self.body, dict) else {}
        errors = b.get("errors")
        return f"Post for Me answered {self.status}: {b.get('message') or 'no message'}" + (
            f" {errors}" if errors else "")  # fmt: skip

    def retry_after(self, default: float = 60.0) -> float:
        try:
            return max(1.0, float(self.headers.get("retry-after") or default))
        except ValueError:
            return default


class PostForMe:
    """The HTTP side. Reads are retried (they are idempotent); a create is sent exactly once."""

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

    def request(self, method: str, path: str, *, once: bool = False, **kw: Any) -> Answer:
        """One call; unless `once`, a lost answer, a 5xx or a short Retry-After is retried (bounded)."""
        tries = 1 if once else 3
        for attempt in range(tries):
            try:
                r = self.client.request(method, f"{self.base}{path}", headers=self._headers(), **kw)
            except httpx.HTTPError as e:
                if attempt == tries - 1:
                    raise transport_error("Post for Me", e) from None
                self.sleep(2.0 * (attempt + 1))
                continue
            try:
                body = r.json() if r.content else {}
            except ValueError:
                body = {}
            a = Answer(r.status_code, body, {k.lower(): v for k, v in r.headers.items()})
            retry = r.status_code >= 500 or (r.status_code == 429 and a.retry_after() <= 30)
            if retry and attempt < tries - 1:
                self.sleep(a.retry_after(2.0 * (attempt + 1)))
                continue
            return a
        raise AssertionError("unreachable")

    def social_account(self) -> Answer:
        return self.request("GET", f"/v1/social-accounts/{self.account}")

    def posts_by_external_id(self, external_id: str) -> Answer:
        return self.request("GET", "/v1/social-posts", params={"external_id": external_id, "limit": 10})

    def upload(self, path: Path, size: int, progress: Callable[[int], None] | None = None) -> str | Answer:
        """Create a signed upload URL and PUT the file there: the media URL, or the answer that refused."""
        urls = self.request("POST", "/v1/media/create-upload-url")  # harmless to repeat: unused media expire
        if not urls.ok:
            return urls
        upload_url, media_url = urls.body.get("upload_url"), urls.body.get("media_url")
        if not upload_url or not media_url:
            return Answer(502, {"message": "the upload URL answer lacks upload_url or media_url"})
        ctype = CONTENT_TYPES.get(path.suffix.lower(), "video/mp4")
        try:
            r = self.client.put(upload_url, content=_stream(path, size, progress),
                                headers={"Content-Type": ctype, "Content-Length": str(size)})  # fmt: skip
        except httpx.HTTPError as e:
            raise transport_error("Post for Me's storage", e) from None
        if not (200 <= r.status_code < 300):
            # Safe reading (B.2): a failed PUT is never repeated on the same URL; the next attempt asks anew.
            return Answer(r.status_code, {"message": "the upload to Post for Me's storage failed"})
        return str(media_url)

    def create_post(self, caption: str, media_url: str, external_id: str) -> Answer:
        # Never retried here: Post for Me would make a second post (external_id is not an idempotency key).
        return self.request("POST", "/v1/social-posts", once=True,
                            json=draft_payload(caption, self.account, media_url, external_id))  # fmt: skip

    def post(self, post_id: str) -> Answer:
        return self.request("GET", f"/v1/social-posts/{post_id}")

    def results(self, post_id: str) -> Answer:
        return self.request("GET", "/v1/social-post-results", params={"post_id": post_id})


def _stream(path: Path, size: int, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield from read_pieces(fd, 0, size, progress)
    finally:
        os.close(fd)
