"""Per-request bookkeeping: an X-Request-ID for the logs, and request metrics."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from paku_iot.logs import current_request_id
from paku_iot.server.metrics import Metrics

log = logging.getLogger("paku_iot.web.api")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def install_observability(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if _SAFE_ID.fullmatch(incoming) else secrets.token_hex(8)
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            elapsed = time.perf_counter() - started
            route = request.scope.get("route")
            # The route's template, not the raw path: one series per endpoint, not per device.
            path = getattr(route, "path", "unmatched")
            metrics.http_requests.labels(request.method, path, str(status)).inc()
            metrics.http_duration.labels(request.method, path).observe(elapsed)
            log.debug("%s %s -> %d in %.1f ms", request.method, path, status, elapsed * 1000)
            current_request_id.reset(token)
