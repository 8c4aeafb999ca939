"""The command line: argument parsing and formatting only; every behaviour lives in the stage modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

from draftsync import __version__, log
from draftsync.config import Settings, load, secrets_of
from draftsync.errors import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, DraftsyncError

HELP = """\
draftsync backs up the videos your phone syncs to this machine: it watches the folder(s) in
[watch] paths, waits until each video is completely written, and archives it once, verified, into
[archive] root with a JSON sidecar beside it. Optionally it pushes new videos to your TikTok inbox
as drafts ([push], see `draftsync auth tiktok`).

Config is read from --config, else $DRAFTSYNC_CONFIG, else ./draftsync.toml, else
$XDG_CONFIG_HOME/draftsync/config.toml; with none, built-in defaults are used (inbox
~/DraftSync/inbox, archive ~/DraftSync/archive, state ~/.local/state/draftsync). Any key can be
overridden as DRAFTSYNC_SECTION__KEY, e.g. DRAFTSYNC_WATCH__SETTLE_SECONDS=10.

Exit codes: 0 ok, 1 a check found problems, 2 bad usage or configuration.
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
                   description="One pass over the watched folders; files written less than settle_seconds ago "
                   "are left for the next pass. Refuses to run while the daemon holds the state dir.")  # fmt: skip
    sc.add_argument(
        "--no-compare",
        action="store_true",
        help="archive only; leave the near-duplicate comparison to the daemon or the next scan",
    )
    st = sub.add_parser("status", help="counts, last ingest, last error, health of each watched folder")
    st.add_argument("--json", action="store_true", help="machine-readable output")
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
    pu = sub.add_parser("push", help="push queued videos to the TikTok inbox now",
                        description="Runs one push window in the foreground and returns when each item is in the "
                        "inbox, failed, skipped or deferred. Safe while the daemon runs.")  # fmt: skip
    pu.add_argument("--now", action="store_true", help="run a window now instead of waiting for the schedule")
    pu.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    qu = sub.add_parser("queue", help="list pushed and queued videos with their state")
    qu.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "config" and not args.config_command:
        parser.parse_args(["config", "--help"])
    if args.command == "auth" and not getattr(args, "auth_command", None):
        parser.parse_args(["auth", "--help"])
    try:
        settings, path = load(args.config)
        log.register_secrets(secrets_of(settings))
        log.setup(settings.log.level, settings.log.format)
        return _dispatch(args, settings, path)
    except DraftsyncError as e:
        print(f"draftsync: {log.scrub(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings, path: Any) -> int:
    cmd = args.command
    if cmd == "run":
        from draftsync.daemon import Daemon

        if path is None:
            log.get().info(
                "no config file found; using the built-in defaults", hint="see config/draftsync.example.toml"
            )
        return Daemon(settings).run()
    if cmd == "scan":
        return _scan(settings, compare=not args.no_compare)
    if cmd == "status":
        return _status(settings, args.json)
    if cmd == "verify":
        return _verify(settings, args.json)
    if cmd == "reindex":
        return _reindex(settings)
    if cmd == "config":
        print(_to_toml(settings.model_dump(mode="json")), end="")
        return EXIT_OK
    if cmd == "dupes":
        return _dupes(settings, args.json)
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
    if summary["archive_full"]:
        print("the archive disk is full: free some space and run scan again", file=sys.stderr)
    for r in summary["missing_roots"]:
        print(f"watched folder missing: {r} (is the share mounted?)", file=sys.stderr)
    return EXIT_PROBLEMS if summary["failed"] or summary["archive_full"] or summary["interrupted"] else EXIT_OK


def _open(settings: Settings) -> tuple[Any, Any]:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog

    return Catalog(settings.catalog_path), Archive(settings.archive.root, settings.archive.layout)


def _verify(settings: Settings, as_json: bool) -> int:
    from draftsync.integrity import verify

    catalog, archive = _open(settings)
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
        report = verify(archive, catalog, progress)
    finally:
        if bar is not None:
            bar.stop()
        catalog.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.checked} videos checked ({_size(report.bytes)}), {report.ok} ok, {report.problems} problem(s)")
        for kind in ("missing", "changed", "unknown", "no_sidecar", "unreadable"):
            for rel in getattr(report, kind):
                print(f"  {kind}: {rel}")
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def _reindex(settings: Settings) -> int:
    from draftsync.ingest import describe_archived
    from draftsync.integrity import reindex
    from draftsync.lock import StateLock

    lock = StateLock(settings.state.dir)
    lock.acquire("reindex")
    try:
        catalog, archive = _open(settings)
        try:
            report = reindex(archive, catalog, lambda rel: describe_archived(settings, archive, rel))
        finally:
            catalog.close()
    finally:
        lock.release()
    print(f"catalog rebuilt: {report.videos} videos ({report.orphans_described} described anew from the file)")
    for b in report.bad_sidecars:
        print(f"  unusable sidecar: {b}", file=sys.stderr)
    return EXIT_PROBLEMS if report.bad_sidecars else EXIT_OK


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


