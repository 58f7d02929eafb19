"""Commands: queued until the device is online, sent, then acked, failed or expired.

The status is only ever what is known: `sent` means published while the device was online,
`acked`/`failed` only what the device answered, `expired` that its time ran out unanswered.
Sending is claimed in the database first (queued -> sent), so with several processes each
command goes out once.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paku_iot.downlink.publisher import Publisher
from paku_iot.downlink.targets import target_devices
from paku_iot.exceptions import Conflict, InvalidInput, NotFound
from paku_iot.protocol import (
    DEFAULT_COMMAND_TTL_S,
    MAX_COMMAND_TTL_S,
    MIN_COMMAND_TTL_S,
    NAME_RULE,
    command_topic,
    is_valid_command_name,
)
from paku_iot.storage.commands import CommandStatus, CommandStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import CommandRecord

log = logging.getLogger("paku_iot.downlink")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_ONE_SECOND = timedelta(seconds=1)


def _now() -> datetime:
    return datetime.now(UTC)


def new_command_id() -> str:
    return "c-" + secrets.token_hex(10)


def command_message(command: CommandRecord, now: datetime) -> bytes:
    """The JSON a device receives on paku/<id>/cmd, published at `now`.

    The expiry comes in three forms, so that firmware needs no date parser: `expiresAt`
    (RFC 3339), `expiresAtMs` (epoch milliseconds, for a device whose clock is set) and
    `ttlSeconds` (whole seconds left at `now`, for one whose clock is not set yet: counted
    from when the device receives it, it can only be later than the truth)."""
    return json.dumps(
        {
            "id": command.id,
            "name": command.name,
            "params": command.params,
            "expiresAt": command.expires_at.isoformat().replace("+00:00", "Z"),
            "expiresAtMs": (command.expires_at - _EPOCH) // _ONE_MS,
            "ttlSeconds": max(0, (command.expires_at - now) // _ONE_SECOND),
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True, slots=True)
class NewCommand:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: int = DEFAULT_COMMAND_TTL_S


def check_command(command: NewCommand) -> None:
    """The device contract's rules for a command (docs/protocol.md section 8), checked here
    whoever the caller is (the API, the dashboard, a script): a command a device would refuse
    for its name is not queued at all."""
    if not is_valid_command_name(command.name):
        raise InvalidInput(f"invalid command name {command.name!r}: {NAME_RULE}")
    if not MIN_COMMAND_TTL_S <= command.ttl_seconds <= MAX_COMMAND_TTL_S:
        raise InvalidInput(
            f"ttlSeconds must be between {MIN_COMMAND_TTL_S} and {MAX_COMMAND_TTL_S}"
        )


class CommandService:
    def __init__(
        self,
        commands: CommandStore,
        devices: DeviceStore,
        publisher: Publisher,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._commands = commands
        self._devices = devices
        self._publisher = publisher
        self._clock = clock

    async def create(
        self, device_ids: list[str], command: NewCommand, idempotency_key: str | None = None
    ) -> list[CommandRecord]:
        """One command per device, in the order given. With an Idempotency-Key already used
        for these devices, the commands made then are returned instead."""
        check_command(command)
        if idempotency_key is not None:
            earlier = await self._earlier(device_ids, idempotency_key)
            if earlier is not None:
                return earlier
        now = self._clock()
        records = [
            CommandRecord(
                id=new_command_id(),
                device_id=device_id,
                name=command.name,
                params=command.params,
                status=CommandStatus.QUEUED,
                created_at=now,
                expires_at=now + timedelta(seconds=command.ttl_seconds),
                idempotency_key=idempotency_key,
            )
            for device_id in device_ids
        ]
        try:
            await self._commands.insert(records)
        except Conflict:
            # Two retries raced each other: the other one made the commands.
            assert idempotency_key is not None
            earlier = await self._earlier(device_ids, idempotency_key)
            if earlier is None:
                raise
            return earlier
        # Inserted first, then sent if online: a device coming online in between is seen
        # either here or by the collector's dispatch, never by neither.
        for device_id in device_ids:
            await self.dispatch(device_id)
        return [await self.get(r.device_id, r.id) for r in records]

    async def _earlier(self, device_ids: list[str], key: str) -> list[CommandRecord] | None:
        found = {c.device_id: c for c in await self._commands.by_idempotency_key(device_ids, key)}
        if not found:
            return None
        if set(found) != set(device_ids):
            raise Conflict(
                "this Idempotency-Key was used for other devices", code="idempotency_key_reused"
            )
        return [found[d] for d in device_ids]

    async def dispatch(self, device_id: str | None = None) -> int:
        """Send queued, unexpired commands of online devices (of one device, or all)."""
        if not self._publisher.connected:
            return 0
        now = self._clock()
        claimed = await self._commands.claim_queued(now, device_id=device_id)
        unsent: list[str] = []
        for command in claimed:
            if not self._publisher.connected:
                unsent.append(command.id)
                continue
            self._publisher.publish(
                command_topic(command.device_id), command_message(command, self._clock())
            )
            log.info(
                "sent command %s (%s) to %s",
                command.id,
                command.name,
                command.device_id,
                extra={"device_id": command.device_id},
            )
        await self._commands.unclaim(unsent)
        return len(claimed) - len(unsent)

    async def expire(self) -> int:
        return await self._commands.expire_due(self._clock())

    async def get(self, device_id: str, command_id: str) -> CommandRecord:
        await self.expire()
        command = await self._commands.get(device_id, command_id)
        if command is None:
            raise NotFound(
                f"no command {command_id!r} for device {device_id!r}", code="command_not_found"
            )
        return command

    async def page(
        self,
        device_id: str,
        *,
        limit: int,
        status: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[CommandRecord]:
        await self.expire()
        return await self._commands.page(device_id, limit=limit, status=status, before=before)

    async def targets(
        self,
        *,
        device_ids: list[str] | None = None,
        model: str | None = None,
        tag: str | None = None,
    ) -> list[str]:
        """The devices a bulk command goes to: the given ids (each must exist), or every
        device of a model or with a tag (possibly none)."""
        found = await target_devices(self._devices, device_ids=device_ids, model=model, tag=tag)
        return [d.id for d in found]
