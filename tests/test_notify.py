"""notify: the owner hears about each problem once, again when it clears, grouped and rate-limited, from a
background thread with retries; the weekly digest; Healthchecks-style pings; `draftsync notify test`.

The decisions are table tests on the pure Outbox; delivery goes to a real Apprise json:// receiver."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from draftsync.archive import Archive
from draftsync.catalog import Catalog
from draftsync.config import load
from draftsync.notify import (
    RETRY_DELAYS,
    Delivery,
    Digest,
    Message,
    NotifyService,
    Outbox,
    compose_digest,
    digest_missed,
    dump_owed,
    load_owed,
    ping_url,
    run_verdict,
)
from draftsync.problems import Change, Problem, Problems
from draftsync.runtime import Runtime
from draftsync.supervise import RunResult, Supervisor
from tests.conftest import DaemonProc, Env, make_video, wait_for
from tests.receiver import Receiver, start_receiver

ALL = ["archive_missing", "root_missing", "watcher_restarted", "push_failed", "digest", "notify"]
A = Problem("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
R = Problem("root_missing:/srv/a", "root_missing", "the watched folder /srv/a is missing", "warning")
W = Problem("notice:watcher_restarted", "watcher_restarted", "the watcher of /srv/a died and was restarted",
            "warning")  # fmt: skip


def raised(p: Problem, msg: str | None = None) -> Change:
    return Change("raised", p if msg is None else Problem(p.key, p.kind, msg, p.severity), 0)


def cleared(p: Problem) -> Change:
    return Change("cleared", Problem(p.key, p.kind, f"resolved: {p.message}", p.severity), 0)


def notice(p: Problem) -> Change:
    return Change("notice", p, 0)


# --- the Outbox, as tables ---------------------------------------------------------------------------------

# (changes as (time, change), events, group_seconds, max_per_hour, polls) -> [(poll time, title part, body parts)]
CASES: list[tuple[str, list[tuple[float, Change]], list[str], float, int, list[float], list[tuple[float, str, list[str]]]]] = [
    ("a problem is told once",
     [(0, raised(A))], ALL, 0, 12, [0, 1], [(0, "archive missing", ["/mnt/usb is not mounted"])]),
    ("reported again, even reworded, it is not told again",
     [(0, raised(A)), (5, raised(A)), (6, raised(A, "the marker file is gone"))], ALL, 0, 12, [0, 5, 6, 7],
     [(0, "archive missing", ["not mounted"])]),
    ("told again when it clears",
     [(0, raised(A)), (50, cleared(A))], ALL, 0, 12, [0, 50], [(0, "archive missing", []),
                                                             (50, "archive missing resolved", ["resolved:"])]),
    ("a clear of something never told is not news",
     [(0, cleared(A))], ALL, 0, 12, [0, 1], []),
    ("kinds not in events are not told, nor their clearing",
     [(0, raised(A)), (1, cleared(A))], ["root_missing"], 0, 12, [0, 1], []),
    ("changes arriving together go out as one message",
     [(0, raised(A)), (3, raised(R)), (4, notice(W))], ALL, 30, 12, [0, 10, 29, 30],
     [(30, "2 problem(s), 1 notice(s)", ["PROBLEM: the archive disk", "PROBLEM: the watched folder",
                                         "NOTICE: the watcher"])]),
    ("a problem that clears before it is told is told once, as such",
     [(0, raised(A)), (2, cleared(A)), (40, cleared(A))], ALL, 30, 12, [30, 40],
     [(30, "archive missing", ["not mounted (since cleared)"])]),
    ("never more than max_per_hour: the rest wait and go out together",
     [(0, notice(W)), (10, notice(W)), (20, raised(A)), (30, raised(R))], ALL, 0, 2, [0, 10, 20, 30, 3599, 3600],
     [(0, "watcher restarted", []), (10, "watcher restarted", []),
      (3600, "2 problem(s)", ["archive disk", "watched folder"])]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "changes", "events", "group", "per_hour", "polls", "want"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_outbox(name: str, changes: list[tuple[float, Change]], events: list[str], group: float, per_hour: int,
                polls: list[float], want: list[tuple[float, str, list[str]]]) -> None:  # fmt: skip
    ob = Outbox(events, group, per_hour, host="nas")
    got: list[tuple[float, Message]] = []
    pending = sorted(changes, key=lambda x: x[0])
    for t in sorted(set(polls) | {c[0] for c in changes}):
        while pending and pending[0][0] <= t:
            ob.add(pending.pop(0)[1], t)
        if t in polls:
            m = ob.due(t)
            if m is not None:
                got.append((t, m))
    assert [t for t, _ in got] == [t for t, _, _ in want], [(t, m.title) for t, m in got]
    for (_, m), (_, title, parts) in zip(got, want, strict=True):
        assert m.title.startswith("draftsync on nas: ") and title in m.title
        for part in parts:
            assert part in m.body


@pytest.mark.parametrize(
    ("changes", "level"),
    [
        ([raised(A)], "failure"),  # an error
        ([raised(R)], "warning"),  # a warning
        ([notice(W)], "warning"),
        ([raised(A), cleared(A)], "failure"),  # flapped: still an error that happened
    ],
)
def test_message_levels(changes: list[Change], level: str) -> None:
    ob = Outbox(ALL, 0, 12)
    for c in changes:
        ob.add(c, 0)
    m = ob.due(0)
    assert m is not None and m.level == level


def test_a_clear_alone_is_good_news() -> None:
    ob = Outbox(ALL, 0, 12, announced={A.key: A.message})
    ob.add(cleared(A), 0)
    m = ob.due(0)
    assert m is not None and m.level == "success" and "resolved" in m.title and ob.announced == {}


@pytest.mark.parametrize(
    ("base", "check", "event", "rid", "url"),
    [
        ("https://hc-ping.com/uuid", "heartbeat", "success", "", "https://hc-ping.com/uuid"),
        ("https://hc-ping.com/uuid/", "scrub", "start", "r1", "https://hc-ping.com/uuid/start?rid=r1"),
        ("https://hc-ping.com/uuid", "push", "fail", "r2", "https://hc-ping.com/uuid/fail?rid=r2"),
        ("https://hc-ping.com/KEY/draftsync-{check}", "scrub", "start", "r1", "https://hc-ping.com/KEY/draftsync-scrub/start"),
        ("https://hc-ping.com/KEY/draftsync-{check}", "heartbeat", "fail", "", "https://hc-ping.com/KEY/draftsync-heartbeat/fail"),
    ],
)  # fmt: skip
def test_ping_urls_follow_healthchecks(base: str, check: str, event: Any, rid: str, url: str) -> None:
    assert ping_url(base, check, event, rid) == url


SUN_18 = datetime(2026, 11, 29, 18, 0, tzinfo=UTC).timestamp()  # a Sunday


@pytest.mark.parametrize(
    ("last", "now", "missed"),
    [
        (None, SUN_18 + 60, False),  # never sent: the first digest waits for its time
        (SUN_18 - 7 * 86400, SUN_18 - 60, False),  # not due yet
        (SUN_18 - 7 * 86400, SUN_18 + 3600, True),  # down at 18:00, up at 19:00: send now
        (SUN_18 - 14 * 86400, SUN_18 + 3 * 86400, False),  # long gone: wait for the next one
        (SUN_18, SUN_18 + 3600, False),  # already sent
    ],
)
def test_a_digest_missed_while_down_is_sent_at_start_up(last: float | None, now: float, missed: bool) -> None:
    assert digest_missed(last, "0 18 * * 0", UTC, now) is missed


def test_the_digest_says_what_was_backed_up_what_waits_and_what_fails() -> None:
    d = Digest(start=0, end=7 * 86400, archived=3, archived_bytes=3 * 2**20, latest=[("a.mp4", "2026-11-28T10:00:00")],
               thumbnails=["/x/a.jpg"], total_videos=120, total_bytes=2**30, new_groups=1, pushed=2, waiting=4,
               push_enabled=True, problems=["the watched folder /srv/a is missing"], failing_files=2,
               archive_free=5 * 2**30, state_free=None)  # fmt: skip
    m = compose_digest(d, "nas")
    assert m.title == "draftsync on nas: weekly digest, 3 video(s) backed up"
    for part in ("Archived this week: 3 video(s), 3.0 MiB", "a.mp4  2026-11-28 10:00", "1 group(s)",
                 "inbox: 2; still waiting: 4", "go through your drafts", "/srv/a is missing",
                 "2 file(s) keep failing", "archive disk 5.0 GiB free"):  # fmt: skip
        assert part in m.body
    assert m.attachments == ("/x/a.jpg",) and m.level == "warning"


# --- delivery: real traffic to a local Apprise json:// receiver ---------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def runtime(env: Env, **notify: Any) -> Runtime:
    from apscheduler.schedulers.background import BackgroundScheduler

    env.write_config(notify=notify)
    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    return Runtime(s, cat, Archive(s.archive.root, s.archive.layout), Problems(cat), Supervisor(),
                   BackgroundScheduler(timezone=UTC), threading.Event())  # fmt: skip


def test_each_problem_arrives_once_and_again_when_it_clears(env: Env, receiver: Receiver) -> None:
    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    svc = NotifyService()
    svc.start(rt)
    try:
        for _ in range(5):
            rt.problems.report("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
        wait_for(lambda: len(receiver.messages()) >= 1, 20, what="the problem's message")
        rt.problems.resolve("archive_missing")
        wait_for(lambda: len(receiver.messages()) >= 2, 20, what="the cleared message")
        rt.problems.report("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
        wait_for(lambda: len(receiver.messages()) >= 3, 20, what="the problem, back again")
    finally:
        rt.stop.set()
        svc.stop()
    m1, m2, m3 = receiver.messages()
    assert "archive missing" in m1["title"] and "/mnt/usb is not mounted" in m1["message"] and m1["type"] == "failure"
    assert "resolved" in m2["title"] and "/mnt/usb" in m2["message"] and m2["type"] == "success"
    assert "archive missing" in m3["title"]
    assert len(receiver.messages()) == 3


def test_a_dead_notification_service_never_blocks_the_reporting_thread(env: Env, receiver: Receiver) -> None:
    receiver.hang = threading.Event()  # the service accepts the connection and never answers
    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    svc = NotifyService()
    svc.start(rt)
    try:
        rt.problems.report("archive_full", "archive_full", "the archive disk is full")
        wait_for(lambda: receiver.arrived >= 1, 20, what="the sender to be stuck in a request")
        # While the sender is stuck, every report still returns (it only records the change).
        for i in range(200):
            assert rt.problems.report(f"root_missing:/srv/{i}", "root_missing", f"/srv/{i} is missing")
    finally:
        receiver.hang.set()
        rt.stop.set()
        svc.stop()


def test_failed_deliveries_are_retried_then_told_as_a_problem_then_given_up(env: Env, receiver: Receiver) -> None:
    clock = Clock()
    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    svc = NotifyService(clock=clock)
    assert svc.attach(rt)
    receiver.fail_next = 2
    rt.problems.report("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
    svc.pass_once(wait=0)  # attempt 1: refused
    assert receiver.messages() == [] and rt.problems.get("notify:0") is None  # one failure is a blip
    clock.t += RETRY_DELAYS[0] - 1
    svc.pass_once(wait=0)  # not yet time
    assert receiver.fail_next == 1
    clock.t += 1
    svc.pass_once(wait=0)  # attempt 2: refused again -> the owner can see it (status, health, page)
    p = rt.problems.get("notify:0")
    assert p is not None and p.kind == "notify" and f"127.0.0.1:{receiver.port}" in p.message
    clock.t += RETRY_DELAYS[1]
    svc.pass_once(wait=0)  # attempt 3 succeeds
    svc.pass_once(wait=0)
    titles = [m["title"] for m in receiver.messages()]
    assert sum("archive missing" in t for t in titles) == 1
    assert rt.problems.get("notify:0") is None  # cleared by the delivery that worked

    receiver.fail_next = 10**6  # now the service is down for good
    rt.problems.report("archive_full", "archive_full", "the archive disk is full")
    for _ in range(2 * len(RETRY_DELAYS) + 4):  # its own "notifications failing" message gives up too
        svc.pass_once(wait=0)
        clock.t += RETRY_DELAYS[-1]
    assert svc._deliveries == []  # given up, not kept forever
    ev = rt.catalog.last_event(kind="notify")
    assert ev is not None and "given up" in ev["message"]


def test_a_restart_neither_repeats_nor_forgets(env: Env, receiver: Receiver) -> None:
    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    svc = NotifyService()
    svc.attach(rt)
    rt.problems.report("archive_missing", "archive_missing", "the archive disk is not mounted")
    rt.problems.report("root_missing:/srv/a", "root_missing", "/srv/a is missing", severity="warning")
    svc.pass_once(wait=0)
    assert len(receiver.messages()) == 1
    # The daemon restarts: the archive problem still stands, the folder came back while it was down.
    rt.catalog.clear_problem("root_missing:/srv/a")
    rt2 = runtime(env, urls=[receiver.url()], group_seconds=0)
    svc2 = NotifyService()
    svc2.attach(rt2)
    svc2.pass_once(wait=0)
    msgs = receiver.messages()
    assert len(msgs) == 2 and "resolved" in msgs[1]["title"] and "/srv/a" in msgs[1]["message"]
    # ...and a problem raised by another process before the daemon listened is told at start-up.
    Problems(rt2.catalog).report("state_full", "state_full", "the state disk is full")
    svc3 = NotifyService()
    svc3.attach(runtime(env, urls=[receiver.url()], group_seconds=0))
    svc3.pass_once(wait=0)
    assert len(receiver.messages()) == 3 and "state disk full" in receiver.messages()[2]["title"]


def test_owed_messages_are_kept_by_url_digest_and_only_for_urls_still_configured() -> None:
    a, b = "json://127.0.0.1:1/a?token=s3cret", "json://127.0.0.1:2/b"
    msg = Message("draftsync: archive missing", "the archive disk is not mounted", "failure")
    raw = dump_owed([Delivery(msg, [0, 1], attempts=2)], [900.0, 4000.0], [a, b])
    assert "s3cret" not in raw and "127.0.0.1" not in raw  # the catalog never holds a URL's secret
    (d,), sent = load_owed(raw, [b], now=4600.0)  # URL a was removed from the settings
    assert (d.message, d.todo, d.attempts, d.next_try) == (msg, [0], 2, 0.0)  # tried at once
    assert sent == [4000.0]  # older than an hour: no longer counts against the limit
    assert load_owed(raw, ["json://elsewhere/"], now=4600.0) == ([], [4000.0])
    assert load_owed("{not json", [a], now=0.0) == ([], [])


def test_messages_waiting_for_a_retry_survive_a_restart_and_arrive_once(env: Env, receiver: Receiver) -> None:
    receiver.fail_next = 10**6  # the notification service is down
    told = {"urls": [receiver.url()], "group_seconds": 0, "events": ["archive_missing"]}
    rt = runtime(env, **told)
    svc = NotifyService(clock=Clock())
    svc.attach(rt)
    rt.problems.report("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
    svc.pass_once(wait=0)
    rt.problems.resolve("archive_missing")
    svc.pass_once(wait=0)
    assert receiver.arrived == 2 and receiver.messages() == []  # both tried, neither delivered
    receiver.fail_next = 0  # the service is back, and the daemon restarts
    svc2 = NotifyService(clock=Clock())
    svc2.attach(runtime(env, **told))
    svc2.pass_once(wait=0)
    titles = [m["title"] for m in receiver.messages()]
    assert len(titles) == 2 and "archive missing" in titles[0] and titles[1].endswith("archive missing resolved")
    svc3 = NotifyService(clock=Clock())  # and once more: nothing is owed any longer
    svc3.attach(runtime(env, **told))
    svc3.pass_once(wait=0)
    assert len(receiver.messages()) == 2


def test_the_hourly_limit_holds_across_a_restart(env: Env, receiver: Receiver) -> None:
    clock = Clock()
    svc = NotifyService(clock=clock)
    svc.attach(rt := runtime(env, urls=[receiver.url()], group_seconds=0, max_per_hour=1))
    rt.problems.report("archive_missing", "archive_missing", "the archive disk is not mounted")
    svc.pass_once(wait=0)
    assert len(receiver.messages()) == 1
    clock.t += 60
    svc2 = NotifyService(clock=clock)
    svc2.attach(rt2 := runtime(env, urls=[receiver.url()], group_seconds=0, max_per_hour=1))
    rt2.problems.report("state_full", "state_full", "the state disk is full")
    svc2.pass_once(wait=0)
    assert len(receiver.messages()) == 1  # the limit's hour began before the restart
    clock.t += 3600
    svc2.pass_once(wait=0)
    assert len(receiver.messages()) == 2 and "state disk full" in receiver.messages()[1]["title"]


@pytest.mark.slow
def test_the_daemon_restarted_while_the_service_is_down_still_tells_both_changes_once(
    env: Env, daemon: Callable[..., DaemonProc], receiver: Receiver
) -> None:
    """The real daemon, a real problem (the status page's port is taken, then freed), the service down."""
    receiver.fail_next = 10**6
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    env.write_config(web={"listen": port}, notify={"urls": [receiver.url()], "group_seconds": 0, "events": ["web"]})
    d = daemon()
    wait_for(lambda: receiver.arrived >= 1, 30, what="the problem's message to be tried")
    squatter.close()
    wait_for(lambda: receiver.arrived >= 2, 30, what="the cleared message to be tried")
    assert d.stop() == 0 and receiver.messages() == []
    receiver.fail_next = 0
    d2 = daemon()
    wait_for(lambda: len(receiver.messages()) >= 2, 30, what="both owed messages after the restart")
    owed = lambda: json.loads(Catalog(load(str(env.config))[0].catalog_path).get_meta("notify_outbox") or "{}")  # noqa: E731
    wait_for(lambda: owed().get("deliveries") == [], 30, what="nothing owed any more")
    assert d2.stop() == 0
    titles = [m["title"] for m in receiver.messages()]
    assert len(titles) == 2 and "status page down" in titles[0] and titles[1].endswith("status page down resolved")
    assert f"127.0.0.1:{port}" in receiver.messages()[0]["message"]


def test_the_weekly_digest_carries_thumbnails_where_the_service_takes_attachments(env: Env, receiver: Receiver) -> None:
    from draftsync.ingest import Ingestor
    from draftsync.thumbs import Thumbnailer

    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    ing = Ingestor(rt.settings, rt.catalog, rt.archive)
    for i in range(2):
        assert ing.ingest(str(make_video(env.inbox / f"v{i}.mp4", seed=300 + i)), str(env.inbox)).kind == "archived"
    Thumbnailer(rt.catalog, rt.archive).backfill()
    svc = NotifyService()
    svc.attach(rt)
    jobs = {j.id for j in rt.scheduler.get_jobs()}
    assert "digest" in jobs
    svc.digest_now()
    svc.pass_once(wait=0)
    (m,) = receiver.messages()
    assert "weekly digest, 2 video(s) backed up" in m["title"] and "Archived this week: 2 video(s)" in m["message"]
    assert len(m["attachments"]) == 2 and all(a["mimetype"] == "image/jpeg" for a in m["attachments"])


def test_a_scrub_that_finds_a_damaged_video_is_told_once_and_again_when_it_is_mended(env: Env,
                                                                                    receiver: Receiver) -> None:  # fmt: skip
    from draftsync.ingest import Ingestor
    from draftsync.integrity import scrub

    rt = runtime(env, urls=[receiver.url()], group_seconds=0)
    ing = Ingestor(rt.settings, rt.catalog, rt.archive)
    for i in range(2):
        assert ing.ingest(str(make_video(env.inbox / f"v{i}.mp4", seed=320 + i)), str(env.inbox)).kind == "archived"
    svc = NotifyService()
    assert svc.attach(rt)
    video = env.archived_videos()[0]
    good = video.read_bytes()
    video.write_bytes(good[:-100] + bytes(100))  # bit rot at the end of the file
    for _ in range(2):  # found by two scrubs in a row: still one message
        assert scrub(rt.archive, rt.catalog, 1.0, rt.problems).problems == 1
        svc.pass_once(wait=0)
    p = rt.problems.get("integrity")
    assert p is not None and "1 changed" in p.message and video.name in p.message
    (m,) = receiver.messages()
    assert "archive integrity" in m["title"] and video.name in m["message"] and m["type"] == "failure"
    video.write_bytes(good)  # restored from a backup
    assert scrub(rt.archive, rt.catalog, 0.5, rt.problems).problems == 0  # the damaged one is looked at first
    svc.pass_once(wait=0)
    assert rt.problems.get("integrity") is None
    assert [x["type"] for x in receiver.messages()] == ["failure", "success"]
    assert "resolved" in receiver.messages()[1]["title"]


def test_a_scrub_that_loses_the_archive_disk_midway_does_not_cry_bit_rot(env: Env) -> None:
    from draftsync.ingest import Ingestor
    from draftsync.integrity import scrub

    rt = runtime(env)
    assert Ingestor(rt.settings, rt.catalog, rt.archive).ingest(
        str(make_video(env.inbox / "v.mp4", seed=330)), str(env.inbox)).kind == "archived"  # fmt: skip
    shutil.rmtree(env.archive)
    env.archive.mkdir()  # the disk is gone mid-scrub: its bare mount point, no marker, no videos
    assert scrub(rt.archive, rt.catalog, 1.0, rt.problems).missing
    assert rt.problems.get("integrity") is None


def test_pings_around_scrub_and_push_windows_and_a_heartbeat(env: Env, receiver: Receiver) -> None:
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED, JobExecutionEvent, JobSubmissionEvent

    clock = Clock()
    rt = runtime(env, ping_url=receiver.http("/ping/{check}"), heartbeat_seconds=60)
    svc = NotifyService(clock=clock)
    assert svc.attach(rt)
    assert "heartbeat-ping" in {j.id for j in rt.scheduler.get_jobs()}
    now = datetime.now(UTC)
    svc._job_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "scrub", None, [now]))
    svc._job_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "scrub", None, now))
    svc._job_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "push", None, [now]))
    clock.t += 1
    rt.problems.report("push_reauth", "push_reauth", "TikTok needs re-authorising: run `draftsync auth tiktok`")
    svc._job_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "push", None, now))
    svc._job_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "rescan", None, [now]))  # not watched
    svc.heartbeat(first_beat_wait=0)  # the daemon is not running here: unhealthy
    svc.pass_once(wait=0)
    assert receiver.paths() == ["/ping/scrub/start", "/ping/scrub", "/ping/push/start", "/ping/push/fail",
                                "/ping/heartbeat/fail"]  # fmt: skip
    bodies = [r.body.decode() for r in receiver.got]
    assert "push_reauth" in bodies[3] and "not running" in bodies[4]


