"""What a notification says, and its shape for each kind of destination (docs/alerts.md).

`notification` builds the documented JSON body; `render` gives the bytes and headers one
destination takes: the body itself for a webhook, a Slack incoming-webhook message, or an
ntfy plain-text message with its title, priority and tags in headers. Signing and sending
are sender.py's.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.header import Header
from typing import Any

from paku_iot.alerts.times import iso_utc
from paku_iot.storage.records import (
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRecord,
    AlertRuleRecord,
    DestinationType,
)

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def notification(
    event: AlertEvent,
    alert: AlertRecord,
    rule: AlertRuleRecord,
    device: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The webhook body: what happened (`event`), the alert with the values that decided
    it, the rule, the device (`model` when known) and when it was sent."""
    device_body: dict[str, Any] = {"id": alert.device_id}
    if device is not None and device.get("model") is not None:
        device_body["model"] = device["model"]
    return {
        "event": event.value,
        "alert": {
            "id": alert.id,
            "ruleId": alert.rule_id,
            "deviceId": alert.device_id,
            "state": alert.state.value,
            "openedAt": iso_utc(alert.opened_at),
            "resolvedAt": iso_utc(alert.resolved_at) if alert.resolved_at else None,
            "values": alert.values,
        },
        "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind.value},
        "device": device_body,
        "sentAt": iso_utc(now),
    }


def render(destination: AlertDestination, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The request body and headers for one destination (signing headers excepted)."""
    if destination.type is DestinationType.SLACK:
        return _slack(body)
    if destination.type is DestinationType.NTFY:
        return _ntfy(body)
    return _compact(body), {"Content-Type": JSON}


def summary(body: dict[str, Any]) -> str:
    """One line for people: `[paku] OPENED threshold 'Boiler hot' on kitchen-01: temp 81.2 >
    80`."""
    rule = body["rule"]
    event = str(body["event"]).upper()
    line = f"[paku] {event} {rule['kind']} '{rule['name']}' on {body['device']['id']}"
    detail = _detail(str(rule["kind"]), str(body["event"]), body["alert"].get("values") or {})
    return f"{line}: {detail}" if detail else line


def _detail(kind: str, event: str, values: dict[str, Any]) -> str:
    opened = event == AlertEvent.OPENED
    if values.get("reason") == "rule changed":
        return "the rule changed"
    if kind == AlertKind.THRESHOLD:
        field, value = values.get("field"), values.get("value")
        above, below = values.get("above"), values.get("below")
        if not opened:
            return f"{field} {_number(value)} back in range"
        if above is not None and isinstance(value, int | float) and value > above:
            return f"{field} {_number(value)} > {_number(above)}"
        return f"{field} {_number(value)} < {_number(below)}"
    if kind == AlertKind.OFFLINE:
        if not opened:
            return "back online"
        if values.get("reason") == "silent":
            return f"silent for over {_number(values.get('silenceSeconds'))} s"
        return "offline"
    if kind == AlertKind.OTA_FAILED:
        version = values.get("version")
        if not opened:
            return f"{version} installed"
        error = values.get("error")
        return f"update to {version} failed" + (f": {error}" if error else "")
    if kind == AlertKind.REJECTED_RATE:
        count, limit = values.get("count"), values.get("perMinute")
        if not opened:
            return f"{count} rejected messages in the last minute, limit {limit}"
        return f"{count} rejected messages in the last minute > {limit}"
    return ""


def _number(value: Any) -> str:
    # 80.0 reads as the 80 the operator typed; 81.2 stays 81.2.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _compact(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _slack(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    text = summary(body)
    alert = body["alert"]
    times = f"opened {alert['openedAt']}"
    if alert.get("resolvedAt"):
        times += f", resolved {alert['resolvedAt']}"
    message = {
        "text": text,  # what notifications and clients without blocks show
        "blocks": [
            {"type": "section", "text": {"type": "plain_text", "text": text}},
            {
                "type": "context",
                "elements": [{"type": "plain_text", "text": f"alert {alert['id']} · {times}"}],
            },
        ],
    }
    return _compact(message), {"Content-Type": JSON}


def _ntfy(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    opened = body["event"] == AlertEvent.OPENED
    rule = body["rule"]
    title = f"{rule['name']} on {body['device']['id']}"
    headers = {
        "Content-Type": TEXT,
        "Title": _header_text(title),
        "Priority": "high" if opened else "default",
        "Tags": ",".join(["rotating_light" if opened else "white_check_mark", str(rule["kind"])]),
    }
    return summary(body).encode("utf-8"), headers


def _header_text(text: str) -> str:
    """A header value that survives HTTP: ASCII as it is, anything else as an RFC 2047
    encoded word, which ntfy decodes (HTTP headers carry Latin-1 at most; a rule named
    'Kühlraum 🔥' would otherwise fail to send at all). Line breaks become spaces: a header
    is one line."""
    text = " ".join(text.split())
    if text.isascii():
        return text
    return Header(text, "utf-8").encode()
