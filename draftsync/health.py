"""Health: is the daemon running, and is it doing its job? One pure decision, read the same way by
`status --check`, `status`'s exit code and the web `/healthz`.

Healthy means: the daemon holds its lock and beats, every loop is alive, and nothing stands that stops
videos from being archived (archive missing or full, state disk full, a dead loop). Other problems
(a push that failed, a watched folder that is missing) are reported alongside but do not make the
daemon unhealthy: restarting it would not help.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from draftsync.problems import Problem

if TYPE_CHECKING:
    from draftsync.catalog import Catalog
    from draftsync.config import Settings

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_NOT_RUNNING = 3

# Problems that stop archiving: the daemon is not doing its job while one stands.
BLOCKING_KINDS = frozenset({"archive_missing", "archive_full", "state_full", "loop_dead"})
# The daemon beats every few seconds; this much silence means it is hung (or its catalog writes fail).
HEARTBEAT_STALE = 90.0


@dataclass
class Health:
    running: bool
    healthy: bool
    reasons: list[str] = field(default_factory=list)  # why not healthy
    warnings: list[str] = field(default_factory=list)  # standing problems that do not block archiving
    heartbeat_age: float | None = None

    @property
    def exit_code(self) -> int:
        if not self.running:
            return EXIT_NOT_RUNNING
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else ("not running" if not self.running else "unhealthy"),
            "running": self.running, "healthy": self.healthy, "reasons": self.reasons,
            "warnings": self.warnings, "heartbeat_age": self.heartbeat_age,
        }  # fmt: skip


# Below this much free space on the state disk the catalog cannot be written (SQLite needs room for its WAL).
STATE_FREE_MIN = 1 << 20


def evaluate(daemon: dict[str, Any], lock_holder: int | None, problems: list[Problem], now: float, *,
             state_free: int | None = None) -> Health:  # fmt: skip
    """The verdict from the daemon's last heartbeat record, who holds the state lock, and the problems.

    `state_free` (bytes free on the state disk) explains a silent heartbeat: a daemon that cannot write
    its catalog cannot record its problems there either."""
    pid = daemon.get("pid")
    running = lock_holder is not None and pid is not None and lock_holder == pid
    beat = daemon.get("heartbeat")
    age = (now - float(beat)) if running and beat else None
    if not running:
        return Health(False, False, ["the daemon is not running"], [p.message for p in problems], None)
    reasons: list[str] = []
    if age is None or age > HEARTBEAT_STALE:
        reasons.append(f"no heartbeat for {age:.0f} s" if age is not None else "no heartbeat recorded")
    reasons += [f"loop stopped: {d}" for d in daemon.get("dead_loops") or [] if "loop_dead" not in d]
    if state_free is not None and state_free < STATE_FREE_MIN and not any(p.kind == "state_full" for p in problems):
        reasons.append(f"the state disk is full ({state_free // 1024} KiB free): the catalog cannot be written")
    warnings = []
    for p in problems:
        if p.kind in BLOCKING_KINDS and p.severity == "error":
            reasons.append(p.message)
        else:
            warnings.append(p.message)
    return Health(True, not reasons, reasons, warnings, age)


def read(settings: Settings, catalog: Catalog, now: float) -> Health:
    """Health as another process (status, the web page) sees it."""
    from draftsync.lock import StateLock

    raw = catalog.get_meta("daemon")
    try:
        daemon = json.loads(raw) if raw else {}
    except ValueError:
        daemon = {}
    import os

    try:
        st = os.statvfs(settings.state.dir)
        free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    return evaluate(daemon, StateLock(settings.state.dir).holder(), catalog.problems(), now, state_free=free)
