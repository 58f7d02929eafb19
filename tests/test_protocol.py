"""The wire contract (paku_iot.protocol): its rules, their edges, and that the backend's
settings, API schema and dashboard take their limits from it instead of restating them."""

from __future__ import annotations

import inspect
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI

from paku_iot import protocol
from paku_iot.device.messages import DeviceTopics, check_ts_ms, encode_payload
from paku_iot.downlink.commands import NewCommand
from paku_iot.ota.releases import ROLLOUT_STATUSES
from paku_iot.protocol import (
    COMMAND_NAME_PATTERN,
    DEFAULT_COMMAND_TTL_S,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEVICE_ID_PATTERN,
    EVENT_NAME_PATTERN,
    MAX_COMMAND_TTL_S,
    MIN_COMMAND_TTL_S,
    TS_WINDOW_END_MS,
    TS_WINDOW_START_MS,
    TimestampError,
    TopicError,
    UplinkKind,
    UplinkTopic,
    command_topic,
    config_topic,
    event_topic,
    is_valid_command_name,
    is_valid_config_version,
    is_valid_device_id,
    is_valid_event_name,
    is_valid_fw_version,
    is_valid_rssi,
    parse_device_ts,
    parse_uplink_topic,
    state_topic,
    telemetry_topic,
    uplink_subscriptions,
)
from paku_iot.registry.ids import new_device_id
from paku_iot.settings import load_settings
from paku_iot.web.api.routes import commands as command_routes
from paku_iot.web.api.routes import ota as ota_routes
from paku_iot.web.ui.routes.device import CommandForm

SRC = Path(protocol.__file__).parent
# ---- what the contract may depend on --------------------------------------------------------


def test_importing_the_contract_loads_nothing_else_of_paku_iot() -> None:
    # What it imports is checked with the rest of the house (tests/test_imports.py); this is
    # what comes along at run time when a device imports it alone.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, paku_iot.protocol; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('paku_iot')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(loaded) <= {"paku_iot", "paku_iot.protocol", "paku_iot.exceptions"}


# ---- ids and names ------------------------------------------------------------------------


def test_the_documented_patterns() -> None:
    # docs/protocol.md states these exact rules; firmware is written against them.
    assert DEVICE_ID_PATTERN == r"^[A-Za-z0-9_-]{3,64}$"
    assert EVENT_NAME_PATTERN == COMMAND_NAME_PATTERN == r"^[A-Za-z0-9_.-]{1,64}$"


@pytest.mark.parametrize("device_id", ["abc", "kitchen-01", "A_b-9", "x" * 64])
def test_valid_device_ids(device_id: str) -> None:
    assert is_valid_device_id(device_id)
    DeviceTopics(device_id)  # the reference device takes it too


@pytest.mark.parametrize(
    "device_id",
    ["", "ab", "x" * 65, "a/b", "dev+1", "dev#", "$SYS", "a.b", "dev 1", "d\u00e9v-1", "dev-1\n"],
)
def test_invalid_device_ids(device_id: str) -> None:
    assert not is_valid_device_id(device_id)
    with pytest.raises(ValueError, match="invalid device id"):
        DeviceTopics(device_id)


def test_generated_device_ids_follow_the_rule() -> None:
    assert all(is_valid_device_id(new_device_id()) for _ in range(200))


@pytest.mark.parametrize("name", ["a", "x" * 64, "reboot", "set.level_2-b", "A.B"])
def test_valid_event_and_command_names(name: str) -> None:
    assert is_valid_event_name(name)
    assert is_valid_command_name(name)


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "#", "+", "bad name", "caf\u00e9", "a\n"])
def test_invalid_event_and_command_names(name: str) -> None:
    assert not is_valid_event_name(name)
    assert not is_valid_command_name(name)


# ---- topics -------------------------------------------------------------------------------


