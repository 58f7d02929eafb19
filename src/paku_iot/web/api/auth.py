"""Admin authentication: `Authorization: Bearer <token>`, the bootstrap admin token or a named
one, checked on every request (a revoked token is refused at once).

The scheme is a FastAPI security class, so the OpenAPI document declares it (`AdminToken`) on
every admin route and generated clients send it; `auto_error=False` leaves the 401 and its
body to us (`errors.py`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paku_iot.exceptions import Unauthorized
from paku_iot.web.deps import get_service

ADMIN_SCHEME = "AdminToken"

admin_bearer = HTTPBearer(
    scheme_name=ADMIN_SCHEME,
    description="An admin token: the bootstrap one or a named one (`paku-iot tokens create`).",
    auto_error=False,
)


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> str:
    """The acting admin's name (for the audit log)."""
    if credentials is None:
        raise Unauthorized("admin token required: send Authorization: Bearer <token>")
    actor = await get_service(request).tokens.actor_for(credentials.credentials)
    if actor is None:
        raise Unauthorized("wrong admin token", code="invalid_token")
    return actor


Actor = Annotated[str, Depends(require_admin)]
