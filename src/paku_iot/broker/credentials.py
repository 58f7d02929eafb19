"""Keeping the broker's password file equal to the registry, one rewrite per burst."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from paku_iot.broker.files import write_password_file
from paku_iot.broker.reload import reload_broker

log = logging.getLogger("paku_iot.broker")

CredentialSource = Callable[[], Awaitable[list[tuple[str, str]]]]


class PasswordFileSync:
    """Projects credentials into Mosquitto's password file and reloads the broker.

    Callers `await sync()` and return once a rewrite that started after their call finished,
    so a device provisioned by an API call can connect as soon as the call returns. Calls
    that arrive while a rewrite is waiting to start share it: a burst of 500 provisions costs
    a few rewrites and reloads, not 500.
    """

    def __init__(
        self,
        *,
        password_file: Path,
        pid_file: Path,
        device_credentials: CredentialSource,
    ) -> None:
        self._password_file = password_file
        self._pid_file = pid_file
        self._device_credentials = device_credentials
        self._lock = asyncio.Lock()
        self._pending: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def sync(self) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(self._pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.shield(self._pending)

    async def _run(self, done: asyncio.Future[None]) -> None:
        async with self._lock:
            if self._pending is done:
                self._pending = None  # later callers need a rewrite that sees their change
            try:
                # Devices only: the backend's account lives in a file of its own, for a
                # listener devices cannot reach.
                entries = await self._device_credentials()
                await asyncio.to_thread(write_password_file, self._password_file, entries)
                reload_broker(self._pid_file)
                log.debug("password file rewritten with %d devices", len(entries))
            except Exception as exc:
                log.exception("could not update the broker's password file")
                done.set_exception(exc)
            else:
                done.set_result(None)
