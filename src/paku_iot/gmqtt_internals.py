"""Every use paku-iot makes of gmqtt's private internals, in one place, checked at start-up.

gmqtt's public API cannot do three things paku-iot depends on:

- acknowledge after commit: the collector takes QoS 1 delivery over from gmqtt's packet
  handler and later writes the PUBACKs of a whole committed batch in one socket write
  (`take_over_qos1_delivery`, `write_pubacks`);
- flow control: pause and resume reading the socket, which means taking over the pause of
  the asyncio StreamReader gmqtt reads through (`pause_reading`, `resume_reading`);
- reach the socket of the current connection: to abort it (the reference device simulating
  a network loss), to close one gmqtt opened behind our back (`open_transport`,
  `has_connection`, `close_connection`), and to read a CONNACK refusal's reason code
  (`connect_refusal_code`).

These are private names of one gmqtt release: a new release may rename any of them, and the
`getattr(..., None)` guards this code once had would then let acknowledge-after-commit or
flow control stop working without a word. So gmqtt is pinned to `GMQTT_VERSION` in
pyproject.toml, and `require_compatible_gmqtt` (called when a BrokerLink or a
ReferenceDevice is built, once per process) refuses to start, naming what is missing, if
the installed gmqtt lacks any internal listed in `check_gmqtt`. Nothing else in paku-iot may
touch a private attribute of gmqtt.

Why a module at the package root: both the collector's link (paku_iot.broker) and the
reference device (paku_iot.device) need it, and the device package may import only the
protocol, the exceptions and root-level kernel modules, never paku_iot.broker. Like the
other kernel modules it imports nothing of paku-iot but the exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import platform
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from gmqtt import Client
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.handler import MQTTConnectError, MqttPackageHandler
from gmqtt.mqtt.protocol import MQTTProtocol
from gmqtt.storage import PersistentStorage

from paku_iot.exceptions import SettingsError

GMQTT_VERSION = "0.8.0"
"""The gmqtt release this module was written against (pinned in pyproject.toml)."""

Qos1Handler = Callable[[int, bytes, str | bytes, dict[str, Any]], None]
"""(packet id, payload, topic, properties), as gmqtt's packet handler passes them. The topic
is bytes when it is not UTF-8; `properties["retain"]` is the retain flag."""

# A v5 PUBACK with reason "success" and no properties may leave out the reason code.
_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = 0x40


class GmqttIncompatible(SettingsError):
    """The installed gmqtt lacks an internal paku-iot relies on."""

    code = "gmqtt_incompatible"


# ---- the start-up check -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GmqttParts:
    """The classes whose internals are used here: the installed ones, or stand-ins (tests)."""

    client: type[Any]
    package_handler: type[Any]
    connection: type[Any]
    protocol: type[Any]
    stream_reader: type[Any]
    connect_error: type[Any]
    storage: type[Any]

    @classmethod
    def installed(cls) -> GmqttParts:
        return cls(
            client=Client,
            package_handler=MqttPackageHandler,
            connection=MQTTConnection,
            protocol=MQTTProtocol,
            stream_reader=asyncio.StreamReader,
            connect_error=MQTTConnectError,
            storage=PersistentStorage,
        )


@dataclass(frozen=True, slots=True)
class _Need:
    internal: str  # e.g. "gmqtt.client.Client._connection"
    purpose: str
    present: bool


def _name(cls: type[Any], attribute: str) -> str:
    return f"{cls.__module__}.{cls.__qualname__}.{attribute}"


def _init_sets(cls: type[Any], attribute: str) -> bool:
    """Whether the constructor of `cls` (or of a base) assigns `self.<attribute>`: instance
    attributes exist only on instances, and building gmqtt's objects needs a socket."""
    for klass in cls.__mro__:
        code = getattr(vars(klass).get("__init__"), "__code__", None)
        if code is not None and attribute in code.co_names:
            return True
    return False


