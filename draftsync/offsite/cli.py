"""Commands of the offsite copy: `offsite sync`, `offsite verify`, `offsite restore`. Formatting only; the
work is done by the same Uploader, checker and restorer the daemon uses."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from draftsync.errors import EXIT_OK, EXIT_PROBLEMS, UsageError

if TYPE_CHECKING:  # `draftsync --help` reads this module's argument types without loading pydantic
    from draftsync.config import Settings


# Seconds `offsite sync` waits before asking a failing store again: a short outage should not end a
# foreground sync, a long one should, loudly.
RETRIES: tuple[float, ...] = (2.0, 8.0, 30.0)


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.offsite.enabled:
        raise UsageError('the offsite copy is not configured: set [offsite] url = "s3://BUCKET/PREFIX" (and '
                         "endpoint_url for a service other than AWS); see the README, \"Offsite copy\"")  # fmt: skip
    cmd = args.offsite_command
    if cmd == "sync":
        return sync(settings)
    if cmd == "verify":
        return verify(settings, args.json, args.sample, args.deep)
    if cmd == "restore":
        return restore(settings, Path(args.to).expanduser(), args.label, args.since)
    raise AssertionError(cmd)


def since_date(text: str) -> str:
    """argparse type for --since: an ISO date."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (use YYYY-MM-DD)") from None


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 (exclusive) and 1, e.g. 0.1")
    return v


