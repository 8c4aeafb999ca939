"""push: chunk arithmetic, OAuth and tokens, each documented error, faults, caps, Post for Me payloads —
all against the fake APIs over real sockets with the real httpx client."""

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
from draftsync.catalog import Catalog
from draftsync.config import Settings, load
from draftsync.errors import AuthError
from draftsync.ingest import Ingestor
from draftsync.push.auth import TokenStore, authorize_request, challenge_for, new_verifier, parse_redirect
from draftsync.push.postforme import draft_payload
from draftsync.push.queue import Limits, Pusher, media_problem
from draftsync.push.tiktok import MAX_CHUNK, MAX_CHUNKS, MAX_FINAL_CHUNK, MAX_VIDEO, MIN_CHUNK, chunk_plan, chunk_range
from tests.conftest import Env, b3, make_video
from tests.fakeapi import FakeServer, Fault, _chunk_problem, tiktok_config

FAST = Limits(init_spacing=0.0, status_spacing=0.0)

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


def push_env(env: Env, fake: FakeServer, backend: str = "tiktok", **push: Any) -> Settings:
    env.write_config(
        push={"enabled": True, "backend": backend, "only_new": False, "max_per_run": 5, "max_per_day": 5, **push},
        tiktok=tiktok_config(fake.base, str(env.state / "tiktok-token.json"), chunk_size=MIN_CHUNK),
        postforme={"api_base": fake.base, "api_key": "pfm_test_key", "social_account_id": "spc_tiktok1"},
    )
    s, _ = load(str(env.config))
    return s


def give_token(s: Settings, fake: FakeServer, **kw: Any) -> dict[str, Any]:
    tok = fake.issue_token(**kw)
    s.token_path.parent.mkdir(parents=True, exist_ok=True)
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


def pusher(s: Settings, limits: Limits = FAST) -> tuple[Pusher, Catalog]:
    cat = Catalog(s.catalog_path)
    return Pusher(s, cat, limits=limits, sleep=lambda x: time.sleep(min(x, 0.05))), cat


def states(cat: Catalog) -> dict[str, str]:
    return {r["hash"]: r["state"] for r in cat.push_rows()}


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


def test_a_dead_refresh_token_pauses_pushing_and_keeps_the_queue(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    tok = give_token(s, fake, expires_in=60)
    fake.state.refresh[tok["refresh_token"]]["valid"] = False
    archive_videos(s, env, 1)
    p, cat = pusher(s)
    report = p.window()
    assert "draftsync auth tiktok" in report.paused
    assert list(states(cat).values()) == ["queued"]
    assert fake.state.inits == []
    assert "draftsync auth tiktok" in cat.get_meta("push_paused")  # type: ignore[operator]


def test_access_token_invalid_triggers_one_refresh_and_one_retry(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    tok = give_token(s, fake)
    fake.state.access[tok["access_token"]]["expires"] = 0  # revoked server-side, still "valid" locally
    archive_videos(s, env, 1)
    p, cat = pusher(s)
    report = p.window()
    assert len(report.pushed) == 1 and list(states(cat).values()) == ["in_inbox"]
    assert fake.state.refresh_calls == 1


# --- the inbox flow ---------------------------------------------------------------------------------------


def test_a_window_puts_videos_in_the_inbox_exactly_once(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    vids = archive_videos(s, env, 2, pad=12_000_000)  # multi-chunk at 5 MiB chunks
    p, cat = pusher(s)
    p.window()
    assert set(states(cat).values()) == {"in_inbox"}
    drafts = fake.state.completed_drafts()
    assert sorted(t.digest for t in drafts) == sorted(b3(v) for v in vids)
    assert all(t.count >= 2 for t in drafts)
    p.window()  # nothing new: nothing sent again
    assert len(fake.state.completed_drafts()) == 2 and len(fake.state.inits) == 2
    row = cat.push_rows()[0]
    assert row["remote_id"].startswith("v_inbox_file~")


def test_non_conforming_videos_are_skipped_with_the_reason(env: Env, fake: FakeServer) -> None:
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
    p, cat = pusher(s)
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
    ("status", "code", "expect_state", "reason_part"),
    [
        (400, "invalid_params", "failed", "invalid_params"),
        (400, "invalid_param", "failed", "invalid_param"),
        (403, "spam_risk_too_many_pending_share", "queued", "deferred"),
        (429, "rate_limit_exceeded", "queued", "deferred"),
        (500, "internal_error", "queued", "will retry"),
        (403, "url_ownership_unverified", "failed", "url_ownership_unverified"),
    ],
)
def test_each_documented_init_error(env: Env, fake: FakeServer, status: int, code: str, expect_state: str,
                                    reason_part: str) -> None:  # fmt: skip
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/inbox/video/init/", 1, status=status,
                                   body={"data": {}, "error": {"code": code, "message": "m", "log_id": "LOG42"}}))  # fmt: skip
    p, cat = pusher(s)
    p.window()
    (row,) = cat.push_rows()
    assert row["state"] == expect_state and reason_part in row["reason"]
    assert row["code"] == code and row["log_id"] == "LOG42"
    if expect_state == "queued":
        assert row["next_try"] and row["next_try"] > time.time()
    assert fake.state.completed_drafts() == []
    if code == "spam_risk_too_many_pending_share":
        budget = p.budget().summary()
        assert budget["next_slot"] and budget["next_slot"] > time.time() + 1800


