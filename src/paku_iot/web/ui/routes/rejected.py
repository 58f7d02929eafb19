"""The fleet's rejected messages: what devices sent that the collector did not store, counted
by reason over the last day and listed newest first, each with its device. A firmware author
whose data is missing looks here first (docs/protocol.md section 7 explains the reasons)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from paku_iot.security.roles import Permission
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import PageSession, can_see
from paku_iot.web.ui.rendering import render

router = APIRouter()
PAGE_SIZE = 50
COUNT_WINDOW = timedelta(hours=24)
# Reasons are short snake_case words (collector/parse.py); anything else matches nothing.
REASON_PATTERN = r"^[a-z0-9_]*$"

Reason = Annotated[str, Query(max_length=32, pattern=REASON_PATTERN)]
BeforeId = Annotated[int | None, Query(ge=1)]


def rejected_link(reason: str = "", before: int | None = None) -> str:
    query = urlencode({k: v for k, v in (("reason", reason), ("before", before)) if v})
    return f"/ui/rejected?{query}" if query else "/ui/rejected"


@router.get(
    "/ui/rejected", response_class=HTMLResponse, dependencies=[can_see(Permission.DEVICES_READ)]
)
async def rejected_page(
    request: Request,
    session: PageSession,
    service: ServiceDep,
    reason: Reason = "",
    before: BeforeId = None,
) -> HTMLResponse:
    since = datetime.now(UTC) - COUNT_WINDOW
    counts = await service.history.rejection_counts(since=since)
    # One more than a page tells whether there are older ones.
    rows = await service.history.rejected(
        limit=PAGE_SIZE + 1, before_id=before, reason=reason or None
    )
    older = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    return render(
        request,
        "rejected.html",
        session,
        title="Rejected messages",
        counts=counts,
        window_hours=int(COUNT_WINDOW.total_seconds() // 3600),
        reason=reason,
        rejected=rows[:PAGE_SIZE],
        older_link=rejected_link(reason, older) if older else None,
        newest_link=rejected_link(reason) if before else None,
        reason_link=rejected_link,
    )
