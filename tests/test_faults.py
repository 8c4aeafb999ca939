"""The real daemon under real-world faults: missing disks, wrong clocks and zones, bad names, lost events,
bad state, full disks, signals. Each test drives the daemon (and the CLI) as a subprocess on real files,
with real mounts and namespaces where the fault needs one, and polls with bounded deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import BOUND_BY_PERMISSIONS, DaemonProc, Env, b3, make_video, wait_for

pytestmark = pytest.mark.slow


def archived_hashes(env: Env) -> list[str]:
    return sorted(sc["hash"] for sc in env.sidecars())


def wait_archived(env: Env, *sources: Path | bytes, timeout: float = 30) -> None:
    want = {b3(p) for p in sources}
    wait_for(lambda: want <= set(archived_hashes(env)), timeout, what=f"{len(want)} video(s) archived")


def _db(env: Env) -> sqlite3.Connection:
    # Read the catalog directly (read-only): polling `status` would start a Python process per look.
    return sqlite3.connect(f"file:{env.state / 'catalog.db'}?mode=ro", uri=True, timeout=10)


def problems(env: Env) -> dict[str, str]:
    with contextlib.closing(_db(env)) as db:
        return dict(db.execute("SELECT key, message FROM problems").fetchall())


def root_health(env: Env) -> str:
    with contextlib.closing(_db(env)) as db:
        row = db.execute("SELECT health FROM roots").fetchone()
    return row[0] if row else ""


def all_json(d: DaemonProc) -> None:
    """Every line the daemon wrote is one JSON object (libraries' lines included)."""
    for line in d.text().splitlines():
        assert line.startswith("{") and json.loads(line), f"not a JSON log line: {line!r}"


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount after the test, whatever happens."""
    points: list[Path] = []
    yield points
    for p in reversed(points):
        umount(p)


# --- 1. a missing archive is never recreated ----------------------------------------------------------


def test_a_missing_or_unmounted_archive_pauses_ingest_and_is_never_recreated(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path, mounts: list[Path]
) -> None:
    disk, mnt = tmp_path / "usb-disk", tmp_path / "media" / "usb"
    disk.mkdir()
    mnt.mkdir(parents=True)
    if not mount("--bind", str(disk), str(mnt)):
        pytest.skip("cannot bind-mount here (needs root or a mount namespace)")
    mounts.append(mnt)
    env.archive = mnt / "archive"
    env.write_config(archive={"root": str(env.archive)})
    d = daemon()
    a = make_video(env.inbox / "a.mp4", seed=300)
    wait_archived(env, a)
    marker = json.loads((env.archive / ".draftsync-archive").read_text())
    assert marker["archive_id"]

    umount(mnt)  # the USB disk is unplugged: an empty mount point stays behind
    b = make_video(env.inbox / "b.mp4", seed=301)
    wait_for(lambda: "archive_missing" in problems(env), 20, what="the archive_missing problem")
    assert "does not exist" in problems(env)["archive_missing"]
    r = env.cli("status")
    assert r.returncode == 1 and "PROBLEM:" in r.stdout and "is its disk mounted?" in r.stdout
    assert list(mnt.iterdir()) == []  # nothing created under the bare mount point

    (mnt / "archive").mkdir()  # an automounter (or a person) makes an empty folder there
    wait_for(lambda: "not marked" in problems(env).get("archive_missing", ""), 20, what="unmarked root reported")
    assert list((mnt / "archive").iterdir()) == []
    (mnt / "archive").rmdir()

    assert mount("--bind", str(disk), str(mnt))  # the disk is back
    wait_archived(env, a, b)
    wait_for(lambda: "archive_missing" not in problems(env), 20, what="the problem to clear")
    assert env.cli("status").returncode == 0
    assert d.proc.poll() is None and len(d.logged("archive missing")) == 1

    # A second draftsync with its own state dir is refused the same archive.
    other = Env(env.base, env.base / "inbox2", env.archive, env.base / "state2", env.base / "other.toml")
    other.inbox.mkdir()
    other.write_config()
    d2 = DaemonProc(other, ready=False)
    assert d2.proc.wait(30) == 2
    assert "in use by another draftsync" in d2.text()
    d2.log.close()
    assert d.stop() == 0
    assert env.cli("verify").returncode == 0


@pytest.fixture
def ext4_disk(tmp_path: Path, mounts: list[Path]) -> Iterator[tuple[Path, Path]]:
    """A real ext4 disk (a loop device) mounted with errors=remount-ro, as a USB disk often is: (image, mount
    point). Skips where loop devices or ext4's error trigger are not available."""
    img, mnt = tmp_path / "usb.img", tmp_path / "media" / "usb"
    mnt.mkdir(parents=True)
    with img.open("wb") as f:
        f.truncate(64 * 2**20)
    if subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], capture_output=True).returncode != 0:
        pytest.skip("mkfs.ext4 is not available here")
    if not mount("-o", "loop,errors=remount-ro", str(img), str(mnt)):
        pytest.skip("cannot mount a loop device here (needs root)")
    mounts.append(mnt)
    yield img, mnt


