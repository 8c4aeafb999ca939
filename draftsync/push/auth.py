"""TikTok authorization: PKCE as TikTok defines it, the authorize URL, the code exchange, and the token
store that refreshes ahead of expiry, keeps the rotated refresh token and serialises refreshes.

Token file (design.md): JSON with access_token, refresh_token, expires_at, refresh_expires_at (unix
seconds), open_id, scope; mode 0600; replaced atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx

from draftsync import log
from draftsync.atomic import write_atomic
from draftsync.config import Settings
from draftsync.errors import AuthError, ConfigError, PushError

_log = log.get("draftsync.push.auth")

SCOPES = ("user.info.basic", "video.upload")
_VERIFIER_ALPHABET = string.ascii_letters + string.digits + "-._~"


def new_verifier(length: int = 64) -> str:
    """A PKCE code_verifier: 43-128 characters from A-Z a-z 0-9 - . _ ~ (TikTok desktop rules)."""
    return "".join(secrets.choice(_VERIFIER_ALPHABET) for _ in range(length))


def challenge_for(verifier: str) -> str:
    # TikTok wants the lowercase hex SHA-256 digest, not RFC 7636's base64url (spec A.1.1).
    return hashlib.sha256(verifier.encode()).hexdigest()


@dataclass
class AuthRequest:
    url: str
    state: str
    verifier: str
    redirect_uri: str


def authorize_request(settings: Settings) -> AuthRequest:
    t = settings.tiktok
    if not t.client_key:
        raise ConfigError("tiktok.client_key is not set; add it to the config (from the TikTok developer portal)")
    state = secrets.token_urlsafe(24)
    verifier = new_verifier()
    # Safe reading (spec A.1.1): always send a hex S256 challenge, desktop and web alike.
    q = {
        "client_key": t.client_key,
        "response_type": "code",
        "scope": ",".join(SCOPES),
        "redirect_uri": t.redirect_uri,
        "state": state,
        "code_challenge": challenge_for(verifier),
        "code_challenge_method": "S256",
    }
    return AuthRequest(f"{t.auth_url}?{urlencode(q)}", state, verifier, t.redirect_uri)


def parse_redirect(pasted: str, expected_state: str) -> str:
    """The code from a pasted redirect URL (state checked) or a bare code."""
    pasted = pasted.strip()
    if "://" not in pasted and "?" not in pasted and "=" not in pasted:
        return pasted
    q = parse_qs(urlparse(pasted).query if "://" in pasted else pasted.lstrip("?"))
    if "error" in q:
        raise AuthError(
            f"TikTok refused the authorization: {q['error'][0]} {q.get('error_description', [''])[0]}".strip(),
            code=q["error"][0],
        )
    if q.get("state", [None])[0] != expected_state:
        raise AuthError("the redirect's state does not match this authorization request (stale or forged link)")
    if "code" not in q:
        raise AuthError("the redirect carries no code")
    scopes = q.get("scopes", [""])[0]
    if scopes and "video.upload" not in scopes.split(","):
        raise AuthError("the video.upload permission was not granted; run `draftsync auth tiktok` and allow it")
    return q["code"][0]


@dataclass
class Token:
    access_token: str
    refresh_token: str
    expires_at: float
    refresh_expires_at: float
    open_id: str
    scope: str
    issued_at: float = 0.0  # extra to the contract's keys: lets us refresh at 10 % of the lifetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _token_from_response(body: dict[str, Any], now: float) -> Token:
    # Lifetimes come from each response; the spec's two revisions disagree (24 h / 2 h), so never assume.
    return Token(
        access_token=str(body["access_token"]),
        refresh_token=str(body.get("refresh_token", "")),
        expires_at=now + float(body.get("expires_in", 0)),
        refresh_expires_at=now + float(body.get("refresh_expires_in", 0)),
        open_id=str(body.get("open_id", "")),
        scope=str(body.get("scope", "")),
        issued_at=now,
    )


class TokenBusy(PushError):
    """The token endpoint did not give a usable answer this time (429, 5xx, network): try again later."""

    def __init__(self, message: str, *, code: str = "", log_id: str = "", retry_after: float = 300.0) -> None:
        super().__init__(message, code=code, log_id=log_id, retryable=True, defer=True)
        self.retry_after = retry_after


def _oauth_post(client: httpx.Client, base: str, data: dict[str, str]) -> dict[str, Any]:
    """POST the token endpoint (form-encoded). Success only if 200, no `error` key, and a token (A.1.4)."""
    try:
        r = client.post(f"{base.rstrip('/')}/v2/oauth/token/", data=data, timeout=30)
    except httpx.HTTPError as e:
        raise TokenBusy(f"cannot reach TikTok's token endpoint ({type(e).__name__})", code="unreachable") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if r.status_code == 200 and "error" not in body and body.get("access_token"):
        return dict(body)
    err = str(body.get("error") or f"http_{r.status_code}")
    desc = str(body.get("error_description") or "")
    log_id = str(body.get("log_id") or "")
    detail = f"{err}: {desc}" if desc else err
    if err == "invalid_client":
        raise AuthError(
            f"TikTok refused draftsync's client key or secret ({detail}): check tiktok.client_key and "
            "tiktok.client_secret against the developer portal (authorising again does not help)", code=err,
            log_id=log_id,
        )  # fmt: skip
    if err in ("invalid_grant", "access_denied", "invalid_scope", "unauthorized_client"):
        raise AuthError(
            f"TikTok rejected the authorization ({detail}); run `draftsync auth tiktok` again", code=err, log_id=log_id
        )
    if r.status_code == 429 or r.status_code >= 500 or err in ("server_error", "temporarily_unavailable"):
        # Limits on the token endpoint are unconfirmed (A.6): wait, keep the queue, never fail a video for it.
        try:
            after = max(60.0, float(r.headers.get("Retry-After") or 300))
        except ValueError:
            after = 300.0
        raise TokenBusy(f"TikTok's token endpoint is busy ({detail})", code=err, log_id=log_id, retry_after=after)
    raise AuthError(f"TikTok refused the token request ({detail}); run `draftsync auth tiktok` again", code=err,
                    log_id=log_id)  # fmt: skip


class TokenStore:
    """The token file plus refresh. One refresh at a time per user, across threads and processes."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None, clock: Any = time.time) -> None:
        self.settings = settings
        self.path: Path = settings.token_path
        self.client = client or httpx.Client()
        self.clock = clock
        self._lock = threading.Lock()

    def load(self) -> Token | None:
        try:
            data = json.loads(self.path.read_text())
            fields = {k: data[k] for k in Token.__dataclass_fields__ if k != "issued_at"}
            return Token(**fields, issued_at=float(data.get("issued_at") or 0.0))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise AuthError(f"the token file {self.path} is damaged ({e}); run `draftsync auth tiktok` again") from None

    def save(self, token: Token) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600 from the moment the file exists: the token is never readable by others, not even briefly.
        write_atomic(self.path, (json.dumps(token.to_dict(), indent=2) + "\n").encode(), mode=0o600)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def exchange(self, code: str, verifier: str, redirect_uri: str) -> Token:
        t = self.settings.tiktok
        body = _oauth_post(self.client, t.api_base, {
            "client_key": t.client_key, "client_secret": t.secret(), "code": code,
            "grant_type": "authorization_code", "redirect_uri": redirect_uri, "code_verifier": verifier,
        })  # fmt: skip
        token = _token_from_response(body, self.clock())
        if "video.upload" not in token.scope.split(","):
            raise AuthError("the token lacks the video.upload scope; run `draftsync auth tiktok` and allow uploads")
        with self._exclusive():
            self.save(token)
        _log.info("tiktok authorized", open_id=token.open_id, scope=token.scope,
                  expires_in=int(token.expires_at - self.clock()))  # fmt: skip
        return token

    def _needs_refresh(self, tok: Token) -> bool:
        left = tok.expires_at - self.clock()
        lifetime = tok.expires_at - tok.issued_at if tok.issued_at else 0.0
        # Refresh when less than 10 minutes or 10 % of the lifetime is left (spec A.1.3).
        return left < max(600.0, 0.1 * lifetime)

    def access_token(self, force_refresh: bool = False, stale: str | None = None) -> Token:
        """A usable token, refreshed if close to expiry (or if `stale` was just refused by the API)."""
        tok = self.load()
        if tok is None:
            raise AuthError("TikTok is not connected yet; run `draftsync auth tiktok`")
        if not force_refresh and not self._needs_refresh(tok):
            return tok
        with self._exclusive():
            tok = self.load()  # another process may have refreshed while we waited
            if tok is None:
                raise AuthError("TikTok is not connected yet; run `draftsync auth tiktok`")
            if not self._needs_refresh(tok) and (stale is None or tok.access_token != stale):
                return tok
            if tok.refresh_expires_at and tok.refresh_expires_at <= self.clock():
                raise AuthError("the TikTok authorization has expired; run `draftsync auth tiktok` again")
            t = self.settings.tiktok
            body = _oauth_post(self.client, t.api_base, {
                "client_key": t.client_key, "client_secret": t.secret(), "grant_type": "refresh_token",
                "refresh_token": tok.refresh_token,
            })  # fmt: skip
            new = _token_from_response(body, self.clock())
            new.refresh_token = new.refresh_token or tok.refresh_token
            new.open_id = new.open_id or tok.open_id
            new.scope = new.scope or tok.scope
            # Rotation is always on (safe reading): the new refresh token is on disk before anyone uses
            # the new access token, so a crash here never leaves only the dead token behind.
            self.save(new)
        _log.info("tiktok token refreshed", open_id=new.open_id, expires_in=int(new.expires_at - self.clock()))
        return new
