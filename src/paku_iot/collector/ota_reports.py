"""Update progress: `event/ota` messages record where each device is with an update."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from paku_iot.protocol import (
    OTA_EVENT,
    OTA_REPORT_STATUSES,
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
        error = event.payload.get("error")
        reports.append(
            OtaProgress(
                device_id=event.device_id,
                version=release_reported(version),
                status=str(status),
                error=None if error is None else str(error)[:2000],
                updated_at=event.ts,
            )
        )
    if reports:
        await record_progress(conn, reports)
