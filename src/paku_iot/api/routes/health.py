from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from paku_iot.api.deps import get_service
from paku_iot.api.schemas import Health
from paku_iot.service import Service

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A component is unreachable."}},
)
async def health(service: Annotated[Service, Depends(get_service)]) -> JSONResponse:
    """200 when the database and the broker are reachable; 503 naming what is not."""
    report = await service.health()
    body = Health.model_validate(
        {"status": report.status, "components": report.components, "details": report.details}
    )
    return JSONResponse(
        body.model_dump(by_alias=True), status_code=503 if report.status == "unavailable" else 200
    )
