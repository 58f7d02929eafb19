"""A text log line is one line: what devices and admins send (an ack's id, a device model)
cannot start a line of its own and pass for one the server wrote."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx

from paku_iot.logs import TextFormatter
from paku_iot.storage.migrate import upgrade
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker
from tests.support.mqtt import ACCEPTED, DeviceClient
from tests.support.served import serve

FORGED = "12:00:00 WARNING paku_iot.security: admin token revoked by attacker"


async def test_a_device_cannot_forge_a_log_line(tmp_path: Path, broker: Broker) -> None:
    url = f"sqlite:///{tmp_path / 'paku.db'}"
    await asyncio.to_thread(upgrade, url)
    with serve(tmp_path, url, broker) as served:
        async with httpx.AsyncClient(base_url=served.base_url) as client:
            created = await client.post(
                "/devices",
                json={"model": "paku-sensor", "id": "liar-01"},
                headers=served.admin_headers,
            )
        assert created.status_code == 201, created.text
        password = created.json()["credentials"]["password"]
        device = await DeviceClient(broker.host, broker.port, "liar-01", password).connect()
        try:
            ack = '{"id": "c-1\\n' + FORGED + '\\r\\u2028x", "ok": true}'
            assert await device.publish("paku/liar-01/event/ack", ack) in ACCEPTED
        finally:
            await device.disconnect()

        async def logged() -> str:
            lines = [line for line in served.output().splitlines() if "settled nothing" in line]
            assert lines, "the ack was not logged yet"
            return lines[0]

        line = await eventually(logged, timeout=20)
        output = served.output()
    assert "for c-1\\n" + FORGED + "\\r\\u2028x settled nothing" in line, line
    assert not any(raw.startswith(FORGED) for raw in output.splitlines()), output
    assert ADMIN_TOKEN not in output


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("paku_iot.test", logging.INFO, __file__, 1, message, args, exc_info)


def test_every_control_character_is_escaped() -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    text = formatter.format(record("model %r and %s", "a\nb", "c\x1b[31md\x00e\x85f\u2029g\th"))
    assert text == "INFO model 'a\\nb' and c\\x1b[31md\\x00e\\x85f\\u2029g\\th"


def test_a_traceback_keeps_its_lines_but_none_passes_for_a_record() -> None:
    try:
        raise ValueError("bad input\n" + FORGED)
    except ValueError as exc:
        caught = exc
    text = TextFormatter("%(levelname)s %(message)s").format(record("it failed", exc=caught))
    first, *rest = text.splitlines()
    assert first == "INFO it failed"
    assert rest, text
    # Continuation lines are indented: a reader (or a log parser) sees where a record starts.
    assert all(line.startswith("    ") for line in rest), text
    assert any(FORGED in line for line in rest)
