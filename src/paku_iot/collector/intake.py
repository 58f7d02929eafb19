"""MQTT intake: each received message is parsed and handed to the batch writer; the handler
returns (and gmqtt sends the PUBACK) only once the message is committed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Protocol

from paku_iot.collector.parse import parse_message
from paku_iot.collector.writer import BatchWriter, WriterStopped

PUBACK_SUCCESS = 0


class FlowControl(Protocol):
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Intake:
    """Hands messages to the writer, and bounds how many wait in this process.

    The broker is meant to stop at our MQTT receive maximum, but Mosquitto 2.0.11 overshoots
    it once acknowledgements flow (tens of thousands measured, see docs/performance.md). So
    past `max_in_flight` unacknowledged messages we stop reading the socket; TCP pushes back
    and the broker keeps the rest in its queue, where they cost it well under a KiB each.
    """

    def __init__(self, writer: BatchWriter, *, max_payload_bytes: int, max_in_flight: int) -> None:
        self._writer = writer
        self._max_payload_bytes = max_payload_bytes
        self._high_water = max_in_flight
        self._low_water = max_in_flight // 2
        self._in_flight = 0
        self._paused = False
        self._connection_closed = asyncio.Event()
        self.flow: FlowControl | None = None

    def connection_closed(self) -> None:
        """Called once the broker connection is gone for good (shutdown)."""
        self._connection_closed.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def handle(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        record = parse_message(
            topic,
            payload,
            datetime.now(UTC),
            retained=bool(properties.get("retain")),
            max_payload_bytes=self._max_payload_bytes,
        )
        self._in_flight += 1
        if self._in_flight >= self._high_water and not self._paused and self.flow is not None:
            self._paused = True
            self.flow.pause_reading()
        try:
            await self._writer.submit(record)
        except WriterStopped:
            # Never acknowledge what was not stored: return only once the connection is
            # closed, so no PUBACK can reach the broker, which delivers the message again to
            # the next collector session. (Waiting forever would leave a task to be cancelled
            # at exit, which gmqtt reports as an error.)
            await self._connection_closed.wait()
        finally:
            self._in_flight -= 1
            if self._paused and self._in_flight <= self._low_water and self.flow is not None:
                self._paused = False
                self.flow.resume_reading()
        return PUBACK_SUCCESS
