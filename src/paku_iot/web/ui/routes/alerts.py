"""The alerts page: open alerts first, then the history, filterable by state, device and rule;
one alert with its delivery log; and the operator's answers, acknowledge and silence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.alerts.service import AlertView
from paku_iot.exceptions import NotFound
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import AlertState
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see, safe_next
from paku_iot.web.ui.rendering import render

router = APIRouter()
PAGE_SIZE = 50
RULES_IN_FILTER = 500
# The silences offered: an hour, a day, a week (the service's longest).
SILENCES = {3600: "1 hour", 86400: "1 day", 604800: "1 week"}

StateFilter = Literal["", "open", "resolved"]
Text = Annotated[str, Query(max_length=64)]
# Within BIGINT: a larger number is no alert, not a database error.
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
BeforeId = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


@dataclass(frozen=True, slots=True)
class AlertQuery:
    state: StateFilter
    device: str
    rule: str
    before: int | None

    @property
    def filtered(self) -> bool:
        return bool(self.state or self.device or self.rule)

    def link(self, before: int | None = None) -> str:
        params = {"state": self.state, "device": self.device, "rule": self.rule, "before": before}
        query = urlencode({k: v for k, v in params.items() if v})
        return f"/ui/alerts?{query}" if query else "/ui/alerts"


async def _page(
    service: Service, query: AlertQuery, state: AlertState
) -> tuple[list[AlertView], str | None]:
    """A page of `state`'s alerts newest first, and the link to the older ones."""
    before = None
    if query.before is not None:
        # The cursor is an alert id (a readable URL); the keyset is its (openedAt, id).
        try:
            anchor = (await service.alerts.get(query.before)).alert
            before = (anchor.opened_at, anchor.id)
        except NotFound:
            before = None  # gone with its rule: start again from the newest
    rows = await service.alerts.page(
        limit=PAGE_SIZE + 1,
        before=before,
        device_id=query.device or None,
        rule_id=query.rule or None,
        state=state,
    )
    older = query.link(rows[PAGE_SIZE - 1].alert.id) if len(rows) > PAGE_SIZE else None
    return rows[:PAGE_SIZE], older


@router.get(
    "/ui/alerts", response_class=HTMLResponse, dependencies=[can_see(Permission.ALERTS_READ)]
)
async def alerts_page(
    request: Request,
    session: PageSession,
    service: ServiceDep,
    state: Annotated[StateFilter, Query()] = "",
    device: Text = "",
    rule: Text = "",
    before: BeforeId = None,
) -> HTMLResponse:
    query = AlertQuery(state, device.strip(), rule, before)
    # Without a state filter the first page shows the open alerts above the history, and
    # paging goes through the history; with one, that state's alerts are the paged list.
    open_query = AlertQuery("open", query.device, rule, None)
    open_section: list[AlertView] | None = None
    more_open = False
    if not state and before is None:
        open_section, more = await _page(service, open_query, AlertState.OPEN)
        more_open = more is not None
    listed_state = AlertState.OPEN if state == "open" else AlertState.RESOLVED
    listed, older = await _page(service, query, listed_state)
    return render(
        request,
        "alerts.html",
        session,
        title="Alerts",
        query=query,
        open_alerts=open_section,
        all_open_link=open_query.link() if more_open else None,
        listed=listed,
        listed_state=str(listed_state),
        older_link=older,
        newest_link=query.link() if before else None,
        rules=await service.alert_rules.page(limit=RULES_IN_FILTER),
        silences=SILENCES,
        here=query.link(before),
    )


@router.get(
    "/ui/alerts/{alert_id}",
    response_class=HTMLResponse,
    dependencies=[can_see(Permission.ALERTS_READ)],
)
async def alert_page(
    request: Request, alert_id: AlertId, session: PageSession, service: ServiceDep
) -> Response:
    try:
        view = await service.alerts.get(alert_id)
    except NotFound:
        return render(
            request,
            "not_found.html",
            session,
            status_code=404,
            title="No such alert",
            message=f"There is no alert {alert_id}.",
        )
    return render(
        request,
        "alert.html",
        session,
        title=f"Alert {alert_id}",
        view=view,
        deliveries=await service.alerts.deliveries(alert_id),
        silences=SILENCES,
        here=f"/ui/alerts/{alert_id}",
    )


def _back(next_url: str, alert_id: int) -> RedirectResponse:
    target = safe_next(next_url) if next_url.startswith("/ui/alerts") else "/ui/alerts"
    return RedirectResponse(f"{target}#alert-{alert_id}", status_code=303)


Next = Annotated[str, Form(alias="next", max_length=500)]


@router.post("/ui/alerts/{alert_id}/acknowledge", dependencies=[can_do(Permission.ALERTS_HANDLE)])
async def acknowledge(
    alert_id: AlertId, session: ActionSession, service: ServiceDep, next_url: Next = ""
) -> Response:
    await service.alerts.acknowledge(alert_id, session.identity.actor)
    await service.audit.record(
        session.identity, "alert.acknowledge", f"alert:{alert_id}", {"via": "ui"}
    )
    return _back(next_url, alert_id)


@router.post("/ui/alerts/{alert_id}/silence", dependencies=[can_do(Permission.ALERTS_HANDLE)])
async def silence(
    alert_id: AlertId,
    session: ActionSession,
    service: ServiceDep,
    seconds: Annotated[Literal["3600", "86400", "604800"], Form()],
    next_url: Next = "",
) -> Response:
    await service.alerts.silence(alert_id, int(seconds))
    await service.audit.record(
        session.identity,
        "alert.silence",
        f"alert:{alert_id}",
        {"seconds": int(seconds), "via": "ui"},
    )
    return _back(next_url, alert_id)
