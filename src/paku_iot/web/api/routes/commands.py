from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status

from paku_iot.downlink.commands import NewCommand
from paku_iot.security.roles import Permission
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.cursors import decode_time_text_cursor, encode_cursor
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED, error
from paku_iot.web.api.schemas import (
    BulkCommandCreate,
    Command,
    CommandBatch,
    CommandCreate,
    CommandPage,
)
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["commands"], responses=ROLE_LIMITED)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Retrying a POST with the same key returns the same command(s).",
    ),
]
Status = Annotated[
    str | None, Query(pattern="^(queued|sent|acked|failed|expired)$", alias="status")
]


def _new(body: CommandCreate) -> NewCommand:
    return NewCommand(name=body.name, params=body.params, ttl_seconds=body.ttl_seconds)


@router.post(
    "/devices/{device_id}/commands",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Command,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def send_command(
    device_id: str,
    body: CommandCreate,
    service: ServiceDep,
    actor: Actor,
    idempotency_key: IdempotencyKey = None,
) -> Command:
    """Send a command. It is `queued` while the device is offline and `sent` once published
    to it; the device's answer makes it `acked` or `failed`, and `expired` is what it becomes
    if `ttlSeconds` pass without one."""
    await service.registry.get(device_id)
    [command] = await service.commands.create([device_id], _new(body), idempotency_key)
    await service.audit.record(
        actor, "command.send", device_id, {"command": command.id, "name": body.name}
    )
    return Command.of(command)


@router.post(
    "/commands",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CommandBatch,
    responses={404: error("One of `deviceIds` is no device (`device_not_found`).")},
    dependencies=[needs(Permission.DEVICES_OPERATE)],
)
async def send_bulk_command(
    body: BulkCommandCreate,
    service: ServiceDep,
    actor: Actor,
    idempotency_key: IdempotencyKey = None,
) -> CommandBatch:
    """The same command to many devices: `deviceIds`, every device of a `model`, or every
    device with a `tag` (model and tag: devices in service)."""
    device_ids = await service.commands.targets(
        device_ids=body.device_ids, model=body.model, tag=body.tag
    )
    if not device_ids:
        return CommandBatch(items=[])
    commands = await service.commands.create(device_ids, _new(body), idempotency_key)
    if body.model:
        target = f"model:{body.model}"
    elif body.tag:
        target = f"tag:{body.tag}"
    else:
        target = f"{len(device_ids)} devices"
    await service.audit.record(
        actor, "command.send_bulk", target, {"name": body.name, "devices": len(device_ids)}
    )
    return CommandBatch(items=[Command.of(c) for c in commands])


@router.get(
    "/devices/{device_id}/commands",
    response_model=CommandPage,
    responses=NO_DEVICE,
    dependencies=[needs(Permission.DEVICES_READ)],
)
async def list_commands(
    device_id: str,
    service: ServiceDep,
    status_filter: Status = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> CommandPage:
    """The device's commands, newest first."""
    await service.registry.get(device_id)
    records = await service.commands.page(
        device_id,
        limit=limit,
        status=status_filter,
        before=decode_time_text_cursor(cursor) if cursor else None,
    )
    last = records[-1] if len(records) == limit else None
    return CommandPage(
        items=[Command.of(r) for r in records],
        next=encode_cursor(last.created_at, last.id) if last else None,
    )


@router.get(
    "/devices/{device_id}/commands/{command_id}",
    response_model=Command,
    responses={404: error("No such device, or no such command of it.")},
    dependencies=[needs(Permission.DEVICES_READ)],
)
async def get_command(device_id: str, command_id: str, service: ServiceDep) -> Command:
    return Command.of(await service.commands.get(device_id, command_id))