def _method_uses(cls: type[Any], method: str, attribute: str) -> bool:
    code = getattr(getattr(cls, method, None), "__code__", None)
    return code is not None and attribute in code.co_names


def _has_method(cls: type[Any], method: str, *params: str) -> bool:
    """`cls.method` exists and, when `params` are given, takes exactly those (after self)."""
    function = getattr(cls, method, None)
    if not callable(function):
        return False
    if not params:
        return True
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return False
    return names[1:] == list(params)


def _needs(parts: GmqttParts) -> list[_Need]:
    client, handler, connection = parts.client, parts.package_handler, parts.connection
    protocol, reader, error = parts.protocol, parts.stream_reader, parts.connect_error
    qos1 = "_handle_qos_1_publish_packet"
    qos1_params = ("mid", "packet", "print_topic", "properties")
    return [
        _Need(
            _name(client, "_connection"),
            "the current connection, whose socket takes PUBACKs and is paused, aborted, closed",
            _init_sets(client, "_connection"),
        ),
        _Need(
            _name(client, "_package_handler"),
            "the packet handler whose QoS 1 delivery the collector takes over",
            _init_sets(client, "_package_handler"),
        ),
        _Need(
            f"{_name(handler, qos1)}({', '.join(qos1_params)})",
            "QoS 1 delivery, taken over to send PUBACKs only after commit",
            _has_method(handler, qos1, *qos1_params)
            and _method_uses(handler, "_handle_publish_packet", qos1),
        ),
        _Need(
            _name(connection, "_transport"),
            "the socket: PUBACK writes, pause and resume, abort, close",
            _init_sets(connection, "_transport"),
        ),
        _Need(
            _name(connection, "_protocol"),
            "the protocol, which holds the stream reader",
            _init_sets(connection, "_protocol"),
        ),
        _Need(
            _name(connection, "close()"),
            "closing a connection and its keepalive timer",
            _has_method(connection, "close"),
        ),
        _Need(
            _name(protocol, "_hard_reader"),
            "the StreamReader gmqtt reads through, whose pause flow control takes over",
            _init_sets(protocol, "_hard_reader"),
        ),
        _Need(
            _name(reader, "_maybe_resume_transport()"),
            "where the StreamReader resumes reading by itself, held off while paused",
            _has_method(reader, "_maybe_resume_transport"),
        ),
        _Need(
            _name(reader, "_paused"),
            "the StreamReader's own pause flag",
            _init_sets(reader, "_paused") and _method_uses(reader, "_wait_for_data", "_paused"),
        ),
        _Need(
            _name(error, "_code"),
            "the CONNACK reason code of a refused connection",
            _init_sets(error, "_code"),
        ),
        _Need(
            _name(client, "reconnect()"),
            "gmqtt's own reconnect, switched off by the reference device",
            _has_method(client, "reconnect") and _init_sets(client, "reconnect"),
        ),
        _Need(
            _name(client, "publish()"),
            "storing each QoS 1 message it sends through push_message before returning",
            _method_uses(client, "publish", "push_message"),
        ),
        *(
            _Need(
                _name(parts.storage, f"{method}()"),
                "a hook the reference device extends to learn of its own PUBACKs",
                _has_method(parts.storage, method),
            )
            for method in ("push_message", "remove_message_by_mid", "clear")
        ),
    ]


def check_gmqtt(parts: GmqttParts) -> None:
    """Raise GmqttIncompatible naming every internal of `parts` paku-iot needs and lacks."""
    missing = [need for need in _needs(parts) if not need.present]
    if not missing:
        return
    try:
        installed = metadata.version("gmqtt")
    except metadata.PackageNotFoundError:
        installed = "unknown"
    lines = "; ".join(f"{need.internal} ({need.purpose})" for need in missing)
    raise GmqttIncompatible(
        f"gmqtt {installed} on Python {platform.python_version()} lacks internals paku-iot"
        f" relies on: {lines}. "
        f"paku-iot is written against gmqtt=={GMQTT_VERSION} (pinned in pyproject.toml): "
        f"install that version (pip install gmqtt=={GMQTT_VERSION})"
    )


