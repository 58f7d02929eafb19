"""CORS for browser apps on other origins (PAKU_CORS_ORIGINS), on the API only.

Starlette's CORSMiddleware would answer for the whole app; the dashboard under /ui is
same-origin, works with a cookie, and must not be readable from another site, so its paths
bypass CORS entirely. Credentials (cookies) are never allowed cross-origin: a browser app
sends its token in `Authorization`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

DASHBOARD_PREFIX = "/ui"


def _is_dashboard(path: str) -> bool:
    return path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")


class ApiCors:
    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "ETag", "Content-Range"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _is_dashboard(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
