"""Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paku_iot.api.deps import get_service
from paku_iot.exceptions import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="The admin token.")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None:
        raise Unauthorized("admin token required: send Authorization: Bearer <token>")
    expected = get_service(request).admin_token.encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("wrong admin token", code="invalid_token")
