"""config: lookup order, env overrides, validation messages that name key, value and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from draftsync.config import find_config, load
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
