"""Checking ports before we start, so a clash is a clear message and not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from paku_iot.exceptions import SettingsError


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Raise `SettingsError` naming `setting` when `host:port` cannot be bound."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SettingsError(f"cannot resolve {host!r}: {exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise SettingsError(
                f"port {port} on {host} is already in use ({exc.strerror}); "
                f"set {setting} to a free port, e.g. {setting}={port + 1}"
            ) from None


async def wait_for_port(host: str, port: int, timeout: float) -> bool:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False