def test_topic_shapes() -> None:
    assert telemetry_topic("dev-1") == "paku/dev-1/telemetry"
    assert state_topic("dev-1") == "paku/dev-1/state"
    assert event_topic("dev-1", "button") == "paku/dev-1/event/button"
    assert command_topic("dev-1") == "paku/dev-1/cmd"
    assert config_topic("dev-1") == "paku/dev-1/config"
    topics = DeviceTopics("dev-1")
    assert (topics.telemetry, topics.state, topics.cmd, topics.config, topics.ack) == (
        "paku/dev-1/telemetry",
        "paku/dev-1/state",
        "paku/dev-1/cmd",
        "paku/dev-1/config",
        "paku/dev-1/event/ack",
    )


@pytest.mark.parametrize("device_id", ["abc", "d-7kq2m9xw4hpa", "x" * 64])
def test_uplink_topics_round_trip(device_id: str) -> None:
    assert parse_uplink_topic(telemetry_topic(device_id)) == UplinkTopic(
        device_id, UplinkKind.TELEMETRY
    )
    assert parse_uplink_topic(state_topic(device_id)) == UplinkTopic(device_id, UplinkKind.STATE)
    for name in ("ack", "ota", "x" * 64):
        assert parse_uplink_topic(event_topic(device_id, name)) == UplinkTopic(
            device_id, UplinkKind.EVENT, name
        )


@pytest.mark.parametrize(
    ("topic", "legible_id"),
    [
        ("paku/dev-1/cmd", "dev-1"),  # downlink, not uplink
        ("paku/dev-1/config", "dev-1"),
        ("paku/dev-1/event", "dev-1"),
        ("paku/dev-1/event/a/b", "dev-1"),
        (event_topic("dev-1", "x" * 65), "dev-1"),
        ("paku/dev-1/telemetry/x", "dev-1"),
        ("paku/ab/telemetry", None),
        ("paku/+/telemetry", None),
        ("PAKU/dev-1/telemetry", None),
        ("paku/dev-1", None),
    ],
)
def test_other_topics_are_not_uplink(topic: str, legible_id: str | None) -> None:
    with pytest.raises(TopicError) as refused:
        parse_uplink_topic(topic)
    assert refused.value.device_id == legible_id


def test_the_collector_subscribes_to_uplink_only() -> None:
    filters = {f.topic_filter: f.replay_retained for f in uplink_subscriptions()}
    assert filters == {"paku/+/telemetry": False, "paku/+/state": True, "paku/+/event/#": False}


# ---- the ts window --------------------------------------------------------------------------


def test_the_window_in_milliseconds_is_the_documented_one() -> None:
    assert TS_WINDOW_START_MS == 946_684_800_000  # 2000-01-01T00:00:00Z
    assert TS_WINDOW_END_MS == 7_258_118_400_000  # 2200-01-01T00:00:00Z


@pytest.mark.parametrize(
    "ts",
    [
        TS_WINDOW_START_MS,
        TS_WINDOW_END_MS - 1,
        "2000-01-01T00:00:00Z",
        "2000-01-01T01:00:00+01:00",
        "2199-12-31T23:59:59.999999Z",
    ],
)
def test_ts_inside_the_window(ts: int | str) -> None:
    # Received at the window's end, so that only the window decides (not the future bound).
    parsed = parse_device_ts(ts, now=protocol.TS_WINDOW_END)
    assert parsed.tzinfo is UTC
    if isinstance(ts, int):
        check_ts_ms(ts)  # the reference device agrees


@pytest.mark.parametrize(
    "ts",
    [
        TS_WINDOW_START_MS - 1,
        TS_WINDOW_END_MS,
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:30:00+01:00",  # 1999 in UTC
        "2200-01-01T00:00:00Z",
    ],
)
def test_ts_outside_the_window(ts: int | str) -> None:
    with pytest.raises(TimestampError, match="is outside 2000-2199"):
        parse_device_ts(ts)
    if isinstance(ts, int):
        with pytest.raises(ValueError, match="is outside 2000-2199"):
            check_ts_ms(ts)


def test_ts_edges_are_the_window_edges() -> None:
    assert parse_device_ts(TS_WINDOW_START_MS) == protocol.TS_WINDOW_START
    assert datetime(2000, 1, 1, tzinfo=UTC) == protocol.TS_WINDOW_START
    assert datetime(2200, 1, 1, tzinfo=UTC) == protocol.TS_WINDOW_END


