"""One device's page: state, telemetry chart, raw payloads, events, commands, configuration,
rejected messages; and its actions: send a command, set the configuration, rotate the
credentials. Tags and decommissioning are in device_admin.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from paku_iot.downlink.commands import NewCommand
from paku_iot.exceptions import InvalidInput, NotFound, PakuError
from paku_iot.protocol import (
    COMMAND_NAME_PATTERN,
    DEFAULT_COMMAND_TTL_S,
    MAX_COMMAND_TTL_S,
    MIN_COMMAND_TTL_S,
    NAME_MAX_CHARS,
)
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import AlertState, DeviceRecord
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.charts import (
    AGGREGATE_BUCKETS,
    MAX_ROWS,
    WINDOWS,
    ChartData,
    aggregated_chart,
    chart_data,
)
from paku_iot.web.ui.guard import ActionSession, DataSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import SECURITY_HEADERS, render
from paku_iot.web.ui.sessions import Session

router = APIRouter()
RECENT = 20
OPEN_ALERTS_SHOWN = 20
LIVE_INTERVAL_MS = 3000
NOTICES = {
    "command": "Command created: it is sent as soon as the device is online.",
    "config": "Configuration saved and published (retained) to the device.",
    "tags": "Tags saved.",
    "decommissioned": "Decommissioned: its credentials no longer work; its history is kept.",
}
Window = Literal["1h", "24h", "7d"]
LivePart = Literal["state", "activity"]


class CommandForm(BaseModel):
    """The command form, read with the rules of the device contract (paku_iot.protocol), as
    the API's CommandCreate is; the dashboard does not import the API. The domain checks
    them again when the command is created."""

    name: str = Field(pattern=COMMAND_NAME_PATTERN)
    params: dict[str, Any]
    ttl_seconds: int = Field(
        default=DEFAULT_COMMAND_TTL_S, ge=MIN_COMMAND_TTL_S, le=MAX_COMMAND_TTL_S
    )


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise ValueError(f'{what} must be a JSON object, like {{"key": 1}}')
    return value


async def _device_or_404(
    request: Request, service: Service, session: Session, device_id: str
) -> DeviceRecord | Response:
    try:
        return await service.registry.get(device_id)
    except NotFound:
        return render(
            request,
            "not_found.html",
            session,
            status_code=404,
            title="No such device",
            message=f"There is no device {device_id!r}.",
        )


async def _live_context(
    service: Service, device: DeviceRecord, part: LivePart | None = None
) -> dict[str, Any]:
    """What the page's live regions show: `state` (the device row, with its latest rejected
    message, so missing data is explained at the top of the page), `activity` (the rest),
    or both for the whole page."""
    rejected = await service.history.rejected(
        limit=1 if part == "state" else RECENT, device_id=device.id
    )
    state = {
        "device": device,
        "last_rejected": rejected[0] if rejected else None,
        # At most one per rule: a short list, refreshed with the state.
        "open_alerts": await service.alerts.page(
            limit=OPEN_ALERTS_SHOWN, device_id=device.id, state=AlertState.OPEN
        ),
    }
    if part == "state":
        return state
    return {
        **state,
        "telemetry": await service.history.telemetry(device.id, limit=RECENT),
        "events": await service.history.events(device.id, limit=RECENT),
        "commands": await service.commands.page(device.id, limit=RECENT),
        "config": await service.configs.get(device),
        "rejected": rejected,
    }


async def device_page_response(
    request: Request,
    service: Service,
    session: Session,
    device: DeviceRecord,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    context = await _live_context(service, device)
    extra.setdefault("config_text", json.dumps(context["config"].config, indent=2))
    extra.setdefault("command_form", {"name": "", "params": "{}", "ttl": ""})
    extra.setdefault("tags_text", " ".join(device.tags))
    return render(
        request,
        "device.html",
        session,
        status_code=status_code,
        title=f"Device {device.id}",
        live_url=f"/ui/devices/{device.id}/live",
        live_interval_ms=LIVE_INTERVAL_MS,
        **context,
        **extra,
    )


@router.get(
    "/ui/devices/{device_id}",
    response_class=HTMLResponse,
    dependencies=[can_see(Permission.DEVICES_READ)],
)
async def device_page(
    request: Request,
    device_id: str,
    session: PageSession,
    service: ServiceDep,
    notice: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    device = await _device_or_404(request, service, session, device_id)
    if isinstance(device, Response):
        return device
    return await device_page_response(request, service, session, device, notice=NOTICES.get(notice))


@router.get(
    "/ui/devices/{device_id}/live",
    response_class=HTMLResponse,
    dependencies=[can_see(Permission.DEVICES_READ)],
)
async def device_live(
    request: Request,
    device_id: str,
    session: DataSession,
    service: ServiceDep,
    part: LivePart = "state",
) -> Response:
    """A live region of the device page, rendered again for the page's script."""
    device = await service.registry.get(device_id)
    context = await _live_context(service, device, part)
    return render(request, f"_device_{part}.html", session, **context)


