"""MQTT intake: each received message is parsed and handed to the batch writer; its PUBACK
goes out only once the batch holding it is committed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from paku_iot.collector.parse import parse_message
from paku_iot.collector.writer import AckToken, BatchWriter


class BrokerSide(Protocol):
    """What the intake needs of the broker connection."""

    def acknowledge(self, tokens: Iterable[AckToken]) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Intake:
    """Hands messages to the writer, acknowledges them after commit, and bounds how many wait
    in this process.

    The broker is meant to stop at our MQTT receive maximum, but Mosquitto 2.0.11 overshoots
    it once acknowledgements flow (tens of thousands measured, see docs/performance.md). So
    past `max_in_flight` uncommitted messages we stop reading the socket; TCP pushes back and
    the broker keeps the rest in its queue, where they cost it well under a KiB each.
    """

    def __init__(self, writer: BatchWriter, *, max_payload_bytes: int, max_in_flight: int) -> None:
        self._writer = writer
        self._max_payload_bytes = max_payload_bytes
        self._high_water = max_in_flight
        self._low_water = max_in_flight // 2
        self._paused = False
        self.broker: BrokerSide | None = None
        writer.on_committed = self._committed

    def handle(self, topic: str, payload: bytes, retained: bool, ack: AckToken | None) -> None:
        record = parse_message(
            topic,
            payload,
            datetime.now(UTC),
            retained=retained,
            max_payload_bytes=self._max_payload_bytes,
        )
        self._writer.offer(record, ack)
        if (
            not self._paused
            and self._writer.backlog >= self._high_water
            and self.broker is not None
        ):
            self._paused = True
            self.broker.pause_reading()

    def _committed(self, acks: list[AckToken]) -> None:
        if self.broker is None:
            return
        self.broker.acknowledge(acks)
        if self._paused and self._writer.backlog <= self._low_water:
            self._paused = False
            self.broker.resume_reading()
