"""One release's page: its plan and current wave, where the devices stand (counts and ids),
its timeline; and its controls by hand: promote, pause, resume, abort (ota/control.py), done
and audited as the API's routes do (web/api/routes/ota_control.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from paku_iot.exceptions import Conflict, InvalidInput, NotFound, PakuError
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import ReleaseRecord
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui import release_text
from paku_iot.web.ui.guard import ActionSession, PageSession, can_do, can_see
from paku_iot.web.ui.rendering import render
from paku_iot.web.ui.routes.device import message
from paku_iot.web.ui.sessions import Session

router = APIRouter()
NOTICES = {
    "promote": "Promoted.",
    "pause": "Paused: offered to nobody new.",
    "resume": "Resumed: the current wave's soak time starts again.",
    "abort": "Aborted: offered to nobody, for good.",
    "rollout": "Rollout percentage saved.",
}
ABORT_UNCONFIRMED = "Not aborted: tick the box to confirm that devices stop being offered it."
VIA_UI = {"via": "ui"}  # how the audit log tells the dashboard from the API
# As the API's ReleaseAction: kept on the timeline; a NUL would not go into PostgreSQL.
Reason = Annotated[str, Form(max_length=500, pattern=r"^[^\x00]*$")]


def not_found(request: Request, session: Session, release_id: str) -> HTMLResponse:
    return render(
        request,
        "not_found.html",
        session,
        status_code=404,
        title="No such release",
        message=f"There is no release {release_id!r}.",
    )


async def release_page_response(
    request: Request,
    service: Service,
    session: Session,
    release: ReleaseRecord,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    status = await service.releases.rollout_status(release)
    return render(
        request,
        "release.html",
        session,
        status_code=status_code,
        title=f"Release {release.model} {release.version}",
        r=release,
        waves=release_text.wave_rows(release),
        soak_ends_at=release_text.soak_ends_at(release),
        groups=release_text.state_groups(status),
        shown_max=release_text.DEVICES_SHOWN,
        timeline=release_text.timeline_rows(await service.releases.control.timeline(release.id)),
        **extra,
    )


@router.get(
    "/ui/firmware/{release_id}",
    response_class=HTMLResponse,
    dependencies=[can_see(Permission.RELEASES_READ)],
)
async def release_page(
    request: Request,
    release_id: str,
    session: PageSession,
    service: ServiceDep,
    notice: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    try:
        release = await service.releases.get(release_id)
    except NotFound:
        return not_found(request, session, release_id)
    return await release_page_response(
        request, service, session, release, notice=NOTICES.get(notice)
    )


async def refused(
    request: Request, service: Service, session: Session, release_id: str, exc: PakuError
) -> HTMLResponse:
    """The release page again, saying why nothing was done (409 for a transition the
    release's state refuses, 422 for an abort not confirmed)."""
    try:
        release = await service.releases.get(release_id)
    except NotFound:
        return not_found(request, session, release_id)
    return await release_page_response(
        request, service, session, release, status_code=exc.http_status, error=message(exc)
    )


def _reason(text: str) -> str | None:
    return text.strip() or None


async def _transition(
    request: Request,
    service: Service,
    session: Session,
    release_id: str,
    action: str,
    step: Callable[[], Awaitable[ReleaseRecord]],
    reason: str | None = None,
) -> Response:
    """Take one step of the release's state machine, audit it as the API does (with
    `via: ui`), and go back to the page; a refused step (409) is said on the page."""
    try:
        release = await step()
    except NotFound:
        return not_found(request, session, release_id)
    except (Conflict, InvalidInput) as exc:
        return await refused(request, service, session, release_id, exc)
    details: dict[str, object] = {"state": release.state, "wave": release.current_wave + 1}
    if reason is not None:
        details["reason"] = reason
    await service.audit.record(session.identity, f"ota.{action}", release.id, details | VIA_UI)
    return RedirectResponse(f"/ui/firmware/{release.id}?notice={action}", status_code=303)


@router.post(
    "/ui/firmware/{release_id}/promote",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.RELEASES_WRITE)],
)
async def promote(
    request: Request, release_id: str, session: ActionSession, service: ServiceDep
) -> Response:
    def step() -> Awaitable[ReleaseRecord]:
        return service.releases.control.promote(release_id, session.identity.actor)

    return await _transition(request, service, session, release_id, "promote", step)


@router.post(
    "/ui/firmware/{release_id}/pause",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.RELEASES_WRITE)],
)
async def pause(
    request: Request,
    release_id: str,
    session: ActionSession,
    service: ServiceDep,
    reason: Reason = "",
) -> Response:
    why = _reason(reason)

    def step() -> Awaitable[ReleaseRecord]:
        return service.releases.control.pause(release_id, session.identity.actor, why)

    return await _transition(request, service, session, release_id, "pause", step, why)


@router.post(
    "/ui/firmware/{release_id}/resume",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.RELEASES_WRITE)],
)
async def resume(
    request: Request, release_id: str, session: ActionSession, service: ServiceDep
) -> Response:
    def step() -> Awaitable[ReleaseRecord]:
        return service.releases.control.resume(release_id, session.identity.actor)

    return await _transition(request, service, session, release_id, "resume", step)


@router.post(
    "/ui/firmware/{release_id}/abort",
    response_class=HTMLResponse,
    dependencies=[can_do(Permission.RELEASES_WRITE)],
)
async def abort(
    request: Request,
    release_id: str,
    session: ActionSession,
    service: ServiceDep,
    reason: Reason = "",
    understood: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    why = _reason(reason)

    async def step() -> ReleaseRecord:
        # The confirmation is the form's required checkbox, checked here too: a client that
        # skips `required` must not abort a release on one click.
        if understood != "yes":
            raise InvalidInput(ABORT_UNCONFIRMED, code="abort_unconfirmed")
        return await service.releases.control.abort(release_id, session.identity.actor, why)

    return await _transition(request, service, session, release_id, "abort", step, why)
