"""An operator in a real Chromium makes an alert rule through the form, sees the alert it opens
on the alerts page, the fleet page and the device page, and acknowledges it. The evaluator is
not part of the dashboard: the alert is opened through the store, as the evaluator would.
Screenshots in test-artifacts/ (alert-rules.png, alerts.png, alerts-device.png)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import BrowserContext, expect

from paku_iot.server.service import Service
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.records import AlertEvent, AlertTransition
from tests.web.ui.test_browser import nav, seed_fleet, shot, sign_in, watch_for_errors

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SECRET = "browser-hook-secret"


async def test_an_operator_makes_a_rule_and_acknowledges_its_alert(
    browser_context: BrowserContext, service: Service
) -> None:
    await seed_fleet(service)
    await service.registry.provision(model="paku-sensor", device_id="kitchen-01")
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await sign_in(page)

    await nav(page, "Alert rules").click()
    await expect(page).to_have_url("/ui/alert-rules")
    await page.locator("#rule-name").fill("kitchen too hot")
    await page.locator("#rule-kind").select_option("threshold")
    await page.get_by_label("One device", exact=True).check()
    await page.locator("#rule-device").fill("kitchen-01")
    await page.locator("#rule-field").fill("temp")
    await page.locator("#rule-above").fill("30")
    await page.locator("#rule-for").fill("60")
    await page.locator("#dest-url").fill("https://hooks.example/paku")
    await page.locator("#dest-secret").fill(SECRET)
    await page.get_by_role("button", name="Create rule").click()
    await expect(page.locator(".notice")).to_have_text("Rule created.")
    row = page.locator("#alert-rules tbody tr[data-rule-id]")
    await expect(row).to_have_count(1)
    await expect(row.locator(".condition")).to_have_text("temp > 30 for 60 s")
    await expect(row).to_contain_text("webhook hooks.example")
    assert SECRET not in await page.content()
    await shot(page, "alert-rules")

    # The evaluator's part: the reading crossed the line a few minutes ago.
    [rule] = await service.alert_rules.page(limit=10)
    opened = AlertTransition(
        rule.id,
        "kitchen-01",
        AlertEvent.OPENED,
        datetime.now(UTC) - timedelta(minutes=3),
        {"value": 31.5, "above": 30},
    )
    await AlertStore(service.engine).apply([opened], lambda _: rule.destinations)

    # The fleet page counts it (its live region refreshes without a reload)...
    await nav(page, "Fleet").click()
    await expect(page.locator("#count-open-alerts")).to_have_text("1")
    await expect(page.locator("#open-alerts-link")).to_have_text("1 open alert")
    # ...the device page names it...
    await page.locator('tr[data-device-id="kitchen-01"]').get_by_role("link").click()
    await expect(page).to_have_url("/ui/devices/kitchen-01")
    listed = page.locator("#device-open-alerts")
    await expect(listed).to_contain_text("kitchen too hot")
    await expect(listed).to_contain_text("3 min ago")
    await shot(page, "alerts-device")

    # ...and the alerts page lists it open, with its values, until someone acknowledges it.
    await nav(page, "Alerts").click()
    alert = page.locator("#open-alerts tbody tr[data-alert-id]")
    await expect(alert).to_have_count(1)
    await expect(alert).to_contain_text("kitchen too hot")
    await expect(alert).to_contain_text("above=30, value=31.5")
    await expect(alert.locator(".acked")).to_have_text("-")
    await alert.get_by_role("button", name="Acknowledge").click()
    await expect(alert.locator(".acked")).to_contain_text("admin")
    await expect(alert.get_by_role("button", name="Acknowledge")).to_have_count(0)
    await shot(page, "alerts")
    [view] = await service.alerts.page(limit=5)
    assert view.alert.acknowledged_by == "admin"

    await alert.get_by_role("link", name="Deliveries").click()
    await expect(page.locator("#deliveries tbody tr[data-delivery-id]")).to_have_count(1)
    await expect(page.locator("#alert-acked")).to_contain_text("admin")
    assert problems == [], problems
