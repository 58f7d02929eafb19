"""Factory onboarding: devices registered in batches with claim codes, claimed once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from paku_iot.exceptions import InvalidInput
from paku_iot.protocol import is_valid_device_id
from paku_iot.registry.devices import DeviceRegistry, ProvisionedDevice
from paku_iot.registry.ids import new_device_id
from paku_iot.security.claims import (
    MAX_TTL_S,
    ClaimRefused,
    code_hash,
    expiry,
    new_claim_code,
)
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import NewClaimCode, NewDevice
from paku_iot.storage.security import ClaimCodeStore

log = logging.getLogger("paku_iot.registry")
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class IssuedCode:
    device_id: str
    claim_code: str  # exists in clear only in this answer
    expires_at: datetime


class Onboarding:
    def __init__(
        self, devices: DeviceStore, codes: ClaimCodeStore, registry: DeviceRegistry
    ) -> None:
        self._devices = devices
        self._codes = codes
        self._registry = registry

    async def issue(
        self, *, model: str, count: int | None, ids: list[str] | None, ttl_seconds: int
    ) -> list[IssuedCode]:
        """Register devices without MQTT credentials, one claim code each."""
        if not 1 <= ttl_seconds <= MAX_TTL_S:
            raise InvalidInput(f"ttlSeconds must be between 1 and {MAX_TTL_S}")
        if ids is not None:
            bad = [i for i in ids if not is_valid_device_id(i)]
            if bad:
                raise InvalidInput(f"invalid device ids: {', '.join(bad[:10])}")
            if len(set(ids)) != len(ids):
                raise InvalidInput("device ids repeat")
            device_ids = ids
        else:
            device_ids = [new_device_id() for _ in range(count or 1)]
        if not 1 <= len(device_ids) <= MAX_BATCH:
            raise InvalidInput(f"a batch is 1 to {MAX_BATCH} devices")
        now = datetime.now(UTC)
        expires = expiry(ttl_seconds)
        await self._devices.insert_many(
            [NewDevice(d, model, None, {}, now, None) for d in device_ids]
        )
        issued = [IssuedCode(d, new_claim_code(), expires) for d in device_ids]
        await self._codes.insert(
            [NewClaimCode(code_hash(c.claim_code), c.device_id, now, expires) for c in issued]
        )
        log.info("issued %d claim codes for model %s", len(issued), model)
        return issued

    async def claim(self, code: str) -> ProvisionedDevice:
        device_id = await self._codes.redeem(code_hash(code), datetime.now(UTC))
        if device_id is None:
            raise ClaimRefused("invalid claim code")
        return await self._registry.rotate_credentials(device_id)
