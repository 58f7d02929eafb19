"""The fleet page: every device a page at a time, with counts, search and filters, kept live
by the page's script fetching the `live` fragment again every few seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import DeviceRecord
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import DataSession, PageSession, can_see
from paku_iot.web.ui.rendering import render

router = APIRouter()
PAGE_SIZE = 50
LIVE_INTERVAL_MS = 3000


@dataclass(frozen=True, slots=True)
class FleetQuery:
    q: str
    model: str
    online: Literal["", "online", "offline"]
    after: str
    before: str
    tag: str = ""
    show: Literal["", "decommissioned"] = ""

    @property
    def online_filter(self) -> bool | None:
        return {"online": True, "offline": False}.get(self.online)

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.model or self.online or self.tag or self.show)

    def link(self, **changes: str) -> str:
        """The fleet page URL for this query with `changes` (empty values left out)."""
        params = {
            "q": self.q,
            "model": self.model,
            "online": self.online,
            "tag": self.tag,
            "show": self.show,
            "after": self.after,
            "before": self.before,
        }
        params.update(changes)
        query = urlencode({k: v for k, v in params.items() if v})
        return f"/ui/fleet?{query}" if query else "/ui/fleet"


class DeviceFilters(TypedDict):
    model: str | None
    online: bool | None
    id_prefix: str | None
    tag: str | None
    decommissioned: bool


@dataclass(frozen=True, slots=True)
class FleetView:
    devices: list[DeviceRecord]
    total: int
    online: int
    matching: int
    next_link: str | None
    prev_link: str | None
    open_alerts: int


Text = Annotated[str, Query(max_length=64)]
Online = Annotated[Literal["", "online", "offline"], Query()]
Show = Annotated[Literal["", "decommissioned"], Query()]


async def _fleet_view(service: Service, query: FleetQuery) -> FleetView:
    registry = service.registry
    filters = DeviceFilters(
        model=query.model or None,
        online=query.online_filter,
        id_prefix=query.q or None,
        tag=query.tag or None,
        decommissioned=query.show == "decommissioned",
    )
    # One more than a page tells whether there is a page beyond it.
    if query.before:
        rows = await registry.page(limit=PAGE_SIZE + 1, before_id=query.before, **filters)
        more_before = len(rows) > PAGE_SIZE
        devices = rows[1:] if more_before else rows
        more_after = True
    else:
        rows = await registry.page(limit=PAGE_SIZE + 1, after_id=query.after or None, **filters)
        more_after = len(rows) > PAGE_SIZE
        devices = rows[:PAGE_SIZE]
        more_before = bool(query.after)
    total, online = await registry.counts()
    matching = await registry.count_matching(**filters) if query.filtered else total
    # Every open alert, not a page of them: few are open at once (one per rule and device).
    open_alerts, _pending = await service.alerts.counts()
    return FleetView(
        devices=devices,
        total=total,
        online=online,
        matching=matching,
        next_link=query.link(after=devices[-1].id, before="") if more_after and devices else None,
        prev_link=query.link(before=devices[0].id, after="") if more_before and devices else None,
        open_alerts=open_alerts,
    )


def _fleet_query(
    q: Text = "",
    model: Text = "",
    online: Online = "",
    after: Text = "",
    before: Text = "",
    tag: Text = "",
    show: Show = "",
) -> FleetQuery:
    """The fleet page's query parameters, shared by the page and its live fragment."""
    return FleetQuery(q.strip(), model, online, after, before, tag.strip(), show)


FleetQueryDep = Annotated[FleetQuery, Depends(_fleet_query)]


@router.get(
    "/ui/fleet", response_class=HTMLResponse, dependencies=[can_see(Permission.DEVICES_READ)]
)
async def fleet_page(
    request: Request, session: PageSession, service: ServiceDep, query: FleetQueryDep
) -> HTMLResponse:
    return render(
        request,
        "fleet.html",
        session,
        title="Fleet",
        query=query,
        view=await _fleet_view(service, query),
        models=await service.registry.models(),
        tags=await service.registry.tags(),
        live_url=query.link().replace("/ui/fleet", "/ui/fleet/live", 1),
        live_interval_ms=LIVE_INTERVAL_MS,
    )


@router.get(
    "/ui/fleet/live", response_class=HTMLResponse, dependencies=[can_see(Permission.DEVICES_READ)]
)
async def fleet_live(
    request: Request, session: DataSession, service: ServiceDep, query: FleetQueryDep
) -> HTMLResponse:
    return render(
        request, "_fleet_live.html", session, query=query, view=await _fleet_view(service, query)
    )
