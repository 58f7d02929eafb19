"""Queries on commands: insert, claim for sending, acknowledge, expire."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import RowMapping, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.exceptions import Conflict
from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import CommandRecord
from paku_iot.storage.types import same_json

_c = schema.commands
_d = schema.devices


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ACKED = "acked"
    FAILED = "failed"
    EXPIRED = "expired"


# An answer is taken from these: a late answer to an expired command still tells the truth
# about what the device did.
_ANSWERABLE = (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.EXPIRED)


def _command(row: RowMapping) -> CommandRecord:
    return CommandRecord(**row)


class CommandStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(self, commands: list[CommandRecord]) -> None:
        """Insert all or none; a reused Idempotency-Key for a device is a Conflict."""
        rows = [
            {
                "id": c.id,
                "device_id": c.device_id,
                "name": c.name,
                "params": c.params,
                "status": c.status,
                "created_at": c.created_at,
                "expires_at": c.expires_at,
                "idempotency_key": c.idempotency_key,
            }
            for c in commands
        ]
        try:
            async with transaction(self._engine) as conn:
                await conn.execute(_c.insert(), rows)
        except IntegrityError:
            raise Conflict("a command with this Idempotency-Key exists", code="duplicate") from None

    async def get(self, device_id: str, command_id: str) -> CommandRecord | None:
        query = select(_c).where(_c.c.device_id == device_id, _c.c.id == command_id)
        async with translated_errors(), self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _command(row) if row else None

    async def by_idempotency_key(self, device_ids: Iterable[str], key: str) -> list[CommandRecord]:
        query = select(_c).where(_c.c.device_id.in_(list(device_ids)), _c.c.idempotency_key == key)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_command(r) for r in rows]

    async def page(
        self,
        device_id: str,
        *,
        limit: int,
        status: str | None = None,
        before: tuple[datetime, str] | None = None,
    ) -> list[CommandRecord]:
        """Newest first."""
        query = (
            select(_c)
            .where(_c.c.device_id == device_id)
            .order_by(_c.c.created_at.desc(), _c.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(_c.c.status == status)
        if before is not None:
            created, command_id = before
            query = query.where(
                or_(
                    _c.c.created_at < created,
                    and_(_c.c.created_at == created, _c.c.id < command_id),
                )
            )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_command(r) for r in rows]

    async def claim_queued(
        self, now: datetime, *, device_id: str | None = None, command_id: str | None = None
    ) -> list[CommandRecord]:
        """Mark queued, unexpired commands of online devices as sent and return them, oldest
        first. The status change is the claim: of two processes, only one gets each command."""
        online = select(_d.c.id).where(_d.c.online.is_(True))
        query = (
            update(_c)
            .where(
                _c.c.status == CommandStatus.QUEUED,
                _c.c.expires_at > now,
                _c.c.device_id.in_(online.scalar_subquery()),
            )
            .values(status=CommandStatus.SENT, sent_at=now)
            .returning(*_c.c)
        )
        if device_id is not None:
            query = query.where(_c.c.device_id == device_id)
        if command_id is not None:
            query = query.where(_c.c.id == command_id)
        async with transaction(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return sorted((_command(r) for r in rows), key=lambda c: (c.created_at, c.id))

    async def unclaim(self, command_ids: list[str]) -> None:
        """Put back commands that could not be published after all."""
        if not command_ids:
            return
        async with transaction(self._engine) as conn:
            await conn.execute(
                update(_c)
                .where(_c.c.id.in_(command_ids), _c.c.status == CommandStatus.SENT)
                .values(status=CommandStatus.QUEUED, sent_at=None)
            )

    async def counts_by_status(self) -> dict[str, int]:
        query = select(_c.c.status, func.count()).group_by(_c.c.status)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {status: int(count) for status, count in rows}

    async def expire_due(self, now: datetime) -> int:
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_c)
                .where(
                    _c.c.status.in_([CommandStatus.QUEUED, CommandStatus.SENT]),
                    _c.c.expires_at <= now,
                )
                .values(status=CommandStatus.EXPIRED)
            )
        return int(result.rowcount)


class AckOutcome(StrEnum):
    """What an answer did to the command it names."""

    SETTLED = "settled"
    # The command already holds this very answer: a redelivery, or a device that repeats
    # its last answer in every state message.
    REPEATED = "repeated"
    UNKNOWN = "unknown"  # no command of this device has that id
    ANSWERED_OTHERWISE = "answered_otherwise"  # it holds a different answer


@dataclass(frozen=True, slots=True)
class AckApplied:
    outcome: AckOutcome
    # The command's status after this answer; None when there is no such command.
    status: str | None = None


async def apply_ack(
    conn: AsyncConnection,
    *,
    device_id: str,
    command_id: str,
    ok: bool,
    result: Any,
    error: str | None,
    at: datetime,
) -> AckApplied:
    """Record a device's answer in the caller's transaction. Only a command of this device
    that is waiting for an answer (or expired without one) takes it."""
    status = CommandStatus.ACKED if ok else CommandStatus.FAILED
    outcome = await conn.execute(
        update(_c)
        .where(
            _c.c.id == command_id,
            _c.c.device_id == device_id,
            _c.c.status.in_(_ANSWERABLE),
        )
        .values(status=status, acked_at=at, result=result, error=error)
    )
    if outcome.rowcount:
        return AckApplied(AckOutcome.SETTLED, status)
    held = (
        await conn.execute(
            select(_c.c.status, _c.c.result, _c.c.error).where(
                _c.c.id == command_id, _c.c.device_id == device_id
            )
        )
    ).first()
    if held is None:
        return AckApplied(AckOutcome.UNKNOWN)
    if held.status == status and held.error == error and same_json(held.result, result):
        return AckApplied(AckOutcome.REPEATED, held.status)
    return AckApplied(AckOutcome.ANSWERED_OTHERWISE, held.status)
