"""Queries on the alert tables: rules, alerts, the delivery outbox and its attempts.

The guarantees live here, in the database, so that they hold across restarts and between
collector replicas: at most one open alert per rule and device (a partial unique index), and
an alert's notifications written in the same transaction that opens or resolves it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertDeliveryRecord,
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRecord,
    AlertRuleRecord,
    AlertState,
    AlertTransition,
    DestinationType,
)

_r = schema.alert_rules
_a = schema.alerts
_dl = schema.alert_deliveries
_at = schema.alert_delivery_attempts

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

# How long a claimed delivery is hidden from other workers: longer than one send may take, so
# that a worker that died mid-send has its deliveries picked up again, not sent twice at once.
DEFAULT_LEASE = timedelta(seconds=60)

DestinationsOf = Callable[[str], Sequence[AlertDestination]]


def destination_json(destination: AlertDestination) -> dict[str, Any]:
    return {"type": str(destination.type), "url": destination.url, "secret": destination.secret}


def _destination(value: dict[str, Any]) -> AlertDestination:
    return AlertDestination(DestinationType(value["type"]), value["url"], value.get("secret"))


def _rule(row: RowMapping) -> AlertRuleRecord:
    return AlertRuleRecord(
        id=row["id"],
        name=row["name"],
        kind=AlertKind(row["kind"]),
        device_id=row["device_id"],
        model=row["model"],
        field=row["field"],
        above=row["above"],
        below=row["below"],
        for_seconds=row["for_seconds"],
        silence_seconds=row["silence_seconds"],
        per_minute=row["per_minute"],
        destinations=tuple(_destination(d) for d in row["destinations"]),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        tag=row["tag"],
    )


def _rule_values(rule: AlertRuleRecord) -> dict[str, Any]:
    return {
        "name": rule.name,
        "kind": str(rule.kind),
        "device_id": rule.device_id,
        "model": rule.model,
        "tag": rule.tag,
        "field": rule.field,
        "above": rule.above,
        "below": rule.below,
        "for_seconds": rule.for_seconds,
        "silence_seconds": rule.silence_seconds,
        "per_minute": rule.per_minute,
        "destinations": [destination_json(d) for d in rule.destinations],
        "enabled": rule.enabled,
        "updated_at": rule.updated_at,
    }


def _alert(row: RowMapping) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        rule_id=row["rule_id"],
        device_id=row["device_id"],
        state=AlertState(row["state"]),
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        values=row["values_"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        silenced_until=row["silenced_until"],
    )


def _delivery(row: RowMapping) -> AlertDeliveryRecord:
    return AlertDeliveryRecord(
        id=row["id"],
        alert_id=row["alert_id"],
        event=AlertEvent(row["event"]),
        destination=_destination(row["destination"]),
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


def _attempt(row: RowMapping) -> AlertDeliveryAttempt:
    return AlertDeliveryAttempt(
        delivery_id=row["delivery_id"],
        at=row["at"],
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def _silenced(alert: AlertRecord, at: datetime) -> bool:
    return alert.silenced_until is not None and alert.silenced_until > at


class AlertStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # ---- rules -----------------------------------------------------------------------------

    async def create_rule(self, rule: AlertRuleRecord) -> AlertRuleRecord:
        async with transaction(self._engine) as conn:
            values = _rule_values(rule) | {"id": rule.id, "created_at": rule.created_at}
            await conn.execute(_r.insert().values(**values))
            return await self._rule(conn, rule.id)  # type: ignore[return-value]

    async def get_rule(self, rule_id: str) -> AlertRuleRecord | None:
        async with translated_errors(), self._engine.connect() as conn:
            return await self._rule(conn, rule_id)

    @staticmethod
    async def _rule(conn: AsyncConnection, rule_id: str) -> AlertRuleRecord | None:
        row = (await conn.execute(select(_r).where(_r.c.id == rule_id))).mappings().first()
        return _rule(row) if row else None

    async def rules(self, rule_ids: Iterable[str]) -> dict[str, AlertRuleRecord]:
        wanted = list(set(rule_ids))
        if not wanted:
            return {}
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(select(_r).where(_r.c.id.in_(wanted)))).mappings().all()
        return {row["id"]: _rule(row) for row in rows}

    async def page_rules(
        self, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[AlertRuleRecord]:
        """Rules oldest first (creation order, then id), after the (created_at, id) `after`."""
        query = select(_r).order_by(_r.c.created_at, _r.c.id).limit(limit)
        if after is not None:
            at, rule_id = after
            query = query.where(
                or_(_r.c.created_at > at, and_(_r.c.created_at == at, _r.c.id > rule_id))
            )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_rule(row) for row in rows]

    async def update_rule(self, rule: AlertRuleRecord) -> AlertRuleRecord | None:
        """Write every field of `rule` but its id and creation time (the caller merged and
        validated the change); None when there is no such rule."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_r).where(_r.c.id == rule.id).values(**_rule_values(rule))
            )
            if result.rowcount == 0:
                return None
            return await self._rule(conn, rule.id)

    async def delete_rule(self, rule_id: str) -> bool:
        """Remove the rule with its alerts and their deliveries (ON DELETE CASCADE)."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(delete(_r).where(_r.c.id == rule_id))
            return bool(result.rowcount)

    async def rules_version(self) -> tuple[int, datetime | None]:
        """A cheap value that changes whenever a rule is created, changed or deleted: the
        evaluator polls it and reloads its rules when it differs. A create or change moves
        the newest `updated_at` (clocks going back aside); a delete changes the count."""
        query = select(func.count(), func.max(_r.c.updated_at)).select_from(_r)
        async with translated_errors(), self._engine.connect() as conn:
            count, newest = (await conn.execute(query)).one()
        return int(count), newest

    async def enabled_rules(self) -> list[AlertRuleRecord]:
        query = select(_r).where(_r.c.enabled.is_(True)).order_by(_r.c.created_at, _r.c.id)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_rule(row) for row in rows]

    # ---- what the evaluator decided ---------------------------------------------------------

    async def apply(
        self, transitions: Sequence[AlertTransition], destinations_of: DestinationsOf
    ) -> list[AlertRecord]:
        """Open and resolve alerts, and enqueue their notifications, all in one transaction.

        An `opened` for a (rule, device) that has an open alert changes nothing (the partial
        unique index decides, so two replicas cannot both open one); a `resolved` without an
        open alert changes nothing either. A transition of a rule deleted meanwhile is
        skipped. Notifications go to `destinations_of(rule_id)`, unless the alert is silenced
        at the transition's time. Returns the alerts that opened or resolved, in order."""
        if not transitions:
            return []
        changed: list[AlertRecord] = []
        async with transaction(self._engine) as conn:
            live = await self._lock_rules(conn, {t.rule_id for t in transitions})
            for t in transitions:
                if t.rule_id not in live:
                    continue
                if t.event is AlertEvent.OPENED:
                    alert = await self._open(conn, t)
                else:
                    alert = await self._resolve(conn, t)
                if alert is None:
                    continue
                changed.append(alert)
                if not _silenced(alert, t.at):
                    await self._enqueue(conn, alert.id, t, destinations_of(t.rule_id))
        return changed

    @staticmethod
    async def _lock_rules(conn: AsyncConnection, rule_ids: set[str]) -> set[str]:
        # FOR KEY SHARE on PostgreSQL: a rule deleted concurrently waits for this transaction
        # (and then takes its new alerts with it) instead of failing our inserts' foreign key.
        query = select(_r.c.id).where(_r.c.id.in_(list(rule_ids)))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True, key_share=True)
        return {row[0] for row in await conn.execute(query)}

    @staticmethod
    async def _open(conn: AsyncConnection, t: AlertTransition) -> AlertRecord | None:
        # A silence outlives the alert it was set on: a flapping (rule, device) stays quiet
        # for as long as the operator asked, across re-openings.
        carried = (
            await conn.execute(
                select(func.max(_a.c.silenced_until)).where(
                    _a.c.rule_id == t.rule_id, _a.c.device_id == t.device_id
                )
            )
        ).scalar_one_or_none()
        values = {
            "rule_id": t.rule_id,
            "device_id": t.device_id,
            "state": str(AlertState.OPEN),
            "opened_at": t.at,
            "values_": t.values,
            "silenced_until": carried if carried is not None and carried > t.at else None,
        }
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = (
            insert(_a)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[_a.c.rule_id, _a.c.device_id],
                index_where=schema.OPEN_ALERT_PREDICATE,
            )
            .returning(*_a.c)
        )
        row = (await conn.execute(statement)).mappings().first()
        return _alert(row) if row else None

    @staticmethod
    async def _resolve(conn: AsyncConnection, t: AlertTransition) -> AlertRecord | None:
        statement = (
            update(_a)
            .where(
                _a.c.rule_id == t.rule_id,
                _a.c.device_id == t.device_id,
                _a.c.state == str(AlertState.OPEN),
            )
            .values(state=str(AlertState.RESOLVED), resolved_at=t.at)
            .returning(*_a.c)
        )
        row = (await conn.execute(statement)).mappings().first()
        return _alert(row) if row else None

    @staticmethod
    async def _enqueue(
        conn: AsyncConnection,
        alert_id: int,
        t: AlertTransition,
        destinations: Sequence[AlertDestination],
    ) -> None:
        rows = [
            {
                "alert_id": alert_id,
                "event": str(t.event),
                "destination": destination_json(d),
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": t.at,
                "created_at": t.at,
            }
            for d in destinations
        ]
        if rows:
            await conn.execute(_dl.insert(), rows)

    # ---- alerts ----------------------------------------------------------------------------

    async def counts(self) -> tuple[int, int]:
        """(alerts open, notifications waiting to be delivered): the metrics' gauges."""
        open_alerts = select(func.count()).select_from(_a).where(_a.c.state == str(AlertState.OPEN))
        pending = select(func.count()).select_from(_dl).where(_dl.c.state == "pending")
        async with translated_errors(), self._engine.connect() as conn:
            opened = (await conn.execute(open_alerts)).scalar_one()
            waiting = (await conn.execute(pending)).scalar_one()
        return int(opened), int(waiting)

    async def open_alerts(
        self, rule_id: str | None = None, device_id: str | None = None
    ) -> list[AlertRecord]:
        query = select(_a).where(_a.c.state == str(AlertState.OPEN)).order_by(_a.c.id)
        if rule_id is not None:
            query = query.where(_a.c.rule_id == rule_id)
        if device_id is not None:
            query = query.where(_a.c.device_id == device_id)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_alert(row) for row in rows]

    async def page_alerts(
        self,
        *,
        limit: int,
        before: tuple[datetime, int] | None = None,
        device_id: str | None = None,
        rule_id: str | None = None,
        state: AlertState | None = None,
    ) -> list[AlertRecord]:
        """Alerts newest first (opened_at, then id), before the (opened_at, id) `before`."""
        query = select(_a).order_by(_a.c.opened_at.desc(), _a.c.id.desc()).limit(limit)
        if device_id is not None:
            query = query.where(_a.c.device_id == device_id)
        if rule_id is not None:
            query = query.where(_a.c.rule_id == rule_id)
        if state is not None:
            query = query.where(_a.c.state == str(state))
        if before is not None:
            at, alert_id = before
            query = query.where(
                or_(_a.c.opened_at < at, and_(_a.c.opened_at == at, _a.c.id < alert_id))
            )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_alert(row) for row in rows]

    async def get_alert(self, alert_id: int) -> AlertRecord | None:
        async with translated_errors(), self._engine.connect() as conn:
            row = (await conn.execute(select(_a).where(_a.c.id == alert_id))).mappings().first()
        return _alert(row) if row else None

    async def acknowledge(self, alert_id: int, by: str, at: datetime) -> AlertRecord | None:
        """Mark the alert acknowledged; the first acknowledgement stands (who saw it first).
        None when there is no such alert."""
        async with transaction(self._engine) as conn:
            await conn.execute(
                update(_a)
                .where(_a.c.id == alert_id, _a.c.acknowledged_at.is_(None))
                .values(acknowledged_at=at, acknowledged_by=by)
            )
            row = (await conn.execute(select(_a).where(_a.c.id == alert_id))).mappings().first()
        return _alert(row) if row else None

    async def silence(self, alert_id: int, until: datetime) -> AlertRecord | None:
        """No notification for this alert (and for its rule and device's next ones) until
        `until`; None when there is no such alert."""
        async with transaction(self._engine) as conn:
            result = await conn.execute(
                update(_a).where(_a.c.id == alert_id).values(silenced_until=until).returning(*_a.c)
            )
            row = result.mappings().first()
        return _alert(row) if row else None

    # ---- deliveries ------------------------------------------------------------------------

    async def deliveries(
        self, alert_id: int
    ) -> list[tuple[AlertDeliveryRecord, list[AlertDeliveryAttempt]]]:
        """The alert's notifications in order, each with its attempts in order."""
        async with translated_errors(), self._engine.connect() as conn:
            query = select(_dl).where(_dl.c.alert_id == alert_id).order_by(_dl.c.id)
            rows = (await conn.execute(query)).mappings().all()
            attempts = (
                (
                    await conn.execute(
                        select(_at)
                        .where(_at.c.delivery_id.in_([row["id"] for row in rows]))
                        .order_by(_at.c.id)
                    )
                )
                .mappings()
                .all()
                if rows
                else []
            )
        by_delivery: dict[int, list[AlertDeliveryAttempt]] = {}
        for row in attempts:
            by_delivery.setdefault(row["delivery_id"], []).append(_attempt(row))
        return [(_delivery(row), by_delivery.get(row["id"], [])) for row in rows]

    async def open_counts_by_rule(self) -> dict[str, int]:
        """How many alerts each rule has open (rules with none are left out)."""
        query = (
            select(_a.c.rule_id, func.count())
            .where(_a.c.state == str(AlertState.OPEN))
            .group_by(_a.c.rule_id)
        )
        async with translated_errors(), self._engine.connect() as conn:
            return {rule_id: int(count) for rule_id, count in await conn.execute(query)}

    async def any_due(self, now: datetime) -> bool:
        """Whether a pending delivery is due: a read, so an idle outbox polling it takes no
        write lock (SQLite's is the collector's too)."""
        query = (
            select(_dl.c.id).where(_dl.c.state == PENDING, _dl.c.next_attempt_at <= now).limit(1)
        )
        async with translated_errors(), self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def claim_due_deliveries(
        self, now: datetime, limit: int, lease: timedelta = DEFAULT_LEASE
    ) -> list[AlertDeliveryRecord]:
        """Pending deliveries due at `now`, oldest due first, each hidden from other claimers
        for `lease` (its next_attempt_at moves to now + lease): two workers never hold the
        same delivery at once. One statement: on PostgreSQL the rows another worker is
        claiming are skipped (FOR UPDATE SKIP LOCKED), not waited for; SQLite has one writer
        at a time, which is the same guarantee."""
        due = (
            select(_dl.c.id)
            .where(_dl.c.state == PENDING, _dl.c.next_attempt_at <= now)
            .order_by(_dl.c.next_attempt_at, _dl.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(_dl)
            .where(_dl.c.id.in_(due))
            .values(next_attempt_at=now + lease)
            .returning(*_dl.c)
        )
        async with transaction(self._engine) as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return sorted((_delivery(row) for row in rows), key=lambda d: d.id)

    async def record_attempt(
        self,
        delivery_id: int,
        attempt: AlertDeliveryAttempt,
        *,
        delivered: bool,
        next_attempt_at: datetime | None,
        give_up: bool = False,
    ) -> AlertDeliveryRecord | None:
        """Log one attempt and settle the delivery: `delivered`, or given up (`failed`), or
        pending again at `next_attempt_at`. A delivery no longer pending (delivered or given
        up already) is left as it is, the attempt still logged. None: no such delivery."""
        if delivered:
            state, due, delivered_at = DELIVERED, None, attempt.at
        elif give_up or next_attempt_at is None:
            state, due, delivered_at = FAILED, None, None
        else:
            state, due, delivered_at = PENDING, next_attempt_at, None
        async with transaction(self._engine) as conn:
            exists = (
                await conn.execute(select(_dl.c.id).where(_dl.c.id == delivery_id))
            ).scalar_one_or_none()
            if exists is None:
                return None
            await conn.execute(
                _at.insert().values(
                    delivery_id=delivery_id,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                )
            )
            await conn.execute(
                update(_dl)
                .where(_dl.c.id == delivery_id, _dl.c.state == PENDING)
                .values(
                    state=state,
                    attempts=_dl.c.attempts + 1,
                    next_attempt_at=due,
                    last_status=attempt.status_code,
                    last_error=attempt.error,
                    delivered_at=delivered_at,
                )
            )
            row = (await conn.execute(select(_dl).where(_dl.c.id == delivery_id))).mappings().one()
        return _delivery(row)
