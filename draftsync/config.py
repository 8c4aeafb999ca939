"""Configuration: the pydantic models, where the TOML file is found, env overrides, defaults, and
validation messages that name the key, the value and what is wrong.

Config is what the user edits; state (the catalog, tokens) lives elsewhere, under `state.dir`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
import typing
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from draftsync.errors import ConfigError

VIDEO_EXTENSIONS = [".mp4", ".mov", ".m4v", ".3gp", ".webm", ".mkv", ".avi", ".mts", ".m2ts", ".hevc"]
LAYOUT_FIELDS = {
    "year", "month", "day", "date", "time", "hash8", "hash", "label", "ext", "stem", "orientation",
}  # fmt: skip
# The longest text each layout field can render to (bytes); a rendered path part is capped at NAME_BYTES.
FIELD_MAX_BYTES = {
    "year": 4, "month": 2, "day": 2, "date": 10, "time": 6, "hash8": 8, "hash": 64, "label": 64 * 4,
    "ext": 17, "stem": 200, "orientation": 9,
}  # fmt: skip
NAME_BYTES = 200
try:
    PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
except (OSError, ValueError):
    PATH_MAX = 4096


def _home() -> Path:
    return Path.home()


def _state_home() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg else _home() / ".local" / "state"


def _expand(p: Path) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(p))))


def _absolute(p: Path, key: str) -> Path:
    """A folder draftsync writes must not depend on where it was started (systemd starts it in /)."""
    if str(p).strip() in ("", "."):
        raise ValueError(f"{key} may not be empty")
    if not p.is_absolute():
        raise ValueError(
            f"{key} must be an absolute path (or start with ~); a relative path would depend on the folder "
            "draftsync is started from"
        )
    return p


def _not_empty(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        raise ValueError("may not be empty")
    return v


def _check_cron(v: str) -> str:
    from draftsync.schedule import parse

    return parse(v).text  # ValueError names the field and what is wrong


# A cron expression as crontab(5) reads it (0 and 7 = Sunday), checked when the config loads.
CronExpr = Annotated[str, AfterValidator(_check_cron)]


def _lower_choices(annotation: Any) -> bool:
    """True for Literal["a", "b"] (or Optional of it) whose choices are all lower-case words."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return all(isinstance(a, str) and a == a.lower() for a in args)
    return any(_lower_choices(a) for a in args if a is not type(None))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _choices_ignore_case(cls, data: Any) -> Any:
        # `level = "INFO"` and `backend = "TikTok"` mean what they say.
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                v = data.get(name)
                if isinstance(v, str) and v != v.lower() and _lower_choices(f.annotation):
                    data = {**data, name: v.lower()}
        return data


class WatchConfig(Section):
    paths: list[Path] = Field(default_factory=lambda: [_home() / "DraftSync" / "inbox"], min_length=1)
    settle_seconds: float = Field(5.0, gt=0, le=86400)
    recursive: bool = True
    polling: bool = False
    poll_seconds: float = Field(10.0, gt=0, le=3600)
    rescan_minutes: float = Field(15.0, gt=0, le=7 * 24 * 60)
    # A writer that keeps a file open this long without closing it is presumed dead.
    open_write_timeout: float = Field(3600.0, gt=0, le=7 * 86400)
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    ignore: list[str] = Field(default_factory=list)

    @field_validator("paths", mode="before")
    @classmethod
    def _no_empty_paths(cls, v: Any) -> Any:
        if isinstance(v, list):
            for p in v:
                _not_empty(p)
        return v

    @field_validator("paths")
    @classmethod
    def _expand_paths(cls, v: list[Path]) -> list[Path]:
        return [_absolute(_expand(p), "a watched folder") for p in v]

    @field_validator("extensions")
    @classmethod
    def _norm_ext(cls, v: list[str]) -> list[str]:
        out = []
        for e in v:
            e = e.strip().lower()
            if not e:
                raise ValueError("an extension may not be empty")
            e = e if e.startswith(".") else "." + e
            if e == ".json":
                raise ValueError("'.json' cannot be a video extension: in the archive every .json file is a sidecar")
            out.append(e)
        return out


