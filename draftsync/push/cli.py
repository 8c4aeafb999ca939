"""Commands of the push stage: `auth tiktok`, `push`, `queue`. Formatting only."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlparse

from draftsync.catalog import Catalog
from draftsync.config import Settings
from draftsync.errors import EXIT_OK, EXIT_PROBLEMS, AuthError, UsageError
from draftsync.push.auth import TokenStore, authorize_request, parse_redirect


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "auth":
        return auth_tiktok(settings, args.listen, args.timeout)
    if args.command == "push":
        return push(settings, args.now, args.dry_run)
    return queue(settings, args.json)


# --- auth -------------------------------------------------------------------------------------------


def _listen_for_redirect(redirect_uri: str, timeout: float) -> str:
    u = urlparse(redirect_uri)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost") or not u.port:
        raise UsageError(
            f"--listen needs a loopback redirect URI with a port (http://127.0.0.1:PORT/...), not {redirect_uri}"
        )
    got: dict[str, str] = {}
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlparse(self.path).path.rstrip("/") != (u.path or "/").rstrip("/"):
                self.send_error(404)
                return
            got["url"] = f"http://{u.netloc}{self.path}"
            body = b"draftsync: authorization received. You can close this tab.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            done.set()

        def log_message(self, *a: Any) -> None:
            pass

    try:
        server = HTTPServer(("127.0.0.1", u.port), Handler)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{u.port} for the redirect: {e.strerror}") from None
    server.timeout = 0.5
    try:
        deadline = datetime.now().timestamp() + timeout
        while not done.is_set() and datetime.now().timestamp() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    if "url" not in got:
        raise AuthError(f"no redirect arrived within {timeout:.0f} s; run `draftsync auth tiktok` again")
    return got["url"]


def auth_tiktok(settings: Settings, listen: bool, timeout: float) -> int:
    req = authorize_request(settings)
    print("Open this address in a browser and allow draftsync to upload drafts:\n")
    print(f"  {req.url}\n", flush=True)
    if listen:
        print(f"Waiting for TikTok to redirect to {req.redirect_uri} (on another machine, forward the port with "
              f"ssh -L {urlparse(req.redirect_uri).port}:127.0.0.1:{urlparse(req.redirect_uri).port} this-server) ...",
              flush=True)  # fmt: skip
        pasted = _listen_for_redirect(req.redirect_uri, timeout)
    else:
        print("TikTok then sends your browser to an address starting with", req.redirect_uri)
        print("(the page may fail to load on a headless server; that is fine). Paste that whole address here,")
        print("or just its code, and press Enter:", flush=True)
        pasted = sys.stdin.readline()
        if not pasted.strip():
            raise UsageError("nothing was pasted; run `draftsync auth tiktok` again")
    code = parse_redirect(pasted, req.state)
    store = TokenStore(settings)
    token = store.exchange(code, req.verifier, req.redirect_uri)
    name = ""
    try:
        from draftsync.push.tiktok import TikTok

        name = str(TikTok(settings, store).user_info().get("display_name") or "")
    except Exception:
        pass
    print(f"Connected TikTok account {name + ' ' if name else ''}(open_id {token.open_id}).")
    print(f"Token saved to {settings.token_path} (mode 0600); it is refreshed automatically.")
    if not settings.push.enabled:
        print("Pushing is still off: set [push] enabled = true to start.")
    return EXIT_OK


# --- push and queue -----------------------------------------------------------------------------------


def _pusher(settings: Settings, catalog: Catalog) -> Any:
    from draftsync.push.queue import Pusher

    return Pusher(settings, catalog)


def push(settings: Settings, now: bool, dry_run: bool) -> int:
    from draftsync.push.queue import Budget, Limits, caption_for

    if not now and not dry_run:
        raise UsageError(f"pushes run on the schedule {settings.push.schedule!r}; use --now to run a window now, "
                         "or --dry-run to see what it would send")  # fmt: skip
    if not settings.push.enabled and not dry_run:
        raise UsageError("pushing is off; set [push] enabled = true (and run `draftsync auth tiktok`) first")
    catalog = Catalog(settings.catalog_path)
    try:
        pusher = _pusher(settings, catalog)
        if dry_run:
            cands = pusher.select(persist=False)
            queued = [catalog.video(r["hash"]) for r in catalog.push_rows(("queued",))]
            budget = Budget(catalog, pusher.backend.account(), Limits(), settings.push.max_per_day,
                            settings.push.tz()).summary()  # fmt: skip
            print(f"dry run: nothing is sent. Budget: {budget['left_24h']} drafts left in 24 h, {budget['left_today']} today; "
                  f"max_per_run {settings.push.max_per_run}.")  # fmt: skip
            for v in [q for q in queued if q] + [v for v, p in cands if not p]:
                print(f"  would push  {v.archive_path}  caption {caption_for(settings.push.caption, v, catalog)!r}")
            for v, p in cands:
                if p:
                    print(f"  would skip  {v.archive_path}: {p}")
            return EXIT_OK

        def progress(h: str, state: str, msg: str) -> None:
            if state == "bytes":
                return
            v = catalog.video(h)
            print(f"  {state:<10} {v.archive_path if v else h}  {msg}", flush=True)

        report = pusher.window(wait_seconds=600, poll_deadline=3600, progress=progress)
        if report.busy:
            raise UsageError("another push window is running; try again later")
        if report.paused:
            print(f"pushing is paused: {report.paused}", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"{len(report.pushed)} sent, {len(report.failed)} failed, {len(report.deferred)} deferred, "
              f"{len(report.pending)} still processing")  # fmt: skip
        return EXIT_PROBLEMS if report.failed else EXIT_OK
    finally:
        catalog.close()


def queue(settings: Settings, as_json: bool) -> int:
    from draftsync.push.queue import push_status, queue_rows

    catalog = Catalog(settings.catalog_path)
    try:
        if settings.push.enabled:
            _pusher(settings, catalog).select()
        rows = queue_rows(catalog)
        st = push_status(settings, catalog)
        if as_json:
            print(json.dumps({"items": rows, "budget": st["budget"], "paused": st["paused"]}, indent=2, default=str))
            return EXIT_OK
        print(f"push: {st['summary']}")
        for r in rows:
            extra = " ".join(x for x in (r["code"] or "", f"log_id {r['log_id']}" if r["log_id"] else "") if x)
            print(f"  {r['state']:<10} {r['archive_path']}  {r['reason'] or ''} {extra}".rstrip())
        return EXIT_OK
    finally:
        catalog.close()
