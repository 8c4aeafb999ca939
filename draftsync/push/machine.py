"""The life of one push as a pure function: `step(item, outcome, now)` says what comes next.

    queued ──begin──► starting ──Started──► uploading ──Sent──► processing ──InInbox──► in_inbox
     ▲  ▲                │                      │                      │
     │  └────────────────┤ Deferred, NeedsReauth: the create was refused.  Unknown: stays, looked up next
     └───────────────────┴──────────────────────┴──────────────────────┘ Dead: known dead, try again later
    starting + Dead(absent): the lost create is not found; believed only 10 min after it (else it stays)
    processing + Dead(unknown_id): the service does not know the id; believed only 10 min into processing
    uploading + Pending: resume from the byte the service has, while the URL lives (else as Dead)
    processing + Pending: wait; after an hour it is stuck ► failed
    no answer at all (Unknown, Deferred) for 3 h while an answer is awaited ► failed (`unanswered`), loudly;
    `push retry` looks the remote object up first (a lost create goes back to `starting`, never re-created)
    uploading + Pending(complete): every byte is there ► processing, whatever the URL's age
    Rejected ► failed (any active state); otherwise NeedsReauth, Deferred, Unknown wait in place
    failed ──retry──► queued, which re-checks the earlier remote id first: InInbox ► in_inbox; Unknown,
    Deferred wait; anything else (unfinished, dead, rejected) lets a new attempt start; a post not
    confirmed a draft is not re-checked      skipped, none ──add──► queued

Back-ends only talk HTTP and return one of the outcomes below; they never decide. A create (TikTok init,
Post for Me create-post) is never repeated after an unknown answer: the item stays `starting` and the
next window looks the remote object up first. Time is an `Instant` (wall clock for what is shown and
persisted, the boot clock for intervals), so a wall-clock jump neither hurries nor stalls a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class State(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    IN_INBOX = "in_inbox"
    FAILED = "failed"
    SKIPPED = "skipped"


ACTIVE = (State.STARTING, State.UPLOADING, State.PROCESSING)
FINAL = (State.IN_INBOX, State.FAILED, State.SKIPPED)

STUCK_AFTER = 3600.0  # every byte sent and still "processing" an hour later: the service will not finish it
URL_LIFETIME = 3600.0 - 120.0  # TikTok's upload URL dies 60 min after issue (A.2); two minutes to spare
MAX_ATTEMPTS = 5  # remote objects that died under one item before it is given up
# A create whose answer was lost (a gateway timeout, a dropped connection) may still be under way at the
# service and appear in its lists a little later; "no such post" is believed only this long after the create.
LOOKUP_GRACE = 600.0
NOT_A_DRAFT = "not_a_draft"  # code of a Rejected(halt): a post exists that the service did not confirm a draft
# The service has not answered a status check or a look-up (timeouts, 5xx, "busy") for this long: the item
# stops waiting in place and fails with a problem the owner sees. Long enough for an outage of the service
# to pass (the daemon looks again every 10 min to 6 h meanwhile), short enough that a draft missing from the
# inbox is reported the same day. Giving up sends nothing: the slot stays counted, and only `push retry`
# (which looks the object up first) can lead to a new attempt.
UNANSWERED_AFTER = 3 * 3600.0
UNANSWERED = "unanswered"  # code of that failure


@dataclass(frozen=True)
class Instant:
    """A moment: `wall` (unix seconds) to show and persist, `mono` on the boot clock of boot `boot`."""

    wall: float
    boot: str
    mono: float

    def later(self, seconds: float) -> Instant:
        return Instant(self.wall + seconds, self.boot, self.mono + seconds)


def elapsed(since: Instant, now: Instant) -> float:
    """Seconds from `since` to `now`: exact within one boot, whatever the wall clock did; across a reboot
    only the wall clock is left, and a moment it places in the future counts as just now."""
    if since.boot and since.boot == now.boot:
        return max(0.0, now.mono - since.mono)
    return max(0.0, now.wall - since.wall)


# --- outcomes: the closed set a back-end may answer --------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The create call was answered: the remote object exists (bytes follow if there is an upload URL)."""

    remote_id: str
    upload_url: str | None = None
    chunk_size: int | None = None
    chunk_count: int | None = None
    log_id: str = ""