@pytest.mark.parametrize(
    ("exception", "retval", "raised", "verdict"),
    [
        (None, None, [], (True, "")),  # the push window: no problem of its kinds raised while it ran
        (None, None, ["push_reauth"], (False, "push_reauth")),
        (OSError("disk I/O error"), None, [], (False, "OSError: disk I/O error")),
        (None, RunResult(False, "1 changed"), [], (False, "1 changed")),  # its own result, whatever was raised
        (None, RunResult(True, "checked 3"), ["integrity"], (True, "")),
    ],
)  # fmt: skip
def test_a_watched_run_is_judged_by_its_own_result_when_it_gives_one(exception: Any, retval: Any, raised: list[str],
                                                                     verdict: tuple[bool, str]) -> None:  # fmt: skip
    assert run_verdict(exception, retval, raised) == verdict


def test_two_scrubs_with_problems_in_the_same_minute_both_ping_fail(env: Env, receiver: Receiver) -> None:
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED, JobExecutionEvent, JobSubmissionEvent

    from draftsync.ingest import Ingestor
    from draftsync.integrity import scrub, scrub_result

    rt = runtime(env, ping_url=receiver.http("/ping/{check}"), heartbeat_seconds=60)
    assert ing_ok(Ingestor(rt.settings, rt.catalog, rt.archive), env)
    env.archived_videos()[0].unlink()  # a video is gone from the archive
    svc = NotifyService(clock=Clock())
    assert svc.attach(rt)
    same_minute = lambda: 1_000_000.0  # noqa: E731
    job = rt.supervisor.job("scrub", lambda: scrub_result(scrub(rt.archive, rt.catalog, 1.0, rt.problems, same_minute)))
    at = datetime.now(UTC)
    for _ in range(2):
        svc._job_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "scrub", None, [at]))
        svc._job_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "scrub", None, at, retval=job()))
    broken = rt.supervisor.job("scrub", lambda: 1 / 0)  # a scrub that crashed: the guard logs it, the ping fails
    svc._job_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "scrub", None, [at]))
    svc._job_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "scrub", None, at, retval=broken()))
    svc.pass_once(wait=0)
    assert receiver.paths() == ["/ping/scrub/start", "/ping/scrub/fail"] * 3
    bodies = [r.body.decode() for r in receiver.got]
    assert "1 missing" in bodies[1] and "1 missing" in bodies[3] and "ZeroDivisionError" in bodies[5]


