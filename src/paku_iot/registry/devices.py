"""The devices: provisioning, credentials, removal and queries, keeping the broker in step."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from paku_iot.broker.credentials import PasswordFileSync
from paku_iot.broker.passwords import hash_password, new_password, verify_password
from paku_iot.downlink.publisher import Publisher
from paku_iot.downlink.targets import target_devices
from paku_iot.exceptions import Conflict, InvalidInput, NotFound
from paku_iot.protocol import config_topic, is_valid_device_id, state_topic
from paku_iot.registry.ids import new_device_id
from paku_iot.registry.tags import MAX_TAGS, check_tag, normalized_tags
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import KEEP, DeviceDetails, DeviceRecord, NewDevice

log = logging.getLogger("paku_iot.registry")

_GENERATED_ID_ATTEMPTS = 5
# Checked when a device has no password, so that a missing device takes as long as a wrong
# password (the username is not confirmed by timing).
_NO_PASSWORD_HASH = "$7$101$AAAAAAAAAAAAAAAA$AAAA"  # noqa: S105 - a well-formed hash of nothing


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    device: DeviceRecord
    password: str  # the only time it exists in clear


class DeviceRegistry:
    def __init__(
        self,
        store: DeviceStore,
        broker_sync: PasswordFileSync | None,
        publisher: Publisher | None = None,
    ) -> None:
        self._store = store
        self._broker_sync = broker_sync
        self._publisher = publisher

    async def provision(
        self,
        *,
        model: str,
        device_id: str | None = None,
        notes: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> ProvisionedDevice:
        checked_tags = normalized_tags(tags or ())
        if device_id is not None and not is_valid_device_id(device_id):
            raise InvalidInput(
                "device id must be 3-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                code="invalid_device_id",
            )
        password = new_password()
        attempts = 1 if device_id is not None else _GENERATED_ID_ATTEMPTS
        for _ in range(attempts):
            candidate = device_id or new_device_id()
            try:
                device = await self._store.insert(
                    NewDevice(
                        id=candidate,
                        model=model,
                        notes=notes,
                        metadata=metadata or {},
                        created_at=datetime.now(UTC),
                        password_hash=hash_password(password),
                        tags=checked_tags,
                    )
                )
            except Conflict:
                if device_id is not None:
                    raise
                continue
            await self._sync_broker()
            log.info(
                "provisioned device %s (model %s)",
                device.id,
                model,
                extra={"device_id": device.id},
            )
            return ProvisionedDevice(device, password)
        raise Conflict("could not find a free device id; try again", code="device_exists")

    async def get(self, device_id: str) -> DeviceRecord:
        device = await self._store.get(device_id)
        if device is None:
            raise NotFound(f"no device {device_id!r}", code="device_not_found")
        return device

    async def update_details(self, device_id: str, changes: DeviceDetails) -> DeviceRecord:
        """Change a device's notes and metadata (what admins keep about it, not what it
        reports); the broker is not involved."""
        if changes.tags is not KEEP:
            changes = replace(changes, tags=normalized_tags(changes.tags))
        device = await self._store.update_details(device_id, changes)
        if device is None:
            raise NotFound(f"no device {device_id!r}", code="device_not_found")
        return device

    async def authenticate(self, device_id: str, password: str) -> DeviceRecord | None:
        """The device, if `password` is its current one (HTTP Basic for device requests)."""
        if not is_valid_device_id(device_id):
            # No device has this name; asking the database would be a 500 on PostgreSQL for
            # a NUL in it. Anyone may send any username: that is a wrong credential, no more.
            return None
        stored = await self._store.password_hash(device_id)
        valid = await asyncio.to_thread(verify_password, password, stored or _NO_PASSWORD_HASH)
        if stored is None or not valid:
            return None
        return await self._store.get(device_id)

    async def page(
        self,
        *,
        limit: int,
        after_id: str | None = None,
        before_id: str | None = None,
        model: str | None = None,
        online: bool | None = None,
        id_prefix: str | None = None,
        tag: str | None = None,
        decommissioned: bool | None = False,
    ) -> list[DeviceRecord]:
        """Devices in id order, after `after_id` or (a page back) just before `before_id`.
        Decommissioned devices only when asked for (`decommissioned` True: only them)."""
        return await self._store.page(
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            model=model,
            online=online,
            id_prefix=id_prefix,
            tag=tag,
            decommissioned=decommissioned,
        )

    async def count_matching(
        self,
        *,
        model: str | None = None,
        online: bool | None = None,
        id_prefix: str | None = None,
        tag: str | None = None,
        decommissioned: bool | None = False,
    ) -> int:
        return await self._store.count_matching(
            model=model, online=online, id_prefix=id_prefix, tag=tag, decommissioned=decommissioned
        )

    async def targets(
        self,
        *,
        device_ids: list[str] | None = None,
        model: str | None = None,
        tag: str | None = None,
    ) -> list[DeviceRecord]:
        """The devices a bulk change addresses: the given ids, a model's or a tag's."""
        return await target_devices(self._store, device_ids=device_ids, model=model, tag=tag)

    async def tags(self) -> list[str]:
        """Every tag at least one device has, in order."""
        return await self._store.tags()

    async def change_tags(
        self, device_ids: list[str], *, add: list[str], remove: list[str]
    ) -> list[DeviceRecord]:
        """Add and remove tags on many devices at once (removals first; all or none). Every
        id must be a device."""
        to_add = [check_tag(t) for t in dict.fromkeys(add)]
        to_remove = [check_tag(t) for t in dict.fromkeys(remove)]
        if not to_add and not to_remove:
            raise InvalidInput("nothing to change: give tags to add or remove")
        wanted = list(dict.fromkeys(device_ids))
        known = {d.id for d in await self._store.many(wanted)}
        unknown = [d for d in wanted if d not in known]
        if unknown:
            raise NotFound(f"no such devices: {', '.join(unknown[:20])}", code="device_not_found")
        return await self._store.change_tags(
            wanted, add=to_add, remove=to_remove, max_tags=MAX_TAGS
        )

    async def counts(self) -> tuple[int, int]:
        """(devices in service, devices online)."""
        return await self._store.counts()

    async def models(self) -> list[str]:
        """Every model that has at least one device, in order."""
        return await self._store.models()

    async def delete(self, device_id: str) -> None:
        if not await self._store.delete(device_id):
            raise NotFound(f"no device {device_id!r}", code="device_not_found")
        await self._sync_broker()
        if self._publisher is not None and self._publisher.connected:
            # An empty retained message removes the broker's copy: a device re-created with
            # this id must not be handed the old one's configuration or state.
            for topic in (config_topic(device_id), state_topic(device_id)):
                self._publisher.publish(topic, b"", qos=1, retain=True)
        log.info("deleted device %s", device_id, extra={"device_id": device_id})

    async def rotate_credentials(self, device_id: str) -> ProvisionedDevice:
        password = new_password()
        if not await self._store.set_password_hash(
            device_id, hash_password(password), datetime.now(UTC)
        ):
            await self.get(device_id)  # NotFound, or else it is decommissioned
            raise Conflict(
                f"device {device_id!r} is decommissioned: recommission it for new credentials",
                code="device_decommissioned",
            )
        await self._sync_broker()
        log.info("rotated the credentials of device %s", device_id, extra={"device_id": device_id})
        return ProvisionedDevice(await self.get(device_id), password)

    async def decommission(self, device_id: str) -> DeviceRecord:
        """Take a device out of service, keeping its history: its password is cleared and
        the broker's password file rewritten, and the reload makes Mosquitto drop a
        connection whose credentials no longer hold (as for a deleted device). Listings
        leave it out unless asked. Decommissioning twice changes nothing more."""
        device = await self.get(device_id)
        if device.decommissioned_at is not None:
            return device
        await self._store.decommission(device_id, datetime.now(UTC))
        await self._sync_broker()
        log.info("decommissioned device %s", device_id, extra={"device_id": device_id})
        return await self.get(device_id)

    async def recommission(self, device_id: str) -> ProvisionedDevice:
        """Back in service with a new password (shown once, as a rotation's)."""
        password = new_password()
        if not await self._store.recommission(
            device_id, hash_password(password), datetime.now(UTC)
        ):
            await self.get(device_id)
            raise Conflict(f"device {device_id!r} is in service", code="device_in_service")
        await self._sync_broker()
        log.info("recommissioned device %s", device_id, extra={"device_id": device_id})
        return ProvisionedDevice(await self.get(device_id), password)

    async def _sync_broker(self) -> None:
        # The database has committed the change; if the broker cannot be told now, it is
        # told at the next change or restart. The API answer stays true to the database.
        if self._broker_sync is None:
            return
        try:
            await self._broker_sync.sync()
        except Exception:
            log.exception("the broker's password file is behind the registry")
