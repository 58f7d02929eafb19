"""Queries on the device registry table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.exceptions import Conflict, InvalidInput
from paku_iot.storage import schema
from paku_iot.storage.device_tags import (
    add_pairs,
    add_tags,
    all_tags,
    most_tags,
    remove_tags,
    replace_tags,
    tags_of,
)
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import KEEP, DeviceDetails, DeviceRecord, NewDevice

_d = schema.devices
_t = schema.device_tags
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
    _d.c.decommissioned_at,
)


def _device(row: RowMapping, tags: tuple[str, ...] = ()) -> DeviceRecord:
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
        tags=tags,
        decommissioned_at=row["decommissioned_at"],
    )


async def _with_tags(conn: AsyncConnection, rows: Iterable[RowMapping]) -> list[DeviceRecord]:
    rows = list(rows)
    tags = await tags_of(conn, (row["id"] for row in rows))
    return [_device(row, tags.get(row["id"], ())) for row in rows]


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
                await add_tags(conn, [device.id], device.tags)
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
                await add_pairs(conn, [(d.id, t) for d in devices for t in d.tags])
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
        if row is None:
            return None
        [device] = await _with_tags(conn, [row])
        return device

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
        tag: str | None = None,
        decommissioned: bool | None = False,
    ) -> list[DeviceRecord]:
        """Devices in id order (stable for paging), starting after `after_id`; or, with
        `before_id`, the `limit` devices just before it (still in id order: a page back).
        `decommissioned`: False (the default) leaves them out, True lists only them, None
        both."""
        query = (
            select(*_DEVICE_COLUMNS)
            .select_from(_source(tag))
            .where(*_filters(model, online, id_prefix, decommissioned))
            .limit(limit)
        )
        # With a tag, the walk is along the (tag, device_id) index: its device_id is the key.
        key = _t.c.device_id if tag is not None else _d.c.id
        if after_id is not None:
            query = query.where(key > after_id)
        if before_id is not None:
            query = query.where(key < before_id).order_by(key.desc())
        else:
            query = query.order_by(key)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            devices = await _with_tags(conn, rows)
        return devices[::-1] if before_id is not None else devices

    async def count_matching(
        self,
        *,
        model: str | None = None,
        online: bool | None = None,
        id_prefix: str | None = None,
        tag: str | None = None,
        decommissioned: bool | None = False,
    ) -> int:
        """How many devices `page` would walk through with these filters."""
        query = (
            select(func.count())
            .select_from(_source(tag))
            .where(*_filters(model, online, id_prefix, decommissioned))
        )
        async with translated_errors(), self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def models(self) -> list[str]:
        """Every model that has at least one device, in order (the (model, id) index)."""
        query = select(_d.c.model).distinct().order_by(_d.c.model)
        async with translated_errors(), self._engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def tags(self) -> list[str]:
        """Every tag at least one device has, in order."""
        async with translated_errors(), self._engine.connect() as conn:
            return await all_tags(conn)

    async def models_and_last_seen(self) -> list[tuple[str, str, datetime | None]]:
        """(id, model, last seen) of every device: what the alert evaluator needs to know of
        the fleet (model-scoped rules, silence after a restart), in one narrow read."""
        # A decommissioned device is silent on purpose: no alert should say so.
        query = select(_d.c.id, _d.c.model, _d.c.last_seen_at).where(
            _d.c.decommissioned_at.is_(None)
        )
        async with translated_errors(), self._engine.connect() as conn:
            return [(row[0], row[1], row[2]) for row in await conn.execute(query)]

    async def tags_by_device(self) -> dict[str, list[str]]:
        """The tags of every device in service that has any: tag-scoped alert rules match
        with it (one read of the (tag, device) index)."""
        query = (
            select(_t.c.device_id, _t.c.tag)
            .join(_d, _d.c.id == _t.c.device_id)
            .where(_d.c.decommissioned_at.is_(None))
        )
        found: dict[str, list[str]] = {}
        async with translated_errors(), self._engine.connect() as conn:
            for device_id, tag in await conn.execute(query):
                found.setdefault(device_id, []).append(tag)
        return found

    async def many(self, device_ids: list[str]) -> list[DeviceRecord]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (
                (await conn.execute(select(*_DEVICE_COLUMNS).where(_d.c.id.in_(device_ids))))
                .mappings()
                .all()
            )
            return await _with_tags(conn, rows)

    async def counts(self) -> tuple[int, int]:
        """(devices in service, devices online); decommissioned devices are not counted, as
        listings leave them out."""
        query = (
            select(func.count(), func.count().filter(_d.c.online.is_(True)))
            .select_from(_d)
            .where(_d.c.decommissioned_at.is_(None))
        )
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
            if changes.tags is not KEEP and await self._get(conn, device_id) is not None:
                await replace_tags(conn, device_id, changes.tags)
            return await self._get(conn, device_id)

    async def change_tags(
        self, device_ids: list[str], *, add: list[str], remove: list[str], max_tags: int
    ) -> list[DeviceRecord]:
        """Add and remove tags on many devices in one transaction (removals first), all or
        none: a device left with more than `max_tags` undoes the whole change."""
        async with transaction(self._engine) as conn:
            await remove_tags(conn, device_ids, remove)
            await add_tags(conn, device_ids, add)
            most = await most_tags(conn, device_ids)
            if most is not None and most[1] > max_tags:
                raise InvalidInput(
                    f"device {most[0]!r} would have {most[1]} tags; at most {max_tags}",
                    code="too_many_tags",
                )
            rows: list[RowMapping] = []
            for start in range(0, len(device_ids), 900):
                chunk = device_ids[start : start + 900]
                query = select(*_DEVICE_COLUMNS).where(_d.c.id.in_(chunk)).order_by(_d.c.id)
                rows.extend((await conn.execute(query)).mappings().all())
            return await _with_tags(conn, rows)

    async def decommission(self, device_id: str, now: datetime) -> bool:
        """Take the device out of service: no password, no unredeemed claim codes (either
        would give it credentials again), marked decommissioned. Its history and tags stay.
        False if there is no such device."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_d)
                .where(_d.c.id == device_id)
                .values(password_hash=None, credentials_updated_at=now, decommissioned_at=now)
            )
            await _retire_claim_codes(conn, device_id)
            return bool(result.rowcount)

    async def recommission(self, device_id: str, password_hash: str, now: datetime) -> bool:
        """Back in service with a new password; False if it is not decommissioned."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_d)
                .where(_d.c.id == device_id, _d.c.decommissioned_at.is_not(None))
                .values(
                    password_hash=password_hash, credentials_updated_at=now, decommissioned_at=None
                )
            )
            return bool(result.rowcount)

    async def set_password_hash(self, device_id: str, password_hash: str, now: datetime) -> bool:
        """Give the device a new password and retire its unredeemed claim codes, in one
        transaction: a claim code only ever gives a device its first credentials, so once it
        has some (a rotation, a claim), a label still on the device claims nothing."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_d)
                # A decommissioned device gets credentials only by being recommissioned.
                .where(_d.c.id == device_id, _d.c.decommissioned_at.is_(None))
                .values(password_hash=password_hash, credentials_updated_at=now)
            )
            await _retire_claim_codes(conn, device_id)
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


async def _retire_claim_codes(conn: AsyncConnection, device_id: str) -> None:
    claim_codes = schema.claim_codes
    await conn.execute(
        delete(claim_codes).where(
            claim_codes.c.device_id == device_id, claim_codes.c.claimed_at.is_(None)
        )
    )


def _source(tag: str | None) -> Any:
    """Devices, or (with a tag) devices joined to that tag's rows of `device_tags`."""
    if tag is None:
        return _d
    return _d.join(_t, and_(_t.c.device_id == _d.c.id, _t.c.tag == tag))


def _filters(
    model: str | None, online: bool | None, id_prefix: str | None, decommissioned: bool | None
) -> list[Any]:
    conditions: list[Any] = []
    if decommissioned is not None:
        column = _d.c.decommissioned_at
        conditions.append(column.is_not(None) if decommissioned else column.is_(None))
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
