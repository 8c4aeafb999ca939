"""settle: which names are temp files, and when a file counts as completely written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from draftsync.settle import IgnoreRules, RawEvent, Settler, Version, is_temp_name, normalise, unchanged

SYNC_TOOL_TEMP_NAMES = [
    ".syncthing.VID_20260501_183000.mp4.tmp",  # Syncthing
    "~syncthing~VID_1.mp4.tmp",
    ".VID_1.mp4.Xy12ab",  # rsync
    "VID_1.mp4.partial",  # rclone
    "VID_1.mp4.part",  # Nextcloud / ownCloud
    ".~lock.VID_1.mp4#",
    "VID_1.mp4.!sync",  # Resilio
    "VID_1.mp4.crdownload",
    "VID_1.mp4.tmp",
    ".DS_Store",
]


@pytest.mark.parametrize("name", SYNC_TOOL_TEMP_NAMES)
def test_sync_tool_temp_names_are_ignored(name: str) -> None:
    assert is_temp_name(name)


@pytest.mark.parametrize("name", ["VID_20260501_183000.mp4", "PXL_20260501_183000123.mp4", "clip.MOV", "ü é 视频.mp4"])
def test_final_names_are_not_temp(name: str) -> None:
    assert not is_temp_name(name)


names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=40)


@given(names)
def test_rclone_nextcloud_resilio_suffixes_are_always_temp(stem: str) -> None:
    for suffix in (".partial", ".part", ".!sync", ".crdownload", ".tmp"):
        assert is_temp_name(stem + suffix)


@given(names)
def test_rsync_and_syncthing_temp_forms_are_always_temp(name: str) -> None:
    assert is_temp_name("." + name + ".AbC123")
    assert is_temp_name(".syncthing." + name + ".tmp")


def test_ignore_rules_cover_folders_extensions_and_extra_patterns() -> None:
    rules = IgnoreRules(frozenset({".mp4", ".mov"}), ("*-thumb*",))
    assert rules.ignore_dir("@eaDir") and rules.ignore_dir(".stfolder") and rules.ignore_dir(".git")
    assert not rules.ignore_dir("TikTok")
    assert rules.wanted_file("a.MP4") and not rules.wanted_file("a.jpg") and not rules.wanted_file("a-thumb.mp4")
    assert rules.wanted_path("/in", "/in/TikTok/a.mp4")
    assert not rules.wanted_path("/in", "/in/@eaDir/a.mp4/SYNOFILE_THUMB.mp4")
    assert not rules.wanted_path("/in", "/elsewhere/a.mp4")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def file(tmp_path: Path) -> Path:
    p = tmp_path / "v.mp4"
    p.write_bytes(b"x" * 10)
    return p


def test_a_quiet_file_is_ready_after_settle_seconds(file: Path) -> None:
    clock = Clock()
    s = Settler(5, clock=clock)
    s.observe(str(file))
    assert s.ready() == []
    clock.t += 4.9
    assert s.ready() == []
    clock.t += 0.2
    assert s.ready() == [str(file)]
    assert len(s) == 0


def test_growth_restarts_the_quiet_period(file: Path) -> None:
    clock = Clock()
    s = Settler(5, clock=clock)
    s.observe(str(file))
    clock.t += 4
    with file.open("ab") as f:
        f.write(b"more")
    assert s.ready() == []  # saw the change, restarts
    clock.t += 4
    assert s.ready() == []
    clock.t += 1.1
    assert s.ready() == [str(file)]


def test_open_for_writing_is_not_ready_however_quiet(file: Path) -> None:
    clock = Clock()
    s = Settler(5, open_write_timeout=600, clock=clock)
    s.modified(str(file))
    clock.t += 60  # the writer paused for a minute, file still open
    assert s.ready() == []
    s.closed(str(file))
    assert s.ready() == []  # close-write alone is not proof: quiet period again
    clock.t += 5.1
    assert s.ready() == [str(file)]


def test_a_writer_that_died_holding_the_file_is_given_up_on(file: Path) -> None:
    clock = Clock()
    s = Settler(5, open_write_timeout=600, clock=clock)
    s.modified(str(file))
    clock.t += 599
    assert s.ready() == []
    clock.t += 2
    assert s.ready() == [str(file)]


def test_old_files_found_by_a_scan_are_ready_at_once(file: Path) -> None:
    s = Settler(5, clock=Clock())
    s.observe(str(file), age=3600)
    assert s.ready() == [str(file)]


def test_vanished_files_are_forgotten(file: Path) -> None:
    clock = Clock()
    s = Settler(1, clock=clock)
    s.observe(str(file))
    file.unlink()
    clock.t += 2
    assert s.ready() == [] and len(s) == 0


# --- one "is this source unchanged?" predicate ----------------------------------------------------------

V = Version(1000, 5_000, 42, 7_000)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (V, V, True),
        (V, Version(1001, 5_000, 42, 7_000), False),  # grew
        (V, Version(1000, 5_001, 42, 7_000), False),  # written
        (V, Version(1000, 5_000, 43, 7_000), False),  # replaced by another file
        (V, Version(1000, 5_000, 42, 7_001), False),  # rewritten in place, size and mtime put back
        (V, Version(1000, 5_000, 42, None), True),  # ctime unknown (a row from an old sidecar)
        (Version(1000, 5_000, 42, None), V, True),
        (V, None, False),
        (None, V, False),
    ],
)
def test_unchanged(a: Version | None, b: Version | None, same: bool) -> None:
    assert unchanged(a, b) is same


# --- the watcher enqueues; a pure function normalises ------------------------------------------------

W = lambda _root, path: not path.endswith(".part")  # noqa: E731


@pytest.mark.parametrize(
    ("events", "actions", "ignored", "gaps"),
    [
        ([("created", "/r/a.mp4")], {"/r/a.mp4": "observe"}, [], set()),
        ([("created", "/r/a.mp4"), ("modified", "/r/a.mp4")], {"/r/a.mp4": "modified"}, [], set()),
        ([("modified", "/r/a.mp4"), ("closed", "/r/a.mp4")], {"/r/a.mp4": "closed"}, [], set()),
        ([("closed", "/r/a.mp4"), ("modified", "/r/a.mp4")], {"/r/a.mp4": "modified"}, [], set()),  # reopened
        ([("modified", "/r/a.mp4"), ("changed", "/r/a.mp4")], {"/r/a.mp4": "modified"}, [], set()),
        ([("created", "/r/a.mp4"), ("deleted", "/r/a.mp4")], {"/r/a.mp4": "forget"}, [], set()),
        ([("deleted", "/r/a.mp4"), ("created", "/r/a.mp4")], {"/r/a.mp4": "observe"}, [], set()),
        ([("created", "/r/a.mp4.part"), ("moved", "/r/a.mp4.part", "/r/a.mp4")],
         {"/r/a.mp4.part": "forget", "/r/a.mp4": "observe"}, ["/r/a.mp4.part"], set()),  # rsync, Nextcloud
        ([("moved", "/r/a.mp4", "/r/b.mp4.part")], {"/r/a.mp4": "forget"}, ["/r/b.mp4.part"], set()),
        ([("overflow", "")], {}, [], {"/r"}),
    ],
)  # fmt: skip
def test_normalise(events: list[tuple[str, ...]], actions: dict[str, str], ignored: list[str], gaps: set[str]) -> None:
    raw = [RawEvent(e[0], "/r", e[1], e[2] if len(e) > 2 else "") for e in events]  # type: ignore[arg-type]
    n = normalise(raw, W)
    assert n.actions == actions and n.ignored == ignored and n.gaps == gaps


def test_the_settler_applies_what_the_watchers_enqueued_on_its_own_thread(file: Path) -> None:
    clock = Clock()
    s = Settler(5, clock=clock, rules=IgnoreRules(frozenset({".mp4"})))
    s.enqueue(RawEvent("modified", str(file.parent), str(file)))
    s.enqueue(RawEvent("created", str(file.parent), str(file.parent / "x.mp4.part")))
    s.enqueue(RawEvent("overflow", str(file.parent)))
    assert s.pending() == [str(file)]
    assert [h.reason for h in s.held()] == ["open for write"]
    assert s.take_gaps() == {str(file.parent)} and s.take_gaps() == set()


# --- clocks that lie and shares that are polled ---------------------------------------------------------


def test_an_mtime_in_the_future_settles_by_the_settlers_own_clock(file: Path) -> None:
    import os

    os.utime(file, ns=(10_413_792_000 * 10**9, 10_413_792_000 * 10**9))  # year 2300
    clock = Clock()
    s = Settler(5, clock=clock)
    s.observe(str(file), age=0.0)  # a rescan gives no head start to a file from the future
    clock.t += 4.9
    assert s.ready() == []
    clock.t += 0.2
    assert s.ready() == [str(file)]


def test_on_a_polled_root_a_file_must_stay_unchanged_across_more_than_one_poll(file: Path) -> None:
    clock = Clock()
    s = Settler(0.5, clock=clock)
    s.require_quiet(str(file.parent), 2 * 3.0)  # polled every 3 s
    s.observe(str(file))
    clock.t += 2.5  # a writer paused 5 x settle_seconds: not enough on a share
    assert s.ready() == []
    assert [(h.reason, h.need) for h in s.held()] == [("settling", 6.0)]
    clock.t += 3.6
    assert s.ready() == [str(file)]


def test_a_rewrite_in_place_that_restores_size_and_mtime_restarts_the_quiet_period(file: Path) -> None:
    import os

    clock = Clock()
    s = Settler(5, clock=clock)
    st = file.stat()
    s.observe(str(file))
    clock.t += 4
    file.write_bytes(b"y" * 10)  # same size
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: only the ctime moved
    assert s.ready() == []
    clock.t += 4
    assert s.ready() == []
    clock.t += 1.1
    assert s.ready() == [str(file)]
