"""push: chunk arithmetic, OAuth and tokens, each documented error, faults, caps, Post for Me payloads —
all against the fake APIs over real sockets with the real httpx client, on a fake clock shared with the
fake services (nothing sleeps for real; gaps are measured on that clock)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from draftsync.archive import Archive
from draftsync.catalog import Catalog, make_private_dir
from draftsync.config import Settings, load
from draftsync.errors import AuthError
from draftsync.ingest import Ingestor
from draftsync.problems import Problems
from draftsync.push import machine
from draftsync.push.auth import TokenStore, authorize_request, challenge_for, new_verifier, parse_redirect
from draftsync.push.budget import Limits
from draftsync.push.postforme import draft_payload
from draftsync.push.pusher import Pusher
from draftsync.push.queue import note_enabled, queue_view
from draftsync.push.queue import retry as queue_retry
from draftsync.push.select import media_problem
from draftsync.push.tiktok import MAX_CHUNK, MAX_CHUNKS, MAX_FINAL_CHUNK, MAX_VIDEO, MIN_CHUNK, chunk_plan, chunk_range
from tests.conftest import Env, b3, make_video
from tests.fakeapi import FakeClock, FakeServer, Fault, _chunk_problem, tiktok_config

# --- chunk arithmetic (A.3.1) -----------------------------------------------------------------------


def _check_plan(size: int, preferred: int) -> None:
    cs, n = chunk_plan(size, preferred)
    assert 1 <= n <= MAX_CHUNKS
    assert _chunk_problem(size, cs, n) is None, (size, cs, n)
    if n == 1:
        assert cs == size and size <= MAX_CHUNK
    else:
        assert MIN_CHUNK <= cs <= MAX_CHUNK and n == size // cs
        last = size - (n - 1) * cs
        assert cs <= last <= min(2 * cs - 1, MAX_FINAL_CHUNK)
    ranges = [chunk_range(i, size, cs, n) for i in range(n)]
    assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))


BOUNDARIES = sorted({
    x + d for x in (MIN_CHUNK, 2 * MIN_CHUNK, 10_000_000, 20_000_000, MAX_CHUNK, 2 * MAX_CHUNK, MAX_FINAL_CHUNK,
                    MAX_VIDEO) for d in (-1, 0, 1) if 1 <= x + d <= MAX_VIDEO
})  # fmt: skip


@pytest.mark.parametrize("size", BOUNDARIES)
@pytest.mark.parametrize("preferred", [MIN_CHUNK, 10_000_000, MAX_CHUNK])
def test_chunk_plan_at_every_boundary(size: int, preferred: int) -> None:
    _check_plan(size, preferred)


@given(st.integers(1, MAX_VIDEO), st.integers(MIN_CHUNK, MAX_CHUNK))
@example(50_000_123, 10_000_000)
def test_chunk_plan_is_valid_for_any_size(size: int, preferred: int) -> None:
    _check_plan(size, preferred)


def test_tiktoks_worked_example() -> None:
    assert chunk_plan(50_000_123, 10_000_000) == (10_000_000, 5)
    assert chunk_range(4, 50_000_123, 10_000_000, 5) == (40_000_000, 50_000_122)


def test_too_big_and_empty_files_are_refused() -> None:
    with pytest.raises(ValueError):
        chunk_plan(MAX_VIDEO + 1)
    with pytest.raises(ValueError):
        chunk_plan(0)


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    f = FakeServer()
    yield f
    f.close()


@pytest.fixture
def clock(fake: FakeServer) -> FakeClock:
    """draftsync's clock and the fake service's are the same fake one: nothing sleeps for real."""
    c = FakeClock()
    fake.state.clock = c.wall
    return c


def push_env(
    env: Env, fake: FakeServer, backend: str = "tiktok", account: str = "spc_tiktok1", **push: Any
) -> Settings:
    env.write_config(
        push={"enabled": True, "backend": backend, "only_new": False, "max_per_run": 5, "max_per_day": 5, **push},
        tiktok=tiktok_config(fake.base, str(env.state / "tiktok-token.json"), chunk_size=MIN_CHUNK),
        postforme={"api_base": fake.base, "api_key": "pfm_test_key", "social_account_id": account},
    )
    s, _ = load(str(env.config))
    return s


def give_token(s: Settings, fake: FakeServer, **kw: Any) -> dict[str, Any]:
    tok = fake.issue_token(**kw)
    make_private_dir(s.token_path.parent)
    s.token_path.write_text(json.dumps(tok))
    os.chmod(s.token_path, 0o600)
    return tok


def archive_videos(s: Settings, env: Env, n: int, pad: int = 0, seed: int = 500) -> list[Path]:
    cat = Catalog(s.catalog_path)
    ing = Ingestor(s, cat, Archive(s.archive.root, s.archive.layout))
    out = []
    for i in range(n):
        v = make_video(env.inbox / f"VID_2026050{i % 9 + 1}_1200{i:02d}.mp4", seconds=3, size=(360, 640), seed=seed + i)
        if pad:
            with v.open("ab") as f:
                f.write(os.urandom(pad))
        assert ing.ingest(str(v), str(env.inbox)).kind == "archived"
        out.append(v)
    cat.close()
    return out


def pusher(s: Settings, clock: FakeClock, limits: Limits = Limits()) -> tuple[Pusher, Catalog]:
    cat = Catalog(s.catalog_path)
    return Pusher(s, cat, limits=limits, clock=clock), cat


def states(cat: Catalog) -> dict[str, str]:
    return {r["hash"]: r["state"] for r in cat.push_rows()}


def init_requests(fake: FakeServer) -> list[tuple[str, str]]:
    return [r for r in fake.state.requests if r[1].endswith("/inbox/video/init/")]


def init_body(code: str, log_id: str = "LOG42") -> dict[str, Any]:
    return {"data": {}, "error": {"code": code, "message": "m", "log_id": log_id}}


# --- auth (A.1) -----------------------------------------------------------------------------------------


def test_pkce_uses_a_hex_sha256_challenge() -> None:
    v = new_verifier()
    assert 43 <= len(v) <= 128 and all(c.isalnum() or c in "-._~" for c in v)
    assert challenge_for("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_authorize_url_and_code_exchange_against_the_fake(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    req = authorize_request(s)
    r = httpx.get(req.url, follow_redirects=False)
    assert r.status_code == 302, r.text
    redirect = r.headers["Location"]
    assert redirect.startswith(s.tiktok.redirect_uri) and f"state={req.state}" in redirect
    code = parse_redirect(redirect, req.state)
    tok = TokenStore(s).exchange(code, req.verifier, req.redirect_uri)
    assert tok.open_id == "open_user_1" and "video.upload" in tok.scope
    assert stat.S_IMODE(s.token_path.stat().st_mode) == 0o600
    data = json.loads(s.token_path.read_text())
    assert {"access_token", "refresh_token", "expires_at", "refresh_expires_at", "open_id", "scope"} <= set(data)
    assert abs(data["expires_at"] - (time.time() + fake.state.expires_in)) < 60


def test_a_forged_state_or_a_refusal_is_rejected() -> None:
    with pytest.raises(AuthError, match="state does not match"):
        parse_redirect("http://127.0.0.1:8765/callback/?code=x&state=evil", "good")
    with pytest.raises(AuthError, match="access_denied"):
        parse_redirect("http://127.0.0.1:8765/callback/?error=access_denied&state=good", "good")
    with pytest.raises(AuthError, match=r"video\.upload"):
        parse_redirect("http://127.0.0.1:8765/callback/?code=x&state=good&scopes=user.info.basic", "good")
    assert parse_redirect("  just-a-code \n", "good") == "just-a-code"


def test_auth_cli_with_a_loopback_listener(env: Env, fake: FakeServer) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    push_env(env, fake)
    env.write_config(
        tiktok=tiktok_config(fake.base, str(env.state / "tok.json"), redirect_uri=f"http://127.0.0.1:{port}/callback/")
    )
    proc = subprocess.Popen([sys.executable, "-m", "draftsync", "--config", str(env.config), "auth", "tiktok", "--listen",
                             "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    url = ""
    deadline = time.monotonic() + 20
    while not url and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip().startswith("http"):
            url = line.strip()
    r = httpx.get(url, follow_redirects=True, timeout=20)  # the "browser"
    assert r.status_code == 200 and "authorization received" in r.text
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Connected TikTok account Fake Creator" in out
    assert stat.S_IMODE((env.state / "tok.json").stat().st_mode) == 0o600
    assert "cs_test_secret_value" not in out + err


def test_auth_cli_with_a_pasted_redirect(env: Env, fake: FakeServer) -> None:
    push_env(env, fake)
    proc = subprocess.Popen([sys.executable, "-m", "draftsync", "--config", str(env.config), "auth", "tiktok"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    url = ""
    while not url:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        if line.strip().startswith("http"):
            url = line.strip()
    location = httpx.get(url, follow_redirects=False).headers["Location"]
    _out, err = proc.communicate(location + "\n", timeout=30)
    assert proc.returncode == 0, err


def test_refresh_ahead_of_expiry_rotates_and_keeps_the_new_refresh_token(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    old = give_token(s, fake, expires_in=300)  # under 10 minutes left
    store = TokenStore(s)
    new = store.access_token()
    assert new.access_token != old["access_token"] and new.refresh_token != old["refresh_token"]
    on_disk = json.loads(s.token_path.read_text())
    assert on_disk["refresh_token"] == new.refresh_token  # the rotated one is what we keep
    assert fake.state.refresh[old["refresh_token"]]["valid"] is False
    assert store.access_token().access_token == new.access_token  # fresh enough: no second refresh
    assert fake.state.refresh_calls == 1


def test_concurrent_callers_share_one_refresh(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    give_token(s, fake, expires_in=60)
    results: list[str] = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            results.append(TokenStore(s).access_token().access_token)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(set(results)) == 1
    assert fake.state.refresh_calls == 1 and fake.state.refused_invalid_grant == 0


def test_a_dead_refresh_token_pauses_pushing_and_keeps_the_queue(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    tok = give_token(s, fake, expires_in=60)
    fake.state.refresh[tok["refresh_token"]]["valid"] = False
    archive_videos(s, env, 1)
    p, cat = pusher(s, clock)
    report = p.window()
    assert "draftsync auth tiktok" in report.paused
    assert list(states(cat).values()) == ["queued"]
    assert fake.state.inits == []
    (problem,) = [x for x in cat.problems() if x.kind == "push_reauth"]
    assert "draftsync auth tiktok" in problem.message
    fake.state.refresh[tok["refresh_token"]]["valid"] = True  # the owner authorised again
    give_token(s, fake)
    assert len(pusher(s, clock)[0].window().pushed) == 1
    assert not [x for x in cat.problems() if x.kind == "push_reauth"]  # cleared once pushing works


def test_a_wrong_client_secret_says_so_instead_of_asking_to_authorise_again(env: Env, fake: FakeServer,
                                                                           clock: FakeClock) -> None:  # fmt: skip
    s = push_env(env, fake)
    give_token(s, fake, expires_in=60)  # needs a refresh, which presents the client secret
    fake.state.clients["ck_test"] = "a-different-secret"
    archive_videos(s, env, 1)
    report = pusher(s, clock)[0].window()
    assert "invalid_client" in report.paused and "client_secret" in report.paused
    assert "auth tiktok" not in report.paused and "cs_test_secret_value" not in report.paused


def test_access_token_invalid_triggers_one_refresh_and_one_retry(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    tok = give_token(s, fake)
    fake.state.access[tok["access_token"]]["expires"] = 0  # revoked server-side, still "valid" locally
    archive_videos(s, env, 1)
    p, cat = pusher(s, clock)
    report = p.window()
    assert len(report.pushed) == 1 and list(states(cat).values()) == ["in_inbox"]
    assert fake.state.refresh_calls == 1


# --- the inbox flow ---------------------------------------------------------------------------------------


def test_a_window_puts_videos_in_the_inbox_exactly_once(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    vids = archive_videos(s, env, 2, pad=12_000_000)  # multi-chunk at 5 MiB chunks
    p, cat = pusher(s, clock)
    p.window()
    assert set(states(cat).values()) == {"in_inbox"}
    drafts = fake.state.completed_drafts()
    assert sorted(t.digest for t in drafts) == sorted(b3(v) for v in vids)
    assert all(t.count >= 2 for t in drafts)
    p.window()  # nothing new: nothing sent again
    assert len(fake.state.completed_drafts()) == 2 and len(fake.state.inits) == 2
    row = cat.push_rows()[0]
    assert row["remote_id"].startswith("v_inbox_file~")
    # the upload URL carries a bearer-like token: it is not kept once the upload is done
    assert all(r["upload_url"] is None for r in cat.push_rows())
    assert stat.S_IMODE(s.catalog_path.stat().st_mode) == 0o600


def test_an_archive_disk_that_goes_away_during_a_window_fails_none_of_the_videos_left(
    env: Env, fake: FakeServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    vids = archive_videos(s, env, 3)
    p, cat = pusher(s, clock)
    away = env.base / "unplugged"
    real_begin = Pusher._begin

    def begin_then_unplug(self: Pusher, item: Any) -> None:
        real_begin(self, item)
        if not away.exists():
            env.archive.rename(away)  # unplugged right after the first video went out

    monkeypatch.setattr(Pusher, "_begin", begin_then_unplug)
    report = p.window()
    assert "archive is not available" in report.waiting and report.retry_after
    assert len(fake.state.inits) == 1 and "failed" not in states(cat).values()
    assert not [k for k in Problems(cat).active_keys() if k.startswith("push_failed")]
    away.rename(env.archive)
    monkeypatch.setattr(Pusher, "_begin", real_begin)
    clock.advance(60)
    p.window()
    assert set(states(cat).values()) == {"in_inbox"}
    assert sorted(t.digest for t in fake.state.completed_drafts()) == sorted(b3(v) for v in vids)


def test_a_window_while_the_archive_disk_is_away_fails_nothing_and_sends_once_it_is_back(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    vids = archive_videos(s, env, 2)
    p, cat = pusher(s, clock)
    away = env.base / "unplugged"
    env.archive.rename(away)  # the disk is unplugged: its mount point is empty
    report = p.window()
    assert "archive is not available" in report.waiting and report.retry_after
    assert fake.state.inits == [] and not [k for k in Problems(cat).active_keys() if k.startswith("push_failed")]
    assert not env.archive.exists()  # nothing was made where the disk was
    away.rename(env.archive)
    p.window()
    assert set(states(cat).values()) == {"in_inbox"}
    assert sorted(t.digest for t in fake.state.completed_drafts()) == sorted(b3(v) for v in vids)


def test_non_conforming_videos_are_skipped_with_the_reason(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    cat = Catalog(s.catalog_path)
    ing = Ingestor(s, cat, Archive(s.archive.root, s.archive.layout))
    small = make_video(env.inbox / "tiny.mp4", seconds=3, size=(320, 240), seed=1)
    short = make_video(env.inbox / "short.mp4", seconds=1, size=(360, 640), seed=2)
    slow = make_video(env.inbox / "slow.mp4", seconds=3, size=(360, 640), fps=15, seed=3)
    bad = env.inbox / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    mkv = make_video(env.inbox / "clip.mkv", seconds=3, size=(360, 640), seed=4)
    for v in (small, short, slow, bad, mkv):
        ing.ingest(str(v), str(env.inbox))
    p, cat = pusher(s, clock)
    p.window()
    reasons = {r["reason"] for r in cat.push_rows()}
    assert set(states(cat).values()) == {"skipped"}
    assert any("picture size 320x240" in r for r in reasons) and any("under 3 s" in r for r in reasons)
    assert any("frame rate 15" in r for r in reasons) and any("not a decodable video" in r for r in reasons)
    assert any("container .mkv" in r for r in reasons)
    assert fake.state.inits == []


def test_media_problem_accepts_a_conforming_video(env: Env) -> None:
    from draftsync.catalog import VideoRecord

    ok = VideoRecord("blake3:x", 10, "a.mp4", "2026-05-01T00:00:00", "metadata", "camera",
                     {"video_codec": "h264", "fps": 30, "width": 1080, "height": 1920, "duration": 30}, None, 0, 0)  # fmt: skip
    assert media_problem(ok) is None


@pytest.mark.parametrize(
    ("status", "code", "expect_state", "inits", "ledger"),
    [
        (400, "invalid_params", "failed", 1, ["refused"]),
        (400, "invalid_param", "failed", 1, ["refused"]),
        (403, "url_ownership_unverified", "failed", 1, ["refused"]),
        # no slot until the oldest init is 24 h old: nothing more is tried in this window
        (403, "spam_risk_too_many_pending_share", "queued", 1, ["refused"]),
        # the account pauses until the minute has passed, then the same video goes in the same window
        (429, "rate_limit_exceeded", "in_inbox", 2, ["refused", "ok"]),
        # the share may exist: counted, looked up (a lost TikTok init cannot become a draft), sent again
        (500, "internal_error", "in_inbox", 2, ["unknown", "ok"]),
    ],
)
def test_each_documented_init_error(env: Env, fake: FakeServer, clock: FakeClock, status: int, code: str,
                                    expect_state: str, inits: int, ledger: list[str]) -> None:  # fmt: skip
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/inbox/video/init/", 1, status=status, body=init_body(code)))
    p, cat = pusher(s, clock)
    clock_at_start = clock.wall()
    p.window()
    (row,) = cat.push_rows()
    assert row["state"] == expect_state, row["reason"]
    assert len(init_requests(fake)) == inits
    assert [e["outcome"] for e in cat.ledger(p.account) if e["kind"] == "init"] == ledger
    if expect_state == "failed":
        assert code in row["reason"] and row["code"] == code and row["log_id"] == "LOG42"
        (problem,) = [x for x in cat.problems() if x.kind == "push_failed"]
        assert problem.key == f"push_failed:{row['hash']}" and "push retry" in problem.message
    if code == "rate_limit_exceeded":
        ((t2, _, _),) = fake.state.inits  # the one after the 429, on the (fake) service's clock
        assert t2 - clock_at_start >= 60  # the minute was waited out
    if code == "spam_risk_too_many_pending_share":
        assert row["code"] == code and "waiting" in row["reason"]
        assert p._slot().wait > 3000  # the account is blocked well beyond this window


@pytest.mark.parametrize("code", ["scope_not_authorized", "spam_risk_user_banned_from_posting"])
def test_account_level_errors_pause_pushing(env: Env, fake: FakeServer, clock: FakeClock, code: str) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/inbox/video/init/", 1, status=401 if code.startswith("scope") else 403,
                                   body=init_body(code)))  # fmt: skip
    p, cat = pusher(s, clock)
    report = p.window()
    assert report.paused and code in report.paused
    assert list(states(cat).values()) == ["queued"]
    assert any(x.kind == "push_reauth" and code in x.message for x in cat.problems())


@pytest.mark.parametrize(("reason", "state"), [("file_format_check_failed", "failed"),
                                                ("picture_size_check_failed", "failed"), ("internal", "queued")])  # fmt: skip
def test_failed_status_reasons(env: Env, fake: FakeServer, clock: FakeClock, reason: str, state: str) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.fail_reason_on_complete = reason
    p, cat = pusher(s, clock)
    report = p.window()
    (row,) = cat.push_rows()
    assert row["state"] == state and reason in row["reason"]
    if state == "queued":  # TikTok's own trouble: tried again an hour later, by a window the daemon schedules
        assert report.retry_after == 3600 and row["remote_id"] is None


def test_5xx_dropped_connections_and_latency_on_chunks_are_retried_per_chunk(env: Env, fake: FakeServer,
                                                                              clock: FakeClock) -> None:  # fmt: skip
    s = push_env(env, fake)
    give_token(s, fake)
    (v,) = archive_videos(s, env, 1, pad=16_000_000)
    fake.state.faults += [Fault("/upload/", 1, status=503), Fault("/upload/", 3, drop=True),
                          Fault("/upload/", 4, delay=0.2), Fault("/v2/post/publish/status/fetch/", 1, status=502)]  # fmt: skip
    p, cat = pusher(s, clock)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]
    (task,) = fake.state.tasks.values()
    assert task.digest == b3(v) and len(fake.state.inits) == 1
    puts = [r for r in fake.state.requests if r[0] == "PUT"]
    assert len(puts) > task.count  # some chunks went twice, the file only once


def test_an_expired_upload_url_starts_over_with_a_new_init(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    (v,) = archive_videos(s, env, 1, pad=12_000_000)
    fake.state.faults.append(Fault("/upload/", 2, status=403))
    p, cat = pusher(s, clock)
    report = p.window()
    assert list(states(cat).values()) == ["in_inbox"] and report.deferred  # started over in the same window
    assert len(fake.state.inits) == 2 and [t.digest for t in fake.state.completed_drafts()] == [b3(v)]


def test_the_pending_and_daily_caps_hold_across_windows(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, max_per_run=3, max_per_day=10)  # TikTok's cap decides, whatever the time of day
    give_token(s, fake)
    archive_videos(s, env, 8)
    for _ in range(4):
        p, cat = pusher(s, clock)
        p.window()
        cat.close()
        clock.advance(3600)
    cat = Catalog(s.catalog_path)
    counts = cat.push_counts()
    assert counts == {"in_inbox": 5, "queued": 3}
    # the fake never had to refuse: draftsync stayed inside the cap on its own
    assert len(fake.state.inits) == 5 and all(ok for _, _, ok in fake.state.inits)
    assert len(fake.state.completed_drafts()) == 5
    report = pusher(s, clock)[0].window()
    assert "5 drafts in 24 h" in report.waiting
    entries = {e.hash: e for e in queue_view(s, cat, now=clock.now())}
    turns = sorted(e.turn_at for e in entries.values() if e.state == "queued")  # type: ignore[type-var]
    assert len(turns) == 3 and all(t is not None and t > clock.wall() for t in turns)


def test_init_spacing_and_per_minute_limits_are_respected(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    """Real limits, a fake clock: the gaps are measured on the service's (fake) clock, so load cannot
    break the test and nothing sleeps for real."""
    s = push_env(env, fake, max_per_run=5, max_per_day=10)
    give_token(s, fake)
    archive_videos(s, env, 3)
    p, cat = pusher(s, clock, Limits(init_spacing=10.0, status_spacing=2.0, init_per_minute=2))
    p.window()
    assert set(states(cat).values()) == {"in_inbox"}
    times = [t for t, _, ok in fake.state.inits]
    assert len(times) == 3 and all(b - a >= 10.0 for a, b in itertools.pairwise(times))
    assert times[2] - times[0] >= 60.0  # at most two in any minute
    polls = [t for t, _ in fake.state.status_calls]
    assert len(polls) >= 3 and all(b - a >= 2.0 for a, b in itertools.pairwise(polls))


def test_a_stop_request_interrupts_a_window_at_once(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 2)
    cat = Catalog(s.catalog_path)
    p = Pusher(s, cat, clock=clock, should_stop=lambda: True)
    p.window()
    assert fake.state.inits == [] and set(states(cat).values()) == {"queued"}


# --- Post for Me (B) -------------------------------------------------------------------------------------


def test_postforme_payload_sets_the_draft_flag_for_every_tiktok_account_type() -> None:
    body = draft_payload("cap", "spc_1", "https://m/x.mp4", "draftsync-ab-1")
    assert body["platform_configurations"] == {"tiktok": {"is_draft": True}, "tiktok_business": {"is_draft": True}}
    assert body["account_configurations"] == [{"social_account_id": "spc_1", "configuration": {"is_draft": True}}]
    assert "isDraft" not in body and "is_draft" not in body
    assert body["caption"] and body["social_accounts"] == ["spc_1"] and body["external_id"] == "draftsync-ab-1"


@pytest.mark.parametrize("account", ["spc_tiktok1", "spc_biz1"])
def test_postforme_flow_lands_an_inbox_draft_for_personal_and_business_accounts(
    env: Env, fake: FakeServer, clock: FakeClock, account: str
) -> None:
    s = push_env(env, fake, backend="postforme", caption="{stem} / {label} / {date}", account=account)
    (v,) = archive_videos(s, env, 1)
    p, cat = pusher(s, clock)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]
    (body,) = fake.state.pfm_post_bodies
    assert body["caption"] == f"{v.stem} / camera / 2026-05-01"
    (post,) = fake.state.pfm_posts.values()
    assert post["kind"] == "inbox_draft"  # not published, for a business account too
    (media,) = fake.state.pfm_media.values()
    assert media["digest"] == b3(v)


def test_postforme_refuses_an_account_whose_draft_mode_it_cannot_confirm(env: Env, fake: FakeServer,
                                                                        clock: FakeClock) -> None:  # fmt: skip
    fake.state.pfm_accounts["spc_ig"] = {"id": "spc_ig", "platform": "instagram", "status": "connected"}
    s = push_env(env, fake, backend="postforme", account="spc_ig")
    archive_videos(s, env, 1)
    p, cat = pusher(s, clock)
    report = p.window()
    assert "instagram" in report.paused and "cannot confirm" in report.paused
    assert fake.state.pfm_post_bodies == [] and list(states(cat).values()) == ["queued"]


def test_postforme_stops_when_the_created_post_is_not_confirmed_a_draft(env: Env, fake: FakeServer,
                                                                       clock: FakeClock) -> None:  # fmt: skip
    fake.state.pfm_echo_configs = False  # a service that no longer echoes what it was told
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 2)
    p, cat = pusher(s, clock)
    report = p.window()
    assert "without confirming it is a TikTok draft" in report.paused
    assert len(fake.state.pfm_posts) == 1  # the second video was not sent
    assert sorted(states(cat).values()) == ["failed", "queued"]
    assert pusher(s, clock)[0].window().paused  # stays stopped until a person looks
    fake.state.pfm_echo_configs = True
    out = queue_retry(cat, None, Problems(cat))
    assert out.halt_cleared and len(out.queued) == 1
    pusher(s, clock)[0].window()
    assert set(states(cat).values()) == {"in_inbox"}


def test_postforme_never_creates_a_second_post_after_a_crash(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    p, cat = pusher(s, clock)
    p.window()
    (row,) = cat.push_rows()
    # a crash right after creating the post, before its id was stored
    cat.save_push(row["hash"], {"state": "starting", "remote_id": None})
    pusher(s, clock)[0].window()
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]


def test_postforme_bad_key_pauses(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    env.write_config(push={"enabled": True, "backend": "postforme", "only_new": False},
                     postforme={"api_base": fake.base, "api_key": "wrong", "social_account_id": "spc_tiktok1"})  # fmt: skip
    s, _ = load(str(env.config))
    archive_videos(s, env, 1)
    p, _cat = pusher(s, clock)
    report = p.window()
    assert "Invalid or expired token" in report.paused and "wrong" not in report.paused


def test_dry_run_backend_sends_and_changes_nothing_but_the_queue(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, backend="dry-run", max_per_run=2)
    archive_videos(s, env, 3)
    p, cat = pusher(s, clock)
    report = p.window()
    assert report.plan is not None and len(report.plan.now) == 2 and len(report.plan.later) == 1
    assert set(states(cat).values()) == {"queued"}
    assert not [r for r in fake.state.requests if r[0] in ("POST", "PUT")]


# --- selection ------------------------------------------------------------------------------------------


def test_only_videos_archived_after_enabling_are_queued(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, only_new=True)
    give_token(s, fake)
    archive_videos(s, env, 1, seed=900)  # the old camera roll
    cat = Catalog(s.catalog_path)
    note_enabled(s, cat)  # what `run`, `scan` and `push` do when they load this config
    note_enabled(s, cat, time.time() + 1e6)  # the first time stays
    p, cat = pusher(s, clock)
    report = p.window()
    assert cat.push_rows() == [] and "1 video(s) archived before that" in report.idle
    assert "push add" in report.idle
    archive_videos(s, env, 1, seed=901)
    assert len(p.window().pushed) == 1


def test_selection_rules_filter_by_label_and_orientation(env: Env, fake: FakeServer, clock: FakeClock) -> None:
    s = push_env(env, fake, select=[{"labels": ["tiktok"], "orientation": "portrait"}])
    give_token(s, fake)
    archive_videos(s, env, 1)  # label camera: not selected
    p, cat = pusher(s, clock)
    p.window()
    assert cat.push_rows() == []


def test_an_unknown_publish_id_on_status_restarts_the_item_once_it_stays_unknown(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults += [Fault("/v2/post/publish/status/fetch/", 1, status=400,
                                body=init_body("invalid_publish_id", "L9")) for _ in range(500)]  # fmt: skip
    p, cat = pusher(s, clock)
    start = clock.now()
    report = p.window()
    (row,) = cat.push_rows()
    assert report.deferred == [row["hash"]] and "invalid_publish_id" in (row["reason"] or "")
    assert row["state"] == "queued" and row["remote_id"] is None
    assert clock.now().wall - start.wall > machine.LOOKUP_GRACE  # given up only after the grace


def test_a_publish_id_tiktok_does_not_know_yet_is_waited_for_not_sent_again(
    env: Env, fake: FakeServer, clock: FakeClock
) -> None:
    """Right after the upload TikTok's records may lag: a new init then would be a second draft."""
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults += [Fault("/v2/post/publish/status/fetch/", 1, status=400,
                                body=init_body("invalid_publish_id", "L9")) for _ in range(2)]  # fmt: skip
    p, cat = pusher(s, clock)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"] and len(init_requests(fake)) == 1


