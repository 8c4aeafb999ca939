"""The shipped units: hardened enough, Type=notify, and they start the real program."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_system_unit_exposure_is_2_or_lower() -> None:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNITS / "draftsync.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for draftsync\.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0


@pytest.mark.parametrize("unit", ["draftsync.service", "draftsync-user.service"])
def test_units_are_notify_services_that_restart_on_failure(unit: str) -> None:
    text = (UNITS / unit).read_text()
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=", " run", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text
