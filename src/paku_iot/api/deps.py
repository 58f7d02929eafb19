"""Access to the running service from a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from paku_iot.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service