class ArchiveConfig(Section):
    root: Path = Field(default_factory=lambda: _home() / "DraftSync" / "archive")
    layout: str = "{year}/{month}/{label}/{date}_{time}_{hash8}{ext}"
    default_label: str = "camera"
    timezone: str = "local"
    scrub_schedule: CronExpr = "0 4 * * 0"
    scrub_fraction: float = Field(0.25, gt=0, le=1)
    # Ingest pauses rather than fill the archive disk to the last byte.
    min_free_mib: int = Field(64, ge=0, le=1 << 24)

    @field_validator("root", mode="before")
    @classmethod
    def _root_given(cls, v: Any) -> Any:
        return _not_empty(v)

    @field_validator("root")
    @classmethod
    def _expand_root(cls, v: Path) -> Path:
        v = _absolute(_expand(v), "archive.root")
        if v.exists() and not v.is_dir():
            raise ValueError("is a file, not a folder")
        return v

    @field_validator("default_label")
    @classmethod
    def _check_default_label(cls, v: str) -> str:
        return LabelRule._check_label(v)

    @model_validator(mode="after")
    def _fits_path_max(self) -> ArchiveConfig:
        worst = len(str(self.root).encode()) + 1 + layout_max_bytes(self.layout) + 8  # + a "_999" clash suffix
        if worst > PATH_MAX:
            raise ValueError(
                f"archive.layout can render paths of up to {worst} bytes under archive.root, more than this "
                f"system allows ({PATH_MAX}); use fewer or shorter folders"
            )
        return self

    @field_validator("layout")
    @classmethod
    def _check_layout(cls, v: str) -> str:
        from string import Formatter

        if v.startswith("/") or "\\" in v:
            raise ValueError("the layout must be a relative path using '/' between folders")
        if any(part in ("", ".", "..") for part in v.split("/")):
            raise ValueError("the layout may not contain empty, '.' or '..' path parts")
        try:
            fields = [f for _, f, _, _ in Formatter().parse(v) if f is not None]
        except ValueError as e:
            raise ValueError(f"the layout is not a valid template: {e}") from None
        unknown = sorted({f for f in fields if f not in LAYOUT_FIELDS})
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: {sorted(LAYOUT_FIELDS)}")
        last = v.split("/")[-1]
        head = "/".join(v.split("/")[:-1])
        if "{hash" in head:
            # The folder must be known before the copy (the temp file is written there); the hash after.
            raise ValueError("{hash} and {hash8} may only be used in the file name part, not in folders")
        if "{hash8}" not in last and "{hash}" not in last:
            raise ValueError("the file name part must contain {hash8} or {hash} so that names stay unique")
        if not last.endswith("{ext}"):
            raise ValueError("the file name part must end with {ext}")
        return v

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        if v != "local":
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    "not a known time zone (use an IANA name such as 'Europe/Berlin', or 'local')"
                ) from None
        return v

    def tz(self) -> tzinfo:
        return local_tz() if self.timezone == "local" else ZoneInfo(self.timezone)


def layout_max_bytes(layout: str) -> int:
    """The longest archive-relative path `layout` can render (each part capped as the renderer caps it)."""
    from string import Formatter

    total = 0
    for part in layout.split("/"):
        n = 0
        try:
            for literal, name, _, _ in Formatter().parse(part):
                n += len(literal.encode()) + (FIELD_MAX_BYTES.get(name, 64) if name is not None else 0)
        except ValueError:
            n = len(part.encode())
        total += min(n, NAME_BYTES + FIELD_MAX_BYTES["ext"]) + 1
    return total


