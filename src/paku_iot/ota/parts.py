"""The OTA release service and its keys, built on first use.

Only the API serves releases. A collector-only process never touches them, and building
them lazily keeps `cryptography` (with its own OpenSSL, about 10 MB resident) out of it. The
collector runs the autopilot (ota/autopilot.py), which needs no key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paku_iot.exceptions import SettingsError
from paku_iot.settings import Settings
from paku_iot.storage.devices import DeviceStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from paku_iot.ota.autopilot import Autopilot
    from paku_iot.ota.releases import ReleaseService
    from paku_iot.ota.signer import ReleaseSigner


class OtaParts:
    def __init__(self, settings: Settings, engine: AsyncEngine, devices: DeviceStore) -> None:
        self._settings = settings
        self._engine = engine
        self._devices = devices
        self._signer: ReleaseSigner | None = None
        self._releases: ReleaseService | None = None

    def signer(self) -> ReleaseSigner:
        """With PAKU_OTA_PUBLIC_KEY_FILE: that key alone, and no private key is ever read or
        made. Else the private key, loaded from its file or generated into it (0600)."""
        if self._signer is None:
            from paku_iot.ota import signing  # noqa: PLC0415
            from paku_iot.ota.signer import ReleaseSigner  # noqa: PLC0415

            settings = self._settings
            if settings.ota_public_key_file is not None:
                if settings.ota_signing_key_file is not None:
                    # Which key would sign? Refuse to guess: the point of the public key
                    # setting is that the private one is somewhere else.
                    raise SettingsError(
                        "set PAKU_OTA_PUBLIC_KEY_FILE or PAKU_OTA_SIGNING_KEY_FILE, not both: "
                        "with the public key alone, releases are signed off the server"
                    )
                public = signing.load_public_key_file(settings.ota_public_key_file)
                self._signer = ReleaseSigner(public, None)
            else:
                private = signing.load_or_create_signing_key(settings.signing_key_path)
                self._signer = ReleaseSigner(private.public_key(), private)
        return self._signer

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
                self.signer(),
            )
        return self._releases

    def autopilot(self) -> Autopilot:
        from datetime import UTC, datetime  # noqa: PLC0415

        from paku_iot.ota.autopilot import Autopilot  # noqa: PLC0415
        from paku_iot.storage.releases import ReleaseStore  # noqa: PLC0415

        return Autopilot(ReleaseStore(self._engine), self._devices, lambda: datetime.now(UTC))
