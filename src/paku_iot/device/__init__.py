"""The reference device: an async MQTT client that speaks docs/protocol.md exactly.

Firmware authors read it as the executable form of the device contract; tests and load
simulators drive it. `python -m paku_iot.device --help` runs one from the command line.
"""

from __future__ import annotations

from paku_iot.device.client import (
    ConfigHandler,
    DeviceConnectError,
    DeviceTlsError,
    ReferenceDevice,
)
from paku_iot.device.commands import CommandError, CommandHandler, ReceivedCommand
from paku_iot.device.messages import Command, ConfigUpdate, DeviceTopics, encode_payload, now_ms
from paku_iot.device.ota import (
    ManifestEntry,
    OtaError,
    OtaInterrupted,
    OtaUnauthorized,
    OtaUpdater,
    OtaVerificationError,
)
from paku_iot.device.tls import client_context

__all__ = [
    "Command",
    "CommandError",
    "CommandHandler",
    "ConfigHandler",
    "ConfigUpdate",
    "DeviceConnectError",
    "DeviceTlsError",
    "DeviceTopics",
    "ManifestEntry",
    "OtaError",
    "OtaInterrupted",
    "OtaUnauthorized",
    "OtaUpdater",
    "OtaVerificationError",
    "ReceivedCommand",
    "ReferenceDevice",
    "client_context",
    "encode_payload",
    "now_ms",
]
