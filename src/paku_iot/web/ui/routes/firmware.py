"""The firmware page: releases by model, each with its state, wave and where devices stand,
linked to its own page (release.py); and the rollout percentage of a release without a plan."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.exceptions import Conflict, NotFound
from paku_iot.ota.status import ROLLOUT_STATUSES
from paku_iot.security.roles import Permission
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import render
from paku_iot.web.ui.routes.release import not_found, refused

router = APIRouter()


@router.get(
    "/ui/firmware", response_class=HTMLResponse, dependencies=[can_see(Permission.RELEASES_READ)]
)
async def firmware_page(request: Request, session: PageSession, service: ServiceDep) -> Response:
    by_model: dict[str, list[dict[str, object]]] = defaultdict(list)
    for release in await service.releases.releases():
        status = await service.releases.rollout_status(release)
        by_model[release.model].append(
            {"release": release, "counts": status.counts, "never_seen": len(status.never_seen)}
        )
    return render(
        request,
        "firmware.html",
        session,
        title="Firmware",
        models=dict(sorted(by_model.items())),
        statuses=ROLLOUT_STATUSES,
    )


@router.post(
    "/ui/firmware/{release_id}/rollout",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.RELEASES_WRITE)],
)
async def change_rollout(
    request: Request,
    release_id: str,
    session: ActionSession,
    service: ServiceDep,
    percent: Annotated[int, Form(ge=0, le=100)],
    back: Annotated[Literal["list", "release"], Form()] = "list",
) -> Response:
    try:
        await service.releases.update(
            release_id, actor=session.identity.actor, rollout_percent=percent
        )
    except NotFound:
        return not_found(request, session, release_id)
    except Conflict as exc:  # a release with a plan is promoted instead
        return await refused(request, service, session, release_id, exc)
    await service.audit.record(
        session.identity, "ota.update", release_id, {"rolloutPercent": percent, "via": "ui"}
    )
    if back == "release":
        return RedirectResponse(f"/ui/firmware/{release_id}?notice=rollout", status_code=303)
    return RedirectResponse(f"/ui/firmware#release-{release_id}", status_code=303)
