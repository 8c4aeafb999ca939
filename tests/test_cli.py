"""The command line on bad input: a clear line and an exit code, never a traceback; pipes that close early."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Env


def test_a_reader_that_leaves_early_is_no_error(env: Env) -> None:
    for cmd in ("config show", "--help", "status"):
        r = subprocess.run(
            f"{sys.executable} -m draftsync --config {env.config} {cmd} | head -c 10 >/dev/null",
            shell=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "BrokenPipeError" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_status_exit_codes_without_a_daemon(env: Env) -> None:
    r = env.cli("status", "--check")
    assert (r.returncode, r.stdout.strip()) == (3, "not running")
    r = env.cli("status")
    assert r.returncode == 3 and "daemon:      not running" in r.stdout and "next scrub:  " in r.stdout


def test_bad_input_never_ends_in_a_traceback(env: Env) -> None:
    (env.state).mkdir(parents=True, exist_ok=True)
    (env.state / "catalog.db").write_bytes(b"not sqlite" * 100)
    for args in (["status"], ["verify", "--json"], ["scan"], ["dupes"], ["nonsense"], ["status", "--bogus"]):
        r = env.cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)


def test_scan_status_and_help_load_only_what_they_use(env: Env) -> None:
    # What a command does not use is not imported: structlog (and rich through it) until a line is logged,
    # pydantic-settings unless a DRAFTSYNC_ variable sets a key, the daemon's scheduler and watcher, numpy and
    # PyAV unless there is a video to probe or sign.
    from draftsync.catalog import Catalog

    heavy = ("structlog", "rich", "pydantic_settings", "apscheduler", "watchdog", "numpy", "av", "httpx")
    env.inbox.mkdir(parents=True, exist_ok=True)
    env.cli("scan", check=True)  # the first scan creates the archive, and says so
    cat = Catalog(env.state / "catalog.db")
    cat.set_meta("signature_version", "1")  # what a daemon records at start (status counts signatures of it)
    cat.close()
    for args in (["--help"], ["scan"], ["status"], ["status", "--json"]):
        if args[0] == "status":
            heavy = tuple(m for m in heavy if m != "apscheduler")  # without a daemon it computes the schedule
        if args[0] == "--help":
            heavy += ("pydantic", "sqlite3")  # help needs no configuration and no catalog
        else:
            heavy = tuple(m for m in heavy if m not in ("pydantic", "sqlite3"))
        code = (
            "import sys; from draftsync.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})), file=sys.stderr)"
        )
        r = subprocess.run([sys.executable, "-c", code, "--config", str(env.config), *args], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.stderr.strip().splitlines()[-1] == "[]", (args, r.stderr)