@dataclass(frozen=True)
class Sent:
    """Every byte is with the service."""


@dataclass(frozen=True)
class Pending:
    """The service is still on it; `uploaded` is how many bytes it holds, when it says. `complete`: it holds
    every byte (the answer to the last chunk may have been lost), so the upload is over whatever its URL's age."""

    uploaded: int | None = None
    complete: bool = False


@dataclass(frozen=True)
class InInbox:
    detail: str


@dataclass(frozen=True)
class Rejected:
    """This file will never pass as it is. `halt`: stop pushing to the account until a person looks."""

    reason: str
    code: str = ""
    log_id: str = ""
    halt: bool = False


@dataclass(frozen=True)
class Dead:
    """Nothing usable exists remotely; a new attempt is safe after `after` seconds. `absent`: the service
    confirmed that the create never happened (so it did not take a slot)."""

    reason: str
    code: str = ""
    after: float = 0.0
    log_id: str = ""
    absent: bool = False
    unknown_id: bool = False  # the service says it does not know the remote id (it may just not know it yet)


@dataclass(frozen=True)
class Deferred:
    """Not now: nothing was created. `limit` names an account-wide limit the answer revealed."""

    reason: str
    after: float
    code: str = ""
    log_id: str = ""
    limit: Literal["", "minute", "pending", "service"] = ""


@dataclass(frozen=True)
class NeedsReauth:
    """The account needs its owner (authorise again, reconnect, fix a secret); no item moves."""

    reason: str
    code: str = ""


@dataclass(frozen=True)
class Unknown:
    """No usable answer: the service may or may not have acted."""

    reason: str
    code: str = ""


Outcome = Started | Sent | Pending | InInbox | Rejected | Dead | Deferred | NeedsReauth | Unknown


# --- the item ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    hash: str
    state: State
    since: Instant  # when it entered this state
    wait: float = 0.0  # queued: seconds after `since` before it may start
    attempt: int = 0  # creates since it was (re)queued
    ref: str = ""  # this attempt's own reference (Post for Me external_id), set at `begin`
    remote_id: str | None = None  # publish_id / post id; on a queued item: an earlier attempt to check first
    upload_url: str | None = None  # carries a bearer-like token: kept only while uploading
    upload_issued: Instant | None = None
    chunk_size: int | None = None
    chunk_count: int | None = None
    reason: str = ""
    code: str = ""
    log_id: str = ""

    def due(self, now: Instant) -> bool:
        return self.state is State.QUEUED and elapsed(self.since, now) >= self.wait


def _to(item: Item, state: State, now: Instant, reason: str = "", **kw: object) -> Item:
    if state is not State.UPLOADING:
        kw.setdefault("upload_url", None)  # the URL is a secret and useless once the bytes are sent
    kw.setdefault("wait", 0.0)
    return replace(item, state=state, since=now, reason=reason, **kw)  # type: ignore[arg-type]


def _note(item: Item, reason: str, code: str = "", log_id: str = "") -> Item:
    return replace(item, reason=reason, code=code or item.code, log_id=log_id or item.log_id)


def _again(item: Item, o: Dead, now: Instant) -> Item:
    if item.attempt >= MAX_ATTEMPTS:
        return _to(item, State.FAILED, now, f"gave up after {item.attempt} attempts: {o.reason}", code=o.code)
    return _to(item, State.QUEUED, now, f"will try again: {o.reason}", wait=o.after, remote_id=None, code=o.code,
               log_id=o.log_id, upload_issued=None)  # fmt: skip


