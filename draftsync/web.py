"""The status page, `/healthz` and `/metrics`: a read-only HTTP server hosted by the daemon on `[web] listen`.

It serves health and each watched folder at the top, the latest archived videos as a grid of thumbnails
(keyset-paginated: no page reads the whole catalog), near-duplicate groups as contact sheets, the push
queue with each item's turn, and recent errors. No JavaScript. It cannot write: it reads the catalog
through a connection SQLite opens read-only, and the thumbnails through read-only file opens.

Off by default; a bare port means 127.0.0.1; it listens beyond loopback only when the address is written
out, and then every request needs the token from `[web] token_file` (Bearer header, or `?token=` once,
which sets a cookie). Without a token, only requests naming a loopback host are answered (a web page
cannot use DNS rebinding to read it). The standard library's threading HTTP server runs behind one
supervised loop, with a bounded number of requests at a time and a time limit on each. A client has a few
seconds in all to send its request (not per byte), and only then takes one of the request slots, so slow or
stalled clients cannot hold the page; `/healthz` has slots of its own, so a container HEALTHCHECK or a
monitoring probe is answered even while the page is busy.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from draftsync import log
from draftsync.config import is_loopback, parse_listen

if TYPE_CHECKING:
    from draftsync.catalog import Catalog, VideoRecord
    from draftsync.config import Settings
    from draftsync.runtime import Runtime

_log = log.get("draftsync.web")

MAX_CONCURRENT = 16  # requests served at once; more wait briefly, then are refused
REQUEST_TIMEOUT = 15.0  # seconds any one read or write of a request being answered may take
BIND_RETRY = 2.0  # seconds between attempts to listen while the address is taken
GROUPS_TTL = 60.0  # near-duplicate groups are recomputed at most this often
FACTS_TTL = 30.0  # counts that need a scan of a large table
GROUPS_SHOWN = 6
QUEUE_SHOWN = 20
COOKIE = "draftsync_token"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CURSOR = re.compile(r"^(\d+(?:\.\d+)?)_([0-9a-f]{64})$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Limits:
    """What one server lets clients hold. A slow client holds only a connection, for `head_seconds` at
    most; the request slots are taken once a whole request has arrived."""

    connections: int = 64  # open at once (sending their request, or being answered); more are refused
    concurrent: int = MAX_CONCURRENT  # requests being answered at once
    probes: int = 2  # extra slots for /healthz alone, so a health probe is answered while the page is busy
    head_seconds: float = 5.0  # to send the request line and headers, in all
    request_seconds: float = REQUEST_TIMEOUT
    slot_wait: float = 2.0  # a request waits this long for a free slot, then is refused


def read_head(sock: socket.socket, seconds: float, limit: int = 65536,
              clock: Callable[[], float] = time.monotonic) -> bytes | None:  # fmt: skip
    """The request line and headers, read within `seconds` in all; None if they do not arrive in time, end
    early or are too large. A per-read timeout alone would let a client sending a byte a second hold its
    connection for as long as it likes."""
    deadline = clock() + seconds
    buf = b""
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        left = deadline - clock()
        if left <= 0 or len(buf) > limit:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except OSError:  # a timeout, or the client went away
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **headers})


# --- the push queue --------------------------------------------------------------------------------------


@dataclass
class QueueItem:
    hash: str
    name: str
    state: str
    reason: str
    turn_at: float | None  # when its turn comes (None: not waiting, or too far back to say)
    turn_note: str  # why then, or how many are ahead


def push_queue(settings: Settings, catalog: Catalog, now: float, limit: int = QUEUE_SHOWN) -> list[QueueItem]:
    """The queue as the page shows it: active items first, then the queued ones in the order their turns
    come (each with when, as `draftsync queue` computes it under the budget and the windows), then the
    latest finished ones."""
    from draftsync.push.clock import SystemClock
    from draftsync.push.machine import ACTIVE, Instant, State
    from draftsync.push.queue import queue_page

    real = SystemClock().now()
    at = Instant(now, real.boot, real.mono + (now - real.wall))  # the page's clock, on the boot clock too
    entries = queue_page(settings, catalog, limit, now=at)  # only the lines shown: bounded with any queue length
    active_states = {s.value for s in ACTIVE}

    def item(e: Any, turn: float | None, note: str) -> QueueItem:
        name = PurePosixPath(e.archive_path).name if e.archive_path else e.hash[7:19]
        return QueueItem(e.hash, name, e.state, e.reason, turn, note)

    off = not settings.push.enabled
    out = [item(e, None, "now") for e in entries if e.state in active_states]
    queued = [e for e in entries if e.state == State.QUEUED.value]
    queued.sort(key=lambda e: (e.turn_at is None, e.turn_at or 0.0))
    for e in queued:
        if off:
            out.append(item(e, None, "pushing is off"))
        elif e.turn_at is None:
            out.append(item(e, None, "not within two months under the budget"))
        else:
            out.append(item(e, e.turn_at, e.reason or "next push window"))
    done = [e for e in entries if e.state not in active_states and e.state != State.QUEUED.value]
    out += [item(e, None, "") for e in sorted(done, key=lambda e: -(e.updated_at or 0))]
    return out[:limit]


# --- the application (requests in, responses out; no sockets) --------------------------------------------


class App:
    def __init__(self, settings: Settings, catalog: Catalog, token: str = "",
                 notifications: Callable[[], dict[str, int]] | None = None,
                 clock: Callable[[], float] = time.time, remake: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.remake = remake  # asks the thumbnailer to make a damaged thumbnail again (the page cannot write)
        self._damaged_told: set[str] = set()
        self.catalog = catalog  # read-only
        self.token = token
        self.clock = clock
        self.notifications = notifications
        self._groups: tuple[float, list[dict[str, Any]]] | None = None
        self._facts: dict[str, tuple[float, Any]] = {}
        self._refreshing = False
        self._groups_lock = threading.Lock()
        self._env: Any = None
        self._registry: Any = None
        self.host = socket.gethostname()

    # --- dispatch --------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            return Response.text(405, "read-only: GET and HEAD only\n", Allow="GET, HEAD")
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        denied = self._check_access(url.path, query, headers)
        if denied is not None:
            return denied
        path = url.path
        try:
            if path == "/":
                return self._html("index.html", self.page_data(query.get("before")))
            if path == "/dupes":
                return self._html("dupes.html", self.dupes_data(query.get("page", "1")))
            if path == "/healthz":
                return self.healthz()
            if path == "/metrics":
                return self.metrics({k.lower(): v for k, v in headers.items()}.get("accept", ""))
            if path.startswith("/thumbs/"):
                return self.thumbnail(path.removeprefix("/thumbs/"))
            if path == "/static/style.css":
                return self._static("style.css", "text/css; charset=utf-8")
        except Exception as e:  # a bug or an unreadable catalog is a 500 with a log line, never a dead server
            _log.exception("web request failed", path=path, error=str(e))
            return Response.text(500, "internal error; see the daemon's log\n")
        return Response.text(404, "not found\n")

    def _check_access(self, path: str, query: dict[str, str], headers: Mapping[str, str]) -> Response | None:
        h = {k.lower(): v for k, v in headers.items()}
        if not self.token:
            host = h.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name.strip("[]")):
                return Response.text(403, "this page answers only to 127.0.0.1, [::1] or localhost\n")
            return None
        offered = [h.get("authorization", "").removeprefix("Bearer ").strip(), _cookie(h.get("cookie", "")),
                   query.get("token", "")]  # fmt: skip
        if not any(o and hmac.compare_digest(o.encode(), self.token.encode()) for o in offered):
            return Response.text(401, "a token is required: add ?token=... (from [web] token_file) once, or send "
                                 "'Authorization: Bearer ...'\n", **{"WWW-Authenticate": 'Bearer realm="draftsync"'})  # fmt: skip
        if query.get("token"):
            # Keep the token out of the address bar, history and logs: a cookie carries it from here on.
            rest = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items() if k != "token")
            return Response(303, b"", {"Location": path + (f"?{rest}" if rest else ""),
                                       "Set-Cookie": f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"})  # fmt: skip
        return None

    # --- endpoints -------------------------------------------------------------------------------

    def healthz(self) -> Response:
        from draftsync.health import read

        h = read(self.settings, self.catalog, self.clock())
        body = json.dumps(h.to_dict(), indent=1).encode() + b"\n"
        return Response(200 if h.healthy else 503, body,
                        {"Content-Type": "application/json", "Cache-Control": "no-store"})  # fmt: skip

    def metrics(self, accept: str = "") -> Response:
        from draftsync.metrics import exposition, registry

        if self._registry is None:
            self._registry = registry(self.settings, self.catalog, self.notifications)
        body, ctype = exposition(self._registry, accept)
        return Response(200, body, {"Content-Type": ctype, "Cache-Control": "no-store"})

    def thumbnail(self, name: str) -> Response:
        from draftsync.thumbs import MEDIA_TYPE, THUMB_DIR, looks_whole

        if not _HEX.match(name):
            return Response.text(404, "not found\n")
        known = self.catalog.thumb("blake3:" + name)
        if not known or not known[0] or not known[0].startswith(THUMB_DIR + "/") or ".." in known[0]:
            return Response.text(404, "no thumbnail for this video\n")
        import os

        path = self.settings.archive.root / known[0]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return Response.text(404, "thumbnail file missing\n")
        with os.fdopen(fd, "rb") as f:
            data = f.read(4 * 1024 * 1024)
        if not looks_whole(data, Path(known[0]).suffix):
            # A broken picture would show as a broken image for good (and reindex kept it); tell the daemon's
            # thumbnailer, which can write, and answer as for one not made yet.
            if name not in self._damaged_told:
                self._damaged_told.add(name)
                _log.warning("damaged thumbnail; it is made again", thumbnail=known[0])
            if self.remake is not None:
                self.remake("blake3:" + name)
            return Response.text(404, "thumbnail damaged; it is being made again\n")
        return Response(200, data, {"Content-Type": MEDIA_TYPE.get(Path(known[0]).suffix, "application/octet-stream"),
                                    "Cache-Control": "private, max-age=86400, immutable"})  # fmt: skip

    def _static(self, name: str, ctype: str) -> Response:
        from importlib.resources import files

        data = files("draftsync").joinpath("templates", name).read_bytes()
        return Response(200, data, {"Content-Type": ctype, "Cache-Control": "private, max-age=3600"})

    # --- page data -------------------------------------------------------------------------------

    def page_data(self, before: str | None) -> dict[str, Any]:
        from draftsync.archive import free_bytes
        from draftsync.health import read
        from draftsync.perceptual import VERSION

        s, c, now = self.settings, self.catalog, self.clock()
        cursor = None
        if before and (m := _CURSOR.match(before)):
            cursor = (float(m.group(1)), "blake3:" + m.group(2))
        size = s.web.page_size
        rows = c.videos_page(size + 1, cursor)
        more = len(rows) > size
        rows = rows[:size]
        configured = {str(p) for p in s.watch.paths}
        health = read(s, c, now)
        return {
            "title": f"draftsync on {self.host}", "now": now, "health": health,
            "roots": [r | {"mode": r["mode"] if health.running else "stopped"} for r in c.roots()
                      if r["path"] in configured],
            "counts": c.archive_totals(), "archive_root": str(s.archive.root),
            "archive_free": free_bytes(s.archive.root) if s.archive.root.is_dir() else None,
            "state_free": free_bytes(s.state.dir),
            "signatures": self._cached("signatures", FACTS_TTL, lambda: c.signature_counts(VERSION)),
            "problems": c.problems(),
            "videos": [_card(v, rel, err) for v, rel, err in rows],
            "older": f"{rows[-1][0].archived_at!r}_{rows[-1][0].hash.split(':', 1)[-1]}" if more and rows else None,
            "paged": cursor is not None,
            "groups": self.with_thumbs(self.groups()[:GROUPS_SHOWN]), "groups_total": len(self.groups()),
            "queue": push_queue(s, c, now), "push_enabled": s.push.enabled,
            "errors": c.recent_events(("error", "warning"), 15),
        }  # fmt: skip

    def dupes_data(self, page: str) -> dict[str, Any]:
        per = 20
        gs = self.groups()
        pages = max(1, (len(gs) + per - 1) // per)
        n = page_number(page, pages)
        return {"title": f"near-duplicates on {self.host}", "groups": self.with_thumbs(gs[(n - 1) * per : n * per]), "page": n,
                "pages": pages, "total": len(gs)}  # fmt: skip

    def with_thumbs(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The shown groups' members with their thumbnails as of now (the groups themselves may be cached)."""
        out = []
        for g in groups:
            members = []
            for m in g["members"]:
                t = self.catalog.thumb(m["hash"])
                members.append(m | {"thumb": m["hash"].split(":", 1)[-1] if t and t[0] else None})
            out.append({"members": members})
        return out

    def _cached(self, key: str, ttl: float, compute: Callable[[], Any]) -> Any:
        """Facts that cost a scan (signature counts) are read at most every `ttl` seconds."""
        now = self.clock()
        hit = self._facts.get(key)
        if hit is None or now - hit[0] > ttl:
            hit = (now, compute())
            self._facts[key] = hit
        return hit[1]

    def groups(self) -> list[dict[str, Any]]:
        """Near-duplicate groups as contact sheets. Computing them reads every link, so they are cached;
        once stale they are recomputed in the background while the page shows the previous ones."""
        now = self.clock()
        with self._groups_lock:
            cached = self._groups
            if cached is not None and now - cached[0] > GROUPS_TTL and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh_groups, name="web-groups", daemon=True).start()
        if cached is None:
            return self._refresh_groups()
        return cached[1]

    def _refresh_groups(self) -> list[dict[str, Any]]:
        from draftsync.neardup import groups

        try:
            out = []
            for g in sorted(groups(self.catalog), key=lambda g: g["members"][-1]["capture_time"] if g["members"]
                            else "", reverse=True):  # fmt: skip
                best: dict[str, float] = {}
                for p in g["pairs"]:
                    for h in (p["a"], p["b"]):
                        best[h] = max(best.get(h, 0.0), p["similarity"])
                members = [m | {"name": PurePosixPath(m["archive_path"]).name, "similarity": best.get(m["hash"])}
                           for m in g["members"]]  # fmt: skip
                out.append({"members": members})
            with self._groups_lock:
                self._groups = (self.clock(), out)
            return out
        finally:
            self._refreshing = False

    def _html(self, template: str, data: dict[str, Any]) -> Response:
        body = self.env().get_template(template).render(**data).encode()
        return Response(200, body, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"})

    def env(self) -> Any:
        if self._env is None:
            import jinja2

            env = jinja2.Environment(loader=jinja2.PackageLoader("draftsync", "templates"),
                                     autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True,
                                     lstrip_blocks=True, undefined=jinja2.StrictUndefined)  # fmt: skip
            env.filters.update(size=_size, when=_when, ago=_ago, duration=_duration)
            self._env = env
        return self._env


def page_number(text: str, pages: int) -> int:
    """A `?page=` as typed or tampered with: a number from 1 to `pages`, never an error (a 5,000-digit
    number is beyond what int() converts, and a page past the end shows the last one)."""
    t = text.strip()
    if not t.isascii() or not t.isdigit() or len(t) > 9:
        return pages if t.isascii() and t.isdigit() else 1
    return min(max(1, int(t)), pages)


def _card(v: VideoRecord, rel: str | None, err: str | None) -> dict[str, Any]:
    m = v.media or {}
    w, h = m.get("width"), m.get("height")
    if m.get("rotation") and int(m["rotation"]) % 180 == 90:
        w, h = h, w
    return {
        "hash": v.hash.split(":", 1)[-1], "name": PurePosixPath(v.archive_path).name, "path": v.archive_path,
        "captured": (v.capture_time or "")[:16].replace("T", " "), "label": v.label, "size": v.size,
        "duration": m.get("duration"), "thumb": bool(rel), "thumb_error": err, "w": w, "h": h,
        "archived_at": v.archived_at,
    }  # fmt: skip


def _cookie(header: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == COOKIE:
            return v
    return ""


def _size(n: int | None) -> str:
    from draftsync.notify import size

    return "?" if n is None else size(int(n))


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M") if t else "never"


def _ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return "never"
    s = int((now if now is not None else time.time()) - t)
    n = abs(s)
    text = next((f"{n // k}{unit}" for unit, k in (("d", 86400), ("h", 3600), ("m", 60)) if n >= k), f"{n}s")
    return f"in {text}" if s < 0 else f"{text} ago"


def _duration(d: float | None) -> str:
    if d is None:
        return "?"
    s = round(float(d))
    return f"{s // 60}:{s % 60:02d}"


# --- the server -----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    timeout = 0.5  # handle_request returns this often when idle, so the loop beats and sees stop

    def __init__(self, addr: tuple[str, int], app: App, limits: Limits = Limits()) -> None:
        self.app = app
        self.limits = limits
        self.connections = threading.BoundedSemaphore(limits.connections)
        self.slots = threading.BoundedSemaphore(limits.concurrent)
        self.probe_slots = threading.BoundedSemaphore(limits.probes)
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(timeout=self.limits.slot_wait):
            self.shutdown_request(request)  # overloaded: refuse rather than queue without bound
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def slot_for(self, path: str) -> threading.BoundedSemaphore | None:
        """A request slot, taken (None: all busy). /healthz may also use the probes' own."""
        if self.slots.acquire(timeout=0 if path == "/healthz" else self.limits.slot_wait):
            return self.slots
        if path == "/healthz" and self.probe_slots.acquire(timeout=self.limits.slot_wait):
            return self.probe_slots
        return None


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "draftsync"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        head = read_head(self.connection, self.server.limits.head_seconds)
        self.connection.settimeout(self.server.limits.request_seconds)
        self.rfile = io.BytesIO(head or b"")  # none: the connection is closed without an answer

    def _serve(self) -> None:
        slot = self.server.slot_for(urlsplit(self.path).path)
        if slot is None:
            r = Response.text(503, "busy: too many requests at once; try again\n", **{"Retry-After": "5"})
        else:
            try:
                r = self.server.app.handle(self.command, self.path, dict(self.headers.items()))
            finally:
                slot.release()
        self.send_response(r.status)
        for k, v in {**SECURITY_HEADERS, **r.headers, "Content-Length": str(len(r.body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(r.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines can carry ?token=: not logged


class WebService:
    """Hosted by the daemon: listens on [web] listen (off when empty), serves until the daemon stops."""

    name = "web"

    def __init__(self, notify: Any = None, remake: Callable[[str], None] | None = None) -> None:
        self.notify = notify  # the NotifyService, for its delivery counters in /metrics
        self.remake = remake  # the ThumbService's, for thumbnails found damaged
        self.server: _Server | None = None
        self.catalog: Catalog | None = None
        self.app: App | None = None
        self.closing = False

    def start(self, rt: Runtime) -> None:
        s = rt.settings.web
        if not s.listen:
            return
        from draftsync.catalog import Catalog
        from draftsync.errors import ConfigError

        self.rt = rt
        self.host, self.port = parse_listen(s.listen)
        try:
            token = s.read_token()
        except ConfigError as e:
            rt.problems.report("web", "web", f"the status page is off: {e}")
            return
        if s.token_file is not None and not token:
            rt.problems.report("web", "web", f"the status page is off: web.token_file {s.token_file} is empty")
            return
        self.catalog = Catalog.open_readonly(rt.settings.catalog_path)
        n = self.notify
        counts = (lambda: {"sent": n.sent_total, "failed": n.failed_total}) if n is not None and n.urls else None
        self.app = App(rt.settings, self.catalog, token, counts, remake=self.remake)
        app = self.app
        threading.Thread(target=lambda: app.groups(), name="web-warm", daemon=True).start()  # the first view waits less
        rt.supervisor.spawn("web", self._serve_once, rt.stop, interval=0, max_silence=120)

    def _serve_once(self) -> None:
        if self.server is None:
            self._bind()
            return
        try:
            self.server.handle_request()
        except (OSError, ValueError):
            if not self.closing:
                raise

    def _bind(self) -> None:
        assert self.app is not None
        cls = _Server6 if ":" in self.host else _Server
        try:
            self.server = cls((self.host, self.port), self.app)
        except OSError as e:
            self.rt.problems.report(
                "web", "web", f"the status page cannot listen on {self.host}:{self.port}: {e.strerror or e}; "
                f"retrying every {BIND_RETRY:.0f} s (is another program using the port?)",
            )  # fmt: skip
            self.rt.stop.wait(BIND_RETRY)
            return
        self.rt.problems.resolve("web", f"the status page listens on http://{_url_host(self.host)}:{self.port}/")
        _log.info("status page listening", url=f"http://{_url_host(self.host)}:{self.port}/",
                  token_required=bool(self.app.token))  # fmt: skip

    def stop(self) -> None:
        self.closing = True
        if self.server is not None:
            self.server.server_close()
        if self.catalog is not None:
            self.catalog.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