def ing_ok(ing: Any, env: Env) -> bool:
    return ing.ingest(str(make_video(env.inbox / "s.mp4", seed=330)), str(env.inbox)).kind == "archived"


def test_pings_that_never_arrive_are_told_as_a_problem_without_the_secret_and_cleared_when_they_do(
    env: Env, receiver: Receiver
) -> None:
    from draftsync.notify import PING_ATTEMPTS

    rt = runtime(env, ping_url=receiver.http("/ping/0f6c1a2e-secret-check-uuid-4b1d9e"), heartbeat_seconds=60)
    svc = NotifyService(clock=Clock())
    assert svc.attach(rt)
    receiver.fail_next = PING_ATTEMPTS  # a mistyped UUID: the service answers an error every time
    svc.heartbeat(first_beat_wait=0)
    for _ in range(PING_ATTEMPTS):
        assert rt.problems.get("notify:ping") is None
        svc.pass_once(wait=0)
    p = rt.problems.get("notify:ping")
    assert p is not None and f"127.0.0.1:{receiver.port}" in p.message and "HTTP 500" in p.message
    assert "0f6c1a2e-secret-check-uuid-4b1d9e" not in p.message
    svc.heartbeat(first_beat_wait=0)
    svc.pass_once(wait=0)
    assert receiver.paths() == ["/ping/0f6c1a2e-secret-check-uuid-4b1d9e/fail"]  # delivered: not running here
    assert rt.problems.get("notify:ping") is None


