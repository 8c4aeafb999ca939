"""problems: a standing problem is told once until it clears, then told cleared; kept in the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from draftsync.catalog import Catalog
from draftsync.problems import Change, Problems


def test_a_problem_is_reported_once_until_it_clears(tmp_path: Path) -> None:
    heard: list[Change] = []
    clock = iter(range(100, 200)).__next__
    ps = Problems(Catalog(tmp_path / "c.db"), clock=lambda: float(clock()))
    ps.subscribe(heard.append)
    assert ps.report("archive_missing", "archive_missing", "the archive disk is not mounted")
    for _ in range(50):
        assert not ps.report("archive_missing", "archive_missing", "the archive disk is not mounted")
    assert [c.action for c in heard] == ["raised"]
    assert ps.report("archive_missing", "archive_missing", "the marker is missing")  # a new message is news
    assert [p.message for p in ps.active()] == ["the marker is missing"]
    assert ps.active()[0].since == 100.0  # still the same problem since it first appeared
    assert ps.resolve("archive_missing")
    assert not ps.resolve("archive_missing")
    assert [c.action for c in heard] == ["raised", "raised", "cleared"]
    assert heard[-1].problem.kind == "archive_missing" and ps.active() == []


def test_problems_survive_in_the_catalog_for_other_processes(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.db")
    Problems(cat).report("root_missing:/srv/a", "root_missing", "/srv/a is missing", severity="warning")
    other = Problems(Catalog(tmp_path / "c.db"))
    assert [(p.key, p.severity) for p in other.active()] == [("root_missing:/srv/a", "warning")]
    other.resolve_prefix("root_missing:")
    assert Catalog(tmp_path / "c.db").problems() == []


def test_a_failing_listener_or_catalog_never_hides_the_problem(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c.db")
    ps = Problems(cat)

    def broken(_: Change) -> None:
        raise RuntimeError("notifier down")

    ps.subscribe(broken)
    cat.close()  # writes now fail, as on a full state disk
    assert ps.report("state_full", "state_full", "the state disk is full")
    assert [p.key for p in ps.active()] == ["state_full"]


def test_notices_are_passed_on_but_do_not_stand(tmp_path: Path) -> None:
    heard: list[Change] = []
    ps = Problems(Catalog(tmp_path / "c.db"))
    ps.subscribe(heard.append)
    ps.notice("watcher_restarted", "the watcher of /srv/a died and was restarted")
    assert [c.action for c in heard] == ["notice"] and ps.active() == []


def test_unknown_kinds_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown problem kind"):
        Problems().report("x", "no-such-kind", "x")
