"""Test helpers: real services, real clients. Nothing here mocks the broker or the database.

What more than one test module uses lives in this package; fixtures stay in the conftest.py
files, where pytest finds them. Here: skipping or failing on a missing service, free ports,
and retrying a check. The modules next to it:

- `mqtt`: `DeviceClient`, the one MQTT device of the tests (paho, MQTT v5, TLS optional)
- `broker`: a Mosquitto of the test's own (`Broker`)
- `postgres`: the PostgreSQL the tests make their databases on
- `processes`: `paku-iot` commands as child processes
- `cli`: the admin CLI against a running `paku-iot dev`
- `downlink`: devices that take commands and configuration
- `served`: a `paku-iot serve` process (`Served`)
- `faults`: what the fault tests drive (deployments, a fleet, a TCP proxy, a private
  PostgreSQL cluster, a small disk)
- `strategies`: Hypothesis strategies of hostile input
- `compose`, `containers`: the compose files and Dockerfile read, and the broker container's
  entrypoint run as a process
- `ui`: the dashboard, signed in
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

T = TypeVar("T")


def require(condition: bool, why: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {why}")
    pytest.skip(why)


# Ports for the services a test starts come from below Linux's ephemeral range (32768-60999):
# a port the kernel hands out with bind(0) can be given to another test's outgoing connection
# between our choice and the server's bind ("Address already in use"). Each xdist worker has
# its own slice, so workers never choose the same port either.
_PORT_RANGE_START = 20000
_PORT_SLICE = 1500


@functools.cache
def _worker_ports() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    start = _PORT_RANGE_START + (index % 8) * _PORT_SLICE
    ports = list(range(start, start + _PORT_SLICE))
    # From a random place in the slice: another test run on the machine at the same time
    # (its workers have the same slices) then rarely walks the same ports in step.
    first = random.randrange(_PORT_SLICE)
    return itertools.cycle(ports[first:] + ports[:first])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    ports = _worker_ports()
    for _ in range(_PORT_SLICE):
        port = next(ports)
        if _bindable(port):
            return port
    raise RuntimeError("no free port left in this worker's slice")


def wait_for_port_sync(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Retry `check` until it returns without an AssertionError (and truthy), or time out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result is None or result:
                return result
            raise AssertionError(f"check returned {result!r}")
        except AssertionError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(0.05)
