"""Emptying the broker session a collector left under its former client id.

Until the backend had a listener of its own, a collector connected as
`paku-collector-<instance>`, an id a device could also ask for. It now connects as
`paku.collector.<instance>`, which no device id can be. The broker still keeps the old
session, subscribed to every device's uplink: whatever devices published between the old
collector's last disconnect and the new one's first subscribe is queued there alone, and it
goes on queueing a copy of everything until the session expires a day later. Once, at start,
the collector takes that session over on the backend listener, unsubscribes it, stores what
it had queued as it stores anything (acknowledging only what is committed; what the new
session also received is absorbed by the database as a duplicate), and ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from paku_iot.broker.link import LEGACY_SHARED_GROUP, BrokerLink, LinkOptions
from paku_iot.collector.intake import Intake
from paku_iot.collector.writer import BatchWriter
from paku_iot.protocol import uplink_subscriptions

log = logging.getLogger("paku_iot.collector")

# The broker sends a session's queue at once on connect: this long without a message, with
# everything received committed and acknowledged, means the queue is empty.
IDLE_S = 1.0
# A bound on the take-over. A queue not emptied by then stays (with its session) for the
# next start: ending the session would drop what it still holds.
DRAIN_LIMIT_S = 300.0


def legacy_client_id(session_name: str) -> str:
    return f"paku-collector-{session_name}"


PartsFactory = Callable[[BrokerLink], tuple[BatchWriter[int], Intake]]


async def empty_legacy_session(options: LinkOptions, parts: PartsFactory) -> int:
    """Take over the session of `options.client_id` (a persistent one, no subscriptions of
    its own), store what it holds, end it. Returns how many messages were taken. Runs in the
    background next to the collector: it waits for the broker as long as it takes, and a
    cancel (the service stopping) keeps the session for the next start."""
    link = BrokerLink(options)
    writer, intake = parts(link)
    received = 0

    def handle(topic: str, payload: bytes, retained: bool, puback: int | None) -> None:
        nonlocal received
        received += 1
        intake.handle(topic, payload, retained, puback)

    writer_task = asyncio.create_task(writer.run(intake.committed), name="legacy-session-writer")
    link.start(handle)
    emptied = False
    try:
        loop = asyncio.get_running_loop()
        while not link.connected:  # noqa: ASYNC110 - the link has no event for it
            await asyncio.sleep(0.05)
        if not link.session_present:
            emptied = True  # the broker made an empty session for this connect: end it
            return 0
        log.warning(
            "the broker holds a session of this collector under its former client id %s: "
            "storing what it queued, then ending it",
            options.client_id,
        )
        link.unsubscribe(
            [
                form
                for uplink in uplink_subscriptions()
                for form in (
                    uplink.topic_filter,
                    f"$share/{LEGACY_SHARED_GROUP}/{uplink.topic_filter}",
                )
            ]
        )
        stop_at = loop.time() + DRAIN_LIMIT_S
        last_seen, idle_since = -1, loop.time()
        while loop.time() < stop_at and link.connected:
            await asyncio.sleep(0.1)
            if received != last_seen or writer.backlog:
                last_seen, idle_since = received, loop.time()
            elif loop.time() - idle_since >= IDLE_S:
                emptied = True
                break
        log.warning(
            "took %d messages from the former session %s%s",
            received,
            options.client_id,
            "" if emptied else "; it is not empty yet and is kept for the next start",
        )
        return received
    finally:
        await link.stop(end_session=emptied)
        writer.stop()
        await writer_task
