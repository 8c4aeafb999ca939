"""config: lookup order, env overrides, validation messages that name key, value and problem."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from draftsync.config import Settings, find_config, load
from draftsync.errors import ConfigError
from tests.conftest import Env


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DRAFTSYNC_CONFIG", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    s, path = load(None)
    assert path is None
    assert s.watch.paths == [tmp_path / "DraftSync" / "inbox"]
    assert s.archive.root == tmp_path / "DraftSync" / "archive"
    assert s.state.dir == tmp_path / ".local" / "state" / "draftsync"
    assert s.push.enabled is False


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    xdg = tmp_path / "xdg" / "draftsync"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DRAFTSYNC_CONFIG", raising=False)
    assert find_config(None) == xdg / "config.toml"
    (tmp_path / "draftsync.toml").write_text("")
    assert find_config(None) == tmp_path / "draftsync.toml"
    (tmp_path / "env.toml").write_text("")
    monkeypatch.setenv("DRAFTSYNC_CONFIG", str(tmp_path / "env.toml"))
    assert find_config(None) == tmp_path / "env.toml"
    (tmp_path / "explicit.toml").write_text("")
    assert find_config(str(tmp_path / "explicit.toml")) == tmp_path / "explicit.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        find_config(str(tmp_path))
    monkeypatch.setenv("DRAFTSYNC_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"does not exist \(given in \$DRAFTSYNC_CONFIG\)"):
        find_config(None)


def test_env_overrides_the_file(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAFTSYNC_WATCH__SETTLE_SECONDS", "12")
    monkeypatch.setenv("DRAFTSYNC_PUSH__ENABLED", "true")
    s, _ = load(str(env.config))
    assert s.watch.settle_seconds == 12 and s.push.enabled is True


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[watch]\nsettle_seconds = "soon"', "watch.settle_seconds = 'soon'"),
        ("[watch]\nsettle_seconds = -1", "watch.settle_seconds = -1: Input should be greater than 0"),
        ("[watch]\nsetle_seconds = 3", "watch.setle_seconds: unknown key"),
        ('[archive]\nlayout = "../{hash8}{ext}"', "archive.layout"),
        ('[archive]\nlayout = "{year}/{nope}_{hash8}{ext}"', "unknown field(s) ['nope']"),
        ('[archive]\nlayout = "{year}/{date}{ext}"', "must contain {hash8}"),
        ('[archive]\nlayout = "{hash8}/{date}_{hash8}{ext}"', "only be used in the file name part"),
        ('[archive]\ntimezone = "Mars/Olympus"', "archive.timezone = 'Mars/Olympus': not a known time zone"),
        ('[[labels]]\nlabel = "a/b"', "labels[0].label = 'a/b'"),
        ('[push]\nbackend = "youtube"', "push.backend = 'youtube'"),
        ("[watch\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_key_value_and_problem_and_exits_2(env: Env, toml: str, expected: str) -> None:
    env.config.write_text(toml)
    r = env.cli("status")
    assert r.returncode == 2
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_never_write_into_a_watched_folder(env: Env) -> None:
    env.config.write_text(f'[watch]\npaths = ["{env.base}"]\n[archive]\nroot = "{env.base}/archive"\n')
    r = env.cli("status")
    assert r.returncode == 2 and "never writes into a watched folder" in r.stderr


def test_config_show_redacts_secrets(env: Env) -> None:
    env.config.write_text(env.config.read_text() + '[tiktok]\nclient_key = "ck"\nclient_secret = "sup3r-s3cret-value"\n'
                          '[postforme]\napi_key = "pfm_live_k3y"\n')  # fmt: skip
    r = env.cli("config", "show", check=True)
    assert "sup3r-s3cret-value" not in r.stdout and "pfm_live_k3y" not in r.stdout
    assert 'client_key = "ck"' in r.stdout and "**********" in r.stdout
    r = env.cli("config", "show", env={"DRAFTSYNC_TIKTOK__CLIENT_SECRET": "env-s3cret-xyz"}, check=True)
    assert "env-s3cret-xyz" not in r.stdout


def test_help_answers_questions(env: Env) -> None:
    r = env.cli("--help", check=True)
    for word in ("run", "scan", "status", "verify", "reindex", "config", "DRAFTSYNC_", "Exit codes"):
        assert word in r.stdout
    r = env.cli("verify", "--help", check=True)
    assert "--json" in r.stdout and "BLAKE3" in r.stdout


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[watch]\nrescan_minutes = 1e12", "watch.rescan_minutes = 1000000000000.0: Input should be less than or equal"),
        ("[watch]\nsettle_seconds = inf", "watch.settle_seconds"),
        ("[watch]\nsettle_seconds = nan", "watch.settle_seconds"),
        ("[watch]\nopen_write_timeout = 1e30", "watch.open_write_timeout"),
        ("[watch]\nextensions = [\".json\"]", "every .json file is a sidecar"),
        ('[watch]\npaths = ["Sync/Camera"]', "must be an absolute path"),
        ('[watch]\npaths = [""]', "may not be empty"),
        ('[archive]\nroot = ""', "archive.root = '': may not be empty"),
        ('[archive]\nroot = "archive"', "archive.root must be an absolute path"),
        ('[archive]\nlayout = "' + "{stem}/" * 30 + '{hash8}{ext}"', "more than this system allows"),
        ('[archive]\nmin_free_mib = 1e20', "archive.min_free_mib"),
        ('[archive]\ndefault_label = "a/b"', "archive.default_label"),
        ('[archive]\nscrub_schedule = "0 4 * * 8"', "archive.scrub_schedule = '0 4 * * 8': day of week: 8 is outside 0-7"),
        ('[push]\nschedule = "every day"', "push.schedule"),
        ('[state]\ndir = "state"', "state.dir must be an absolute path"),
        ('[[labels]]\nlabel = "x"\nmax_duration = -1', "labels[0].max_duration"),
    ],
)  # fmt: skip
def test_absurd_values_are_refused_at_load_naming_the_key(env: Env, toml: str, expected: str) -> None:
    env.config.write_text(toml)
    assert expected in error_of(env)  # the CLI prints this and exits 2 (see the CLI cases above)


def error_of(env: Env) -> str:
    with pytest.raises(ConfigError) as e:
        load(str(env.config))
    return str(e.value)


def test_an_archive_root_that_is_a_file_is_refused(env: Env) -> None:
    f = env.base / "not-a-folder"
    f.write_text("x")
    env.write_config(archive={"root": str(f)})
    assert "archive.root" in error_of(env) and "is a file, not a folder" in error_of(env)


def test_a_config_error_never_prints_a_secret(env: Env) -> None:
    # A mistake anywhere, with a secret set only in the environment (the whole input used to be echoed).
    env.write_config(archive={"root": str(env.inbox / "archive")})
    secret = "env-only-s3cret-value"
    r = env.cli(
        "status", env={"DRAFTSYNC_TIKTOK__CLIENT_SECRET": secret, "DRAFTSYNC_POSTFORME__API_KEY": "pfm-k3y-xyz"}
    )
    assert r.returncode == 2 and "inside watch.paths" in r.stderr
    assert secret not in r.stderr and "pfm-k3y-xyz" not in r.stderr and "Traceback" not in r.stderr
    env.config.write_text('[tiktok]\nclient_secret = "in-file-s3cret-value"\nchunk_size = 1\n')
    r = env.cli("status")
    assert r.returncode == 2 and "in-file-s3cret-value" not in r.stderr


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("DRAFTSYNC_WATCH__PATHS", "/srv/camera", "DRAFTSYNC_WATCH__PATHS must be JSON for a list, e.g. "
                                                  "DRAFTSYNC_WATCH__PATHS='[\"/srv/camera\"]'"),
        ("DRAFTSYNC_WATHC__SETTLE_SECONDS", "3", "DRAFTSYNC_WATHC__SETTLE_SECONDS: no section 'wathc'"),
        ("DRAFTSYNC_WATCH__SETLE_SECONDS", "3", "no key 'setle_seconds' in [watch]"),
        ("DRAFTSYNC_WATCH__SETTLE_SECONDS", "soon", "watch.settle_seconds"),
    ],
)  # fmt: skip
def test_bad_environment_values_get_one_clear_line(
    env: Env, monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    msg = error_of(env)
    assert expected in msg and len(msg.splitlines()) <= 2, msg


def test_an_environment_error_exits_2_without_a_traceback(env: Env) -> None:
    r = env.cli("status", env={"DRAFTSYNC_WATCH__PATHS": "/srv/camera"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_config_file_that_is_not_utf8_is_named(env: Env) -> None:
    env.config.write_bytes(b"[watch]\nsettle_seconds = 5 # caf\xe9\n")
    assert "is not UTF-8 text (byte 0xe9" in error_of(env)


def test_choices_are_case_insensitive(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.config.write_text(env.config.read_text().replace('level = "info"', 'level = "INFO"') +
                          '[push]\nbackend = "Dry-Run"\n[[labels]]\nlabel = "p"\norientation = "Portrait"\n')  # fmt: skip
    monkeypatch.setenv("DRAFTSYNC_LOG__FORMAT", "JSON")
    s, _ = load(str(env.config))
    assert (s.log.level, s.log.format, s.push.backend, s.labels[0].orientation) == ("info", "json", "dry-run",
                                                                                   "portrait")  # fmt: skip


def test_the_example_config_loads_and_matches_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in [k for k in os.environ if k.startswith("DRAFTSYNC_")]:
        monkeypatch.delenv(k)
    example, _ = load(str(Path(__file__).resolve().parent.parent / "config" / "draftsync.example.toml"))
    defaults = Settings()
    ex, de = example.model_dump(mode="json"), defaults.model_dump(mode="json")
    # Only these are examples rather than defaults.
    assert ex["watch"].pop("paths") == [str(tmp_path / "Sync" / "Camera")]
    de["watch"].pop("paths")
    assert [r["label"] for r in ex.pop("labels")] == ["tiktok", "screen-recordings"] and de.pop("labels") == []
    assert ex == de


def test_local_time_is_a_zone_with_rules_not_todays_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime

    import tzlocal

    from draftsync.config import local_tz

    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setattr(tzlocal, "get_localzone", lambda: ZoneInfo("Europe/Berlin"))  # as /etc/localtime says
    tz = local_tz()
    assert datetime(2026, 7, 1, 12, tzinfo=tz).utcoffset() != datetime(2026, 12, 1, 12, tzinfo=tz).utcoffset()
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    assert local_tz() == ZoneInfo("America/Los_Angeles")
