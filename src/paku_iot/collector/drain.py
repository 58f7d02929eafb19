"""The drain: reads the spool in order, parses each message with the receive time spooled with
it, hands it to the batch writer, and moves the spool's cursor past every committed batch.

The spooled receive time matters after a crash: records after the last committed cursor are
read and written again, and a message without a device `ts` is keyed by its receive time, so
the same time makes the database's dedup key absorb the copy (exactly once in the database,
at least once through the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from paku_iot.collector.parse import Parsed, parse_message
from paku_iot.collector.spool import Position, Spool, SpoolError, decode_message
from paku_iot.collector.writer import BatchWriter

log = logging.getLogger("paku_iot.collector")

# How long to wait for a sync or a commit before looking again anyway.
_POLL_S = 0.2


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def spooled_time(received_at_us: int) -> datetime:
    """The receive time as spooled. Integer arithmetic (a timedelta of whole microseconds
    is exact): a float division could land a microsecond off, and the replay would then not
    match the first write's key."""
    return _EPOCH + timedelta(microseconds=received_at_us)


class SpoolDrain:
    """Feeds the writer from the spool, keeping at most `max_backlog` messages in the
    writer's hands (the rest waits on disk, not in memory), and commits the spool position of
    the last record of every committed batch.

    Wiring: `writer.run(drain.committed, drain.failed)` and `drain.run()` as tasks;
    `wake()` after each spool sync (the intake's `on_synced`)."""

    def __init__(
        self,
        spool: Spool,
        writer: BatchWriter[Position],
        *,
        max_payload_bytes: int,
        max_backlog: int,
        read_size: int,
    ) -> None:
        self._spool = spool
        self._writer = writer
        self._max_payload_bytes = max_payload_bytes
        self._max_backlog = max_backlog
        self._read_size = read_size
        self._synced = asyncio.Event()
        # A batch committed: room in the writer (for the feeder), a cursor (for the committer).
        self._room = asyncio.Event()
        self._commit_due = asyncio.Event()
        self._to_commit: Position | None = None
        self._feeding = True
        self._committing = True
        # Why the cursor no longer moves, if it does not (a batch lost to a bug, a corrupt
        # spool): what is after it stays in the spool for the next start.
        self.failed: str | None = None

    def wake(self) -> None:
        """New records are durable in the spool."""
        self._synced.set()

    async def run(self) -> None:
        """Feed the writer until `stop_feeding`, commit the cursor until `stop_committing`."""
        committer = asyncio.create_task(self._commit_forever(), name="spool-commit")
        try:
            await self._feed_forever()
        except SpoolError as exc:
            log.exception("cannot read the spool: draining stops, what it holds stays there")
            self.failed = f"spool unreadable: {exc}"
        # The writer goes on committing what it was handed until it is stopped.
        await committer

    async def _feed_forever(self) -> None:
        while self._feeding:
            room = self._max_backlog - self._writer.backlog
            if room <= 0:
                await self._wait(self._room)
                continue
            items = self._spool.read(min(room, self._read_size))
            if not items:
                await self._wait(self._synced)
                continue
            for position, body in items:
                self._writer.offer(self._parse(body), position)
            # Reading and parsing a chunk costs a few ms: let the intake's sync loop run.
            await asyncio.sleep(0)

    async def _wait(self, event: asyncio.Event) -> None:
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=_POLL_S)

    def _parse(self, body: bytes) -> Parsed:
        message = decode_message(body)
        return parse_message(
            message.topic,
            message.payload,
            spooled_time(message.received_at_us),
            retained=message.retained,
            max_payload_bytes=self._max_payload_bytes,
        )

    def committed(self, positions: list[Position]) -> None:
        """The writer committed a batch (its records' positions, in spool order)."""
        if positions and self.failed is None:
            self._to_commit = positions[-1]
        self._room.set()
        self._commit_due.set()

    def failed_batch(self, size: int) -> None:
        """The writer gave up on a batch (a bug, logged): committing any later position would
        skip it, so the cursor stays before it until the next start reads it again."""
        self.failed = (
            f"a batch of {size} spooled messages could not be written (see the log); the "
            "spool keeps them and grows until the collector is restarted"
        )

    async def _commit_forever(self) -> None:
        while True:
            position, self._to_commit = self._to_commit, None
            if position is not None:
                await self._spool.commit_async(position)
            elif not self._committing:
                return
            else:
                await self._wait(self._commit_due)

    def stop_feeding(self) -> None:
        """Shutdown, first step: read nothing more. The writer still writes what it has, and
        its commits still move the cursor, until `stop_committing`."""
        self._feeding = False
        self._synced.set()
        self._room.set()

    def stop_committing(self) -> None:
        """Shutdown, last step (the writer has stopped): commit the last position, and `run`
        returns."""
        self._committing = False
        self._commit_due.set()