@pytest.mark.parametrize("code", ["scope_not_authorized", "spam_risk_user_banned_from_posting"])
def test_account_level_errors_pause_pushing(env: Env, fake: FakeServer, code: str) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/inbox/video/init/", 1, status=401 if code.startswith("scope") else 403,
                                   body={"data": {}, "error": {"code": code, "message": "", "log_id": "L"}}))  # fmt: skip
    p, cat = pusher(s)
    report = p.window()
    assert report.paused and code in report.paused
    assert list(states(cat).values()) == ["queued"]


@pytest.mark.parametrize(("reason", "state"), [("file_format_check_failed", "failed"),
                                                ("picture_size_check_failed", "failed"), ("internal", "queued")])  # fmt: skip
def test_failed_status_reasons(env: Env, fake: FakeServer, reason: str, state: str) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.fail_reason_on_complete = reason
    p, cat = pusher(s)
    p.window()
    (row,) = cat.push_rows()
    assert row["state"] == state and reason in row["reason"]


def test_5xx_dropped_connections_and_latency_on_chunks_are_retried_per_chunk(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    (v,) = archive_videos(s, env, 1, pad=16_000_000)
    fake.state.faults += [Fault("/upload/", 1, status=503), Fault("/upload/", 3, drop=True),
                          Fault("/upload/", 4, delay=0.5), Fault("/v2/post/publish/status/fetch/", 1, status=502)]  # fmt: skip
    p, cat = pusher(s)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]
    (task,) = fake.state.tasks.values()
    assert task.digest == b3(v) and len(fake.state.inits) == 1
    puts = [r for r in fake.state.requests if r[0] == "PUT"]
    assert len(puts) > task.count  # some chunks went twice, the file only once


def test_an_expired_upload_url_starts_over_with_a_new_init(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    (v,) = archive_videos(s, env, 1, pad=12_000_000)
    fake.state.faults.append(Fault("/upload/", 2, status=403))
    p, cat = pusher(s)
    p.window()
    (row,) = cat.push_rows()
    assert row["state"] == "queued" and row["remote_id"] is None  # dead upload: a new init, a bit later
    assert row["next_try"] > time.time()
    cat.update_push(row["hash"], next_try=time.time() - 1)  # that later has come
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]
    assert len(fake.state.inits) == 2 and [t.digest for t in fake.state.completed_drafts()] == [b3(v)]


def test_the_pending_and_daily_caps_hold_across_windows(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, max_per_run=3, max_per_day=5)
    give_token(s, fake)
    archive_videos(s, env, 8)
    for _ in range(4):
        p, cat = pusher(s)
        p.window()
        cat.close()
    ok_inits = [x for x in fake.state.inits if x[2]]
    assert len(ok_inits) == 5 and len(fake.state.completed_drafts()) == 5
    assert not any(r[1].endswith("/init/") for r in fake.state.requests[5 * 2 :] if r[0] == "POST" and False)
    cat = Catalog(s.catalog_path)
    counts = {}
    for r in cat.push_rows():
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    assert counts == {"in_inbox": 5, "queued": 3}
    assert all("waiting for a slot" in (r["reason"] or "") for r in cat.push_rows(("queued",)))
    # the fake never had to refuse: draftsync stayed inside the cap on its own
    assert len(fake.state.inits) == 5


def test_init_spacing_and_per_minute_limits_are_respected(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, max_per_run=3)
    give_token(s, fake)
    archive_videos(s, env, 3)
    cat = Catalog(s.catalog_path)
    p = Pusher(s, cat, limits=Limits(init_spacing=1.0, status_spacing=0.2))  # real sleeps here
    p.window()
    times = [t for t, _, ok in fake.state.inits]
    assert len(times) == 3 and all(b - a >= 0.95 for a, b in itertools.pairwise(times))
    polls = [t for t, _ in fake.state.status_calls]
    assert all(b - a >= 0.18 for a, b in itertools.pairwise(polls))


