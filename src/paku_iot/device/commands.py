"""Commands on `paku/<id>/cmd` and their acknowledgements on `paku/<id>/event/ack`
(docs/protocol.md section 8): which handler runs, what the ack says, and why a command
delivered twice runs once.

No MQTT here: `CommandRunner.handle` takes a payload and returns the ack bytes to publish.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from paku_iot.device.messages import (
    Command,
    InvalidCommand,
    encode_payload,
    now_ms,
    parse_command,
)
from paku_iot.protocol import NAME_RULE, is_valid_command_name

log = logging.getLogger("paku_iot.device")

T = TypeVar("T")

CommandHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""`async (params) -> result`: the result (any JSON value) becomes the ack's `result`."""

DEFAULT_REMEMBERED_COMMANDS = 256


class CommandError(Exception):
    """Raised by a command handler to answer `{"ok": false, "error": <message>}`.

    Any other exception is answered the same way (its message, or its type name when it has
    none) but is also logged with its traceback, as a bug rather than a refusal."""


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    id: str
    name: str


class GuardedTasks:
    """Runs user code (command and config handlers) in tasks of its own.

    The caller waits for the task without inheriting its cancellation, so that at disconnect
    the device can cancel user code while the gmqtt task that delivered the message ends
    normally (gmqtt reads the PUBACK code from that task's result: a cancelled one is an error
    it logs)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, awaitable: Awaitable[T]) -> asyncio.Task[T]:
        async def run() -> T:
            return await awaitable

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.wait({task})
        return task

    def cancel_all(self) -> set[asyncio.Task[Any]]:
        """Cancel what still runs; returns the tasks, to be awaited."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks


class CommandRunner:
    """Handlers by command name, and a bounded memory of recent command ids and their acks.

    `handle(payload)` implements the device side of a command:

    - Not JSON, not an object, or no string `id`: ignored (there is nobody to answer).
    - An id answered recently (a QoS 1 redelivery, or the backend sending it again): the same
      ack bytes again, `ts` included, so the backend stores the ack once; not run again. A
      redelivery that arrives while the first delivery still runs waits for its answer.
    - Other invalid fields (a name outside 1-64 of `A-Z a-z 0-9 _ . -`, params not an object,
      expiresAtMs not an integer, expiresAt not RFC 3339 with a zone):
      `{"ok": false, "error": "invalid command: ..."}`.
    - The expiry (`expiresAtMs`, else `expiresAt`) not in the future:
      `{"ok": false, "error": "expired"}`, not run.
    - No handler for the name: `{"ok": false, "error": "unknown command: <name>"}`.
    - Otherwise the handler runs: `{"ok": true, "result": <its return value>}`, or
      `{"ok": false, "error": <message>}` when it raises.

    Every ack also carries `ts` (epoch ms, when it was answered).
    """

    def __init__(
        self,
        device_id: str,
        *,
        remembered: int = DEFAULT_REMEMBERED_COMMANDS,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.device_id = device_id
        self.received: list[ReceivedCommand] = []
        self.executed: list[ReceivedCommand] = []
        self._handlers: dict[str, CommandHandler] = {}
        # Command id -> its ack bytes; None while running, or when interrupted (then removed).
        self._answers: OrderedDict[str, asyncio.Future[bytes | None]] = OrderedDict()
        self._remembered = remembered
        self._on_change = on_change
        self._user_code = GuardedTasks()

    def register(self, name: str, handler: CommandHandler) -> None:
        if not is_valid_command_name(name):
            raise ValueError(f"invalid command name {name!r}: {NAME_RULE}")
        self._handlers[name] = handler

    def cancel_running(self) -> set[asyncio.Task[Any]]:
        return self._user_code.cancel_all()

    async def handle(self, payload: bytes) -> bytes | None:
        """The ack to publish for this `cmd` payload, or None when there is nothing to send
        (malformed without an id, or interrupted by a disconnect)."""
        command: Command | None = None
        invalid: InvalidCommand | None = None
        try:
            command = parse_command(payload)
            command_id = command.id
        except InvalidCommand as exc:
            if exc.command_id is None:
                log.warning("%s: ignoring a malformed command: %s", self.device_id, exc)
                return None
            command_id, invalid = exc.command_id, exc
        else:
            self.received.append(ReceivedCommand(command.id, command.name))
            self._on_change()

        remembered = self._answers.get(command_id)
        if remembered is not None:
            self._answers.move_to_end(command_id)
            log.info("%s: command %s delivered again; same answer", self.device_id, command_id)
            return await remembered

        remembered = asyncio.get_running_loop().create_future()
        self._answers[command_id] = remembered
        while len(self._answers) > self._remembered:
            self._answers.popitem(last=False)
        answer: bytes | None = None
        try:
            if invalid is not None:
                log.warning("%s: command %s: %s", self.device_id, command_id, invalid)
                answer = self._encode({"id": command_id, "ok": False, "error": str(invalid)})
            else:
                assert command is not None
                body = await self._execute(command)
                answer = None if body is None else self._encode(body)
        finally:
            if answer is None and self._answers.get(command_id) is remembered:
                # Interrupted: forget the id, so that the redelivery (our PUBACK never left)
                # runs the command.
                del self._answers[command_id]
            remembered.set_result(answer)
        return answer

    async def _execute(self, command: Command) -> dict[str, Any] | None:
        """The ack body for `command` (without `ts`), or None when interrupted."""
        if command.expired():
            log.info("%s: command %s expired; not run", self.device_id, command.id)
            return {"id": command.id, "ok": False, "error": "expired"}
        handler = self._handlers.get(command.name)
        if handler is None:
            log.warning("%s: unknown command %r", self.device_id, command.name)
            return {"id": command.id, "ok": False, "error": f"unknown command: {command.name}"}
        log.info("%s: running command %s (%s)", self.device_id, command.id, command.name)
        self.executed.append(ReceivedCommand(command.id, command.name))
        self._on_change()
        task = await self._user_code.run(handler(command.params))
        if task.cancelled():
            return None
        error = task.exception()
        if error is None:
            return {"id": command.id, "ok": True, "result": task.result()}
        if isinstance(error, CommandError):
            log.info("%s: command %s failed: %s", self.device_id, command.id, error)
        else:
            log.error("%s: command %s raised", self.device_id, command.id, exc_info=error)
        return {"id": command.id, "ok": False, "error": str(error) or type(error).__name__}

    def _encode(self, body: dict[str, Any]) -> bytes:
        body = {**body, "ts": now_ms()}
        try:
            return encode_payload(body)
        except ValueError as exc:  # the handler returned something JSON cannot carry
            log.error("%s: command %s: result not sendable: %s", self.device_id, body["id"], exc)
            error = f"result not sendable: {exc}"
            return encode_payload({"id": body["id"], "ok": False, "error": error, "ts": body["ts"]})
