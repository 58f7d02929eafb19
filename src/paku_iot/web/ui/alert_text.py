"""Alert rules and alerts in a few words, as the dashboard's tables show them."""

from __future__ import annotations

from urllib.parse import urlsplit

from paku_iot.storage.records import AlertDestination, AlertKind, AlertRuleRecord, JsonObject

VALUES_CHARS = 80


def _number(value: float) -> str:
    # 80.0 reads as 80, 0.5 as 0.5: rules are typed as plain numbers.
    return f"{value:g}"


def condition(rule: AlertRuleRecord) -> str:
    """What makes the rule fire, e.g. `temp > 80 for 60 s`."""
    if rule.kind is AlertKind.THRESHOLD:
        field = rule.field or "?"
        if rule.above is not None and rule.below is not None:
            text = f"{field} < {_number(rule.below)} or > {_number(rule.above)}"
        elif rule.above is not None:
            text = f"{field} > {_number(rule.above)}"
        else:
            text = f"{field} < {_number(rule.below or 0)}"
        return f"{text} for {_number(rule.for_seconds)} s" if rule.for_seconds else text
    if rule.kind is AlertKind.OFFLINE:
        if rule.silence_seconds is not None:
            return f"offline, or silent for {_number(rule.silence_seconds)} s"
        return "offline, or silent for twice its reporting interval"
    if rule.kind is AlertKind.REJECTED_RATE:
        return f"more than {rule.per_minute} rejected messages a minute"
    return "a firmware update fails"


def scope(rule: AlertRuleRecord) -> str:
    if rule.device_id is not None:
        return f"device {rule.device_id}"
    if rule.model is not None:
        return f"model {rule.model}"
    if rule.tag is not None:
        return f"tag {rule.tag}"
    return "all devices"


def destination(dest: AlertDestination) -> str:
    """Type and host: enough to tell destinations apart in a table row (a Slack hook's
    path is a long token that would crowd the rules table)."""
    return f"{dest.type} {urlsplit(dest.url).hostname or '?'}"


def short_values(values: JsonObject) -> str:
    """`key=value` pairs of what opened an alert, cut to a line."""
    text = ", ".join(f"{key}={value}" for key, value in sorted(values.items()))
    return text if len(text) <= VALUES_CHARS else text[: VALUES_CHARS - 1] + "…"