def test_an_archive_disk_the_kernel_turns_read_only_pauses_ingest_once_and_resumes_when_repaired(
    env: Env, daemon: Callable[..., DaemonProc], ext4_disk: tuple[Path, Path]
) -> None:
    img, mnt = ext4_disk
    src = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(src).name / "trigger_fs_error"
    if not trigger.exists():
        pytest.skip("this kernel cannot be asked for an ext4 error (no trigger_fs_error)")
    env.archive = mnt / "archive"
    env.write_config(archive={"root": str(env.archive)})
    d = daemon()
    a = make_video(env.inbox / "a.mp4", seed=305)
    wait_archived(env, a)

    trigger.write_text("1")  # a disk error: the kernel switches the filesystem to read-only
    b = make_video(env.inbox / "b.mp4", seed=306)
    wait_for(lambda: "read-only" in problems(env).get("archive_missing", ""), 20, what="the read-only disk reported")
    time.sleep(5)  # a few resume checks (every 2 s): none may resume ingest onto the read-only disk
    assert len(d.logged("archive missing")) == 1 and not d.logged("ingest resumes")
    assert env.cli("status").returncode == 1
    assert env.cli("verify").returncode == 0  # a read-only archive can still be verified

    umount(mnt)  # the owner unplugs the disk, repairs it and plugs it in again
    subprocess.run(["e2fsck", "-fy", str(img)], capture_output=True)
    assert mount("-o", "loop,errors=remount-ro", str(img), str(mnt))
    wait_archived(env, a, b)
    wait_for(lambda: "archive_missing" not in problems(env), 20, what="the problem to clear")
    assert d.stop() == 0


# --- 2. local time is the real zone -------------------------------------------------------------------

BERLIN_NS = (
    'mount -t tmpfs tmpfs "$OVL" && mkdir "$OVL/u" "$OVL/w" '
    '&& ln -s /usr/share/zoneinfo/Europe/Berlin "$OVL/u/localtime" && echo Europe/Berlin > "$OVL/u/timezone" '
    '&& mount -t overlay overlay -o "lowerdir=/etc,upperdir=$OVL/u,workdir=$OVL/w" /etc && exec "$@"'
)