@router.get(
    "/ui/devices/{device_id}/telemetry.json", dependencies=[can_see(Permission.DEVICES_READ)]
)
async def device_telemetry(
    device_id: str, session: DataSession, service: ServiceDep, window: Window = "1h"
) -> JSONResponse:
    """Chart series for the window ending now (see charts.py for the limits)."""
    await service.registry.get(device_id)
    end = datetime.now(UTC)
    start = end - WINDOWS[window]
    if window in AGGREGATE_BUCKETS:
        data = await _aggregated(service, device_id, start, end, AGGREGATE_BUCKETS[window])
    else:
        rows = await service.history.telemetry(device_id, limit=MAX_ROWS, start=start)
        data = chart_data(rows, truncated=len(rows) == MAX_ROWS)
    body = {"window": window, "from": start.timestamp(), "to": end.timestamp()}
    return JSONResponse({**body, **data.as_json()}, headers=SECURITY_HEADERS)


async def _aggregated(
    service: Service, device_id: str, start: datetime, end: datetime, bucket: timedelta
) -> ChartData:
    """The day and the week: averages per bucket from the database, a query per field."""
    series = {}
    for name in await service.history.numeric_fields(device_id, start, end):
        series[name] = await service.history.aggregate(
            device_id, field=name, bucket=bucket, functions=["avg", "count"], start=start, end=end
        )
    return aggregated_chart(series, bucket)


@router.post(
    "/ui/devices/{device_id}/commands",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_OPERATE)],
)
async def send_command(
    request: Request,
    device_id: str,
    session: ActionSession,
    service: ServiceDep,
    name: Annotated[str, Form(max_length=NAME_MAX_CHARS)] = "",
    params: Annotated[str, Form(max_length=60_000)] = "{}",
    ttl: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    device = await service.registry.get(device_id)

    async def refused(exc: Exception) -> HTMLResponse:
        return await device_page_response(
            request,
            service,
            session,
            device,
            status_code=422,
            command_error=message(exc),
            command_form={"name": name, "params": params, "ttl": ttl},
        )

    try:
        body = CommandForm.model_validate(
            {
                "name": name.strip(),
                "params": _json_object(params, "Parameters"),
                **({"ttl_seconds": ttl.strip()} if ttl.strip() else {}),
            }
        )
    except (ValueError, ValidationError) as exc:
        return await refused(exc)
    try:
        [command] = await service.commands.create(
            [device.id], NewCommand(body.name, body.params, body.ttl_seconds)
        )
    except InvalidInput as exc:  # the domain's own check of the contract's rules
        return await refused(exc)
    await service.audit.record(
        session.identity,
        "command.send",
        device.id,
        {"command": command.id, "name": body.name, "via": "ui"},
    )
    return RedirectResponse(f"/ui/devices/{device.id}?notice=command", status_code=303)


@router.post(
    "/ui/devices/{device_id}/config",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_OPERATE)],
)
async def set_config(
    request: Request,
    device_id: str,
    session: ActionSession,
    service: ServiceDep,
    config: Annotated[str, Form(max_length=60_000)] = "{}",
) -> Response:
    device = await service.registry.get(device_id)
    try:
        desired = _json_object(config, "The configuration")
        view = await service.configs.put(device, desired)
    except (ValueError, PakuError) as exc:
        return await device_page_response(
            request,
            service,
            session,
            device,
            status_code=422 if isinstance(exc, ValueError) else 503,
            config_error=message(exc),
            config_text=config,
        )
    await service.audit.record(
        session.identity, "config.set", device.id, {"version": view.version, "via": "ui"}
    )
    return RedirectResponse(f"/ui/devices/{device.id}?notice=config", status_code=303)


@router.post(
    "/ui/devices/{device_id}/credentials",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_ADMIN)],
)
async def rotate_credentials(
    request: Request, device_id: str, session: ActionSession, service: ServiceDep
) -> Response:
    result = await service.registry.rotate_credentials(device_id)
    await service.audit.record(
        session.identity, "device.rotate_credentials", device_id, {"via": "ui"}
    )
    return render(
        request,
        "credentials.html",
        session,
        title=f"New credentials for {device_id}",
        heading=f"New credentials for {device_id}",
        device=result.device,
        password=result.password,
        mqtt=service.settings.device_mqtt_endpoint,
    )


def message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
    if isinstance(exc, PakuError):
        return exc.message
    return str(exc)