def test_epoch_numbers_below_10_to_the_11_are_seconds_above_milliseconds() -> None:
    assert protocol.TS_SECONDS_BELOW == 10**11
    start_s, end_s = TS_WINDOW_START_MS // 1000, TS_WINDOW_END_MS // 1000
    assert parse_device_ts(start_s) == protocol.TS_WINDOW_START == parse_device_ts(start_s * 1000)
    assert parse_device_ts(1764000000.5) == parse_device_ts(1764000000500)
    assert parse_device_ts(end_s - 1, now=protocol.TS_WINDOW_END) == datetime(
        2199, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    for outside in (start_s - 1, end_s, 10**11 - 1, 10**11, -1, 0):
        with pytest.raises(TimestampError, match="below 10\\^11 is epoch seconds"):
            parse_device_ts(outside)
    with pytest.raises(TimestampError, match="epoch milliseconds: 1973-03-03"):
        parse_device_ts(10**11)
    with pytest.raises(TimestampError, match="JSON number"):
        parse_device_ts("1764000000")


def test_ts_at_most_a_day_ahead_of_the_server() -> None:
    received = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    limit = received + protocol.TS_MAX_AHEAD
    assert timedelta(days=1) == protocol.TS_MAX_AHEAD
    limit_ms = int(limit.timestamp() * 1000)
    for ts in (limit_ms, limit_ms // 1000, limit.isoformat(), "2026-12-02T13:00:00+01:00"):
        assert parse_device_ts(ts, now=received) == limit
    # Far in the past stays as it was: a device may send what it buffered for months.
    assert parse_device_ts("2001-01-01T00:00:00Z", now=received).year == 2001
    for ts, ahead in (
        (limit_ms + 1, "24.0 hours"),
        ((limit + timedelta(hours=5)).isoformat(), "29.0 hours"),
        (7_258_118_399, "63217 days"),
        ("2199-12-31T23:59:59Z", "63217 days"),
    ):
        with pytest.raises(
            TimestampError,
            match=f"is {ahead} ahead of the server's clock; at "
            "most 1 day ahead is accepted: is the device's clock set",
        ):
            parse_device_ts(ts, now=received)


# ---- state values ---------------------------------------------------------------------------


def test_state_field_names() -> None:
    assert (
        protocol.STATE_ONLINE,
        protocol.STATE_RSSI,
        protocol.STATE_FW_VERSION,
        protocol.STATE_CONFIG_VERSION,
    ) == ("online", "rssi", "fwVersion", "configVersion")
    assert protocol.ACK_EVENT == "ack"


def test_state_value_rules() -> None:
    assert all(is_valid_rssi(v) for v in (-200, -61, 0, 50))
    assert not any(is_valid_rssi(v) for v in (-201, 51, True, -61.0, "-61", None))
    assert all(is_valid_fw_version(v) for v in ("1", "1.4.2", "x" * 64))
    assert not any(is_valid_fw_version(v) for v in ("", "x" * 65, 1, None))
    assert all(is_valid_config_version(v) for v in (0, 1, 10**12))
    assert not any(is_valid_config_version(v) for v in (-1, True, 1.0, "1", None))


def test_whole_numbers_written_as_floats_count_as_integers() -> None:
    assert [protocol.whole_number(v) for v in (-61, -61.0, 0.0, 10**20)] == [-61, -61, 0, 10**20]
    assert [protocol.whole_number(v) for v in (-61.5, True, "-61", None, float("inf"))] == [
        None
    ] * 5


def test_a_command_answer_has_the_same_rules_on_event_ack_and_in_state() -> None:
    assert protocol.STATE_ACK == "ack"
    parse = protocol.parse_command_ack
    assert parse({"id": "c-1", "ok": True, "result": [1]}) == protocol.CommandAck("c-1", True, [1])
    assert parse({"id": "c-1", "ok": False, "error": 5}).error == "5"
    assert parse({"id": "c-1", "ok": True, "ts": 1764000000}).ok is True
    for body, message in [
        ({"id": "c-1", "ok": "true"}, 'not the string "true"'),
        ({"id": "c-1"}, "ok must be true or false; got none"),
        ({"id": "", "ok": True}, "id must be the command's id"),
        ({"id": 5, "ok": True}, "got 5"),
        (["c-1", True], "must be an object"),
    ]:
        with pytest.raises(protocol.AckError, match=message):
            parse(body)
    with pytest.raises(TimestampError):
        parse({"id": "c-1", "ok": True, "ts": 12})


# ---- limits the rest of the code takes from here ------------------------------------------


def test_the_settings_default_payload_limit_is_the_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_MAX_PAYLOAD_BYTES == 65_536
    assert load_settings().max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
    limit = inspect.signature(encode_payload).parameters["max_bytes"].default
    assert limit == DEFAULT_MAX_PAYLOAD_BYTES


def test_the_api_schema_takes_command_rules_from_the_contract() -> None:
    app = FastAPI()
    app.include_router(command_routes.router)
    schemas = app.openapi()["components"]["schemas"]
    for model in ("CommandCreate", "BulkCommandCreate"):
        fields = schemas[model]["properties"]
        assert fields["name"]["pattern"] == COMMAND_NAME_PATTERN
        ttl = fields["ttlSeconds"]
        assert (ttl["minimum"], ttl["default"], ttl["maximum"]) == (
            MIN_COMMAND_TTL_S,
            DEFAULT_COMMAND_TTL_S,
            MAX_COMMAND_TTL_S,
        )


def test_the_dashboard_and_the_domain_take_command_rules_from_the_contract() -> None:
    fields = CommandForm.model_json_schema()["properties"]
    assert fields["name"]["pattern"] == COMMAND_NAME_PATTERN
    ttl = fields["ttl_seconds"]
    assert (ttl["minimum"], ttl["default"], ttl["maximum"]) == (
        MIN_COMMAND_TTL_S,
        DEFAULT_COMMAND_TTL_S,
        MAX_COMMAND_TTL_S,
    )
    assert NewCommand("x").ttl_seconds == DEFAULT_COMMAND_TTL_S
    assert (DEFAULT_COMMAND_TTL_S, MAX_COMMAND_TTL_S) == (3600, 30 * 24 * 3600)


def test_firmware_update_rules_come_from_the_contract() -> None:
    app = FastAPI()
    app.include_router(ota_routes.router)
    assert protocol.OTA_MANIFEST_PATH == "/ota/manifest.json"
    assert protocol.OTA_MANIFEST_PATH in app.openapi()["paths"]
    # Every status a device may report is one the rollout counts, besides pending and updated.
    assert ("pending", *protocol.OTA_REPORT_STATUSES, "updated") == ROLLOUT_STATUSES
    assert protocol.OTA_REPORT_STATUSES == (
        "downloading",
        "installing",
        "installed",
        "confirmed",
        "failed",
        "rolled_back",
    )
    assert protocol.is_valid_command_name(protocol.OTA_BOOT_PREVIOUS_COMMAND)
    assert protocol.event_topic("d-1", protocol.OTA_EVENT) == "paku/d-1/event/ota"


def test_the_release_statement_is_one_unambiguous_encoding() -> None:
    """What firmware rebuilds and verifies (docs/protocol.md 8a): netstrings of the scheme
    tag, model, version, sha256 (lowercase hex) and size (decimal), in that order."""
    sha = "ab" * 32
    statement = protocol.ota_statement("lamp", "1.2.0", sha, 1024)
    assert statement == f"11:paku-ota-v1,4:lamp,5:1.2.0,64:{sha},4:1024,".encode()
    # A field's bytes cannot leak into the next one: a comma or digits in a model is data.
    assert protocol.ota_statement("a,5:1.2", "0.0.0", sha, 1) != protocol.ota_statement(
        "a", "1.2.0", sha, 1
    )
    assert protocol.ota_statement("lämp", "1.2.0", sha, 1).startswith(b"11:paku-ota-v1,5:l")
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(ValueError, match="sha256"):
            protocol.ota_statement("lamp", "1.2.0", bad, 1)
    with pytest.raises(ValueError, match="size"):
        protocol.ota_statement("lamp", "1.2.0", sha, 0)
    with pytest.raises(ValueError, match="model"):
        protocol.ota_statement("", "1.2.0", sha, 1)
