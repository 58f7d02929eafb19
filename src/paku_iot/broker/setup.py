"""Preparing a broker directory for a Mosquitto that paku-iot did not start, or for dev."""

from __future__ import annotations

from pathlib import Path

from paku_iot.broker.files import (
    BrokerOptions,
    BrokerPaths,
    write_broker_files,
    write_password_file,
)
from paku_iot.broker.passwords import hash_password
from paku_iot.secretfiles import read_or_create_secret, write_private_file


def prepare_broker_dir(root: Path, options: BrokerOptions) -> BrokerPaths:
    """Write config and ACLs, create the backend's broker password on first use with its own
    password file, and an empty device password file so the broker can start before
    paku-iot fills it in."""
    paths = BrokerPaths(root.resolve())
    write_broker_files(paths, options)
    password = read_or_create_secret(paths.backend_password, nbytes=24)
    write_password_file(
        paths.backend_password_file, [(options.backend_username, hash_password(password))]
    )
    _keep_devices_only(paths.password_file, options.backend_username)
    return paths


def _keep_devices_only(password_file: Path, backend_username: str) -> None:
    """Create the device password file, or take the backend's entry out of one written before
    the backend had a listener of its own: there it would open the device listeners."""
    if not password_file.exists():
        write_password_file(password_file, [])
        return
    lines = password_file.read_text().splitlines(keepends=True)
    devices = [line for line in lines if not line.startswith(f"{backend_username}:")]
    if devices != lines:
        write_private_file(password_file, "".join(devices))
