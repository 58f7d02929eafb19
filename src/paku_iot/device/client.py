"""The reference device: docs/protocol.md as running code.

A paku device's life on MQTT, in the order this class does it:

1. CONNECT (MQTT 5) with client id = username = device id, the provisioning password, a
   keepalive of 30-60 s, clean start = 0 with a Session Expiry Interval (a persistent
   session: QoS 1 commands sent while the device is offline wait in the broker), and the Last
   Will `{"online": false}` on `paku/<id>/state`, retained, QoS 1.
2. After CONNACK, SUBSCRIBE to `paku/<id>/cmd` and `paku/<id>/config` at QoS 1. Again after
   every reconnect: it is harmless with a kept session and required without one.
3. PUBLISH the full state, retained, QoS 1:
   `{"online": true, "rssi": -60, "fwVersion": "1.0.0", "configVersion": 0}`.
   The retained copy is whatever was published last (maybe the Will), so it is sent in full
   after every connect, and again whenever a value changes.
4. Uplink at QoS 1 without retain: telemetry on `paku/<id>/telemetry` and events on
   `paku/<id>/event/<name>`, each with its own `ts` in epoch milliseconds.
5. Downlink: a `cmd` is answered on `paku/<id>/event/ack`; a `config` whose version differs
   from the applied one is applied, and step 3 is repeated with the new `configVersion`.
6. Before a deliberate disconnect, PUBLISH the full state with `"online": false` (retained),
   then DISCONNECT: a clean DISCONNECT does not fire the Will. Losing the network without
   DISCONNECT makes the broker publish the Will after 1.5 x keepalive (at once if the socket
   is seen closing).

Received QoS 1 messages are acknowledged (PUBACK) only after they have been handled: a
command's ack event is already queued when the broker learns the command was delivered, and a
command interrupted by a disconnect is delivered again with the next session.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gmqtt import Client, Message, Subscription
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50
from gmqtt.storage import PersistentStorage

from paku_iot.device.messages import (
    Command,
    DeviceTopics,
    InvalidCommand,
    check_state_fields,
    check_ts_ms,
    encode_payload,
    now_ms,
    parse_command,
    parse_config,
)

log = logging.getLogger("paku_iot.device")

T = TypeVar("T")

CommandHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""`async (params) -> result`: the result (any JSON value) becomes the ack's `result`."""

ConfigHandler = Callable[[dict[str, Any], int], Awaitable[None]]
"""`async (config, version) -> None`: raise to refuse the configuration (it is then not
reported as applied, and the retained copy is offered again on the next connect)."""

# MQTT 5 reason codes this module looks at.
PUBACK_SUCCESS = 0
SESSION_TAKEN_OVER = 0x8E
FIRST_FAILURE_CODE = 0x80

DEFAULT_SESSION_EXPIRY_S = 3600
DEFAULT_REMEMBERED_COMMANDS = 256


class CommandError(Exception):
    """Raised by a command handler to answer `{"ok": false, "error": <message>}`.

    Any other exception is answered the same way (its message, or its type name when it has
    none) but is also logged with its traceback, as a bug rather than a refusal."""


