"""The collector with its spool: broker -> spooled intake -> spool -> drain -> batch writer ->
database, with its start, its shutdown, and what it tells metrics and /health.

Shutdown, in order: stop reading from the broker and PUBACK what is spooled (`stop_intake`,
before the broker link disconnects); then drain to the database for a bounded time, commit
the cursor, and leave the rest in the spool for the next start (`close`). At start, whatever a
previous run left in the spool is drained first: it was acknowledged, it comes before what
the broker delivers now.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from paku_iot.collector.drain import SpoolDrain
from paku_iot.collector.intake import BrokerSide
from paku_iot.collector.spool import DEFAULT_SEGMENT_BYTES, Position, Spool, SpoolError
from paku_iot.collector.spooled_intake import SpooledIntake
from paku_iot.collector.writer import BatchWriter

log = logging.getLogger("paku_iot.collector")

# How long the oldest spooled message may wait for the database before /health says the
# collector is behind.
BEHIND_AFTER_S = 60.0
# How long a shutdown keeps draining the spool to the database.
SHUTDOWN_DRAIN_S = 10.0


def segment_bytes_for(max_bytes: int) -> int:
    """Segment size for a spool of `max_bytes`: the default, or a quarter of a small spool
    (the spool needs two segments; four leave room to resume below the limit)."""
    return min(DEFAULT_SEGMENT_BYTES, max_bytes // 4)


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    size_bytes: int
    pending_messages: int
    oldest_pending_s: float
    full: bool  # reading from the broker is paused until the drain makes room


class SpooledCollector:
    """Owns the spool, its intake, its drain, and the writer they feed."""

    def __init__(
        self,
        spool: Spool,
        writer: BatchWriter[Position],
        broker: BrokerSide,
        *,
        max_payload_bytes: int,
        max_backlog: int,
        read_size: int,
    ) -> None:
        self.spool = spool
        self.writer = writer
        self.drain = SpoolDrain(
            spool,
            writer,
            max_payload_bytes=max_payload_bytes,
            max_backlog=max_backlog,
            read_size=read_size,
        )
        self.intake = SpooledIntake(
            spool,
            broker,
            low_water_bytes=spool.max_bytes - 2 * spool.segment_bytes,
            on_synced=self.drain.wake,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def open(
        cls,
        directory: Path,
        max_bytes: int,
        writer: BatchWriter[Position],
        broker: BrokerSide,
        *,
        max_payload_bytes: int,
        max_backlog: int,
        read_size: int,
    ) -> SpooledCollector:
        spool = Spool.open(
            directory, max_bytes=max_bytes, segment_bytes=segment_bytes_for(max_bytes)
        )
        if spool.pending_records:
            log.warning(
                "spool %s holds %d messages from an earlier run: they are stored first",
                directory,
                spool.pending_records,
            )
        return cls(
            spool,
            writer,
            broker,
            max_payload_bytes=max_payload_bytes,
            max_backlog=max_backlog,
            read_size=read_size,
        )

    def start(self) -> None:
        """Start the writer, the drain and the sync loop (before the broker link starts)."""
        self._tasks = [
            asyncio.create_task(
                self.writer.run(self.drain.committed, self.drain.failed_batch),
                name="batch-writer",
            ),
            asyncio.create_task(self.drain.run(), name="spool-drain"),
            asyncio.create_task(self.intake.run(), name="spool-sync"),
        ]

    async def stop_intake(self) -> None:
        """Take nothing more from the broker; sync and PUBACK what was received. Before the
        link disconnects, so that those PUBACKs go out on the connection they belong to."""
        if not self._tasks:
            return
        self.intake.stop_reading()
        self.intake.stop()
        await self._tasks[2]

    async def close(self, drain_limit_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Drain to the database for up to `drain_limit_s`, commit, and close the spool."""
        if not self._tasks:  # the service failed to start
            self.spool.close()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_limit_s
        while self.spool.pending_records and loop.time() < deadline:
            if self.drain.failed is not None:
                break
            await asyncio.sleep(0.05)
        writer_task, drain_task, _ = self._tasks
        self.drain.stop_feeding()
        self.writer.stop()
        await writer_task
        self.drain.stop_committing()
        await drain_task
        left = self.spool.pending_records
        if left:
            log.warning(
                "%d acknowledged messages stay in the spool %s (%d bytes): the next collector "
                "started with this spool directory stores them",
                left,
                self.spool.directory,
                self.spool.pending_bytes,
            )
        self.spool.close()

    def status(self) -> SpoolStatus:
        try:
            oldest = self.spool.oldest_pending_age_s
        except (SpoolError, OSError):
            oldest = 0.0  # a failed spool (degraded_reason says so) cannot read its frames
        return SpoolStatus(
            size_bytes=self.spool.size_bytes,
            pending_messages=self.spool.pending_records,
            oldest_pending_s=oldest,
            full=self.intake.paused,
        )

    def degraded_reason(self) -> str | None:
        """Why /health should call the collector degraded, if it should."""
        reasons = [self.intake.failed and f"spool failed: {self.intake.failed}", self.drain.failed]
        status = self.status()
        if status.full:
            reasons.append(
                f"spool full ({status.size_bytes} of {self.spool.max_bytes} bytes): reading "
                "from the broker is paused until the database catches up"
            )
        if status.oldest_pending_s > BEHIND_AFTER_S:
            reasons.append(
                f"database behind: {status.pending_messages} messages spooled, the oldest "
                f"for {status.oldest_pending_s:.0f} s"
            )
        given = [reason for reason in reasons if reason]
        return "; ".join(given) if given else None
