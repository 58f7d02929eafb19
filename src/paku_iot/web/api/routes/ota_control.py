"""A release's rollout by hand: promote, pause, resume, abort; its timeline, and its devices
in one state (ota/control.py, docs/ota.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request

from paku_iot.ota.status import NEVER_SEEN, ROLLOUT_STATUSES
from paku_iot.security.roles import Permission
from paku_iot.storage.records import ReleaseRecord
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.cursors import decode_id_cursor, encode_cursor
from paku_iot.web.api.ota_schemas import (
    ReleaseAction,
    ReleaseDevicePage,
    ReleaseEventView,
    ReleaseTimeline,
)
from paku_iot.web.api.responses import ADMIN_ONLY, FORBIDDEN, Responses, error
from paku_iot.web.api.routes.ota import NO_RELEASE, firmware_url
from paku_iot.web.api.schemas import Release
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["ota"], responses=ADMIN_ONLY)

TRANSITION: Responses = {
    **NO_RELEASE,
    409: error(
        "Not possible from the release's state: `release_aborted`, `release_completed`, "
        "`invalid_transition` (e.g. resume a release that is not paused), `no_plan` (promote "
        "a release without a plan), or `release_changed` (it moved meanwhile: look again)."
    ),
    **FORBIDDEN,
}
WRITE = [needs(Permission.RELEASES_WRITE)]
OptionalAction = Annotated[ReleaseAction | None, Body()]


def _view(request: Request, service: ServiceDep, record: ReleaseRecord) -> Release:
    return Release.of(record, firmware_url(request, service, record.sha256))


async def _audited(
    service: ServiceDep, actor: Actor, action: str, record: ReleaseRecord, reason: str | None
) -> None:
    details: dict[str, object] = {"state": record.state, "wave": record.current_wave + 1}
    if reason is not None:
        details["reason"] = reason
    await service.audit.record(actor, f"ota.{action}", record.id, details)


@router.post(
    "/ota/releases/{release_id}/promote",
    response_model=Release,
    responses=TRANSITION,
    dependencies=WRITE,
)
async def promote_release(
    request: Request, release_id: str, service: ServiceDep, actor: Actor
) -> Release:
    """Move a release with a plan to its next wave now (or `completed` after the last),
    whatever its counts; a paused release rolls again."""
    record = await service.releases.control.promote(release_id, actor.actor)
    await _audited(service, actor, "promote", record, None)
    return _view(request, service, record)


@router.post(
    "/ota/releases/{release_id}/pause",
    response_model=Release,
    responses=TRANSITION,
    dependencies=WRITE,
)
async def pause_release(
    request: Request,
    release_id: str,
    service: ServiceDep,
    actor: Actor,
    body: OptionalAction = None,
) -> Release:
    """Offer a rolling release to nobody new (devices part-way through may finish)."""
    reason = body.reason if body else None
    record = await service.releases.control.pause(release_id, actor.actor, reason)
    await _audited(service, actor, "pause", record, reason)
    return _view(request, service, record)


@router.post(
    "/ota/releases/{release_id}/resume",
    response_model=Release,
    responses=TRANSITION,
    dependencies=WRITE,
)
async def resume_release(
    request: Request, release_id: str, service: ServiceDep, actor: Actor
) -> Release:
    """Roll a paused release again; the current wave's soak time starts again."""
    record = await service.releases.control.resume(release_id, actor.actor)
    await _audited(service, actor, "resume", record, None)
    return _view(request, service, record)


@router.post(
    "/ota/releases/{release_id}/abort",
    response_model=Release,
    responses=TRANSITION,
    dependencies=WRITE,
)
async def abort_release(
    request: Request,
    release_id: str,
    service: ServiceDep,
    actor: Actor,
    body: OptionalAction = None,
) -> Release:
    """Stop a release for good: it is offered to nobody, not even devices part-way
    through it. The devices already on it stay listed on the release."""
    reason = body.reason if body else None
    record = await service.releases.control.abort(release_id, actor.actor, reason)
    await _audited(service, actor, "abort", record, reason)
    return _view(request, service, record)


@router.get(
    "/ota/releases/{release_id}/timeline",
    response_model=ReleaseTimeline,
    responses=NO_RELEASE,
    dependencies=[needs(Permission.RELEASES_READ)],
)
async def release_timeline(release_id: str, service: ServiceDep) -> ReleaseTimeline:
    """Every change of the release's plan and state, oldest first, by whom and why."""
    events = await service.releases.control.timeline(release_id)
    return ReleaseTimeline(items=[ReleaseEventView.of(e) for e in events])


@router.get(
    "/ota/releases/{release_id}/devices",
    response_model=ReleaseDevicePage,
    responses={
        **NO_RELEASE,
        422: error("An unknown `state` (`invalid_state`) or cursor (`invalid_cursor`)."),
    },
    dependencies=[needs(Permission.RELEASES_READ)],
)
async def release_devices(
    release_id: str,
    service: ServiceDep,
    state: Annotated[
        str,
        Query(description=f"One of {', '.join((*ROLLOUT_STATUSES, NEVER_SEEN))}."),
    ],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> ReleaseDevicePage:
    """The devices in one rollout state, in id order, a page at a time."""
    after = decode_id_cursor(cursor) if cursor else None
    record = await service.releases.get(release_id)
    ids = sorted(await service.releases.devices_in(record, state))
    if after is not None:
        ids = [i for i in ids if i > after]
    page = ids[:limit]
    more = len(ids) > limit
    return ReleaseDevicePage(
        state=state, items=page, next=encode_cursor(page[-1]) if more else None
    )
