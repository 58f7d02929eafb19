"""The firmware page: releases by model, each with its rollout and where devices stand."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.ota.status import ROLLOUT_STATUSES
from paku_iot.security.roles import Permission
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import render

router = APIRouter()


@router.get(
    "/ui/firmware", response_class=HTMLResponse, dependencies=[can_see(Permission.RELEASES_READ)]
)
async def firmware_page(request: Request, session: PageSession, service: ServiceDep) -> Response:
    by_model: dict[str, list[dict[str, object]]] = defaultdict(list)
    for release in await service.releases.releases():
        status = await service.releases.rollout_status(release)
        by_model[release.model].append({"release": release, "counts": status.counts})
    return render(
        request,
        "firmware.html",
        session,
        title="Firmware",
        models=dict(sorted(by_model.items())),
        statuses=ROLLOUT_STATUSES,
    )


@router.post("/ui/firmware/{release_id}/rollout", dependencies=[can_do(Permission.RELEASES_WRITE)])
async def change_rollout(
    release_id: str,
    session: ActionSession,
    service: ServiceDep,
    percent: Annotated[int, Form(ge=0, le=100)],
) -> Response:
    await service.releases.update(release_id, actor=session.identity.actor, rollout_percent=percent)
    await service.audit.record(
        session.identity, "ota.update", release_id, {"rolloutPercent": percent, "via": "ui"}
    )
    return RedirectResponse(f"/ui/firmware#release-{release_id}", status_code=303)


@router.post("/ui/firmware/{release_id}/pause", dependencies=[can_do(Permission.RELEASES_WRITE)])
async def pause_or_resume(
    release_id: str,
    session: ActionSession,
    service: ServiceDep,
    paused: Annotated[Literal["true", "false"], Form()],
) -> Response:
    await service.releases.update(release_id, actor=session.identity.actor, paused=paused == "true")
    await service.audit.record(
        session.identity, "ota.update", release_id, {"paused": paused == "true", "via": "ui"}
    )
    return RedirectResponse(f"/ui/firmware#release-{release_id}", status_code=303)