class DeviceConnectError(ConnectionError):
    """The device could not connect. `reason_code` is the CONNACK reason when the broker
    answered (0x86 bad user name or password, 0x87 not authorised), else None (no broker,
    timeout). Firmware retries with backoff: 5 s doubling to 5 min."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    id: str
    name: str


class _AckTrackingStorage(PersistentStorage):  # type: ignore[misc]  # gmqtt has no stubs
    """gmqtt's store of unacknowledged outgoing QoS 1 messages, extended so that a publisher
    can wait for the PUBACK of its own message. gmqtt keeps each message until PUBACK and
    sends it again after a reconnect into the same session; the waiter then resolves on the
    PUBACK of the resent copy. Each waiter resolves True when acknowledged, False when the
    broker started a new session and gmqtt dropped what was pending."""

    def __init__(self) -> None:
        super().__init__()
        self._last_mid: int | None = None
        self._waiters: dict[int, asyncio.Future[bool]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self._last_mid = mid

    def waiter_for_last(self) -> asyncio.Future[bool]:
        """The PUBACK waiter of the message just published (gmqtt's publish does not return
        its packet id, but stores the message synchronously, so the last id pushed is it)."""
        assert self._last_mid is not None
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[self._last_mid] = waiter
        return waiter

    def forget(self, waiter: asyncio.Future[bool]) -> None:
        for mid, known in list(self._waiters.items()):
            if known is waiter:
                del self._waiters[mid]

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        waiter = self._waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def clear(self) -> None:
        super().clear()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(False)
        self._waiters.clear()


class ReferenceDevice:
    """One paku device speaking docs/protocol.md over MQTT 5 (gmqtt).

    Usage::

        device = ReferenceDevice("127.0.0.1", 1883, "kitchen-01", password)
        device.on_command("ping", ping)          # async (params) -> result
        await device.connect()                   # steps 1-3 of the module docstring
        await device.send_telemetry({"temp": 21.5})
        await device.disconnect()                # step 6

    After a lost connection gmqtt reconnects every `reconnect_delay_s`, and each reconnect
    repeats steps 2-3. A refused reconnect (credentials replaced or device deleted) stops the
    retries; so does a session takeover (another client connected with this device id).

    For tests: `commands_received` lists every command delivery (redeliveries included),
    `commands_executed` the handler runs, and `wait_for` awaits any condition on them or on
    `config_version` without sleeping.
    """

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        password: str,
        *,
        fw_version: str = "1.0.0",
        keepalive: int = 30,
        rssi: int = -60,
        on_config: ConfigHandler | None = None,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        reconnect_delay_s: float = 5.0,
        ack_timeout_s: float = 10.0,
        remembered_commands: int = DEFAULT_REMEMBERED_COMMANDS,
    ) -> None:
        self.topics = DeviceTopics(device_id)
        check_state_fields(rssi, fw_version)
        if keepalive <= 0:
            # 0 disables keepalive: a dead link would never be noticed and the Will never sent.
            raise ValueError("keepalive must be positive (30-60 s recommended)")
        if session_expiry_s <= 0:
            raise ValueError("session_expiry_s must be positive: 0 means no persistent session")
        self.device_id = device_id
        self.host = host
        self.port = port
        self.fw_version = fw_version
        self.rssi = rssi
        self.keepalive = keepalive
        self.on_config = on_config
        self.config: dict[str, Any] = {}
        self.config_version = 0
        self.commands_received: list[ReceivedCommand] = []
        self.commands_executed: list[ReceivedCommand] = []

        self._ack_timeout_s = ack_timeout_s
        self._handlers: dict[str, CommandHandler] = {}
        # Recent command ids and their answer (the exact ack bytes; None while running or when
        # interrupted), so a redelivered command is answered again without running again.
        self._answers: OrderedDict[str, asyncio.Future[bytes | None]] = OrderedDict()
        self._remembered_commands = remembered_commands
        self._config_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._closing = False
        self._last_telemetry_ts = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._after_connect_task: asyncio.Task[None] | None = None
        self._user_tasks: set[asyncio.Task[Any]] = set()
        self._message_tasks: set[asyncio.Task[Any]] = set()
        self._suback_waiters: dict[int, asyncio.Future[list[int]]] = {}

        self._storage = _AckTrackingStorage()
        self._client = Client(
            device_id,
            # MQTT 5 "clean start = 0": resume the session the broker kept for this client id.
            clean_session=False,
            # PUBACK only once our handler returned, not on receipt (see module docstring).
            optimistic_acknowledgement=False,
            will_message=Message(
                self.topics.state, encode_payload({"online": False}), qos=1, retain=True
            ),
            persistent_storage=self._storage,
            session_expiry_interval=session_expiry_s,
        )
        self._client.set_auth_credentials(device_id, password)
        self._client.set_config(
            {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": reconnect_delay_s}
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---- registration and state -------------------------------------------------------

    def on_command(self, name: str, handler: CommandHandler) -> None:
        """Run `handler(params)` for commands named `name`; replaces an earlier handler."""
        self._handlers[name] = handler

    def state(self, *, online: bool = True) -> dict[str, Any]:
        """The full state document (section 4): every key, every time, because the broker
        keeps only the last retained message."""
        return {
            "online": online,
            "rssi": self.rssi,
            "fwVersion": self.fw_version,
            "configVersion": self.config_version,
        }

    @property
    def connected(self) -> bool:
        """Connected, subscribed, and the online state acknowledged by the broker."""
        return self._ready.is_set() and self._link_up()

    async def update_state(self, *, rssi: int | None = None, fw_version: str | None = None) -> None:
        """Change rssi and/or fwVersion (None = unchanged) and publish the full state again."""
        check_state_fields(rssi, fw_version)
        if rssi is not None:
            self.rssi = rssi
        if fw_version is not None:
            self.fw_version = fw_version
        await self._publish_state(online=True)

    # ---- connecting -----------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Connect, subscribe to cmd and config, publish the online state (steps 1-3).

        Returns once the broker has acknowledged the state. Raises DeviceConnectError when the
        broker refuses the credentials, cannot be reached, or does not answer in `timeout`.
        """
        if self.connected:
            return
        self._closing = False
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(
                    self.host, self.port, keepalive=self.keepalive, version=MQTTv50
                )
                await self._ready.wait()
        except Exception as exc:  # OSError, gmqtt's MQTTConnectError, TimeoutError
            self._closing = True
            await self._close_link()
            reason = getattr(exc, "_code", None)  # gmqtt's MQTTConnectError keeps it there
            detail = str(exc) or type(exc).__name__
            raise DeviceConnectError(
                f"{self.device_id} cannot connect to {self.host}:{self.port}: {detail}",
                reason if isinstance(reason, int) else None,
            ) from exc
        log.info("%s online at %s:%d", self.device_id, self.host, self.port)

    def _on_connect(self, _client: Any, session_present: int, _rc: int, _props: Any) -> None:
        log.info(
            "%s: CONNACK (session present: %s); subscribing", self.device_id, bool(session_present)
        )
        if self._after_connect_task is not None:
            self._after_connect_task.cancel()
        # A task, not inline: when the session is resumed, gmqtt first resends the messages
        # still waiting for PUBACK (scheduled just before this callback), and our state must
        # follow them rather than overtake them.
        self._after_connect_task = asyncio.create_task(
            self._after_connect(), name=f"paku-device-{self.device_id}-connect"
        )

    async def _after_connect(self) -> None:
        # Step 2. gmqtt only ever appends to its subscription list; we subscribe afresh on each
        # connect, so the list is reset to keep it from growing.
        self._client.subscriptions.clear()
        mid = self._client.subscribe(
            [Subscription(self.topics.cmd, qos=1), Subscription(self.topics.config, qos=1)]
        )
        waiter: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._suback_waiters[mid] = waiter
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                granted = await waiter
        except TimeoutError:
            log.error("%s: no SUBACK from the broker", self.device_id)
            return
        finally:
            self._suback_waiters.pop(mid, None)
        if any(code >= FIRST_FAILURE_CODE for code in granted):
            # Mosquitto grants every SUBSCRIBE and filters by ACL when delivering (section 5),
            # so this only happens with another broker.
            log.error("%s: subscriptions refused (reason codes %s)", self.device_id, granted)
        # Step 3: the retained state now says online, with everything else we know.
        try:
            await self._publish_state(online=True)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("%s: online state not acknowledged: %s", self.device_id, exc)
            return
        self._ready.set()
        self._notify()

    def _on_subscribe(self, _client: Any, mid: int, granted: Any, _props: Any) -> None:
        waiter = self._suback_waiters.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result([int(code) for code in granted])

    def _on_disconnect(self, client: Any, packet: Any, _exc: Any = None) -> None:
        self._ready.clear()
        if self._after_connect_task is not None:
            self._after_connect_task.cancel()
        if isinstance(packet, bytes | bytearray) and packet[:1] == bytes([SESSION_TAKEN_OVER]):
            # Another connection with our client id replaced us. Reconnecting would take the
            # session back and start a tug of war between the two; stop instead.
            log.error(
                "%s: another client connected with this client id; not reconnecting",
                self.device_id,
            )
            client._is_active = False  # gmqtt checks this flag before every reconnect
        elif self._closing:
            log.info("%s: disconnected", self.device_id)
        else:
            log.warning("%s: lost the connection to the broker; gmqtt reconnects", self.device_id)
        self._notify()

    # ---- disconnecting --------------------------------------------------------------

    async def disconnect(self, *, graceful: bool = True) -> None:
        """Leave the broker (step 6). Safe to call when already disconnected.

        graceful=True publishes the full state with `"online": false` (retained) and waits for
        its PUBACK before DISCONNECT. graceful=False sends DISCONNECT alone, which leaves the
        retained state saying `"online": true`: the mistake section 4 warns about. To simulate
        a network loss (the broker then publishes the Will), use `drop()`.
        """
        self._closing = True
        if self._link_up():
            if graceful:
                try:
                    await self._publish_state(online=False)
                except (ConnectionError, TimeoutError) as exc:
                    log.warning("%s: offline state not acknowledged: %s", self.device_id, exc)
            # gmqtt's disconnect also stops its reconnects.
            await self._client.disconnect()
        await self._close_link()

    async def drop(self) -> None:
        """Simulate losing the network: close the socket without DISCONNECT and do not
        reconnect. The broker sees the socket close and publishes the Last Will. A later
        `connect()` resumes the same session (queued commands are delivered then)."""
        self._closing = True
        self._client._is_active = False  # before the socket closes: no automatic reconnect
        connection = self._client._connection
        if connection is not None and not connection.is_closing():
            log.info("%s: dropping the connection without DISCONNECT", self.device_id)
            connection._transport.abort()
        await self._close_link()

    async def _close_link(self) -> None:
        """Make sure the socket is closed and nothing of ours still runs for it.

        Handlers still running are cancelled after the socket is closed, so no PUBACK can
        reach the broker for their commands: the broker delivers them again next session.
        """
        self._client._is_active = False
        connection = self._client._connection
        if connection is not None:
            # Also cancels gmqtt's keepalive timer; returns once the socket is closed.
            await connection.close()
        self._ready.clear()
        tasks: set[asyncio.Task[Any]] = set(self._user_tasks)
        if self._after_connect_task is not None:
            tasks.add(self._after_connect_task)
            self._after_connect_task = None
        for task in tasks:
            task.cancel()
        pending = tasks | self._message_tasks
        if pending:
            await asyncio.wait(pending, timeout=self._ack_timeout_s)
        self._notify()

    # ---- uplink ---------------------------------------------------------------------

    async def send_telemetry(
        self, values: Mapping[str, Any], ts_ms: int | None = None
    ) -> dict[str, Any]:
        """Publish telemetry (QoS 1, not retained) and wait for the broker's PUBACK.

        `ts` is `ts_ms`, else a `ts` already in `values` (e.g. an RFC 3339 string), else now.
        Generated timestamps are strictly increasing: the backend keeps one telemetry row per
        (device, ts), so two samples in one millisecond would lose the second.
        Returns the document sent.
        """
        document = dict(values)
        if ts_ms is None and "ts" not in document:
            ts_ms = max(now_ms(), self._last_telemetry_ts + 1)
            self._last_telemetry_ts = ts_ms
        if ts_ms is not None:
            check_ts_ms(ts_ms)
            document["ts"] = ts_ms
        await self._publish(self.topics.telemetry, encode_payload(document))
        return document

    async def send_event(
        self, name: str, values: Mapping[str, Any] | None = None, ts_ms: int | None = None
    ) -> dict[str, Any]:
        """Publish an event on `paku/<id>/event/<name>` (QoS 1, not retained), `ts` as for
        telemetry (events of one name with equal ts are kept if their payloads differ)."""
        document = dict(values or {})
        if ts_ms is None and "ts" not in document:
            ts_ms = now_ms()
        if ts_ms is not None:
            check_ts_ms(ts_ms)
            document["ts"] = ts_ms
        await self._publish(self.topics.event(name), encode_payload(document))
        return document

    async def _publish_state(self, *, online: bool) -> None:
        await self._publish(
            self.topics.state, encode_payload(self.state(online=online)), retain=True
        )

    def _link_up(self) -> bool:
        return self._client._connection is not None and bool(self._client.is_connected)

    def _publish_nowait(
        self, topic: str, payload: bytes, *, retain: bool = False
    ) -> asyncio.Future[bool]:
        if not self._link_up():
            raise ConnectionError(f"{self.device_id} is not connected")
        self._client.publish(topic, payload, qos=1, retain=retain)
        return self._storage.waiter_for_last()

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK. It means the broker has the message, not
        that the backend accepted it (rejections are never reported to the device).

        gmqtt does not report the PUBACK reason code, so a publish the ACL denies (0x87)
        looks acknowledged here; this device only publishes to its own topics."""
        waiter = self._publish_nowait(topic, payload, retain=retain)
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                acknowledged = await asyncio.shield(waiter)
        except TimeoutError:
            self._storage.forget(waiter)
            raise TimeoutError(
                f"no PUBACK for {topic} within {self._ack_timeout_s}s"
                " (gmqtt keeps the message and resends it after a reconnect)"
            ) from None
        if not acknowledged:
            raise ConnectionError(f"the broker started a new session; {topic} message dropped")

    # ---- downlink -------------------------------------------------------------------

    async def _on_message(
        self, _client: Any, topic: str, payload: bytes, _qos: int, properties: dict[str, Any]
    ) -> int:
        task = asyncio.current_task()
        if task is not None:
            self._message_tasks.add(task)
        try:
            if topic == self.topics.cmd:
                await self._handle_command(payload)
            elif topic == self.topics.config:
                await self._handle_config(payload, retained=bool(properties.get("retain")))
            else:
                log.warning("%s: unexpected message on %s", self.device_id, topic)
        except Exception:
            # A bug here must not turn into endless redelivery of the same message.
            log.exception("%s: error handling a message on %s", self.device_id, topic)
        finally:
            if task is not None:
                self._message_tasks.discard(task)
        return PUBACK_SUCCESS  # gmqtt sends the PUBACK now that the message is handled

    async def _run_guarded(self, awaitable: Awaitable[T]) -> asyncio.Task[T]:
        """Run user code in a task of its own and wait for it without propagating its
        cancellation: `_close_link` cancels these, never gmqtt's message tasks (gmqtt would
        then try to read a PUBACK code from a cancelled task)."""

        async def run() -> T:
            return await awaitable

        task = asyncio.create_task(run())
        self._user_tasks.add(task)
        task.add_done_callback(self._user_tasks.discard)
        await asyncio.wait({task})
        return task

    async def _handle_command(self, payload: bytes) -> None:
        """Answer one `cmd` message on `paku/<id>/event/ack` (section 8).

        - Not JSON, not an object, or no string `id`: ignored (there is nobody to answer).
        - Already answered id (a redelivery or a retry by the backend): the same ack bytes
          again, same `ts` included, so the backend stores the ack once; not run again.
        - `expiresAt` in the past: `{"ok": false, "error": "expired"}`, not run.
        - Unknown name: `{"ok": false, "error": "unknown command: <name>"}`.
        - Otherwise the handler runs: `{"ok": true, "result": ...}` or the error message.
        """
        command: Command | None = None
        try:
            command = parse_command(payload)
            command_id = command.id
        except InvalidCommand as exc:
            if exc.command_id is None:
                log.warning("%s: ignoring a malformed command: %s", self.device_id, exc)
                return
            command_id = exc.command_id
            invalid: InvalidCommand | None = exc
        else:
            invalid = None
            self.commands_received.append(ReceivedCommand(command.id, command.name))
            self._notify()

        remembered = self._answers.get(command_id)
        if remembered is not None:
            self._answers.move_to_end(command_id)
            log.info(
                "%s: command %s delivered again; answering as before", self.device_id, command_id
            )
            previous = await remembered
            if previous is not None:
                self._send_ack(previous)
            return

        remembered = asyncio.get_running_loop().create_future()
        self._answers[command_id] = remembered
        while len(self._answers) > self._remembered_commands:
            self._answers.popitem(last=False)
        answer: bytes | None = None
        try:
            if invalid is not None:
                log.warning("%s: command %s: %s", self.device_id, command_id, invalid)
                answer = self._encode_ack({"id": command_id, "ok": False, "error": str(invalid)})
            else:
                assert command is not None
                body = await self._execute(command)
                answer = None if body is None else self._encode_ack(body)
        finally:
            if answer is None and self._answers.get(command_id) is remembered:
                # Interrupted by a disconnect: forget the id, so that the redelivery (the
                # PUBACK never left) runs the command.
                del self._answers[command_id]
            remembered.set_result(answer)
        if answer is not None:
            self._send_ack(answer)

    async def _execute(self, command: Command) -> dict[str, Any] | None:
        """The ack body for `command` (without `ts`), or None when interrupted."""
        if command.expired():
            log.info(
                "%s: command %s (%s) expired; not run", self.device_id, command.id, command.name
            )
            return {"id": command.id, "ok": False, "error": "expired"}
        handler = self._handlers.get(command.name)
        if handler is None:
            log.warning("%s: unknown command %r", self.device_id, command.name)
            return {"id": command.id, "ok": False, "error": f"unknown command: {command.name}"}
        log.info("%s: running command %s (%s)", self.device_id, command.id, command.name)
        self.commands_executed.append(ReceivedCommand(command.id, command.name))
        self._notify()
        task = await self._run_guarded(handler(command.params))
        if task.cancelled():
            return None
        error = task.exception()
        if error is None:
            return {"id": command.id, "ok": True, "result": task.result()}
        if isinstance(error, CommandError):
            log.info("%s: command %s failed: %s", self.device_id, command.id, error)
        else:
            log.error(
                "%s: command %s (%s) raised",
                self.device_id,
                command.id,
                command.name,
                exc_info=error,
            )
        return {"id": command.id, "ok": False, "error": str(error) or type(error).__name__}

    def _encode_ack(self, body: dict[str, Any]) -> bytes:
        body = {**body, "ts": now_ms()}
        try:
            return encode_payload(body)
        except ValueError as exc:  # a handler returned something JSON cannot carry
            log.error("%s: command %s: result not sendable: %s", self.device_id, body["id"], exc)
            return encode_payload(
                {
                    "id": body["id"],
                    "ok": False,
                    "error": f"result not sendable: {exc}",
                    "ts": body["ts"],
                }
            )

    def _send_ack(self, answer: bytes) -> None:
        # Not waiting for the PUBACK: gmqtt keeps the ack and resends it after a reconnect, and
        # the command's own PUBACK follows the ack on the same connection.
        try:
            self._publish_nowait(self.topics.ack, answer)
        except ConnectionError:
            log.warning("%s: offline, ack not sent (the command comes again)", self.device_id)

    async def _handle_config(self, payload: bytes, *, retained: bool) -> None:
        """Apply a `config` message when its version differs from the applied one (section 8),
        then publish the full state with the new `configVersion`."""
        try:
            update = parse_config(payload)
        except ValueError as exc:
            log.warning("%s: ignoring an invalid config: %s", self.device_id, exc)
            return
        if update is None:
            # The backend cleared the retained config; there is nothing to apply.
            log.info("%s: config cleared; keeping version %d", self.device_id, self.config_version)
            return
        # Configs are applied one at a time, in the order they arrived.
        async with self._config_lock:
            if update.version == self.config_version:
                log.debug("%s: config version %d already applied", self.device_id, update.version)
                return
            if self.on_config is not None:
                task = await self._run_guarded(self.on_config(update.config, update.version))
                if task.cancelled():
                    return
                if task.exception() is not None:
                    log.error(
                        "%s: config version %d refused: %s",
                        self.device_id,
                        update.version,
                        task.exception(),
                    )
                    return
            log.info(
                "%s: applied config version %d (%s)",
                self.device_id,
                update.version,
                "retained" if retained else "live",
            )
            self.config = update.config
            self.config_version = update.version
            self._notify()
        try:
            await self._publish_state(online=True)
        except (ConnectionError, TimeoutError) as exc:
            # The next connect publishes the state, with this configVersion, anyway.
            log.warning("%s: state after config not acknowledged: %s", self.device_id, exc)

    # ---- waiting (tests, simulators) ------------------------------------------------

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until `predicate()` is true; it is checked after every change the device
        sees (command received or run, config applied, connected, disconnected).
        Raises TimeoutError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._waiters.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._waiters.discard(waiter)
        except TimeoutError:
            raise TimeoutError(f"{self.device_id}: condition not met within {timeout}s") from None

    async def wait_for_config(self, version: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.config_version == version, timeout)

    async def wait_for_command(self, command_id: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the command with this id has been received (not necessarily answered)."""
        await self.wait_for(
            lambda: any(c.id == command_id for c in self.commands_received), timeout
        )