def test_local_time_comes_from_the_system_zone_with_its_dst_rules(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TZ", raising=False)  # as under systemd
    ovl = tmp_path / "ovl"
    ovl.mkdir()
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", BERLIN_NS, "sh"]
    probe = subprocess.run(
        [*prefix, "date", "+%Z"], capture_output=True, text=True, env={**os.environ, "OVL": str(ovl)}
    )
    if probe.returncode != 0 or probe.stdout.strip() not in ("CET", "CEST"):
        pytest.skip(f"cannot give a mount namespace its own /etc/localtime here: {probe.stderr.strip()}")
    env.write_config(archive={"timezone": "local"})
    d = daemon(prefix=prefix, extra_env={"OVL": str(ovl)})
    # A July clip at 22:30 UTC was shot at 00:30 the next day in Berlin (summer time, +02:00), even in December.
    clip = make_video(tmp_path / "phone" / "holiday.mp4", seed=310, creation_time="2026-07-01T22:30:00.000000Z")
    shutil.copy(clip, env.inbox / "holiday.mp4")
    wait_archived(env, clip)
    (sc,) = env.sidecars()
    assert sc["capture_time"] == "2026-07-02T00:30:00+02:00"
    assert [p.relative_to(env.archive).as_posix()[:30] for p in env.archived_videos()] == [
        "2026/07/camera/2026-07-02_0030"
    ]
    offset = datetime.now(ZoneInfo("Europe/Berlin")).isoformat()[-6:]
    ready = d.logged("ready")[0]
    assert ready["timestamp"].endswith(offset), ready["timestamp"]  # log times carry their offset
    assert d.stop() == 0


def test_a_posix_tz_rule_is_local_time_with_its_summer_time(env: Env, tmp_path: Path) -> None:
    """Routers and embedded systems set TZ to a POSIX rule, not a zone name; it is the local time all the
    same (it fell back to UTC before), while a misspelt zone name still does, loudly."""
    env.write_config(archive={"timezone": "local"})
    clip = make_video(tmp_path / "phone" / "holiday.mp4", seed=311, creation_time="2026-07-01T22:30:00.000000Z")
    shutil.copy(clip, env.inbox / "holiday.mp4")
    old = time.time() - 60
    os.utime(env.inbox / "holiday.mp4", (old, old))
    r = env.cli("scan", env={"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"})
    assert r.returncode == 0, r.stderr
    (sc,) = env.sidecars()
    assert sc["capture_time"] == "2026-07-02T00:30:00+02:00"
    assert "using UTC" not in r.stdout + r.stderr
    r = env.cli("status", env={"TZ": "Europe/Berln"})
    assert "WARNING:     the local time zone is unknown" in r.stdout and "using UTC" in r.stdout


# --- 3. cron means crontab(5) -----------------------------------------------------------------------


def test_cron_weekdays_are_crontab_weekdays_and_status_shows_the_next_runs(
    env: Env, daemon: Callable[..., DaemonProc]
) -> None:
    env.write_config(archive={"scrub_schedule": "0 4 * * 0"},
                     push={"enabled": True, "backend": "dry-run", "schedule": "0 9 * * 1-5", "timezone": "UTC"})  # fmt: skip
    d = daemon()
    nxt = wait_for(lambda: env.status()["next"] if env.status()["daemon"]["running"] else None, 20)
    scrub, push = datetime.fromisoformat(nxt["scrub"]), datetime.fromisoformat(nxt["push"])
    # The daemon's own scheduler: Sunday at 04:00, and weekdays (Monday to Friday) at 09:00.
    assert (scrub.astimezone(ZoneInfo("UTC")).strftime("%a %H:%M")) == "Sun 04:00"
    assert push.astimezone(ZoneInfo("UTC")).strftime("%a") in ("Mon", "Tue", "Wed", "Thu", "Fri")
    assert push.astimezone(ZoneInfo("UTC")).strftime("%H:%M") == "09:00"
    human = env.cli("status").stdout
    assert "next scrub:  Sun " in human and "next push:   " in human
    assert d.stop() == 0
    env.config.write_text(env.config.read_text().replace('"0 9 * * 1-5"', '"0 9 * * 8"'))
    r = env.cli("status")
    assert r.returncode == 2 and "push.schedule" in r.stderr and "Traceback" not in r.stderr


# --- 4. every file name is archived -------------------------------------------------------------------


def test_names_that_are_not_utf8_or_reserved_on_windows_are_archived_and_recorded(
    env: Env, daemon: Callable[..., DaemonProc]
) -> None:
    env.write_config(archive={"layout": "{label}/{stem}.{hash8}{ext}"})
    inbox = os.fsencode(env.inbox)
    latin1 = inbox + b"/Caf\xe9 \xe0 la plage.mp4"  # from an old Samba share
    noise = inbox + b"/\xff\xfe\x80 clip.mov"  # bytes that are no encoding at all
    data = {latin1: make_video(env.base / "l.mp4", seed=320).read_bytes(),
            noise: make_video(env.base / "n.mov", seed=321).read_bytes()}  # fmt: skip
    d = daemon()
    for raw, body in data.items():
        with open(raw, "wb") as f:
            f.write(body)
    reserved = [make_video(env.inbox / n, seed=322 + i) for i, n in enumerate(["CON.mp4", "nul.mov", 'a<b>:c"|?*.mp4'])]
    wait_archived(env, *data.values(), *reserved)
    sources = {s.get("path_bytes"): s["path"] for sc in env.sidecars() for s in sc["sources"]}
    assert sources[latin1.hex()].endswith("/Caf\\xe9 \\xe0 la plage.mp4")  # readable, and the bytes kept
    assert noise.hex() in sources
    names = [p.name for p in env.archived_videos()]
    assert any(n.startswith("Café à la plage.") for n in names), names
    for n in names:
        n.encode("utf-8")  # every archive name is valid UTF-8
        assert not any(c in n for c in '<>:"|?*\\') and n.split(".")[0].upper() not in ("CON", "NUL")
    assert d.stop() == 0
    all_json(d)
    # scan, too, archives such a name (and never crashes on one)
    later = inbox + b"/r\xe9sum\xe9.mp4"
    with open(later, "wb") as f:
        f.write(make_video(env.base / "r.mp4", seed=330).read_bytes())
    os.utime(later, (time.time() - 60, time.time() - 60))
    r = env.cli("scan", "--no-compare")
    assert r.returncode == 0 and r.stdout.startswith("1 archived"), r.stdout + r.stderr
    assert env.cli("status").returncode == 3 and env.cli("verify").returncode == 0


# --- 5. clocks lie; 12. archived files keep their dates -----------------------------------------------

YEAR_2300 = 10_413_792_000  # 2300-01-01 UTC: its nanoseconds do not fit SQLite's 64-bit integer


def test_future_mtimes_are_archived_by_run_and_scan_and_copies_keep_the_source_dates(
    env: Env, daemon: Callable[..., DaemonProc]
) -> None:
    d = daemon()
    future = make_video(env.inbox / "camera clock ahead.mp4", seed=340)
    os.utime(future, ns=(YEAR_2300 * 10**9, YEAR_2300 * 10**9 + 123))
    old = make_video(env.inbox / "old clip.mp4", seed=341)
    os.utime(old, ns=(1_741_082_400 * 10**9, 1_741_082_400 * 10**9 + 456_789))  # 2025-03-04 10:00 UTC
    wait_archived(env, future, old)
    by_hash = {sc["hash"]: sc for sc in env.sidecars()}
    assert by_hash[b3(future)]["capture_time_source"] == "first_seen"  # 2300 is not when it was shot
    assert by_hash[b3(old)]["capture_time"].startswith("2025-03-04T10:00:00")
    for src in (future, old):
        copy = next(p for p in env.archived_videos() if b3(p) == b3(src))
        assert copy.stat().st_mtime_ns == src.stat().st_mtime_ns  # file managers sort it by when it was made
    assert d.stop() == 0
    assert env.status()["archive"]["videos"] == 2  # the catalog holds the year-2300 nanoseconds
    # scan waits out the settle period by its own clock, not the file's
    again = make_video(env.inbox / "scan me.mp4", seed=342)
    os.utime(again, ns=(YEAR_2300 * 10**9, YEAR_2300 * 10**9))
    r = env.cli("scan", "--no-compare")
    assert r.returncode == 0 and r.stdout.startswith("1 archived"), r.stdout + r.stderr


# --- 6. no version that never existed -------------------------------------------------------------------


def test_a_writer_pausing_on_a_polled_share_gets_no_partial_version_archived(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    # Polled (as NFS/SMB are): no close-write is ever seen. settle_seconds is 0.5 s and the writer pauses 2.5 s
    # with the file half written; a file must also stay unchanged across more than one poll (2 x 3 s).
    env.write_config(watch={"polling": True, "poll_seconds": 3.0, "settle_seconds": 0.5})
    target, go = env.inbox / "remote.mp4", tmp_path / "go"
    p1, p2 = os.urandom(1_000_000), os.urandom(1_000_000)
    (tmp_path / "p1").write_bytes(p1)
    (tmp_path / "p2").write_bytes(p2)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        f"f = open({str(target)!r}, 'wb')\n"
        f"f.write(open({str(tmp_path / 'p1')!r}, 'rb').read()); f.flush()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        f"f.write(open({str(tmp_path / 'p2')!r}, 'rb').read()); f.close()\n"
    )])  # fmt: skip
    wait_for(lambda: target.exists() and target.stat().st_size == len(p1), 20, what="the first half written")
    d = daemon()  # its start-up rescan finds the half-written file at once
    time.sleep(2.5)  # the writer's pause (the fault under test), 5 x settle_seconds
    go.touch()
    assert writer.wait(30) == 0
    wait_archived(env, p1 + p2)
    time.sleep(1.0)
    assert archived_hashes(env) == [b3(p1 + p2)]
    assert d.stop() == 0


