"""Noticing that the broker dropped messages it had already acknowledged to devices.

Mosquitto queues messages for a persistent session that is away or behind (the collector's)
up to `max_queued_messages`; past that it discards them, although it has PUBACKed each one to
its device. It says so only in its log, which another container cannot read, and in the
counter `$SYS/broker/publish/messages/dropped` (messages dropped since the broker started,
published every `sys_interval`), which the collector subscribes to on the backend listener.

The counter is broker-wide: a device's own queue (commands for a device away for long)
overflowing counts too, though that takes far more than a device is ever sent. Drops happen
mostly while the collector is away, so the first value after a (re)connect counts in full:
what the broker dropped since it started, possibly reported once more by a process that
started after another had seen it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from paku_iot.broker.files import BROKER_DROPPED_TOPIC
from paku_iot.collector.stats import IngestStats

log = logging.getLogger("paku_iot.collector")

# How long /health says "degraded" after the last drop seen: long enough to be noticed by a
# check every few minutes, short enough that a fixed cause clears it by itself.
DEGRADED_FOR = timedelta(hours=1)


class BrokerDropWatch:
    def __init__(
        self, stats: IngestStats, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._stats = stats
        self._now = now
        self._last: int | None = None

    def connected(self) -> None:
        """A new connection: the next value is a new baseline (the broker may have restarted,
        and its counter with it)."""
        self._last = None

    def observe(self, topic: str, payload: bytes) -> None:
        if topic != BROKER_DROPPED_TOPIC:
            return
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.warning("unreadable %s from the broker: %r", BROKER_DROPPED_TOPIC, payload[:40])
            return
        previous = self._last
        self._last = value
        # First value on this connection, or the broker restarted (its counter went back):
        # everything it reports is new to us.
        new = value if previous is None or value < previous else value - previous
        if new <= 0:
            return
        self._stats.broker_dropped += new
        self._stats.broker_dropped_at = self._now()
        log.error(
            "the broker dropped %d messages%s that it had already acknowledged to their "
            "senders: a subscriber's queue (most likely the collector's, while it was away or "
            "behind) was full (max_queued_messages). Those messages are lost; see "
            'docs/reliability.md, "When the collector falls behind"',
            new,
            " since it started" if previous is None else "",
        )

    def degraded_reason(self) -> str | None:
        at = self._stats.broker_dropped_at
        if at is None or self._now() - at > DEGRADED_FOR:
            return None
        return (
            f"the broker dropped {self._stats.broker_dropped} acknowledged messages "
            f"(the last at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}): a subscriber's queue was full"
        )
