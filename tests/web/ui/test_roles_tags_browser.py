"""Tags and roles in a real Chromium: an admin tags devices through the device page and
narrows the fleet by tag (the filter and the tag links); a viewer, signed in with a named
token of role `viewer`, reads the fleet and a device but is offered no form that changes
anything, and a command posted by hand from its page is refused (403). Neither page logs a
console error or a CSP violation. Screenshots in test-artifacts/ (fleet-tags.png,
viewer-device.png)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from paku_iot.security.roles import Role
from paku_iot.server.service import Service
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, TelemetryRecord
from tests.web.ui.test_browser import nav, seed_fleet, shot, sign_in, watch_for_errors

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def fleet_rows(page: Page) -> Locator:
    return page.locator("table.fleet tbody tr[data-device-id]")


async def row_ids(page: Page) -> list[str]:
    return [str(await row.get_attribute("data-device-id")) for row in await fleet_rows(page).all()]


async def set_tags(page: Page, device_id: str, tags: str) -> None:
    await page.goto(f"/ui/devices/{device_id}")
    await page.get_by_label("Tags, separated by spaces or commas").fill(tags)
    await page.get_by_role("button", name="Save tags").click()
    await expect(page).to_have_url(f"/ui/devices/{device_id}?notice=tags")
    await expect(page.locator(".notice")).to_have_text("Tags saved.")


async def test_an_admin_tags_devices_and_filters_the_fleet_by_tag(
    browser_context: BrowserContext, service: Service
) -> None:
    await seed_fleet(service)  # 16 untagged neighbours
    for device_id in ("kitchen-01", "kitchen-02", "lab-01"):
        await service.registry.provision(model="paku-sensor", device_id=device_id)
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await sign_in(page)
    await expect(fleet_rows(page)).to_have_count(19)
    await expect(page.locator('tr[data-device-id="kitchen-01"] td.tags')).to_have_text("-")

    # Tags through the device page's form: shown, sorted, as links to the filtered fleet.
    await page.get_by_role("link", name="kitchen-01", exact=True).click()
    await expect(page).to_have_url("/ui/devices/kitchen-01")
    await expect(page.locator("#device-tags")).to_have_text("none")
    await set_tags(page, "kitchen-01", "site-a kitchen")
    shown = page.locator("#device-tags a.tag")
    await expect(shown).to_have_text(["kitchen", "site-a"])
    await expect(page.get_by_label("Tags, separated by spaces or commas")).to_have_value(
        "kitchen site-a"
    )
    await set_tags(page, "kitchen-02", "site-a")
    await expect(page.locator("#device-tags a.tag")).to_have_text(["site-a"])
    assert (await service.registry.get("kitchen-01")).tags == ("kitchen", "site-a")
    assert (await service.registry.get("lab-01")).tags == ()

    # The fleet's tag filter offers the tags and narrows the list to the tagged devices.
    await nav(page, "Fleet").click()
    await expect(page).to_have_url("/ui/fleet")
    await expect(page.locator('tr[data-device-id="kitchen-01"] td.tags a.tag')).to_have_text(
        ["kitchen", "site-a"]
    )
    await expect(page.locator('tr[data-device-id="lab-01"] td.tags')).to_have_text("-")
    tag_filter = page.get_by_label("Tag", exact=True)
    await expect(tag_filter.locator("option")).to_have_text(["Any tag", "kitchen", "site-a"])
    await tag_filter.select_option("site-a")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(re.compile(r"/ui/fleet\?.*\btag=site-a\b"))
    await expect(fleet_rows(page)).to_have_count(2)
    assert await row_ids(page) == ["kitchen-01", "kitchen-02"]
    await expect(page.locator("#count-matching")).to_have_text("2")
    await expect(tag_filter).to_have_value("site-a")
    await shot(page, "fleet-tags")

    # A tag link in a row filters by that tag instead.
    await (
        page.locator('tr[data-device-id="kitchen-01"] td.tags')
        .get_by_role("link", name="kitchen")
        .click()
    )
    await expect(page).to_have_url("/ui/fleet?tag=kitchen")
    await expect(fleet_rows(page)).to_have_count(1)
    assert await row_ids(page) == ["kitchen-01"]
    await expect(page.locator("#count-matching")).to_have_text("1")
    await expect(tag_filter).to_have_value("kitchen")

    # And so does one on the device page.
    await page.goto("/ui/devices/kitchen-02")
    await page.locator("#device-tags").get_by_role("link", name="site-a").click()
    await expect(page).to_have_url("/ui/fleet?tag=site-a")
    await expect(fleet_rows(page)).to_have_count(2)

    # Clearing the filters brings the whole fleet back.
    await page.get_by_role("link", name="Clear filters").click()
    await expect(fleet_rows(page)).to_have_count(19)
    audit = await service.audit.page(limit=20, action="device.update")
    assert [(r.actor, r.target) for r in audit] == [
        ("admin", "kitchen-02"),
        ("admin", "kitchen-01"),
    ]
    assert problems == [], problems


async def test_a_viewer_reads_but_is_offered_no_action_and_is_refused_one(
    browser_context: BrowserContext, service: Service
) -> None:
    await seed_fleet(service)
    await service.registry.provision(
        model="paku-sensor", device_id="kitchen-01", tags=["kitchen", "site-a"]
    )
    now = datetime.now(UTC)
    readings = [
        TelemetryRecord("kitchen-01", now - timedelta(minutes=n), now, {"temp": 20 + n % 3})
        for n in range(12)
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=readings, states=[]))
    token = await service.tokens.create("wall-screen", Role.VIEWER)

    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await page.goto("/ui/fleet")
    await expect(page).to_have_url("/ui/signin?next=%2Fui%2Ffleet")
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url("/ui/fleet")

    # The header names the token and its role; the fleet shows its data, with no way to
    # provision.
    await expect(page.locator("header .actor")).to_have_text("token:wall-screen (viewer)")
    await expect(fleet_rows(page)).to_have_count(17)
    await expect(page.locator('tr[data-device-id="kitchen-01"] td.tags a.tag')).to_have_text(
        ["kitchen", "site-a"]
    )
    await expect(nav(page, "Fleet")).to_be_visible()
    await expect(nav(page, "Provision")).to_have_count(0)
    await expect(page.locator('a[href^="/ui/provision"]')).to_have_count(0)

    # The device page: state, tags and chart, but no command, config, tags, credentials or
    # decommission form, and no button of any kind outside the header.
    await page.get_by_role("link", name="kitchen-01", exact=True).click()
    await expect(page).to_have_url("/ui/devices/kitchen-01")
    await expect(page.locator("#device-tags a.tag")).to_have_text(["kitchen", "site-a"])
    await expect(page.locator("#chart-status")).to_contain_text("12 messages")
    await expect(page.locator('figure[data-field="temp"] canvas')).to_be_visible()
    for absent in (
        "#command-form",
        "#config-form",
        "#tags-form",
        "#decommission-form",
        'form[action$="/credentials"]',
        'form[action$="/recommission"]',
        "#send-heading",
        "#config-edit-heading",
        "#tags-heading",
        "#creds-heading",
    ):
        await expect(page.locator(absent)).to_have_count(0)
    for button in ("Send command", "Save configuration", "Save tags", "Rotate credentials"):
        await expect(page.get_by_role("button", name=button)).to_have_count(0)
    await expect(page.locator("main form[method=post]")).to_have_count(0)
    await expect(nav(page, "Provision")).to_have_count(0)
    await shot(page, "viewer-device")

    # The command form posted by hand, with this session's real CSRF token (the sign-out
    # form's) from this page's origin: the role check refuses it.
    csrf = await page.locator('header form.signout input[name="csrf"]').input_value()
    assert csrf
    origin = await page.evaluate("location.origin")
    refused = await page.request.post(
        "/ui/devices/kitchen-01/commands",
        form={"csrf": csrf, "name": "reboot", "params": "{}"},
        headers={"Origin": origin},
        max_redirects=0,
    )
    assert refused.status == 403, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "insufficient_role", error
    assert "'viewer'" in error["message"]
    for path, form in (
        ("/ui/devices/kitchen-01/tags", {"csrf": csrf, "tags": "hacked"}),
        ("/ui/devices/kitchen-01/decommission", {"csrf": csrf}),
    ):
        other = await page.request.post(
            path, form=form, headers={"Origin": origin}, max_redirects=0
        )
        assert other.status == 403, (path, other.status)
    assert await service.audit.page(limit=10, action="command.send") == []
    device = await service.registry.get("kitchen-01")
    assert device.tags == ("kitchen", "site-a")
    assert device.decommissioned_at is None

    # Still signed in and still a viewer after the refusals.
    await page.reload()
    await expect(page.locator("header .actor")).to_have_text("token:wall-screen (viewer)")
    assert problems == [], problems
