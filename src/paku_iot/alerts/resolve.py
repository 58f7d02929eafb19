"""Name resolution for alert deliveries, bounded in time and never waited for at exit.

The system's resolver (getaddrinfo) blocks. httpx runs it in the event loop's default
executor, where cancelling an attempt does not stop it and where the loop waits for it when
it closes: a webhook host whose name server does not answer held a delivery, and shutdown,
for the resolver's whole timeout (a test teardown beyond 120 s in CI). Here each lookup
runs in a daemon thread of its own: the attempt stops waiting after its bound, and the
thread, left to finish on its own, holds nothing up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from typing import Any

AddressInfo = list[tuple[Any, ...]]


class ResolutionTimeout(OSError):
    """The name did not resolve within the attempt's bound."""


def _settle(
    future: asyncio.Future[AddressInfo], infos: AddressInfo | None, error: BaseException | None
) -> None:
    if future.done():
        return  # the attempt stopped waiting already
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(infos or [])


async def resolve(host: str, port: int, timeout: float) -> str:  # noqa: ASYNC109 - the bound
    """The first address `host` resolves to for a TCP connection to `port`, as text; an IP
    address is its own answer. Raises socket.gaierror as the resolver does, or
    ResolutionTimeout after `timeout` seconds."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    future: asyncio.Future[AddressInfo] = loop.create_future()

    def look_up() -> None:
        infos: AddressInfo | None = None
        error: BaseException | None = None
        try:
            # Looked up at call time, not import time: the module's function, as httpx uses.
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the waiting attempt, whatever it is
            error = exc
        # RuntimeError: the loop closed meanwhile, and nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, infos, error)

    threading.Thread(target=look_up, name=f"resolve {host}", daemon=True).start()
    try:
        async with asyncio.timeout(timeout):
            infos = await future
    except TimeoutError:
        raise ResolutionTimeout(f"{host} did not resolve within {timeout:g} s") from None
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no address")
    address: str = infos[0][4][0]
    return address