def _unanswered(item: Item, o: Unknown | Deferred, now: Instant) -> Item | None:
    """An item that has waited too long for any answer fails (loudly) instead of waiting forever."""
    waited = elapsed(item.since, now)
    if waited <= UNANSWERED_AFTER:
        return None
    what = {
        State.STARTING: "to the look-up of a create whose answer was lost; nothing is sent again until "
        "`draftsync push retry` has looked it up",
        State.QUEUED: "to the check of the earlier attempt; nothing is sent again until it is checked",
    }.get(item.state, "to the status check; the draft may still arrive, and `draftsync push retry` checks it "
          "before sending anything again")  # fmt: skip
    return _to(item, State.FAILED, now, f"no answer for {waited / 3600:.1f} h {what} (last: {o.reason})",
               code=UNANSWERED)  # fmt: skip


def step(item: Item, o: Outcome, now: Instant) -> Item:
    """What the item becomes after outcome `o` at `now`. Total: any pair not named leaves it unchanged."""
    s = item.state
    if s in FINAL:
        return item  # final until a person says otherwise (`push retry`, `push add`)
    if isinstance(o, NeedsReauth):
        if s is State.STARTING:  # the create was refused for the account: nothing exists
            return _to(item, State.QUEUED, now, f"waiting for the account: {o.reason}", code=o.code)
        return _note(item, o.reason, o.code)
    if isinstance(o, Rejected) and (s is not State.QUEUED or o.halt or not item.remote_id):
        return _to(item, State.FAILED, now, o.reason, code=o.code, log_id=o.log_id)
    if s is State.QUEUED:  # only asked to re-check the remote id of an earlier attempt (`push retry`)
        if isinstance(o, InInbox):
            return _to(item, State.IN_INBOX, now, o.detail)
        if isinstance(o, Unknown | Deferred):
            return _unanswered(item, o, now) or _note(item, f"could not check the earlier attempt yet: {o.reason}")
        # It did not land and never will (unfinished, dead or rejected): the person asked for a new attempt.
        return replace(item, remote_id=None)
    if isinstance(o, Dead):
        if s is State.STARTING and o.absent and elapsed(item.since, now) < LOOKUP_GRACE:
            return _note(item, "the lost create is not found yet; it is looked up again before anything is sent")
        if s is State.PROCESSING and o.unknown_id and elapsed(item.since, now) < LOOKUP_GRACE:
            # Every byte went out, so the share may still finish: an id the service does not know yet (its
            # records lag the create) is believed gone only after the grace; a new attempt could be a second draft.
            return _note(item, f"the service does not know {item.remote_id} yet; it is checked again before "
                         "anything is sent", o.code)  # fmt: skip
        return _again(item, o, now)
    if isinstance(o, Deferred):
        if s is State.STARTING:  # the service refused the create: nothing exists
            return _to(item, State.QUEUED, now, f"waiting: {o.reason}", wait=o.after, code=o.code, log_id=o.log_id)
        return _unanswered(item, o, now) or _note(item, f"waiting: {o.reason}", o.code, o.log_id)
    if isinstance(o, Unknown):
        then = "it is looked up before anything is sent again" if s is State.STARTING else "will check again"
        return _unanswered(item, o, now) or _note(item, f"{o.reason}; {then}", o.code)
    if isinstance(o, Started) and s is State.STARTING:
        nxt = State.UPLOADING if o.upload_url else State.PROCESSING
        return _to(item, nxt, now, remote_id=o.remote_id, upload_url=o.upload_url, upload_issued=now,
                   chunk_size=o.chunk_size, chunk_count=o.chunk_count, code="", log_id=o.log_id)  # fmt: skip
    if s is State.UPLOADING and (isinstance(o, Sent) or (isinstance(o, Pending) and o.complete)):
        # Every byte is there: the share will finish without its URL, so a new init would be a second draft.
        return _to(item, State.PROCESSING, now, code="")
    if isinstance(o, InInbox) and s in (State.UPLOADING, State.PROCESSING):
        return _to(item, State.IN_INBOX, now, o.detail, code="")
    if isinstance(o, Pending):
        if s is State.UPLOADING and (item.upload_issued is None or elapsed(item.upload_issued, now) > URL_LIFETIME):
            return _again(item, Dead("the upload was interrupted and its URL has expired"), now)
        if s is State.PROCESSING and elapsed(item.since, now) > STUCK_AFTER:
            return _to(item, State.FAILED, now, f"still processing {elapsed(item.since, now) / 60:.0f} min after the "
                       "upload; `draftsync push retry` checks it once more and sends it again", code="stuck")  # fmt: skip
    return item


