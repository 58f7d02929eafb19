"""The pages over plain HTTP on both databases: fleet paging and filters at scale, the device
page's forms and chart data, the firmware controls and the provision forms."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import httpx

from paku_iot.server.service import Service
from paku_iot.storage import schema
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, NewDevice, TelemetryRecord
from tests.support.ui import sign_in

ROW_ID = re.compile(r'<tr data-device-id="([^"]+)">')


async def add_devices(service: Service, count: int) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"unit-{n:05d}" for n in range(count)]
    await service.device_store.insert_many(
        [NewDevice(d, "tall" if n % 4 else "short", None, {}, now, "x") for n, d in enumerate(ids)]
    )
    return ids


async def test_the_fleet_pages_through_thousands_of_devices(
    ui: httpx.AsyncClient, service: Service
) -> None:
    ids = await add_devices(service, 2_000)
    await sign_in(ui)
    first = await ui.get("/ui/fleet")
    assert ROW_ID.findall(first.text) == ids[:50]
    assert 'id="count-total">2000<' in first.text
    second = await ui.get("/ui/fleet?after=unit-00049")
    assert ROW_ID.findall(second.text) == ids[50:100]
    assert "/ui/fleet?before=unit-00050" in second.text  # the way back
    back = await ui.get("/ui/fleet?before=unit-00050")
    assert ROW_ID.findall(back.text) == ids[:50]
    last = await ui.get("/ui/fleet?after=unit-01949")
    assert ROW_ID.findall(last.text) == ids[1950:]
    assert 'rel="next"' not in last.text


async def test_the_fleet_filters_and_its_live_fragment(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await add_devices(service, 120)
    await sign_in(ui)
    page = await ui.get("/ui/fleet", params={"model": "short", "q": "UNIT-000"})
    assert ROW_ID.findall(page.text) == [f"unit-{n:05d}" for n in range(0, 100, 4)]
    assert 'id="count-matching">25<' in page.text
    assert 'data-live-url="/ui/fleet/live?q=UNIT-000&amp;model=short"' in page.text
    live = await ui.get("/ui/fleet/live", params={"model": "short", "q": "UNIT-000"})
    assert live.status_code == 200
    assert ROW_ID.findall(live.text) == ROW_ID.findall(page.text)
    assert "<html" not in live.text
    online = await ui.get("/ui/fleet", params={"online": "online"})
    assert "No devices match these filters." in online.text
    assert (await ui.get("/ui/fleet", params={"online": "maybe"})).status_code == 422


async def test_the_device_page_forms(ui: httpx.AsyncClient, service: Service) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    csrf = await sign_in(ui)
    assert (await ui.get("/ui/devices/nobody")).status_code == 404
    base = "/ui/devices/kitchen-01"
    bad = await ui.post(f"{base}/commands", data={"csrf": csrf, "name": "ping", "params": "[1]"})
    assert bad.status_code == 422
    assert "must be a JSON object" in bad.text
    bad = await ui.post(f"{base}/commands", data={"csrf": csrf, "name": "no spaces"})
    assert bad.status_code == 422
    sent = await ui.post(
        f"{base}/commands", data={"csrf": csrf, "name": "blink", "params": '{"times": 3}'}
    )
    assert sent.headers["location"] == f"{base}?notice=command"
    [command] = await service.commands.page("kitchen-01", limit=5)
    assert (command.name, command.params, command.status) == ("blink", {"times": 3}, "queued")
    saved = await ui.post(f"{base}/config", data={"csrf": csrf, "config": '{"intervalS": 30}'})
    assert saved.status_code == 303
    device = await service.registry.get("kitchen-01")
    assert (await service.configs.get(device)).config == {"intervalS": 30}
    activity = await ui.get(f"{base}/live", params={"part": "activity"})
    assert "blink" in activity.text
    assert "intervalS" in activity.text
    rotated = await ui.post(f"{base}/credentials", data={"csrf": csrf})
    assert rotated.status_code == 200
    assert 'id="cred-password"' in rotated.text
    assert rotated.headers["cache-control"] == "no-store"


async def test_chart_data_covers_the_chosen_window(ui: httpx.AsyncClient, service: Service) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        TelemetryRecord("kitchen-01", now - timedelta(minutes=m), now, {"temp": float(m)})
        for m in range(0, 3 * 24 * 60, 30)
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=rows))
    await sign_in(ui)
    url = "/ui/devices/kitchen-01/telemetry.json"
    hour = (await ui.get(url, params={"window": "1h"})).json()
    assert hour["rows"] == 2  # 0 and 30 minutes ago
    assert hour["fields"]["temp"] == [30.0, 0.0]
    week = (await ui.get(url, params={"window": "7d"})).json()
    assert week["rows"] == len(rows)
    assert not week["truncated"]
    assert (await ui.get(url, params={"window": "1y"})).status_code == 422


async def test_the_firmware_controls(ui: httpx.AsyncClient, service: Service) -> None:
    await add_devices(service, 40)
    # Devices that have connected: a device never seen is not counted as pending.
    async with service.engine.begin() as conn:
        await conn.execute(schema.devices.update().values(last_seen_at=datetime.now(UTC)))
    release = await service.releases.publish(
        model="tall", version="2.0.0", image=io.BytesIO(b"fw" * 100), rollout_percent=100
    )
    csrf = await sign_in(ui)
    page = await ui.get("/ui/firmware")
    assert f'id="release-{release.id}"' in page.text
    assert '<td data-status="pending">30</td>' in page.text
    path = f"/ui/firmware/{release.id}"

    async def post(action: str, **form: str) -> int:
        return (await ui.post(f"{path}/{action}", data={"csrf": csrf, **form})).status_code

    assert await post("rollout", percent="101") == 422
    assert await post("rollout", percent="0") == 303
    assert (await service.releases.get(release.id)).rollout_percent == 0
    assert await post("pause", paused="true") == 303
    assert (await service.releases.get(release.id)).paused
    missing = await ui.post("/ui/firmware/fw-nope/pause", data={"csrf": csrf, "paused": "true"})
    assert missing.status_code == 404


async def test_claim_codes_are_shown_once_as_a_table_and_csv(
    ui: httpx.AsyncClient, service: Service
) -> None:
    csrf = await sign_in(ui)
    made = await ui.post(
        "/ui/provision/claim-codes",
        data={"csrf": csrf, "model": "paku-sensor", "count": "3", "ttl_days": "7"},
    )
    assert made.status_code == 201
    assert made.text.count('<th scope="row" class="mono">') == 3
    assert "device_id,claim_code,expires_at" in made.text
    assert await service.registry.count_matching(model="paku-sensor") == 3
    refused = await ui.post(
        "/ui/provision/claim-codes", data={"csrf": csrf, "model": "m", "count": "lots"}
    )
    assert refused.status_code == 422
    assert "whole numbers" in refused.text
    taken = await ui.post("/ui/provision/device", data={"csrf": csrf, "model": "m", "id": "ab"})
    assert taken.status_code == 422