class LabelRule(Section):
    label: str = Field(min_length=1, max_length=64)
    path: str | None = None  # glob on the path relative to its watch root, e.g. "**/TikTok/**"
    name: str | None = None  # glob on the file name, e.g. "ScreenRecording*"
    orientation: Literal["portrait", "landscape", "square"] | None = None
    min_duration: float | None = Field(None, ge=0, le=86400)
    max_duration: float | None = Field(None, ge=0, le=86400)

    @field_validator("label")
    @classmethod
    def _check_label(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.strip(". ") == "":
            raise ValueError("a label is one folder name: no '/', '\\' and not only dots")
        if len(v) > 64:
            raise ValueError("a label is at most 64 characters")
        return v


class StateConfig(Section):
    dir: Path = Field(default_factory=lambda: _state_home() / "draftsync")

    @field_validator("dir", mode="before")
    @classmethod
    def _dir_given(cls, v: Any) -> Any:
        return _not_empty(v)

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: Path) -> Path:
        v = _absolute(_expand(v), "state.dir")
        if v.exists() and not v.is_dir():
            raise ValueError("is a file, not a folder")
        return v


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class SelectRule(Section):
    """Which archived videos are queued for pushing; every given condition must hold."""

    labels: list[str] | None = None
    orientation: Literal["portrait", "landscape", "square"] | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    captured_after: str | None = None  # ISO date


class PushConfig(Section):
    enabled: bool = False
    backend: Literal["tiktok", "postforme", "dry-run"] = "tiktok"
    schedule: CronExpr = "0 9 * * *"
    timezone: str = "local"
    max_per_run: int = Field(5, ge=1, le=100)
    max_per_day: int = Field(5, ge=1, le=100)
    # By default only videos first seen after pushing was enabled are queued.
    only_new: bool = True
    select: list[SelectRule] = Field(default_factory=list)
    caption: str = "{stem} ({date})"

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        return ArchiveConfig._check_tz(v)

    def tz(self) -> tzinfo:
        return local_tz() if self.timezone == "local" else ZoneInfo(self.timezone)


class TikTokConfig(Section):
    api_base: str = "https://open.tiktokapis.com"
    auth_url: str = "https://www.tiktok.com/v2/auth/authorize/"
    client_key: str = ""
    client_secret: SecretStr = SecretStr("")
    client_secret_file: Path | None = None
    token_file: Path | None = None
    redirect_uri: str = "http://127.0.0.1:8765/callback/"
    chunk_size: int = Field(10_000_000, ge=5_242_880, le=64_000_000)

    def secret(self) -> str:
        return _read_secret(self.client_secret, self.client_secret_file, "tiktok.client_secret")


class PostForMeConfig(Section):
    api_base: str = "https://api.postforme.dev"
    api_key: SecretStr = SecretStr("")
    api_key_file: Path | None = None
    social_account_id: str = ""

    def key(self) -> str:
        return _read_secret(self.api_key, self.api_key_file, "postforme.api_key")


class NotifyConfig(Section):
    """Notifications through Apprise, the weekly digest, and Healthchecks-style pings."""

    # Apprise URLs (ntfy://, gotify://, mailto://, tgram://, discord://, json://...): they carry tokens.
    urls: list[SecretStr] = Field(default_factory=list)
    urls_file: Path | None = None  # one URL per line; '#' starts a comment
    # What to notify about: kinds from draftsync.problems.KINDS ("digest" is the weekly digest).
    events: list[str] = Field(default_factory=lambda: list(_notify_kinds()))
    digest_schedule: CronExpr = "0 18 * * 0"  # Sunday 18:00
    timezone: str = "local"
    # Changes arriving within this many seconds go out as one message.
    group_seconds: float = Field(30.0, ge=0, le=3600)
    # Never more messages than this in any hour; the rest wait and go out together.
    max_per_hour: int = Field(12, ge=1, le=1000)
    # Healthchecks.io-style pings; "{check}" in the URL is replaced by heartbeat, scrub or push.
    ping_url: SecretStr = SecretStr("")
    heartbeat_seconds: float = Field(300.0, ge=10, le=86400)

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | SecretStr) else v

    @field_validator("events")
    @classmethod
    def _check_events(cls, v: list[str]) -> list[str]:
        known = _notify_kinds()
        bad = [e for e in v if e not in known]
        if bad:
            raise ValueError(f"unknown event(s) {bad}; known: {sorted(known)}")
        return v

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        return ArchiveConfig._check_tz(v)

    def tz(self) -> tzinfo:
        return local_tz() if self.timezone == "local" else ZoneInfo(self.timezone)

    def all_urls(self) -> list[str]:
        out = [u.get_secret_value() for u in self.urls if u.get_secret_value().strip()]
        if self.urls_file is not None:
            try:
                text = _expand(self.urls_file).read_text()
            except OSError as e:
                raise ConfigError(f"notify.urls_file: cannot read {self.urls_file}: {e.strerror}") from None
            out += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        return out


