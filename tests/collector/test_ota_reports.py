"""`event/ota` reports recorded as progress: the states of issue 20 and the version a
`rolled_back` device returned to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paku_iot.collector.ota_reports import record_ota_reports
from paku_iot.server.service import Service
from paku_iot.storage.engine import transaction
from paku_iot.storage.records import EventRecord
from paku_iot.storage.releases import ReleaseStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _report(device_id: str, seconds: int, **payload: object) -> EventRecord:
    ts = T0 + timedelta(seconds=seconds)
    return EventRecord(device_id, "ota", ts, ts, dict(payload), digest=f"{device_id}-{seconds}")


async def test_confirmed_and_rolled_back_are_recorded(service: Service) -> None:
    events = [
        _report("d-ok", 1, version="1.1.0", status="installed"),
        _report("d-ok", 2, version="1.1.0", status="confirmed"),
        _report("d-bad", 1, version="v1.1.0", status="installed"),
        _report(
            "d-bad",
            3,
            version="v1.1.0",
            status="rolled_back",
            runningVersion="1.0.0",
            error="no healthy run within 60 s",
        ),
        _report("d-cmd", 1, version="1.1.0", status="rolled_back", runningVersion="1.0.0"),
        _report("d-odd", 1, version="1.1.0", status="reverted"),  # no such status: not kept
    ]
    async with transaction(service.engine) as conn:
        await record_ota_reports(conn, events)
    progress = await ReleaseStore(service.engine).progress(
        "1.1.0", ["d-ok", "d-bad", "d-cmd", "d-odd"]
    )
    assert {d: (p.status, p.error) for d, p in progress.items()} == {
        "d-ok": ("confirmed", None),
        "d-bad": ("rolled_back", "rolled back to 1.0.0: no healthy run within 60 s"),
        "d-cmd": ("rolled_back", "rolled back to 1.0.0"),
    }
