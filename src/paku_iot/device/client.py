"""The reference device: docs/protocol.md as running code.

A paku device's life on MQTT, in the order this class does it:

1. CONNECT (MQTT 5) with client id = username = device id, the provisioning password, a
   keepalive of 30-60 s, clean start = 0 with a Session Expiry Interval (a persistent
   session: QoS 1 commands sent while the device is offline wait in the broker), and the Last
   Will `{"online": false}` on `paku/<id>/state`, retained, QoS 1.
2. After CONNACK, SUBSCRIBE to `paku/<id>/cmd` and `paku/<id>/config` at QoS 1. Again after
   every reconnect: harmless with a kept session, required without one. The broker then sends
   the retained config, if any.
3. PUBLISH the full state, retained, QoS 1:
   `{"online": true, "rssi": -60, "fwVersion": "1.0.0", "configVersion": 0}`.
   The broker keeps only the last retained message (maybe the Will), so the state goes out
   in full after every connect, and again whenever a value changes.
4. Uplink at QoS 1, never retained: telemetry on `paku/<id>/telemetry` and events on
   `paku/<id>/event/<name>`, each with its own `ts` in epoch milliseconds.
5. Downlink: a `cmd` is answered on `paku/<id>/event/ack` (commands.py); a `config` whose
   version differs from the applied one is applied, then step 3 is repeated so the backend
   sees the new `configVersion`.
6. Before a deliberate disconnect, PUBLISH the full state with `"online": false` (retained),
   then DISCONNECT: a clean DISCONNECT does not fire the Will. Losing the network without
   DISCONNECT makes the broker publish the Will (at once when it sees the socket close, else
   after 1.5 x keepalive of silence).
7. Firmware updates over HTTP, reported on `paku/<id>/event/ota`, end with a restart whose
   state carries the new `fwVersion`: `update_firmware` (the steps are in ota.py). The new
   image is confirmed after its first healthy run, else rolled back; the `ota.boot_previous`
   command goes back on demand (firmware.py).

Received QoS 1 messages are acknowledged (PUBACK) only after they have been handled: a
command's ack event is already on its way when the broker learns the command was delivered,
and a command interrupted by a disconnect is delivered again in the next connection.

A lost connection is retried with backoff (`reconnect_delay_s` doubling up to
`max_reconnect_delay_s`, 5 s to 5 min by default, as section 2 asks), refusals included.

With `tls` (an `ssl.SSLContext`, from `device/tls.py`'s `client_context`) every connection,
reconnects included, is MQTT over TLS verifying the broker: its certificate chain, and that
it names `host`. The same context verifies the HTTPS server of firmware updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from gmqtt import Client, Message, Subscription
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage

from paku_iot import gmqtt_internals
from paku_iot.device.commands import (
    DEFAULT_REMEMBERED_COMMANDS,
    CommandHandler,
    CommandRunner,
    GuardedTasks,
    ReceivedCommand,
)
from paku_iot.device.firmware import FirmwareKeeper
from paku_iot.device.messages import (
    DeviceTopics,
    check_state_fields,
    check_ts_ms,
    encode_payload,
    now_ms,
    parse_config,
)
from paku_iot.device.ota import OtaUpdater
from paku_iot.device.tls import explain_tls_failure, require_verification
from paku_iot.protocol import (
    OTA_BOOT_PREVIOUS_COMMAND,
    OTA_CONFIRM_WINDOW_S,
    STATE_CONFIG_VERSION,
    STATE_FW_VERSION,
    STATE_ONLINE,
    STATE_RSSI,
)

log = logging.getLogger("paku_iot.device")

ConfigHandler = Callable[[dict[str, Any], int], Awaitable[None]]
"""`async (config, version) -> None`. Raise to refuse the configuration: it is then not
reported as applied, and the retained copy is offered again at the next connect."""

PUBACK_SUCCESS = 0
FIRST_FAILURE_CODE = 0x80  # MQTT 5 reason codes from 0x80 up are failures
DEFAULT_SESSION_EXPIRY_S = 3600
CONNECT_TIMEOUT_S = 10.0


class DeviceConnectError(ConnectionError):
    """The device could not connect. `reason_code` is the CONNACK reason when the broker
    answered (0x86 bad user name or password, 0x87 not authorised), else None (no broker,
    timeout)."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class DeviceTlsError(DeviceConnectError):
    """The TLS handshake failed: the broker's certificate did not verify (not issued by a
    trusted CA, or not naming the host connected to), or no TLS was spoken there. Retrying
    does not help until the certificate, the CA or the address changes."""


