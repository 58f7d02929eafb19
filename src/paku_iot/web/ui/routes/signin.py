"""Signing in with an admin token, and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from paku_iot.security.roles import Identity, Permission
from paku_iot.security.sessions import new_session_id
from paku_iot.web.deps import ServiceDep
from paku_iot.web.ui.guard import (
    DEFAULT_LANDING,
    ActionSession,
    check_same_origin,
    clear_session_cookie,
    current_session,
    safe_next,
    session_codec,
    set_session_cookie,
)
from paku_iot.web.ui.rendering import SECURITY_HEADERS, render

router = APIRouter()


@router.get("/ui")
@router.get("/ui/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/fleet", status_code=303)


@router.get("/ui/signin")
async def signin_page(request: Request, next: str | None = None) -> Response:
    if await current_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "signin.html", None, title="Sign in", next=safe_next(next))


@router.post("/ui/signin")
async def signin(
    request: Request,
    service: ServiceDep,
    token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    check_same_origin(request)
    identity = await service.tokens.identify(token.strip()) if token.strip() else None
    if identity is None:
        return render(
            request,
            "signin.html",
            None,
            status_code=401,
            title="Sign in",
            next=safe_next(next),
            error="That admin token is not valid.",
        )
    codec = session_codec(request)
    session_id, expires_at = new_session_id(), codec.expiry()
    await service.dashboard_sessions.start(session_id, identity.actor, expires_at)
    cookie = codec.issue(
        identity.actor,
        token.strip(),
        role=identity.role,
        session_id=session_id,
        expires_at=expires_at,
    )
    response = RedirectResponse(_landing(identity, safe_next(next)), status_code=303)
    set_session_cookie(request, response, cookie)
    response.headers.update(SECURITY_HEADERS)
    await service.audit.record(identity, "ui.sign_in", "dashboard")
    return response


def _landing(identity: Identity, target: str) -> str:
    """The fleet, unless the role cannot see it (a publisher): then the firmware page."""
    if target == DEFAULT_LANDING and not identity.can(Permission.DEVICES_READ):
        return "/ui/firmware"
    return target


@router.post("/ui/signout")
async def signout(request: Request, service: ServiceDep, session: ActionSession) -> Response:
    # Ended on the server: every copy of this cookie is refused from now on.
    await service.dashboard_sessions.end(session.nonce)
    response = RedirectResponse("/ui/signin", status_code=303)
    clear_session_cookie(request, response)
    return response
