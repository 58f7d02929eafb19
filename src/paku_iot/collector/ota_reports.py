"""Update progress: `event/ota` messages record where each device is with an update."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from paku_iot.protocol import (
    OTA_EVENT,
    OTA_REPORT_STATUSES,
    OTA_RUNNING_VERSION,
    OTA_VERSION_MAX_CHARS,
    release_reported,
)
from paku_iot.storage.records import EventRecord, OtaProgress
from paku_iot.storage.releases import record_progress

log = logging.getLogger("paku_iot.collector")

_STATUSES = frozenset(OTA_REPORT_STATUSES)


async def record_ota_reports(conn: AsyncConnection, events: list[EventRecord]) -> None:
    """Keep the latest well-formed report per device and version. Every report is also kept
    as an event, so a malformed one is visible there."""
    reports: list[OtaProgress] = []
    for event in events:
        if event.type != OTA_EVENT:
            continue
        version, status = event.payload.get("version"), event.payload.get("status")
        if (
            not isinstance(version, str)
            or not 0 < len(version) <= OTA_VERSION_MAX_CHARS
            or status not in _STATUSES
        ):
            log.warning(
                "ota report from %s without a version and a known status",
                event.device_id,
                extra={"device_id": event.device_id},
            )
            continue
        reports.append(
            OtaProgress(
                device_id=event.device_id,
                version=release_reported(version),
                status=str(status),
                error=_error(event.payload, str(status)),
                updated_at=event.ts,
            )
        )
    if reports:
        await record_progress(conn, reports)


def _error(payload: Mapping[str, Any], status: str) -> str | None:
    """The report's `error`; for `rolled_back`, led by the version the device returned to, so
    that the progress row (one per device and version left) says where the device is now."""
    error = payload.get("error")
    text = None if error is None else str(error)
    running = payload.get(OTA_RUNNING_VERSION)
    if status == "rolled_back" and isinstance(running, str) and running:
        back = f"rolled back to {running[:OTA_VERSION_MAX_CHARS]}"
        text = back if text is None else f"{back}: {text}"
    return None if text is None else text[:2000]
