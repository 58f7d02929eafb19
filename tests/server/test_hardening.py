"""Production refuses guessable admin tokens, plain MQTT beyond loopback and telling devices
to connect without TLS, as one clear line from the command; and `paku-iot dev --tls` serves
devices over TLS with a generated CA."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from paku_iot.exceptions import SettingsError
from paku_iot.server import hardening
from paku_iot.settings import Settings, load_settings
from tests.support import eventually, free_port
from tests.support.mqtt import ACCEPTED, DeviceClient
from tests.support.processes import (
    dev_environment,
    paku,
    provision,
    read_until,
    run_paku,
    stop,
    stored_telemetry,
)

# Made at run time: a literal would be a finding of the secret scan (scripts/scan_secrets.py).
GOOD_TOKEN = secrets.token_hex(16)  # 32 characters
# Long enough, but placeholders: what the check must see through.
PADDING = "x" * 32
PRODUCTION = {"PAKU_ENV": "production"}


def production(**values: object) -> Settings:
    return Settings(env="production", **values)  # type: ignore[arg-type]


# --- the checks themselves ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (None, "must be set"),
        ("short-token", "too short"),
        ("change-me-" + PADDING, 'contains "change-me"'),
        ("paku-dev-admin-token-" + PADDING, 'contains "paku-dev"'),
        ("an-EXAMPLE-admin-token-" + PADDING, 'contains "example"'),
    ],
)
def test_weak_admin_tokens_are_refused_in_production(token: str | None, why: str) -> None:
    with pytest.raises(SettingsError, match="PAKU_ADMIN_TOKEN") as refused:
        hardening.check_admin_token(production(admin_token=token))
    assert why in refused.value.message
    if token:
        assert token not in refused.value.message  # never print the secret
    hardening.check_admin_token(Settings(admin_token=token))  # development: anything goes


def test_a_strong_admin_token_is_accepted() -> None:
    hardening.check_admin_token(production(admin_token=GOOD_TOKEN))


def test_values_from_the_example_files_are_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "copied-from-a-template-" + PADDING
    (tmp_path / ".env.example").write_text(f"# comment\nPAKU_ADMIN_TOKEN={value}\nPAKU_X=\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.example.yml").write_text('admin_token: "yaml-token-value"\n')
    assert hardening.example_values((tmp_path,)) >= {value, "yaml-token-value"}
    assert "" not in hardening.example_values((tmp_path,))
    monkeypatch.chdir(tmp_path)  # the working directory's examples count too
    with pytest.raises(SettingsError, match="example or placeholder") as refused:
        hardening.check_admin_token(production(admin_token=value))
    assert "it contains" not in refused.value.message  # found as a value, not by a marker


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.53"])
def test_a_plain_listener_on_loopback_is_fine(host: str) -> None:
    hardening.check_plain_listener(production(), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "mqtt.internal", ""])
def test_a_plain_listener_elsewhere_needs_allow_plain(host: str) -> None:
    with pytest.raises(SettingsError, match="PAKU_MQTT_ALLOW_PLAIN=true"):
        hardening.check_plain_listener(production(), host)
    hardening.check_plain_listener(production(mqtt_allow_plain=True), host)
    hardening.check_plain_listener(Settings(), host)


def test_production_never_tells_devices_plain_mqtt() -> None:
    with pytest.raises(SettingsError, match="PAKU_DEVICE_MQTT_TLS=false") as refused:
        hardening.check_device_endpoint(production(device_mqtt_tls=False))
    assert "clear text" in refused.value.message
    # Not even where the backend's own plain listener is allowed.
    with pytest.raises(SettingsError, match="PAKU_DEVICE_MQTT_TLS"):
        hardening.check_device_endpoint(production(device_mqtt_tls=False, mqtt_allow_plain=True))
    hardening.check_device_endpoint(production())  # the default: TLS
    hardening.check_device_endpoint(production(device_mqtt_tls=True, device_mqtt_port=443))
    hardening.check_device_endpoint(Settings(device_mqtt_tls=False))  # development


@pytest.mark.parametrize("url", ["http://paku.example.com", "HTTP://paku.example.com/"])
def test_production_refuses_a_plain_http_public_url(url: str) -> None:
    with pytest.raises(SettingsError, match="PAKU_PUBLIC_URL") as refused:
        hardening.check_public_url(production(public_url=url))
    assert "https://" in refused.value.message
    hardening.check_public_url(production(public_url="https://paku.example.com"))
    hardening.check_public_url(production())  # unset: links follow the request
    hardening.check_public_url(Settings(public_url=url))  # development


@pytest.mark.parametrize("url", ["paku.example.com", "ftp://paku.example.com", "https://"])
def test_a_public_url_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="PAKU_PUBLIC_URL"):
        load_settings(public_url=url)


# --- from the command line ----------------------------------------------------------------


def assert_one_clear_line(stderr: str, *names: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("paku-iot: "), stderr
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("token", [None, "too-short", "paku-dev-admin-token-" + PADDING])
def test_serve_refuses_a_weak_admin_token_in_production(tmp_path: Path, token: str | None) -> None:
    env = {**PRODUCTION, **({"PAKU_ADMIN_TOKEN": token} if token else {})}
    result = run_paku("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert_one_clear_line(result.stderr, "PAKU_ADMIN_TOKEN")
    if token:
        assert token not in result.stderr


def test_serve_with_a_good_token_gets_past_the_checks(tmp_path: Path) -> None:
    # No database listens there: reaching that error means the token was accepted.
    env = {
        **PRODUCTION,
        "PAKU_ADMIN_TOKEN": GOOD_TOKEN,
        "PAKU_DATABASE_URL": f"postgresql://paku@127.0.0.1:{free_port()}/paku",
        "PAKU_MQTT_PASSWORD": "x",
    }
    for role in ("all", "api"):
        result = run_paku("serve", "--role", role, env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert "cannot reach the database" in result.stderr
        assert "PAKU_ADMIN_TOKEN" not in result.stderr
    # A collector alone serves no API: it needs no admin token.
    env.pop("PAKU_ADMIN_TOKEN")
    result = run_paku("serve", "--role", "collector", env=env, cwd=tmp_path)
    assert "cannot reach the database" in result.stderr


def test_serve_refuses_to_tell_devices_plain_mqtt_in_production(tmp_path: Path) -> None:
    env = {**PRODUCTION, "PAKU_ADMIN_TOKEN": GOOD_TOKEN, "PAKU_DEVICE_MQTT_TLS": "false"}
    for role in ("all", "api"):
        result = run_paku("serve", "--role", role, env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert_one_clear_line(result.stderr, "PAKU_DEVICE_MQTT_TLS=false", "clear text")
    # A collector alone tells devices nothing: it goes on (to the missing database).
    env["PAKU_DATABASE_URL"] = f"postgresql://paku@127.0.0.1:{free_port()}/paku"
    env["PAKU_MQTT_PASSWORD"] = "x"
    result = run_paku("serve", "--role", "collector", env=env, cwd=tmp_path)
    assert "cannot reach the database" in result.stderr


def test_serve_refuses_a_plain_http_public_url_in_production(tmp_path: Path) -> None:
    env = {**PRODUCTION, "PAKU_ADMIN_TOKEN": GOOD_TOKEN, "PAKU_PUBLIC_URL": "http://paku.example"}
    for role in ("all", "api"):
        result = run_paku("serve", "--role", role, env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert_one_clear_line(result.stderr, "PAKU_PUBLIC_URL", "https://")


def test_broker_config_refuses_plain_mqtt_beyond_loopback_in_production(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    port = {"PAKU_MQTT_PORT": str(free_port())}
    for args, env in (
        (["--listen", "0.0.0.0"], {**PRODUCTION, **port}),
        ([], {**PRODUCTION, **port, "PAKU_MQTT_HOST": "192.168.1.10"}),
    ):
        result = run_paku("broker-config", "--out", str(out), *args, env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert_one_clear_line(result.stderr, "PAKU_MQTT_ALLOW_PLAIN", "PAKU_MQTT_HOST")
        assert not out.exists(), "nothing is written"

    for args, env in (
        (["--listen", "127.0.0.1"], {**PRODUCTION, **port}),
        (["--listen", "0.0.0.0"], {**PRODUCTION, **port, "PAKU_MQTT_ALLOW_PLAIN": "true"}),
        (["--listen", "0.0.0.0"], port),  # development
    ):
        result = run_paku("broker-config", "--out", str(out), *args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (
            f"listener {port['PAKU_MQTT_PORT']} {args[1]}" in (out / "mosquitto.conf").read_text()
        )


def test_dev_refuses_both_in_production(tmp_path: Path) -> None:
    env, _, _ = dev_environment(tmp_path)
    no_token = run_paku("dev", env={**env, **PRODUCTION}, cwd=tmp_path)
    assert no_token.returncode == 1
    assert_one_clear_line(no_token.stderr, "PAKU_ADMIN_TOKEN")

    open_plain = {**env, **PRODUCTION, "PAKU_ADMIN_TOKEN": GOOD_TOKEN, "PAKU_MQTT_HOST": "0.0.0.0"}
    refused = run_paku("dev", env=open_plain, cwd=tmp_path)
    assert refused.returncode == 1
    assert_one_clear_line(refused.stderr, "PAKU_MQTT_ALLOW_PLAIN")
    assert not (tmp_path / "var").exists(), "refused before anything is written"


# --- dev --tls ------------------------------------------------------------------------------


async def test_dev_tls_serves_devices_over_tls_with_a_generated_ca(tmp_path: Path) -> None:
    env, http_port, _ = dev_environment(tmp_path)
    tls_port = free_port()
    env["PAKU_MQTT_TLS_PORT"] = str(tls_port)
    base_url = f"http://127.0.0.1:{http_port}"
    certs = tmp_path / "var" / "certs"

    dev = paku("dev", "--tls", env=env, cwd=tmp_path)
    assert dev.stdout is not None
    try:
        banner = read_until(dev.stdout, "Press Ctrl-C")
        assert f"mqtts://127.0.0.1:{tls_port}" in banner
        assert f"CA: {certs / 'ca.crt'}" in banner
        assert (certs / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (certs / "server.key").stat().st_mode & 0o777 == 0o600
        token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()

        password = await provision(base_url, "tls-dev-1", token)
        device = DeviceClient(
            "127.0.0.1", tls_port, "tls-dev-1", password, tls=True, ca_file=certs / "ca.crt"
        )

        async def connected() -> None:
            # Provisioning reloads the broker; until then the password is not known there.
            try:
                await device.connect()
            except Exception as exc:
                raise AssertionError(str(exc)) from None

        await eventually(connected)
        sample = {"ts": int(time.time() * 1000), "v": 42}
        try:
            code = await device.publish("paku/tls-dev-1/telemetry", json.dumps(sample))
            assert code in ACCEPTED
        finally:
            await device.disconnect()

        async def stored() -> None:
            items = await stored_telemetry(base_url, "tls-dev-1", token)
            assert [item["payload"] for item in items] == [sample]

        await eventually(stored)
    finally:
        code, stderr = stop(dev)
    assert code == 0, stderr
    assert "Traceback" not in stderr
