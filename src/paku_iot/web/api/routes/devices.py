from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from paku_iot.registry.devices import ProvisionedDevice as Provisioned
from paku_iot.web.api.auth import Actor, require_admin
from paku_iot.web.api.cursors import decode_id_cursor, encode_cursor
from paku_iot.web.api.schemas import (
    Credentials,
    Device,
    DeviceCreate,
    DevicePage,
    ErrorResponse,
    ProvisionedDevice,
)
from paku_iot.web.deps import ServiceDep

router = APIRouter(
    tags=["devices"],
    dependencies=[Depends(require_admin)],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


def _provisioned(result: Provisioned) -> ProvisionedDevice:
    return ProvisionedDevice(
        **Device.of(result.device).model_dump(),
        credentials=Credentials(username=result.device.id, password=result.password),
    )


@router.post(
    "/devices",
    status_code=status.HTTP_201_CREATED,
    response_model=ProvisionedDevice,
    responses={409: {"model": ErrorResponse}},
)
async def provision_device(
    body: DeviceCreate, service: ServiceDep, actor: Actor
) -> ProvisionedDevice:
    """Register a device and create its MQTT credentials. The password is in this answer
    only: the server keeps a hash."""
    result = await service.registry.provision(
        model=body.model, device_id=body.id, notes=body.notes, metadata=body.metadata
    )
    await service.audit.record(actor, "device.provision", result.device.id, {"model": body.model})
    return _provisioned(result)


@router.get("/devices", response_model=DevicePage)
async def list_devices(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    model: str | None = None,
    online: bool | None = None,
) -> DevicePage:
    """Devices in id order, a page at a time; pass `next` back as `cursor` for the next page."""
    after = decode_id_cursor(cursor) if cursor else None
    records = await service.registry.page(limit=limit, after_id=after, model=model, online=online)
    next_cursor = encode_cursor(records[-1].id) if len(records) == limit else None
    return DevicePage(items=[Device.of(r) for r in records], next=next_cursor)


@router.get("/devices/{device_id}", response_model=Device, responses=NOT_FOUND)
async def get_device(device_id: str, service: ServiceDep) -> Device:
    return Device.of(await service.registry.get(device_id))


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_device(device_id: str, service: ServiceDep, actor: Actor) -> Response:
    """Remove the device with its data. Its credentials stop working at once and a live
    connection is dropped."""
    await service.registry.delete(device_id)
    await service.audit.record(actor, "device.delete", device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/devices/{device_id}/credentials", response_model=ProvisionedDevice, responses=NOT_FOUND
)
async def rotate_credentials(
    device_id: str, service: ServiceDep, actor: Actor
) -> ProvisionedDevice:
    """Give the device a new password (shown once); the old one stops working at once."""
    result = await service.registry.rotate_credentials(device_id)
    await service.audit.record(actor, "device.rotate_credentials", device_id)
    return _provisioned(result)