class _Client(Client):  # type: ignore[misc]  # gmqtt has no type stubs
    """gmqtt's Client without its automatic reconnect.

    gmqtt reconnects from a task of its own that sleeps, then connects without checking
    whether the application disconnected meanwhile; nothing can cancel it. The device runs
    its own reconnect loop instead (`ReferenceDevice._reconnect`)."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


class _AckTrackingStorage(PersistentStorage):  # type: ignore[misc]  # gmqtt has no type stubs
    """gmqtt's store of outgoing QoS 1 messages awaiting PUBACK, extended so that a publisher
    can wait for its own message's PUBACK.

    gmqtt keeps each message until PUBACK and sends it again after a reconnect that resumes
    the session; the waiter then resolves with the PUBACK of the resent copy. Each waiter
    resolves True when acknowledged, False when the broker started a new session and gmqtt
    dropped what was pending."""

    def __init__(self) -> None:
        super().__init__()
        self._last_mid: int | None = None
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._counted: set[int] = set()
        self.counted_acknowledged = 0
        self.on_counted: Callable[[], None] = lambda: None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self._last_mid = mid

    def waiter_for_last(self) -> asyncio.Future[bool]:
        """The PUBACK waiter of the message just published (gmqtt's publish does not return
        its packet id, but stores the message before returning: the last id pushed is it)."""
        assert self._last_mid is not None
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[self._last_mid] = waiter
        return waiter

    def count_last(self) -> None:
        """Count the PUBACK of the message just published, whenever it comes: also after
        its waiter timed out and gmqtt resent it on a resumed session."""
        assert self._last_mid is not None
        self._counted.add(self._last_mid)

    def forget(self, waiter: asyncio.Future[bool]) -> None:
        for mid, known in list(self._waiters.items()):
            if known is waiter:
                del self._waiters[mid]

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        if mid in self._counted:
            self._counted.discard(mid)
            self.counted_acknowledged += 1
            self.on_counted()
        waiter = self._waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def clear(self) -> None:
        super().clear()
        self._counted.clear()  # dropped with the old session: never acknowledged
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

    Over TLS: `ReferenceDevice("paku.example.com", 8883, ..., tls=client_context())`.

    For tests: `commands_received` lists every command delivery (redeliveries included),
    `commands_executed` every handler run, and `wait_for` awaits a condition on them, on
    `config_version` or on `connected` without sleeping. `telemetry_published` and
    `telemetry_acknowledged` count telemetry handed to the broker and PUBACKed by it.

    `firmware` (device/firmware.py) holds the two firmware slots: after an update the new
    image is confirmed by its first telemetry PUBACK within `confirm_window_s`, else rolled
    back; the `ota.boot_previous` command is handled there. `firmware.fault` is the test hook
    for a bad build (`"crash"`, `"unhealthy"`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        password: str,
        *,
        fw_version: str = "1.0.0",
        model: str | None = None,
        keepalive: int = 30,
        rssi: int = -60,
        on_config: ConfigHandler | None = None,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        reconnect_delay_s: float = 5.0,
        max_reconnect_delay_s: float = 300.0,
        ack_timeout_s: float = 10.0,
        remembered_commands: int = DEFAULT_REMEMBERED_COMMANDS,
        tls: ssl.SSLContext | None = None,
        confirm_window_s: float = OTA_CONFIRM_WINDOW_S,
    ) -> None:
        gmqtt_internals.require_compatible_gmqtt()
        if tls is not None:
            require_verification(tls)
        self.topics = DeviceTopics(device_id)
        check_state_fields(rssi, fw_version)
        if keepalive <= 0:
            # 0 turns keepalive off: a dead link would go unnoticed and the Will never fire.
            raise ValueError("keepalive must be positive (30-60 s recommended)")
        if session_expiry_s <= 0:
            raise ValueError("session_expiry_s must be positive: 0 means no persistent session")
        self.device_id = device_id
        self._password = password
        self.host = host
        self.port = port
        self.tls = tls
        self.fw_version = fw_version
        # The model the firmware is built for; OTA refuses any other model's image.
        self.model = model
        self.rssi = rssi
        self.keepalive = keepalive
        self.on_config = on_config
        self.config: dict[str, Any] = {}
        self.config_version = 0

        self._reconnect_delay_s = reconnect_delay_s
        self._max_reconnect_delay_s = max_reconnect_delay_s
        self._ack_timeout_s = ack_timeout_s
        self._commands = CommandRunner(
            device_id, remembered=remembered_commands, on_change=self._notify
        )
        self._config_code = GuardedTasks()
        self._config_lock = asyncio.Lock()
        # Connected, subscribed and the online state acknowledged.
        self._ready = asyncio.Event()
        # True from a successful connect() to disconnect()/drop(): a lost link is retried.
        self._stay_online = False
        self._last_telemetry_ts = 0
        self.telemetry_published = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._after_connect_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._message_tasks: set[asyncio.Task[Any]] = set()
        self._suback_waiters: dict[int, asyncio.Future[list[int]]] = {}

        self._storage = _AckTrackingStorage()
        # A telemetry PUBACK may be what confirms a new image (firmware.py): wake the waiters.
        self._storage.on_counted = self._notify
        # The firmware slots: a new image is confirmed after its first healthy run in
        # `confirm_window_s`, else rolled back; `ota.boot_previous` goes back on demand.
        self.firmware = FirmwareKeeper(self, confirm_window_s)
        self._commands.register(OTA_BOOT_PREVIOUS_COMMAND, self.firmware.boot_previous_command)
        self._client = _Client(
            device_id,
            # MQTT 5 "clean start = 0": resume the session the broker kept for this client id.
            clean_session=False,
            # PUBACK once our handler has returned, not on receipt (see the module docstring).
            optimistic_acknowledgement=False,
            will_message=Message(
                self.topics.state, encode_payload({STATE_ONLINE: False}), qos=1, retain=True
            ),
            persistent_storage=self._storage,
            session_expiry_interval=session_expiry_s,
        )
        self._client.set_auth_credentials(device_id, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---- commands and state -----------------------------------------------------------

    def on_command(self, name: str, handler: CommandHandler) -> None:
        """Run `handler(params)` for commands named `name` (replaces an earlier handler)."""
        self._commands.register(name, handler)

    @property
    def commands_received(self) -> list[ReceivedCommand]:
        """Every valid command delivered, in order, redeliveries included."""
        return self._commands.received

    @property
    def commands_executed(self) -> list[ReceivedCommand]:
        """Every handler run, in order."""
        return self._commands.executed

    def state(self, *, online: bool = True) -> dict[str, Any]:
        """The full state document (section 4): every key, every time."""
        return {
            STATE_ONLINE: online,
            STATE_RSSI: self.rssi,
            STATE_FW_VERSION: self.fw_version,
            STATE_CONFIG_VERSION: self.config_version,
        }

    @property
    def credentials(self) -> tuple[str, str]:
        """(username, password): the MQTT credentials, also the HTTP Basic credentials of
        the OTA manifest."""
        return self.device_id, self._password

    @property
    def telemetry_acknowledged(self) -> int:
        """Telemetry messages the broker has PUBACKed, late ones included (a PUBACK that
        came after `send_telemetry` gave up waiting, for the copy resent on reconnect)."""
        return self._storage.counted_acknowledged

    @property
    def address(self) -> str:
        """host:port, as messages name the broker."""
        return f"{self.host}:{self.port}"

    @property
    def staying_online(self) -> bool:
        """From connect() to disconnect() or drop(): the device means to be online, and a
        lost link is being retried. False while it restarts into a new image."""
        return self._stay_online

    @property
    def connected(self) -> bool:
        """Connected, subscribed, and the online state acknowledged by the broker."""
        return self._ready.is_set() and self._link_up()

    async def update_state(self, *, rssi: int | None = None, fw_version: str | None = None) -> None:
        """Change rssi and/or fwVersion (None: unchanged) and publish the full state again."""
        check_state_fields(rssi, fw_version)
        if rssi is not None:
            self.rssi = rssi
        if fw_version is not None:
            self.fw_version = fw_version
        await self._publish_state(online=True)

    # ---- connecting -----------------------------------------------------------------

    async def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Connect, subscribe to cmd and config, publish the online state (steps 1-3).

        Returns once the broker has acknowledged the state; from then on a lost connection
        is retried until `disconnect()` or `drop()`. Raises DeviceConnectError when the
        broker refuses the credentials, cannot be reached, or does not answer in `timeout`
        (the caller retries: 5 s doubling to 5 min).
        """
        if self.connected:
            return
        await self._stop_reconnecting()
        try:
            await self._connect_once(timeout)
        except DeviceConnectError:
            await self._close_link()
            raise
        self._stay_online = True
        log.info("%s online at %s%s", self.device_id, self.address, " (TLS)" if self.tls else "")
        self.firmware.connected()

    async def _connect_once(self, timeout: float) -> None:  # noqa: ASYNC109
        self._ready.clear()
        try:
            async with asyncio.timeout(timeout):
                # gmqtt passes `ssl` to asyncio's create_connection, which verifies the
                # certificate against `host`; False means plain TCP.
                await self._client.connect(
                    self.host,
                    self.port,
                    ssl=self.tls if self.tls is not None else False,
                    keepalive=self.keepalive,
                    version=MQTTv50,
                )
                await self._ready.wait()
        except Exception as exc:  # OSError, ssl.SSLError, gmqtt's MQTTConnectError, Timeout
            raise self._connect_error(exc) from exc

    def _connect_error(self, exc: Exception) -> DeviceConnectError:
        if self.tls is not None:
            tls_failure = explain_tls_failure(exc, self.address)
            if tls_failure is not None:
                return DeviceTlsError(f"{self.device_id} cannot connect: {tls_failure}")
        detail = str(exc) or type(exc).__name__
        if self.tls is not None and isinstance(exc, ConnectionResetError):
            # A plain listener resets a connection that opens with a TLS ClientHello.
            detail += " (is this a TLS port?)"
        return DeviceConnectError(
            f"{self.device_id} cannot connect to {self.address}: {detail}",
            gmqtt_internals.connect_refusal_code(exc),
        )

    def _on_connect(self, _client: Any, session_present: int, _rc: int, _props: Any) -> None:
        log.info("%s: connected (session present: %s)", self.device_id, bool(session_present))
        if self._after_connect_task is not None:
            self._after_connect_task.cancel()
        # A task, not inline: when the session is resumed, gmqtt first resends the messages
        # still waiting for PUBACK (scheduled just before this callback), and the new state
        # must follow them, not overtake them.
        self._after_connect_task = asyncio.create_task(self._after_connect())

    async def _after_connect(self) -> None:
        # Step 2. gmqtt only ever appends to its subscription list; we subscribe afresh on
        # each connect, so reset the list rather than let it grow.
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
            # so this means another broker or a broken ACL.
            log.error("%s: subscriptions refused (reason codes %s)", self.device_id, granted)
        # Step 3.
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

    def _on_disconnect(self, _client: Any, _packet: Any, _exc: Any = None) -> None:
        self._ready.clear()
        if self._after_connect_task is not None:
            self._after_connect_task.cancel()
        if not self._stay_online:
            log.info("%s: disconnected", self.device_id)
        elif self._reconnect_task is None or self._reconnect_task.done():
            # Mosquitto 2.0 closes the socket without a reason code when another client
            # connects with the same client id, so a session takeover looks like any lost
            # link: two devices sharing an id take the session from each other at each retry.
            log.warning("%s: lost the connection to the broker; reconnecting", self.device_id)
            self._reconnect_task = asyncio.create_task(self._reconnect())
        self._notify()

    async def _reconnect(self) -> None:
        delay = self._reconnect_delay_s
        while self._stay_online:
            await asyncio.sleep(delay)
            try:
                await self._connect_once(CONNECT_TIMEOUT_S)
            except DeviceConnectError as exc:
                log.warning(
                    "%s; retrying in %.1f s", exc, min(delay * 2, self._max_reconnect_delay_s)
                )
                await self._close_connection()
            else:
                if self.connected:
                    log.info("%s: reconnected", self.device_id)
                    self.firmware.connected()
                    return
            delay = min(delay * 2, self._max_reconnect_delay_s)

    async def _stop_reconnecting(self) -> None:
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def restart(self, *, fw_version: str | None = None) -> None:
        """Simulate a reboot: leave gracefully (step 6), come back running `fw_version`
        (None: the same version), connect again (steps 1-3), so the retained state reports
        the version now running. Raises DeviceConnectError if the broker cannot be reached."""
        check_state_fields(None, fw_version)
        await self.disconnect(graceful=True)
        if fw_version is not None:
            self.fw_version = fw_version
        log.info("%s: restarting with firmware %s", self.device_id, self.fw_version)
        await self.connect()

    async def update_firmware(
        self, api_url: str, public_key_b64: str, workdir: Path | str
    ) -> str | None:
        """Update over the air (device/ota.py): check the manifest at `api_url`, download and
        verify the newest image with the pinned `public_key_b64` (raw Ed25519, base64),
        report progress on `event/ota`, install it under `workdir`, and restart running it.
        Returns the version installed, or None when up to date (or the version offered is one
        this device rolled back from). The new image then runs in pending verify:
        `self.firmware` confirms it after the first telemetry PUBACK within the confirmation
        window, or rolls back. Raises an OtaError subclass
        when the update cannot be completed (an interrupted download resumes next time)."""
        async with OtaUpdater(self, public_key_b64) as updater:
            return await updater.update(api_url, Path(workdir))

    # ---- disconnecting --------------------------------------------------------------

    async def disconnect(self, *, graceful: bool = True) -> None:
        """Leave the broker (step 6). Safe to call when already disconnected.

        graceful=True publishes the full state with `"online": false` (retained) and waits
        for its PUBACK before DISCONNECT. graceful=False sends DISCONNECT alone, which leaves
        the retained state saying `"online": true`: the mistake section 4 warns about. To
        simulate a network loss (the broker then publishes the Will) use `drop()`.
        """
        self._stay_online = False
        await self._stop_reconnecting()
        await self.firmware.stop()
        if self._link_up():
            if graceful:
                try:
                    await self._publish_state(online=False)
                except (ConnectionError, TimeoutError) as exc:
                    log.warning("%s: offline state not acknowledged: %s", self.device_id, exc)
            await self._client.disconnect()
        await self._close_link()

    async def drop(self) -> None:
        """Simulate losing the network: close the socket without DISCONNECT, and do not
        reconnect. The broker sees the socket close and publishes the Last Will. A later
        `connect()` resumes the same session (commands queued meanwhile arrive then)."""
        self._stay_online = False
        await self._stop_reconnecting()
        await self.firmware.stop()
        transport = gmqtt_internals.open_transport(self._client)
        if transport is not None:
            log.info("%s: dropping the connection without DISCONNECT", self.device_id)
            transport.abort()
        await self._close_link()

    async def _close_connection(self) -> None:
        # Also cancels gmqtt's keepalive timer; returns once the socket is closed.
        await gmqtt_internals.close_connection(self._client)

    async def _close_link(self) -> None:
        """Close the socket and end everything of ours that served it.

        Handlers still running are cancelled after the socket is closed, so no PUBACK can
        reach the broker for their messages: the broker delivers them again next time.
        """
        self._stay_online = False
        await self._stop_reconnecting()
        await self._close_connection()
        self._ready.clear()
        tasks = self._commands.cancel_running() | self._config_code.cancel_all()
        if self._after_connect_task is not None:
            self._after_connect_task.cancel()
            tasks.add(self._after_connect_task)
            self._after_connect_task = None
        pending = tasks | self._message_tasks
        if pending:
            await asyncio.wait(pending, timeout=self._ack_timeout_s)
        self._notify()

    # ---- uplink ---------------------------------------------------------------------

    async def send_telemetry(
        self, values: Mapping[str, Any], ts_ms: int | None = None
    ) -> dict[str, Any]:
        """Publish telemetry (QoS 1, not retained); return the document sent once the broker
        has acknowledged it.

        `ts` is `ts_ms`, else a `ts` already in `values` (e.g. an RFC 3339 string), else now.
        Generated timestamps strictly increase: the backend keeps one telemetry row per
        (device, ts), so a second sample in the same millisecond would be rejected
        (`duplicate_ts`).
        """
        document = dict(values)
        if ts_ms is None and "ts" not in document:
            ts_ms = max(now_ms(), self._last_telemetry_ts + 1)
            self._last_telemetry_ts = ts_ms
        if ts_ms is not None:
            check_ts_ms(ts_ms)
            document["ts"] = ts_ms
        waiter = self._publish_nowait(self.topics.telemetry, encode_payload(document))
        self._storage.count_last()
        self.telemetry_published += 1
        await self._wait_for_puback(waiter, self.topics.telemetry)
        return document

    async def send_event(
        self, name: str, values: Mapping[str, Any] | None = None, ts_ms: int | None = None
    ) -> dict[str, Any]:
        """Publish an event on `paku/<id>/event/<name>` (QoS 1, not retained), `ts` as for
        telemetry. (Events of one name with the same `ts` are all kept if their payloads
        differ, so no uniqueness is needed here.)"""
        document = dict(values or {})
        if ts_ms is None and "ts" not in document:
            ts_ms = now_ms()
        if ts_ms is not None:
            check_ts_ms(ts_ms)
            document["ts"] = ts_ms
        await self._publish(self.topics.event(name), encode_payload(document))
        return document

    async def _publish_state(self, *, online: bool) -> None:
        # Built when sent, so the last state published always carries the latest values.
        payload = encode_payload(self.state(online=online))
        await self._publish(self.topics.state, payload, retain=True)

    def _link_up(self) -> bool:
        return gmqtt_internals.has_connection(self._client) and bool(self._client.is_connected)

    def _publish_nowait(
        self, topic: str, payload: bytes, *, retain: bool = False
    ) -> asyncio.Future[bool]:
        if not self._link_up():
            raise ConnectionError(f"{self.device_id} is not connected")
        self._client.publish(topic, payload, qos=1, retain=retain)
        return self._storage.waiter_for_last()

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK. A PUBACK means the broker has the
        message, not that the backend accepted it (rejections are never reported back).

        gmqtt does not report the PUBACK reason code, so a publish the ACL denies (0x87)
        would look acknowledged here; this device publishes only to its own topics."""
        await self._wait_for_puback(self._publish_nowait(topic, payload, retain=retain), topic)

    async def _wait_for_puback(self, waiter: asyncio.Future[bool], topic: str) -> None:
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                acknowledged = await asyncio.shield(waiter)
        except TimeoutError:
            self._storage.forget(waiter)
            raise TimeoutError(
                f"no PUBACK for {topic} within {self._ack_timeout_s} s"
                " (gmqtt keeps the message and resends it after a reconnect)"
            ) from None
        if not acknowledged:
            raise ConnectionError(f"the broker started a new session: {topic} message dropped")

    # ---- downlink -------------------------------------------------------------------

    async def _on_message(
        self, _client: Any, topic: str, payload: bytes, _qos: int, properties: dict[str, Any]
    ) -> int:
        # gmqtt runs each message in a task of its own and sends the PUBACK with the reason
        # code this returns.
        task = asyncio.current_task()
        if task is not None:
            self._message_tasks.add(task)
        try:
            if topic == self.topics.cmd:
                ack = await self._commands.handle(payload)
                if ack is not None:
                    self._send_ack(ack)
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
        return PUBACK_SUCCESS

    def _send_ack(self, ack: bytes) -> None:
        # Not waiting for its PUBACK: gmqtt keeps the ack and resends it after a reconnect,
        # and the command's own PUBACK follows the ack on the same connection.
        try:
            self._publish_nowait(self.topics.ack, ack)
        except ConnectionError:
            log.warning("%s: offline, ack not sent (the command comes again)", self.device_id)

    async def _handle_config(self, payload: bytes, *, retained: bool) -> None:
        """Apply a `config` message when its version differs from the applied one (section
        8), then publish the full state with the new `configVersion`."""
        try:
            update = parse_config(payload)
        except ValueError as exc:
            log.warning("%s: ignoring an invalid config: %s", self.device_id, exc)
            return
        if update is None:
            # The retained config was cleared: nothing to apply, keep what we run with.
            log.info("%s: config cleared; keeping version %d", self.device_id, self.config_version)
            return
        # One at a time, in the order they arrived (gmqtt handles messages concurrently).
        async with self._config_lock:
            if update.version == self.config_version:
                log.debug("%s: config version %d already applied", self.device_id, update.version)
                return
            if self.on_config is not None:
                task = await self._config_code.run(self.on_config(update.config, update.version))
                if task.cancelled():
                    return
                error = task.exception()
                if error is not None:
                    log.error(
                        "%s: config version %d refused: %s", self.device_id, update.version, error
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
            # The state sent at the next connect carries this configVersion anyway.
            log.warning("%s: state after config not acknowledged: %s", self.device_id, exc)

    # ---- waiting (tests, simulators) ------------------------------------------------

    def notify_change(self) -> None:
        """Wake `wait_for` callers: something they may wait on changed (firmware.py)."""
        self._notify()

    async def downlink_settled(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (at most `timeout` s) until the messages being handled are answered and their
        PUBACKs on their way: before a restart that a command asked for."""
        handling = self._message_tasks - {asyncio.current_task()}
        if handling:
            await asyncio.wait(handling, timeout=timeout)
        await asyncio.sleep(0.05)  # gmqtt sends the PUBACK just after the handler returns

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until `predicate()` is true. It is checked again after every change the
        device sees: a command received or run, a config applied, connected, disconnected.
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
            raise TimeoutError(f"{self.device_id}: condition not met within {timeout} s") from None

    async def wait_for_config(self, version: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until config `version` has been applied."""
        await self.wait_for(lambda: self.config_version == version, timeout)

    async def wait_for_command(self, command_id: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the command with this id has been received (not necessarily answered)."""
        await self.wait_for(
            lambda: any(c.id == command_id for c in self.commands_received), timeout
        )
