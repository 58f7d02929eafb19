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
from paku_iot.secretfiles import read_or_create_secret


def prepare_broker_dir(root: Path, options: BrokerOptions) -> BrokerPaths:
    """Write config and ACL, create the backend's broker password on first use, and an initial
    password file (backend only) so the broker can start before paku-iot fills it in."""
    paths = BrokerPaths(root.resolve())
    write_broker_files(paths, options)
    password = read_or_create_secret(paths.backend_password, nbytes=24)
    if not paths.password_file.exists():
        write_password_file(
            paths.password_file, [(options.backend_username, hash_password(password))]
        )
    return paths
