from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import Field

from paku_iot.protocol import DEVICE_ID_PATTERN
from paku_iot.security.claims import DEFAULT_TTL_S, MAX_TTL_S, ClaimRefused, TooManyClaims
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import AuditRecord
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.cursors import decode_int_cursor, encode_cursor
from paku_iot.web.api.responses import ROLE_LIMITED, error
from paku_iot.web.api.schemas import ApiModel, Credentials, RequestModel
from paku_iot.web.client_address import request_client_address
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["security"])


class ClaimCodesCreate(RequestModel):
    model: str = Field(min_length=1, max_length=64)
    count: int | None = Field(default=None, ge=1, le=10_000)
    ttl_seconds: int = Field(default=DEFAULT_TTL_S, ge=1, le=MAX_TTL_S)
    ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )


class IssuedClaimCode(ApiModel):
    device_id: str
    claim_code: str = Field(description="Shown once; only its hash is stored.")
    expires_at: datetime


class ClaimCodeBatch(ApiModel):
    items: list[IssuedClaimCode]


class ClaimRequest(RequestModel):
    claim_code: str = Field(min_length=1, max_length=100)


class MqttEndpoint(ApiModel):
    host: str
    port: int
    tls: bool


class ClaimResult(ApiModel):
    device_id: str
    credentials: Credentials
    mqtt: MqttEndpoint


class AuditEntry(ApiModel):
    id: int
    at: datetime
    actor: str
    role: str | None = Field(
        default=None, description="The role of the actor's token; null before roles existed."
    )
    action: str
    target: str
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditRecord) -> AuditEntry:
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            role=entry.role,
            action=entry.action,
            target=entry.target,
            details=entry.details,
        )


class AuditPage(ApiModel):
    items: list[AuditEntry]
    next: str | None


@router.post(
    "/claim-codes",
    status_code=status.HTTP_201_CREATED,
    response_model=ClaimCodeBatch,
    dependencies=[needs(Permission.DEVICES_ADMIN)],
    responses={**ROLE_LIMITED, 409: error("One of `ids` is a device already (`device_exists`).")},
)
async def create_claim_codes(
    body: ClaimCodesCreate, service: ServiceDep, actor: Actor
) -> ClaimCodeBatch:
    """Register devices without credentials, each with a one-time claim code."""
    issued = await service.onboarding.issue(
        model=body.model, count=body.count, ids=body.ids, ttl_seconds=body.ttl_seconds
    )
    await service.audit.record(
        actor, "claim_codes.create", f"model:{body.model}", {"devices": len(issued)}
    )
    return ClaimCodeBatch(
        items=[
            IssuedClaimCode(device_id=c.device_id, claim_code=c.claim_code, expires_at=c.expires_at)
            for c in issued
        ]
    )


def _mqtt_endpoint(service: Service) -> MqttEndpoint:
    endpoint = service.settings.device_mqtt_endpoint
    return MqttEndpoint(host=endpoint.host, port=endpoint.port, tls=endpoint.tls)


@router.post(
    "/claim",
    response_model=ClaimResult,
    responses={
        403: error("Not a live claim code: unknown, used or expired (`invalid_claim_code`)."),
        429: error("Too many refused claims from this address; see `Retry-After`."),
    },
)
async def claim(body: ClaimRequest, request: Request, service: ServiceDep) -> Any:
    """A device trades its claim code for its MQTT credentials, once. Every refusal is the
    same 403, whatever the reason; failures are rate limited per client address (behind a
    proxy in `PAKU_TRUSTED_PROXIES`, the address it forwards)."""
    address = request_client_address(request, service.settings.trusted_proxies)
    try:
        await service.claim_limiter.check(address)
    except TooManyClaims as exc:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    try:
        result = await service.onboarding.claim(body.claim_code)
    except ClaimRefused:
        await service.claim_limiter.failed(address)
        raise
    await service.audit.record(f"claim:{address}", "device.claim", result.device.id)
    return ClaimResult(
        device_id=result.device.id,
        credentials=Credentials(username=result.device.id, password=result.password),
        mqtt=_mqtt_endpoint(service),
    )


@router.get(
    "/audit",
    response_model=AuditPage,
    dependencies=[needs(Permission.AUDIT_READ)],
    responses=ROLE_LIMITED,
)
async def audit_log(
    service: ServiceDep,
    action: str | None = None,
    target: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> AuditPage:
    """Every state-changing admin action, newest first."""
    entries = await service.audit.page(
        limit=limit,
        before_id=decode_int_cursor(cursor) if cursor else None,
        action=action,
        target=target,
    )
    return AuditPage(
        items=[AuditEntry.of(e) for e in entries],
        next=encode_cursor(entries[-1].id) if len(entries) == limit else None,
    )
