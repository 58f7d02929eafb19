"""`paku-iot devices tag|list --tag|decommission|recommission` against a running
`paku-iot dev`, with the real broker judging the credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.mqtt import ConnectRefused, DeviceClient


async def test_tags_and_decommissioning_from_the_command_line(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, mqtt_port = dev_api
    created = await cli(
        env, tmp_path, "devices", "create", "--model", "lamp", "--id", "lamp-1", "--json"
    )
    assert created.returncode == 0, created.stderr
    password = json.loads(created.stdout)["credentials"]["password"]
    await cli(env, tmp_path, "devices", "create", "--model", "lamp", "--id", "lamp-2", "--tag", "x")

    tagged = await cli(
        env, tmp_path, "devices", "tag", "lamp-1", "lamp-2", "--add", "hall", "--remove", "x"
    )
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.count("tags hall") == 2
    listed = await cli(env, tmp_path, "devices", "list", "--tag", "hall", "--json")
    assert [d["id"] for d in json.loads(listed.stdout)] == ["lamp-1", "lamp-2"]
    refused = await cli(env, tmp_path, "devices", "tag", "lamp-1", "--add", "Bad Tag")
    assert refused.returncode != 0
    assert "add.0" in refused.stderr

    gone = await cli(env, tmp_path, "devices", "decommission", "lamp-1")
    assert gone.returncode == 0, gone.stderr
    assert "decommissioned lamp-1" in gone.stdout
    with pytest.raises(ConnectRefused):
        await DeviceClient("127.0.0.1", mqtt_port, "lamp-1", password).connect()
    in_service = await cli(env, tmp_path, "devices", "list", "--json")
    assert [d["id"] for d in json.loads(in_service.stdout)] == ["lamp-2"]
    hidden = await cli(env, tmp_path, "devices", "list", "--decommissioned")
    assert "lamp-1" in hidden.stdout
    assert "decommissioned" in hidden.stdout

    back = await cli(env, tmp_path, "devices", "recommission", "lamp-1")
    assert back.returncode == 0, back.stderr
    new_password = back.stdout.split("new MQTT password:")[1].split()[0]
    device = await DeviceClient("127.0.0.1", mqtt_port, "lamp-1", new_password).connect()
    await device.disconnect()

    deleted = await cli(env, tmp_path, "devices", "delete", "lamp-2", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    helped = await cli(env, tmp_path, "devices", "delete", "--help")
    assert "telemetry" in helped.stdout
    assert "alerts" in helped.stdout
