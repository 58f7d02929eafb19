"""Queries on firmware releases and devices' update progress."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.exceptions import Conflict
from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import KEEP, Keep, OtaProgress, ReleaseEvent, ReleaseRecord

_r = schema.firmware_releases
_p = schema.ota_progress
_e = schema.release_events

# What a transition expects the release to be in: (state, current wave). Compared in the
# UPDATE itself, so that two processes deciding the same step change the release once.
Expected = tuple[str, int]


class ReleaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert(self, release: ReleaseRecord, actor: str = "system") -> None:
        try:
            async with transaction(self._engine) as conn:
                await conn.execute(
                    _r.insert().values(
                        id=release.id,
                        model=release.model,
                        version=release.version,
                        sha256=release.sha256,
                        size=release.size,
                        signature=release.signature,
                        statement_signature=release.statement_signature,
                        rollout_percent=release.rollout_percent,
                        paused=release.paused,
                        notes=release.notes,
                        created_at=release.created_at,
                        tag=release.tag,
                        plan=release.plan,
                        min_confirmed=release.min_confirmed,
                        min_confirmed_percent=release.min_confirmed_percent,
                        abort_failure_percent=release.abort_failure_percent,
                        abort_min_devices=release.abort_min_devices,
                        state=release.state,
                        current_wave=release.current_wave,
                        state_reason=release.state_reason,
                        wave_started_at=release.wave_started_at,
                    )
                )
                if release.plan is not None:
                    await _insert_event(
                        conn,
                        release.id,
                        release.created_at,
                        actor,
                        "plan",
                        # As every other event, the wave it happened in: a new plan's first.
                        {"wave": release.current_wave + 1, **plan_detail(release)},
                    )
        except IntegrityError:
            raise Conflict(
                f"{release.model} {release.version} is already released", code="release_exists"
            ) from None

    async def get(self, release_id: str) -> ReleaseRecord | None:
        async with translated_errors(), self._engine.connect() as conn:
            row = (await conn.execute(select(_r).where(_r.c.id == release_id))).mappings().first()
        return ReleaseRecord(**row) if row else None

    async def of_model(self, model: str | None) -> list[ReleaseRecord]:
        query = select(_r).order_by(_r.c.model, _r.c.created_at)
        if model is not None:
            query = query.where(_r.c.model == model)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [ReleaseRecord(**row) for row in rows]

    async def update(
        self,
        release_id: str,
        *,
        rollout_percent: int | None,
        paused: bool | None,
        tag: str | Keep | None = KEEP,
    ) -> bool:
        values: dict[str, object] = {}
        if tag is not KEEP:
            values["tag"] = tag
        if rollout_percent is not None:
            values["rollout_percent"] = rollout_percent
        if paused is not None:
            values["paused"] = paused
        if not values:
            return await self.get(release_id) is not None
        async with transaction(self._engine) as conn:
            result = await conn.execute(update(_r).where(_r.c.id == release_id).values(**values))
        return bool(result.rowcount)

    async def with_plan(self, state: str) -> list[ReleaseRecord]:
        """Releases that have a plan and are in `state` (the autopilot's work list)."""
        query = select(_r).where(_r.c.state == state, _r.c.plan.is_not(None))
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [ReleaseRecord(**row) for row in rows if row["plan"] is not None]

    async def transition(
        self,
        release_id: str,
        expected: Expected,
        values: dict[str, Any],
        *,
        at: datetime,
        actor: str,
        kind: str,
        detail: dict[str, Any],
    ) -> bool:
        """Change the release if it is still as `expected`, and write the event, in one
        transaction. False when it was not (someone else moved it first)."""
        state, wave = expected
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_r)
                .where(_r.c.id == release_id, _r.c.state == state, _r.c.current_wave == wave)
                .values(**values)
            )
            if not result.rowcount:
                return False
            await _insert_event(conn, release_id, at, actor, kind, detail)
        return True

    async def events(self, release_id: str) -> list[ReleaseEvent]:
        query = select(_e).where(_e.c.release_id == release_id).order_by(_e.c.id)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [ReleaseEvent(**row) for row in rows]

    async def progress(self, version: str, device_ids: Iterable[str]) -> dict[str, OtaProgress]:
        ids = list(device_ids)
        if not ids:
            return {}
        query = select(_p).where(_p.c.version == version, _p.c.device_id.in_(ids))
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {row["device_id"]: OtaProgress(**row) for row in rows}


def plan_detail(release: ReleaseRecord) -> dict[str, Any]:
    return {
        "plan": release.plan,
        "minConfirmed": release.min_confirmed,
        "minConfirmedPercent": release.min_confirmed_percent,
        "abortFailurePercent": release.abort_failure_percent,
        "abortMinDevices": release.abort_min_devices,
    }


async def _insert_event(
    conn: AsyncConnection,
    release_id: str,
    at: datetime,
    actor: str,
    kind: str,
    detail: dict[str, Any],
) -> None:
    await conn.execute(
        _e.insert().values(release_id=release_id, at=at, actor=actor, kind=kind, detail=detail)
    )


async def record_progress(conn: AsyncConnection, reports: list[OtaProgress]) -> None:
    """Keep each device's latest report per version, in the caller's transaction."""
    for report in reports:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_p).values(
            device_id=report.device_id,
            version=report.version,
            status=report.status,
            error=report.error,
            updated_at=report.updated_at,
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=[_p.c.device_id, _p.c.version],
                set_={
                    "status": insert.excluded.status,
                    "error": insert.excluded.error,
                    "updated_at": insert.excluded.updated_at,
                },
                where=_p.c.updated_at <= insert.excluded.updated_at,
            )
        )
