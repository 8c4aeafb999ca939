"""The real daemon as a subprocess on temp folders, fed by real writers (cp, mv, rsync, a slow writer)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProc, Env, b3, have, make_video, wait_for

pytestmark = pytest.mark.slow


def archived_hashes(env: Env) -> list[str]:
    return sorted(sc["hash"] for sc in env.sidecars())


def wait_archived(env: Env, *sources: Path, timeout: float = 30) -> None:
    want = {b3(p) for p in sources}
    wait_for(lambda: want <= set(archived_hashes(env)), timeout, what=f"{len(want)} video(s) archived")


def test_cp_mv_and_rsync_deliveries_are_archived_exactly_once(env: Env, daemon: Callable[..., DaemonProc],
                                                               tmp_path: Path) -> None:  # fmt: skip
    d = daemon()
    outside = tmp_path / "phone"
    vids = [make_video(outside / f"VID_2026050{i}_120000.mp4", seed=10 + i) for i in range(4)]
    subprocess.run(["cp", str(vids[0]), str(env.inbox)], check=True)
    shutil.copy(vids[1], tmp_path / "staged.mp4")
    subprocess.run(["mv", str(tmp_path / "staged.mp4"), str(env.inbox / "moved.mp4")], check=True)
    if have("rsync"):
        # rsync writes .name.XXXXXX then renames
        subprocess.run(["rsync", str(vids[2]), str(env.inbox) + "/"], check=True)
    else:
        pytest.fail("rsync is required (installed by .ci/run)")
    (env.inbox / "sub").mkdir()
    subprocess.run(["cp", str(vids[3]), str(env.inbox / "sub")], check=True)
    wait_archived(env, *vids)
    time.sleep(1.0)  # give any duplicate a chance to appear before we count
    assert archived_hashes(env) == sorted(b3(v) for v in vids)
    assert len(env.archived_videos()) == 4 and env.temps() == []
    for v in env.archived_videos():
        assert b3(v) in {b3(x) for x in vids}
    st = env.status()
    assert st["daemon"]["running"] and st["roots"][0]["mode"] == "inotify" and st["archive"]["videos"] == 4
    assert d.stop() == 0
    assert env.cli("verify").returncode == 0
    human = env.cli("status").stdout
    assert f"watching:    {env.inbox}  [stopped" in human and "None" not in human, human
    events = d.events()
    archived = [e for e in events if e.get("event") == "archived"]
    assert all(e.get("path") and e.get("hash") for e in archived) and len(archived) == 4


def test_a_file_growing_slowly_under_its_final_name_is_archived_whole_once(env: Env, daemon: Callable[..., DaemonProc],
                                                                             tmp_path: Path) -> None:  # fmt: skip
    d = daemon()
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    # rsync --inplace --bwlimit writes into the final name at ~1 MB/s for about three seconds
    r = subprocess.run(["rsync", "--inplace", "--bwlimit=1000", str(big), str(env.inbox) + "/"], capture_output=True)
    assert r.returncode == 0, r.stderr
    wait_archived(env, big)
    time.sleep(1.5)
    assert archived_hashes(env) == [b3(big)]
    assert d.stop() == 0


def test_a_writer_pausing_longer_than_settle_seconds_with_the_file_open(env: Env, daemon: Callable[..., DaemonProc],
                                                                         tmp_path: Path) -> None:  # fmt: skip
    d = daemon()
    target = env.inbox / "paused.mp4"
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    p1.write_bytes(os.urandom(1_000_000))
    p2.write_bytes(os.urandom(1_000_000))
    # a local writer holds the file open and is quiet for 4x settle_seconds mid-way
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        f"f = open({str(target)!r}, 'wb')\n"
        f"f.write(open({str(p1)!r}, 'rb').read()); f.flush()\n"
        "time.sleep(2.0)\n"
        f"f.write(open({str(p2)!r}, 'rb').read()); f.close()\n"
    )])  # fmt: skip
    assert writer.wait(30) == 0
    wait_archived(env, target)
    time.sleep(1.0)
    assert archived_hashes(env) == [b3(p1.read_bytes() + p2.read_bytes())]
    assert d.stop() == 0


def test_restart_finds_files_added_while_down_and_rereads_nothing(env: Env, daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    a = make_video(env.inbox / "a.mp4", seed=20)
    wait_archived(env, a)
    assert d.stop() == 0
    b = make_video(env.inbox / "b.mp4", seed=21)
    d2 = daemon()
    wait_archived(env, a, b)
    time.sleep(1.0)
    assert len(env.archived_videos()) == 2
    assert d2.stop() == 0
    assert not [e for e in d2.events() if e.get("event") in ("archived", "already archived") and e["path"] == str(a)]


def test_overwrite_delete_and_the_archive_keeps_every_version(env: Env, daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    v = make_video(env.inbox / "clip.mp4", seed=30)
    first = b3(v)
    wait_archived(env, v)
    shutil.copy(make_video(env.base / "new.mp4", seed=31), env.inbox / "clip.mp4.part")
    os.rename(env.inbox / "clip.mp4.part", v)  # the sync tool replaces it with new content
    second = b3(v)
    wait_for(lambda: {first, second} <= set(archived_hashes(env)), 30, what="second version")
    v.unlink()  # the phone deleted it
    time.sleep(1.0)
    assert set(archived_hashes(env)) == {first, second} and len(env.archived_videos()) == 2
    assert d.stop() == 0
    assert env.cli("verify").returncode == 0


def test_symlinks_out_of_the_root_are_not_followed(env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path) -> None:
    d = daemon()
    secret = make_video(tmp_path / "private" / "secret.mp4", seed=40)
    (env.inbox / "link.mp4").symlink_to(secret)
    (env.inbox / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    real = make_video(env.inbox / "real.mp4", seed=41)
    wait_archived(env, real)
    time.sleep(1.0)
    assert archived_hashes(env) == [b3(real)]
    assert d.stop() == 0


def test_odd_and_bad_inputs_do_not_crash_the_daemon(env: Env, daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    (env.inbox / "empty.mp4").touch()
    (env.inbox / "text.mp4").write_text("not a video\n" * 100)
    good = make_video(env.inbox / ("ünï 视频 🎬 " + "x" * 150 + ".mov"), seed=50)
    trunc = env.inbox / "trunc.mp4"
    trunc.write_bytes(make_video(env.base / "t.mp4", seed=51).read_bytes()[:4000])
    wait_archived(env, good, env.inbox / "text.mp4", trunc)
    assert d.proc.poll() is None
    by_hash = {sc["hash"]: sc for sc in env.sidecars()}
    assert by_hash[b3(env.inbox / "text.mp4")]["probe_error"]
    assert by_hash[b3(good)]["probe_error"] is None
    assert d.stop() == 0


def test_kill_9_during_a_burst_then_restart_archives_each_exactly_once(env: Env, daemon: Callable[..., DaemonProc],
                                                                        tmp_path: Path) -> None:  # fmt: skip
    rng = random.Random(1234)
    staging = tmp_path / "staging"
    staging.mkdir()
    files = []
    for i in range(24):
        p = staging / f"burst_{i:02d}.mp4"
        p.write_bytes(os.urandom(rng.randint(200_000, 4_000_000)))
        files.append(p)
    delivered = []
    for round_ in range(3):
        d = daemon()
        for p in files[round_ * 8 : (round_ + 1) * 8]:
            shutil.copy(p, env.inbox / p.name)
            delivered.append(p)
        time.sleep(rng.uniform(0.3, 1.5))  # kill at a random point in the burst
        d.kill9()
    d = daemon()
    wait_archived(env, *delivered, timeout=60)
    time.sleep(1.0)
    assert archived_hashes(env) == sorted(b3(p) for p in delivered)  # each exactly once
    assert d.stop() == 0
    assert env.temps() == []  # (checked stopped: a running daemon rewrites sidecars atomically at any time)
    r = env.cli("verify", "--json")
    assert r.returncode == 0, r.stdout


def test_sigterm_exits_0_and_systemd_hears_ready_status_and_stopping(env: Env, daemon: Callable[..., DaemonProc],
                                                                     tmp_path: Path) -> None:  # fmt: skip
    sock_path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    s.settimeout(10)
    try:
        d = daemon(extra_env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"})
        msgs = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("WATCHDOG=1" in m for m in msgs):
            msgs.append(s.recv(4096).decode())
        assert any("READY=1" in m for m in msgs) and any("STATUS=" in m for m in msgs)
        assert any("WATCHDOG=1" in m for m in msgs)
        assert d.stop(signal.SIGTERM) == 0
        s.settimeout(0.5)
        rest = []
        try:
            while True:
                rest.append(s.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in rest)
    finally:
        s.close()


def test_sigterm_during_a_copy_leaves_no_partial_file(
    env: Env, daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    d = daemon()
    big = tmp_path / "huge.mp4"
    with big.open("wb") as f:
        for _ in range(48):
            f.write(os.urandom(8 * 1024 * 1024))
    shutil.copy(big, env.inbox / "huge.mp4")
    wait_for(lambda: env.temps(), 30, interval=0.01, what="the copy to start")
    # Freeze the daemon mid-copy so that the SIGTERM lands during it however busy the machine is.
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        mid_copy = bool(env.temps())
        d.proc.send_signal(signal.SIGTERM)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert mid_copy, "the copy finished before the daemon could be stopped in the middle of it"
    assert d.stop(signal.SIGTERM) == 0
    assert env.temps() == [] and env.archived_videos() == []


def test_polling_mode_for_network_shares(env: Env, daemon: Callable[..., DaemonProc]) -> None:
    env.write_config(watch={"polling": True})
    d = daemon()
    v = make_video(env.inbox / "nfs.mp4", seed=60)
    wait_archived(env, v)
    assert env.status()["roots"][0]["mode"] == "polling"
    assert d.stop() == 0


def test_scan_and_reindex_refuse_while_the_daemon_runs_and_verify_works(
    env: Env, daemon: Callable[..., DaemonProc]
) -> None:
    d = daemon()
    v = make_video(env.inbox / "a.mp4", seed=80)
    wait_archived(env, v)
    for cmd in ("scan", "reindex"):
        r = env.cli(cmd)
        assert r.returncode == 2 and "another draftsync" in r.stderr
    assert env.cli("verify").returncode == 0
    assert d.stop() == 0


def test_scan_archives_what_is_settled_and_exits(env: Env) -> None:
    a = make_video(env.inbox / "a.mp4", seed=90)
    old = time.time() - 60
    os.utime(a, (old, old))
    r = env.cli("scan")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1 archived")
    assert archived_hashes(env) == [b3(a)]
    assert json.loads(env.cli("status", "--json").stdout)["daemon"]["running"] is False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_scan_hung_up_or_stopped_during_a_copy_leaves_no_partial_file(env: Env, tmp_path: Path, sig: int) -> None:
    # An ssh session that closes sends SIGHUP to the scan it started; a timer unit that is stopped, SIGTERM.
    big = env.inbox / "huge.mp4"
    with big.open("wb") as f:
        for _ in range(48):
            f.write(os.urandom(8 * 1024 * 1024))
    old = time.time() - 60
    os.utime(big, (old, old))
    scan = subprocess.Popen([sys.executable, "-m", "draftsync", "--config", str(env.config), "scan", "--no-compare"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        copying = lambda: env.archive.is_dir() and [t for t in env.temps() if t.parent != env.archive]  # noqa: E731
        wait_for(copying, 60, interval=0.01, what="the copy to start")  # (not the marker's own atomic write)
        scan.send_signal(signal.SIGSTOP)  # frozen mid-copy, so the signal surely arrives before the copy ends
        scan.send_signal(sig)
        scan.send_signal(signal.SIGCONT)
        out, err = scan.communicate(timeout=60)
    finally:
        if scan.poll() is None:
            scan.kill()
    assert scan.returncode == 1 and "interrupted" in err and "Traceback" not in err, (out, err)
    # Nothing partial: the copy was removed, or (when the signal came as it was being placed) it is whole.
    assert env.temps() == [] and all(b3(p) == b3(big) for p in env.archived_videos())
    r = env.cli("scan", "--no-compare")  # the next scan finishes the job
    assert r.returncode == 0 and archived_hashes(env) == [b3(big)], r.stdout + r.stderr


def test_temp_files_are_swept_only_after_a_stop_that_was_not_clean(tmp_path: Path) -> None:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog
    from draftsync.daemon import begin_ingest, end_ingest

    arch = Archive(tmp_path / "archive", "{year}/{hash8}{ext}")
    (tmp_path / "archive" / "2026").mkdir(parents=True)
    cat = Catalog(tmp_path / "state" / "catalog.db")
    left = tmp_path / "archive" / "2026" / ".draftsync-abc.part"
    left.write_bytes(b"partial")
    assert begin_ingest(cat, arch) and not left.exists()  # nothing known about the last stop: swept
    end_ingest(cat)
    left.write_bytes(b"someone else's, while we were stopped cleanly")
    assert begin_ingest(cat, arch) and left.exists()  # a clean stop left nothing: no walk of the archive
    # This process dies without end_ingest; the next start finds the mark and sweeps.
    assert begin_ingest(cat, arch, sweep=False) is False and left.exists()  # archive missing: sweep owed
    assert begin_ingest(cat, arch) and not left.exists()
    cat.close()


# --- a pause whose cause comes straight back --------------------------------------------------------------


class Writes:
    """Stands in for the ingestor: the archive refuses writes (a quota the free-space figure does not
    show) until `ok` is set."""

    def __init__(self) -> None:
        self.ok = False

    def ingest(self, path: str, root: str) -> object:
        from draftsync.errors import ArchiveFull
        from draftsync.ingest import Outcome

        if not self.ok:
            raise ArchiveFull("the archive disk refused a write: Disk quota exceeded", needed=1)
        return Outcome("archived", path, "blake3:" + "0" * 64)


def test_a_cause_that_comes_straight_back_after_resuming_is_one_standing_problem_not_a_flap(env: Env) -> None:
    from draftsync.archive import Archive
    from draftsync.catalog import Catalog
    from draftsync.config import load
    from draftsync.daemon import CONFIRM_AFTER, Pipeline, relapse_wait
    from draftsync.problems import Change, Problems

    s, _ = load(str(env.config))
    cat = Catalog(s.catalog_path)
    problems = Problems(cat)
    heard: list[str] = []
    problems.subscribe(lambda c: heard.append(f"{c.action} {c.problem.kind}") if isinstance(c, Change) else None)
    pl = Pipeline(s, cat, Archive(s.archive.root, s.archive.layout), problems=problems)
    pl.ingestor = Writes()  # type: ignore[assignment]
    src = str(env.inbox / "big.mp4")

    pl.handle(src, lambda p: None)
    assert pl.pause is not None and heard == ["raised archive_full"]
    for relapses in (1, 2, 3):
        pl.resume_not_before = 0.0  # as if the (growing) wait had passed
        assert pl.try_resume()  # the disk shows free space...
        pl.handle(src, lambda p: None)  # ...but the write fails again
        assert pl.pause is not None and pl._relapses == relapses
        assert not pl.try_resume()  # and resuming waits longer each time
        assert pl.resume_not_before - time.monotonic() == pytest.approx(relapse_wait(relapses), abs=5)
    assert heard == ["raised archive_full"]  # never cleared and raised again, never flapping in status
    assert "archive_full" in problems.active_keys()

    pl.resume_not_before = 0.0
    assert pl.try_resume()
    pl.ingestor.ok = True  # type: ignore[attr-defined]
    pl.handle(src, lambda p: None)  # a file archived confirms the resume
    assert heard == ["raised archive_full", "cleared archive_full"] and pl._relapses == 0

    pl.ingestor.ok = False  # type: ignore[attr-defined]
    pl.handle(src, lambda p: None)
    pl.resume_not_before = 0.0
    assert pl.try_resume()
    pl.confirm(now=time.monotonic() + CONFIRM_AFTER - 5)
    assert heard[-1] == "raised archive_full"  # not yet: it may still come back
    pl.confirm(now=time.monotonic() + CONFIRM_AFTER + 1)
    assert heard[-1] == "cleared archive_full"  # it stayed away
