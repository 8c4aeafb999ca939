"""Commands of the push stage: `auth tiktok`, `push`, `queue`. Formatting only."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import date, datetime
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
    if args.command == "queue":
        return queue(settings, args.json)
    from draftsync.push.queue import note_enabled

    sub = getattr(args, "push_command", None)
    if not args.dry_run:  # a dry run changes nothing, not even when pushing took effect
        catalog = Catalog(settings.catalog_path)
        try:
            note_enabled(settings, catalog)
        finally:
            catalog.close()
    if sub == "add":
        return push_add(settings, args)
    if sub == "retry":
        return push_retry(settings, args)
    return push(settings, args.now, args.dry_run)


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


# --- push, push add, push retry, queue ----------------------------------------------------------------------


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%a %Y-%m-%d %H:%M") if t is not None else ""


def _turn(t: float | None) -> str:
    """When a queued video arrives, for a person (a window may take a few minutes to deliver)."""
    return f"in the inbox by {_when(t)}" if t is not None else "not within the next two months of windows"


def _date(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date; use YYYY-MM-DD") from None


def push(settings: Settings, now: bool, dry_run: bool) -> int:
    if not now and not dry_run:
        raise UsageError(f"pushes run on the schedule {settings.push.schedule!r}; use --now to run a window now, "
                         "or --dry-run to see what it would send")  # fmt: skip
    if not settings.push.enabled and not dry_run:
        raise UsageError("pushing is off; set [push] enabled = true (and run `draftsync auth tiktok`) first")
    catalog = Catalog(settings.catalog_path)
    try:
        if dry_run:
            return _dry_run(settings, catalog)
        from draftsync.push.pusher import Pusher

        def progress(h: str, state: str, msg: str) -> None:
            if state == "bytes":
                return
            v = catalog.video(h)
            print(f"  {state:<10} {v.archive_path if v else h}  {msg}".rstrip(), flush=True)

        report = Pusher(settings, catalog).window(wait_seconds=600, poll_for=1200, progress=progress)
        if report.busy:
            raise UsageError("another push window is running; try again later")
        if report.paused:
            print(f"pushing is paused: {report.paused}", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"{len(report.pushed)} sent to the inbox, {len(report.failed)} failed, {len(report.deferred)} to retry, "
              f"{len(report.pending)} still processing")  # fmt: skip
        for extra in (report.waiting, report.idle):
            if extra:
                print(extra)
        return EXIT_PROBLEMS if report.failed else EXIT_OK
    finally:
        catalog.close()


def _dry_run(settings: Settings, catalog: Catalog) -> int:
    from draftsync.push.queue import plan, push_status

    st = push_status(settings, catalog)
    b = st["budget"]
    p = plan(settings, catalog)
    print(f"dry run: nothing is sent or queued. Budget: {b['left_24h']} of 5 drafts left in 24 h, {b['left_today']} "
          f"today; max_per_run {settings.push.max_per_run}.")  # fmt: skip
    if not settings.push.enabled:
        print("pushing is off: this is what a window would do once it is on.")
    if p.active:
        print(f"{p.active} upload(s) on their way are finished first.")
    later = [t for _, t in p.later if t is not None]
    print(f"would send {len(p.now)} now, {len(p.later)} later" + (f" (from {_when(min(later))})" if later else ""))
    for v, caption in p.now:
        print(f"  now    {v.archive_path}  caption {caption!r}")
    for v, t in p.later:
        print(f"  later  {v.archive_path}  {_turn(t)}")
    for v, why in p.skipped:
        print(f"  skip   {v.archive_path}: {why}")
    if p.uncompared:
        print("some videos are not compared for near-duplicates yet; the real window compares them first and may "
              "skip more")  # fmt: skip
    if p.idle:
        print(p.idle)
    return EXIT_OK


def push_add(settings: Settings, args: argparse.Namespace) -> int:
    from draftsync.push.queue import add, resolve

    since, until = _date(args.since, "--since"), _date(args.until, "--until")
    if not args.targets and not args.all:
        raise UsageError("name the videos to queue (archive paths, source paths or hashes), or use --all "
                         "(with --label/--since/--until to narrow it)")  # fmt: skip
    catalog = Catalog(settings.catalog_path)
    try:
        videos: dict[str, Any] = {}
        unknown = []
        if args.all:
            for v in catalog.videos_to_add(args.label, since, until):
                videos[v.hash] = v
        for t in args.targets:
            found = [v for v in resolve(settings, catalog, t) if (args.label is None or v.label == args.label)
                     and (since is None or v.capture_time[:10] >= since) and (until is None or v.capture_time[:10] <= until)]  # fmt: skip
            if not found:
                unknown.append(t)
            for v in found:
                videos[v.hash] = v
        if videos and not args.dry_run and not args.force:
            _compare_first(settings, catalog)
        out = add(settings, catalog, list(videos.values()), force=args.force, dry_run=args.dry_run)
        verb = "would queue" if args.dry_run else "queued"
        print(f"{verb} {len(out.queued)} video(s)" + (" (dry run: nothing changed)" if args.dry_run else ""))
        for v in out.queued:
            print(f"  {v.archive_path}  {_turn(out.turns.get(v.hash))}")
        for v, state in out.already:
            print(f"  already {state}: {v.archive_path} (nothing to do)")
        for v, why in out.refused:
            dupe = "TikTok export" in why or "near-duplicate" in why
            hint = " (--force queues it anyway)" if dupe and not args.force else ""
            print(f"  not queued: {v.archive_path}: {why}{hint}")
        for t in unknown:
            print(f"  no archived video matches {t!r}", file=sys.stderr)
        if not settings.push.enabled:
            print("pushing is off: queued videos are sent once [push] enabled = true.")
        return EXIT_PROBLEMS if unknown else EXIT_OK
    finally:
        catalog.close()


def _compare_first(settings: Settings, catalog: Catalog) -> None:
    """`push add` decides near-duplicates like a window does, so it compares what is not compared yet."""
    if not catalog.any_unsigned():
        return
    from draftsync.archive import Archive
    from draftsync.neardup import NearDups

    NearDups(catalog, Archive(settings.archive.root, settings.archive.layout)).backfill(limit=10**9)


def push_retry(settings: Settings, args: argparse.Namespace) -> int:
    from draftsync.problems import Problems
    from draftsync.push.queue import resolve, retry

    if not args.targets and not args.all:
        raise UsageError("name the failed videos to retry (paths or hashes), or use --all")
    catalog = Catalog(settings.catalog_path)
    try:
        hashes: list[str] | None = None
        unknown = []
        if not args.all:
            hashes = []
            for t in args.targets:
                found = resolve(settings, catalog, t)
                unknown += [] if found else [t]
                hashes += [v.hash for v in found]
        out = retry(catalog, hashes, Problems(catalog))
        for h in out.queued:
            v = catalog.video(h)
            print(f"  queued again: {v.archive_path if v else h}")
        for h, state in out.not_failed:
            v = catalog.video(h)
            print(f"  not failed ({state}): {v.archive_path if v else h}")
        for t in unknown:
            print(f"  no archived video matches {t!r}", file=sys.stderr)
        print(f"{len(out.queued)} queued again; the next window sends them (or `draftsync push --now`)")
        if out.halt_cleared:
            print(f"pushing resumes (it had stopped: {out.halt_cleared})")
        return EXIT_PROBLEMS if unknown else EXIT_OK
    finally:
        catalog.close()


def queue(settings: Settings, as_json: bool) -> int:
    from draftsync.push.queue import push_status, queue_view

    catalog = Catalog(settings.catalog_path)
    try:
        entries = queue_view(settings, catalog)
        st = push_status(settings, catalog)
        if as_json:
            print(json.dumps({"items": [e.to_dict() for e in entries], "budget": st["budget"], "paused": st["paused"],
                              "summary": st["summary"]}, indent=2, default=str))  # fmt: skip
            return EXIT_OK
        print(f"push: {st['summary']}")
        for e in entries:
            extra = " ".join(x for x in (e.code, f"log_id {e.log_id}" if e.log_id else "") if x)
            turn = _turn(e.turn_at) if e.state == "queued" and settings.push.enabled else ""
            text = "  ".join(x for x in (e.reason, turn, extra) if x)
            print(f"  {e.state:<10} {e.archive_path or e.hash}  {text}".rstrip())
        return EXIT_OK
    finally:
        catalog.close()
