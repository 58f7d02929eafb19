"""Desired configuration: versioned, published retained so a device that was away gets it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paku_iot.downlink.publisher import Publisher
from paku_iot.exceptions import Unavailable
from paku_iot.protocol import STATE_CONFIG_VERSION, config_topic
from paku_iot.storage.configs import ConfigStore
from paku_iot.storage.records import DesiredConfig, DeviceRecord

log = logging.getLogger("paku_iot.downlink")


@dataclass(frozen=True, slots=True)
class ConfigView:
    version: int
    config: dict[str, Any]
    reported_version: int | None
    updated_at: datetime | None

    @property
    def in_sync(self) -> bool:
        return (self.reported_version or 0) == self.version


def reported_config_version(device: DeviceRecord) -> int | None:
    value = (device.reported_state or {}).get(STATE_CONFIG_VERSION)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def config_message(desired: DesiredConfig) -> bytes:
    return json.dumps(
        {"version": desired.version, "config": desired.config}, separators=(",", ":")
    ).encode()


class ConfigService:
    def __init__(
        self,
        configs: ConfigStore,
        publisher: Publisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._configs = configs
        self._publisher = publisher
        self._clock = clock

    async def put(self, device: DeviceRecord, config: dict[str, Any]) -> ConfigView:
        # Refused while the broker is away: a version the device could never receive would
        # make "desired" a lie.
        if not self._publisher.connected:
            raise Unavailable("the broker is not reachable; the configuration was not changed")
        desired = await self._configs.put(device.id, config, self._clock())
        self._publisher.publish(
            config_topic(device.id), config_message(desired), qos=1, retain=True
        )
        log.info(
            "config version %d for %s", desired.version, device.id, extra={"device_id": device.id}
        )
        return self._view(device, desired)

    async def get(self, device: DeviceRecord) -> ConfigView:
        return self._view(device, await self._configs.get(device.id))

    @staticmethod
    def _view(device: DeviceRecord, desired: DesiredConfig | None) -> ConfigView:
        return ConfigView(
            version=desired.version if desired else 0,
            config=desired.config if desired else {},
            reported_version=reported_config_version(device),
            updated_at=desired.updated_at if desired else None,
        )
