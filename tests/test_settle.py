"""settle: which names are temp files, and when a file counts as completely written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from draftsync.settle import IgnoreRules, Settler, is_temp_name

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
