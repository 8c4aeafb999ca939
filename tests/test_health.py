"""health: the verdict status --check and /healthz share, as a table."""

from __future__ import annotations

import pytest

from draftsync.health import evaluate
from draftsync.problems import Problem

NOW = 10_000.0
ALIVE = {"pid": 42, "heartbeat": NOW - 5, "dead_loops": []}
MISSING = Problem("archive_missing", "archive_missing", "the archive disk /mnt/usb is not mounted")
PUSH = Problem("push_failed:x", "push_failed", "a push failed for good", "warning")


@pytest.mark.parametrize(
    ("daemon", "holder", "problems", "code", "reason"),
    [
        (ALIVE, 42, [], 0, None),
        (ALIVE, None, [], 3, "not running"),  # lock free: stopped or crashed
        (ALIVE, 77, [], 3, "not running"),  # someone else (scan) holds the lock
        ({}, 42, [], 3, "not running"),
        ({**ALIVE, "heartbeat": NOW - 300}, 42, [], 1, "no heartbeat for 300 s"),
        ({**ALIVE, "dead_loops": ["settle: thread ended"]}, 42, [], 1, "loop stopped: settle: thread ended"),
        (ALIVE, 42, [MISSING], 1, "not mounted"),
        (ALIVE, 42, [PUSH], 0, None),  # reported, but restarting would not help
    ],
)
def test_health_verdicts(daemon: dict, holder: int | None, problems: list[Problem], code: int,
                         reason: str | None) -> None:  # fmt: skip
    h = evaluate(daemon, holder, problems, NOW)
    assert h.exit_code == code
    if reason is None:
        assert h.reasons == []
    else:
        assert any(reason in r for r in h.reasons), h.reasons


def test_non_blocking_problems_are_warnings() -> None:
    h = evaluate(ALIVE, 42, [PUSH], NOW)
    assert h.healthy and h.warnings == ["a push failed for good"]
    assert h.to_dict()["status"] == "ok"


def test_a_full_state_disk_explains_a_silent_heartbeat() -> None:
    h = evaluate(ALIVE, 42, [], NOW, state_free=4096)
    assert h.exit_code == 1 and any("state disk is full" in r for r in h.reasons)
    assert evaluate(ALIVE, 42, [], NOW, state_free=10 << 20).healthy
