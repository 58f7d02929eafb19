"""Command acknowledgements: `event/ack` messages settle the commands they answer."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from paku_iot.protocol import ACK_EVENT
from paku_iot.storage.commands import apply_ack
from paku_iot.storage.records import EventRecord

log = logging.getLogger("paku_iot.collector")


async def settle_commands(conn: AsyncConnection, events: list[EventRecord]) -> int:
    """Apply every well-formed ack in `events`; returns how many settled a command. Every ack,
    well-formed or not, known or not, is also kept as an event: nothing is dropped here."""
    settled = 0
    for event in events:
        if event.type != ACK_EVENT:
            continue
        command_id = event.payload.get("id")
        ok = event.payload.get("ok")
        if not isinstance(command_id, str) or not isinstance(ok, bool):
            log.warning(
                "ack from %s without a string id and a boolean ok",
                event.device_id,
                extra={"device_id": event.device_id},
            )
            continue
        error = event.payload.get("error")
        applied = await apply_ack(
            conn,
            device_id=event.device_id,
            command_id=command_id,
            ok=ok,
            result=event.payload.get("result"),
            error=None if error is None else str(error)[:2000],
            at=event.received_at,
        )
        if applied:
            settled += 1
        else:
            log.info(
                "ack from %s for %s matched no waiting command",
                event.device_id,
                command_id,
                extra={"device_id": event.device_id},
            )
    return settled
