"""MQTT intake: each received message is parsed and handed to the batch writer; its PUBACK
goes out only once the batch holding it is committed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from paku_iot.collector.parse import parse_message
from paku_iot.collector.writer import BatchWriter, PubackToken


class BrokerSide(Protocol):
    """What the intake needs of the broker connection (a BrokerLink)."""

    def send_pubacks(self, tokens: Iterable[PubackToken]) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Intake:
    """Hands messages to the writer, sends their PUBACKs after commit, and bounds how many
    wait in this process.

    The broker is meant to stop at our MQTT receive maximum, but Mosquitto 2.0.11 overshoots
    it once PUBACKs flow (tens of thousands measured, see docs/performance.md). So past
    `max_in_flight` uncommitted messages we stop reading the socket; TCP pushes back and the
    broker keeps the rest in its queue, where they cost it well under a KiB each.

    Wiring: the intake is built with the writer and the broker link it sits between; they
    are handed its two ends when they start, `link.start(intake.handle)` and
    `writer.run(intake.committed)`.
    """

    def __init__(
        self,
        writer: BatchWriter[PubackToken],
        broker: BrokerSide,
        *,
        max_payload_bytes: int,
        max_in_flight: int,
    ) -> None:
        self._writer = writer
        self._broker = broker
        self._max_payload_bytes = max_payload_bytes
        self._high_water = max_in_flight
        self._low_water = max_in_flight // 2
        self._paused = False

    def handle(
        self, topic: str, payload: bytes, retained: bool, puback: PubackToken | None
    ) -> None:
        """A message from the broker (`puback` is None at QoS 0)."""
        record = parse_message(
            topic,
            payload,
            datetime.now(UTC),
            retained=retained,
            max_payload_bytes=self._max_payload_bytes,
        )
        self._writer.offer(record, puback)
        if not self._paused and self._writer.backlog >= self._high_water:
            self._paused = True
            self._broker.pause_reading()

    def committed(self, pubacks: list[PubackToken]) -> None:
        """A batch is committed: send its PUBACKs, and read again once the backlog is low."""
        self._broker.send_pubacks(pubacks)
        if self._paused and self._writer.backlog <= self._low_water:
            self._paused = False
            self._broker.resume_reading()
