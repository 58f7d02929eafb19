"""MQTT intake: each received message is parsed and handed to the batch writer; the handler
returns (and gmqtt sends the PUBACK) only once the message is committed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from paku_iot.collector.parse import parse_message
from paku_iot.collector.writer import BatchWriter, WriterStopped

PUBACK_SUCCESS = 0


class Intake:
    def __init__(self, writer: BatchWriter, *, max_payload_bytes: int) -> None:
        self._writer = writer
        self._max_payload_bytes = max_payload_bytes

    async def handle(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        record = parse_message(
            topic,
            payload,
            datetime.now(UTC),
            retained=bool(properties.get("retain")),
            max_payload_bytes=self._max_payload_bytes,
        )
        try:
            await self._writer.submit(record)
        except WriterStopped:
            # Never acknowledge what was not stored: wait here until the connection closes,
            # and the broker delivers the message again to the next collector session.
            await asyncio.Event().wait()
        return PUBACK_SUCCESS
