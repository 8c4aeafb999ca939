"""The offsite copy's pure decisions as tables: keys, parts, error meanings, the per-video state machine,
the bandwidth throttle, restore selection, status, and the [offsite] config."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from draftsync.config import Settings, parse_rate
from draftsync.offsite.check import choose_sample, sidecar_problem
from draftsync.offsite.plan import (
    MIB,
    ORPHAN_AGE,
    Kind,
    Outcome,
    abandoned,
    answer,
    backoff,
    classify,
    cleanup_due,
    part_size_for,
    parts,
    rel_of,
    sidecar_key,
    step,
    summarize,
    video_key,
)
from draftsync.offsite.restore import entries, excluded_by_key, key_fields, key_pattern, wanted
from draftsync.offsite.store import Remote, Throttle
from tests.conftest import Env
from tests.test_offsite import run


def test_keys_follow_the_archive_layout_under_the_prefix() -> None:
    assert video_key("backup/", "2026/05/camera/a.mp4") == "backup/2026/05/camera/a.mp4"
    assert sidecar_key("", "2026/05/camera/a.mp4") == "2026/05/camera/a.mp4.json"


@pytest.mark.parametrize(
    "prefix, key, rel",
    [
        ("backup/", "backup/2026/a.mp4", "2026/a.mp4"),
        ("", "2026/a.mp4", "2026/a.mp4"),
        ("backup/", "other/2026/a.mp4", None),  # outside the prefix
        ("backup/", "backup/../etc/passwd", None),  # would leave the restore folder
        ("backup/", "backup//a.mp4", None),
        ("backup/", "backup/./a.mp4", None),
        ("backup/", "backup/", None),
    ],
)
def test_rel_of_refuses_keys_that_would_leave_the_tree(prefix: str, key: str, rel: str | None) -> None:
    assert rel_of(prefix, key) == rel


@pytest.mark.parametrize(
    "size, wanted, part_size",
    [
        (100 * MIB, 16 * MIB, 16 * MIB),
        (100 * MIB, 1 * MIB, 5 * MIB),  # S3's smallest part
        (10_000 * 16 * MIB, 16 * MIB, 16 * MIB),  # exactly 10,000 parts
        (10_000 * 16 * MIB + 1, 16 * MIB, 17 * MIB),  # grown in MiB steps to stay within 10,000
    ],
)
def test_part_size_stays_within_s3_limits(size: int, wanted: int, part_size: int) -> None:
    assert part_size_for(size, wanted) == part_size
    assert len(parts(size, part_size)) <= 10_000


def test_parts_cover_the_file_exactly() -> None:
    ps = parts(12 * MIB + 7, 5 * MIB)
    assert ps == [(1, 0, 5 * MIB), (2, 5 * MIB, 5 * MIB), (3, 10 * MIB, 2 * MIB + 7)]
    assert parts(0, 5 * MIB) == []


def test_backoff_doubles_to_an_hour() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 8, 50)] == [30, 60, 120, 240, 3600, 3600]


@pytest.mark.parametrize(
    "status, code, kind",
    [
        (403, "AccessDenied", Kind.AUTH),
        (403, "SignatureDoesNotMatch", Kind.AUTH),
        (403, "InvalidAccessKeyId", Kind.AUTH),
        (403, "403", Kind.AUTH),  # HeadBucket has no body
        (None, "NoCredentialsError", Kind.AUTH),
        (403, "RequestTimeTooSkewed", Kind.AUTH),
        (404, "NoSuchBucket", Kind.BUCKET),
        (412, "PreconditionFailed", Kind.PRECONDITION),
        (409, "ConditionalRequestConflict", Kind.TRANSIENT),
        (404, "NoSuchUpload", Kind.NO_UPLOAD),
        (404, "NoSuchKey", Kind.NOT_FOUND),
        (404, "404", Kind.NOT_FOUND),
        (500, "InternalError", Kind.TRANSIENT),
        (503, "SlowDown", Kind.TRANSIENT),
        (429, "TooManyRequests", Kind.TRANSIENT),
        (None, "EndpointConnectionError", Kind.TRANSIENT),
        (None, "ReadTimeoutError", Kind.TRANSIENT),
        (501, "NotImplemented", Kind.REJECTED),  # a server without conditional writes: retrying will not help
        (400, "InvalidStorageClass", Kind.REJECTED),
        (400, "EntityTooLarge", Kind.REJECTED),
        (None, "SomethingNew", Kind.TRANSIENT),
    ],
)
def test_what_an_s3_error_means(status: int | None, code: str, kind: Kind) -> None:
    assert classify(status, code) is kind


NOW = 1_000_000.0


@pytest.mark.parametrize(
    "attempts, outcome, state, next_attempts, next_try, keep_upload",
    [
        (0, Outcome.STORED, "stored", 0, None, False),
        (3, Outcome.ADOPTED, "stored", 0, None, False),
        (0, Outcome.CLASH, "failed", 1, None, False),
        (0, Outcome.LOCAL_CHANGED, "failed", 1, None, False),
        (0, Outcome.LOCAL_MISSING, "failed", 1, None, False),
        (0, Outcome.REJECTED, "failed", 1, None, False),
        (0, Outcome.TRANSIENT, "pending", 1, NOW + 30, True),  # resumes the same upload later
        (2, Outcome.TRANSIENT, "pending", 3, NOW + 120, True),
        (2, Outcome.PAUSED, "pending", 2, None, True),  # credentials are not the video's fault
        (1, Outcome.STOPPED, "pending", 1, None, True),
        (1, Outcome.UPLOAD_GONE, "pending", 1, None, False),  # start a new upload
    ],
)
def test_state_machine(attempts: int, outcome: Outcome, state: str, next_attempts: int, next_try: float | None,
                       keep_upload: bool) -> None:  # fmt: skip
    s = step(attempts, outcome, NOW, "why")
    assert (s.state, s.attempts, s.next_try, s.keep_upload) == (state, next_attempts, next_try, keep_upload)
    if state == "failed":
        assert s.reason == "why"


def test_throttle_books_time_without_waiting() -> None:
    t = [100.0]
    slept: list[float] = []
    th = Throttle(1000, burst=0.5, clock=lambda: t[0], sleep=slept.append)
    assert th.delay(500) == 0  # within the burst
    assert th.delay(1000) == pytest.approx(1.0)
    t[0] += 10  # idle time does not pile up beyond the burst
    assert th.delay(500) == 0
    th.take(1000)
    assert slept == [pytest.approx(1.0)]


def test_restore_pairs_videos_with_sidecars_and_skips_metadata() -> None:
    objs = [Remote(k, 1, "e") for k in ("p/2026/a.mp4", "p/2026/a.mp4.json", "p/2026/b.mov", "p/.thumbs/x.jpg",
                                           "p/2026/.draftsync-1234.part", "q/c.mp4", "p/../evil.mp4")]  # fmt: skip
    got = [(e.rel, e.sidecar is not None) for e in entries(objs, "p/")]
    assert got == [("2026/a.mp4", True), ("2026/b.mov", False)]


@pytest.mark.parametrize(
    "side, label, since, ok",
    [
        (None, None, None, True),
        (None, "tiktok", None, False),  # cannot tell without a sidecar
        ({"label": "tiktok", "capture_time": "2026-05-01T10:00:00+00:00"}, "tiktok", None, True),
        ({"label": "camera", "capture_time": "2026-05-01T10:00:00+00:00"}, "tiktok", None, False),
        ({"label": "camera", "capture_time": "2026-05-01T10:00:00+00:00"}, None, "2026-05-01", True),
        ({"label": "camera", "capture_time": "2026-04-30T23:59:59+00:00"}, None, "2026-05-01", False),
    ],
)
def test_restore_filters(side: dict[str, str] | None, label: str | None, since: str | None, ok: bool) -> None:
    assert wanted(side, label, since) is ok


def test_sample_is_a_fraction_with_at_least_one() -> None:
    hs = [str(i) for i in range(10)]
    rng = random.Random(1)
    assert len(choose_sample(hs, 0.25, rng)) == 3
    assert len(choose_sample(hs, 0.01, rng)) == 1
    assert choose_sample(hs, 1.0, rng) == set(hs) and choose_sample([], 0.5, rng) == set()


@pytest.mark.parametrize(
    "meta_video, meta_blake3, content, described, says",
    [
        ("blake3:v", "blake3:s", None, None, ""),  # HEAD only: the metadata names the video
        ("blake3:v", "blake3:s", "blake3:s", "blake3:v", ""),  # downloaded: content and JSON agree
        (None, None, None, None, "it describes no video (it has no draftsync metadata), not blake3:v"),
        ("blake3:w", "blake3:s", None, None, "it describes blake3:w, not blake3:v"),
        ("blake3:v", "blake3:s", "blake3:x", "blake3:v", "its content hashes to blake3:x, its metadata says blake3:s"),
        ("blake3:v", "blake3:s", "blake3:s", "blake3:w", "its JSON names blake3:w, not blake3:v"),
        ("blake3:v", "blake3:s", "blake3:s", "", "its JSON names no hash, not blake3:v"),
    ],
)
def test_what_is_wrong_with_a_sidecar_object(
    meta_video: str | None, meta_blake3: str | None, content: str | None, described: str | None, says: str
) -> None:
    assert sidecar_problem("blake3:v", meta_video, meta_blake3, content, described) == says


def test_status_counts_backlog_and_bytes_left() -> None:
    counts = {"videos": {"stored": 3, "pending": 2, "failed": 1}, "bytes": {"stored": 30, "pending": 2048,
              "failed": 1024}, "sent_in_parts": 1000}  # fmt: skip
    s = summarize(counts, {"at": 1.0, "message": "boom"}, None, last_ok=2.0)  # the store answered since
    assert (s["backlog"], s["bytes_left"], s["failed"], s["stored"]) == (3, 2072, 1, 3)
    assert s["summary"] == "3 of 6 videos copied; 3 to copy (2.0 KiB left), 1 failed"
    failing = summarize(counts, {"at": 3.0, "message": "connection refused"}, None, last_ok=2.0)
    assert failing["summary"].endswith("(2.0 KiB left), 1 failed; last error: connection refused")
    done = summarize({"videos": {"stored": 2}, "bytes": {"stored": 10}, "sent_in_parts": 0}, None, "no bucket")
    assert done["summary"] == "2 of 2 videos copied; nothing left to copy; PAUSED: no bucket"


@pytest.mark.parametrize(
    "text, rate",
    [("0", 0), ("800KB", 800_000), ("8MiB/s", 8 * MIB), ("1.5 MB", 1_500_000), ("2000", 2000)],
)
def test_bandwidth_limit_units(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


def test_offsite_config_derives_bucket_and_prefix() -> None:
    o = Settings(offsite={"url": "s3://my-videos/home/server/"}).offsite  # type: ignore[arg-type]
    assert (o.enabled, o.bucket, o.prefix, o.schedule) == (True, "my-videos", "home/server/", "continuous")
    assert Settings(offsite={"url": "s3://my-videos"}).offsite.prefix == ""  # type: ignore[arg-type]
    assert not Settings().offsite.enabled


@pytest.mark.parametrize(
    "body, expected",
    [
        ('url = "b2://x/y"', "offsite.url = 'b2://x/y': use s3://BUCKET or s3://BUCKET/PREFIX"),
        ('url = "s3://A_B"', "is not a bucket name"),
        ('url = "s3://ok-bucket"\nschedule = "every hour"', "offsite.schedule = 'every hour'"),
        ('url = "s3://ok-bucket"\nbandwidth_limit = "fast"', "offsite.bandwidth_limit = 'fast': give bytes per second"),
        ('url = "s3://ok-bucket"\nendpoint_url = "minio:9000"', "use http(s)://HOST[:PORT]"),
        ('url = "s3://ok-bucket"\naccess_key_id = "AKIA"', "access_key_id needs secret_access_key_file"),
    ],
)
def test_bad_offsite_config_exits_2_naming_the_key(env: Env, body: str, expected: str) -> None:
    env.config.write_text(env.config.read_text() + "\n[offsite]\n" + body + "\n")
    code, _, err = run(env, "status")
    assert code == 2 and expected in err and "Traceback" not in err


def test_secret_is_never_echoed(env: Env, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value-never-shown\n")
    env.config.write_text(env.config.read_text() + f'\n[offsite]\nurl = "s3://ok-bucket"\nsecret_access_key_file = '
                          f'"{secret}"\nconcurrency = 0\n')  # fmt: skip
    code, out, err = run(env, "status")
    assert code == 2 and "s3cr3t" not in out + err
    env.config.write_text(env.config.read_text().replace("concurrency = 0", 'access_key_id = "AKIA"'))
    code, out, err = run(env, "config", "show")
    assert code == 0 and "s3cr3t" not in out + err and "[offsite]" in out


def test_help_status_and_scan_do_not_load_boto3(env: Env) -> None:
    env.config.write_text(env.config.read_text() + '\n[offsite]\nurl = "s3://ok-bucket"\n')
    code = (
        "import sys; from draftsync import cli; "
        f"cli.main(['--config', {str(env.config)!r}, 'status']); cli.main(['--config', {str(env.config)!r}, 'scan']);"
        "print('LOADED' if 'boto3' in sys.modules or 'botocore' in sys.modules else 'CLEAN')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().endswith("CLEAN"), r.stdout + r.stderr


# --- how a store's answer reads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "detail", "expected"),
    [
        (403, "403", "Forbidden", "HTTP 403: Forbidden"),  # HeadBucket: no body, the code is the status again
        (403, "AccessDenied", "Access Denied", "HTTP 403 AccessDenied: Access Denied"),
        (None, "EndpointConnectionError", 'Could not connect to "http://x"', 'EndpointConnectionError: Could not connect to "http://x"'),
        (503, "SlowDown", "SlowDown", "HTTP 503 SlowDown"),
        (None, "", "", "no answer"),
    ],
)  # fmt: skip
def test_a_store_answer_says_each_thing_once(status: int | None, code: str, detail: str, expected: str) -> None:
    assert answer(status, code, detail) == expected


# --- which multipart uploads draftsync may abort -------------------------------------------------------

T = 10 * 86400.0
OLD = T - ORPHAN_AGE - 1


@pytest.mark.parametrize(
    ("upload", "prefix", "expected"),
    [
        (("home/2024/01/camera/a.mp4", "u1", OLD), "home/", True),  # under draftsync's own prefix, a day old
        (("home/left/behind.mp4", "u1", OLD), "home/", True),  # any key under a non-empty prefix is ours
        (("home/2024/01/camera/a.mp4", "u1", T - 60), "home/", False),  # started a minute ago: maybe running
        (("home/2024/01/camera/a.mp4", "known", OLD), "home/", False),  # recorded: draftsync resumes it
        (("other/x.bin", "u1", OLD), "home/", False),  # outside the prefix
        (("2024/01/camera/a.mp4", "u1", OLD), "", True),  # empty prefix: the key of a catalogued video
        (("backups/db.tar", "u1", OLD), "", False),  # empty prefix: another tool's upload, never touched
        (("2024/01/camera/b.mp4", "u1", OLD), "", False),  # empty prefix: a key no catalogued video has
        (("home/a.mp4", "u1", 0.0), "home/", False),  # no start time: cannot tell its age
    ],
)  # fmt: skip
def test_only_uploads_draftsync_started_and_abandoned_are_aborted(upload: tuple[str, str, float], prefix: str,
                                                                    expected: bool) -> None:  # fmt: skip
    ours = {prefix + "2024/01/camera/a.mp4"}
    assert abandoned([upload], {"known"}, ours, prefix, T) == ([upload[:2]] if expected else [])


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [(None, T, True), (T - 3600, T, False), (T - 86400, T, True), (T + 3600, T, True)],
)
def test_abandoned_uploads_are_looked_for_at_most_once_a_day(last: float | None, now: float, expected: bool) -> None:
    assert cleanup_due(last, now) is expected  # a clock set back does not stop the clean-up for good


# --- restore's selection by key -----------------------------------------------------------------------

LAYOUT = "{year}/{month}/{label}/{date}_{time}_{hash8}{ext}"


@pytest.mark.parametrize(
    ("layout", "rel", "expected"),
    [
        (LAYOUT, "2024/03/camera/2024-03-05_101500_abcdef12.mp4", {"year": "2024", "month": "03", "label": "camera"}),
        (LAYOUT, "camera/old-layout.mp4", {}),  # written under another layout: the sidecar decides
        (LAYOUT, "2024/13/camera/x.mp4", {}),  # not a month
        ("{label}/{year}-{month}/{stem}{ext}", "tiktok/2024-03/a.mp4", {"label": "tiktok"}),  # shared folder: no month
        ("{stem}_{hash8}{ext}", "a_abcdef12.mp4", {}),  # nothing in folders
    ],
)  # fmt: skip
def test_a_key_shows_year_month_and_label_only_when_it_fits_the_layout(layout: str, rel: str,
                                                                      expected: dict[str, str]) -> None:  # fmt: skip
    assert key_fields(key_pattern(layout), rel) == expected


@pytest.mark.parametrize(
    ("fields", "label", "since", "excluded"),
    [
        ({"year": "2024", "month": "03", "label": "camera"}, "tiktok", None, True),
        ({"year": "2024", "month": "03", "label": "camera"}, "camera", None, False),
        ({"year": "2024", "month": "03", "label": "my_clip"}, "my:clip", None, False),  # the folder is sanitized
        ({"year": "2024", "month": "03"}, None, "2024-04-02", True),  # the whole month is before
        ({"year": "2024", "month": "03"}, None, "2024-04-01", False),  # 31 March could be 1 April elsewhere
        ({"year": "2024", "month": "12"}, None, "2025-01-02", True),  # across the year
        ({"year": "2024", "month": "03"}, None, "2024-03-20", False),  # the sidecar's date decides
        ({}, "tiktok", "2030-01-01", False),  # the key says nothing: the sidecar decides
    ],
)  # fmt: skip
def test_the_key_alone_leaves_out_only_what_cannot_match(fields: dict[str, str], label: str | None,
                                                         since: str | None, excluded: bool) -> None:  # fmt: skip
    assert excluded_by_key(fields, label, since) is excluded