# --- Post for Me (B) -------------------------------------------------------------------------------------


def test_postforme_payload_puts_is_draft_in_the_right_place() -> None:
    body = draft_payload("cap", "spc_1", "https://m/x.mp4", "blake3:ab")
    assert body["platform_configurations"] == {"tiktok": {"is_draft": True}}
    assert body["platform_configurations"]["tiktok"]["is_draft"] is True
    assert "isDraft" not in body and "is_draft" not in body
    assert body["caption"] and body["social_accounts"] == ["spc_1"]


def test_postforme_flow_lands_an_inbox_draft(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, backend="postforme", caption="{stem} / {label} / {date}")
    (v,) = archive_videos(s, env, 1)
    p, cat = pusher(s)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]
    (body,) = fake.state.pfm_post_bodies
    assert body["platform_configurations"]["tiktok"]["is_draft"] is True and "isDraft" not in body
    assert body["caption"] == f"{v.stem} / camera / 2026-05-01"
    (post,) = fake.state.pfm_posts.values()
    assert post["kind"] == "inbox_draft"
    (media,) = fake.state.pfm_media.values()
    assert media["digest"] == b3(v)


def test_postforme_never_creates_a_second_post_after_a_crash(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, backend="postforme")
    archive_videos(s, env, 1)
    p, cat = pusher(s)
    p.window()
    (row,) = cat.push_rows()
    # a crash right after creating the post, before its id was stored
    cat.update_push(row["hash"], state="uploading", remote_id=None)
    p.window()
    assert len(fake.state.pfm_posts) == 1 and list(states(cat).values()) == ["in_inbox"]


def test_postforme_bad_key_pauses(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, backend="postforme")
    env.write_config(push={"enabled": True, "backend": "postforme", "only_new": False},
                     postforme={"api_base": fake.base, "api_key": "wrong", "social_account_id": "spc_tiktok1"})  # fmt: skip
    s, _ = load(str(env.config))
    archive_videos(s, env, 1)
    p, _cat = pusher(s)
    report = p.window()
    assert "Invalid or expired token" in report.paused and "wrong" not in report.paused


def test_dry_run_backend_sends_nothing(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, backend="dry-run")
    archive_videos(s, env, 2)
    p, cat = pusher(s)
    p.window()
    assert set(states(cat).values()) == {"dry_run"}
    assert not [r for r in fake.state.requests if r[0] in ("POST", "PUT")]


# --- selection ------------------------------------------------------------------------------------------


def test_only_videos_first_seen_after_enabling_are_queued(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, only_new=True)
    give_token(s, fake)
    archive_videos(s, env, 1, seed=900)  # the old camera roll
    p, cat = pusher(s)
    p.window()  # enabling happens here
    assert cat.push_rows() == []
    time.sleep(0.01)
    archive_videos(s, env, 1, seed=901)
    p.window()
    assert list(states(cat).values()) == ["in_inbox"]


def test_selection_rules_filter_by_label_and_orientation(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake, select=[{"labels": ["tiktok"], "orientation": "portrait"}])
    give_token(s, fake)
    archive_videos(s, env, 1)  # label camera: not selected
    p, cat = pusher(s)
    p.window()
    assert cat.push_rows() == []


def test_an_unknown_publish_id_on_status_restarts_the_item(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    give_token(s, fake)
    archive_videos(s, env, 1)
    fake.state.faults.append(Fault("/v2/post/publish/status/fetch/", 1, status=400,
                                   body={"data": {}, "error": {"code": "invalid_publish_id", "message": "", "log_id": "L9"}}))  # fmt: skip
    p, cat = pusher(s)
    p.window()
    (row,) = cat.push_rows()
    assert row["state"] == "queued" and row["remote_id"] is None and "restarting" in row["reason"]


def test_a_wrong_client_secret_is_reported_without_the_secret(env: Env, fake: FakeServer) -> None:
    s = push_env(env, fake)
    fake.state.clients["ck_test"] = "a-different-secret"
    req = authorize_request(s)
    code = parse_redirect(httpx.get(req.url).headers["Location"], req.state)
    with pytest.raises(AuthError, match="invalid_client") as e:
        TokenStore(s).exchange(code, req.verifier, req.redirect_uri)
    assert "cs_test_secret_value" not in str(e.value)
