"""Who is calling an OTA endpoint: the admin (Bearer), a device (HTTP Basic with its own
MQTT credentials), or nobody.

Both schemes are FastAPI security classes, so the OpenAPI document declares them
(`AdminToken`, `DeviceCredentials`) and generated clients send them. Neither raises on its
own: the 401s, with their codes and `WWW-Authenticate` challenges, are ours.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials
from fastapi.security.utils import get_authorization_scheme_param

from paku_iot.exceptions import Unauthorized
from paku_iot.storage.records import DeviceRecord
from paku_iot.web.api.auth import admin_bearer
from paku_iot.web.deps import get_service

DEVICE_SCHEME = "DeviceCredentials"


@dataclass(frozen=True, slots=True)
class Caller:
    admin: bool = False
    device: DeviceRecord | None = None


class DeviceUnauthorized(Unauthorized):
    """401 that asks for HTTP Basic (device credentials) rather than a Bearer token."""

    auth_scheme = 'Basic realm="paku-iot"'


class DeviceBasic(HTTPBasic):
    """HTTP Basic that reads the header itself: FastAPI's own answers malformed credentials
    with a bare 401 of its own even with `auto_error=False`, where ours names the problem."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, encoded = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise DeviceUnauthorized(
                "malformed Basic credentials", code="invalid_credentials"
            ) from None
        username, _, password = decoded.partition(":")
        return HTTPBasicCredentials(username=username, password=password)


device_basic = DeviceBasic(
    scheme_name=DEVICE_SCHEME,
    realm="paku-iot",
    description="A device's own MQTT credentials: username = device id, password.",
    auto_error=False,
)


async def identify_caller(
    request: Request,
    admin: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
    device: Annotated[HTTPBasicCredentials | None, Depends(device_basic)],
) -> Caller:
    service = get_service(request)
    if admin is not None:
        if await service.tokens.identify(admin.credentials) is not None:
            return Caller(admin=True)
        raise Unauthorized("wrong admin token", code="invalid_token")
    if device is not None:
        record = await service.registry.authenticate(device.username, device.password)
        if record is None:
            raise DeviceUnauthorized("wrong device credentials", code="invalid_credentials")
        return Caller(device=record)
    if service.settings.ota_allow_anonymous:
        return Caller()
    raise DeviceUnauthorized(
        "device credentials required (HTTP Basic, the device's MQTT username and password)",
        code="unauthorized",
    )
