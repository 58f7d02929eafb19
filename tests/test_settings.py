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


@pytest.fixture
def away_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's .env in the working directory."""
    monkeypatch.chdir(tmp_path)


def endpoint(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[str, int, bool]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = load_settings().device_mqtt_endpoint
    return found.host, found.port, found.tls


@pytest.mark.usefixtures("away_from_dotenv")
def test_the_device_endpoint_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint(monkeypatch) == ("127.0.0.1", 1883, False)
    # A wildcard listener is not an address: this machine is.
    assert endpoint(monkeypatch, PAKU_MQTT_HOST="0.0.0.0") == ("127.0.0.1", 1883, False)
    # With a certificate the broker has a TLS listener, and devices are sent there.
    assert endpoint(
        monkeypatch, PAKU_MQTT_TLS_CERT_FILE="/c.pem", PAKU_PUBLIC_URL="http://lab.local:8000"
    ) == ("lab.local", 8883, True)


@pytest.mark.usefixtures("away_from_dotenv")
def test_the_device_endpoint_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    # What compose/prod.yaml sets: the public name, no certificate known to paku-iot (the
    # broker container adds the TLS listener itself), the backend on the plain port inside.
    prod = {
        "PAKU_ENV": "production",
        "PAKU_PUBLIC_URL": "https://iot.example.com",
        "PAKU_MQTT_HOST": "mosquitto",
        "PAKU_MQTT_PORT": "1883",
    }
    assert endpoint(monkeypatch, **prod) == ("iot.example.com", 8883, True)
    assert endpoint(monkeypatch, PAKU_MQTT_TLS_PORT="9883") == ("iot.example.com", 9883, True)


@pytest.mark.usefixtures("away_from_dotenv")
def test_the_device_endpoint_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint(
        monkeypatch,
        PAKU_PUBLIC_URL="https://iot.example.com",
        PAKU_DEVICE_MQTT_HOST="mqtt.example.net",
        PAKU_DEVICE_MQTT_PORT="443",
        PAKU_DEVICE_MQTT_TLS="true",
    ) == ("mqtt.example.net", 443, True)
    assert endpoint(monkeypatch, PAKU_DEVICE_MQTT_HOST="::1") == ("::1", 443, True)


@pytest.mark.usefixtures("away_from_dotenv")
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("mqtts://mqtt.example.net", "without scheme"),
        ("mqtt.example.net:8883", "PAKU_DEVICE_MQTT_PORT"),
        ("mqtt example", "not a host name"),
        (" ", "required"),
    ],
)
def test_a_device_host_that_is_not_a_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.setenv("PAKU_DEVICE_MQTT_HOST", value)
    with pytest.raises(SettingsError, match="PAKU_DEVICE_MQTT_HOST") as refused:
        load_settings()
    assert why in refused.value.message
    monkeypatch.setenv("PAKU_DEVICE_MQTT_PORT", "0")
    monkeypatch.delenv("PAKU_DEVICE_MQTT_HOST")
    with pytest.raises(SettingsError, match="PAKU_DEVICE_MQTT_PORT"):
        load_settings()


def test_trusted_proxies_are_addresses_or_networks_and_never_everyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().trusted_proxies == ()
    monkeypatch.setenv("PAKU_TRUSTED_PROXIES", "172.16.0.0/12, 192.168.0.0/16 ::1")
    assert [str(n) for n in load_settings().trusted_proxies] == [
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
    ]
    for bad, reason in (
        ("0.0.0.0/0", "trusts every address"),
        ("::/0", "trusts every address"),
        ("caddy", "not an IP address or a CIDR network"),
        ("10.0.0.1/8", "host bits set"),
    ):
        monkeypatch.setenv("PAKU_TRUSTED_PROXIES", bad)
        with pytest.raises(SettingsError, match=rf"PAKU_TRUSTED_PROXIES: .*{reason}"):
            load_settings()
