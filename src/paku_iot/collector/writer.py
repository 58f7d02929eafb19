"""The batch writer: a bounded queue between MQTT intake and the database.

A message is acknowledged to the broker only when the batch holding it has committed, so a
crash at any point leaves it with the broker, which delivers it again. Writes are retried
with backoff while the database is unavailable; meanwhile the queue fills, intake waits, the
broker stops sending (its in-flight window is full) and keeps the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.collector.acks import settle_commands
from paku_iot.collector.ota_reports import record_ota_reports
from paku_iot.collector.parse import Parsed, RejectReason, rejected
from paku_iot.collector.stats import IngestStats
from paku_iot.protocol import STATE_ONLINE, event_topic, state_topic, telemetry_topic
from paku_iot.storage.devices import existing_device_ids
from paku_iot.storage.engine import is_unavailable_error
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import (
    EventRecord,
    IngestBatch,
    RejectedRecord,
    StateReport,
    TelemetryRecord,
)

log = logging.getLogger("paku_iot.collector")

_MAX_BACKOFF_S = 5.0


AckToken = int
"""Opaque to the writer: what the intake needs to acknowledge one message once it is stored
(QoS 0 messages have none)."""


def _topic_of(record: Parsed) -> str:
    if isinstance(record, RejectedRecord):
        return record.topic
    if isinstance(record, TelemetryRecord):
        return telemetry_topic(record.device_id)
    if isinstance(record, EventRecord):
        return event_topic(record.device_id, record.type)
    return state_topic(record.device_id)


def _payload_of(record: Parsed) -> bytes:
    if isinstance(record, RejectedRecord):
        return record.payload
    return json.dumps(record.payload, separators=(",", ":")).encode()


def _set_aside(record: Parsed, reason: RejectReason, detail: str) -> RejectedRecord:
    return rejected(
        _topic_of(record),
        _payload_of(record),
        record.received_at,
        reason,
        detail,
        getattr(record, "device_id", None),
    )


def build_batch(records: list[Parsed], known_devices: set[str]) -> IngestBatch:
    """Sort records into a batch; messages from devices not in the registry are rejected."""
    batch = IngestBatch()
    for record in records:
        if isinstance(record, RejectedRecord):
            batch.rejected.append(record)
        elif isinstance(record, StateReport) and not record.payload:
            continue  # a retained state being cleared (device deleted): nothing to store
        elif record.device_id not in known_devices:
            batch.rejected.append(
                _set_aside(
                    record,
                    RejectReason.UNKNOWN_DEVICE,
                    f"no device {record.device_id!r} in the registry",
                )
            )
        elif isinstance(record, TelemetryRecord):
            batch.telemetry.append(record)
        elif isinstance(record, EventRecord):
            batch.events.append(record)
        elif isinstance(record, StateReport):
            batch.states.append(record)
    return batch


class BatchWriter:
    """Collects parsed messages and commits them in batches of up to `batch_size`, waiting at
    most `linger_s` for a batch to fill. After each commit it hands the batch's ack tokens to
    `on_committed`; nothing that was not committed is ever handed over.

    Deliberately no task, future or queue entry per message: at tens of thousands of messages
    a second that bookkeeping, not the database, is what limits a Python collector.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        stats: IngestStats,
        *,
        batch_size: int,
        linger_s: float,
    ) -> None:
        self._engine = engine
        self._stats = stats
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._records: list[Parsed] = []
        # One entry per record, None for QoS 0 messages, which are never acknowledged.
        self._acks: list[AckToken | None] = []
        # The most messages ever waiting here at once: flow control keeps it near the intake's
        # limit (operators and tests can see that it does).
        self.peak_backlog = 0
        self._arrived = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False
        # Told the ack tokens of every committed batch (the intake acknowledges them).
        self.on_committed: Callable[[list[AckToken]], None] | None = None
        # Told (after commit) which devices just said they are online: their queued
        # commands can go out now.
        self.on_online: Callable[[set[str]], None] | None = None
        # Told the size and write time of every committed batch (metrics).
        self.observe_batch: Callable[[int, float], None] | None = None
        # Told every committed batch and when it committed (benchmarks measure latency).
        self.observe_commit: Callable[[IngestBatch, float], None] | None = None

    @property
    def backlog(self) -> int:
        """Messages received and not yet committed."""
        return len(self._records)

    def offer(self, record: Parsed, ack: AckToken | None) -> None:
        """Take one message; its ack token comes back through `on_committed` once stored."""
        self._records.append(record)
        self._acks.append(ack)
        waiting = len(self._records)
        if waiting == 1:
            self._arrived.set()
        if waiting >= self._batch_size:
            self._batch_full.set()
        self.peak_backlog = max(self.peak_backlog, waiting)

    async def run(self) -> None:
        """Write batches until `stop()`; then write what is waiting and return."""
        while True:
            if not self._records:
                if self._stopping:
                    return
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=0.2)
                continue
            if len(self._records) < self._batch_size and not self._stopping:
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), timeout=self._linger_s)
            records, acks = self._take()
            try:
                committed = await self._write_with_retry(records)
            except Exception:
                # A bug, not bad input (that is set aside) nor an outage (that is retried):
                # leave these messages unacknowledged (the broker redelivers them on the next
                # connection) and keep ingesting the rest.
                log.exception("writing a batch of %d failed", len(records))
                continue
            if committed and self.on_committed is not None:
                self.on_committed([ack for ack in acks if ack is not None])

    def _take(self) -> tuple[list[Parsed], list[AckToken | None]]:
        if len(self._records) <= self._batch_size:
            records, acks = self._records, self._acks
            self._records, self._acks = [], []
            return records, acks
        size = self._batch_size
        records, acks = self._records[:size], self._acks[:size]
        del self._records[:size], self._acks[:size]
        return records, acks

    async def _write_with_retry(self, records: list[Parsed]) -> bool:
        """True once committed; False if given up at shutdown (left to the broker)."""
        delay = 0.1
        while True:
            try:
                await self._write(records)
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
                self._stats.write_failures += 1
                self._stats.degraded_reason = f"database unavailable: {type(exc).__name__}"
                if self._stopping:
                    log.error(
                        "database unavailable at shutdown: %d messages left to the broker",
                        len(records) + len(self._records),
                    )
                    self._records.clear()
                    self._acks.clear()
                    return False
                log.warning("database write failed (%s), retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            self._stats.degraded_reason = None
            return True

    async def _write(self, records: list[Parsed]) -> None:
        try:
            await self._commit(records)
        except Exception as exc:
            if is_unavailable_error(exc) or len(records) == 1:
                raise
            # One bad row must not hold up the others: store them one by one and set aside
            # whatever the database itself refuses.
            log.warning("batch of %d failed (%s); writing one by one", len(records), exc)
            for record in records:
                await self._commit_one(record)
            return
        self._stats.batches += 1

    async def _commit(self, records: list[Parsed]) -> None:
        started = time.perf_counter()
        async with self._engine.begin() as conn:
            batch = build_batch(records, await existing_device_ids(conn, _device_ids(records)))
            await write_batch(conn, batch)
            if batch.events:
                await settle_commands(conn, batch.events)
                await record_ota_reports(conn, batch.events)
        self._count(batch)
        if self.observe_batch is not None:
            self.observe_batch(len(records), time.perf_counter() - started)
        if self.observe_commit is not None:
            self.observe_commit(batch, time.time())
        came_online = {
            s.device_id for s in batch.states if s.live and s.payload.get(STATE_ONLINE) is True
        }
        if came_online and self.on_online is not None:
            self.on_online(came_online)

    async def _commit_one(self, record: Parsed) -> None:
        try:
            await self._commit([record])
        except Exception as exc:
            if is_unavailable_error(exc):
                raise
            log.error("message on %s could not be stored: %s", _topic_of(record), exc)
            # The driver's own message, not SQLAlchemy's, which quotes the statement and data.
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            detail = f"the database refused it: {reason}"
            await self._commit([_set_aside(record, RejectReason.UNSTORABLE, detail)])

    def _count(self, batch: IngestBatch) -> None:
        self._stats.accepted["telemetry"] += len(batch.telemetry)
        self._stats.accepted["event"] += len(batch.events)
        self._stats.accepted["state"] += len(batch.states)
        for record in batch.rejected:
            self._stats.rejected[record.reason] += 1

    def stop(self) -> None:
        self._stopping = True
        self._arrived.set()
        self._batch_full.set()


def _device_ids(records: list[Parsed]) -> set[str]:
    return {r.device_id for r in records if not isinstance(r, RejectedRecord)}
