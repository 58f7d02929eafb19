"""GET /metrics in Prometheus text format, and request ids in the logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paku_iot.logs import JsonFormatter, RequestIdFilter
from paku_iot.server.service import running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_messages_requests_and_devices(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    created = await api.post("/devices", json={"model": "m", "id": "met-1"})
    device = await broker.device("met-1", created.json()["credentials"]["password"]).connect()
    await device.publish("paku/met-1/state", '{"online": true}', retain=True)
    await device.publish("paku/met-1/telemetry", '{"ts": 1780000000000}')
    await device.publish("paku/met-1/telemetry", "junk")
    await api.post("/devices/met-1/commands", json={"name": "x"})

    async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await api.get("/metrics", headers={"Authorization": ""})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert found.get(("paku_messages_accepted_total", (("kind", "telemetry"),))) == 1
        assert found.get(("paku_messages_rejected_total", (("reason", "invalid_json"),))) == 1
        assert found.get(("paku_devices_online", ())) == 1
        # Sent once the collector has seen the device online (the state may come after the
        # command was queued).
        assert found.get(("paku_commands", (("status", "sent"),))) == 1
        return found

    found = await eventually(counted)
    assert found[("paku_devices", ())] == 1
    assert found[("paku_broker_connected", ())] == 1
    assert found[("paku_ingest_queue_depth", ())] == 0
    assert found[("paku_ingest_batch_size_count", ())] >= 1
    assert found[("paku_ingest_write_seconds_count", ())] >= 1
    posted = (
        ("method", "POST"),
        ("route", "/devices/{device_id}/commands"),
        ("status", "202"),
    )
    assert found[("paku_http_requests_total", posted)] == 1
    assert (
        "paku_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/devices")),
    ) in found
    await device.disconnect()


async def test_metrics_need_a_token_in_production(settings: Settings, broker: Broker) -> None:
    production = settings.model_copy(update={"env": "production", "metrics_token": None})
    async with (
        running_service(production) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
        ) as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert allowed.status_code == 200
    scraped = settings.model_copy(update={"metrics_token": "scrape-me"})
    async with (
        running_service(scraped) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
        ) as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200


async def test_request_ids_reach_responses_and_json_logs(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await api.get("/devices/nope-1", headers={"X-Request-ID": "req-abc.123"})
    assert response.headers["x-request-id"] == "req-abc.123"
    generated = await api.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 16

    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.DEBUG, logger="paku_iot.web.api"):
        await api.get("/devices", headers={"X-Request-ID": "trace-42"})
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-42"]
    assert records
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "trace-42"
    assert line["level"] == "debug"
    assert ADMIN_TOKEN not in json.dumps(line)
