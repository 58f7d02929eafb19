"""Alerts as operators see them: the history, acknowledging and silencing one, and the log
of its notifications."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from paku_iot.exceptions import InvalidInput, NotFound
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertDeliveryRecord,
    AlertRecord,
    AlertRuleRecord,
    AlertState,
)

MAX_SILENCE_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert with its rule (None only if the rule went between the two reads)."""

    alert: AlertRecord
    rule: AlertRuleRecord | None


class AlertService:
    def __init__(self, store: AlertStore) -> None:
        self._store = store

    async def _views(self, alerts: list[AlertRecord]) -> list[AlertView]:
        # One query for the page's rules: the listing shows each alert's rule name and kind.
        rules = await self._store.rules(a.rule_id for a in alerts)
        return [AlertView(a, rules.get(a.rule_id)) for a in alerts]

    async def page(
        self,
        *,
        limit: int,
        before: tuple[datetime, int] | None = None,
        device_id: str | None = None,
        rule_id: str | None = None,
        state: AlertState | None = None,
    ) -> list[AlertView]:
        """Alerts newest first (by opened time), before the (openedAt, id) `before`."""
        alerts = await self._store.page_alerts(
            limit=limit, before=before, device_id=device_id, rule_id=rule_id, state=state
        )
        return await self._views(alerts)

    async def _found(self, alert: AlertRecord | None, alert_id: int) -> AlertView:
        if alert is None:
            raise NotFound(f"no alert {alert_id}", code="alert_not_found")
        [view] = await self._views([alert])
        return view

    async def get(self, alert_id: int) -> AlertView:
        return await self._found(await self._store.get_alert(alert_id), alert_id)

    async def acknowledge(self, alert_id: int, actor: str) -> AlertView:
        """The first acknowledgement stands; acknowledging again answers the alert as is."""
        alert = await self._store.acknowledge(alert_id, actor, datetime.now(UTC))
        return await self._found(alert, alert_id)

    async def silence(self, alert_id: int, seconds: int) -> AlertView:
        """No notifications for `seconds` from now: for this alert, and for its rule and
        device's next alerts while the silence lasts (a flapping device stays quiet)."""
        if isinstance(seconds, bool) or not 1 <= seconds <= MAX_SILENCE_S:
            raise InvalidInput(
                f"seconds must be between 1 and {MAX_SILENCE_S} (7 days)", code="invalid_silence"
            )
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        return await self._found(await self._store.silence(alert_id, until), alert_id)

    async def deliveries(
        self, alert_id: int
    ) -> list[tuple[AlertDeliveryRecord, list[AlertDeliveryAttempt]]]:
        await self.get(alert_id)
        return await self._store.deliveries(alert_id)

    async def open_alerts(
        self, rule_id: str | None = None, device_id: str | None = None
    ) -> list[AlertRecord]:
        return await self._store.open_alerts(rule_id=rule_id, device_id=device_id)

    async def counts(self) -> tuple[int, int]:
        """(alerts open, notifications waiting in the outbox)."""
        return await self._store.counts()

    async def open_counts_by_rule(self) -> dict[str, int]:
        return await self._store.open_counts_by_rule()
