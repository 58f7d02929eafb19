"""The batch writer: a bounded queue between MQTT intake and the database.

A message is acknowledged to the broker only when the batch holding it has committed, so a
crash at any point leaves it with the broker, which delivers it again. Writes are retried
with backoff while the database is unavailable; meanwhile the queue fills, intake waits, the
broker stops sending (its in-flight window is full) and keeps the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.collector.acks import settle_commands
from paku_iot.collector.ota_reports import record_ota_reports
from paku_iot.collector.parse import Parsed, RejectReason, rejected
from paku_iot.collector.stats import IngestStats
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


class WriterStopped(Exception):
    """The writer stopped before this message was stored: it must not be acknowledged."""


@dataclass(slots=True)
class _Pending:
    record: Parsed
    done: asyncio.Future[None]


def _topic_of(record: Parsed) -> str:
    if isinstance(record, RejectedRecord):
        return record.topic
    if isinstance(record, TelemetryRecord):
        return f"paku/{record.device_id}/telemetry"
    if isinstance(record, EventRecord):
        return f"paku/{record.device_id}/event/{record.type}"
    return f"paku/{record.device_id}/state"


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
    def __init__(
        self,
        engine: AsyncEngine,
        stats: IngestStats,
        *,
        batch_size: int,
        linger_s: float,
        queue_size: int,
    ) -> None:
        self._engine = engine
        self._stats = stats
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._stopping = False
        # Told (after commit) which devices just said they are online: their queued
        # commands can go out now.
        self.on_online: Callable[[set[str]], None] | None = None
        # Told the size and write time of every committed batch (metrics).
        self.observe_batch: Callable[[int, float], None] | None = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, record: Parsed) -> None:
        """Queue `record` and return once it is committed. Raises `WriterStopped` if it never
        will be (shutdown), so the caller does not acknowledge it."""
        if self._stopping:
            raise WriterStopped
        pending = _Pending(record, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        await pending.done

    async def run(self) -> None:
        """Write batches until `stop()`; then write what is queued and return."""
        while True:
            if self._stopping and self._queue.empty():
                return
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=0.2)
            except TimeoutError:
                continue
            items = await self._gather(first)
            try:
                await self._write_with_retry(items)
            except Exception:
                # A bug, not bad input (that is set aside) nor an outage (that is retried):
                # leave these messages unacknowledged and keep ingesting the rest.
                log.exception("writing a batch of %d failed", len(items))
                self._fail(items)

    async def _gather(self, first: _Pending) -> list[_Pending]:
        items = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger_s
        while len(items) < self._batch_size:
            try:
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return items

    async def _write_with_retry(self, items: list[_Pending]) -> None:
        delay = 0.1
        while True:
            try:
                await self._write(items)
            except Exception as exc:
                if not is_unavailable_error(exc):
                    raise
                self._stats.write_failures += 1
                self._stats.degraded_reason = f"database unavailable: {type(exc).__name__}"
                if self._stopping:
                    log.error(
                        "database unavailable at shutdown: %d messages left to the broker",
                        len(items) + self._queue.qsize(),
                    )
                    self._fail(items)
                    self._fail_queued()
                    return
                log.warning("database write failed (%s), retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            self._stats.degraded_reason = None
            for item in items:
                if not item.done.done():
                    item.done.set_result(None)
            return

    async def _write(self, items: list[_Pending]) -> None:
        records = [item.record for item in items]
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
        came_online = {
            s.device_id for s in batch.states if s.live and s.payload.get("online") is True
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

    def _fail(self, items: list[_Pending]) -> None:
        for item in items:
            if not item.done.done():
                item.done.set_exception(WriterStopped())

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            self._fail([self._queue.get_nowait()])

    def stop(self) -> None:
        self._stopping = True


def _device_ids(records: list[Parsed]) -> set[str]:
    return {r.device_id for r in records if not isinstance(r, RejectedRecord)}
