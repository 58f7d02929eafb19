"""A release's page in a real Chromium (issue 20): an admin follows a release with a plan from
the firmware page, reads its plan, current wave, counts and timeline, then pauses it with a
reason, resumes, promotes and aborts it through the page's forms (the abort only once its box
is ticked); a viewer reads the same page with no form on it. No console error or CSP
violation on the way. Screenshots in test-artifacts/ (release.png, viewer-release.png)."""

from __future__ import annotations

import io

import pytest
from playwright.async_api import BrowserContext, Locator, Page, expect

from paku_iot.security.roles import Role
from paku_iot.server.service import Service
from paku_iot.settings import Settings
from paku_iot.storage.records import ReleaseRecord
from tests.ota.test_autopilot import PLAN, UNSEEN, add_devices, report, wave
from tests.web.ui.test_browser import nav, shot, sign_in, watch_for_errors

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The service's own autopilot is off: only the page moves the release."""
    return settings.model_copy(update={"ota_autopilot_interval_s": 0})


async def lamp_release(service: Service) -> tuple[ReleaseRecord, list[str]]:
    """2.0.0 for the lamps, with a plan, its first wave part-way: the confirmed devices."""
    await add_devices(service)
    release = await service.releases.publish(
        model="lamp",
        version="2.0.0",
        image=io.BytesIO(b"\x00" * 2048),
        plan=PLAN,
        notes="Fixes the flicker",
        actor="admin",
    )
    first = sorted(wave(25))
    await report(service, "2.0.0", dict.fromkeys(first[:3], "confirmed") | {first[3]: "installed"})
    return release, first[:3]


def state_badge(page: Page) -> Locator:
    return page.locator("#release-state .badge")


def timeline_rows(page: Page) -> Locator:
    return page.locator("#timeline tbody tr")


async def test_an_admin_pauses_resumes_promotes_and_aborts_a_release(
    browser_context: BrowserContext, service: Service
) -> None:
    release, confirmed = await lamp_release(service)
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await sign_in(page)

    # From the firmware page: its state and wave, and a link to its own page.
    await nav(page, "Firmware").click()
    listed = page.locator(f"#release-{release.id}")
    await expect(listed.locator(".badge")).to_have_text("rolling")
    await expect(listed.locator(".wave")).to_have_text("wave 1 of 3")
    await listed.get_by_role("link", name="2.0.0", exact=True).click()
    await expect(page).to_have_url(f"/ui/firmware/{release.id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Release lamp 2.0.0")

    # The plan with its current wave, counts per state, devices, the timeline.
    await expect(page.locator("#plan tbody tr")).to_have_count(3)
    await expect(page.locator("#plan tr.current th")).to_have_text("1")
    await expect(page.locator("#current-wave")).to_contain_text("Current wave: 1 of 3 (25%)")
    await expect(page.locator("#count-confirmed")).to_have_text(str(len(confirmed)))
    await expect(page.locator("#count-installed")).to_have_text("1")
    await expect(page.locator("#count-never_seen")).to_have_text(str(len(UNSEEN)))
    await expect(page.locator('tr[data-state="confirmed"] ul.device-ids a')).to_have_text(confirmed)
    await expect(timeline_rows(page)).to_have_count(1)
    await expect(timeline_rows(page).first.locator(".event-kind")).to_have_text("plan")

    # Pause, with a reason: the state's reason and the timeline say it.
    await page.get_by_label("Reason for pausing (optional)").fill("flicker reports from site A")
    await page.get_by_role("button", name="Pause 2.0.0").click()
    await expect(page).to_have_url(f"/ui/firmware/{release.id}?notice=pause")
    await expect(page.locator("#release-notice")).to_have_text("Paused: offered to nobody new.")
    await expect(state_badge(page)).to_have_text("paused")
    await expect(page.locator("#state-reason")).to_have_text("flicker reports from site A")
    paused = timeline_rows(page).last
    await expect(paused.locator(".event-kind")).to_have_text("paused")
    await expect(paused.locator(".event-actor")).to_have_text("admin")
    await expect(paused.locator(".event-details")).to_contain_text("flicker reports from site A")

    # Resume, then promote: the current wave moves to the second.
    await page.get_by_role("button", name="Resume 2.0.0").click()
    await expect(state_badge(page)).to_have_text("rolling")
    await expect(page.locator("#state-reason")).to_have_count(0)
    await page.get_by_role("button", name="Promote 2.0.0 to wave 2 (50%)").click()
    await expect(page).to_have_url(f"/ui/firmware/{release.id}?notice=promote")
    await expect(page.locator("#current-wave")).to_contain_text("Current wave: 2 of 3 (50%)")
    await expect(page.locator("#plan tr.current th")).to_have_text("2")
    await expect(timeline_rows(page).last.locator(".event-details")).to_contain_text(
        "to wave 2 (50%)"
    )
    assert (await service.releases.get(release.id)).current_wave == 1

    # Abort: the browser holds the form until its box is ticked.
    await page.get_by_label("Reason for aborting (optional)").fill("bricks lamps")
    assert await page.locator("#abort-form").evaluate("form => form.checkValidity()") is False
    await page.get_by_role("button", name="Abort 2.0.0").click()
    await page.wait_for_timeout(300)  # time enough for a submission that should not happen
    await expect(page).to_have_url(f"/ui/firmware/{release.id}?notice=promote")
    await expect(page.locator("#release-error")).to_have_count(0)
    assert (await service.releases.get(release.id)).state == "rolling"
    await page.get_by_label("I understand devices stop being offered it").check()
    await page.get_by_role("button", name="Abort 2.0.0").click()
    await expect(page).to_have_url(f"/ui/firmware/{release.id}?notice=abort")
    await expect(state_badge(page)).to_have_text("aborted")
    await expect(page.locator("#state-reason")).to_have_text("bricks lamps")
    await expect(page.locator("#release-controls")).to_have_count(0)
    kinds = ["plan", "paused", "resumed", "promoted", "aborted"]
    await expect(timeline_rows(page).locator(".event-kind")).to_have_text(kinds)
    await expect(timeline_rows(page).locator(".event-actor")).to_have_text(["admin"] * 5)
    await shot(page, "release")

    audit = await service.audit.page(limit=20, target=release.id)
    assert [r.action for r in reversed(audit) if r.details.get("via") == "ui"] == [
        "ota.pause",
        "ota.resume",
        "ota.promote",
        "ota.abort",
    ]
    assert problems == [], problems


async def test_a_viewer_reads_a_release_with_no_form(
    browser_context: BrowserContext, service: Service
) -> None:
    release, confirmed = await lamp_release(service)
    token = await service.tokens.create("wall-screen", Role.VIEWER)
    page = await browser_context.new_page()
    problems = watch_for_errors(page)
    await page.goto(f"/ui/firmware/{release.id}")
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"/ui/firmware/{release.id}")

    await expect(page.locator("header .actor")).to_have_text("token:wall-screen (viewer)")
    await expect(page.locator("#plan tr.current th")).to_have_text("1")
    await expect(page.locator("#count-confirmed")).to_have_text(str(len(confirmed)))
    await expect(timeline_rows(page)).to_have_count(1)
    await expect(page.locator("main form[method=post]")).to_have_count(0)
    await expect(page.locator("#release-controls")).to_have_count(0)
    for button in ("Promote", "Pause", "Resume", "Abort"):
        await expect(page.get_by_role("button", name=button)).to_have_count(0)
    await shot(page, "viewer-release")
    await nav(page, "Firmware").click()
    await expect(page.locator("main form[method=post]")).to_have_count(0)
    assert problems == [], problems
