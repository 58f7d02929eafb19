from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paku_iot.exceptions import Unauthorized
from paku_iot.server.service import Service
from paku_iot.web.api.responses import error
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["health"])

# Declared so that the OpenAPI document and generated clients know the header; the route
# decides whether a token is needed at all (auto_error=False).
metrics_bearer = HTTPBearer(
    scheme_name="MetricsToken",
    description="PAKU_METRICS_TOKEN when set, else the admin token in production; "
    "no token otherwise.",
    auto_error=False,
)


def _required_token(service: Service) -> str | None:
    settings = service.settings
    if settings.metrics_token:
        return settings.metrics_token
    return service.admin_token if settings.env == "production" else None


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: error("A metrics token is required here and this is not it."),
    },
    # `{}` beside MetricsToken: whether a token is needed at all depends on the settings.
    openapi_extra={"security": [{}]},
)
async def metrics(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)],
) -> Response:
    """Prometheus metrics of this process. Needs `Authorization: Bearer <PAKU_METRICS_TOKEN>`
    when that is set, and the admin token in production."""
    required = _required_token(service)
    if required is not None:
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), required.encode()):
            raise Unauthorized("metrics token required")
    await service.refresh_metrics()
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