def test_a_wrong_client_secret_is_reported_without_the_secret(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    fake.state.clients["ck_test"] = "a-different-secret"
    req = authorize_request(s)
    code = parse_redirect(httpx.get(req.url).headers["Location"], req.state)
    with pytest.raises(AuthError, match="invalid_client") as e:
        TokenStore(s).exchange(code, req.verifier, req.redirect_uri)
    assert "cs_test_secret_value" not in str(e.value) and "client_secret" in str(e.value)


# --- the daemon's service ----------------------------------------------------------------------------------


def test_the_push_service_schedules_windows_and_a_retry_with_backoff(env: Env, fake: FakeServer) -> None:
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    from draftsync.push.pusher import PushService, WindowReport
    from draftsync.runtime import Runtime
    from draftsync.supervise import Supervisor

    s = push_env(env, fake, schedule="30 9 * * 1-5")
    cat = Catalog(s.catalog_path)
    sched = BackgroundScheduler(timezone=s.push.tz())
    sched.start(paused=True)  # jobs are planned, none runs
    rt = Runtime(s, cat, Archive(s.archive.root, s.archive.layout), Problems(cat), Supervisor(), sched,
                 threading.Event())  # fmt: skip
    svc = PushService()
    svc.start(rt)
    assert {j.id for j in sched.get_jobs()} == {"push", "push-startup"}
    t0 = time.time()
    svc._after(WindowReport(retry_after=120, waiting="TikTok's token endpoint is busy"))
    first = sched.get_job("push-retry").trigger.run_date.timestamp()
    svc._after(WindowReport(retry_after=120))
    second = sched.get_job("push-retry").trigger.run_date.timestamp()
    assert 110 < first - t0 < 200 and 230 < second - t0 < 330  # a repeated obstacle backs off
    svc._after(WindowReport())  # a clean window resets the backoff
    assert svc._retries == 0 and len(sched.get_jobs()) == 3

    def broken() -> WindowReport:
        raise RuntimeError("disk I/O error")

    svc._run(broken)  # a window that crashes is a problem, and is tried again
    assert any(p.key == "push_window" and "disk I/O error" in p.message for p in cat.problems())
    assert sched.get_job("push-retry").trigger.run_date.timestamp() - time.time() > 500
    svc._run(WindowReport)
    assert not any(p.key == "push_window" for p in cat.problems())
    sched.shutdown(wait=False)


def test_an_older_catalog_is_migrated_without_losing_a_push(tmp_path: Path) -> None:
    import sqlite3

    from draftsync.catalog import _MIGRATIONS

    path = tmp_path / "catalog.db"
    db = sqlite3.connect(path)
    for v in (1, 2, 3, 4):
        db.executescript(_MIGRATIONS[v])
    db.execute("INSERT INTO meta VALUES('schema_version', '4')")
    rows = [("blake3:a", "uploading", "pid-a", "https://u/?upload_token=t", 100.0, None),  # resumable
            ("blake3:b", "uploading", None, None, 100.0, None),  # Post for Me, crashed before the id was kept
            ("blake3:c", "dry_run", "dry-run:c", None, 100.0, None),
            ("blake3:d", "in_inbox", "pid-d", "https://u/?upload_token=old", 100.0, None),
            ("blake3:e", "queued", None, None, 100.0, 400.0)]  # fmt: skip
    db.executemany("INSERT INTO pushes(hash, state, remote_id, upload_url, updated_at, next_try, queued_at) "
                   "VALUES(?,?,?,?,?,?,0)", rows)  # fmt: skip
    db.executemany("INSERT INTO push_calls(at, account, kind, ok) VALUES(?,?,?,?)",
                   [(90.0, "tiktok:u", "init", 1), (95.0, "tiktok:u", "init", 0), (96.0, "tiktok:u", "status", 1)])  # fmt: skip
    db.commit()
    db.close()
    cat = Catalog(path)
    got = {r["hash"]: r for r in cat.push_rows()}
    assert got["blake3:a"]["state"] == "uploading" and got["blake3:a"]["upload_url"]
    assert got["blake3:b"]["state"] == "starting" and got["blake3:b"]["ref"] == "blake3:b"  # looked up, not re-created
    assert got["blake3:c"]["state"] == "queued" and got["blake3:c"]["remote_id"] is None
    assert got["blake3:d"]["upload_url"] is None  # a finished upload's URL is not kept
    assert got["blake3:e"]["wait"] == 300
    # an init whose answer was never marked counts as unknown, so it keeps its slot; status calls are gone
    assert [(e["kind"], e["outcome"]) for e in cat.ledger("tiktok:u")] == [("init", "ok"), ("init", "unknown")]
