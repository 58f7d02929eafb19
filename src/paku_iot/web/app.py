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
from paku_iot.web.api.auth import RefuseAnonymousAdmin
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
    # body's cap (no database needed), then the admin token, all before a body is read.
    app.add_middleware(RefuseAnonymousAdmin)
    app.add_middleware(LimitRequestBody, cap_for=body_caps(service.settings))
    install_observability(app, service.metrics)
    app.add_middleware(RefuseNulInUrl)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(devices.router)
    app.include_router(messages.router)
    app.include_router(exports.router)
    app.include_router(commands.router)
    app.include_router(config.router)
    app.include_router(ota.admin)
    app.include_router(ota.router)
    app.include_router(security.router)
    app.include_router(alerts.router)
    app.include_router(dashboard)
    return app
