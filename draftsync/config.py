"""Configuration: the pydantic models, where the TOML file is found, env overrides, defaults, and
validation messages that name the key, the value and what is wrong.

Config is what the user edits; state (the catalog, tokens) lives elsewhere, under `state.dir`.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import tzinfo
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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from draftsync.errors import ConfigError

VIDEO_EXTENSIONS = [".mp4", ".mov", ".m4v", ".3gp", ".webm", ".mkv", ".avi", ".mts", ".m2ts", ".hevc"]
LAYOUT_FIELDS = {
    "year", "month", "day", "date", "time", "hash8", "hash", "label", "ext", "stem", "orientation",
}  # fmt: skip


def _home() -> Path:
    return Path.home()


def _state_home() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg else _home() / ".local" / "state"


def _expand(p: Path) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(p))))


def _check_cron(v: str) -> str:
    from draftsync.schedule import parse

    return parse(v).text  # ValueError names the field and what is wrong


# A cron expression as crontab(5) reads it (0 and 7 = Sunday), checked when the config loads.
CronExpr = Annotated[str, AfterValidator(_check_cron)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class WatchConfig(Section):
    paths: list[Path] = Field(default_factory=lambda: [_home() / "DraftSync" / "inbox"], min_length=1)
    settle_seconds: float = Field(5.0, gt=0, le=86400)
    recursive: bool = True
    polling: bool = False
    poll_seconds: float = Field(10.0, gt=0, le=3600)
    rescan_minutes: float = Field(15.0, gt=0)
    # A writer that keeps a file open this long without closing it is presumed dead.
    open_write_timeout: float = Field(3600.0, gt=0)
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    ignore: list[str] = Field(default_factory=list)

    @field_validator("paths")
    @classmethod
    def _expand_paths(cls, v: list[Path]) -> list[Path]:
        return [_expand(p) for p in v]

    @field_validator("extensions")
    @classmethod
    def _norm_ext(cls, v: list[str]) -> list[str]:
        out = []
        for e in v:
            e = e.strip().lower()
            if not e:
                raise ValueError("an extension may not be empty")
            out.append(e if e.startswith(".") else "." + e)
        return out


class ArchiveConfig(Section):
    root: Path = Field(default_factory=lambda: _home() / "DraftSync" / "archive")
    layout: str = "{year}/{month}/{label}/{date}_{time}_{hash8}{ext}"
    default_label: str = "camera"
    timezone: str = "local"
    scrub_schedule: CronExpr = "0 4 * * 0"
    scrub_fraction: float = Field(0.25, gt=0, le=1)
    # Ingest pauses rather than fill the archive disk to the last byte.
    min_free_mib: int = Field(64, ge=0)

    @field_validator("root")
    @classmethod
    def _expand_root(cls, v: Path) -> Path:
        return _expand(v)

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


class LabelRule(Section):
    label: str = Field(min_length=1, max_length=64)
    path: str | None = None  # glob on the path relative to its watch root, e.g. "**/TikTok/**"
    name: str | None = None  # glob on the file name, e.g. "ScreenRecording*"
    orientation: Literal["portrait", "landscape", "square"] | None = None
    min_duration: float | None = None
    max_duration: float | None = None

    @field_validator("label")
    @classmethod
    def _check_label(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.strip(". ") == "":
            raise ValueError("a label is one folder name: no '/', '\\' and not only dots")
        return v


class StateConfig(Section):
    dir: Path = Field(default_factory=lambda: _state_home() / "draftsync")

    @field_validator("dir")
    @classmethod
    def _expand_dir(cls, v: Path) -> Path:
        return _expand(v)


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRAFTSYNC_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    watch: WatchConfig = Field(default_factory=WatchConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    labels: list[LabelRule] = Field(default_factory=list)
    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    tiktok: TikTokConfig = Field(default_factory=TikTokConfig)
    postforme: PostForMeConfig = Field(default_factory=PostForMeConfig)
    offsite: OffsiteConfig = Field(default_factory=OffsiteConfig)

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


def local_tz() -> tzinfo:
    tz = os.environ.get("TZ")
    if tz:
        try:
            return ZoneInfo(tz.lstrip(":"))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    from datetime import datetime

    found = datetime.now().astimezone().tzinfo
    assert found is not None
    return found


def find_config(explicit: str | None) -> Path | None:
    """The config file in force: --config, $DRAFTSYNC_CONFIG, ./draftsync.toml, then XDG."""
    if explicit:
        p = _expand(Path(explicit))
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (given with --config)")
        return p
    env = os.environ.get("DRAFTSYNC_CONFIG")
    if env:
        p = _expand(Path(env))
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (given in $DRAFTSYNC_CONFIG)")
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
    text = repr(value)
    return f" = {text[:80]}" + ("..." if len(text) > 80 else "")


_SECRET_KEY = re.compile(r"secret|token|api_key|password", re.I)


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "(top level)"


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
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        settings = Settings(**data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path) if path else "defaults and environment")) from None
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
    return out
