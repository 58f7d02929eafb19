"""Command acknowledgements: answers on `event/ack`, or in a state's `ack` object, settle the
commands they name. Both paths go through `settle_commands` and behave the same; an answer
that settles nothing becomes a rejection with the reason, for the operator to see."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paku_iot.collector.parse import RejectReason, rejected
from paku_iot.protocol import (
    ACK_EVENT,
    AckError,
    TimestampError,
    event_topic,
    parse_command_ack,
    state_topic,
)
from paku_iot.storage.commands import AckOutcome, apply_ack
from paku_iot.storage.records import EventRecord, RejectedRecord, StateReport

log = logging.getLogger("paku_iot.collector")


async def settle_commands(
    conn: AsyncConnection, events: list[EventRecord], states: list[StateReport]
) -> list[RejectedRecord]:
    """Apply every ack in `events` and `states`, in the caller's transaction. Returns a
    rejection for each one that settled nothing. Acks on `event/ack` stay stored as events
    whatever happens here: nothing is dropped."""
    unsettled: list[RejectedRecord] = []
    for event in events:
        if event.type != ACK_EVENT:
            continue
        problem = await _settle(conn, event.device_id, event.payload, event)
        if problem is not None:
            payload = json.dumps(event.payload, separators=(",", ":")).encode()
            topic = event_topic(event.device_id, ACK_EVENT)
            unsettled.append(rejected(topic, payload, event.received_at, *problem, event.device_id))
    for state in states:
        if state.ack is None:
            continue
        problem = await _settle(conn, state.device_id, state.ack, state)
        if problem is not None:
            payload = state.sent or json.dumps({"ack": state.ack}).encode()
            topic = state_topic(state.device_id)
            unsettled.append(rejected(topic, payload, state.received_at, *problem, state.device_id))
    return unsettled


async def _settle(
    conn: AsyncConnection, device_id: str, body: Any, source: EventRecord | StateReport
) -> tuple[RejectReason, str] | None:
    """Settle the command `body` answers; None when it did, or already held this answer."""
    try:
        ack = parse_command_ack(body)
    except AckError as exc:
        return RejectReason.INVALID_ACK, str(exc)
    except TimestampError as exc:
        return RejectReason.INVALID_TS, str(exc)
    applied = await apply_ack(
        conn,
        device_id=device_id,
        command_id=ack.command_id,
        ok=ack.ok,
        result=ack.result,
        error=ack.error,
        at=source.received_at,
    )
    if applied.outcome in (AckOutcome.SETTLED, AckOutcome.REPEATED):
        return None
    log.info(
        "ack from %s for %s settled nothing (%s)",
        device_id,
        ack.command_id,
        applied.outcome,
        extra={"device_id": device_id},
    )
    if applied.outcome is AckOutcome.UNKNOWN:
        return (
            RejectReason.UNKNOWN_COMMAND,
            f"ack for {ack.command_id[:80]!r}: this device has no command with that id",
        )
    return (
        RejectReason.ALREADY_ANSWERED,
        f"ack for {ack.command_id!r}: the command was already answered ({applied.status}) "
        "otherwise; this answer changed nothing",
    )
