"""The provision page: one device with its credentials, or a batch of claim codes, each shown
once (the server keeps only hashes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from paku_iot.exceptions import PakuError
from paku_iot.security.claims import DEFAULT_TTL_S, MAX_TTL_S
from paku_iot.security.roles import Permission
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import render
from paku_iot.web.ui.sessions import Session

router = APIRouter()
MAX_CLAIM_BATCH = 10_000


def _form_page(
    request: Request, session: Session, *, status_code: int = 200, **context: object
) -> HTMLResponse:
    context.setdefault("device_form", {"model": "", "id": "", "notes": ""})
    context.setdefault("claim_form", {"model": "", "count": "10", "ttl_days": "30"})
    return render(
        request,
        "provision.html",
        session,
        status_code=status_code,
        title="Provision",
        max_batch=MAX_CLAIM_BATCH,
        max_ttl_days=MAX_TTL_S // 86400,
        **context,
    )


@router.get(
    "/ui/provision", response_class=HTMLResponse, dependencies=[can_see(Permission.DEVICES_ADMIN)]
)
async def provision_page(request: Request, session: PageSession) -> Response:
    return _form_page(request, session)


@router.post(
    "/ui/provision/device",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_ADMIN)],
)
async def provision_device(
    request: Request,
    session: ActionSession,
    service: ServiceDep,
    model: Annotated[str, Form(max_length=64)] = "",
    device_id: Annotated[str, Form(alias="id", max_length=64)] = "",
    notes: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    form = {"model": model, "id": device_id, "notes": notes}
    if not model.strip():
        return _form_page(
            request, session, status_code=422, device_form=form, device_error="Give a model."
        )
    try:
        result = await service.registry.provision(
            model=model.strip(), device_id=device_id.strip() or None, notes=notes.strip() or None
        )
    except PakuError as exc:
        return _form_page(
            request,
            session,
            status_code=exc.http_status,
            device_form=form,
            device_error=exc.message,
        )
    await service.audit.record(
        session.identity, "device.provision", result.device.id, {"model": model, "via": "ui"}
    )
    return render(
        request,
        "credentials.html",
        session,
        status_code=201,
        title=f"Device {result.device.id} provisioned",
        heading=f"Device {result.device.id} provisioned",
        device=result.device,
        password=result.password,
        mqtt=service.settings.device_mqtt_endpoint,
    )


@router.post(
    "/ui/provision/claim-codes",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.DEVICES_ADMIN)],
)
async def create_claim_codes(
    request: Request,
    session: ActionSession,
    service: ServiceDep,
    model: Annotated[str, Form(max_length=64)] = "",
    count: Annotated[str, Form(max_length=6)] = "",
    ttl_days: Annotated[str, Form(max_length=4)] = "",
) -> Response:
    form = {"model": model, "count": count, "ttl_days": ttl_days}
    try:
        how_many = int(count)
        days = int(ttl_days) if ttl_days.strip() else DEFAULT_TTL_S // 86400
        if not model.strip():
            raise ValueError("Give a model.")
        if not 1 <= how_many <= MAX_CLAIM_BATCH:
            raise ValueError(f"A batch is 1 to {MAX_CLAIM_BATCH} codes.")
        issued = await service.onboarding.issue(
            model=model.strip(), count=how_many, ids=None, ttl_seconds=days * 86400
        )
    except (ValueError, PakuError) as exc:
        message = exc.message if isinstance(exc, PakuError) else str(exc)
        if message.startswith("invalid literal"):
            message = "Count and days must be whole numbers."
        return _form_page(request, session, status_code=422, claim_form=form, claim_error=message)
    await service.audit.record(
        session.identity,
        "claim_codes.create",
        f"model:{model.strip()}",
        {"devices": len(issued), "via": "ui"},
    )
    csv_text = "device_id,claim_code,expires_at\n" + "".join(
        f"{c.device_id},{c.claim_code},{c.expires_at.isoformat()}\n" for c in issued
    )
    return render(
        request,
        "claim_codes.html",
        session,
        status_code=201,
        title="Claim codes",
        model=model.strip(),
        issued=issued,
        csv_text=csv_text,
    )