class Bar:
    """A rich progress bar on a terminal, with failures printed above it as they happen."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.task: Any = None
        self._lock = threading.Lock()

    def start(self, total_bytes: int, files: int) -> None:
        if self.bar is not None or not sys.stderr.isatty() or total_bytes <= 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(TextColumn(f"{self.label} {{task.description}}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                            transient=True)  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task(f"{files} video(s)", total=total_bytes)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.advance(self.task, n)

    def item(self, rel: str, outcome: str, detail: str) -> None:
        if outcome in ("stored", "adopted", "restored", "present", "stopped", "foreign"):
            return
        if self.bar is not None:  # off a terminal the summary at the end lists them
            line = f"  {outcome}: {rel}" + (f": {detail}" if detail else "")
            self.bar.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _size(n: int) -> str:
    from draftsync.offsite.plan import _size as size

    return size(n)


def _interruptible() -> tuple[threading.Event, Any]:
    stop = threading.Event()
    prev = signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop, prev


def sync(settings: Settings) -> int:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog
    from draftsync.offsite.plan import status, target_id
    from draftsync.offsite.upload import Uploader
    from draftsync.problems import Problems

    catalog = Catalog(settings.catalog_path)
    bar = Bar("copying offsite")
    stop, prev = _interruptible()
    try:
        up = Uploader(settings, catalog, Archive(settings.archive.root, settings.archive.layout),
                      problems=Problems(catalog), should_stop=stop.is_set)  # fmt: skip
        stored = adopted = 0
        failed: dict[str, str] = {}
        retries = RETRIES
        first = True
        while True:
            report = up.drain(retry_failed=first, now=True, progress=bar)
            first = False
            stored += len(report.stored)
            adopted += len(report.adopted)
            failed.update(report.failed)
            if report.paused or report.stopped:
                break
            if report.transient and retries:
                if stop.wait(retries[0]):
                    break
                retries = retries[1:]
                continue
            if report.busy_elsewhere and not report.transient:
                print(f"waiting for another draftsync process to finish {report.busy_elsewhere} video(s) ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                if stop.wait(2.0):
                    break
                continue
            break
        bar.stop()
        st = status(settings, catalog)
        if catalog.offsite_target() != target_id(settings.offsite):
            # The configured target never answered, so the copy state did not move there: the counts below
            # would be the old target's, and "nothing left to copy" a lie about this one.
            print(f"nothing copied to {settings.offsite.url}: it did not answer, so the offsite copy still goes to "
                  f"{st['target']}", file=sys.stderr)  # fmt: skip
            if report.transient or report.paused:
                print(f"draftsync: {report.paused or report.transient}; run `draftsync offsite sync` again once the "
                      "store answers", file=sys.stderr)  # fmt: skip
            return EXIT_PROBLEMS
        print(f"{stored} copied, {adopted} already in the bucket, {st['failed']} failed; "
              + (f"{st['backlog']} left to copy ({_size(st['bytes_left'])})" if st["backlog"] else "nothing left to copy"))  # fmt: skip
        for rel, why in sorted(failed.items()):
            print(f"  failed: {rel}: {why}", file=sys.stderr)
        if report.paused:
            print(f"draftsync: offsite copy paused: {report.paused}", file=sys.stderr)
        elif report.transient and st["backlog"]:
            print(f"draftsync: {report.transient}; run `draftsync offsite sync` again once the store answers (a "
                  "running daemon also tries again on its own)", file=sys.stderr)  # fmt: skip
        elif report.stopped:
            print("interrupted; run `draftsync offsite sync` again to continue where it stopped", file=sys.stderr)
        return EXIT_OK if st["backlog"] == 0 else EXIT_PROBLEMS
    finally:
        bar.stop()
        signal.signal(signal.SIGINT, prev)
        catalog.close()


def verify(settings: Settings, as_json: bool, sample: float, deep: bool) -> int:
    from draftsync.catalog import Catalog
    from draftsync.offsite.check import tell
    from draftsync.offsite.check import verify as check
    from draftsync.offsite.store import S3Store, StoreError
    from draftsync.problems import Problems

    catalog = Catalog(settings.catalog_path)
    stop, prev = _interruptible()
    try:
        store = S3Store(settings.offsite, concurrency=settings.offsite.concurrency)
        try:
            store.check()
            report = check(settings, catalog, store, sample=sample, deep=deep, should_stop=stop.is_set)
        except StoreError as e:
            raise _once(e) from None
        if report.current:  # a look at another target says nothing about the copy's standing problems
            tell(report, Problems(catalog), "offsite verify")
    finally:
        signal.signal(signal.SIGINT, prev)
        catalog.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.objects} objects in {settings.offsite.url}; {report.checked} videos compared "
              f"({report.headed} by metadata, {report.rehashed} re-hashed), {report.ok} ok, "
              f"{report.not_copied} not copied yet, {report.problems} problem(s)")  # fmt: skip
        for kind in ("missing", "changed", "extra"):
            for item in getattr(report, kind):
                print(f"  {kind}: {item}")
        if report.missing and report.current:
            print("missing objects are copied again by the daemon or `draftsync offsite sync`")
        if not report.current:
            print(f"{settings.offsite.url} is not where the offsite copy currently goes; compared with what draftsync "
                  "recorded for it, and nothing was changed (`draftsync offsite sync` moves the copy there)")  # fmt: skip
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def _once(e: Exception) -> Exception:
    """A network or server error in a command that is not retried: say what the owner can do."""
    from draftsync.offsite.plan import Kind
    from draftsync.offsite.store import StoreError

    if isinstance(e, StoreError) and e.kind is Kind.TRANSIENT:
        return StoreError(f"{e}; nothing was retried: check that the store is reachable (endpoint_url, network) and "
                          "run the command again", e.kind, status=e.status, code=e.code)  # fmt: skip
    return e


def restore(settings: Settings, to: Path, label: str | None, since: str | None) -> int:
    from draftsync.offsite.restore import restore as run
    from draftsync.offsite.store import S3Store, StoreError

    target = to.resolve()
    for p in settings.watch.paths:
        r = p.resolve()
        if target == r or r in target.parents:
            raise UsageError(f"{to} is inside the watched folder {p}; restore somewhere else (draftsync never writes "
                             "into a watched folder)")  # fmt: skip
    store = S3Store(settings.offsite, concurrency=settings.offsite.concurrency)
    bar = Bar("restoring")
    stop, prev = _interruptible()
    try:
        store.check()
        report = run(settings, store, target, label=label, since=since, progress=bar, should_stop=stop.is_set)
    except StoreError as e:
        raise _once(e) from None
    finally:
        bar.stop()
        signal.signal(signal.SIGINT, prev)
    if report.unknown_label:
        known = ", ".join(sorted(report.labels)) or "none (no video in the bucket has a label)"
        raise UsageError(f"no video in {settings.offsite.url} has the label {label!r}; the labels there: {known}")
    print(f"{len(report.restored)} restored ({_size(report.bytes)}), {len(report.present)} already there, "
          f"{report.skipped} left out by --label/--since, {len(report.failed)} failed")  # fmt: skip
    for f in report.failed:
        print(f"  failed: {f}", file=sys.stderr)
    if report.foreign:
        print(f"left alone: {len(report.foreign)} object(s) draftsync did not write, e.g. {report.foreign[0]}")
    if stop.is_set():
        print("interrupted; run the same command again to continue", file=sys.stderr)
    if report.restored or report.present:
        print(f"next: set [archive] root = {str(target)!r} (or DRAFTSYNC_ARCHIVE__ROOT={target}) and run "
              "`draftsync reindex`")  # fmt: skip
    return EXIT_PROBLEMS if report.failed or stop.is_set() else EXIT_OK