@functools.cache
def require_compatible_gmqtt() -> None:
    """`check_gmqtt` on the installed gmqtt, once per process (a failure is not cached)."""
    check_gmqtt(GmqttParts.installed())


# ---- the internals ----------------------------------------------------------------------


def take_over_qos1_delivery(client: Client, handler: Qos1Handler) -> None:
    """Make `handler` receive every QoS 1 PUBLISH instead of gmqtt, which would otherwise
    run `on_message` in a task of its own and write its PUBACK when that returns: one task
    and one socket write per message. The caller then owes the broker the PUBACK of each
    packet id (`write_pubacks`). QoS 0 messages still go to `client.on_message`."""
    client._package_handler._handle_qos_1_publish_packet = handler


def has_connection(client: Client) -> bool:
    """Whether gmqtt has made a connection object (from the first connect attempt on):
    `client.is_connected` raises AttributeError until it has."""
    return client._connection is not None


def open_transport(client: Client) -> asyncio.Transport | None:
    """The socket of the current connection, unless there is none or it is closing."""
    connection = client._connection
    if connection is None:
        return None
    transport: asyncio.Transport = connection._transport
    if transport.is_closing():
        return None
    return transport


async def close_connection(client: Client) -> None:
    """Close the current connection, if any, without DISCONNECT: cancels gmqtt's keepalive
    timer and returns once the socket is closed."""
    connection = client._connection
    if connection is not None:
        await connection.close()


def write_pubacks(client: Client, packet_ids: Iterable[int]) -> None:
    """Write the PUBACKs (reason: success) of `packet_ids` on the current connection, all in
    one write; nothing if it is closed. The ids must be from this connection."""
    transport = open_transport(client)
    if transport is None:
        return
    packets = b"".join(_PUBACK.pack(_PUBACK_TYPE, 2, packet_id) for packet_id in packet_ids)
    if packets:
        transport.write(packets)


def _stream_reader(client: Client) -> Any:
    """gmqtt's asyncio.StreamReader, or None. Typed Any: the attributes used here are private
    to asyncio, and typeshed does not describe them."""
    connection = client._connection
    if connection is None:
        return None
    return connection._protocol._hard_reader


def pause_reading(client: Client) -> None:
    """Stop taking packets off the socket (TCP then pushes back) until `resume_reading`."""
    transport = open_transport(client)
    if transport is None:
        return
    # gmqtt reads through an asyncio.StreamReader, which pauses the transport when its
    # buffer is full and resumes it when drained (in `_maybe_resume_transport`, and in
    # `_wait_for_data` if it believes it paused). Take its pause over and make its resume
    # a no-op while we hold ours, or it resumes under us.
    reader = _stream_reader(client)
    if reader is not None:
        reader._maybe_resume_transport = _hold_paused
        reader._paused = False
    transport.pause_reading()


def resume_reading(client: Client) -> None:
    """Undo `pause_reading` (the StreamReader's own pause, if it took one meanwhile, stays
    until its buffer drains)."""
    reader = _stream_reader(client)
    if reader is not None and "_maybe_resume_transport" in vars(reader):
        del reader._maybe_resume_transport
    transport = open_transport(client)
    if transport is None:
        return
    if reader is not None and reader._paused:
        return  # the reader paused for its own buffer and resumes once that drains
    transport.resume_reading()


def _hold_paused() -> None:
    """Stands in for StreamReader._maybe_resume_transport while `pause_reading` holds."""


def connect_refusal_code(exc: BaseException) -> int | None:
    """The CONNACK reason code when `exc` is gmqtt's MQTTConnectError, else None."""
    if not isinstance(exc, MQTTConnectError):
        return None
    code = exc._code
    return code if isinstance(code, int) else None
