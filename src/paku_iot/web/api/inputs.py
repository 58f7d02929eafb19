"""Request input both databases can hold, checked once at the edge.

PostgreSQL refuses NUL in text and jsonb (SQLite stores it), and pydantic cannot serialize
JSON nested past about 255 levels, so either would turn a client's odd input into a 500 on
one database and not the other. Both are refused here, the same way everywhere, as 422.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from paku_iot.jsonlimits import MAX_JSON_DEPTH, too_deep

NUL_REFUSED = "NUL characters are not accepted"


def has_nul(value: Any) -> bool:
    """True when any string in `value` (keys included) holds a NUL character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_json_input(value: Any) -> Any:
    """A pydantic before-validator for request bodies."""
    if has_nul(value):
        raise ValueError(NUL_REFUSED)
    if too_deep(value):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not accepted")
    return value


class RefuseNulInUrl:
    """Answers 422 to a request whose path or query string holds a NUL character."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"])
        ):
            body = json.dumps({"error": {"code": "invalid_input", "message": NUL_REFUSED}})
            await send(
                {
                    "type": "http.response.start",
                    "status": 422,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await self.app(scope, receive, send)
