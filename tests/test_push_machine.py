"""push.machine: every outcome in every state, as a table, with an injected clock."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from draftsync.problems import Problems
from draftsync.push import machine
from draftsync.push.machine import (
    MAX_ATTEMPTS,
    STUCK_AFTER,
    UNANSWERED_AFTER,
    URL_LIFETIME,
    Dead,
    Deferred,
    InInbox,
    Instant,
    Item,
    NeedsReauth,
    Outcome,
    Pending,
    Rejected,
    Sent,
    Started,
    State,
    Unknown,
    elapsed,
    ledger_mark,
    step,
)
from draftsync.push.pusher import PushService, WindowReport

T0 = Instant(1_800_000_000.0, "boot-a", 500.0)
NOW = T0.later(30)

OUTCOMES: dict[str, Outcome] = {
    "Started": Started("pid-2", "https://up/?upload_token=x", 5_242_880, 2),
    "Sent": Sent(),
    "Pending": Pending(uploaded=0),
    "InInbox": InInbox("in the TikTok inbox"),
    "Rejected": Rejected("TikTok rejected the video: duration_check_failed", "duration_check_failed"),
    "Dead": Dead("the upload URL was refused (403)", "upload_dead", after=60),
    "Deferred": Deferred("rate_limit_exceeded", 60, "rate_limit_exceeded", limit="minute"),
    "NeedsReauth": NeedsReauth("run `draftsync auth tiktok` again", "scope_not_authorized"),
    "Unknown": Unknown("TikTok did not answer (ReadTimeout)"),
}

# What each state becomes after each outcome. "=" means unchanged (not even its reason).
TABLE = """
state        Started     Sent        Pending     InInbox     Rejected  Dead        Deferred    NeedsReauth  Unknown
queued       queued      queued      queued      in_inbox    queued    queued      queued      queued       queued
starting     uploading   =           =           =           failed    queued      queued      queued       starting
uploading    =           processing  uploading   in_inbox    failed    queued      uploading   uploading    uploading
processing   =           =           processing  in_inbox    failed    queued      processing  processing   processing
in_inbox     =           =           =           =           =         =           =           =            =
failed       =           =           =           =           =         =           =           =            =
skipped      =           =           =           =           =         =           =           =            =
"""


def _rows() -> list[tuple[str, str, str]]:
    lines = [ln.split() for ln in TABLE.strip().splitlines()]
    header = lines[0][1:]
    return [(row[0], o, want) for row in lines[1:] for o, want in zip(header, row[1:], strict=True)]


def item_in(state: str) -> Item:
    s = State(state)
    base = Item("blake3:aa", s, T0, attempt=1, ref="draftsync-aa-1")
    if s is State.QUEUED:
        return replace(base, attempt=0, remote_id="pid-earlier")  # a `push retry`: its earlier id is checked first
    if s in (State.UPLOADING, State.PROCESSING):
        url = "https://up/?upload_token=x" if s is State.UPLOADING else None
        return replace(base, remote_id="pid-1", upload_url=url, upload_issued=T0, chunk_size=5_242_880, chunk_count=2)
    if s in (State.IN_INBOX, State.FAILED, State.SKIPPED):
        return replace(base, remote_id="pid-1", reason="final")
    return base


@pytest.mark.parametrize(("state", "outcome", "want"), _rows())
def test_every_outcome_in_every_state(state: str, outcome: str, want: str) -> None:
    before = item_in(state)
    after = step(before, OUTCOMES[outcome], NOW)
    if want == "=":
        assert after == before
        return
    assert after.state is State(want)
    assert after.hash == before.hash
    if after.state is not before.state:
        assert after.since == NOW  # entering a state starts its clock
    if after.state is not State.UPLOADING:
        assert after.upload_url is None  # the URL carries a token: never kept past the upload
    if after.state in (State.FAILED, State.QUEUED) and after.state is not before.state:
        assert after.reason, "a state change that waits or fails always says why"


def test_started_records_everything_needed_to_resume() -> None:
    it = step(item_in("starting"), OUTCOMES["Started"], NOW)
    assert (it.remote_id, it.upload_url, it.chunk_size, it.chunk_count) == (
        "pid-2", "https://up/?upload_token=x", 5_242_880, 2)  # fmt: skip
    assert it.upload_issued == NOW
    pfm = step(item_in("starting"), Started("sp_1"), NOW)  # Post for Me: the bytes went up before the post
    assert pfm.state is State.PROCESSING and pfm.remote_id == "sp_1"


def test_a_dead_remote_object_is_dropped_and_retried_later_then_given_up() -> None:
    it = step(item_in("uploading"), Dead("refused", after=120), NOW)
    assert it.state is State.QUEUED and it.remote_id is None and it.wait == 120
    assert not it.due(NOW.later(119)) and it.due(NOW.later(120))
    last = replace(item_in("processing"), attempt=MAX_ATTEMPTS)
    gone = step(last, Dead("TikTok failed the upload: internal"), NOW)
    assert gone.state is State.FAILED and f"gave up after {MAX_ATTEMPTS} attempts" in gone.reason


def test_deferred_on_create_requeues_with_the_wait_and_keeps_the_code() -> None:
    it = step(item_in("starting"), Deferred("too many pending shares", 3600, "spam_risk_too_many_pending_share",
                                            "LOG1", limit="pending"), NOW)  # fmt: skip
    assert it.state is State.QUEUED and it.wait == 3600 and it.code == "spam_risk_too_many_pending_share"
    assert it.log_id == "LOG1" and "too many pending shares" in it.reason


@pytest.mark.parametrize(("after", "want"), [(machine.LOOKUP_GRACE - 1, State.STARTING),
                                             (machine.LOOKUP_GRACE + 1, State.QUEUED)])  # fmt: skip
def test_a_lost_create_not_found_is_believed_absent_only_after_a_grace(after: float, want: State) -> None:
    # A gateway timeout while the service still works on the create: the post shows in its list later.
    absent = Dead("Post for Me holds no post for it", "post_absent", absent=True)
    it = step(item_in("starting"), absent, T0.later(after))
    assert it.state is want
    assert ("looked up again" in it.reason) is (want is State.STARTING)


def test_an_unknown_create_stays_starting_until_looked_up() -> None:
    it = step(item_in("starting"), Unknown("TikTok did not answer"), NOW)
    assert it.state is State.STARTING and it.attempt == 1 and "looked up before anything is sent again" in it.reason


def test_a_stale_id_that_cannot_be_checked_blocks_a_new_attempt() -> None:
    q = item_in("queued")
    assert step(q, Unknown("no answer"), NOW).remote_id == "pid-earlier"  # not started blindly
    assert step(q, Pending(), NOW).remote_id is None  # known not in the inbox: a new attempt may start
    assert step(q, InInbox("late but there"), NOW).state is State.IN_INBOX


def test_push_retry_sends_again_what_the_service_rejected_but_stops_for_a_post_not_confirmed_a_draft() -> None:
    q = item_in("queued")  # after `push retry`, its earlier id is checked first
    # The earlier attempt failed for good (a transient Post for Me failure, a caption judged risky): the
    # person asked for another attempt, so the re-check lets one start instead of failing it again.
    again = step(q, Rejected("Post for Me: Failed to post to TikTok", "result_failed"), NOW)
    assert again.state is State.QUEUED and again.remote_id is None
    # A post that turns out not to be a draft still fails (and halts the account, see for_account).
    halted = step(q, Rejected("not a draft", machine.NOT_A_DRAFT, halt=True), NOW)
    assert halted.state is State.FAILED and halted.code == machine.NOT_A_DRAFT
    # A queued item that was never started fails on a rejection (its archived copy went missing).
    fresh = machine.queue("blake3:bb", T0)
    assert step(fresh, Rejected("the archived copy is missing", "archive"), NOW).state is State.FAILED
    # `push retry` after that halt does not look at the same post again: the person has looked at it, and
    # re-checking it would only stop pushing again, forever.
    assert machine.retry(replace(halted, remote_id="sp_1"), NOW).remote_id is None
    stuck = replace(item_in("failed"), remote_id="pid-stuck", code="stuck")
    assert machine.retry(stuck, NOW).remote_id == "pid-stuck"  # a late draft is still found


@pytest.mark.parametrize(
    ("since_offset", "want"), [(STUCK_AFTER - 1, State.PROCESSING), (STUCK_AFTER + 1, State.FAILED)]
)
def test_processing_is_stuck_after_an_hour_of_pending_answers(since_offset: float, want: State) -> None:
    it = item_in("processing")
    after = step(it, Pending(), T0.later(since_offset))
    assert after.state is want
    if want is State.FAILED:
        assert after.code == "stuck" and "push retry" in after.reason
    # other answers (no answer at all) never count as stuck
    assert step(it, Unknown("down"), T0.later(since_offset)).state is State.PROCESSING


# An item waiting for an answer that never comes (the service times out or answers 5xx for hours) must not
# wait in place forever with nothing raised: after UNANSWERED_AFTER it fails (the pusher raises a problem),
# and sends nothing. Deferred on a create is not here: that is a refusal, the item goes back to the queue.
UNANSWERED_TABLE = """
state        outcome   just_before  just_after
starting     Unknown   starting     failed
uploading    Unknown   uploading    failed
uploading    Deferred  uploading    failed
processing   Unknown   processing   failed
processing   Deferred  processing   failed
queued       Unknown   queued       failed
queued       Deferred  queued       failed
"""


def _unanswered_rows() -> list[tuple[str, str, str, str]]:
    return [tuple(ln.split()) for ln in UNANSWERED_TABLE.strip().splitlines()[1:]]  # type: ignore[misc]


@pytest.mark.parametrize(("state", "outcome", "before", "after"), _unanswered_rows())
def test_an_item_that_never_gets_an_answer_fails_loudly_after_a_bound(state: str, outcome: str, before: str,
                                                                    after: str) -> None:  # fmt: skip
    it = item_in(state)
    o = {"Unknown": Unknown("TikTok did not answer (ReadTimeout)"), "Deferred": Deferred("HTTP 503", 60)}[outcome]
    assert step(it, o, T0.later(UNANSWERED_AFTER - 1)).state is State(before)
    gone = step(it, o, T0.later(UNANSWERED_AFTER + 1))
    assert gone.state is State(after) and gone.code == machine.UNANSWERED
    assert "no answer for 3.0 h" in gone.reason and o.reason in gone.reason  # what it waited for, and why
    assert gone.remote_id == it.remote_id and gone.upload_url is None  # what `push retry` will check


def test_the_bound_runs_on_the_boot_clock() -> None:
    it = item_in("processing")
    jumped = Instant(T0.wall + 86400, T0.boot, T0.mono + 60)  # the wall clock leapt a day, a minute passed
    assert step(it, Unknown("down"), jumped).state is State.PROCESSING


def test_push_retry_after_no_answer_looks_first_and_never_creates_blindly() -> None:
    lost = step(item_in("starting"), Unknown("Post for Me: 503"), T0.later(UNANSWERED_AFTER + 1))
    assert lost.state is State.FAILED and lost.remote_id is None
    # The create may exist: retry goes back to looking it up by its own reference, not to a new create.
    again = machine.retry(lost, NOW)
    assert again.state is State.STARTING and again.ref == "draftsync-aa-1" and again.code == ""
    assert again.since == NOW  # and gets its own look-up grace and bound again
    # A status check never answered: retry queues it with its id, which is checked before any new attempt.
    quiet = step(item_in("processing"), Unknown("TikTok: 502"), T0.later(UNANSWERED_AFTER + 1))
    requeued = machine.retry(quiet, NOW)
    assert requeued.state is State.QUEUED and requeued.remote_id == "pid-1"


@pytest.mark.parametrize("age", [URL_LIFETIME - 1, URL_LIFETIME + 1])
def test_an_upload_whose_every_byte_arrived_is_processing_whatever_its_urls_age(age: float) -> None:
    # The last chunk landed and its answer was lost: TikTok finishes the share without the URL, so a new
    # init would make a second draft.
    after = step(item_in("uploading"), Pending(uploaded=10_485_760, complete=True), T0.later(age))
    assert after.state is State.PROCESSING and after.remote_id == "pid-1" and after.upload_url is None


@pytest.mark.parametrize(("age", "want"), [(URL_LIFETIME - 1, State.UPLOADING), (URL_LIFETIME + 1, State.QUEUED)])
def test_an_interrupted_upload_resumes_only_while_its_url_lives(age: float, want: State) -> None:
    after = step(item_in("uploading"), Pending(uploaded=5_242_880), T0.later(age))
    assert after.state is want
    if want is State.QUEUED:
        assert "expired" in after.reason and after.remote_id is None


def test_timers_run_on_the_boot_clock_whatever_the_wall_clock_does() -> None:
    it = item_in("processing")
    jumped = Instant(T0.wall + 10 * 86400, T0.boot, T0.mono + 60)  # the wall clock leapt ten days
    assert step(it, Pending(), jumped).state is State.PROCESSING
    back = Instant(T0.wall - 86400, T0.boot, T0.mono + STUCK_AFTER + 5)  # and backwards: still an hour passed
    assert step(it, Pending(), back).state is State.FAILED
    rebooted = Instant(T0.wall + 120, "boot-b", 3.0)  # another boot: only the wall clock can tell
    assert elapsed(T0, rebooted) == 120
    assert elapsed(T0, Instant(T0.wall - 500, "boot-b", 3.0)) == 0  # a moment "in the future" counts as now


def test_person_actions() -> None:
    failed = replace(item_in("failed"), attempt=3, remote_id="pid-stuck", code="stuck")
    again = machine.retry(failed, NOW)
    assert again.state is State.QUEUED and again.attempt == 0 and again.remote_id == "pid-stuck" and again.code == ""
    assert machine.retry(item_in("in_inbox"), NOW) == item_in("in_inbox")
    assert machine.add(None, "blake3:bb", NOW).state is State.QUEUED
    assert machine.add(item_in("skipped"), "blake3:aa", NOW).state is State.QUEUED
    for s in ("queued", "uploading", "in_inbox", "failed"):
        assert machine.add(item_in(s), "blake3:aa", NOW) == item_in(s)
    b = machine.begin(machine.queue("blake3:cc", T0), NOW, "ref-1")
    assert b.state is State.STARTING and b.attempt == 1 and b.ref == "ref-1" and b.since == NOW


@pytest.mark.parametrize(
    ("outcome", "mark"),
    [
        (Started("pid"), "ok"),
        (Rejected("invalid_params"), "refused"),
        (Rejected("not a draft", halt=True), "ok"),  # a post exists, though not confirmed a draft
        (Deferred("rate", 60), "refused"),
        (NeedsReauth("auth"), "refused"),
        (Dead("Post for Me holds no post for it", absent=True), "refused"),
        (Dead("init answer lost"), None),  # cannot be proven: the slot stays counted
        (Unknown("no answer"), None),
        (Pending(), None),
    ],
)
def test_what_an_answer_proves_about_a_slot(outcome: Outcome, mark: str | None) -> None:
    assert ledger_mark(outcome) == mark


@pytest.mark.parametrize(
    ("outcome", "state", "want"),
    [
        (NeedsReauth("run auth"), State.PROCESSING, machine.AccountEffect(pause="run auth")),
        (Rejected("not a draft", halt=True), State.STARTING,
         machine.AccountEffect(pause="not a draft; then `draftsync push retry` resumes pushing", halt=True)),
        (Rejected("duration_check_failed"), State.PROCESSING, machine.AccountEffect()),
        # a 429 pauses the account for at least its minute, and the window goes on after it
        (Deferred("429", 30, limit="minute"), State.STARTING, machine.AccountEffect(block="minute", block_for=60)),
        (Deferred("cap", 3600, limit="pending"), State.STARTING,
         machine.AccountEffect(block="pending", block_for=3600, no_more=True)),
        (Deferred("token endpoint busy", 300, limit="service"), State.STARTING,
         machine.AccountEffect(block="service", block_for=300, no_more=True)),
        (Deferred("status 429", 60), State.PROCESSING, machine.AccountEffect()),
        (Unknown("no answer"), State.STARTING, machine.AccountEffect()),
        (Started("pid"), State.STARTING, machine.AccountEffect()),
    ],
)  # fmt: skip
def test_what_an_answer_means_for_the_account(outcome: Outcome, state: State, want: machine.AccountEffect) -> None:
    assert machine.for_account(outcome, state) == want


@pytest.mark.parametrize(
    ("report", "ok"),
    [
        (WindowReport(pushed=["blake3:a"]), True),
        (WindowReport(idle="nothing new"), True),
        (WindowReport(retry_after=60.0, waiting="the pending cap"), True),  # a passing obstacle, not a failure
        (WindowReport(failed=["blake3:a"]), False),
        (WindowReport(paused="TikTok needs re-authorising"), False),  # even when that problem already stood
    ],
)
def test_a_push_windows_own_result_decides_its_ping(report: WindowReport, ok: bool) -> None:
    svc = PushService()
    svc.rt = SimpleNamespace(problems=Problems(), add_job=lambda *a, **k: None)  # type: ignore[assignment]
    svc.pusher = SimpleNamespace(window=None)  # type: ignore[assignment]
    result = svc._run(lambda: report)
    assert result.ok is ok and result.detail == report.text()


def test_a_push_window_that_raised_pings_fail() -> None:
    svc = PushService()
    svc.rt = SimpleNamespace(problems=Problems(), add_job=lambda *a, **k: None)  # type: ignore[assignment]
    svc.pusher = SimpleNamespace(window=None)  # type: ignore[assignment]

    def window() -> WindowReport:
        raise RuntimeError("catalog locked")

    result = svc._run(window)
    assert not result.ok and "catalog locked" in result.detail


@pytest.mark.parametrize(
    ("into_processing", "want"),
    [(60.0, "processing"), (machine.LOOKUP_GRACE - 1, "processing"), (machine.LOOKUP_GRACE + 1, "queued")],
)
def test_an_id_the_service_does_not_know_yet_is_believed_gone_only_after_the_grace(
    into_processing: float, want: str
) -> None:
    """Every byte is out, so the share may still finish: a "no such id" right after the create (records
    that lag) must not start a second attempt; well into processing it means the share is gone."""
    it = item_in("processing")
    gone = Dead("Post for Me does not know post pid-1", "post_absent", unknown_id=True)
    after = step(it, gone, it.since.later(into_processing))
    assert after.state.value == want
    if want == "processing":
        assert after.remote_id == it.remote_id and "checked again before anything is sent" in after.reason
    assert step(it, Dead("the share failed", "upload_dead"), it.since.later(60)).state is State.QUEUED