def status_data(settings: Settings) -> dict[str, Any]:
    from draftsync.catalog import Catalog
    from draftsync.lock import StateLock
    from draftsync.perceptual import VERSION

    catalog = Catalog(settings.catalog_path)
    try:
        counts = catalog.counts()
        daemon_raw = catalog.get_meta("daemon")
        daemon = json.loads(daemon_raw) if daemon_raw else {}
        holder = StateLock(settings.state.dir).holder()
        running = holder is not None and holder == daemon.get("pid")
        data: dict[str, Any] = {
            "daemon": {
                "running": running, "pid": daemon.get("pid") if running else None,
                "heartbeat": daemon.get("heartbeat"), "settling": daemon.get("settling") if running else 0,
                "paused_archive_full": bool(daemon.get("paused_archive_full")) if running else False,
            },
            "archive": {"root": str(settings.archive.root), "videos": counts["videos"], "bytes": counts["bytes"],
                        "never_verified": counts["never_verified"], "probe_errors": counts["probe_errors"]},
            "last_ingest": counts["last_ingest"],
            "last_error": catalog.last_event(level="error"),
            "sources": counts["sources"],
            "failures": catalog.failures(10),
            "roots": [
                {k: r[k] for k in ("path", "mode", "health", "detail", "last_event", "last_rescan")}
                for r in catalog.roots()
                if r["path"] in {str(p) for p in settings.watch.paths}
            ],
            "catalog": {"path": str(settings.catalog_path), "bytes": _db_size(settings)},
            "perceptual": catalog.signature_counts(VERSION),
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
        return data
    finally:
        catalog.close()


def _db_size(settings: Settings) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(str(settings.catalog_path) + suffix)
        except OSError:
            pass
    return total


def _status(settings: Settings, as_json: bool) -> int:
    d = status_data(settings)
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        return EXIT_OK
    dm = d["daemon"]
    print(f"daemon:      {'running (pid ' + str(dm['pid']) + ')' if dm['running'] else 'not running'}"
          + ("  PAUSED: archive disk full" if dm["paused_archive_full"] else ""))  # fmt: skip
    a = d["archive"]
    print(f"archive:     {a['root']}: {a['videos']} videos, {_size(a['bytes'])}"
          + (f", {a['probe_errors']} not decodable" if a["probe_errors"] else ""))  # fmt: skip
    for pr in d["problems"]:
        print(f"PROBLEM:     {pr['message']} (since {_when(pr['since'])})")
    print(f"last ingest: {_when(d['last_ingest'])}")
    le = d["last_error"]
    print(f"last error:  {_when(le['at']) + ': ' + le['message'] if le else 'none'}")
    if d["failures"]:
        print(
            f"failing:     {len(d['failures'])} file(s), e.g. {d['failures'][0]['path']}: {d['failures'][0]['last_error']}"
        )
    for r in d["roots"]:
        print(f"watching:    {r['path']}  [{r['mode']}, {r['health']}{', ' + r['detail'] if r['detail'] else ''}]"
              f"  last event {_when(r['last_event'])}, last rescan {_when(r['last_rescan'])}")  # fmt: skip
    print(f"catalog:     {d['catalog']['path']} ({_size(d['catalog']['bytes'])})")
    pc = d["perceptual"]
    print(f"near-dupes:  {pc['signed']} of {pc['videos']} videos compared"
          + (f" ({pc['unsignable']} not decodable)" if pc["unsignable"] else "")
          + ("" if pc["signed"] >= pc["videos"] else "; backfill running in the daemon"))  # fmt: skip
    if "push" in d:
        p = d["push"]
        print(f"push:        {p['summary']}")
    return EXIT_OK


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