# --- 7. nothing goes deaf ----------------------------------------------------------------------------------


def remove_tree(root: Path) -> None:
    """rmtree without recursion (pytest's own clean-up dies on a tree 1,000 folders deep)."""
    order, stack = [], [str(root)]
    while stack:
        d = stack.pop()
        order.append(d)
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    os.unlink(e.path)
    for d in reversed(order):
        os.rmdir(d)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "share"
    p.mkdir()
    yield p
    remove_tree(p)


def test_lost_events_a_remounted_share_and_a_deep_tree_never_leave_a_root_deaf(
    env: Env, daemon: Callable[..., DaemonProc], share: Path, mounts: list[Path]
) -> None:
    if not mount("--bind", str(share), str(env.inbox)):
        pytest.skip("cannot bind-mount here (needs root or a mount namespace)")
    mounts.append(env.inbox)
    deep = env.inbox
    for _ in range(1000):  # 1,000 folders deep (a RecursionError in a recursive walk, pathlib's mkdir too)
        deep = deep / "d"
        deep.mkdir()
    first = make_video(deep / "deep.mp4", seed=350)
    d = daemon()  # rescan_minutes = 60: nothing below may wait for the periodic rescan
    wait_archived(env, first)
    later = make_video(deep / "later.mp4", seed=351)  # seen by the watch on the 1,000th folder
    wait_archived(env, later)

    # The inotify queue overflows while the daemon is frozen: the events of `lost` are dropped.
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        for i in range(limit // 2 + 100):  # create + open + close + delete: four events each
            (env.inbox / f"{i}.tmp").touch()
            (env.inbox / f"{i}.tmp").unlink()
        lost = make_video(env.inbox / "lost.mp4", seed=352)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    wait_archived(env, lost, timeout=30)
    assert d.logged("events were lost (inotify queue overflow); rescanning now")

    # The share is unmounted and mounted again: the old watches are dead; the new mount is watched.
    umount(env.inbox)
    wait_for(lambda: root_health(env) in ("empty", "missing"), 20, what="root reported empty")
    st = env.status()
    assert st["sources"].get("gone", 0) == 0 and f"root_missing:{env.inbox}" in problems(env)  # not a deletion
    assert mount("--bind", str(share), str(env.inbox))
    wait_for(lambda: root_health(env) == "ok", 20, what="the remounted root watched again")
    back = make_video(env.inbox / "after remount.mp4", seed=353)
    wait_archived(env, back, timeout=30)
    assert d.stop() == 0
    assert any(e.get("kind") == "watcher_restarted" for e in d.logged("notice"))
    all_json(d)  # watchdog's own warning about the overflow too


def test_an_unreadable_subfolder_makes_its_root_degraded_until_it_can_be_read(tmp_path: Path) -> None:
    # Permissions mean nothing to root: the daemon runs as root without the powers to ignore them.
    base = Path(tempfile.mkdtemp(prefix="draftsync-bound-"))
    try:
        env = Env(base, base / "inbox", base / "archive", base / "state", base / "draftsync.toml")
        (env.inbox / "private").mkdir(parents=True)
        hidden = make_video(env.inbox / "private" / "hidden.mp4", seed=360)
        env.write_config(watch={"rescan_minutes": 0.05})
        locked = make_video(env.inbox / "locked.mp4", seed=361)
        os.chmod(env.inbox / "private", 0o000)
        os.chmod(locked, 0o000)  # a file the daemon may not read
        prefix = BOUND_BY_PERMISSIONS
        probe = f"open({str(locked)!r}).close()"
        if subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True).returncode == 0:
            pytest.skip("cannot run the daemon bound by file permissions here (needs root)")
        d = DaemonProc(env, prefix=prefix)
        try:
            wait_for(lambda: root_health(env) == "degraded", 20, what="the root shown degraded")
            st = env.status()
            assert "private" in st["roots"][0]["detail"] and any(p["kind"] == "root_degraded" for p in st["problems"])
            human = env.cli("status").stdout
            assert "degraded" in human
            wait_for(lambda: [h for h in env.status()["held"] if h["reason"] == "unreadable"], 20,
                     what="the unreadable file shown held back")  # fmt: skip
            assert "locked.mp4: unreadable (" in env.cli("status").stdout
            os.chmod(env.inbox / "private", 0o755)
            wait_archived(env, hidden, timeout=30)
            wait_for(lambda: root_health(env) == "ok", 20, what="the root healthy again")
            assert d.stop() == 0
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- 8. bad state is recoverable -----------------------------------------------------------------------


