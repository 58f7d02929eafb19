"""The device page's administrative actions: its tags, taking it out of service and bringing
it back. Each is a form with the session's CSRF token, as the page's other actions are."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.exceptions import InvalidInput
from paku_iot.security.roles import Permission
from paku_iot.storage.records import DeviceDetails
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, can_do
from paku_iot.web.ui.rendering import render
from paku_iot.web.ui.routes.device import device_page_response, message

router = APIRouter()
_SEPARATORS = re.compile(r"[\s,]+")


@router.post(
    "/ui/devices/{device_id}/tags",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_OPERATE)],
)
async def set_tags(
    request: Request,
    device_id: str,
    session: ActionSession,
    service: ServiceDep,
    tags: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace the device's tags with those typed, separated by spaces or commas."""
    device = await service.registry.get(device_id)
    wanted = tuple(t for t in _SEPARATORS.split(tags.strip()) if t)
    try:
        await service.registry.update_details(device.id, DeviceDetails(tags=wanted))
    except InvalidInput as exc:
        return await device_page_response(
            request,
            service,
            session,
            device,
            status_code=422,
            tags_error=message(exc),
            tags_text=tags,
        )
    await service.audit.record(
        session.identity, "device.update", device.id, {"fields": ["tags"], "via": "ui"}
    )
    return RedirectResponse(f"/ui/devices/{device.id}?notice=tags", status_code=303)


@router.post(
    "/ui/devices/{device_id}/decommission",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_ADMIN)],
)
async def decommission(device_id: str, session: ActionSession, service: ServiceDep) -> Response:
    await service.registry.decommission(device_id)
    await service.audit.record(session.identity, "device.decommission", device_id, {"via": "ui"})
    return RedirectResponse(f"/ui/devices/{device_id}?notice=decommissioned", status_code=303)


@router.post(
    "/ui/devices/{device_id}/recommission",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_ADMIN)],
)
async def recommission(
    request: Request, device_id: str, session: ActionSession, service: ServiceDep
) -> Response:
    result = await service.registry.recommission(device_id)
    await service.audit.record(session.identity, "device.recommission", device_id, {"via": "ui"})
    return render(
        request,
        "credentials.html",
        session,
        title=f"New credentials for {device_id}",
        heading=f"{device_id} is back in service",
        device=result.device,
        password=result.password,
        mqtt=service.settings.device_mqtt_endpoint,
    )
