"""The backend's own MQTT connection (gmqtt), kept up for as long as the service runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50

from paku_iot import gmqtt_internals
from paku_iot.protocol import UplinkFilter

log = logging.getLogger("paku_iot.broker")

DeliveryHandler = Callable[[str, bytes, bool, int | None], None]
"""(topic, payload, retained, PUBACK token or None for QoS 0). The handler keeps the token
and passes it to `BrokerLink.send_pubacks` once the message is safely stored."""

# The group collectors shared before it became secret: a public name any device could join.
LEGACY_SHARED_GROUP = "paku-collector"
# A day: the broker keeps the collector's queue through any outage shorter than this.
COLLECTOR_SESSION_EXPIRY_S = 24 * 3600
# Matches the broker's max_inflight_messages: how many unacked messages may be in our hands.
RECEIVE_MAXIMUM = 1000
RECONNECT_DELAY_S = 1


@dataclass(frozen=True, slots=True)
class LinkOptions:
    host: str
    port: int
    username: str
    password: str
    client_id: str
    persistent_session: bool
    subscriptions: tuple[UplinkFilter, ...] = ()
    # The collectors' group (`shared_group_name`), and whether this link subscribes through
    # it (replicas) or plainly (one collector). The name is needed either way: a persistent
    # session remembers the other form from before a change, and it must be unsubscribed.
    shared_group: str | None = None
    share_subscriptions: bool = False
    # The broker's own `$SYS/...` topics this link follows (QoS 0, plain), handed to the
    # observer given to `watch_broker` rather than to the device message handler.
    broker_topics: tuple[str, ...] = ()
    keepalive_s: int = 30


class BrokerObserver(Protocol):
    def connected(self) -> None: ...
    def observe(self, topic: str, payload: bytes) -> None: ...


def shared_group_name(backend_password: str) -> str:
    """The collectors' shared subscription group, derived from the backend's broker password:
    every replica names the same group, and no device can. Mosquitto's ACL does not check
    subscriptions, so a device that knew the name could join the group and take (and drop)
    a share of every device's uplink, already acknowledged by the broker."""
    digest = hmac.new(
        backend_password.encode(), b"paku-iot collector shared group", hashlib.sha256
    ).hexdigest()
    return f"paku-collector-{digest[:32]}"


