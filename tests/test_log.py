"""log: one JSON object per line, libraries included; timestamps with their offset; odd names readable."""

from __future__ import annotations

import io
import json
import logging
import re

from draftsync import log


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_library_lines_are_json_like_ours() -> None:
    buf = io.StringIO()
    log.setup("info", "json", buf)
    logging.getLogger("apscheduler.scheduler").warning(
        "Execution of job %s skipped: maximum number of running instances reached (%d)", "rescan", 1
    )
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")
    logging.getLogger("httpx").info("HTTP Request: GET ... (quiet below warning)")
    log.get("draftsync.test").info("ours", path="/in/a.mp4")
    got = lines(buf)
    assert [e["event"] for e in got] == [
        "Execution of job rescan skipped: maximum number of running instances reached (1)",
        "Inotify queue overflowed; filesystem events were lost",
        "ours",
    ]
    assert got[0]["logger"] == "apscheduler.scheduler" and got[0]["level"] == "warning"


def test_timestamps_carry_their_offset_and_names_that_are_not_utf8_are_readable() -> None:
    buf = io.StringIO()
    log.setup("info", "json", buf)
    log.get().info("archived", path="/in/Caf\udce9.mp4")
    (e,) = lines(buf)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", str(e["timestamp"]))
    assert e["path"] == "/in/Caf\\xe9.mp4"


def test_setting_up_twice_does_not_double_library_lines() -> None:
    buf = io.StringIO()
    log.setup("info", "json", buf)
    log.setup("debug", "json", buf)  # SIGHUP applies a new level
    logging.getLogger("watchdog").warning("once")
    assert len(lines(buf)) == 1