def test_a_ping_url_no_client_can_send_to_is_a_problem_not_a_failing_loop(env: Env) -> None:
    rt = runtime(env, ping_url="https://" + "a" * 300 + ".example/ping", heartbeat_seconds=60)
    svc = NotifyService(clock=Clock())
    assert svc.attach(rt)
    svc.heartbeat(first_beat_wait=0)
    for _ in range(3):
        svc.pass_once(wait=0)  # raises if the error escapes
    p = rt.problems.get("notify:ping")
    assert p is not None and "not delivered" in p.message


_URL_DOWN = Problem("notify:0", "notify", "notifications to json://127.0.0.1:9001/notify are not delivered (refused); "
                   "draftsync keeps retrying.", "warning")  # fmt: skip
_PING_DOWN = Problem(
    "notify:ping", "notify", "pings to http://127.0.0.1:9002 are not delivered (HTTP 404); ...", "warning"
)


@pytest.mark.parametrize(
    ("urls", "ping", "stale"),
    [
        (["json://127.0.0.1:9001/notify"], "http://127.0.0.1:9002/ping/x", []),  # still the same: stands
        (["json://127.0.0.1:9009/notify"], "http://127.0.0.1:9002/ping/y", ["notify:0"]),  # the URL was fixed
        (["json://127.0.0.1:9001/notify"], "", ["notify:ping"]),  # pings turned off
        ([], "http://127.0.0.1:9003/ping/x", ["notify:0", "notify:ping"]),  # URLs removed, pings moved
        (
            ["json://x:1/a", "json://127.0.0.1:9001/notify"],
            "http://127.0.0.1:9002/x",
            ["notify:0"],
        ),  # moved in the list
    ],
)
def test_not_delivered_problems_that_no_longer_match_the_settings_are_stale(urls: list[str], ping: str,
                                                                            stale: list[str]) -> None:  # fmt: skip
    from draftsync.notify import stale_delivery_problems

    assert stale_delivery_problems([A, _URL_DOWN, _PING_DOWN], urls, ping) == stale


