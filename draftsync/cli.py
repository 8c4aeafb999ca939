"""The command line: argument parsing and formatting only; every behaviour lives in the stage modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from draftsync import __version__, log, names
from draftsync.errors import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, ArchiveMissing, CatalogCorrupt, DraftsyncError

if TYPE_CHECKING:
    from draftsync.config import Settings

# The configuration (pydantic) and every stage module are imported where a command needs them: `--help`
# and `--version` need none of them, `status` and `scan` only their own.

HELP = """\
draftsync backs up the videos your phone syncs to this machine: it watches the folder(s) in
[watch] paths, waits until each video is completely written, and archives it once, verified, into
[archive] root with a JSON sidecar beside it. Optionally it pushes new videos to your TikTok inbox
as drafts ([push], see `draftsync auth tiktok`).

Config is read from --config, else $DRAFTSYNC_CONFIG, else ./draftsync.toml, else
$XDG_CONFIG_HOME/draftsync/config.toml; with none, built-in defaults are used (inbox
~/DraftSync/inbox, archive ~/DraftSync/archive, state ~/.local/state/draftsync). Any key can be
overridden as DRAFTSYNC_SECTION__KEY, e.g. DRAFTSYNC_WATCH__SETTLE_SECONDS=10.

Exit codes: 0 ok, 1 a check found problems, 2 bad usage or configuration. `status` exits 0 when
the daemon runs and is healthy, 1 when it runs but is not healthy, 3 when it is not running.
SIGHUP makes a running daemon re-read its configuration (see README).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="draftsync", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", metavar="FILE", help="config file (TOML); see config/draftsync.example.toml")
    p.add_argument("--version", action="version", version=f"draftsync {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the daemon in the foreground (exits 0 on SIGTERM/SIGINT)",
                   description="Watch, settle, archive (and push, if enabled) until stopped.")  # fmt: skip
    sc = sub.add_parser("scan", help="archive everything already complete in the watched folders, then exit",
                   description="One pass over the watched folders; files that are not yet quiet get one settle "
                   "period and are left for the next pass if still changing. Refuses to run while the daemon "
                   "holds the state dir.")  # fmt: skip
    sc.add_argument(
        "--no-compare",
        action="store_true",
        help="archive only; leave the near-duplicate comparison to the daemon or the next scan",
    )
    st = sub.add_parser("status", help="health, problems, held-back files, next scrub and push, watched folders",
                        description="Exit code: 0 the daemon runs and is healthy, 1 it runs but is not healthy "
                        "(archive missing or full, state disk full, a stopped loop, no heartbeat), 3 it is not "
                        "running. Safe while the daemon runs.")  # fmt: skip
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--check", action="store_true", help="print only the verdict (for health checks and monitoring)")
    ve = sub.add_parser("verify", help="re-hash the whole archive against the catalog (exit 1 on any problem)",
                        description="Reads every archived video, compares its BLAKE3 hash and size with the catalog, "
                        "and lists missing, changed and unknown files. Safe while the daemon runs.")  # fmt: skip
    ve.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    sub.add_parser("reindex", help="rebuild the catalog from the archive's sidecars",
                   description="Replaces the catalog's list of videos and sources with what the sidecars say; "
                   "videos without a sidecar are hashed and described. Refuses while the daemon runs.")  # fmt: skip
    cfg = sub.add_parser("config", help="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    cfg_sub.add_parser("show", help="print the effective configuration (secrets redacted)")
    du = sub.add_parser("dupes", help="list near-duplicate groups")
    du.add_argument("--json", action="store_true")
    au = sub.add_parser("auth", help="connect an account for pushing")
    au_sub = au.add_subparsers(dest="auth_command", metavar="SERVICE")
    at = au_sub.add_parser("tiktok", help="authorize draftsync to upload drafts to your TikTok inbox",
                           description="Prints the TikTok authorization URL. Open it in any browser, approve, then "
                           "paste the address TikTok sent you back to (or just its code). With --listen, a "
                           "loopback server on the redirect URI's port catches the redirect itself.")  # fmt: skip
    at.add_argument("--listen", action="store_true", help="wait for the redirect on the loopback redirect URI")
    at.add_argument("--timeout", type=float, default=600, help="seconds to wait with --listen (default 600)")
    pu = sub.add_parser("push", help="run a push window now, or queue videos on purpose (`push add`, `push retry`)",
                        description="With --now, runs one push window in the foreground and returns when each item "
                        "is in the inbox, failed or back in the queue (bounded: it stops polling after 20 minutes). "
                        "With --dry-run, shows what a window run now would send, what later and what it would skip, "
                        "under the same budget. Safe while the daemon runs.")  # fmt: skip
    pu.add_argument("--now", action="store_true", help="run a window now instead of waiting for the schedule")
    pu.add_argument("--dry-run", action="store_true", help="show what would be sent; send and change nothing")
    pu_sub = pu.add_subparsers(dest="push_command", metavar="SUBCOMMAND")
    pa = pu_sub.add_parser("add", help="queue archived videos on purpose, whatever only_new says",
                           description="Queues archived videos for the TikTok inbox, e.g. to bring your drafts to a "
                           "new phone. Name them by archive path, source path or content hash (or a prefix of 8+ hex "
                           "digits), or use --all, narrowed by --label/--since/--until. TikTok exports and "
                           "near-duplicates of something queued or pushed are left out unless --force; videos "
                           "already queued or pushed are left as they are. Each is sent in its turn under TikTok's "
                           "5-a-day budget; the answer says when.")  # fmt: skip
    pa.add_argument("targets", nargs="*", metavar="PATH|HASH", help="videos to queue")
    pa.add_argument("--all", action="store_true", help="every archived video (narrowed by the options below)")
    pa.add_argument("--label", help="only videos with this label")
    pa.add_argument("--since", metavar="DATE", help="only videos captured on or after DATE (YYYY-MM-DD)")
    pa.add_argument("--until", metavar="DATE", help="only videos captured on or before DATE (YYYY-MM-DD)")
    pa.add_argument("--force", action="store_true", help="also queue TikTok exports and near-duplicates")
    pa.add_argument("--dry-run", action="store_true", help="show what would be queued and when; change nothing")
    pr = pu_sub.add_parser("retry", help="queue failed pushes again",
                           description="Puts failed pushes back in the queue (checking first whether an earlier "
                           "attempt reached the inbox after all) and clears their problems. Also resumes pushing "
                           "after it stopped for a post Post for Me did not confirm as a draft.")  # fmt: skip
    pr.add_argument("targets", nargs="*", metavar="PATH|HASH", help="failed videos to queue again")
    pr.add_argument("--all", action="store_true", help="every failed push")
    qu = sub.add_parser("queue", help="list queued and pushed videos, their state, and when each one's turn comes")
    qu.add_argument("--json", action="store_true")
    no = sub.add_parser("notify", help="notification commands")
    no_sub = no.add_subparsers(dest="notify_command", metavar="SUBCOMMAND")
    no_sub.add_parser("test", help="send a test message to every [notify] URL and print what each answered")
    _offsite_parsers(sub)
    return p


def _offsite_parsers(sub: Any) -> None:
    from draftsync.offsite.cli import fraction, since_date  # no boto3: only argparse types

    of = sub.add_parser("offsite", help="the offsite copy on S3-compatible storage ([offsite])")
    of_sub = of.add_subparsers(dest="offsite_command", metavar="SUBCOMMAND")
    of_sub.add_parser("sync", help="copy the backlog to the bucket now, with a progress bar; exits when done",
                      description="Uploads every archived video and sidecar not yet in the bucket (and retries failed "
                      "ones). Safe while the daemon runs: they share the work. Exit 1 if anything is left.")  # fmt: skip
    ov = of_sub.add_parser("verify", help="list the bucket against the catalog (exit 1 on any problem)",
                           description="Reports objects missing from the bucket, changed (size, ETag, stored BLAKE3) "
                           "and extra, naming each; with --deep, downloads and re-hashes them.")  # fmt: skip
    ov.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ov.add_argument("--sample", type=fraction, default=1.0, metavar="FRACTION",
                    help="read the metadata of (and with --deep re-hash) only this fraction of the videos")  # fmt: skip
    ov.add_argument("--deep", action="store_true", help="download and re-hash the (sampled) objects")
    orr = of_sub.add_parser("restore", help="download videos and sidecars into an archive tree (then run reindex)",
                            description="Rebuilds an archive tree from the bucket alone, verifying each BLAKE3; "
                            "nothing existing is replaced. Point archive.root at it and run `draftsync reindex`.")  # fmt: skip
    orr.add_argument(
        "--to", required=True, metavar="DIR", help="where to restore (an empty folder, or a partial restore)"
    )
    orr.add_argument("--label", help="only videos with this label")
    orr.add_argument("--since", type=since_date, metavar="DATE", help="only videos captured on or after DATE")


EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer whose reader went away (128 + SIGPIPE)


def main(argv: list[str] | None = None) -> int:
    # Whatever bytes a file name holds, printing it never raises.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        return _main(argv)
    except BrokenPipeError:
        # `draftsync status | head`: the reader left. Point stdout at /dev/null so the final flush is quiet.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "config" and not args.config_command:
        parser.parse_args(["config", "--help"])
    if args.command == "auth" and not getattr(args, "auth_command", None):
        parser.parse_args(["auth", "--help"])
    if args.command == "notify" and not getattr(args, "notify_command", None):
        parser.parse_args(["notify", "--help"])
    if args.command == "offsite" and not getattr(args, "offsite_command", None):
        parser.parse_args(["offsite", "--help"])
    try:
        from draftsync.config import load, secrets_of

        settings, path = load(args.config)
        log.register_secrets(secrets_of(settings))
        log.setup(settings.log.level, settings.log.format)
        return _dispatch(args, settings, path)
    except DraftsyncError as e:
        prefix = "cannot start: " if args.command == "run" and isinstance(e, CatalogCorrupt) else ""
        print(f"draftsync: {prefix}{log.scrub(names.readable(str(e)))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as e:
        if os.environ.get("DRAFTSYNC_DEBUG"):
            raise
        if args.command == "run":
            log.get().exception("the daemon stopped on an unexpected error", error=str(e))
        print(
            f"draftsync: unexpected error: {type(e).__name__}: {log.scrub(names.readable(str(e)))}. This is a bug; "
            "set DRAFTSYNC_DEBUG=1 to see where it happened",
            file=sys.stderr,
        )
        return EXIT_PROBLEMS


def _dispatch(args: argparse.Namespace, settings: Settings, path: Any) -> int:
    cmd = args.command
    if cmd == "run":
        from draftsync.daemon import Daemon

        if path is None:
            log.get().info(
                "no config file found; using the built-in defaults", hint="see config/draftsync.example.toml"
            )
        return Daemon(settings, config_arg=args.config).run()
    if cmd == "scan":
        return _scan(settings, compare=not args.no_compare)
    if cmd == "status":
        return _status(settings, args.json, args.check)
    if cmd == "verify":
        return _verify(settings, args.json)
    if cmd == "reindex":
        return _reindex(settings)
    if cmd == "config":
        print(_to_toml(settings.model_dump(mode="json")), end="")
        return EXIT_OK
    if cmd == "dupes":
        return _dupes(settings, args.json)
    if cmd == "notify":
        return _notify_test(settings)
    if cmd == "offsite":
        from draftsync.offsite import cli as offsite_cli

        return offsite_cli.dispatch(args, settings)
    if cmd in ("auth", "push", "queue"):
        from draftsync.push import cli as push_cli

        return push_cli.dispatch(args, settings)
    raise AssertionError(cmd)


# --- scan / verify / reindex ------------------------------------------------------------------------


class _Progress:
    """Rich progress bar on a terminal, nothing otherwise (logs say what happened)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.task: Any = None

    def start(self, total_bytes: int, files: int) -> None:
        if not sys.stderr.isatty() or total_bytes == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(f"{self.label} {{task.description}}"), BarColumn(), DownloadColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task(f"{files} file(s)", total=total_bytes)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def file_done(self, path: str) -> None:
        pass

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _scan(settings: Settings, compare: bool = True) -> int:
    from draftsync.daemon import scan_once

    prog = _Progress("archiving")
    try:
        summary = scan_once(settings, prog, compare=compare)
    finally:
        prog.stop()
    print(
        f"{summary['archived']} archived, {summary['already_archived']} already in the archive, "
        f"{summary['failed']} failed, {summary['still_being_written']} still being written (left for later)"
        + (f", {summary['empty']} empty" if summary["empty"] else "")
        + (f", {summary['skipped']} skipped" if summary["skipped"] else "")
    )
    if summary["interrupted"]:
        print("interrupted: copies in progress were removed; run scan again to finish", file=sys.stderr)
    if summary["paused"]:
        print(f"stopped early: {summary['paused']}; run scan again when that is fixed", file=sys.stderr)
    for r in summary["missing_roots"]:
        print(f"watched folder missing: {r} (is the share mounted?)", file=sys.stderr)
    return EXIT_PROBLEMS if summary["failed"] or summary["paused"] or summary["interrupted"] else EXIT_OK


def _open(settings: Settings) -> tuple[Any, Any]:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog

    return Catalog(settings.catalog_path), Archive(settings.archive.root, settings.archive.layout)


def _verify(settings: Settings, as_json: bool) -> int:
    from draftsync.integrity import verify
    from draftsync.lock import StateLock
    from draftsync.marker import ArchiveGuard

    catalog, archive = _open(settings)
    v = ArchiveGuard(settings.archive.root, catalog, may_create=False).verdict(writing=False)
    if v.action == "pause":
        catalog.close()
        raise ArchiveMissing(f"cannot verify: {v.message}")
    ingesting = StateLock(settings.state.dir).holder() is not None
    bar: Any = None
    task: Any = None
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)  # fmt: skip
        bar.start()

    def progress(n: int, total: int, rel: str) -> None:
        nonlocal task
        if bar is not None:
            if task is None:
                task = bar.add_task("verify", total=total)
            bar.advance(task, n)

    try:
        report = verify(archive, catalog, progress, ingesting=ingesting)
    finally:
        if bar is not None:
            bar.stop()
        catalog.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        # The parts add up to `checked`; files the catalog did not list are counted apart.
        print(
            f"{report.checked} videos checked ({_size(report.bytes)}): {report.ok} ok, {len(report.missing)} missing, "
            f"{len(report.changed)} changed, {len(report.no_sidecar)} without sidecar, "
            f"{len(report.unreadable)} unreadable; {len(report.unknown)} unknown file(s)"
            + (f"; {len(report.new)} archived while verifying (checked next time)" if report.new else "")
        )
        for kind in ("missing", "changed", "unknown", "no_sidecar", "unreadable"):
            for rel in getattr(report, kind):
                print(f"  {kind}: {rel}")
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def _reindex(settings: Settings) -> int:
    from draftsync.catalog import Catalog
    from draftsync.ingest import describe_archived
    from draftsync.integrity import reindex
    from draftsync.lock import StateLock
    from draftsync.marker import ArchiveGuard

    lock = StateLock(settings.state.dir)
    lock.acquire("reindex")
    try:
        try:
            Catalog(settings.catalog_path).close()
        except CatalogCorrupt as e:
            kept = _set_catalog_aside(settings)
            print(f"the catalog was damaged ({e}); it is kept as {kept} and rebuilt from the sidecars. Push "
                  "history and standing problems were only in the catalog and start afresh.", file=sys.stderr)  # fmt: skip
        catalog, archive = _open(settings)
        guard = ArchiveGuard(settings.archive.root, catalog, may_create=False, lock_owner=str(settings.state.dir))
        try:
            missing = guard.check()
            if missing is not None:
                raise ArchiveMissing(f"cannot reindex: {missing}")
            report = reindex(archive, catalog, lambda rel: describe_archived(settings, archive, rel))
            thumbs = _rebuild_thumbnails(settings, catalog, archive)
        finally:
            guard.release()
            catalog.close()
    finally:
        lock.release()
    print(f"catalog rebuilt: {report.videos} videos ({report.orphans_described} described anew from the file)")
    if thumbs is not None:
        print(f"thumbnails: {thumbs['kept']} in place, {thumbs['made']} made anew, {thumbs['failed']} not possible")
    for b in report.bad_sidecars:
        print(f"  unusable sidecar: {b}", file=sys.stderr)
    return EXIT_PROBLEMS if report.bad_sidecars else EXIT_OK


def _set_catalog_aside(settings: Settings) -> str:
    """Move a damaged catalog (and its WAL files) aside; never delete it."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = str(settings.catalog_path)
    kept = f"{base}.damaged-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(base + suffix):
            os.rename(base + suffix, kept + suffix)
    return kept


def _notify_test(settings: Settings) -> int:
    from draftsync.notify import try_all

    urls = settings.notify.all_urls()
    if not urls:
        print("no notification URLs: set [notify] urls (or urls_file) first", file=sys.stderr)
        return EXIT_USAGE
    results = try_all(urls)
    for where, ok, answer in results:
        print(f"{'sent  ' if ok else 'FAILED'}  {where}: {answer}")
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_PROBLEMS


def _rebuild_thumbnails(settings: Settings, catalog: Any, archive: Any) -> dict[str, int] | None:
    if not settings.web.thumbnails:
        return None
    from draftsync.thumbs import Thumbnailer

    return Thumbnailer(catalog, archive, settings.web.thumbnail_format).rebuild_missing()


def _dupes(settings: Settings, as_json: bool) -> int:
    from draftsync.catalog import Catalog
    from draftsync.neardup import groups, similar
    from draftsync.perceptual import VERSION

    catalog = Catalog(settings.catalog_path)
    try:
        gs = groups(catalog)
        takes = similar(catalog)
        counts = catalog.signature_counts(VERSION)
    finally:
        catalog.close()
    if as_json:
        print(json.dumps({"groups": gs, "similar": takes, "signatures": counts}, indent=2))
        return EXIT_OK
    pending = counts["videos"] - counts["signed"]
    print(f"{len(gs)} near-duplicate group(s)" + (f"; {pending} video(s) not yet compared" if pending else ""))
    for i, g in enumerate(gs, 1):
        print(f"group {i}:")
        for m in g["members"]:
            origin = f"  [{m['origin']}]" if m["origin"] else ""
            print(f"  {m['archive_path']}  {m['capture_time'][:19]}  {m['resolution']}  {m['hash'][7:19]}{origin}")
        for p in g["pairs"]:
            sound = f", sound {p['audio']:.2f}" if p.get("audio") is not None else ""
            print(f"    {p['a'][7:19]} ~ {p['b'][7:19]}  similarity {p['similarity']:.2f}{sound}")
        if not g["all_pairs"]:
            print("    (a big group: each member with the one it matched best)")
    if takes:
        print(f"similar takes (not duplicates; each is kept and pushed): {len(takes)}")
        for t in takes:
            sound = f", sound {t['audio']:.2f}" if t["audio"] is not None else ""
            print(f"  {t['a_path']} ~ {t['b_path']}  similarity {t['similarity']:.2f}{sound}")
    return EXIT_OK


# --- status -----------------------------------------------------------------------------------------


def _next_times(settings: Settings, daemon: dict[str, Any], running: bool) -> dict[str, str | None]:
    """When the scrub and the push window next run (ISO, local time): the daemon's own schedule while it
    runs, else what crontab(5) says for the configured expressions."""
    from draftsync.config import local_tz
    from draftsync.schedule import next_fire

    tz = local_tz()
    now = datetime.now(tz)
    out: dict[str, str | None] = {}
    runs = daemon.get("next_runs") or {} if running else {}
    for key, expr, on, sched_tz in (
        ("scrub", settings.archive.scrub_schedule, True, settings.archive.tz()),
        ("push", settings.push.schedule, settings.push.enabled, settings.push.tz()),
    ):
        if not on:
            out[key] = None
        elif key in runs:
            out[key] = datetime.fromisoformat(runs[key]).astimezone(tz).isoformat()
        else:
            nxt = next_fire(expr, sched_tz, now)
            out[key] = nxt.astimezone(tz).isoformat() if nxt else None
    return out


def _held(daemon: dict[str, Any], failures: list[dict[str, Any]], running: bool) -> list[dict[str, Any]]:
    """Files not archived yet and why: settling, open for write, being archived (the daemon's view),
    failing or unreadable (the catalog's)."""
    out = list(daemon.get("held") or []) if running else []
    out += [{"path": f["path"], "reason": f["kind"], "attempts": f["attempts"], "error": f["last_error"]}
            for f in failures]  # fmt: skip
    return out


def status_data(settings: Settings) -> dict[str, Any]:
    from draftsync import config as config_mod
    from draftsync import health
    from draftsync.catalog import Catalog
    from draftsync.config import local_tz
    from draftsync.lock import StateLock

    catalog = Catalog(settings.catalog_path)
    try:
        counts = catalog.counts()
        daemon_raw = catalog.get_meta("daemon")
        try:
            daemon = json.loads(daemon_raw) if daemon_raw else {}
        except ValueError:
            daemon = {}
        holder = StateLock(settings.state.dir).holder()
        running = holder is not None and holder == daemon.get("pid")
        verdict = health.read(settings, catalog, time.time())
        failures = catalog.failures(10)
        data: dict[str, Any] = {
            "health": verdict.to_dict(),
            "daemon": {
                "running": running, "pid": daemon.get("pid") if running else None,
                "heartbeat": daemon.get("heartbeat"), "settling": daemon.get("settling") if running else 0,
                "paused_archive_full": bool(daemon.get("paused_archive_full")) if running else False,
                "paused": daemon.get("paused") if running else None,
            },
            "held": _held(daemon, failures, running),
            "held_count": (daemon.get("held_count") or 0 if running else 0) + catalog.failing_count(),
            "next": _next_times(settings, daemon, running),
            "timezone": str(local_tz()),
            "timezone_problem": " ".join(config_mod.LOCAL_TZ_PROBLEM),  # local time fell back to UTC: why
            "archive": {"root": str(settings.archive.root), "videos": counts["videos"], "bytes": counts["bytes"],
                        "never_verified": counts["never_verified"], "probe_errors": counts["probe_errors"]},
            "last_ingest": counts["last_ingest"],
            "last_error": catalog.last_event(level="error"),
            "sources": counts["sources"],
            "failures": failures,
            "roots": [
                {k: r[k] for k in ("path", "mode", "health", "detail", "last_event", "last_rescan")}
                for r in catalog.roots()
                if r["path"] in {str(p) for p in settings.watch.paths}
            ],
            "catalog": {"path": str(settings.catalog_path), "bytes": _db_size(settings)},
            "perceptual": catalog.signature_counts(_signature_version(catalog)),
            "problems": [
                {"key": p.key, "kind": p.kind, "severity": p.severity, "message": p.message, "since": p.since}
                for p in catalog.problems()
            ],
        }  # fmt: skip
        if not running:
            for r in data["roots"]:
                r["mode"] = "stopped"
        try:
            from draftsync.push.queue import push_status

            data["push"] = push_status(settings, catalog)
        except ImportError:
            pass
        if settings.offsite.enabled:
            from draftsync.offsite.plan import status as offsite_status

            data["offsite"] = offsite_status(settings, catalog)
        return data
    finally:
        catalog.close()


def _signature_version(catalog: Any) -> int:
    """The signature version the daemon signs with (it records it at start), so that `status` does not
    import the perceptual module and numpy; they are imported only if no daemon has recorded it yet."""
    v = catalog.get_meta("signature_version")
    if v is not None and v.isdigit():
        return int(v)
    from draftsync.perceptual import VERSION

    return VERSION


def _db_size(settings: Settings) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(str(settings.catalog_path) + suffix)
        except OSError:
            pass
    return total


def _status(settings: Settings, as_json: bool, check: bool = False) -> int:
    d = status_data(settings)
    h = d["health"]
    code = 0 if h["healthy"] else (3 if not h["running"] else 1)
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        return code
    if check:
        print(h["status"] + (": " + "; ".join(h["reasons"]) if h["reasons"] and h["running"] else ""))
        return code
    dm = d["daemon"]
    state = "running (pid " + str(dm["pid"]) + ")" if dm["running"] else "not running"
    verdict = "healthy" if h["healthy"] else "UNHEALTHY: " + "; ".join(h["reasons"]) if h["running"] else ""
    print(f"daemon:      {state}" + (f", {verdict}" if verdict else "")
          + (f"  PAUSED: {dm['paused']['kind'].replace('_', ' ')}" if dm.get("paused") else ""))  # fmt: skip
    a = d["archive"]
    print(f"archive:     {a['root']}: {a['videos']} videos, {_size(a['bytes'])}"
          + (f", {a['probe_errors']} not decodable" if a["probe_errors"] else ""))  # fmt: skip
    for pr in d["problems"]:
        print(f"PROBLEM:     {pr['message']} (since {_when(pr['since'])})")
    if d["timezone_problem"] and not any(pr["kind"] == "timezone" for pr in d["problems"]):
        print(f"WARNING:     {d['timezone_problem']}")
    print(f"last ingest: {_when(d['last_ingest'])}")
    le = d["last_error"]
    print(f"last error:  {_when(le['at']) + ': ' + le['message'] if le else 'none'}")
    if d["held"]:
        print(f"held back:   {d['held_count']} file(s)")
        for f in d["held"][:10]:
            print(f"  {f['path']}: {_held_reason(f)}")
        if d["held_count"] > 10:
            print(f"  ... and {d['held_count'] - 10} more (status --json lists up to 60)")
    nx = d["next"]
    print(f"next scrub:  {_local(nx['scrub'])}")
    print(f"next push:   {_local(nx['push']) if settings.push.enabled else 'pushing is off'}")
    for r in d["roots"]:
        state = ", ".join(str(x) for x in (r["mode"], r["health"], r["detail"]) if x)  # unset while stopped
        print(f"watching:    {r['path']}  [{state or 'not watched yet'}]"
              f"  last event {_when(r['last_event'])}, last rescan {_when(r['last_rescan'])}")  # fmt: skip
    print(f"catalog:     {d['catalog']['path']} ({_size(d['catalog']['bytes'])})")
    pc = d["perceptual"]
    print(f"near-dupes:  {pc['signed']} of {pc['videos']} videos compared"
          + (f" ({pc['unsignable']} not decodable)" if pc["unsignable"] else "")
          + ("" if pc["signed"] >= pc["videos"] else "; backfill running in the daemon"))  # fmt: skip
    if "push" in d:
        p = d["push"]
        print(f"push:        {p['summary']}")
    if "offsite" in d:
        print(f"offsite:     {d['offsite']['url']}: {d['offsite']['summary']}")
    return code


def _held_reason(f: dict[str, Any]) -> str:
    r = f["reason"]
    if r == "settling":
        return f"settling (quiet {f['quiet_for']:.0f} of {f['need']:.0f} s)"
    if r in ("failing", "unreadable"):
        return f"{r} ({f['attempts']} attempt(s)): {f['error']}"
    return str(r)


def _local(iso: str | None) -> str:
    if not iso:
        return "never"
    from draftsync.config import local_tz

    dt = datetime.fromisoformat(iso).astimezone(local_tz())
    return dt.strftime("%a %Y-%m-%d %H:%M %Z") + f" (in {_ago(dt.timestamp() - time.time())})"


def _when(t: float | None) -> str:
    if not t:
        return "never"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S") + f" ({_ago(time.time() - t)} ago)"


def _ago(s: float) -> str:
    s = max(0, int(s))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def _size(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if f < 1024 or unit == "TiB":
            return f"{f:.1f} {unit}" if unit != "B" else f"{int(f)} B"
        f /= 1024
    return f"{n} B"


# --- config show ------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        return '""'
    return json.dumps(str(v), ensure_ascii=False)


def _to_toml(data: dict[str, Any]) -> str:
    out: list[str] = []
    for section, body in data.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{section}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
                out.append("")
            continue
        out.append(f"[{section}]")
        tables = []
        for k, v in body.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                tables.append((k, v))
            elif v is not None:
                out.append(f"{k} = {_toml_value(v)}")
        out.append("")
        for k, items in tables:
            for item in items:
                out.append(f"[[{section}.{k}]]")
                out += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items() if vv is not None]
                out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
