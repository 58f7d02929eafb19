"""The start-up check of gmqtt's internals: the installed (pinned) gmqtt passes, and a gmqtt
lacking any internal paku-iot relies on is refused with a message naming it and the pinned
version. Stand-ins are passed to the check; gmqtt itself is never altered."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from gmqtt.mqtt.handler import MQTTConnectError, MqttPackageHandler

from paku_iot.exceptions import SettingsError
from paku_iot.gmqtt_internals import (
    GMQTT_VERSION,
    GmqttIncompatible,
    GmqttParts,
    check_gmqtt,
    connect_refusal_code,
    require_compatible_gmqtt,
)

INSTALLED = GmqttParts.installed()


class HandlerWithRenamedQos1(MqttPackageHandler):
    """A release that renamed the QoS 1 method: taking it over would silently do nothing."""

    _handle_qos_1_publish_packet = None

    def _handle_qos1_publish(self, mid: int, packet: bytes, topic: Any, props: Any) -> None:
        pass


class HandlerWithReorderedQos1(MqttPackageHandler):
    """Same name, arguments swapped: our handler would get the topic as the payload."""

    def _handle_qos_1_publish_packet(self, mid: int, topic: Any, packet: bytes, props: Any) -> None:
        pass


class ConnectionWithoutTransport:
    def __init__(self, socket: object, protocol: object) -> None:
        self._socket = socket
        self._protocol = protocol

    async def close(self) -> None:
        pass


class ProtocolWithoutHardReader(asyncio.StreamReaderProtocol):
    def __init__(self) -> None:
        super().__init__(asyncio.StreamReader())


class ReaderWithoutResumeHook:
    def __init__(self) -> None:
        self._paused = False

    async def _wait_for_data(self) -> None:
        if self._paused:
            self._paused = False


class ConnectErrorWithoutCode(Exception):
    def __init__(self, reason: int) -> None:
        super().__init__(reason)
        self.reason = reason


def test_the_installed_gmqtt_has_every_internal() -> None:
    check_gmqtt(INSTALLED)
    require_compatible_gmqtt()


@pytest.mark.parametrize(
    ("part", "stand_in", "missing"),
    [
        ("package_handler", HandlerWithRenamedQos1, "_handle_qos_1_publish_packet"),
        ("package_handler", HandlerWithReorderedQos1, "_handle_qos_1_publish_packet"),
        ("connection", ConnectionWithoutTransport, "ConnectionWithoutTransport._transport"),
        ("protocol", ProtocolWithoutHardReader, "ProtocolWithoutHardReader._hard_reader"),
        ("stream_reader", ReaderWithoutResumeHook, "._maybe_resume_transport()"),
        ("connect_error", ConnectErrorWithoutCode, "ConnectErrorWithoutCode._code"),
    ],
)
def test_a_gmqtt_lacking_an_internal_is_refused(part: str, stand_in: type, missing: str) -> None:
    parts = dataclasses.replace(INSTALLED, **{part: stand_in})
    with pytest.raises(GmqttIncompatible) as refused:
        check_gmqtt(parts)
    message = refused.value.message
    assert missing in message
    assert f"gmqtt=={GMQTT_VERSION}" in message
    for present in ("_package_handler", "_hard_reader", "_maybe_resume_transport", "._code"):
        if present not in missing:
            assert present not in message
    # A SettingsError: the CLI prints its message and exits instead of a traceback.
    assert isinstance(refused.value, SettingsError)


def test_every_missing_internal_is_named() -> None:
    parts = dataclasses.replace(
        INSTALLED, stream_reader=ReaderWithoutResumeHook, connect_error=ConnectErrorWithoutCode
    )
    with pytest.raises(GmqttIncompatible) as refused:
        check_gmqtt(parts)
    assert "_maybe_resume_transport" in refused.value.message
    assert "ConnectErrorWithoutCode._code" in refused.value.message


def test_the_refusal_code_of_a_connect_error() -> None:
    assert connect_refusal_code(MQTTConnectError(134)) == 134
    assert connect_refusal_code(ConnectionRefusedError()) is None
