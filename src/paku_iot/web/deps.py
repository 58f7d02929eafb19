"""Access to the running service from a request, for the API and the dashboard alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from paku_iot.server.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# A route's parameter for the running `Service`.
ServiceDep = Annotated[Service, Depends(get_service)]
