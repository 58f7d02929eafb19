"""The FastAPI application, built around an already running `Service`: the HTTP API and the
admin dashboard under /ui."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import Scope

from paku_iot import __version__
from paku_iot.settings import Settings
from paku_iot.web.api.auth import RefuseAnonymousAdmin, declared_permissions
from paku_iot.web.api.cors import ApiCors
from paku_iot.web.api.errors import install_error_handlers
from paku_iot.web.api.inputs import RefuseNulInUrl
from paku_iot.web.api.limits import BodyCap, LimitRequestBody
from paku_iot.web.api.observability import install_observability
from paku_iot.web.api.responses import INVALID_INPUT
from paku_iot.web.api.routes import (
    alerts,
    commands,
    config,
    devices,
    exports,
    health,
    messages,
    metrics,
    ota,
    ota_control,
    security,
)
from paku_iot.web.ui import router as dashboard

if TYPE_CHECKING:
    from paku_iot.server.service import Service


def operation_id(route: APIRoute) -> str:
    """The route function's name (snake_case): what generated clients name their calls, so it
    stays the same from one build to the next (FastAPI's default appends the path)."""
    return route.name


# Room for the multipart framing around a firmware image: boundaries, the form's fields
# (notes up to 4000 characters), part headers.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def body_caps(settings: Settings) -> Callable[[Scope], BodyCap]:
    """The firmware upload may be as large as an image may be; every other body is small."""
    firmware = BodyCap(
        settings.ota_max_firmware_bytes + MULTIPART_OVERHEAD_BYTES,
        settings.ota_max_firmware_bytes,
        "PAKU_OTA_MAX_FIRMWARE_BYTES",
    )
    default = BodyCap(
        settings.http_max_body_bytes, settings.http_max_body_bytes, "PAKU_HTTP_MAX_BODY_BYTES"
    )

    def cap_for(scope: Scope) -> BodyCap:
        is_upload = scope["method"] == "POST" and scope["path"] == ota.FIRMWARE_UPLOAD_PATH
        return firmware if is_upload else default

    return cap_for


# In the order routing tries them.
API_ROUTERS = (
    health.router,
    metrics.router,
    devices.router,
    messages.router,
    exports.router,
    commands.router,
    config.router,
    ota.admin,
    ota_control.router,
    ota.router,
    security.router,
    alerts.router,
)


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="paku-iot",
        version=__version__,
        description="Provision paku devices, read what they send, and manage them.",
        generate_unique_id_function=operation_id,
        responses=INVALID_INPUT,
        # PAKU_API_DOCS=false turns off the interactive docs; /openapi.json stays for
        # generators.
        docs_url="/docs" if service.settings.api_docs else None,
        redoc_url="/redoc" if service.settings.api_docs else None,
    )
    app.state.service = service
    install_error_handlers(app)
    # The last added runs first: NUL in the URL, then the request id and metrics, then the
    # body's cap (no database needed), then the admin token, all before a body is read; CORS
    # (when configured) before all of them.
    app.add_middleware(RefuseAnonymousAdmin, permissions=declared_permissions(API_ROUTERS))
    app.add_middleware(LimitRequestBody, cap_for=body_caps(service.settings))
    install_observability(app, service.metrics)
    app.add_middleware(RefuseNulInUrl)
    if service.settings.cors_origins:
        # Outermost: a preflight is answered before anything else, and every answer a
        # browser app gets (a 401 too) carries the headers that let it read the error.
        app.add_middleware(ApiCors, origins=service.settings.cors_origins)
    for router in API_ROUTERS:
        app.include_router(router)
    app.include_router(dashboard)
    return app
