from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from paku_iot.web.api.schemas import Health
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A component is unreachable."}},
)
async def health(service: ServiceDep) -> JSONResponse:
    """200 when the database and the broker are reachable; 503 naming what is not."""
    report = await service.health()
    body = Health.model_validate(
        {"status": report.status, "components": report.components, "details": report.details}
    )
    return JSONResponse(
        body.model_dump(by_alias=True), status_code=503 if report.status == "unavailable" else 200
    )
