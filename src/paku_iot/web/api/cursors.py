"""Opaque page cursors: what the client sends back is what we gave it, or a clear 422."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from paku_iot.exceptions import InvalidInput
from paku_iot.web.api.inputs import has_nul


def encode_cursor(*parts: Any) -> str:
    raw = json.dumps(
        [p.isoformat() if isinstance(p, datetime) else p for p in parts], separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor") from None
    if not isinstance(value, list) or has_nul(value):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return value


def decode_id_cursor(cursor: str) -> str:
    value = _decode(cursor)
    if len(value) != 1 or not isinstance(value[0], str):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return value[0]


def decode_int_cursor(cursor: str) -> int:
    value = _decode(cursor)
    if len(value) != 1 or not isinstance(value[0], int) or isinstance(value[0], bool):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return value[0]


def _decode_time_position(cursor: str) -> tuple[datetime, object]:
    value = _decode(cursor)
    try:
        ts_text, item_id = value
        ts = datetime.fromisoformat(ts_text)
    except (TypeError, ValueError):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor") from None
    if ts.tzinfo is None:
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return ts, item_id


def decode_time_cursor(cursor: str) -> tuple[datetime, int]:
    """A (time, row id) position in a newest-first listing (telemetry, events)."""
    ts, row_id = _decode_time_position(cursor)
    if not isinstance(row_id, int) or isinstance(row_id, bool):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return ts, row_id


def decode_time_text_cursor(cursor: str) -> tuple[datetime, str]:
    """A (time, text id) position, as in newest-first lists keyed by a string id (commands)."""
    ts, item_id = _decode_time_position(cursor)
    if not isinstance(item_id, str):
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor")
    return ts, item_id
