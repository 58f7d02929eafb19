"""MQTT intake through the spool: every message from the broker is appended to the spool, and
its PUBACK goes out once a sync has made it durable there (collector/spool.py), not once the
database has it. The drain (collector/drain.py) takes it to the database afterwards.

Why: acknowledging at database commit leaves the backlog in the broker's memory, which drops
acknowledged messages past its queue limit (issue 17). Acknowledging at spool fsync keeps the
broker's queue small whatever the database does; the bound moves to the spool's disk size,
and past it we stop reading the socket, so that the broker queues (TCP backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from paku_iot.collector.intake import BrokerSide
from paku_iot.collector.spool import Spool, SpoolError, SpoolFull, encode_message
from paku_iot.collector.writer import PubackToken

log = logging.getLogger("paku_iot.collector")

# A sync covers up to this many messages: bounds the memory held between two fsyncs and the
# size of one PUBACK write.
SYNC_MAX_MESSAGES = 5000
# How long a sync waits for more messages once the first one came: a few ms of latency buys
# one fsync for many messages at high rates (the fsync itself also groups: what arrives while
# it runs goes into the next one).
SYNC_LINGER_S = 0.002
# While the spool refuses appends (past its slack), try again this often.
_FULL_RETRY_S = 0.05


class SpooledIntake:
    """Appends each message to the spool, and PUBACKs exactly the messages a sync made
    durable. Pauses reading from the broker while the spool is full, and resumes once it is
    back under `low_water_bytes` (the drain deletes whole segments as it commits).

    Wiring: `link.start(intake.handle)`, and `run()` as a task (the sync loop); `on_synced`
    is told after every sync (the drain reads only what is durable)."""

    def __init__(
        self,
        spool: Spool,
        broker: BrokerSide,
        *,
        low_water_bytes: int,
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self._spool = spool
        self._broker = broker
        self._low_water = low_water_bytes
        self._on_synced = on_synced
        # Received, not yet appended: the encoded records and their PUBACK tokens (None at
        # QoS 0), in order.
        self._records: list[bytes] = []
        self._tokens: list[PubackToken | None] = []
        self._arrived = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._stopping = False
        self._reading_stopped = False
        self.paused = False  # reading paused because the spool is full
        self.pauses = 0  # how often (tests and logs)
        self.failed: str | None = None  # the spool failed (a write or fsync error)

    def handle(
        self, topic: str, payload: bytes, retained: bool, puback: PubackToken | None
    ) -> None:
        """A message from the broker (`puback` is None at QoS 0)."""
        received_at_us = time.time_ns() // 1_000
        self._records.append(encode_message(topic, payload, retained, received_at_us))
        self._tokens.append(puback)
        waiting = len(self._records)
        if waiting == 1:
            self._arrived.set()
        if waiting >= SYNC_MAX_MESSAGES:
            self._batch_full.set()

    async def run(self) -> None:
        """The sync loop: append what arrived, fsync, PUBACK it. Until `stop()`, after which
        what had arrived is synced and acknowledged before returning."""
        try:
            await self._sync_forever()
        except SpoolError as exc:
            # A failed write or fsync: nothing more can be called durable. Stop taking
            # messages (the broker keeps what we did not acknowledge) and say so in /health.
            log.exception("the spool failed: no more messages are taken from the broker")
            self.failed = str(exc)
            self.stop_reading()

    async def _sync_forever(self) -> None:
        while True:
            if not self._records:
                if self._stopping:
                    return
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=0.2)
                self._check_resume()
                continue
            if len(self._records) < SYNC_MAX_MESSAGES and not self._stopping:
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), timeout=SYNC_LINGER_S)
            if not await self._sync_some():
                if self._stopping:
                    log.warning(
                        "spool full at shutdown: %d messages not acknowledged, the broker "
                        "delivers them again on the next connection",
                        len(self._records),
                    )
                    return
                await asyncio.sleep(_FULL_RETRY_S)
            self._check_resume()

    async def _sync_some(self) -> bool:
        """Append and sync up to a batch of what arrived; PUBACK it. False when the spool
        refused it (past its slack): it stays here, in order, for the next try."""
        count = min(len(self._records), SYNC_MAX_MESSAGES)
        records = self._records[:count]
        try:
            self._spool.append(records)
        except SpoolFull:
            self._pause()
            return False
        tokens = self._tokens[:count]
        del self._records[:count], self._tokens[:count]
        if self._spool.full:
            self._pause()
        await self._spool.sync_async()
        # Only now are these durable; a token of an older connection is dropped by the link
        # (the broker delivers that message again, the spool holds it twice, the database's
        # dedup key absorbs the copy).
        self._broker.send_pubacks([token for token in tokens if token is not None])
        self._on_synced()
        return True

    def _pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.pauses += 1
        log.warning(
            "spool %s is full (%d bytes, limit %d): reading from the broker is paused until "
            "the database catches up",
            self._spool.directory,
            self._spool.size_bytes,
            self._spool.max_bytes,
        )
        if not self._reading_stopped:
            self._broker.pause_reading()

    def _check_resume(self) -> None:
        if not self.paused:
            return
        if self._spool.size_bytes > self._low_water:
            if not self._reading_stopped:
                # Again: a pause holds for one connection, and the link may have reconnected.
                self._broker.pause_reading()
            return
        self.paused = False
        log.warning("spool %s has room again: reading from the broker", self._spool.directory)
        if not self._reading_stopped:
            self._broker.resume_reading()

    def stop_reading(self) -> None:
        """Shutdown, first step: take nothing more from the broker (what it sent and we did
        not acknowledge, it delivers again on the next connection)."""
        self._reading_stopped = True
        self._broker.pause_reading()

    def stop(self) -> None:
        """Sync and PUBACK what has arrived, then end `run`. Call `stop_reading` first."""
        self._stopping = True
        self._arrived.set()
        self._batch_full.set()

    @property
    def waiting(self) -> int:
        """Messages received and not yet durable (not acknowledged)."""
        return len(self._records)