# --- what a person (or the selection) does ----------------------------------------------------------------


def begin(item: Item, now: Instant, ref: str) -> Item:
    """A queued item's create call is about to be made; recorded before the call."""
    return _to(item, State.STARTING, now, attempt=item.attempt + 1, ref=ref, code="", log_id="")


def queue(hash: str, now: Instant, reason: str = "") -> Item:
    return Item(hash, State.QUEUED, now, reason=reason)


def skip(hash: str, now: Instant, reason: str) -> Item:
    return Item(hash, State.SKIPPED, now, reason=reason)


def retry(item: Item, now: Instant) -> Item:
    """`push retry`: a failed item goes back to the queue. Its last remote id is kept so that the next
    window checks it first (a draft that arrived late is not sent twice), except a post the service did not
    confirm a draft: the person was told to look at it, and checking it again would only stop pushing again."""
    if item.state is not State.FAILED:
        return item
    if item.code == UNANSWERED and not item.remote_id and item.ref:
        # A create whose answer was lost and whose look-up was never answered: it may exist, so it is looked
        # up again (by its reference) before anything is sent, exactly as before it gave up.
        return _to(item, State.STARTING, now, "`push retry`: the lost create is looked up before anything is "
                   "sent again", code="", log_id="")  # fmt: skip
    remote_id = None if item.code == NOT_A_DRAFT else item.remote_id
    return _to(item, State.QUEUED, now, "queued again by `push retry`", attempt=0, code="", log_id="",
               remote_id=remote_id)  # fmt: skip


def add(item: Item | None, hash: str, now: Instant) -> Item:
    """`push add`: queue a video on purpose; anything already queued, active or final stays as it is,
    except a skipped one (the caller has already decided it may go)."""
    if item is None or item.state is State.SKIPPED:
        return queue(hash, now, "queued by `push add`")
    return item


@dataclass(frozen=True)
class AccountEffect:
    """What an answer means for the whole account, beyond its item."""

    pause: str = ""  # stop this window: the owner must act (authorise again, fix a secret, look at a post)
    halt: bool = False  # and stay stopped until `push retry` says the owner has looked
    block: Literal["", "minute", "pending", "service"] = ""  # a pause the budget obeys (a ledger line)
    block_for: float = 0.0  # its length; for "pending" the budget knows better (the oldest slot's age)
    no_more: bool = False  # start nothing else in this window


def for_account(o: Outcome, state: State) -> AccountEffect:
    """The account-wide side of answer `o` to an item that was in `state`."""
    if isinstance(o, NeedsReauth):
        return AccountEffect(pause=o.reason)
    if isinstance(o, Rejected) and o.halt:
        return AccountEffect(pause=f"{o.reason}; then `draftsync push retry` resumes pushing", halt=True)
    if isinstance(o, Deferred) and o.limit:
        # A 429 pauses the account until its sliding minute has passed (spec A.2); the pending cap and a
        # busy service end what this window starts.
        return AccountEffect(block=o.limit, block_for=max(o.after, 60.0) if o.limit == "minute" else o.after,
                             no_more=o.limit != "minute" and state is State.STARTING)  # fmt: skip
    return AccountEffect()


def ledger_mark(o: Outcome) -> Literal["ok", "refused"] | None:
    """What an answer to a create (or a look-up after a lost one) proves about the slot it may have
    taken: `ok` it exists, `refused` it does not, None still unknown (it stays counted)."""
    if isinstance(o, Started) or (isinstance(o, Rejected) and o.halt):
        return "ok"  # (a halt is a post that exists but was not confirmed a draft)
    if isinstance(o, Rejected | Deferred | NeedsReauth) or (isinstance(o, Dead) and o.absent):
        return "refused"
    return None
