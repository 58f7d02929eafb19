"""Server-side rendering: the Jinja2 templates, their filters, and the headers every page gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from paku_iot import __version__
from paku_iot.web.ui import alert_text
from paku_iot.web.ui.sessions import Session

TEMPLATE_DIR = Path(__file__).parent / "templates"

# Everything the dashboard loads is its own: no inline script, no other origin. The script
# and styles are files under /ui/static; uPlot styles its canvas through the CSSOM, which a
# style-src without 'unsafe-inline' does not restrict.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages hold fleet data and sometimes a secret shown once: never kept in a cache.
    "Cache-Control": "no-store",
}


def relative_time(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def exact_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


PAYLOAD_START_CHARS = 160


def payload_start(payload: bytes, size: int, limit: int = PAYLOAD_START_CHARS) -> str:
    """The first characters of a payload as a device sent it, legible whatever it holds:
    bytes that are not UTF-8 as `\\xNN`, control characters as escapes (a NUL or a newline
    would otherwise vanish from the page), and an ellipsis when there is more. HTML is
    escaped by the template, like everything else."""
    text = payload.decode("utf-8", errors="backslashreplace")
    shown = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text[:limit]
    )
    return shown + "…" if len(text) > limit or size > len(payload) else shown


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATE_DIR)
    env = templates.env
    env.filters.update(
        relative=relative_time,
        exact=exact_time,
        iso=iso_time,
        pretty_json=pretty_json,
        compact_json=compact_json,
        payload_start=payload_start,
        condition=alert_text.condition,
        scope=alert_text.scope,
        destination=alert_text.destination,
        short_values=alert_text.short_values,
    )
    env.globals["version"] = __version__
    return templates


templates = _templates()


def _cannot(_permission: str) -> bool:
    return False


def render(
    request: Request,
    name: str,
    session: Session | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("title", "")
    context["session"] = session
    context["csrf"] = session.csrf_token if session else ""
    # `can('devices:admin')`: whether to show a button or form; the route refuses anyway.
    context["can"] = session.can if session else _cannot
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
