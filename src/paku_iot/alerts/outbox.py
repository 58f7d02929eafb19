"""The delivery worker: sends the notifications waiting in the database's outbox.

Opening or resolving an alert writes its notifications (one per destination) in the same
transaction (storage/alerts.py `apply`), so none is lost to a crash or a receiver that is down.
This worker claims what is due (other workers, on other replicas, cannot claim the same rows
while the claim's lease runs), sends each, and records the attempt: delivered on a 2xx, else
due again after a growing backoff, and given up after sender.GIVE_UP_AFTER.

A notification is sent at least once. It is sent twice only if this process dies between a
receiver's 2xx and recording it; the repeat carries the same X-Paku-Delivery id, so the
receiver can drop it (docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from paku_iot.alerts.payloads import notification, render
from paku_iot.alerts.sender import SendResult, backoff, given_up, send
from paku_iot.alerts.stats import AlertStats
from paku_iot.exceptions import PakuError
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import AlertDeliveryAttempt, AlertDeliveryRecord

log = logging.getLogger("paku_iot.alerts")

BATCH = 20  # deliveries claimed (and sent concurrently) at a time
IDLE_POLL_S = 1.0  # how often to look for due deliveries when nobody woke us
SEND_TIMEOUT_S = 10.0  # well inside the claim's lease (60 s)
_MAX_ERROR_BACKOFF_S = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


class DeliveryWorker:
    def __init__(
        self,
        store: AlertStore,
        devices: DeviceStore,
        stats: AlertStats,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._devices = devices
        self._stats = stats
        self._clock = clock
        self._due = asyncio.Event()

    def wake(self) -> None:
        """New notifications are in the outbox: look now rather than at the next poll."""
        self._due.set()

    async def run(self) -> None:
        delay = 1.0
        # No connections kept alive: deliveries are rare, and sender.py connects to the
        # address it resolved, so a pooled connection is keyed by address, not by the host
        # name its TLS session was made for.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(follow_redirects=False, limits=limits) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except PakuError as exc:  # the database is unavailable: the outbox waits
                    log.warning("alert deliveries wait for the database: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_ERROR_BACKOFF_S)
                    continue
                delay = 1.0
                if sent:
                    continue  # there may be more due
                self._due.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._due.wait(), IDLE_POLL_S)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Send what is due now; how many were claimed."""
        now = self._clock()
        if not await self._store.any_due(now):
            return 0
        due = await self._store.claim_due_deliveries(now, BATCH)
        await asyncio.gather(*(self._deliver(client, delivery) for delivery in due))
        return len(due)

    async def _deliver(self, client: httpx.AsyncClient, delivery: AlertDeliveryRecord) -> None:
        body = await self._body(delivery)
        if body is None:
            # The alert or its rule went (deleted) between the claim and now: nothing to say.
            await self._record(delivery, SendResult(None, "the alert no longer exists", 0, False))
            return
        payload, headers = render(delivery.destination, body)
        result = await send(
            client,
            delivery.destination,
            payload,
            headers,
            SEND_TIMEOUT_S,
            delivery_id=delivery.id,
        )
        await self._record(delivery, result)

    async def _body(self, delivery: AlertDeliveryRecord) -> dict[str, object] | None:
        alert = await self._store.get_alert(delivery.alert_id)
        if alert is None:
            return None
        rule = await self._store.get_rule(alert.rule_id)
        if rule is None:
            return None
        device = await self._devices.get(alert.device_id)
        known = {"model": device.model} if device is not None else None
        return notification(delivery.event, alert, rule, known, self._clock())

    async def _record(self, delivery: AlertDeliveryRecord, result: SendResult) -> None:
        now = self._clock()
        attempt = AlertDeliveryAttempt(
            delivery_id=delivery.id,
            at=now,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )
        give_up = not result.delivered and given_up(delivery.created_at, now)
        next_at = None if result.delivered or give_up else now + backoff(delivery.attempts + 1)
        await self._store.record_attempt(
            delivery.id,
            attempt,
            delivered=result.delivered,
            next_attempt_at=next_at,
            give_up=give_up,
        )
        where = f"{delivery.destination.type.value} {_host(delivery.destination.url)}"
        if result.delivered:
            self._stats.delivered += 1
            log.info("alert %d %s delivered to %s", delivery.alert_id, delivery.event, where)
            return
        self._stats.failed_attempts += 1
        if give_up:
            self._stats.given_up += 1
            log.error(
                "alert %d %s to %s given up after %d attempts: %s",
                delivery.alert_id,
                delivery.event,
                where,
                delivery.attempts + 1,
                result.error or result.status_code,
            )
        else:
            log.warning(
                "alert %d %s to %s failed (%s), next attempt at %s",
                delivery.alert_id,
                delivery.event,
                where,
                result.error or result.status_code,
                next_at.isoformat() if next_at else "-",
            )


def _host(url: str) -> str:
    """A destination's host for the log: its URL may hold a token (Slack's do)."""
    return httpx.URL(url).host
