"""Who is calling an OTA endpoint: the admin (Bearer), a device (HTTP Basic with its own
MQTT credentials), or nobody."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import Request

from paku_iot.exceptions import Unauthorized
from paku_iot.storage.records import DeviceRecord
from paku_iot.web.deps import get_service


@dataclass(frozen=True, slots=True)
class Caller:
    admin: bool = False
    device: DeviceRecord | None = None


class DeviceUnauthorized(Unauthorized):
    """401 that asks for HTTP Basic (device credentials) rather than a Bearer token."""

    auth_scheme = 'Basic realm="paku-iot"'


async def identify_caller(request: Request) -> Caller:
    service = get_service(request)
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        if await service.tokens.actor_for(credentials.strip()) is not None:
            return Caller(admin=True)
        raise Unauthorized("wrong admin token", code="invalid_token")
    if scheme.lower() == "basic":
        try:
            username, _, password = (
                base64.b64decode(credentials, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise DeviceUnauthorized(
                "malformed Basic credentials", code="invalid_credentials"
            ) from None
        device = await service.registry.authenticate(username, password)
        if device is None:
            raise DeviceUnauthorized("wrong device credentials", code="invalid_credentials")
        return Caller(device=device)
    if service.settings.ota_allow_anonymous:
        return Caller()
    raise DeviceUnauthorized(
        "device credentials required (HTTP Basic, the device's MQTT username and password)",
        code="unauthorized",
    )