class BrokerLink:
    """One MQTT v5 client: connects in the background, retries until the broker is there,
    resubscribes on reconnect, and hands every message it receives to the handler given to
    `start`."""

    def __init__(self, options: LinkOptions) -> None:
        gmqtt_internals.require_compatible_gmqtt()
        self._options = options
        properties: dict[str, Any] = {"receive_maximum": RECEIVE_MAXIMUM}
        if options.persistent_session:
            properties["session_expiry_interval"] = COLLECTOR_SESSION_EXPIRY_S
        self._client = Client(
            options.client_id,
            # A persistent session from the very first connect: messages published while the
            # collector is away are queued for it by the broker.
            clean_session=not options.persistent_session,
            optimistic_acknowledgement=False,
            **properties,
        )
        self._client.set_auth_credentials(options.username, options.password)
        self._client.set_config(
            {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": RECONNECT_DELAY_S}
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._handler: DeliveryHandler | None = None
        self._subscribed = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._stopping = False
        self._ever_lost = False
        self._session_present = False
        self._observer: BrokerObserver | None = None
        # Bumped on every connect and disconnect. A packet id names a message only on the
        # connection that delivered it: a PUBACK for an older connection must never be sent
        # on a newer one, where the same id may name a message not yet stored.
        self._generation = 0
        self.last_error: str | None = None

    @property
    def client_id(self) -> str:
        return self._options.client_id

    @property
    def shared_group(self) -> str | None:
        return self._options.shared_group

    @property
    def connected(self) -> bool:
        try:
            return bool(self._client.is_connected)
        except AttributeError:  # no connection object before the first attempt
            return False

    @property
    def session_present(self) -> bool:
        """The broker had a session for our client id at the last connect (CONNACK)."""
        return self._session_present

    @property
    def ready(self) -> bool:
        """Connected, and (for a collector) the broker has confirmed our subscriptions."""
        if not self._options.subscriptions:
            return self.connected
        return self.connected and self._subscribed.is_set()

    def start(self, handler: DeliveryHandler | None = None) -> None:
        """Connect in the background and from then on hand every message received to
        `handler` (None: this link only publishes).

        The handler comes here rather than to the constructor because whoever takes the
        messages (the collector's intake) needs this link to be built first: it sends the
        PUBACKs and pauses reading through it. Nothing can arrive before `start` connects.
        """
        if handler is not None:
            self._handler = handler
            self._client.on_message = self._on_qos0_message
            # gmqtt acknowledges a QoS 1 message when its (async) handler returns: one task and
            # one socket write per message. We take QoS 1 delivery over instead, so that a
            # whole committed batch is acknowledged in a single write (see `send_pubacks`).
            gmqtt_internals.take_over_qos1_delivery(self._client, self._on_qos1_publish)
        self._connector = asyncio.create_task(self._connect_until_up(), name="mqtt-connect")

    def watch_broker(self, observer: BrokerObserver) -> None:
        """Hand the broker's `$SYS` messages (LinkOptions.broker_topics) to `observer`."""
        self._observer = observer

    async def _connect_until_up(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._client.connect(
                    self._options.host,
                    self._options.port,
                    keepalive=self._options.keepalive_s,
                    version=MQTTv50,
                )
                return
            except Exception as exc:  # gmqtt raises OSError or its own connect errors
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "cannot connect to the broker at %s:%d (%s), retrying in %.1fs",
                    self._options.host,
                    self._options.port,
                    self.last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _on_connect(self, client: Client, flags: int, _rc: int, _props: Any) -> None:
        self._generation += 1
        self._session_present = bool(flags)
        self.last_error = None
        log.info(
            "connected to the broker at %s:%d as %s",
            self._options.host,
            self._options.port,
            self._options.client_id,
        )
        if self._observer is not None:
            self._observer.connected()
        if self._options.subscriptions:
            # One SUBSCRIBE, so one SUBACK says when all of it holds (`ready`).
            client.subscribe(
                [self._subscription(f) for f in self._options.subscriptions]
                + [Subscription(topic, qos=0) for topic in self._options.broker_topics]
            )
            # A persistent session remembers the other form from before a change of
            # `collector_shared_subscription`; keeping both would deliver everything twice.
            client.unsubscribe(
                [other for f in self._options.subscriptions for other in self._other_forms(f)]
            )

    def _sharing_group(self) -> str | None:
        return self._options.shared_group if self._options.share_subscriptions else None

    def _subscription(self, uplink: UplinkFilter) -> Subscription:
        topic = uplink.topic_filter
        group = self._sharing_group()
        if group:
            topic = f"$share/{group}/{topic}"
        return Subscription(
            topic,
            qos=1,
            # MQTT v5 retain handling: 0 = send retained messages on subscribe, 2 = never.
            retain_handling_options=0 if uplink.replay_retained else 2,
        )

    def _other_forms(self, uplink: UplinkFilter) -> list[str]:
        """The forms of this filter the session may hold from an earlier configuration."""
        sharing = self._sharing_group()
        groups = {LEGACY_SHARED_GROUP, self._options.shared_group or LEGACY_SHARED_GROUP}
        others = [f"$share/{g}/{uplink.topic_filter}" for g in sorted(groups) if g != sharing]
        if self._sharing_group():
            others.append(uplink.topic_filter)
        return others

    def _on_subscribe(self, _client: Client, _mid: int, granted: Any, _props: Any) -> None:
        if any(code >= 0x80 for code in granted):
            log.error("the broker refused a subscription (reason codes %s)", list(granted))
            return
        self._subscribed.set()

    def _on_disconnect(self, _client: Client, _packet: Any, _exc: Any = None) -> None:
        self._generation += 1
        self._subscribed.clear()
        if not self._stopping:
            self._ever_lost = True
        if not self._stopping:
            log.warning("lost the broker connection, reconnecting")

    def _on_qos0_message(
        self,
        _client: Client,
        topic: str | bytes,
        payload: bytes,
        _qos: int,
        properties: dict[str, Any],
    ) -> None:
        """A QoS 0 message (state may come that way, and the broker's `$SYS` topics): no
        PUBACK to send. QoS 1 messages go to `_on_qos1_publish`."""
        assert self._handler is not None
        text = _text(topic)
        if text.startswith("$SYS/"):
            if self._observer is not None:
                self._observer.observe(text, payload)
            return
        self._handler(text, payload, bool(properties.get("retain")), None)

    def _on_qos1_publish(
        self, mid: int, payload: bytes, topic: str | bytes, properties: dict[str, Any]
    ) -> None:
        assert self._handler is not None
        token = self._generation << 16 | mid
        self._handler(_text(topic), payload, bool(properties.get("retain")), token)

    def send_pubacks(self, tokens: Iterable[int]) -> None:
        """Send the PUBACKs for stored messages, all in one write. Tokens from an earlier
        connection are dropped: the broker delivers those messages again, and the duplicate
        is absorbed by the database (the device `ts` is the key)."""
        generation = self._generation
        gmqtt_internals.write_pubacks(
            self._client, (token & 0xFFFF for token in tokens if token >> 16 == generation)
        )

    def _transport(self) -> asyncio.Transport | None:
        """The socket of the current connection while it is open."""
        return gmqtt_internals.open_transport(self._client)

    def pause_reading(self) -> None:
        """Stop taking packets from the broker (TCP backpressure) until `resume_reading`."""
        gmqtt_internals.pause_reading(self._client)

    def resume_reading(self) -> None:
        gmqtt_internals.resume_reading(self._client)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def unsubscribe(self, topic_filters: list[str]) -> None:
        self._client.unsubscribe(topic_filters)

    async def stop(self, *, end_session: bool = False) -> None:
        """Disconnect for good. `end_session`: the broker drops our session (and whatever
        it still queues for it) instead of keeping it for the next connect."""
        self._stopping = True
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        # Also when not (yet) connected: a connect cut short by this stop may have opened a
        # socket already, and only disconnect() closes it.
        if gmqtt_internals.has_connection(self._client):
            ending = {"session_expiry_interval": 0} if end_session else {}
            with contextlib.suppress(Exception):
                await self._client.disconnect(**ending)
        if self._ever_lost:
            await self._outlast_reconnects()

    async def _outlast_reconnects(self) -> None:
        """gmqtt's reconnect tasks sleep `reconnect_delay` and then connect without checking
        whether the client was stopped meanwhile. After a connection was lost, wait them out
        and close whatever they open, rather than leave a socket behind or a task to cancel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECONNECT_DELAY_S + 0.5
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            self._close_stray_connection()

    def _close_stray_connection(self) -> None:
        transport = self._transport()
        if transport is not None:
            transport.close()


def _text(topic: str | bytes) -> str:
    """gmqtt hands over a topic that is not UTF-8 as bytes (Mosquitto refuses those, but the
    parser must get text whatever the broker lets through): it is then rejected as invalid."""
    if isinstance(topic, bytes):
        return topic.decode("utf-8", "replace")
    return topic
