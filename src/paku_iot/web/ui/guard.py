"""Who may see the dashboard: the session cookie on every page, and on every action a CSRF
token plus a same-origin check.

Three ways to refuse, by what asked:
- a page (a browser navigation) is redirected to the sign-in page, which comes back after;
- a live fragment or chart data (fetched by the page's script) gets 401, and the script
  sends the browser to sign in;
- an action (a form POST) without a good session gets 401, and one with a missing or wrong
  CSRF token, or from another origin, gets 403.

The API's bearer-token auth is untouched: the cookie is accepted under /ui only.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Form, HTTPException, Request, Response

from paku_iot.exceptions import Forbidden, Unauthorized
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.web.deps import get_service
from paku_iot.web.ui.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    SESSION_TTL_S,
    Session,
    SessionCodec,
    SessionVerifier,
)

SIGNIN_PATH = "/ui/signin"
DEFAULT_LANDING = "/ui/fleet"


class _UiState:
    def __init__(self, service: Service) -> None:
        self.codec = SessionCodec.from_data_dir(service.settings.data_dir)
        self.verifier = SessionVerifier(
            service.tokens, service.admin_token, service.dashboard_sessions
        )


def _ui_state(request: Request) -> _UiState:
    # Made on first use rather than in create_app: the dashboard is one include there.
    state: _UiState | None = getattr(request.app.state, "paku_ui", None)
    if state is None:
        state = _UiState(get_service(request))
        request.app.state.paku_ui = state
    return state


def session_codec(request: Request) -> SessionCodec:
    return _ui_state(request).codec


async def current_session(request: Request) -> Session | None:
    value = request.cookies.get(COOKIE_NAME)
    if not value:
        return None
    state = _ui_state(request)
    session = state.codec.decode(value)
    if session is None or not await state.verifier.still_valid(session):
        return None
    return session


def _is_https(request: Request) -> bool:
    """HTTPS as the browser sees it. Behind compose/prod.yaml's Caddy the app hears plain HTTP
    from a proxy it does not trust for X-Forwarded-Proto, so the configured public URL counts."""
    public_url = get_service(request).settings.public_url or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=SESSION_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_is_https(request)
    )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path inside the dashboard, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return DEFAULT_LANDING


async def page_session(request: Request) -> Session:
    session = await current_session(request)
    if session is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            status_code=303,
            detail="sign in first",
            headers={"Location": f"{SIGNIN_PATH}?next={quote(here, safe='')}"},
        )
    return session


async def data_session(request: Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise Unauthorized("sign in to the dashboard first", code="signin_required")
    return session


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser says came from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused", code="cross_origin")
    origin = request.headers.get("origin")
    if origin is None:
        return  # not every client sends it; the CSRF token still has to match
    allowed = {request.headers.get("host", "")}
    public_url = get_service(request).settings.public_url
    if public_url:
        allowed.add(urlsplit(public_url).netloc)
    if urlsplit(origin).netloc not in allowed:
        raise Forbidden("cross-origin request refused", code="cross_origin")


async def action_session(
    request: Request, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Session:
    session = await current_session(request)
    if session is None:
        raise Unauthorized("sign in to the dashboard first", code="signin_required")
    check_same_origin(request)
    if not hmac.compare_digest(csrf.encode(), session.csrf_token.encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page", code="csrf_failed")
    return session


PageSession = Annotated[Session, Depends(page_session)]
DataSession = Annotated[Session, Depends(data_session)]
ActionSession = Annotated[Session, Depends(action_session)]


# Roles, as on the API (`security/roles.py`): a page, a live fragment or an action declares
# the permission it needs in its decorator, `dependencies=[can_see(...)]` or
# `dependencies=[can_do(...)]`; templates hide what `can(...)` says no to, and these refuse
# it anyway (403) when a form is posted by hand.


def _refuse(session: Session, permission: Permission) -> None:
    if not session.can(permission):
        raise Forbidden(session.identity.refusal(permission), code="insufficient_role")


@cache  # one callable per permission, so FastAPI runs each once a request
def _page_guard(permission: Permission) -> Callable[..., Awaitable[None]]:
    async def guard(request: Request) -> None:
        # A page without a session still goes to sign in first; a fragment gets its 401.
        session = await current_session(request)
        if session is not None:
            _refuse(session, permission)

    return guard


@cache
def _action_guard(permission: Permission) -> Callable[..., Awaitable[None]]:
    async def guard(session: ActionSession) -> None:
        _refuse(session, permission)

    return guard


def can_see(permission: Permission) -> Any:
    return Depends(_page_guard(permission))


def can_do(permission: Permission) -> Any:
    return Depends(_action_guard(permission))
