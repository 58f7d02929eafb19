"""Queries on admin tokens, the audit log, claim codes, refused claims and dashboard sessions."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.exceptions import Conflict
from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import AdminTokenRecord, AuditRecord, NewClaimCode

_t = schema.admin_tokens
_a = schema.audit_log
_c = schema.claim_codes
_s = schema.ui_sessions
_d = schema.devices
_f = schema.claim_failures

ADDRESS_MAX_CHARS = 64


class TokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, token_hash: str, now: datetime, role: str) -> None:
        try:
            async with transaction(self._engine) as conn:
                await conn.execute(
                    _t.insert().values(name=name, token_hash=token_hash, created_at=now, role=role)
                )
        except IntegrityError:
            raise Conflict(f"a token named {name!r} exists", code="token_exists") from None

    async def name_for(self, token_hash: str) -> tuple[str, str] | None:
        """The name and role of the live (unrevoked) token with this hash."""
        query = select(_t.c.name, _t.c.role).where(
            _t.c.token_hash == token_hash, _t.c.revoked_at.is_(None)
        )
        async with translated_errors(), self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.name, row.role)

    async def revoke(self, name: str, now: datetime) -> bool:
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_t)
                .where(_t.c.name == name, _t.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(result.rowcount)

    async def all(self) -> list[AdminTokenRecord]:
        query = select(_t.c.name, _t.c.created_at, _t.c.revoked_at, _t.c.role).order_by(_t.c.name)
        async with translated_errors(), self._engine.connect() as conn:
            return [
                AdminTokenRecord(row.name, row.created_at, row.revoked_at, row.role)
                for row in await conn.execute(query)
            ]


class AuditStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(
        self,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any],
        role: str | None = None,
    ) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(
                _a.insert().values(
                    at=at,
                    actor=actor,
                    role=role,
                    action=action,
                    target=target[:200],
                    details=details,
                )
            )

    async def page(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditRecord]:
        query = select(_a).order_by(_a.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(_a.c.id < before_id)
        if action is not None:
            query = query.where(_a.c.action == action)
        if target is not None:
            query = query.where(_a.c.target == target)
        async with translated_errors(), self._engine.connect() as conn:
            return [
                AuditRecord(
                    row.id, row.at, row.actor, row.action, row.target, row.details, row.role
                )
                for row in await conn.execute(query)
            ]


class ClaimCodeStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(self, codes: list[NewClaimCode]) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(_c.insert(), [asdict(code) for code in codes])

    async def redeem(self, code_hash: str, now: datetime) -> str | None:
        """Mark the code used and return its device, in one statement: of two concurrent
        claims exactly one gets the device. None for unknown, used or expired codes alike,
        and for a code whose device has credentials already (given since by a rotation or
        another code): a code gives a device its first credentials, never takes it over.
        The device's other codes are retired with it."""
        without_credentials = select(_d.c.id).where(_d.c.password_hash.is_(None))
        query = (
            update(_c)
            .where(
                _c.c.code_hash == code_hash,
                _c.c.claimed_at.is_(None),
                _c.c.expires_at > now,
                _c.c.device_id.in_(without_credentials.scalar_subquery()),
            )
            .values(claimed_at=now)
            .returning(_c.c.device_id)
        )
        async with transaction(self._engine) as conn:
            device_id: str | None = (await conn.execute(query)).scalar_one_or_none()
            if device_id is not None:
                await conn.execute(
                    delete(_c).where(_c.c.device_id == device_id, _c.c.claimed_at.is_(None))
                )
        return device_id


class SessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, id_hash: str, actor: str, now: datetime, expires_at: datetime) -> None:
        async with transaction(self._engine) as conn:
            # Expired sessions go as new ones come: the table holds about the live ones.
            await conn.execute(delete(_s).where(_s.c.expires_at <= now))
            await conn.execute(
                _s.insert().values(
                    id_hash=id_hash, actor=actor, created_at=now, expires_at=expires_at
                )
            )

    async def actor_of(self, id_hash: str, now: datetime) -> str | None:
        """Who the live session with this id hash belongs to, or None."""
        query = select(_s.c.actor).where(_s.c.id_hash == id_hash, _s.c.expires_at > now)
        async with translated_errors(), self._engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    async def delete(self, id_hash: str) -> None:
        async with transaction(self._engine) as conn:
            await conn.execute(delete(_s).where(_s.c.id_hash == id_hash))


class ClaimFailureStore:
    """Refused claims per client address, for the rate limit every API process shares."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def since(self, address: str, since: datetime) -> tuple[int, datetime | None]:
        """How many failures `address` had after `since`, and the oldest of them."""
        query = select(func.count(), func.min(_f.c.at)).where(
            _f.c.address == address[:ADDRESS_MAX_CHARS], _f.c.at > since
        )
        async with translated_errors(), self._engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), oldest

    async def add(self, address: str, at: datetime, *, forget_before: datetime) -> None:
        """Record a failure, and forget those too old to count for anyone: the table holds
        one window of failures, whatever the number of addresses they came from."""
        async with transaction(self._engine) as conn:
            await conn.execute(_f.delete().where(_f.c.at <= forget_before))
            await conn.execute(_f.insert().values(address=address[:ADDRESS_MAX_CHARS], at=at))
