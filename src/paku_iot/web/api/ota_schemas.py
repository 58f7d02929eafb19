"""Bodies of the release control routes: actions, the timeline, devices by state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from paku_iot.storage.records import ReleaseEvent
from paku_iot.web.api.schemas import ApiModel, RequestModel


class ReleaseAction(RequestModel):
    reason: str | None = Field(
        default=None, max_length=500, pattern=r"^[^\x00]*$", description="Kept on the timeline."
    )


class ReleaseEventView(ApiModel):
    id: int
    at: datetime
    actor: str = Field(description='"autopilot", or the operator (as in the audit log).')
    kind: str = Field(description="plan, promoted, completed, paused, resumed or aborted.")
    detail: dict[str, Any] = Field(
        description="`wave` (1-based) and, as the kind has them, `reason`, `counts`, `plan`."
    )

    @classmethod
    def of(cls, event: ReleaseEvent) -> ReleaseEventView:
        return cls(
            id=event.id, at=event.at, actor=event.actor, kind=event.kind, detail=event.detail
        )


class ReleaseTimeline(ApiModel):
    items: list[ReleaseEventView]


class ReleaseDevicePage(ApiModel):
    state: str
    items: list[str] = Field(description="Device ids, in id order.")
    next: str | None = Field(description="Pass back as `cursor` for the next page.")
