"""The dashboard in a real Chromium against the real app, broker and database: an operator
signs in, provisions a device, watches it come online when the reference device connects,
sees its telemetry chart, sends a command the device acks, and changes a rollout.

Each page is saved as a screenshot in test-artifacts/ (gitignored). Browser tests run on
SQLite only: the queries behind the pages are tested on both databases elsewhere."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from paku_iot.device import ReferenceDevice
from paku_iot.server.service import Service
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, NewDevice, StateReport, TelemetryRecord
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker
from tests.support.ui import ARTIFACTS

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
TIMEOUT_MS = 15_000


async def seed_fleet(service: Service) -> None:
    """Some neighbours for the device under test, so the fleet page looks like a fleet."""
    now = datetime.now(UTC)
    models = ["paku-sensor", "paku-switch"]
    devices = [
        NewDevice(f"{room}-{n:02d}", models[n % 2], None, {}, now - timedelta(days=3), "x")
        for room in ("attic", "garage", "hall", "porch")
        for n in range(1, 5)
    ]
    await service.device_store.insert_many(devices)
    states = [
        StateReport(
            d.id,
            now - timedelta(minutes=7 * i),
            {"online": i % 3 != 0, "rssi": -48 - 3 * i, "fwVersion": "1.0.0" if i % 4 else "0.9.2"},
            live=True,
        )
        for i, d in enumerate(devices)
    ]
    # A reading from each, so the offline ones were seen too, some while ago.
    readings = [
        TelemetryRecord(d.id, s.received_at, s.received_at, {"temp": 20.0})
        for d, s in zip(devices, states, strict=True)
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=readings, states=states))


def watch_for_errors(page: Page) -> list[str]:
    """Script errors and console errors (a CSP violation is one) collected for the test."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    return problems


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name)


async def sign_in(page: Page) -> None:
    await page.goto("/ui/fleet")
    await expect(page).to_have_url("/ui/signin?next=%2Fui%2Ffleet")
    await shot(page, "signin")
    await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url("/ui/fleet")


async def test_operator_walkthrough(
    browser_context: BrowserContext, service: Service, broker: Broker
) -> None:
    await seed_fleet(service)
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await sign_in(page)

    # Provision: the password is on the result page, once.
    await nav(page, "Provision").click()
    await page.locator("#device-model").fill("paku-sensor")
    await page.locator("#device-id").fill("kitchen-01")
    await shot(page, "provision")
    await page.get_by_role("button", name="Create device").click()
    password = (await page.locator("#cred-password").text_content() or "").strip()
    assert len(password) >= 20
    await shot(page, "provisioned")

    # The fleet shows the new device offline; it turns online without a reload when the
    # reference device connects.
    await nav(page, "Fleet").click()
    row = page.locator('tr[data-device-id="kitchen-01"]')
    await expect(row.locator(".badge")).to_have_text("offline")
    await page.evaluate("window.notReloaded = true")
    device = ReferenceDevice(broker.host, broker.port, "kitchen-01", password, rssi=-55)

    async def ping(params: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "echo": params}

    device.on_command("ping", ping)
    await device.connect()
    try:
        await expect(row.locator(".badge")).to_have_text("online", timeout=TIMEOUT_MS)
        assert await page.evaluate("window.notReloaded") is True
        await expect(row).to_contain_text("-55 dBm")
        # 10 of the 16 neighbours, and this one
        await expect(page.locator("#count-online")).to_have_text("11")
        for n in range(30):
            await device.send_telemetry({"temp": 20 + (n % 7) * 0.5, "hum": 40 + n % 5})

        async def stored() -> bool:
            return len(await service.history.telemetry("kitchen-01", limit=100)) == 30

        await eventually(stored)
        await shot(page, "fleet")

        # The device page: a chart per numeric field, the raw payloads.
        await row.get_by_role("link", name="kitchen-01").click()
        await expect(page).to_have_url("/ui/devices/kitchen-01")
        for field in ("temp", "hum"):
            await expect(page.locator(f'figure[data-field="{field}"] canvas')).to_be_visible()
        await expect(page.locator("#chart-status")).to_contain_text("30 messages")
        await expect(page.locator("#raw-telemetry tbody tr")).to_have_count(20)
        await page.get_by_label("Last week").check()
        await expect(page.locator("#chart-status")).to_contain_text("the last week")
        # The week is drawn from the database's 5-minute averages, on a UTC 24-hour axis.
        await expect(page.locator("#chart-status")).to_contain_text("averages per 5 min")
        await expect(page.locator("#chart-status")).to_contain_text("times in UTC")
        await expect(page.locator('figure[data-field="temp"] canvas')).to_be_visible()

        # A command from the page, acked by the device, seen without a reload.
        await page.get_by_label("Name").fill("ping")
        await page.get_by_label("Parameters (JSON object)").fill('{"n": 1}')
        await page.get_by_role("button", name="Send command").click()
        await expect(page.locator(".notice")).to_contain_text("Command created")
        command = page.locator("#commands tbody tr").first
        await expect(command.locator(".status")).to_have_text("acked", timeout=TIMEOUT_MS)
        await expect(command).to_contain_text('"pong": true')
        await shot(page, "device")
    finally:
        await device.disconnect()

    # Firmware: change the rollout, then pause it.
    release = await service.releases.publish(
        model="paku-sensor", version="1.1.0", image=io.BytesIO(b"\x00" * 4096), rollout_percent=10
    )
    await nav(page, "Firmware").click()
    percent = page.locator(f'.rollout-percent[data-release="{release.id}"]')
    await expect(percent).to_have_text("10%")
    await page.get_by_label("Rollout % for paku-sensor 1.1.0").fill("50")
    await page.get_by_role("button", name="Set rollout").click()
    await expect(percent).to_have_text("50%")
    assert (await service.releases.get(release.id)).rollout_percent == 50
    await page.get_by_role("button", name="Pause 1.1.0").click()
    await expect(page.get_by_role("button", name="Resume 1.1.0")).to_be_visible()
    assert (await service.releases.get(release.id)).paused
    await shot(page, "firmware")

    audit = await service.audit.page(limit=20, before_id=None, action=None, target=None)
    actions = [(r.actor, r.action) for r in audit if r.details.get("via") == "ui"]
    assert ("admin", "device.provision") in actions
    assert ("admin", "command.send") in actions
    assert actions.count(("admin", "ota.update")) == 1  # the percentage
    assert ("admin", "ota.pause") in actions  # as the API's pause is audited
    assert problems == [], problems


async def test_phone_and_keyboard(browser_context: BrowserContext, service: Service) -> None:
    await seed_fleet(service)
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto("/ui/signin")
    # Keyboard only: the token field has focus, Enter submits.
    await expect(page.get_by_label("Admin token")).to_be_focused()
    await page.keyboard.type(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url("/ui/fleet")
    # The first Tab reaches the skip link, which moves focus to the content.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    # Nothing but the device table scrolls sideways on a phone.
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await page.get_by_label("Model").select_option("paku-switch")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("#count-matching")).to_have_text("8")
    await shot(page, "fleet-phone")
    assert problems == [], problems
