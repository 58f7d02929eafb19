"""A firmware author in a real Chromium finds out why data is missing: the device page lists the
messages the collector refused, a new one appears without a reload, and the fleet-wide page
counts them by reason and leads back to the device. A payload holding markup stays text.
Screenshots in test-artifacts/ (rejected-device.png, rejected-fleet.png)."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, expect

from paku_iot.server.service import Service
from tests.support.broker import Broker
from tests.web.ui.test_browser import nav, shot, sign_in, watch_for_errors

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
TIMEOUT_MS = 15_000


async def test_a_firmware_author_sees_why_data_is_missing(
    browser_context: BrowserContext, service: Service, broker: Broker
) -> None:
    provisioned = await service.registry.provision(model="paku-sensor", device_id="clockless-01")
    device = await broker.device("clockless-01", provisioned.password).connect()
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await sign_in(page)
    await page.goto("/ui/devices/clockless-01")
    rows = page.locator("#device-rejected tbody tr[data-rejected-id]")
    await expect(rows).to_have_count(0)
    await expect(page.locator("#device-rejected")).to_contain_text("Nothing rejected.")
    await expect(page.locator("#last-rejected")).to_have_text("nothing")

    # A clock not yet set (seconds since boot: 1970), then markup instead of JSON: both
    # arrive while the page is open, and show up without a reload.
    await page.evaluate("window.notReloaded = true")
    topic = "paku/clockless-01/telemetry"
    assert await device.publish(topic, '{"ts": 12, "temp": 21.5}') == 0
    assert await device.publish(topic, "<img src=x onerror=alert(1)>") == 0
    await device.disconnect()
    await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
    assert await page.evaluate("window.notReloaded") is True
    await expect(rows.nth(0)).to_contain_text("invalid_json")
    await expect(rows.nth(0)).to_contain_text("<img src=x onerror=alert(1)>")  # as text
    await expect(page.locator("#device-rejected img")).to_have_count(0)
    await expect(rows.nth(1)).to_contain_text("invalid_ts")
    await expect(rows.nth(1)).to_contain_text("is the device's clock set")
    await expect(page.locator("#last-rejected")).to_contain_text("invalid_json")
    await shot(page, "rejected-device")

    await nav(page, "Rejected").click()
    await expect(page).to_have_url("/ui/rejected")
    await expect(page.locator('#reason-counts tr[data-reason="invalid_ts"]')).to_contain_text("1")
    await expect(page.locator("#rejected tbody tr[data-rejected-id]")).to_have_count(2)
    await shot(page, "rejected-fleet")
    await page.locator('#reason-counts a:text-is("invalid_ts")').click()
    await expect(page).to_have_url("/ui/rejected?reason=invalid_ts")
    await expect(page.locator("#rejected tbody tr[data-rejected-id]")).to_have_count(1)
    await page.locator("#rejected").get_by_role("link", name="clockless-01").click()
    await expect(page).to_have_url("/ui/devices/clockless-01")
    assert problems == []
