"""The admin CLI (`paku-iot devices|cmd|config`) against a running `paku-iot dev`, with a
real device answering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import eventually
from tests.support.cli import cli
from tests.support.mqtt import DeviceClient


async def test_devices_commands_and_config_from_the_command_line(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, mqtt_port = dev_api
    created = await cli(env, tmp_path, "devices", "create", "--model", "lamp", "--id", "lamp-1")
    assert created.returncode == 0, created.stderr
    assert "MQTT password:" in created.stdout
    password = created.stdout.split("MQTT password:")[1].split()[0]

    listed = await cli(env, tmp_path, "devices", "list", "--json")
    assert [d["id"] for d in json.loads(listed.stdout)] == ["lamp-1"]

    update = ("devices", "update", "lamp-1", "--notes", "hall", "--metadata", '{"floor": 1}')
    updated = await cli(env, tmp_path, *update)
    assert updated.returncode == 0, updated.stderr
    assert "notes:    hall" in updated.stdout
    assert 'metadata: {"floor": 1}' in updated.stdout
    assert "reported: nothing yet" in updated.stdout

    device = await DeviceClient("127.0.0.1", mqtt_port, "lamp-1", password).connect()
    assert await device.subscribe("paku/lamp-1/cmd") == 1
    await device.publish("paku/lamp-1/state", '{"online": true}', retain=True)

    async def online() -> None:
        shown = await cli(env, tmp_path, "devices", "show", "lamp-1", "--json")
        assert json.loads(shown.stdout)["online"] is True

    await eventually(online)
    shown = await cli(env, tmp_path, "devices", "show", "lamp-1")
    assert 'reported: {"online": true}' in shown.stdout
    cleared = await cli(env, tmp_path, "devices", "update", "lamp-1", "--notes", "", "--json")
    assert json.loads(cleared.stdout)["notes"] is None
    assert json.loads(cleared.stdout)["metadata"] == {"floor": 1}

    async def answer() -> None:
        message = await asyncio.to_thread(device.messages.get, True, 20)
        command = json.loads(message.payload)
        assert command["params"] == {"times": 2}
        ack = {"id": command["id"], "ok": True, "result": {"blinked": 2}}
        await device.publish("paku/lamp-1/event/ack", json.dumps(ack))

    answering = asyncio.create_task(answer())
    sent = await cli(
        env, tmp_path, "cmd", "send", "lamp-1", "blink", "--params", '{"times": 2}', "--wait"
    )
    await answering
    assert sent.returncode == 0, sent.stderr
    assert "acked" in sent.stdout
    assert '{"blinked": 2}' in sent.stdout

    unanswered = await cli(
        env, tmp_path, "cmd", "send", "lamp-1", "noop", "--ttl", "1", "--wait", "--json"
    )
    assert unanswered.returncode == 1
    assert json.loads(unanswered.stdout)["status"] == "expired"

    config_file = tmp_path / "lamp.json"
    config_file.write_text('{"brightness": 80}')
    configured = await cli(env, tmp_path, "config", "set", "lamp-1", str(config_file))
    assert configured.returncode == 0, configured.stderr
    assert "version 1" in configured.stdout
    from_stdin = await cli(env, tmp_path, "config", "set", "lamp-1", "-", stdin='{"b": 1}')
    assert "version 2" in from_stdin.stdout
    await device.disconnect()


async def test_cli_errors_are_one_line(dev_api: tuple[dict[str, str], int], tmp_path: Path) -> None:
    env, _ = dev_api
    for args, expected in [
        (("devices", "show", "ghost-1"), "no device 'ghost-1'"),
        (("devices", "update", "ghost-1", "--notes", "x"), "no device 'ghost-1'"),
        (("devices", "update", "ghost-1"), "nothing to change: give --notes, --metadata"),
        (("devices", "update", "ghost-1", "--metadata", "[1]"), "--metadata must be a JSON"),
        (("cmd", "send", "ghost-1", "x", "--params", "[1]"), "--params must be a JSON object"),
        (("config", "set", "ghost-1", "/nonexistent.json"), "cannot read /nonexistent.json"),
        (("devices", "list", "--url", "http://127.0.0.1:9"), "cannot reach the paku-iot API"),
        (("devices", "list", "--token", "wrong"), "wrong admin token"),
    ]:
        result = await cli(env, tmp_path, *args)
        assert result.returncode == 1, (args, result.stdout)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


async def test_factory_batches_and_named_tokens_from_the_command_line(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    codes_file = tmp_path / "codes.csv"
    made = await cli(
        env,
        tmp_path,
        "claim-codes",
        "create",
        "--model",
        "lamp",
        "--count",
        "3",
        "--out",
        str(codes_file),
    )
    assert made.returncode == 0, made.stderr
    assert oct(codes_file.stat().st_mode & 0o777) == "0o600"
    rows = codes_file.read_text().splitlines()
    assert rows[0] == "deviceId,claimCode,expiresAt"
    assert len(rows) == 4
    assert rows[1].split(",")[1] not in made.stdout + made.stderr  # never on the terminal

    devices_csv = tmp_path / "devices.csv"
    devices_csv.write_text("model,id,notes\nlamp,imp-1,first\nlamp,imp-2,\n")
    creds_file = tmp_path / "creds.csv"
    imported = await cli(
        env, tmp_path, "devices", "import", str(devices_csv), "--out", str(creds_file)
    )
    assert imported.returncode == 0, imported.stderr
    assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
    assert [r.split(",")[0] for r in creds_file.read_text().splitlines()] == [
        "deviceId",
        "imp-1",
        "imp-2",
    ]
    again = await cli(
        env, tmp_path, "devices", "import", str(devices_csv), "--out", str(creds_file)
    )
    assert again.returncode == 1
    assert "line 2" in again.stderr

    created = await cli(env, tmp_path, "tokens", "create", "ci", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split("token ci (viewer): ")[1].split()[0]
    with_token = await cli(env, tmp_path, "devices", "list", "--token", token, "--json")
    assert with_token.returncode == 0, with_token.stderr
    listed = await cli(env, tmp_path, "tokens", "list")
    assert "ci" in listed.stdout
    assert "live" in listed.stdout
    revoked = await cli(env, tmp_path, "tokens", "revoke", "ci")
    assert revoked.returncode == 0
    refused = await cli(env, tmp_path, "devices", "list", "--token", token)
    assert refused.returncode == 1
    assert "wrong admin token" in refused.stderr