def _notify_kinds() -> list[str]:
    from draftsync.problems import KINDS

    return [k for k in KINDS if k != "test"]


class WebConfig(Section):
    """The read-only status page, /healthz and /metrics; off until `listen` is set."""

    # "8080" means 127.0.0.1:8080; anything beyond loopback ("0.0.0.0:8080") must be written out.
    listen: str = ""
    token_file: Path | None = None  # required when listening beyond loopback
    thumbnails: bool = True  # a keyframe picture per video, for the page and the digest
    thumbnail_format: Literal["jpeg", "webp"] = "jpeg"
    page_size: int = Field(48, ge=1, le=500)

    @field_validator("listen", mode="before")
    @classmethod
    def _port_alone(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        if v.strip():
            parse_listen(v)
        return v.strip()

    @field_validator("token_file")
    @classmethod
    def _expand_token(cls, v: Path | None) -> Path | None:
        return _expand(v) if v is not None else None

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> WebConfig:
        if self.listen and not is_loopback(parse_listen(self.listen)[0]) and self.token_file is None:
            raise ValueError(
                f"listen = {self.listen!r} is reachable beyond this machine: set web.token_file to a file "
                "holding a secret token (or listen on 127.0.0.1)"
            )
        return self

    def read_token(self) -> str:
        return _read_secret(SecretStr(""), self.token_file, "web.token") if self.token_file else ""


def parse_listen(text: str) -> tuple[str, int]:
    """'8080' -> ('127.0.0.1', 8080); 'HOST:PORT'; '[::1]:8080'. ValueError says what is wrong."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", t
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. '[::1]:8080'")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    if not host:
        raise ValueError(f"{text!r}: the host is empty (write '127.0.0.1:{port}', or only the port)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*(?:/s)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}  # fmt: skip


def parse_rate(v: str | int) -> int:
    """Bytes per second from 0, 500000, "800KB", "8MiB/s" (0 means unlimited)."""
    if isinstance(v, int):
        if v < 0:
            raise ValueError("a rate cannot be negative")
        return v
    m = _SIZE.match(str(v))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError("give bytes per second: a number with an optional unit, e.g. 0 (unlimited), 800KB, 8MiB/s")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _check_offsite_schedule(v: str) -> str:
    return v if v == "continuous" else _check_cron(v)


class OffsiteConfig(Section):
    """The offsite copy on S3-compatible storage; off while `url` is empty."""

    url: str = ""  # s3://BUCKET/PREFIX
    endpoint_url: str = ""  # empty for AWS itself
    region: str = ""
    profile: str = ""  # a profile of ~/.aws/config and ~/.aws/credentials
    access_key_id: str = ""
    secret_access_key_file: Path | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    storage_class: str = ""
    bandwidth_limit: int = 0  # bytes per second; 0 = unlimited
    schedule: Annotated[str, AfterValidator(_check_offsite_schedule)] = "continuous"
    concurrency: int = Field(8, ge=1, le=32)
    part_size_mib: int = Field(8, ge=5, le=512)
    scrub_fraction: float = Field(0.05, ge=0, le=1)  # of the copy re-downloaded and re-hashed by each scrub

    @field_validator("bandwidth_limit", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> int:
        return parse_rate(v)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v:
            return v
        if not v.startswith("s3://"):
            raise ValueError("use s3://BUCKET or s3://BUCKET/PREFIX")
        bucket = v[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"{bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.' and '-')")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("use http(s)://HOST[:PORT], e.g. https://s3.us-west-004.backblazeb2.com")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check_keys(self) -> OffsiteConfig:
        if self.secret_access_key_file is not None and not self.access_key_id:
            raise ValueError("secret_access_key_file needs access_key_id beside it")
        if self.access_key_id and self.secret_access_key_file is None:
            raise ValueError(
                "access_key_id needs secret_access_key_file (or leave both empty and use the AWS environment or ~/.aws)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def bucket(self) -> str:
        return self.url[5:].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix: empty, or ending in a single '/'."""
        p = self.url[5:].partition("/")[2].strip("/")
        return p + "/" if p else ""

    def secret(self) -> str:
        return _read_secret(SecretStr(""), self.secret_access_key_file, "offsite.secret_access_key")


def _read_secret(value: SecretStr, path: Path | None, key: str) -> str:
    if value.get_secret_value():
        return value.get_secret_value()
    if path is not None:
        try:
            return _expand(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{key}_file: cannot read {path}: {e.strerror}") from None
    return ""


class Settings(BaseModel):
    """The whole configuration. Read over the environment through pydantic-settings (`_with_environment`),
    which is imported only when a DRAFTSYNC_ variable names a section: most runs have none and do not pay
    for its import."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    watch: WatchConfig = Field(default_factory=WatchConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    labels: list[LabelRule] = Field(default_factory=list)
    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    tiktok: TikTokConfig = Field(default_factory=TikTokConfig)
    postforme: PostForMeConfig = Field(default_factory=PostForMeConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    offsite: OffsiteConfig = Field(default_factory=OffsiteConfig)

    @model_validator(mode="after")
    def _check_paths(self) -> Settings:
        roots = [p.resolve() for p in self.watch.paths]
        archive = self.archive.root.resolve()
        state = self.state.dir.resolve()
        for i, r in enumerate(roots):
            for name, p in (("archive.root", archive), ("state.dir", state)):
                if p == r or r in p.parents:
                    raise ValueError(
                        f"{name} ({p}) is inside watch.paths[{i}] ({r}); draftsync never writes into a "
                        "watched folder: choose a folder outside it"
                    )
            if archive in r.parents:
                raise ValueError(
                    f"watch.paths[{i}] ({r}) is inside archive.root ({archive}); the archive would ingest itself"
                )
        return self

    @property
    def catalog_path(self) -> Path:
        return self.state.dir / "catalog.db"

    @property
    def token_path(self) -> Path:
        return _expand(self.tiktok.token_file) if self.tiktok.token_file else self.state.dir / "tiktok-token.json"


# Why the local zone fell back to UTC, if it did (the daemon logs it once).
LOCAL_TZ_PROBLEM: list[str] = []


# A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT", "<+03>-3"), common on embedded systems and
# routers: a zone name, an offset, optionally a summer name, offset and the rules when it applies.
_NAME = r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)"
_OFFSET = r"[+-]?\d{1,2}(?::\d{2}){0,2}"
POSIX_TZ = re.compile(rf"{_NAME}{_OFFSET}(?:{_NAME}(?:{_OFFSET})?(?:,[^,]+,[^,]+)?)?")


class PosixRules(tzinfo):
    """Local time as the C library computes it from a POSIX TZ rule in $TZ, DST included, which neither
    zoneinfo nor tzlocal reads. Converting an instant (`fromutc`, what dating a clip does) is exact; a local
    wall time inside the hour a clock goes back is taken as its first occurrence."""

    def __init__(self, rule: str) -> None:
        self.rule = rule

    def _at(self, ts: float) -> Any:
        import time

        return time.localtime(ts)

    def _wall(self, dt: datetime) -> Any:
        import time

        return self._at(time.mktime((*dt.replace(tzinfo=None).timetuple()[:8], -1)))

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(seconds=self._wall(dt).tm_gmtoff) if dt is not None else timedelta(0)

    def dst(self, dt: datetime | None) -> timedelta:
        import time

        return timedelta(seconds=self._wall(dt).tm_gmtoff + time.timezone) if dt is not None else timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return str(self._wall(dt).tm_zone) if dt is not None else self.rule

    def fromutc(self, dt: datetime) -> datetime:
        ts = (dt.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        return dt + timedelta(seconds=self._at(ts).tm_gmtoff)

    def __repr__(self) -> str:
        return f"PosixRules({self.rule!r})"

    def __str__(self) -> str:
        return self.rule


def local_tz() -> tzinfo:
    """The machine's zone with its rules (DST included): $TZ if it names a zone or is a POSIX rule, else the
    system's (/etc/localtime, via tzlocal). Never a fixed offset taken from "now", which would misdate a July
    clip in December."""
    tz = os.environ.get("TZ")
    if tz:
        try:
            return ZoneInfo(tz.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            if POSIX_TZ.fullmatch(tz):
                return PosixRules(tz)
    try:
        import tzlocal

        found = tzlocal.get_localzone()
        return found
    except Exception as e:  # conflicting or missing zone configuration
        msg = f"the local time zone is unknown ({e}); using UTC. Set archive.timezone to an IANA name"
        if msg not in LOCAL_TZ_PROBLEM:
            LOCAL_TZ_PROBLEM.append(msg)
        return UTC


def find_config(explicit: str | None) -> Path | None:
    """The config file in force: --config, $DRAFTSYNC_CONFIG, ./draftsync.toml, then XDG."""
    for given, how in (
        (explicit, "given with --config"),
        (os.environ.get("DRAFTSYNC_CONFIG"), "given in $DRAFTSYNC_CONFIG"),
    ):
        if given:
            p = _expand(Path(given))
            if not p.is_file():
                what = "is a folder, not a file" if p.is_dir() else "does not exist"
                raise ConfigError(f"config file {p} {what} ({how})")
            return p
    local = Path("draftsync.toml")
    if local.is_file():
        return local.resolve()
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(_home() / ".config")
    p = Path(xdg) / "draftsync" / "config.toml"
    return p if p.is_file() else None


def _describe(value: Any) -> str:
    if isinstance(value, SecretStr) or value is None:
        return "" if value is None else " = '**********'"
    if not isinstance(value, str | int | float | bool | Path):
        return ""  # a whole section or list may hold secrets; the key and the message say enough
    text = repr(value)
    return f" = {text[:80]}" + ("..." if len(text) > 80 else "")


_SECRET_KEY = re.compile(r"secret|token|api_key|password|notify\.urls|ping_url", re.I)


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "(top level)"


def _secret_values(data: Any, key: str = "") -> list[str]:
    """Values under secret-looking keys in the raw TOML data and the environment, to scrub from messages."""
    out: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _secret_values(v, str(k))
    elif isinstance(data, list):
        for v in data:
            out += _secret_values(v, key)
    elif isinstance(data, str) and _SECRET_KEY.search(key) and len(data) >= 4:
        out.append(data)
    return out


def _scrub(text: str, secrets: list[str]) -> str:
    for v in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(v, "**********")
    return text


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = _loc(e["loc"])
        value = "" if _SECRET_KEY.search(loc) else _describe(e.get("input"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config/draftsync.example.toml)"
            value = ""
        elif e["type"] == "missing":
            value = ""
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  {loc}{value}: {msg}")
    return "\n".join(lines)


ENV_PREFIX = "DRAFTSYNC_"


def _env_config_vars() -> dict[str, str]:
    """DRAFTSYNC_SECTION__KEY variables (the ones meant as configuration)."""
    return {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX) and "__" in k}


def _check_env_names() -> None:
    """A misspelt section or key in the environment is an error, as it is in the file."""
    bad = []
    for var in sorted(_env_config_vars()):
        section, _, rest = var[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        if field is None:
            bad.append(f"{var}: no section '{section}' (sections: {', '.join(Settings.model_fields)})")
            continue
        model = field.annotation
        key = rest.split("__")[0]
        if isinstance(model, type) and issubclass(model, BaseModel) and key not in model.model_fields:
            bad.append(f"{var}: no key '{key}' in [{section}] (keys: {', '.join(model.model_fields)})")
    if bad:
        raise ConfigError("unknown configuration variable(s) in the environment:\n  " + "\n  ".join(bad))


def _env_touches_settings() -> bool:
    """Does any variable name a section (DRAFTSYNC_WATCH or DRAFTSYNC_WATCH__KEY, in any case)?"""
    for k in os.environ:
        if (
            k.upper().startswith(ENV_PREFIX)
            and k[len(ENV_PREFIX) :].lower().partition("__")[0] in Settings.model_fields
        ):
            return True
    return False


@functools.cache
def _with_environment() -> type[Settings]:
    """Settings whose values the environment overrides (DRAFTSYNC_SECTION__KEY, lists and tables as JSON)."""
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    class EnvSettings(BaseSettings, Settings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # The TOML file arrives as init values; the environment overrides it.
            return (env_settings, init_settings)

    return EnvSettings


def _env_parse_error(e: Exception) -> ConfigError:
    """pydantic-settings reads list and table values from the environment as JSON; say so with an example."""
    for var, value in sorted(_env_config_vars().items()):
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        model = field.annotation if field else None
        sub = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        ann = sub.annotation if sub else (field.annotation if field and not key else None)
        if typing.get_origin(ann) in (list, dict):
            try:
                json.loads(value)
            except ValueError:
                example = json.dumps([value] if typing.get_origin(ann) is list else {"key": value})
                return ConfigError(
                    f"{var} must be JSON for a {'list' if typing.get_origin(ann) is list else 'table'}, "
                    f"e.g. {var}='{example}'"
                )
    return ConfigError(f"invalid configuration in the environment: {e}")


def load(explicit: str | None = None) -> tuple[Settings, Path | None]:
    """Load the effective settings; raise ConfigError with a message naming key, value and problem."""
    path = find_config(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                "save it as UTF-8"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    _check_env_names()
    secrets = _secret_values(data) + [v for k, v in _env_config_vars().items() if _SECRET_KEY.search(k) and len(v) >= 4]
    cls = _with_environment() if _env_touches_settings() else Settings
    try:
        settings = cls(**data)
    except ValidationError as e:
        msg = format_validation_error(e, str(path) if path else "defaults and environment")
        raise ConfigError(_scrub(msg, secrets)) from None
    except Exception as e:
        from pydantic_settings.exceptions import SettingsError

        if not isinstance(e, SettingsError):
            raise
        raise ConfigError(_scrub(str(_env_parse_error(e)), secrets)) from None
    return settings, path


def secrets_of(settings: Settings) -> list[str]:
    """Secret values in force, so that the log redactor can scrub them from any message."""
    out = []
    for get in (settings.tiktok.secret, settings.postforme.key, settings.offsite.secret):
        try:
            v = get()
        except ConfigError:
            continue
        if v:
            out.append(v)
    out += notify_secrets(settings)
    return out


def notify_secrets(settings: Settings) -> list[str]:
    """Notification URLs, the ping URL and the web token: whole, and the credential parts of each URL."""
    from urllib.parse import urlsplit

    try:
        urls = settings.notify.all_urls()
    except ConfigError:
        urls = []
    out: list[str] = []
    for u in [*urls, settings.notify.ping_url.get_secret_value()]:
        if not u:
            continue
        try:
            parts = urlsplit(u)
            out += [parts.password] if parts.password else []
        except ValueError:
            pass
        # Tokens inside the URL (webhook keys, bot tokens, ping UUIDs), quoted alone in an error message.
        out += [x for x in re.split(r"[/@:?&=#]", u.split("://", 1)[-1])
                if len(x) >= 16 and not re.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}", x)]  # fmt: skip
    try:
        out.append(settings.web.read_token())
    except ConfigError:
        pass
    return [x for x in out if x]
