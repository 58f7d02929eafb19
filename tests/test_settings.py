"""Settings precedence: environment over .env over config.yml over defaults."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from paku_iot.exceptions import SettingsError
from paku_iot.netcheck import ensure_port_free
from paku_iot.settings import load_settings
from paku_iot.storage.urls import async_database_url


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.http_port == 8000
    assert settings.mqtt_port == 1883
    assert settings.data_dir == Path("var")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'var' / 'paku.db'}"


def test_environment_wins_over_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yml"
    config.write_text("http_port: 9001\nmqtt_port: 1999\nlog_level: debug\n")
    monkeypatch.setenv("PAKU_CONFIG_FILE", str(config))
    monkeypatch.setenv("PAKU_HTTP_PORT", "9100")
    settings = load_settings()
    assert settings.http_port == 9100
    assert settings.mqtt_port == 1999
    assert settings.log_level == "DEBUG"


def test_dotenv_is_read_and_empty_values_mean_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PAKU_MQTT_PORT=1884\nPAKU_DATABASE_URL=\nPAKU_BROKER_DIR=\n")
    settings = load_settings()
    assert settings.mqtt_port == 1884
    assert settings.database_url is None
    assert settings.broker_dir is None


def test_the_committed_examples_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PAKU_CONFIG_FILE", str(root / "config" / "config.example.yml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text((root / ".env.example").read_text())
    settings = load_settings()
    assert settings.http_port == 8000
    assert settings.admin_token is None


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAKU_HTTP_PORT", "lots")
    with pytest.raises(SettingsError, match="PAKU_HTTP_PORT"):
        load_settings()


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAKU_CONFIG_FILE", "/nonexistent/config.yml")
    with pytest.raises(SettingsError, match="no such file"):
        load_settings()


def test_bad_database_url_is_explained() -> None:
    with pytest.raises(SettingsError, match="PAKU_DATABASE_URL"):
        async_database_url("mysql://x@y/z")


def test_a_taken_port_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match="PAKU_HTTP_PORT"):
            ensure_port_free("127.0.0.1", port, "PAKU_HTTP_PORT")
