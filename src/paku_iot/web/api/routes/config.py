from __future__ import annotations

from fastapi import APIRouter

from paku_iot.security.roles import Permission
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED, error
from paku_iot.web.api.schemas import (
    BulkConfigItem,
    BulkConfigPut,
    BulkConfigResult,
    ConfigPut,
    DeviceConfig,
)
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["config"], responses={**ROLE_LIMITED, **NO_DEVICE})


@router.put(
    "/devices/{device_id}/config",
    response_model=DeviceConfig,
    responses={503: error("The broker is unreachable; nothing changed (`unavailable`).")},
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def put_config(
    device_id: str, body: ConfigPut, service: ServiceDep, actor: Actor
) -> DeviceConfig:
    """Set the desired configuration. Each call makes a new version (one more than the last),
    published retained on paku/<id>/config, so the device gets it now or when it reconnects."""
    device = await service.registry.get(device_id)
    view = await service.configs.put(device, body.config)
    await service.audit.record(actor, "config.set", device_id, {"version": view.version})
    return DeviceConfig.of(view)


@router.get(
    "/devices/{device_id}/config",
    response_model=DeviceConfig,
    dependencies=[needs(Permission.DEVICES_READ)],
)
async def get_config(device_id: str, service: ServiceDep) -> DeviceConfig:
    """Desired configuration and the version the device reports it has applied."""
    device = await service.registry.get(device_id)
    return DeviceConfig.of(await service.configs.get(device))


@router.put(
    "/config",
    response_model=BulkConfigResult,
    responses={
        404: error("One of `deviceIds` is no device (`device_not_found`)."),
        503: error("The broker is unreachable; nothing changed (`unavailable`)."),
    },
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def put_bulk_config(
    body: BulkConfigPut, service: ServiceDep, actor: Actor
) -> BulkConfigResult:
    """The same desired configuration for many devices: `deviceIds`, every device of a
    `model`, or every device with a `tag` (devices in service). Each device gets its own next
    version, as `PUT /devices/{id}/config` gives it."""
    devices = await service.registry.targets(
        device_ids=body.device_ids, model=body.model, tag=body.tag
    )
    items = []
    for device in devices:
        view = await service.configs.put(device, body.config)
        items.append(BulkConfigItem(device_id=device.id, **DeviceConfig.of(view).model_dump()))
    target = f"model:{body.model}" if body.model else f"tag:{body.tag}" if body.tag else "devices"
    await service.audit.record(actor, "config.set_bulk", target, {"devices": len(devices)})
    return BulkConfigResult(items=items)
