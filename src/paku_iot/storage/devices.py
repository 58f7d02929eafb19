"""Queries on the device registry table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.exceptions import Conflict
from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import KEEP, DeviceDetails, DeviceRecord, NewDevice

_d = schema.devices
_DEVICE_COLUMNS = (
    _d.c.id,
    _d.c.model,
    _d.c.notes,
    _d.c.metadata,
    _d.c.created_at,
    (_d.c.password_hash.is_not(None)).label("has_credentials"),
    _d.c.last_seen_at,
    _d.c.online,
    _d.c.fw_version,
    _d.c.rssi,
    _d.c.reported_state,
)


def _device(row: RowMapping) -> DeviceRecord:
    return DeviceRecord(
        id=row["id"],
        model=row["model"],
        notes=row["notes"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        has_credentials=bool(row["has_credentials"]),
        last_seen_at=row["last_seen_at"],
        online=bool(row["online"]),
        fw_version=row["fw_version"],
        rssi=row["rssi"],
        reported_state=row["reported_state"],
    )


class DeviceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(self, device: NewDevice) -> DeviceRecord:
        try:
            async with transaction(self._engine) as conn:
                await conn.execute(
                    _d.insert().values(
                        id=device.id,
                        model=device.model,
                        notes=device.notes,
                        metadata=device.metadata,
                        created_at=device.created_at,
                        password_hash=device.password_hash,
                        credentials_updated_at=device.created_at,
                        online=False,
                    )
                )
                return await self._get(conn, device.id)  # type: ignore[return-value]
        except IntegrityError:
            raise Conflict(f"device {device.id!r} already exists", code="device_exists") from None

    async def insert_many(self, devices: list[NewDevice]) -> None:
        """All or none; a taken id is a Conflict."""
        rows = [
            {
                "id": d.id,
                "model": d.model,
                "notes": d.notes,
                "metadata": d.metadata,
                "created_at": d.created_at,
                "password_hash": d.password_hash,
                "credentials_updated_at": d.created_at if d.password_hash else None,
                "online": False,
            }
            for d in devices
        ]
        try:
            async with transaction(self._engine) as conn:
                await conn.execute(_d.insert(), rows)
        except IntegrityError:
            raise Conflict("one of these device ids is taken", code="device_exists") from None

    async def get(self, device_id: str) -> DeviceRecord | None:
        async with translated_errors(), self._engine.connect() as conn:
            return await self._get(conn, device_id)

    @staticmethod
    async def _get(conn: AsyncConnection, device_id: str) -> DeviceRecord | None:
        row = (
            (await conn.execute(select(*_DEVICE_COLUMNS).where(_d.c.id == device_id)))
            .mappings()
            .first()
        )
        return _device(row) if row else None

    async def password_hash(self, device_id: str) -> str | None:
        async with translated_errors(), self._engine.connect() as conn:
            result = await conn.execute(select(_d.c.password_hash).where(_d.c.id == device_id))
            return result.scalar_one_or_none()

    async def page(
        self,
        *,
        limit: int,
        after_id: str | None = None,
        model: str | None = None,
        online: bool | None = None,
        id_prefix: str | None = None,
        before_id: str | None = None,
    ) -> list[DeviceRecord]:
        """Devices in id order (stable for paging), starting after `after_id`; or, with
        `before_id`, the `limit` devices just before it (still in id order: a page back)."""
        query = select(*_DEVICE_COLUMNS).where(*_filters(model, online, id_prefix)).limit(limit)
        if after_id is not None:
            query = query.where(_d.c.id > after_id)
        if before_id is not None:
            query = query.where(_d.c.id < before_id).order_by(_d.c.id.desc())
        else:
            query = query.order_by(_d.c.id)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        devices = [_device(row) for row in rows]
        return devices[::-1] if before_id is not None else devices

    async def count_matching(
        self,
        *,
        model: str | None = None,
        online: bool | None = None,
        id_prefix: str | None = None,
    ) -> int:
        """How many devices `page` would walk through with these filters."""
        query = select(func.count()).select_from(_d).where(*_filters(model, online, id_prefix))
        async with translated_errors(), self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def models(self) -> list[str]:
        """Every model that has at least one device, in order (the (model, id) index)."""
        query = select(_d.c.model).distinct().order_by(_d.c.model)
        async with translated_errors(), self._engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def models_and_last_seen(self) -> list[tuple[str, str, datetime | None]]:
        """(id, model, last seen) of every device: what the alert evaluator needs to know of
        the fleet (model-scoped rules, silence after a restart), in one narrow read."""
        query = select(_d.c.id, _d.c.model, _d.c.last_seen_at)
        async with translated_errors(), self._engine.connect() as conn:
            return [(row[0], row[1], row[2]) for row in await conn.execute(query)]

    async def many(self, device_ids: list[str]) -> list[DeviceRecord]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (
                (await conn.execute(select(*_DEVICE_COLUMNS).where(_d.c.id.in_(device_ids))))
                .mappings()
                .all()
            )
        return [_device(row) for row in rows]

    async def counts(self) -> tuple[int, int]:
        """(all devices, devices online)."""
        query = select(func.count(), func.count().filter(_d.c.online.is_(True))).select_from(_d)
        async with translated_errors(), self._engine.connect() as conn:
            total, online = (await conn.execute(query)).one()
        return int(total), int(online)

    async def delete(self, device_id: str) -> bool:
        """Remove the device and everything it sent. False if there was no such device."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(delete(_d).where(_d.c.id == device_id))
            if result.rowcount == 0:
                return False
            for table in (
                schema.telemetry,
                schema.events,
                schema.commands,
                schema.device_configs,
                schema.ota_progress,
                schema.claim_codes,
                # Its alerts (their deliveries follow by ON DELETE CASCADE): a device id
                # provisioned again starts with no history that was not its own.
                schema.alerts,
            ):
                await conn.execute(delete(table).where(table.c.device_id == device_id))
            return True

    async def update_details(self, device_id: str, changes: DeviceDetails) -> DeviceRecord | None:
        """Set the given notes and metadata; None when there is no such device."""
        values: dict[str, Any] = {}
        if changes.notes is not KEEP:
            values["notes"] = changes.notes
        if changes.metadata is not KEEP:
            values["metadata"] = changes.metadata
        async with transaction(self._engine) as conn:
            if values:
                await conn.execute(update(_d).where(_d.c.id == device_id).values(**values))
            return await self._get(conn, device_id)

    async def set_password_hash(self, device_id: str, password_hash: str, now: datetime) -> bool:
        """Give the device a new password and retire its unredeemed claim codes, in one
        transaction: a claim code only ever gives a device its first credentials, so once it
        has some (a rotation, a claim), a label still on the device claims nothing."""
        claim_codes = schema.claim_codes
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_d)
                .where(_d.c.id == device_id)
                .values(password_hash=password_hash, credentials_updated_at=now)
            )
            await conn.execute(
                delete(claim_codes).where(
                    claim_codes.c.device_id == device_id, claim_codes.c.claimed_at.is_(None)
                )
            )
            return bool(result.rowcount)

    async def credentials(self) -> list[tuple[str, str]]:
        """(username, `$7$` hash) of every device that has MQTT credentials."""
        query = (
            select(_d.c.id, _d.c.password_hash)
            .where(_d.c.password_hash.is_not(None))
            .order_by(_d.c.id)
        )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row[0], row[1]) for row in rows]


def _filters(model: str | None, online: bool | None, id_prefix: str | None) -> list[Any]:
    conditions: list[Any] = []
    if model is not None:
        conditions.append(_d.c.model == model)
    if online is not None:
        conditions.append(_d.c.online == online)
    if id_prefix:
        # Case-insensitive on both databases (SQLite's LIKE is, PostgreSQL's is not), and
        # `_` in an id is a literal, not LIKE's one-character wildcard.
        conditions.append(_d.c.id.istartswith(id_prefix, autoescape=True))
    return conditions


async def existing_device_ids(conn: AsyncConnection, ids: Iterable[str]) -> set[str]:
    wanted = list(ids)
    if not wanted:
        return set()
    result = await conn.execute(select(_d.c.id).where(_d.c.id.in_(wanted)))
    return {row[0] for row in result}


async def read_reported_states(
    conn: AsyncConnection, ids: Iterable[str]
) -> dict[str, dict[str, Any] | None]:
    result = await conn.execute(select(_d.c.id, _d.c.reported_state).where(_d.c.id.in_(list(ids))))
    return {row[0]: row[1] for row in result}