def test_a_corrupt_catalog_and_bad_sidecars_are_recovered_and_sightings_are_never_lost(
    env: Env, daemon: Callable[..., DaemonProc]
) -> None:
    vids = [make_video(env.inbox / f"v{i}.mp4", seed=370 + i) for i in range(3)]
    d = daemon()
    wait_archived(env, *vids)
    assert d.stop() == 0
    catalog = env.state / "catalog.db"
    catalog.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(catalog) + suffix).unlink(missing_ok=True)
    for args in (("status",), ("verify",), ("run",)):
        r = env.cli(*args, timeout=30)
        assert r.returncode == 2 and "draftsync reindex" in r.stderr and "Traceback" not in r.stderr, (args, r)
    a, b, _ = env.archived_videos()
    Path(f"{a}.json").write_text("{ not json")
    sc = json.loads(Path(f"{b}.json").read_text())
    Path(f"{b}.json").write_text(json.dumps(sc | {"size": "huge"}))
    r = env.cli("reindex")
    assert r.returncode == 1 and r.stdout.startswith("catalog rebuilt: 3 videos (2 described anew"), r.stdout
    assert f"{a.name}.json" in r.stderr and f"{b.name}.json" in r.stderr and "damaged" in r.stderr
    assert list(env.state.glob("catalog.db.damaged-*")) and list((env.archive / ".draftsync" / "damaged").rglob("*"))
    assert env.cli("verify").returncode == 0

    # Many sightings of one content at once: each path ends up in its sidecar.
    d = daemon()
    body = vids[2].read_bytes()
    copies = [env.inbox / f"copy {i}.mp4" for i in range(8)]
    threads = [threading.Thread(target=p.write_bytes, args=(body,)) for p in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def recorded() -> set[str]:
        sc = next(s for s in env.sidecars() if s["hash"] == b3(body))
        return {s["path"] for s in sc["sources"]}

    wait_for(lambda: {str(p) for p in [vids[2], *copies]} <= recorded(), 30, what="all sightings in the sidecar")
    assert d.stop() == 0
    assert len(env.archived_videos()) == 3


# --- 9. disks fill ------------------------------------------------------------------------------------


def test_a_full_archive_disk_an_archive_out_of_inodes_and_a_full_state_disk_pause_once_and_resume(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path, mounts: list[Path]
) -> None:
    adisk, sdisk = tmp_path / "archive-disk", tmp_path / "state-disk"
    adisk.mkdir()
    sdisk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=3m,nr_inodes=64", "tmpfs", str(adisk)):
        pytest.skip("cannot mount a tmpfs here (needs root or a mount namespace)")
    mounts.append(adisk)
    assert mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(sdisk))
    mounts.append(sdisk)
    env.archive, env.state = adisk / "archive", sdisk / "state"
    env.write_config(archive={"root": str(env.archive)}, state={"dir": str(env.state)})
    d = daemon()
    first = make_video(env.inbox / "first.mp4", seed=380)
    wait_archived(env, first)

    big = env.inbox / "big.mp4"  # more than the archive disk holds
    big.write_bytes(os.urandom(4_000_000))
    wait_for(lambda: "archive_full" in problems(env), 20, what="the archive_full problem")
    assert "MiB free" in problems(env)["archive_full"] and env.temps() == []
    assert mount("-o", "remount,size=16m", str(adisk))
    wait_archived(env, first, big)
    wait_for(lambda: "archive_full" not in problems(env), 20, what="the problem to clear")

    filler = adisk / "filler"
    filler.mkdir()
    n = 0
    try:
        while True:
            (filler / str(n)).touch()
            n += 1
    except OSError:
        pass
    second = make_video(env.inbox / "second.mp4", seed=381)
    wait_for(lambda: "archive_full" in problems(env), 20, what="the archive_full problem")
    assert "inodes" in problems(env)["archive_full"]
    assert env.cli("status").returncode == 1
    time.sleep(2.5)  # resume checks happen while paused (every 2 s)
    shutil.rmtree(filler)
    wait_archived(env, first, second)
    wait_for(lambda: "archive_full" not in problems(env), 20, what="the problem to clear")
    assert len(d.logged("archive full")) == 2  # once per pause, not every few seconds

    ballast = sdisk / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: nothing left over to fail again at close
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    third = make_video(env.inbox / "third.mp4", seed=382)
    wait_for(lambda: d.logged("state full"), 30, what="the daemon to notice the full state disk")
    r = env.cli("status")
    assert r.returncode == 1 and "state disk is full" in r.stdout, r.stdout
    assert d.proc.poll() is None  # paused, not dead
    ballast.unlink()
    wait_archived(env, first, big, second, third)
    wait_for(lambda: "state_full" not in problems(env), 20, what="the problem to clear")
    assert d.stop() == 0
    assert len(d.logged("state full")) == 1


