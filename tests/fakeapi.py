"""A fake of TikTok's Content Posting API (inbox upload, OAuth) and of Post for Me, written from
../shared/spec/draft-apis.md and served over real sockets on 127.0.0.1.

It enforces what the spec says the real services enforce (chunk arithmetic, Content-Range, the
pending-share cap, per-minute limits, token rotation) and records every request, so tests can assert
both on draftsync's behaviour and on what the "service" saw. Faults can be injected per request.
Bodies are streamed into BLAKE3, never held whole, so multi-GiB uploads stay flat here too.

Time is `FakeState.clock` (real time unless a test hands it a `FakeClock`), so a test can move the
service's clock and draftsync's together, jump one of them, and never sleep.

Post for Me is faked as the spec describes it for what draftsync relies on: `external_id` is a filter,
not an idempotency key (two creates make two posts); a draft needs `is_draft` under the account's own
platform key (`tiktok_business` for a business account) or in its account configuration, else the post
is published; the created post echoes its configurations.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import blake3

from draftsync.push.machine import Instant

MIN_CHUNK, MAX_CHUNK, MAX_FINAL_CHUNK, MAX_CHUNKS, MAX_VIDEO = 5_242_880, 64_000_000, 128_000_000, 1000, 4_000_000_000


class FakeClock:
    """A clock for tests: the wall and boot clocks move only when slept on or told to."""

    def __init__(self, wall: float | None = None, boot: str = "boot-1", mono: float = 1000.0) -> None:
        self._wall = time.time() if wall is None else wall
        self.boot = boot
        self.mono = mono
        self.lock = threading.Lock()

    def now(self) -> Instant:
        with self.lock:
            return Instant(self._wall, self.boot, self.mono)

    def wall(self) -> float:
        with self.lock:
            return self._wall

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._wall += seconds
            self.mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """The wall clock alone jumps (NTP, `date -s`); the boot clock does not."""
        with self.lock:
            self._wall += seconds

    def reboot(self, boot: str, downtime: float = 60.0, mono: float = 20.0) -> None:
        with self.lock:
            self._wall += downtime
            self.boot, self.mono = boot, mono


@dataclass
class UploadTask:
    publish_id: str
    upload_id: str
    size: int
    chunk_size: int
    count: int
    token_user: str
    received: int = 0
    hasher: Any = field(default_factory=blake3.blake3)
    status: str = "PROCESSING_UPLOAD"
    fail_reason: str = ""
    issued: float = 0.0
    polls_after_complete: int = 0
    digest: str = ""


@dataclass
class Fault:
    """Inject: on the n-th matching request (1-based), answer `status` (with `body`), drop the
    connection, or delay."""

    path: str
    nth: int
    status: int | None = None
    body: dict[str, Any] | None = None
    drop: bool = False
    delay: float = 0.0
    seen: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    act: bool = False  # the service does what was asked, then the answer is lost (drop) or replaced (status)


class FakeState:
    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.clients = {"ck_test": "cs_test_secret_value"}
        self.auth_requests: dict[str, dict[str, str]] = {}  # code -> params
        self.access: dict[str, dict[str, Any]] = {}  # access token -> {user, expires, scope}
        self.refresh: dict[str, dict[str, Any]] = {}  # refresh token -> {user, scope, valid}
        self.expires_in = 86400
        self.refresh_expires_in = 31536000
        self.scope = "user.info.basic,video.upload"
        self.tasks: dict[str, UploadTask] = {}
        self.by_upload: dict[str, UploadTask] = {}
        self.inits: list[tuple[float, str, bool]] = []  # (time, user, ok)
        self.status_calls: list[tuple[float, str]] = []
        self.pending_cap = 5
        self.init_per_minute = 6
        self.processing_polls = 1  # PROCESSING_UPLOAD answers after the last chunk before SEND_TO_USER_INBOX
        self.fail_reason_on_complete = ""
        self.faults: list[Fault] = []
        self.down: tuple[str, ...] = ()  # paths (substrings) answered 503 for as long as they are listed
        self.put_delay = 0.0
        self.refresh_calls = 0
        self.refused_invalid_grant = 0
        # Post for Me
        self.pfm_keys = {"pfm_test_key"}
        self.pfm_accounts = {
            "spc_tiktok1": {"id": "spc_tiktok1", "platform": "tiktok", "username": "creator", "status": "connected"},
            "spc_biz1": {"id": "spc_biz1", "platform": "tiktok_business", "username": "brand", "status": "connected"},
        }
        self.pfm_echo_configs = True  # False: the created post's answer leaves its configurations out
        self.pfm_media: dict[str, dict[str, Any]] = {}
        self.pfm_posts: dict[str, dict[str, Any]] = {}
        self.pfm_post_bodies: list[dict[str, Any]] = []
        self.pfm_polls_until_processed = 1
        # The next N posts go wrong after an answer that looked right: their result fails, or they are
        # published although the answer echoed the draft flag (what draftsync must catch from the result).
        self.pfm_list_lag = 0.0  # seconds before a new post shows in lists (a create still under way)
        self.pfm_failing_results = 0
        self.pfm_published_anyway = 0

    def completed_drafts(self) -> list[UploadTask]:
        return [t for t in self.tasks.values() if t.status == "SEND_TO_USER_INBOX"]

    def fault_for(self, path: str, act: bool = False) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.path in path and f.act == act:
                    f.seen += 1
                    if f.seen == f.nth:
                        return f
        return None


class FakeServer:
    def __init__(self) -> None:
        self.state = FakeState()
        state = self.state

        class Handler(_Handler):
            st = state

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # helpers for tests
    def issue_token(self, user: str = "open_user_1", expires_in: int | None = None) -> dict[str, Any]:
        s = self.state
        with s.lock:
            at, rt = "act." + secrets.token_hex(8), "rft." + secrets.token_hex(8)
            s.access[at] = {"user": user, "expires": s.clock() + (expires_in or s.expires_in), "scope": s.scope}
            s.refresh[rt] = {"user": user, "scope": s.scope, "valid": True}
            # The token file is read by draftsync's own (real) clock.
            return {"access_token": at, "refresh_token": rt, "expires_at": time.time() + (expires_in or s.expires_in),
                    "refresh_expires_at": time.time() + s.refresh_expires_in, "open_id": user, "scope": s.scope}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    st: FakeState
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    # --- plumbing ----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    _after: Fault | None = None  # an `act` fault: the request is carried out, then its answer is lost

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        f, self._after = self._after, None
        if f is not None:
            if f.drop:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, body, headers = f.status or 500, f.body, f.headers
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _envelope(self, status: int, code: str, data: dict[str, Any] | None = None, message: str = "") -> None:
        self._send(status, {"data": data or {}, "error": {"code": code, "message": message,
                                                           "log_id": "LOG" + secrets.token_hex(6).upper()}})  # fmt: skip

    def _fault(self) -> bool:
        if any(p in self.path for p in self.st.down):
            self._send(503, {"error": {"code": "service_unavailable", "message": "down"}})
            return True
        f = self.st.fault_for(self.path)
        if f is None:
            return False
        if f.delay:
            time.sleep(f.delay)
            return False
        if f.drop:
            # Read nothing more and cut the connection: the client sees a dropped request.
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return True
        self._send(f.status or 500, f.body, f.headers)
        return True

    def _user(self) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        tok = auth.removeprefix("Bearer ").strip()
        with self.st.lock:
            a = self.st.access.get(tok)
        if not a or a["expires"] < self.st.clock():
            self._envelope(
                401, "access_token_invalid", message="The access token is invalid or not found in the request."
            )
            return None
        return a["user"], a["scope"]

    # --- routing -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self.st.requests.append(("GET", self.path))
        if self._fault():
            return
        u = urlparse(self.path)
        if u.path == "/v2/auth/authorize/":
            return self._authorize(parse_qs(u.query))
        if u.path == "/v2/user/info/":
            who = self._user()
            if who:
                self._envelope(200, "ok", {"user": {"open_id": who[0], "display_name": "Fake Creator"}})
            return
        if u.path.startswith("/v1/"):
            return self._pfm("GET", u.path, parse_qs(u.query), None)
        self._send(404, {"message": "not found"})

    def do_POST(self) -> None:
        self.st.requests.append(("POST", self.path))
        if self._fault():
            self._read_body()
            return
        self._after = self.st.fault_for(self.path, act=True)
        u = urlparse(self.path)
        if u.path == "/v2/oauth/token/":
            return self._token(self._read_body())
        if u.path == "/v2/post/publish/inbox/video/init/":
            return self._init(self._read_body())
        if u.path == "/v2/post/publish/status/fetch/":
            return self._status(self._read_body())
        if u.path.startswith("/v1/"):
            return self._pfm("POST", u.path, {}, self._read_body())
        self._send(404, {"message": "not found"})

    def do_PUT(self) -> None:
        self.st.requests.append(("PUT", self.path))
        u = urlparse(self.path)
        if u.path == "/upload/":
            return self._put_chunk(parse_qs(u.query))
        if u.path.startswith("/pfm-storage/"):
            return self._pfm_put(u.path.rsplit("/", 1)[1])
        self._send(404, {"message": "not found"})

    # --- OAuth (A.1) -------------------------------------------------------------------------------

    def _authorize(self, q: dict[str, list[str]]) -> None:
        p = {k: v[0] for k, v in q.items()}
        for k in ("client_key", "response_type", "scope", "redirect_uri", "state", "code_challenge"):
            if k not in p:
                return self._send(400, {"error": "invalid_request", "error_description": f"missing {k}"})
        if p["client_key"] not in self.st.clients or p["response_type"] != "code":
            return self._send(400, {"error": "invalid_request"})
        if p.get("code_challenge_method") != "S256" or not re.fullmatch(r"[0-9a-f]{64}", p["code_challenge"]):
            return self._send(400, {"error": "invalid_request", "error_description": "code_challenge must be hex S256"})
        code = "code_" + secrets.token_hex(8)
        self.st.auth_requests[code] = p
        target = p["redirect_uri"] + "?" + urlencode({"code": code, "scopes": self.st.scope, "state": p["state"]})
        self._send(302, None, {"Location": target})

    def _oauth_error(self, err: str, desc: str = "") -> None:
        # Observed: OAuth errors come back with HTTP 200 (spec A.1.4).
        self._send(200, {"error": err, "error_description": desc, "log_id": "LOG" + secrets.token_hex(4)})

    def _token(self, raw: bytes) -> None:
        if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return self._oauth_error("invalid_request", "form encoding required")
        f = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if self.st.clients.get(f.get("client_key", "")) != f.get("client_secret"):
            return self._oauth_error("invalid_client")
        s = self.st
        with s.lock:
            if f.get("grant_type") == "authorization_code":
                req = s.auth_requests.pop(f.get("code", ""), None)
                if req is None:
                    return self._oauth_error("invalid_grant", "code invalid or used")
                if req["redirect_uri"] != f.get("redirect_uri"):
                    return self._oauth_error("invalid_grant", "redirect_uri mismatch")
                verifier = f.get("code_verifier", "")
                if hashlib.sha256(verifier.encode()).hexdigest() != req["code_challenge"]:
                    return self._oauth_error("invalid_request", "Code verifier or code challenge is invalid")
                user, scope = "open_user_1", s.scope
            elif f.get("grant_type") == "refresh_token":
                s.refresh_calls += 1
                r = s.refresh.get(f.get("refresh_token", ""))
                if not r or not r["valid"]:
                    s.refused_invalid_grant += 1
                    return self._oauth_error("invalid_grant", "refresh token invalid")
                r["valid"] = False  # rotation: the one you sent stops working now
                user, scope = r["user"], r["scope"]
            else:
                return self._oauth_error("unsupported_grant_type")
            at, rt = "act." + secrets.token_hex(8), "rft." + secrets.token_hex(8)
            s.access[at] = {"user": user, "expires": s.clock() + s.expires_in, "scope": scope}
            s.refresh[rt] = {"user": user, "scope": scope, "valid": True}
        self._send(200, {"access_token": at, "expires_in": s.expires_in, "refresh_token": rt,
                         "refresh_expires_in": s.refresh_expires_in, "open_id": user, "scope": scope,
                         "token_type": "Bearer"})  # fmt: skip

    # --- posting (A.2-A.6) -------------------------------------------------------------------------

    def _json(self, raw: bytes) -> dict[str, Any] | None:
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            self._envelope(400, "invalid_params", message="Content-Type must be application/json")
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            self._envelope(400, "invalid_params", message="body is not JSON")
            return None
        return body if isinstance(body, dict) else None

    def _authed_json(self, raw: bytes) -> tuple[str, dict[str, Any]] | None:
        """The caller's user id and JSON body, or None once an error has been answered."""
        who = self._user()
        if not who:
            return None
        if "video.upload" not in who[1].split(","):
            self._envelope(401, "scope_not_authorized")
            return None
        body = self._json(raw)
        return None if body is None else (who[0], body)

    def _init(self, raw: bytes) -> None:
        got = self._authed_json(raw)
        if got is None:
            return
        user, body = got
        s = self.st
        now = s.clock()
        with s.lock:
            recent = [t for t, u, _ in s.inits if u == user and t > now - 60]
            s.inits.append((now, user, False))
            idx = len(s.inits) - 1
            if len(recent) >= s.init_per_minute:
                return self._envelope(429, "rate_limit_exceeded")
            pending = [t for t, u, ok in s.inits if u == user and ok and t > now - 86400]
            if len(pending) >= s.pending_cap:
                return self._envelope(403, "spam_risk_too_many_pending_share", message="too many pending shares")
        si = body.get("source_info") or {}
        size, cs, n = si.get("video_size"), si.get("chunk_size"), si.get("total_chunk_count")
        if si.get("source") != "FILE_UPLOAD" or not all(type(x) is int for x in (size, cs, n)):
            return self._envelope(400, "invalid_params", message="source_info must be FILE_UPLOAD with integers")
        problem = _chunk_problem(size, cs, n)
        if problem:
            return self._envelope(400, "invalid_params", message=problem)
        pid = "v_inbox_file~v2." + secrets.token_hex(6)
        uid = secrets.token_hex(6)
        task = UploadTask(pid, uid, size, cs, n, user, issued=now)
        with s.lock:
            s.tasks[pid] = task
            s.by_upload[uid] = task
            s.inits[idx] = (now, user, True)
        url = f"http://127.0.0.1:{self.server.server_address[1]}/upload/?upload_id={uid}&upload_token=T{uid}"
        self._envelope(200, "ok", {"publish_id": pid, "upload_url": url})

    def _put_chunk(self, q: dict[str, list[str]]) -> None:
        s = self.st
        task = s.by_upload.get(q.get("upload_id", [""])[0])
        length = int(self.headers.get("Content-Length") or 0)
        if task is None or s.clock() - task.issued > 3600:
            self._drain(length)
            return self._send(404 if task is None else 403, None)
        f = s.fault_for("/upload/")
        if f is not None and f.delay:
            time.sleep(f.delay)
            f = None
        if s.put_delay:
            time.sleep(s.put_delay)
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        if not m or self.headers.get("Transfer-Encoding"):
            self._drain(length)
            return self._send(400, None)
        first, last, total = map(int, m.groups())
        i = first // task.chunk_size if task.chunk_size else 0
        expected_last = task.size - 1 if i == task.count - 1 else first + task.chunk_size - 1
        if total != task.size or length != last - first + 1 or last != expected_last or first % task.chunk_size:
            self._drain(length)
            return self._send(400, None)
        if first != task.received:
            self._drain(length)
            hdr = {"Content-Range": f"bytes 0-{task.received - 1}/{task.size}"} if task.received else {}
            return self._send(416, None, hdr)
        if f is not None and f.drop and f.nth:
            # Store the chunk, then drop the connection before answering (the 416 resync case).
            task.hasher.update(self._drain(length, keep=True))
            task.received += length
            if task.received == task.size:
                task.digest = "blake3:" + task.hasher.hexdigest()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if f is not None and f.status:
            self._drain(length)
            return self._send(f.status, None)
        h = task.hasher.copy()
        got = self._drain_count(length, h)
        if got != length:  # the client went away mid-chunk: nothing of it is stored
            self.close_connection = True
            return
        task.hasher = h
        task.received += length
        done = task.received == task.size
        if done:
            task.digest = "blake3:" + task.hasher.hexdigest()
        self._send(201 if done else 206, None, {"Content-Range": f"bytes 0-{task.received - 1}/{task.size}"})

    def _drain_count(self, n: int, into: Any) -> int:
        got = 0
        while got < n:
            try:
                b = self.rfile.read(min(1 << 20, n - got))
            except OSError:
                break
            if not b:
                break
            got += len(b)
            into.update(b)
        return got

    def _drain(self, n: int, keep: bool = False, into: Any = None) -> bytes:
        out = bytearray() if keep else None
        left = n
        while left:
            b = self.rfile.read(min(1 << 20, left))
            if not b:
                break
            left -= len(b)
            if into is not None:
                into.update(b)
            if out is not None:
                out += b
        return bytes(out or b"")

    def _status(self, raw: bytes) -> None:
        got = self._authed_json(raw)
        if got is None:
            return
        user, body = got
        s = self.st
        now = s.clock()
        with s.lock:
            recent = [t for t, u in s.status_calls if u == user and t > now - 60]
            s.status_calls.append((now, user))
            if len(recent) >= 30:
                return self._envelope(429, "rate_limit_exceeded")
            task = s.tasks.get(str(body.get("publish_id")))
            if task is None:
                return self._envelope(400, "invalid_publish_id")
            if task.token_user != user:
                return self._envelope(400, "token_not_authorized_for_specified_publish_id")
            if task.received == task.size and task.status == "PROCESSING_UPLOAD":
                task.polls_after_complete += 1
                if task.polls_after_complete > s.processing_polls:
                    if s.fail_reason_on_complete:
                        task.status, task.fail_reason = "FAILED", s.fail_reason_on_complete
                    else:
                        task.status = "SEND_TO_USER_INBOX"
            data = {"status": task.status, "uploaded_bytes": task.received, "publicaly_available_post_id": []}
            if task.fail_reason:
                data["fail_reason"] = task.fail_reason
        self._envelope(200, "ok", data)

    # --- Post for Me (B) ---------------------------------------------------------------------------

    def _pfm_auth(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._send(401, {"message": "Authorization token not found.", "error": "Unauthorized", "statusCode": 401})
            return False
        if auth.removeprefix("Bearer ") not in self.st.pfm_keys:
            self._send(401, {"message": "Invalid or expired token", "error": "Unauthorized", "statusCode": 401})
            return False
        return True

    def _pfm(self, method: str, path: str, q: dict[str, list[str]], raw: bytes | None) -> None:
        if not self._pfm_auth():
            return
        s = self.st
        if method == "POST" and path == "/v1/media/create-upload-url":
            mid = secrets.token_hex(6)
            s.pfm_media[mid] = {"uploaded": False, "digest": ""}
            return self._send(201, {"upload_url": f"http://127.0.0.1:{self.server.server_address[1]}/pfm-storage/{mid}",
                                    "media_url": f"https://media.postforme.example/{mid}.mp4"})  # fmt: skip
        if method == "GET" and path.startswith("/v1/social-accounts/"):
            acc = s.pfm_accounts.get(path.rsplit("/", 1)[1])
            return self._send(200, acc) if acc else self._send(404, {"statusCode": 404, "message": "Not found"})
        if method == "POST" and path == "/v1/social-posts":
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                return self._send(
                    400, {"statusCode": 400, "message": "Invalid Request", "errors": ["caption is required"]}
                )
            body = json.loads(raw or b"{}")
            s.pfm_post_bodies.append(body)
            errors = []
            if not body.get("caption"):
                errors.append("caption is required")
            if not body.get("social_accounts"):
                errors.append("at least one social_account is required")
            elif any(a not in s.pfm_accounts for a in body["social_accounts"]):
                errors.append("invalid social accounts, not owned by user")
            for m in body.get("media") or []:
                mid = m.get("url", "").rsplit("/", 1)[-1].removesuffix(".mp4")
                if not s.pfm_media.get(mid, {}).get("uploaded"):
                    errors.append(f"invalid media URL: {m.get('url')}")
            if errors:
                return self._send(400, {"statusCode": 400, "message": "Invalid Request", "errors": errors})
            pid = "sp_" + secrets.token_hex(6)
            account = s.pfm_accounts[body["social_accounts"][0]]
            # Settings are read under the account's own platform key, the account's configuration winning
            # (B.3, B.5); Post for Me tests truthiness; a root isDraft keeps the post inside Post for Me.
            conf = dict((body.get("platform_configurations") or {}).get(account["platform"]) or {})
            for ac in body.get("account_configurations") or []:
                if ac.get("social_account_id") == account["id"]:
                    conf.update(ac.get("configuration") or {})
            kind = "stored" if body.get("isDraft") else "inbox_draft" if conf.get("is_draft") else "published"
            if kind == "inbox_draft" and s.pfm_published_anyway:
                s.pfm_published_anyway -= 1
                kind = "published"
            elif kind == "inbox_draft" and s.pfm_failing_results:
                s.pfm_failing_results -= 1
                kind = "failed"
            post = {"id": pid, "external_id": body.get("external_id"), "caption": body["caption"],
                    "status": "draft" if kind == "stored" else "processing", "kind": kind, "polls": 0, "at": s.clock(),
                    "social_accounts": body["social_accounts"]}  # fmt: skip
            if s.pfm_echo_configs:
                post["platform_configurations"] = body.get("platform_configurations") or {}
                post["account_configurations"] = body.get("account_configurations") or []
            s.pfm_posts[pid] = post
            return self._send(201, post)
        if method == "GET" and path == "/v1/social-posts":
            ext = q.get("external_id", [None])[0]
            data = [p for p in s.pfm_posts.values() if (ext is None or p["external_id"] == ext)
                    and s.clock() - p["at"] >= s.pfm_list_lag]  # fmt: skip
            return self._send(200, {"data": data, "meta": {"total": len(data), "offset": 0, "limit": 50, "next": None}})
        if method == "GET" and path.startswith("/v1/social-posts/"):
            post = s.pfm_posts.get(path.rsplit("/", 1)[1])
            if not post:
                return self._send(404, {"statusCode": 404, "message": "Post not found"})
            if post["status"] == "processing":
                post["polls"] += 1
                if post["polls"] > s.pfm_polls_until_processed:
                    post["status"] = "processed"
            return self._send(200, post)
        if method == "GET" and path == "/v1/social-post-results":
            post = s.pfm_posts.get(q.get("post_id", [""])[0])
            if not post or post["status"] != "processed":
                return self._send(200, {"data": [], "meta": {"total": 0, "offset": 0, "limit": 50, "next": None}})
            failed = post["kind"] == "failed"
            res = {"id": "spr_" + post["id"][3:], "post_id": post["id"], "social_account_id": post["social_accounts"][0],
                   "success": not failed, "error": "Failed to post to TikTok" if failed else None,
                   "details": {"status": {"inbox_draft": "Saved as draft", "failed": "Failed"}.get(post["kind"], "Published"),
                               "publish_id": "v_inbox_url~" + post["id"]},
                   "platform_data": {"id": "v_inbox_url~" + post["id"], "url": "https://www.tiktok.com/@creator"}}  # fmt: skip
            return self._send(200, {"data": [res], "meta": {"total": 1, "offset": 0, "limit": 50, "next": None}})
        self._send(404, {"statusCode": 404, "message": "Not found"})

    def _pfm_put(self, mid: str) -> None:
        media = self.st.pfm_media.get(mid)
        n = int(self.headers.get("Content-Length") or 0)
        h = blake3.blake3()
        self._drain(n, into=h)
        if media is None or media["uploaded"]:
            return self._send(400, {"message": "The resource already exists"})
        media["uploaded"], media["digest"] = True, "blake3:" + h.hexdigest()
        self._send(200, {"Key": f"media/{mid}"})


def _chunk_problem(size: int, cs: int, n: int) -> str | None:
    """TikTok's chunk rules (spec A.3.1), stated independently of draftsync's planner."""
    if size <= 0 or size > MAX_VIDEO:
        return "The video size is invalid"
    if n < 1 or n > MAX_CHUNKS:
        return "The total chunk count is invalid"
    if size < MIN_CHUNK:
        return None if (cs == size and n == 1) else "The chunk size is invalid"
    if n == 1:
        # safe reading: a single chunk carries the whole file and says so
        return None if cs == size and size <= MAX_CHUNK else "The chunk size is invalid"
    if not MIN_CHUNK <= cs <= MAX_CHUNK or size // cs != n:
        return "The chunk size is invalid"
    last = size - (n - 1) * cs
    if not cs <= last <= min(2 * cs - 1, MAX_FINAL_CHUNK):
        return "The chunk size is invalid"
    return None


def tiktok_config(base: str, token_file: str, **extra: Any) -> dict[str, Any]:
    return {"api_base": base, "auth_url": f"{base}/v2/auth/authorize/", "client_key": "ck_test",
            "client_secret": "cs_test_secret_value", "token_file": token_file, **extra}  # fmt: skip


def poll_until(pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")
