"""What production (PAKU_ENV=production) refuses to start with: an admin token anyone could
guess, a plain MQTT listener that carries device passwords in clear text beyond this
machine, telling devices to connect without TLS, and a public URL without HTTPS. Each check
raises `SettingsError` naming the setting to change; outside production they do nothing."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from paku_iot.exceptions import SettingsError
from paku_iot.settings import Settings

MIN_ADMIN_TOKEN_LENGTH = 32
# Substrings of the placeholder tokens in examples, compose/dev.yaml and the docs.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "example", "paku-dev", "placeholder")
EXAMPLE_FILES = (Path(".env.example"), Path("config/config.example.yml"))
GENERATE_HINT = "generate one with `openssl rand -hex 32`"


def check_admin_token(settings: Settings) -> None:
    """In production the admin token must be set, long, and not copied from an example."""
    if settings.env != "production":
        return
    token = settings.admin_token
    if not token:
        raise SettingsError(f"PAKU_ADMIN_TOKEN must be set in production: {GENERATE_HINT}")
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise SettingsError(
            f"PAKU_ADMIN_TOKEN is too short for production ({len(token)} characters, at least "
            f"{MIN_ADMIN_TOKEN_LENGTH}): {GENERATE_HINT}"
        )
    lowered = token.lower()
    marker = next((m for m in PLACEHOLDER_MARKERS if m in lowered), None)
    if marker is not None or token in example_values():
        raise SettingsError(
            "PAKU_ADMIN_TOKEN is an example or placeholder value"
            + (f' (it contains "{marker}")' if marker else "")
            + f", not a secret: {GENERATE_HINT}"
        )


def check_plain_listener(settings: Settings, listen_host: str) -> None:
    """In production a plain MQTT listener may only be on loopback, unless the operator says
    the network in front of it is trusted (PAKU_MQTT_ALLOW_PLAIN=true)."""
    if settings.env != "production" or settings.mqtt_allow_plain or is_loopback(listen_host):
        return
    raise SettingsError(
        f"refusing a plain (unencrypted) MQTT listener on {listen_host or 'every address'} in "
        "production: device passwords would cross the network in clear text. Set "
        "PAKU_MQTT_HOST (or broker-config's --listen) to 127.0.0.1, or PAKU_MQTT_ALLOW_PLAIN=true "
        "if only a trusted network reaches that address; devices beyond it connect to the TLS "
        "listener (PAKU_MQTT_TLS_CERT_FILE, PAKU_MQTT_TLS_KEY_FILE)"
    )


def check_device_endpoint(settings: Settings) -> None:
    """In production, what devices are told (claim answers, the dashboard) is never plain
    MQTT: a device that follows it would send its password in clear text, and the production
    stack publishes only the TLS listener anyway. Not even with PAKU_MQTT_ALLOW_PLAIN, which
    is about the backend's own listener on a trusted network, not about devices."""
    if settings.env != "production" or settings.device_mqtt_endpoint.tls:
        return
    raise SettingsError(
        "refusing PAKU_DEVICE_MQTT_TLS=false in production: devices would be told to connect "
        "without TLS and send their passwords in clear text. Remove it (production tells "
        "devices TLS, on PAKU_DEVICE_MQTT_PORT, default PAKU_MQTT_TLS_PORT 8883)"
    )


def check_public_url(settings: Settings) -> None:
    """In production the public URL is HTTPS: the dashboard's session cookie is only marked
    Secure for it, and devices fetch firmware from the links built on it. Unset, links follow
    the request (Caddy in front is HTTPS)."""
    url = settings.public_url
    if settings.env != "production" or not url or url.lower().startswith("https://"):
        return
    raise SettingsError(
        f"refusing PAKU_PUBLIC_URL={url} in production: it must start with https:// (admin "
        "tokens, session cookies and firmware links would cross the network in clear text). "
        "Put a TLS-terminating proxy in front (compose/prod.yaml's Caddy) and give its https:// "
        "address"
    )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def example_values(roots: tuple[Path, ...] | None = None) -> frozenset[str]:
    """Every value written in the example settings files (`.env.example`,
    `config/config.example.yml`) of the source checkout and of the working directory."""
    if roots is None:
        roots = (Path(__file__).resolve().parents[2], Path.cwd())
    values: set[str] = set()
    for root in roots:
        for name in EXAMPLE_FILES:
            try:
                text = (root / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for raw in text.splitlines():
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                _, sep, value = line.partition("=" if name.suffix == ".example" else ":")
                value = value.strip().strip("'\"")
                if sep and value:
                    values.add(value)
    return frozenset(values)
