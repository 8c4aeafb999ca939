"""watch: mount detection, ignore rules before watches, limit fallback, supervision, polling."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
)

from draftsync.settle import IgnoreRules, Settler
from draftsync.watch import RootWatch, event_kind, mount_fstype, needs_polling, walk_files
from tests.conftest import wait_for

RULES = IgnoreRules(frozenset({".mp4"}))


def test_mount_type_is_the_longest_matching_mount_point(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "//nas/video /mnt/nas cifs rw 0 0\n"
        "server:/export /mnt/nas/nfs nfs4 rw 0 0\n"
        "gdrive: /mnt/cloud fuse.rclone rw 0 0\n"
    )
    assert mount_fstype("/mnt/nas/Camera", str(mounts)) == "cifs"
    assert mount_fstype("/mnt/nas/nfs/x", str(mounts)) == "nfs4"
    assert mount_fstype("/mnt/nassy", str(mounts)) == "ext4"
    assert mount_fstype("/mnt/cloud/Camera", str(mounts)) == "fuse.rclone"
    assert [needs_polling(t) for t in ("cifs", "nfs4", "fuse.rclone", "9p", "ext4", "btrfs", None)] == [
        True, True, True, True, False, False, False,
    ]  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    for d in ("Camera/2026", "@eaDir/thumbs", ".stfolder", "TikTok"):
        (root / d).mkdir(parents=True)
    return root


def _watched(w: RootWatch) -> set[str]:
    assert w.observer is not None
    paths: set[str] = set()
    for e in w.observer.emitters:
        group = e._inotify  # type: ignore[attr-defined]
        paths |= {p.decode() for p in group._active_callbacks_by_path}
    return paths


def test_ignored_folders_are_never_watched_and_events_reach_the_settler(tree: Path) -> None:
    settler = Settler(0.2)
    w = RootWatch(str(tree), RULES, settler)
    w.start()
    try:
        assert w.mode == "inotify"
        watched = _watched(w)
        assert str(tree / "Camera" / "2026") in watched and str(tree / "TikTok") in watched
        assert not any("@eaDir" in p or ".stfolder" in p for p in watched)
        (tree / "@eaDir" / "thumbs" / "x.mp4").write_bytes(b"thumb")
        (tree / "TikTok" / "a.mp4.part").write_bytes(b"partial")
        (tree / "TikTok" / "a.mp4").write_bytes(b"video")
        wait_for(lambda: str(tree / "TikTok" / "a.mp4") in settler.pending(), 10)
        assert settler.pending() == [str(tree / "TikTok" / "a.mp4")]
        # a folder created later is watched too, unless it is ignored
        (tree / "New").mkdir()
        (tree / "@eaDir" / "more").mkdir()
        wait_for(lambda: str(tree / "New") in _watched(w), 10)
        assert str(tree / "@eaDir" / "more") not in _watched(w)
    finally:
        w.stop()


def test_hitting_the_inotify_limit_falls_back_to_polling(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel's limit is machine-wide; we make the kernel's answer appear after two watches instead.
    from watchdog.observers.inotify_c import InotifyFD

    real = InotifyFD.add_callback
    calls = {"n": 0}

    def limited(self, path, mask, callback, id_):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(self, path, mask, callback, id_)

    monkeypatch.setattr(InotifyFD, "add_callback", limited)
    settler = Settler(0.2)
    w = RootWatch(str(tree), RULES, settler, poll_seconds=0.2)
    w.start()
    try:
        assert w.mode == "polling" and "inotify watch limit" in w.detail
        (tree / "Camera" / "2026" / "deep.mp4").write_bytes(b"v")
        wait_for(lambda: settler.pending(), 10, what="polling to see the file")
    finally:
        w.stop()


def test_a_dead_observer_is_restarted(tree: Path) -> None:
    w = RootWatch(str(tree), RULES, Settler(0.2))
    w.start()
    try:
        assert w.observer is not None
        for e in list(w.observer.emitters):
            e.stop()
            e.join(5)
        assert not w.alive()
        assert w.check() == "the watcher stopped"  # restarted, rescan owed
        assert w.alive() and w.mode == "inotify"
        assert w.check() is None
    finally:
        w.stop()


def test_forced_polling_sees_new_files(tree: Path) -> None:
    settler = Settler(0.2)
    w = RootWatch(str(tree), RULES, settler, force_polling=True, poll_seconds=0.2)
    w.start()
    try:
        assert w.mode == "polling"
        (tree / "Camera" / "p.mp4").write_bytes(b"v")
        wait_for(lambda: str(tree / "Camera" / "p.mp4") in settler.pending(), 10)
    finally:
        w.stop()


def test_a_missing_root_is_reported_and_watched_again_when_it_returns(tmp_path: Path) -> None:
    root = tmp_path / "share"
    w = RootWatch(str(root), RULES, Settler(0.2))
    w.start()
    assert (w.mode, w.health) == ("missing", "missing")
    assert w.check() is None
    root.mkdir()
    assert w.check() == "the folder reappeared"
    try:
        assert w.mode == "inotify" and w.health == "ok"
    finally:
        w.stop()


@pytest.mark.parametrize(
    ("event", "mode", "kind"),
    [
        (FileCreatedEvent("/r/a.mp4"), "inotify", "created"),
        (FileModifiedEvent("/r/a.mp4"), "inotify", "modified"),  # a writer holds it
        (FileModifiedEvent("/r/a.mp4"), "polling", "changed"),  # no writer is known on a polled share
        (FileClosedEvent("/r/a.mp4"), "inotify", "closed"),
        (FileAttribEvent("/r/a.mp4"), "inotify", "changed"),
        (FileMovedEvent("/r/a.part", "/r/a.mp4"), "inotify", "moved"),
        (FileDeletedEvent("/r/a.mp4"), "inotify", "deleted"),
        (FileOpenedEvent("/r/a.mp4"), "inotify", None),  # our own reads
        (FileClosedNoWriteEvent("/r/a.mp4"), "inotify", None),
    ],
)
def test_what_a_watchdog_event_means_to_the_settler(event: FileSystemEvent, mode: str, kind: str | None) -> None:
    assert event_kind(event, mode) == kind


def _deep(root: Path, depth: int) -> Path:
    d = root
    for _ in range(depth):  # not mkdir(parents=True): pathlib recurses too
        d = d / "d"
        d.mkdir()
    return d


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "deep"
    root.mkdir()
    yield root
    order, stack = [], [str(root)]  # rmtree without recursion
    while stack:
        d = stack.pop()
        order.append(d)
        with os.scandir(d) as it:
            for e in it:
                (stack.append if e.is_dir(follow_symlinks=False) else os.unlink)(e.path)
    for d in reversed(order):
        os.rmdir(d)


@pytest.mark.parametrize("polling", [False, True])
def test_a_folder_1000_deep_is_watched_without_recursion(deep_tree: Path, polling: bool) -> None:
    bottom = _deep(deep_tree, 1000)
    settler = Settler(0.2)
    w = RootWatch(str(deep_tree), RULES, settler, force_polling=polling, poll_seconds=0.2)
    w.start()
    try:
        assert w.mode == ("polling" if polling else "inotify") and w.alive()
        (bottom / "x.mp4").write_bytes(b"v")
        wait_for(lambda: str(bottom / "x.mp4") in settler.pending(), 15, what="the event from the bottom")
        assert w.check() is None  # still alive: no RecursionError killed a thread
    finally:
        w.stop()


def test_an_inotify_overflow_is_a_gap_the_settler_hands_on(tree: Path) -> None:
    settler = Settler(0.2)
    w = RootWatch(str(tree), RULES, settler)
    w.start()
    try:
        assert w.observer is not None
        group = next(iter(w.observer.emitters))._inotify  # type: ignore[attr-defined]
        group.on_queue_overflow()  # what watchdog calls when the kernel reports IN_Q_OVERFLOW
        assert settler.take_gaps() == {str(tree)}
        assert str(tree / "Camera" / "2026") in _watched(w)  # watches rebuilt
    finally:
        w.stop()


def test_a_root_replaced_or_remounted_under_the_watch_is_watched_again(tree: Path, tmp_path: Path) -> None:
    w = RootWatch(str(tree), RULES, Settler(0.2))
    w.start()
    try:
        tree.rename(tmp_path / "old-mount")
        tree.mkdir()  # a new filesystem at the same path
        assert w.check() == "the folder was replaced or remounted"
        assert w.check() is None and w.mode == "inotify"
    finally:
        w.stop()


def test_unreadable_sub_folders_make_a_root_degraded_until_they_can_be_read(tree: Path) -> None:
    w = RootWatch(str(tree), RULES, Settler(0.2))
    w.start()
    try:
        w.note_unreadable(str(tree / "Camera"))  # what the watch group notes on EACCES
        w.assess()
        assert w.health == "degraded" and "cannot be read" in w.detail and str(tree / "Camera") in w.detail
        w.set_unreadable([])  # a full walk read everything
        w.assess()
        assert (w.health, w.detail) == ("ok", "")
    finally:
        w.stop()


def test_the_walk_is_iterative_and_names_what_it_cannot_read(deep_tree: Path) -> None:
    bottom = _deep(deep_tree, 1000)
    (bottom / "deep.mp4").write_bytes(b"v")
    unreadable: list[str] = []
    found = [e.path for e in walk_files(str(deep_tree), RULES, True, unreadable)]
    assert found == [str(bottom / "deep.mp4")] and unreadable == []
    assert list(walk_files(str(deep_tree / "nope"), RULES, True, unreadable)) == []
