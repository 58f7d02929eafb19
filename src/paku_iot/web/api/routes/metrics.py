from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from paku_iot.exceptions import Unauthorized
from paku_iot.server.service import Service
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["health"])


def _required_token(service: Service) -> str | None:
    settings = service.settings
    if settings.metrics_token:
        return settings.metrics_token
    return service.admin_token if settings.env == "production" else None


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, service: ServiceDep) -> Response:
    """Prometheus metrics of this process. Needs `Authorization: Bearer <PAKU_METRICS_TOKEN>`
    when that is set, and the admin token in production."""
    required = _required_token(service)
    if required is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), required.encode()):
            raise Unauthorized("metrics token required")
    await service.refresh_metrics()
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
