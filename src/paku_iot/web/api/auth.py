"""Admin authentication and authorization: `Authorization: Bearer <token>`, the bootstrap
admin token or a named one, checked on every request (a revoked token is refused at once);
then the token's role must grant the permission the route declares, in its decorator:
`dependencies=[needs(Permission.DEVICES_READ)]` (`security/roles.py` has the table).

The scheme is a FastAPI security class, so the OpenAPI document declares it (`AdminToken`) on
every admin route and generated clients send it; `auto_error=False` leaves the 401 and its
body to us (`errors.py`).

FastAPI reads a request's body (and spools an upload to disk) before it runs any dependency,
so a dependency alone would come too late for a caller without a token: the middleware
`RefuseAnonymousAdmin` checks the token of every admin route before the body is read, and
hands the identity on to `authenticate`. It refuses a role without the route's permission
there too (`declared_permissions`, read from the routers `create_app` includes), so that a
viewer's firmware upload is not spooled to be refused; the route's own `requires` dependency
is the check that holds whatever the middleware knows.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from paku_iot.exceptions import Forbidden, Unauthorized
from paku_iot.security.roles import Identity, Permission
from paku_iot.server.service import Service
from paku_iot.web.api.errors import error_response
from paku_iot.web.deps import get_service

ADMIN_SCHEME = "AdminToken"
# An admin route's `security` in the OpenAPI document.
ADMIN_ONLY: list[dict[str, list[str]]] = [{ADMIN_SCHEME: []}]

admin_bearer = HTTPBearer(
    scheme_name=ADMIN_SCHEME,
    description="An admin token: the bootstrap one or a named one (`paku-iot tokens create`).",
    auto_error=False,
)


_ACTOR_KEY = "paku_admin_actor"  # in the request's state, set by RefuseAnonymousAdmin


async def _identity(service: Service, token: str | None) -> Identity:
    if not token:
        raise Unauthorized("admin token required: send Authorization: Bearer <token>")
    identity = await service.tokens.identify(token)
    if identity is None:
        raise Unauthorized("wrong admin token", code="invalid_token")
    return identity


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> Identity:
    """Who is calling, with their token's role (for the audit log)."""
    checked: Identity | None = request.scope.get("state", {}).get(_ACTOR_KEY)
    if checked is not None:
        return checked  # the middleware checked this very request's token
    return await _identity(get_service(request), credentials.credentials if credentials else None)


@cache  # one callable per permission: FastAPI runs a dependency once per request by identity
def requires(permission: Permission) -> Callable[..., Awaitable[Identity]]:
    """A dependency that answers 403 unless the caller's role grants `permission`."""

    async def guard(identity: Annotated[Identity, Depends(authenticate)]) -> Identity:
        if not identity.can(permission):
            raise Forbidden(identity.refusal(permission), code="insufficient_role")
        return identity

    _GUARDS[guard] = permission
    return guard


_GUARDS: dict[Callable[..., Any], Permission] = {}  # each `requires` guard, by its callable


def declared_permissions(routers: Iterable[APIRouter]) -> dict[tuple[str, str], Permission]:
    """(method, path) -> the permission the route declares with `needs`, on its decorator or
    its router, for the routers `create_app` includes (none of them has a prefix)."""
    found: dict[tuple[str, str], Permission] = {}
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            for dependency in [*router.dependencies, *route.dependencies]:
                permission = _GUARDS.get(dependency.dependency)  # type: ignore[arg-type]
                if permission is not None:
                    for method in route.methods or ():
                        found[(method, router.prefix + route.path)] = permission
    return found


def needs(permission: Permission) -> Any:
    """A route decorator's `dependencies=[needs(Permission.X)]`: what the route requires."""
    return Depends(requires(permission))


class RefuseAnonymousAdmin:
    """ASGI middleware: a request for an admin route without a good admin token gets its 401
    before anything reads the body.

    Which routes are admin routes, it reads from the app's OpenAPI document: those whose
    only security scheme is `AdminToken`, as `test_openapi.py` checks for every route. A
    route left out of the document is still guarded by its `requires` dependency, only after
    its body (capped, `limits.py`) was read."""

    def __init__(
        self, app: ASGIApp, permissions: Mapping[tuple[str, str], Permission] | None = None
    ) -> None:
        self.app = app
        self._permissions = dict(permissions or {})
        self._operations: list[tuple[str, re.Pattern[str], bool, Permission | None]] | None = None

    def _admin_route(self, scope: Scope) -> tuple[bool, Permission | None]:
        """Whether the route takes an admin token, and the permission it declares."""
        if self._operations is None:
            # Built on the first request: the routes are all included by then.
            self._operations = [
                (
                    method.upper(),
                    compile_path(path)[0],
                    operation.get("security") == ADMIN_ONLY,
                    self._permissions.get((method.upper(), path)),
                )
                for path, item in scope["app"].openapi()["paths"].items()
                for method, operation in item.items()
            ]
        # The first operation that matches, as routing takes the first route that does.
        for method, regex, admin, permission in self._operations:
            if method == scope["method"] and regex.match(scope["path"]):
                return admin, permission
        return False, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admin, permission = self._admin_route(scope) if scope["type"] == "http" else (False, None)
        if not admin:
            await self.app(scope, receive, send)
            return
        scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
        service: Service = scope["app"].state.service
        try:
            identity = await _identity(service, token if scheme.lower() == "bearer" else None)
        except Unauthorized as exc:
            response = error_response(
                exc.http_status, exc.code, exc.message, {"WWW-Authenticate": exc.auth_scheme}
            )
            await response(scope, receive, send)
            return
        if permission is not None and not identity.can(permission):
            # Before the body too: a viewer's firmware upload is not spooled to be refused.
            # The route's own `needs` says the same, for a route this table does not know.
            refusal = error_response(403, "insufficient_role", identity.refusal(permission))
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})[_ACTOR_KEY] = identity
        await self.app(scope, receive, send)


# The caller of a route that declared its permission with `needs` (the same check again costs
# nothing: FastAPI runs `authenticate` once per request).
Actor = Annotated[Identity, Depends(authenticate)]