def test_a_restart_with_the_url_fixed_clears_its_not_delivered_problem(env: Env, receiver: Receiver) -> None:
    rt = runtime(env, urls=["json://127.0.0.1:9/notify"], group_seconds=0)
    svc = NotifyService(clock=Clock())
    svc.attach(rt)
    for _ in range(2):
        svc._url_failed(0, "connection refused")
    assert rt.problems.get("notify:0") is not None
    rt2 = runtime(env, urls=[receiver.url()], group_seconds=0)  # the owner fixed the URL and restarted
    NotifyService(clock=Clock()).attach(rt2)
    assert rt2.problems.get("notify:0") is None and rt2.catalog.problems() == []


def test_notify_test_prints_what_each_url_answered_without_secrets(env: Env, receiver: Receiver,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import socket

    from draftsync.cli import _notify_test

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket closes
    env.write_config(notify={"urls": [f"json://hook:S3cretPassw0rd@127.0.0.1:{receiver.port}/notify",
                                      f"json://127.0.0.1:{closed}/notify"]})  # fmt: skip
    r = env.cli("notify", "test")
    assert r.returncode == 1, r.stdout + r.stderr
    ok_line, bad_line = r.stdout.splitlines()
    assert ok_line.startswith("sent") and f"127.0.0.1:{receiver.port}" in ok_line
    assert bad_line.startswith("FAILED") and f"127.0.0.1:{closed}" in bad_line and "rror" in bad_line
    assert "S3cretPassw0rd" not in r.stdout + r.stderr
    (m,) = receiver.messages()
    assert "test message" in m["title"]
    env.write_config()
    assert _notify_test(load(str(env.config))[0]) == 2
    assert "[notify] urls" in capsys.readouterr().err


def _config_error(env: Env) -> str:
    from draftsync.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load(str(env.config))
    return str(e.value)


def test_notify_config_is_checked_and_secrets_never_echoed(env: Env) -> None:
    from draftsync.cli import _to_toml

    env.write_config(notify={"events": ["archive_missing", "disk_on_fire"]})
    err = _config_error(env)
    assert "notify.events" in err and "disk_on_fire" in err
    env.write_config(notify={"urls": [42], "digest_schedule": "0 25 * * *"})
    err = _config_error(env)
    assert "notify.digest_schedule" in err and "hour" in err
    env.write_config(notify={"urls": {"not": "a list"}, "ping_url": ["https://hc-ping.com/TopSecretUuid1234"]})
    err = _config_error(env)
    assert "notify.urls" in err and "TopSecretUuid1234" not in err
    env.write_config(notify={"urls": "ntfy://:TopSecretToken99@ntfy.example.com/backups"})
    shown = _to_toml(load(str(env.config))[0].model_dump(mode="json"))  # what `config show` prints
    assert "TopSecretToken99" not in shown and "urls = " in shown


def test_a_urls_file_adds_urls_and_a_missing_one_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    from draftsync.errors import ConfigError

    f = tmp_path / "urls"
    f.write_text("# mine\nntfy://ntfy.example.com/a\n\njson://127.0.0.1:9/x\n")
    env.write_config(notify={"urls": ["gotify://g.example.com/token1234"], "urls_file": str(f)})
    s, _ = load(str(env.config))
    assert s.notify.all_urls() == ["gotify://g.example.com/token1234", "ntfy://ntfy.example.com/a",
                                   "json://127.0.0.1:9/x"]  # fmt: skip
    f.unlink()
    with pytest.raises(ConfigError, match=r"notify\.urls_file"):
        s.notify.all_urls()
