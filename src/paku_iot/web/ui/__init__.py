"""The admin dashboard under /ui: server-rendered pages (Jinja2) with a little script, served
entirely by paku-iot (no CDN), signed in with an admin token (docs/dashboard.md).

`router` is the whole dashboard; `api.app.create_app` includes it. It uses the running
`Service` directly, never the HTTP API, and leaves the API's bearer-token auth as it is.
"""

from __future__ import annotations

from fastapi import APIRouter

from paku_iot.web.ui.routes import (
    alert_rules,
    alerts,
    device,
    device_admin,
    firmware,
    fleet,
    provision,
    rejected,
    release,
    signin,
    static,
)

router = APIRouter(include_in_schema=False)
for _module in (
    signin,
    static,
    fleet,
    device,
    device_admin,
    alerts,
    alert_rules,
    rejected,
    firmware,
    release,
    provision,
):
    router.include_router(_module.router)

__all__ = ["router"]
