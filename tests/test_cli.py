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
