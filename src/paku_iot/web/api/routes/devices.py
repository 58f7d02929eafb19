from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from paku_iot.registry.devices import ProvisionedDevice as Provisioned
from paku_iot.security.roles import Permission
from paku_iot.storage.records import KEEP, DeviceDetails
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.cursors import decode_id_cursor, encode_cursor
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED, error
from paku_iot.web.api.schemas import (
    Credentials,
    Device,
    DeviceCreate,
    DeviceDetail,
    DeviceList,
    DevicePage,
    DeviceTagsChange,
    DeviceUpdate,
    ProvisionedDevice,
)
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["devices"], responses=ROLE_LIMITED)


def _provisioned(result: Provisioned) -> ProvisionedDevice:
    return ProvisionedDevice(
        **Device.of(result.device).model_dump(),
        credentials=Credentials(username=result.device.id, password=result.password),
    )


@router.post(
    "/devices",
    status_code=status.HTTP_201_CREATED,
    response_model=ProvisionedDevice,
    responses={409: error("A device with this id exists (`device_exists`).")},
    dependencies=[needs(Permission.DEVICES_ADMIN)],
)
async def provision_device(
    body: DeviceCreate, service: ServiceDep, actor: Actor
) -> ProvisionedDevice:
    """Register a device and create its MQTT credentials. The password is in this answer
    only: the server keeps a hash."""
    result = await service.registry.provision(
        model=body.model,
        device_id=body.id,
        notes=body.notes,
        metadata=body.metadata,
        tags=body.tags,
    )
    await service.audit.record(actor, "device.provision", result.device.id, {"model": body.model})
    return _provisioned(result)


@router.get("/devices", response_model=DevicePage, dependencies=[needs(Permission.DEVICES_READ)])
async def list_devices(
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    model: str | None = None,
    online: bool | None = None,
    tag: str | None = None,
    decommissioned: Annotated[
        bool,
        Query(
            description="false (the default): devices in service; true: only the "
            "decommissioned ones."
        ),
    ] = False,
) -> DevicePage:
    """Devices in id order, a page at a time; pass `next` back as `cursor` for the next page.
    Filters combine: `model`, `online`, `tag` (devices that have it). Decommissioned devices
    are left out unless `decommissioned=true`. `GET /devices/{id}` has each one's full
    reported state."""
    after = decode_id_cursor(cursor) if cursor else None
    records = await service.registry.page(
        limit=limit,
        after_id=after,
        model=model,
        online=online,
        tag=tag,
        decommissioned=decommissioned,
    )
    next_cursor = encode_cursor(records[-1].id) if len(records) == limit else None
    return DevicePage(items=[Device.of(r) for r in records], next=next_cursor)


@router.get(
    "/devices/{device_id}",
    response_model=DeviceDetail,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_READ)],
)
async def get_device(device_id: str, service: ServiceDep) -> DeviceDetail:
    """One device, with `reported`: everything its state messages said."""
    return DeviceDetail.of(await service.registry.get(device_id))


@router.patch(
    "/devices/{device_id}",
    response_model=DeviceDetail,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def update_device(
    device_id: str, body: DeviceUpdate, service: ServiceDep, actor: Actor
) -> DeviceDetail:
    """Change `notes`, `metadata`, `tags` or some of them; a field left out keeps its
    value. Answers the device as it is now."""
    given = body.model_fields_set
    changes = DeviceDetails(
        notes=body.notes if "notes" in given else KEEP,
        metadata=(body.metadata or {}) if "metadata" in given else KEEP,
        tags=tuple(body.tags or ()) if "tags" in given else KEEP,
    )
    device = await service.registry.update_details(device_id, changes)
    # The audit log names what changed, not the values: metadata can be large.
    await service.audit.record(actor, "device.update", device_id, {"fields": sorted(given)})
    return DeviceDetail.of(device)


@router.post(
    "/devices/tags",
    response_model=DeviceList,
    responses={404: error("One of `ids` is no device (`device_not_found`); nothing changed.")},
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def change_tags(body: DeviceTagsChange, service: ServiceDep, actor: Actor) -> DeviceList:
    """Add and remove tags on many devices at once: `remove` first, then `add`, in one
    transaction. A device that would end up with more than 20 tags refuses the whole change
    (422, `too_many_tags`). Answers the devices as they are now, in id order."""
    devices = await service.registry.change_tags(body.ids, add=body.add, remove=body.remove)
    await service.audit.record(
        actor,
        "device.tag",
        f"{len(devices)} devices",
        {"add": body.add, "remove": body.remove, "devices": len(devices)},
    )
    return DeviceList(items=[Device.of(d) for d in devices])


@router.post(
    "/devices/{device_id}/decommission",
    response_model=DeviceDetail,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_ADMIN)],
)
async def decommission_device(device_id: str, service: ServiceDep, actor: Actor) -> DeviceDetail:
    """Take the device out of service and keep its history. Its password is cleared (it
    stops working at once and a live connection is dropped), unredeemed claim codes are
    retired, and `GET /devices` leaves it out unless `decommissioned=true`. Its telemetry,
    events, commands and configuration stay readable (`GET /devices/{id}`, `/telemetry`,
    `/events`, `/commands`). It gets credentials again only by
    `POST /devices/{id}/recommission`. Doing it twice changes nothing more."""
    device = await service.registry.decommission(device_id)
    await service.audit.record(actor, "device.decommission", device_id)
    return DeviceDetail.of(device)


@router.post(
    "/devices/{device_id}/recommission",
    response_model=ProvisionedDevice,
    responses={**NO_DEVICE, 409: error("The device is in service (`device_in_service`).")},
    dependencies=[needs(Permission.DEVICES_ADMIN)],
)
async def recommission_device(
    device_id: str, service: ServiceDep, actor: Actor
) -> ProvisionedDevice:
    """Bring a decommissioned device back into service with a new password (shown once, as
    `POST /devices/{id}/credentials` shows it); its history and tags are as they were."""
    result = await service.registry.recommission(device_id)
    await service.audit.record(actor, "device.recommission", device_id)
    return _provisioned(result)


@router.delete(
    "/devices/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_ADMIN)],
)
async def delete_device(device_id: str, service: ServiceDep, actor: Actor) -> Response:
    """Erase the device and everything about it, for good: the device row with its notes,
    metadata and tags, its credentials (they stop working at once and a live connection is
    dropped), all its telemetry, events, commands, desired configuration, OTA progress, claim
    codes and alerts, and the retained config and state messages on the broker. The audit
    log keeps its entries. To keep the history, `POST /devices/{id}/decommission` instead."""
    await service.registry.delete(device_id)
    await service.audit.record(actor, "device.delete", device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/devices/{device_id}/credentials",
    response_model=ProvisionedDevice,
    responses={**NO_DEVICE, 409: error("The device is decommissioned (`device_decommissioned`).")},
    dependencies=[needs(Permission.DEVICES_ADMIN)],
)
async def rotate_credentials(
    device_id: str, service: ServiceDep, actor: Actor
) -> ProvisionedDevice:
    """Give the device a new password (shown once); the old one stops working at once. A
    decommissioned device is refused (409, `device_decommissioned`): recommission it."""
    result = await service.registry.rotate_credentials(device_id)
    await service.audit.record(actor, "device.rotate_credentials", device_id)
    return _provisioned(result)
