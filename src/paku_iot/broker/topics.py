"""The topic contract with paku-core: `paku/<deviceId>/<kind>[/<name>]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from paku_iot.registry.ids import is_valid_device_id

TOPIC_ROOT = "paku"
_EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class UplinkKind(StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class UplinkTopic:
    device_id: str
    kind: UplinkKind
    event_name: str | None = None


class TopicError(ValueError):
    """A topic that is not one of the uplink topics; `device_id` is set when it was legible."""

    def __init__(self, message: str, device_id: str | None) -> None:
        super().__init__(message)
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class UplinkFilter:
    topic_filter: str
    # Retained copies sent at subscribe time: wanted for state (the current truth of each
    # device), not for telemetry and events (already stored when first published).
    replay_retained: bool


def uplink_subscriptions() -> list[UplinkFilter]:
    """The filters the collector subscribes to. Not `paku/#`: that would also deliver the
    commands and configuration the backend itself publishes."""
    return [
        UplinkFilter(f"{TOPIC_ROOT}/+/{UplinkKind.TELEMETRY}", replay_retained=False),
        UplinkFilter(f"{TOPIC_ROOT}/+/{UplinkKind.STATE}", replay_retained=True),
        UplinkFilter(f"{TOPIC_ROOT}/+/{UplinkKind.EVENT}/#", replay_retained=False),
    ]


def parse_uplink_topic(topic: str) -> UplinkTopic:
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != TOPIC_ROOT:
        raise TopicError(f"not a paku/<deviceId>/<kind> topic: {topic!r}", None)
    device_id = levels[1]
    if not is_valid_device_id(device_id):
        raise TopicError(f"invalid device id in topic: {device_id!r}", None)
    kind, rest = levels[2], levels[3:]
    if kind == UplinkKind.EVENT:
        if len(rest) != 1 or not _EVENT_NAME_RE.fullmatch(rest[0]):
            raise TopicError(
                "event topics are paku/<deviceId>/event/<name> with one name level of "
                "[A-Za-z0-9_.-]{1,64}",
                device_id,
            )
        return UplinkTopic(device_id, UplinkKind.EVENT, rest[0])
    if kind in (UplinkKind.TELEMETRY, UplinkKind.STATE) and not rest:
        return UplinkTopic(device_id, UplinkKind(kind))
    raise TopicError(f"unknown uplink topic: {topic!r}", device_id)


def command_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/cmd"


def config_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/config"


def state_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/state"
