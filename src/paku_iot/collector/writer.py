"""The batch writer: collects parsed messages and commits them to the database in batches.

Each message comes with a token of its source, opaque to the writer: a PUBACK token (the
legacy session's intake, collector/intake.py) or a spool position (the drain,
collector/drain.py). After each commit it hands the batch's tokens back (`run`'s
`on_committed`): nothing that was not committed is ever handed over, so a crash at any point
leaves the message with its source (the broker, or the spool), which delivers it again.
Writes are retried with backoff while the database is unavailable; meanwhile messages pile up
here, and the feeder bounds them: past its limit it stops handing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.collector.acks import settle_commands
from paku_iot.collector.ota_reports import record_ota_reports
from paku_iot.collector.parse import Parsed, RejectReason, rejected
from paku_iot.collector.stats import IngestStats
from paku_iot.protocol import STATE_ONLINE, event_topic, state_topic, telemetry_topic
from paku_iot.storage.devices import existing_device_ids
from paku_iot.storage.engine import is_unavailable_error
from paku_iot.storage.messages import insert_rejected, write_batch
from paku_iot.storage.records import (
    EventRecord,
    IngestBatch,
    RejectedRecord,
    StateReport,
    TelemetryRecord,
)

log = logging.getLogger("paku_iot.collector")

_MAX_BACKOFF_S = 5.0


PubackToken = int
"""What the intake needs to send one message's PUBACK once it is stored (QoS 0 messages have
none)."""

Token = TypeVar("Token")
"""Opaque to the writer: what the feeder needs back once a message is stored."""


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
    if isinstance(record, StateReport) and record.sent:
        return record.sent  # as sent: its payload lacks what was set aside
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


def _duplicate_ts(record: TelemetryRecord) -> RejectedRecord:
    detail = (
        f"ts {record.ts.isoformat()} already holds a different sample of this device: this one "
        "was not stored (give each sample its own ts)"
    )
    if record.text is None:
        return _set_aside(record, RejectReason.DUPLICATE_TS, detail)
    # The sample as sent, so it can be told from the one stored.
    payload = record.text.encode()
    return rejected(
        _topic_of(record),
        payload,
        record.received_at,
        RejectReason.DUPLICATE_TS,
        detail,
        record.device_id,
    )


def build_batch(records: list[Parsed], known_devices: set[str]) -> IngestBatch:
    """Sort records into a batch; messages from devices not in the registry are rejected."""
    batch = IngestBatch()
    for record in records:
        if isinstance(record, RejectedRecord):
            batch.rejected.append(record)
        elif isinstance(record, StateReport) and not record.payload and record.ack is None:
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
            batch.rejected.extend(record.set_aside)
    return batch


class BatchWriter(Generic[Token]):
    """Collects parsed messages and commits them in batches of up to `batch_size`, waiting at
    most `linger_s` for a batch to fill. After each commit it hands the batch's tokens to
    `run`'s `on_committed`; nothing that was not committed is ever handed over.

    `on_online` is told (after commit) which devices just said they are online: their queued
    commands can go out now. `observe_batch` is told the size and write time of every
    committed batch (metrics). `on_batch` is given every committed batch itself (alert
    evaluation, in memory: nothing on it may query the database).

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
        on_online: Callable[[set[str]], None] | None = None,
        observe_batch: Callable[[int, float], None] | None = None,
        on_batch: Callable[[IngestBatch], None] | None = None,
    ) -> None:
        self._engine = engine
        self._stats = stats
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._on_online = on_online
        self._observe_batch = observe_batch
        self._on_batch = on_batch
        self._records: list[Parsed] = []
        # One entry per record; None when nothing is owed back (QoS 0 messages get no PUBACK).
        self._tokens: list[Token | None] = []
        # The most messages ever waiting here at once: flow control keeps it near the intake's
        # limit (operators and tests can see that it does).
        self.peak_backlog = 0
        self._arrived = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False

    @property
    def backlog(self) -> int:
        """Messages received and not yet committed."""
        return len(self._records)

    def offer(self, record: Parsed, token: Token | None) -> None:
        """Take one message; its token comes back through `on_committed` once stored."""
        self._records.append(record)
        self._tokens.append(token)
        waiting = len(self._records)
        if waiting == 1:
            self._arrived.set()
        if waiting >= self._batch_size:
            self._batch_full.set()
        self.peak_backlog = max(self.peak_backlog, waiting)

    async def run(
        self,
        on_committed: Callable[[list[Token]], None],
        on_failed: Callable[[int], None] | None = None,
    ) -> None:
        """Write batches until `stop()`; then write what is waiting and return. The tokens of
        every committed batch go to `on_committed`; `on_failed` is told the size of a batch
        given up on because of a bug (its tokens never come back).

        The callbacks come here rather than to the constructor because they belong to the
        feeder, which is built with this writer (it offers messages to it)."""
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
            records, tokens = self._take()
            try:
                committed = await self._write_with_retry(records)
            except Exception:
                # A bug, not bad input (that is set aside) nor an outage (that is retried):
                # leave these messages with their source (no PUBACK: the broker redelivers
                # them on the next connection) and keep ingesting the rest.
                log.exception("writing a batch of %d failed", len(records))
                if on_failed is not None:
                    on_failed(len(records))
                continue
            if committed:
                on_committed([token for token in tokens if token is not None])

    def _take(self) -> tuple[list[Parsed], list[Token | None]]:
        if len(self._records) <= self._batch_size:
            records, tokens = self._records, self._tokens
            self._records, self._tokens = [], []
            return records, tokens
        size = self._batch_size
        records, tokens = self._records[:size], self._tokens[:size]
        del self._records[:size], self._tokens[:size]
        return records, tokens

    async def _write_with_retry(self, records: list[Parsed]) -> bool:
        """True once committed; False if given up at shutdown (left to the source)."""
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
                        "database unavailable at shutdown: %d messages left to their source "
                        "(the broker, or the spool)",
                        len(records) + len(self._records),
                    )
                    self._records.clear()
                    self._tokens.clear()
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
            not_stored = await write_batch(conn, batch)
            # Found only against the database: samples whose ts was taken, answers that
            # settle no command.
            late = [_duplicate_ts(record) for record in not_stored]
            if batch.events or batch.states:
                late += await settle_commands(conn, batch.events, batch.states)
            if batch.events:
                await record_ota_reports(conn, batch.events)
            if late:
                await insert_rejected(conn, late)
        self._count(batch, late, len(not_stored))
        if self._observe_batch is not None:
            self._observe_batch(len(records), time.perf_counter() - started)
        if self._on_batch is not None:
            self._on_batch(batch)
        came_online = {
            s.device_id for s in batch.states if s.live and s.payload.get(STATE_ONLINE) is True
        }
        if came_online and self._on_online is not None:
            self._on_online(came_online)

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

    def _count(self, batch: IngestBatch, late: list[RejectedRecord], not_stored: int) -> None:
        self._stats.accepted["telemetry"] += len(batch.telemetry) - not_stored
        self._stats.accepted["event"] += len(batch.events)
        self._stats.accepted["state"] += len(batch.states)
        for record in (*batch.rejected, *late):
            self._stats.rejected[record.reason] += 1

    def stop(self) -> None:
        self._stopping = True
        self._arrived.set()
        self._batch_full.set()


def _device_ids(records: list[Parsed]) -> set[str]:
    return {r.device_id for r in records if not isinstance(r, RejectedRecord)}
