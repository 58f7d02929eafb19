"""The OTA release service and its signing key, built on first use.

Only the API serves releases. A collector-only process never touches them, and building
them lazily keeps `cryptography` (with its own OpenSSL, about 10 MB resident) out of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paku_iot.settings import Settings
from paku_iot.storage.devices import DeviceStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sqlalchemy.ext.asyncio import AsyncEngine

    from paku_iot.ota.releases import ReleaseService


class OtaParts:
    def __init__(self, settings: Settings, engine: AsyncEngine, devices: DeviceStore) -> None:
        self._settings = settings
        self._engine = engine
        self._devices = devices
        self._signing_key: Ed25519PrivateKey | None = None
        self._releases: ReleaseService | None = None

    def signing_key(self) -> Ed25519PrivateKey:
        """Loaded from its file, or generated into it (0600) on first use."""
        if self._signing_key is None:
            from paku_iot.ota.signing import load_or_create_signing_key  # noqa: PLC0415

            self._signing_key = load_or_create_signing_key(self._settings.signing_key_path)
        return self._signing_key

    def releases(self) -> ReleaseService:
        if self._releases is None:
            from paku_iot.ota.files import FirmwareFiles  # noqa: PLC0415
            from paku_iot.ota.releases import ReleaseService  # noqa: PLC0415
            from paku_iot.storage.releases import ReleaseStore  # noqa: PLC0415

            settings = self._settings
            self._releases = ReleaseService(
                ReleaseStore(self._engine),
                self._devices,
                FirmwareFiles(settings.firmware_dir, settings.ota_max_firmware_bytes),
                self.signing_key(),
            )
        return self._releases
