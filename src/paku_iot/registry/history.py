"""What devices have sent: telemetry and events per device, and the messages the collector
set aside. Routes read it here, not from storage, so that rules about who may read what
(scoped tokens, tags) have one place to live."""

from __future__ import annotations

from datetime import datetime

from paku_iot.storage.messages import MessageStore, TimeKey
from paku_iot.storage.records import (
    EventRecord,
    RejectedRecord,
    RejectionCount,
    TelemetryRecord,
)


class DeviceHistory:
    def __init__(self, store: MessageStore) -> None:
        self._store = store

    async def telemetry(
        self,
        device_id: str,
        *,
        limit: int,
        start: datetime | None = None,
        end: datetime | None = None,
        before: TimeKey | None = None,
    ) -> list[TelemetryRecord]:
        """Newest first; `start` inclusive, `end` exclusive, `before` the paging cursor."""
        return await self._store.telemetry(
            device_id, limit=limit, start=start, end=end, before=before
        )

    async def events(
        self,
        device_id: str,
        *,
        limit: int,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before: TimeKey | None = None,
    ) -> list[EventRecord]:
        """Newest first; `event_type` is the `<name>` of `event/<name>`."""
        return await self._store.events(
            device_id, limit=limit, event_type=event_type, start=start, end=end, before=before
        )

    async def rejected(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        device_id: str | None = None,
        reason: str | None = None,
    ) -> list[RejectedRecord]:
        """Messages the collector could not accept, newest first, with the reason."""
        return await self._store.rejected(
            limit=limit, before_id=before_id, device_id=device_id, reason=reason
        )

    async def rejection_counts(self, *, since: datetime) -> list[RejectionCount]:
        """Rejections since `since` by reason, the most frequent first."""
        return await self._store.rejection_counts(since=since)
