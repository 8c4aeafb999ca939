"""push, end to end against the fake services, one test per way it used to fail its users: answers lost
after the service acted, a business account, a stuck status, a busy token endpoint, a clock jump, and
`push add` across two windows under the 5-per-24 h cap. Windows run in-process on a fake clock shared
with the fakes, over real sockets with the real HTTP client."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from draftsync.catalog import Catalog
from draftsync.problems import Problems
from draftsync.push import machine, queue
from draftsync.push.clock import SystemClock
from draftsync.push.pusher import Pusher
from draftsync.push.queue import push_status, queue_view
from tests.conftest import Env
from tests.fakeapi import FakeClock, FakeServer, Fault
from tests.test_push import archive_videos, give_token, init_requests, push_env, states

DAY = 86400.0


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    f = FakeServer()
    yield f
    f.close()


@pytest.fixture
def clock(fake: FakeServer) -> FakeClock:
    c = FakeClock()
    fake.state.clock = c.wall
    return c


def window(env_settings: object, clock: FakeClock, **kw: object) -> tuple[object, Catalog]:
    cat = Catalog(env_settings.catalog_path)  # type: ignore[attr-defined]
    return Pusher(env_settings, cat, clock=clock).window(**kw), cat  # type: ignore[arg-type]


# --- answers lost after the service acted ---------------------------------------------------------------------


def test_a_tiktok_init_whose_answer_was_lost_is_counted_and_never_makes_a_second_draft(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/inbox/video/init/", 1, drop=True, act=True))  # TikTok made the share
    _, cat = window(s, clock)
    assert list(states(cat).values()) == ["in_inbox"]
    assert len(fake.state.tasks) == 2 and len(fake.state.completed_drafts()) == 1  # the orphan never got bytes
    st = push_status(s, cat, clock.now())
    # the orphan still holds one of TikTok's five pending slots, so it is counted until 24 h have passed
    assert st["budget"]["drafts_last_24h"] == 2 and st["budget"]["unanswered_24h"] == 1
    assert "counted because TikTok's answer was lost" in st["summary"]


def test_orphaned_inits_never_push_past_the_pending_cap(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, max_per_run=5)
    give_token(s, fake)
    archive_videos(s, env, 5)
    fake.state.faults += [Fault("/inbox/video/init/", n, drop=True, act=True) for n in (1, 2, 3)]
    window(s, clock)
    # TikTok holds 5 shares (3 orphans), draftsync counts 5: it stops on its own, TikTok never refuses
    assert len(fake.state.tasks) == 5 and all(ok for _, _, ok in fake.state.inits)
    _, cat = window(s, clock)
    assert len(init_requests(fake)) == 5 and cat.push_counts() == {"in_inbox": 2, "queued": 3}


@pytest.mark.parametrize("lost", [Fault("/v1/social-posts", 1, status=500, act=True),
                                  Fault("/v1/social-posts", 1, drop=True, act=True)])  # fmt: skip
def test_a_post_for_me_create_whose_answer_was_lost_is_looked_up_not_repeated(
    env: Env, fake: FakeServer, clock: FakeClock, lost: Fault
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.faults.append(lost)
    _, cat = window(s, clock)
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]
    lists = [r for r in fake.state.requests if r[0] == "GET" and r[1].startswith("/v1/social-posts?")]
    assert lists and "external_id=draftsync-" in lists[0][1]


def test_a_post_for_me_create_still_under_way_when_its_answer_was_lost_is_not_made_twice(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.pfm_list_lag = 120  # the post shows in lists two minutes after the create
    fake.state.faults.append(Fault("/v1/social-posts", 1, status=504, act=True))  # a gateway timed out
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "starting" and len(fake.state.pfm_posts) == 1  # not found yet: nothing sent again
    assert push_status(s, cat, clock.now())["budget"]["unanswered_24h"] == 1  # its slot stays counted
    clock.advance(600)
    window(s, clock)
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]


def test_a_lost_create_whose_look_up_fails_too_waits_for_the_next_window(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.faults += [Fault("/v1/social-posts", 1, status=502, act=True)] + [
        Fault("/v1/social-posts?", 1, status=503) for _ in range(3)]  # the look-up's own retries fail  # fmt: skip
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "starting" and "looked up before anything is sent again" in row["reason"]
    window(s, clock)
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]


def test_a_look_up_refused_is_not_taken_for_a_refused_create(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    """A refused look-up says nothing about the lost create: the item must stay `starting`, never be queued
    for a second create while the first post may exist."""
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.faults += [
        Fault("/v1/social-posts", 1, status=502, act=True),  # the post is made, its answer lost
        Fault("/v1/social-posts?", 1, status=401),  # and the look-up refused (a key rotated in between)
    ]
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "starting" and len(fake.state.pfm_posts) == 1
    clock.advance(600)
    window(s, clock)
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]


def test_the_fake_treats_external_id_as_a_filter_not_a_key(fake: FakeServer) -> None:
    """Post for Me makes a second post for a repeated external_id (spec B.3); the fake must too, or the
    tests above would prove nothing."""
    h = {"Authorization": "Bearer pfm_test_key"}
    ids = []
    for _ in range(2):
        up = httpx.post(f"{fake.base}/v1/media/create-upload-url", headers=h).json()
        httpx.put(up["upload_url"], content=b"x" * 10)
        body = {"caption": "c", "social_accounts": ["spc_biz1"], "media": [{"url": up["media_url"]}],
                "platform_configurations": {"tiktok": {"is_draft": True}}, "external_id": "same"}  # fmt: skip
        ids.append(httpx.post(f"{fake.base}/v1/social-posts", json=body, headers=h).json()["id"])
    assert len(set(ids)) == 2
    listed = httpx.get(f"{fake.base}/v1/social-posts", params={"external_id": "same"}, headers=h).json()
    assert len(listed["data"]) == 2
    # and a business account's post with the flag under `tiktok` only is published, not a draft (B.5)
    assert {fake.state.pfm_posts[i]["kind"] for i in ids} == {"published"}


# --- a stuck status ---------------------------------------------------------------------------------------------


def test_a_share_stuck_processing_is_given_up_after_an_hour_and_push_retry_checks_it_first(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.processing_polls = 10**9  # TikTok never finishes
    report, cat = window(s, clock, poll_for=1200)  # returns: polling is bounded
    assert report.pending and list(states(cat).values()) == ["processing"]  # type: ignore[attr-defined]
    clock.advance(3600)
    window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "failed" and row["code"] == "stuck" and "push retry" in row["reason"]
    assert any(p.key == f"push_failed:{row['hash']}" for p in cat.problems())
    fake.state.processing_polls = 0  # TikTok finished it after all
    out = queue.retry(cat, [row["hash"]], Problems(cat))
    assert out.queued == [row["hash"]] and not any(p.kind == "push_failed" for p in cat.problems())
    window(s, clock)
    assert list(states(cat).values()) == ["in_inbox"]
    assert len(init_requests(fake)) == 1  # the late draft was found; nothing was sent twice


def _push_problem(cat: Catalog, h: str) -> str:
    (p,) = [p for p in cat.problems() if p.key == f"push_failed:{h}"]
    assert p.severity == "warning"  # in `status`, the health check's warnings and the notifications
    return p.message


def test_a_status_check_never_answered_raises_a_problem_after_hours_and_push_retry_checks_first(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.down = ("/status/fetch/",)  # every status check times out at the gateway
    _, cat = window(s, clock, poll_for=1200)
    (row,) = cat.push_rows()
    assert row["state"] == "processing" and not cat.problems()  # a short outage: it just waits
    clock.advance(machine.UNANSWERED_AFTER)
    window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "failed" and row["code"] == "unanswered"
    msg = _push_problem(cat, row["hash"])
    video = cat.video(row["hash"])
    assert video and "gave up waiting" in msg and "status check" in msg and video.archive_path in msg
    assert msg.count("push retry") == 1 and f"push retry {row['hash'][7:19]}`" in msg  # named once, with its id
    window(s, clock)
    assert len(init_requests(fake)) == 1  # giving up sent nothing, and the next window does not either
    fake.state.down, fake.state.processing_polls = (), 0  # TikTok is back; the draft had arrived meanwhile
    queue.retry(cat, [row["hash"]], Problems(cat))
    assert not cat.problems()
    window(s, clock)
    assert list(states(cat).values()) == ["in_inbox"] and len(init_requests(fake)) == 1


def test_a_lost_create_whose_look_up_is_never_answered_fails_loudly_and_is_never_created_twice(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/v1/social-posts", 1, status=504, act=True))  # the create's answer is lost
    fake.state.down = ("/v1/social-posts?",)  # and every look-up of it fails
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "starting" and not cat.problems()
    clock.advance(machine.UNANSWERED_AFTER + 60)
    window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "failed" and row["code"] == "unanswered"
    assert "look-up of a create whose answer was lost" in _push_problem(cat, row["hash"])
    assert push_status(s, cat, clock.now())["budget"]["unanswered_24h"] == 1  # its slot stays counted
    fake.state.down = ()
    queue.retry(cat, [row["hash"]], Problems(cat))
    assert [r["state"] for r in cat.push_rows()] == ["starting"]  # looked up first, not created again
    window(s, clock)
    assert list(states(cat).values()) == ["in_inbox"] and len(fake.state.pfm_posts) == 1


# --- a busy token endpoint ----------------------------------------------------------------------------------------


def test_a_token_endpoint_429_keeps_the_video_queued_and_retries_later(env: Env, fake: FakeServer,
                                                                     clock: FakeClock) -> None:  # fmt: skip
    s = push_env(env, fake)
    give_token(s, fake, expires_in=60)  # due for a refresh
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/v2/oauth/token/", 1, status=429, body={"error": "rate_limited"},
                                   headers={"Retry-After": "120"}))  # fmt: skip
    report, cat = window(s, clock)
    assert list(states(cat).values()) == ["queued"] and fake.state.inits == []
    assert "token endpoint is busy" in report.waiting and report.retry_after == 120  # type: ignore[attr-defined]
    assert not report.paused and not any(p.kind == "push_reauth" for p in cat.problems())  # type: ignore[attr-defined]
    window(s, clock)  # the daemon runs this one when retry_after has passed
    assert list(states(cat).values()) == ["in_inbox"]


def test_a_token_endpoint_5xx_during_an_init_keeps_the_video_queued(env: Env, fake: FakeServer,
                                                                   clock: FakeClock) -> None:  # fmt: skip
    s = push_env(env, fake)
    tok = give_token(s, fake)
    fake.state.access[tok["access_token"]]["expires"] = 0  # the init is refused: refresh, which fails
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/v2/oauth/token/", 1, status=503))
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "queued" and "busy" in row["reason"]
    assert [e["outcome"] for e in cat.ledger("tiktok:open_user_1")] == ["refused", "refused"]  # init + block


# --- clock jumps --------------------------------------------------------------------------------------------------


def test_a_wall_clock_jump_across_restarts_never_frees_a_slot(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, max_per_run=5, max_per_day=100)
    give_token(s, fake)
    archive_videos(s, env, 7)
    window(s, clock)
    assert len(fake.state.completed_drafts()) == 5
    # restart after the wall clock leapt two days ahead (an NTP step); only an hour really passed
    clock.advance(3600)
    clock.jump_wall(2 * DAY)
    fake.state.clock = lambda: clock.wall() - 2 * DAY  # TikTok's own clock did not jump
    report, _ = window(s, clock)
    assert len(init_requests(fake)) == 5 and "5 drafts in 24 h" in report.waiting  # type: ignore[attr-defined]
    # the ledger was re-dated to the true times, so after a reboot the wall clock alone is right again
    clock.reboot("boot-2", downtime=60)
    report, _ = window(s, clock)
    assert len(init_requests(fake)) == 5 and "5 drafts in 24 h" in report.waiting  # type: ignore[attr-defined]
    clock.advance(DAY)  # a real day later
    window(s, clock)
    assert len(fake.state.completed_drafts()) == 7 and all(ok for _, _, ok in fake.state.inits)


def test_a_wall_clock_jump_backwards_cannot_crowd_inits_into_a_minute(env: Env, fake: FakeServer,
                                                                       clock: FakeClock) -> None:  # fmt: skip
    s = push_env(env, fake, max_per_run=3, max_per_day=100)
    give_token(s, fake)
    archive_videos(s, env, 3)
    cat = Catalog(s.catalog_path)
    p = Pusher(s, cat, clock=clock)
    real = clock.sleep

    def sleep_with_jumps(seconds: float) -> None:  # each wait also sets the wall clock back an hour
        real(seconds)
        clock.jump_wall(-3600)

    clock.sleep = sleep_with_jumps  # type: ignore[method-assign]
    fake.state.clock = lambda: clock.mono  # TikTok measures real time
    p.window()
    times = [t for t, _, _ in fake.state.inits]
    assert len(times) == 3 and all(b - a >= 10.0 for a, b in itertools.pairwise(times))


# --- push add across two windows ------------------------------------------------------------------------------------


def test_push_add_queues_old_videos_and_the_cap_spreads_them_over_two_windows(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, only_new=True, max_per_run=10, max_per_day=10, schedule="0 9 * * *")
    give_token(s, fake)
    archive_videos(s, env, 8)  # archived before pushing was turned on
    cat = Catalog(s.catalog_path)
    queue.note_enabled(s, cat)  # `run`, `scan` or `push` loads the config with pushing on, after those 8
    report, _ = window(s, clock)
    assert cat.push_rows() == [] and "8 video(s) archived before that" in report.idle  # type: ignore[attr-defined]
    videos = cat.videos_to_add()
    dry = queue.add(s, cat, videos, dry_run=True, now=clock.now())
    assert len(dry.queued) == 8 and cat.push_rows() == []  # a dry run changes nothing
    added = queue.add(s, cat, videos, now=clock.now())
    assert len(added.queued) == 8
    again = queue.add(s, cat, videos[:2], now=clock.now())
    assert [state for _, state in again.already] == ["queued", "queued"] and not again.queued
    turns = sorted(t for t in added.turns.values() if t is not None)
    first, second = turns[:5], turns[5:]
    assert len(turns) == 8 and second[0] - first[0] >= DAY - 3600  # three go a day later
    # run the windows when the schedule says; each lands what the queue view promised
    clock.advance(first[0] - clock.wall())
    window(s, clock)
    assert cat.push_counts() == {"in_inbox": 5, "queued": 3}
    full = queue_view(s, cat, now=clock.now())
    assert queue_view(s, cat, limit=2, offset=1, now=clock.now()) == full[1:3]  # a page of the same view
    view = [e for e in full if e.state == "queued"]
    assert all(e.turn_at is not None and e.turn_at >= second[0] - 60 for e in view)
    clock.advance(second[0] - clock.wall())
    window(s, clock)
    assert cat.push_counts() == {"in_inbox": 8}
    assert len(fake.state.completed_drafts()) == 8 and all(ok for _, _, ok in fake.state.inits)


def test_push_add_skips_exports_and_failed_ones_and_says_why(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, only_new=True)
    archive_videos(s, env, 2)
    cat = Catalog(s.catalog_path)
    a, b = cat.videos_to_add()
    cat.set_origin(a.hash, "tiktok-export")
    cat.save_push(b.hash, {"state": "failed", "reason": "TikTok rejected the video: spam_risk"})
    out = queue.add(s, cat, [a, b], now=clock.now())
    why = {v.hash: text for v, text in out.refused}
    assert not out.queued and "TikTok export" in why[a.hash] and "push retry" in why[b.hash]
    forced = queue.add(s, cat, [a], force=True, now=clock.now())
    assert [v.hash for v in forced.queued] == [a.hash]


# --- read-only views ------------------------------------------------------------------------------------------------


def _snapshot(cat: Catalog) -> str:
    return json.dumps([cat.push_rows(), cat.ledger("tiktok:open_user_1"), [p.key for p in cat.problems()],
                       cat.get_meta("push_enabled_at")], default=str)  # fmt: skip


def test_queue_status_and_the_dry_run_never_write(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, max_per_day=10)
    give_token(s, fake)
    archive_videos(s, env, 2)
    cat = Catalog(s.catalog_path)
    now = SystemClock().now()
    for _ in range(5):  # five drafts sent an hour ago: none left for 23 hours
        cat.ledger_add("tiktok:open_user_1", "init", now.wall - 3600, now.boot, now.mono - 3600, outcome="ok")
    report, _ = window(s, clock)
    assert cat.push_counts() == {"queued": 2} and "5 drafts in 24 h" in report.waiting  # type: ignore[attr-defined]
    archive_videos(s, env, 1, seed=800)  # new since that window
    before = _snapshot(cat)
    sidecars = sorted((p, p.stat().st_mtime_ns) for p in s.archive.root.rglob("*.json"))
    out = {}
    for args in (["queue", "--json"], ["status", "--json"], ["push", "--dry-run"]):
        r = env.cli(*args)
        # status says "not running" (exit 3): no daemon is started in this test
        assert r.returncode == (3 if args[0] == "status" else 0), r.stderr
        out[args[0]] = r.stdout
    assert _snapshot(cat) == before
    assert sorted((p, p.stat().st_mtime_ns) for p in s.archive.root.rglob("*.json")) == sidecars
    # the dry run walks the same selection and budget as a real window: nothing now, three later
    assert "would send 0 now, 3 later" in out["push"]
    assert len(json.loads(out["queue"])["items"]) == 2  # the new video is not queued by a listing


# --- push retry after a failure the service reported ------------------------------------------------------------


def pusher_paused(s: object, clock: FakeClock) -> str:
    return window(s, clock)[0].paused  # type: ignore[attr-defined, no-any-return]


def test_push_retry_after_a_post_published_despite_the_flag_resumes_pushing_and_stops_no_more(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 2)
    fake.state.pfm_published_anyway = 1  # the answer echoed is_draft; the result says it was published
    report, cat = window(s, clock)
    assert "not as a draft" in report.paused and sorted(states(cat).values()) == ["failed", "processing"]
    assert pusher_paused(s, clock)  # and it stays stopped until a person has looked
    # The owner looks at the post, deletes it, and does what the message says.
    out = queue.retry(cat, None, Problems(cat))
    assert out.halt_cleared and len(out.queued) == 1
    report, _ = window(s, clock)
    assert not report.paused, report.paused  # the post already looked at does not stop pushing again
    assert set(states(cat).values()) == {"in_inbox"}
    kinds = sorted(p["kind"] for p in fake.state.pfm_posts.values())
    assert kinds == ["inbox_draft", "inbox_draft", "published"]  # each video reached the inbox once


def test_push_retry_sends_again_a_video_whose_post_for_me_result_failed(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    fake.state.pfm_failing_results = 1
    _, cat = window(s, clock)
    (row,) = cat.push_rows()
    assert row["state"] == "failed" and "Failed to post to TikTok" in row["reason"]
    queue.retry(cat, None, Problems(cat))
    window(s, clock)  # the earlier post is checked first: it failed, so a new one is made
    assert list(states(cat).values()) == ["in_inbox"]
    assert sorted(p["kind"] for p in fake.state.pfm_posts.values()) == ["failed", "inbox_draft"]


# --- every byte arrived, the answer did not --------------------------------------------------------------------------


def test_an_upload_whose_last_answer_was_lost_is_never_initialised_again_after_its_url_expired(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.processing_polls = 10**9  # TikTok is slow to finish
    _, cat = window(s, clock, poll_for=0)
    (row,) = cat.push_rows()
    (task,) = fake.state.tasks.values()
    assert row["state"] == "processing" and task.received == task.size
    # A crash before the answer to the last chunk was recorded; the daemon comes back after the URL died.
    url = f"{fake.base}/upload/?upload_id={task.upload_id}&upload_token=T{task.upload_id}"
    cat.save_push(row["hash"], {"state": "uploading", "upload_url": url})
    clock.advance(2 * 3600)
    window(s, clock, poll_for=0)
    assert list(states(cat).values()) == ["processing"] and len(init_requests(fake)) == 1
    fake.state.processing_polls = 0
    window(s, clock)
    assert list(states(cat).values()) == ["in_inbox"] and len(init_requests(fake)) == 1


class _LateClock(FakeClock):
    """A clock whose next sleep lasts `then` seconds: a chunk's retry that arrives after the URL died."""

    then = 0.0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + self.then)
        self.then = 0.0


def test_a_last_chunk_that_landed_before_its_url_died_is_looked_up_not_initialised_again(
    env: Env, fake: FakeServer
) -> None:
    clock = _LateClock()
    fake.state.clock = clock.wall
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)  # one chunk
    fake.state.faults.append(Fault("/upload/", 1, drop=True))  # stored, then the connection drops
    clock.then = 3700  # and the chunk's retry reaches TikTok after the URL's hour
    _, cat = window(s, clock)
    assert [r[0] for r in fake.state.requests if r[1].startswith("/upload/")] == ["PUT", "PUT"]  # the 403
    assert list(states(cat).values()) == ["in_inbox"] and len(init_requests(fake)) == 1
