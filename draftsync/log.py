"""Logging: structlog set up once, JSON lines off a TTY and readable lines on one, with secrets redacted.

Redaction works twice: values under secret-looking keys are masked, and any registered secret value
is scrubbed from every string, so a token quoted inside an error message never reaches the log.
Libraries that log through the standard `logging` module (APScheduler, watchdog, httpx) go through the
same processors, so the stream stays one JSON object per line. Timestamps carry their UTC offset, and
file names that are not UTF-8 are written with their raw bytes as \\xNN.

structlog (which pulls in rich) is imported on the first line actually logged, not at start-up: a
`scan` or `status` that has nothing to say does not pay for it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from datetime import datetime
from typing import Any

from draftsync import names

_SECRET_KEYS = re.compile(r"(secret|token|api_key|apikey|password|authorization|code_verifier)", re.I)
_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "**********"


def register_secrets(values: Iterable[str]) -> None:
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def scrub(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(names.readable(value))
    if isinstance(value, dict):
        return {k: (MASK if _SECRET_KEYS.search(str(k)) and v else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        v = event[key]
        if _SECRET_KEYS.search(key) and v and key not in ("token_file",):
            event[key] = MASK
        else:
            event[key] = _redact_value(v)
    return event


def timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Local time with its offset (2026-12-01T09:13:02.123+01:00): unambiguous across DST changes."""
    event["timestamp"] = datetime.now().astimezone().isoformat(timespec="milliseconds")
    return event


class _Handler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """The stdlib handler draftsync installs (so a second setup replaces it rather than adding one). Its
    structlog formatter is built when the first library line arrives."""

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is None:
            _ensure()
            self.setFormatter(_stdlib_formatter())
        return super().format(record)


# What `setup` asked for; applied to structlog by `_ensure` on the first line logged.
_wanted: dict[str, Any] = {"level": "info", "fmt": "auto", "stream": None}
_applied: list[tuple[Any, ...]] = []  # the settings structlog was configured with, if any


def setup(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    with _lock:
        _wanted.update(level=level, fmt=fmt, stream=stream)
        _applied.clear()
    # Libraries that use stdlib logging (apscheduler, watchdog, httpx) stay quiet unless they warn, and
    # what they say is rendered like our own lines (JSON off a terminal), not as plain text among them.
    handler = _Handler(stream)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Handler) or type(h) is logging.StreamHandler]:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for noisy in ("apscheduler", "httpx", "httpcore", "watchdog", "tzlocal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _renderer() -> Any:
    import structlog

    stream = _wanted["stream"] or sys.stderr
    fmt = _wanted["fmt"]
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    if use_json:
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def _shared() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamp,
        structlog.processors.format_exc_info,
        redact,
    ]


def _stdlib_formatter() -> logging.Formatter:
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        processor=_renderer(), foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared()]
    )


def _ensure() -> None:
    """Configure structlog as `setup` last asked (once per setup call)."""
    key = (_wanted["level"], _wanted["fmt"], _wanted["stream"])
    if _applied and _applied[0] == key:
        return
    with _lock:
        if _applied and _applied[0] == key:
            return
        import structlog

        stream = _wanted["stream"] or sys.stderr
        structlog.configure(
            processors=[*_shared(), _renderer()],
            wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, str(_wanted["level"]).upper())),
            logger_factory=structlog.PrintLoggerFactory(file=stream),
            cache_logger_on_first_use=False,
        )
        _applied[:] = [key]


class _Logger:
    """A named structlog logger, configured (and structlog imported) on its first call."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        _ensure()
        import structlog

        return getattr(structlog.get_logger(self._name), method)


def get(name: str = "draftsync") -> Any:
    return _Logger(name)