# --- 10. signals and config -----------------------------------------------------------------------------


def test_sighup_rereads_the_config_and_never_kills_the_daemon(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    d = daemon()
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(32 * 1024 * 1024))
    shutil.copy(big, env.inbox / "big.mp4")
    wait_for(lambda: env.temps() or archived_hashes(env), 30, interval=0.01, what="the copy to start")
    d.proc.send_signal(signal.SIGHUP)
    wait_archived(env, big)
    wait_for(lambda: d.logged("config reloaded"), 20, what="the reload to be logged")
    assert d.proc.poll() is None
    env.config.write_text(env.config.read_text().replace('level = "info"', 'level = "DEBUG"')
                          .replace("settle_seconds = 0.5", "settle_seconds = 2"))  # fmt: skip
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(d.logged("config reloaded")) == 2, 20)
    second = d.logged("config reloaded")[1]
    assert second["applied"] == ["log.level"] and second["restart_needed"] == ["watch.settle_seconds"]
    env.config.write_text("[watch\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.logged("config reload failed; the running configuration stays in force"), 20)
    assert d.proc.poll() is None
    assert d.stop() == 0
    assert env.temps() == []


# --- 11. honest commands -----------------------------------------------------------------------------------


def test_verify_beside_the_daemon_status_exit_codes_and_files_held_back(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    env.write_config(log={"level": "debug", "format": "json"})
    r = env.cli("status", "--check")
    assert (r.returncode, r.stdout.strip()) == (3, "not running")
    d = daemon()
    assert env.cli("status", "--check").returncode == 0
    # held back: a writer that holds its file open, quiet
    target = env.inbox / "recording.mp4"
    writer = subprocess.Popen([sys.executable, "-c", (
        f"import time; f = open({str(target)!r}, 'wb'); f.write(b'x' * 1000); f.flush(); time.sleep(60)"
    )])  # fmt: skip
    try:
        wait_for(lambda: any(h["reason"] == "open for write" for h in env.status()["held"]), 20,
                 what="the open file shown held back")  # fmt: skip
        assert "open for write" in env.cli("status").stdout
    finally:
        writer.kill()
        writer.wait()
    # skipped files are logged once, at debug level
    (env.inbox / "empty.mp4").touch()
    for _ in range(3):
        (env.inbox / "clip.mp4.part").write_bytes(b"partial")
    # verify, again and again, while a burst is being archived: never "unknown", and the counts add up
    burst = [tmp_path / f"b{i}.mp4" for i in range(8)]
    for i, p in enumerate(burst):
        p.write_bytes(os.urandom(2_000_000 + i))
    stop = threading.Event()

    def deliver() -> None:
        for p in burst:
            shutil.copy(p, env.inbox / p.name)
            time.sleep(0.1)
        stop.set()

    t = threading.Thread(target=deliver)
    t.start()
    reports = []
    while not stop.is_set() or len(reports) < 2:
        r = env.cli("verify", "--json")
        reports.append(json.loads(r.stdout))
        assert r.returncode == 0, r.stdout
    t.join()
    for rep in reports:
        assert rep["unknown"] == [] and rep["problems"] == 0
        assert rep["checked"] == rep["ok"] + sum(
            len(rep[k]) for k in ("missing", "changed", "no_sidecar", "unreadable")
        )
    wait_archived(env, *burst)
    assert d.stop() == 0
    skipped = [e["path"] for e in d.logged("skipped")]
    assert skipped.count(str(env.inbox / "empty.mp4")) == 1 and skipped.count(str(env.inbox / "clip.mp4.part")) == 1
    assert all(e["level"] == "debug" for e in d.logged("skipped"))
    all_json(d)
    assert env.cli("status").returncode == 3
