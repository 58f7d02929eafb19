"""A release's dashboard page (issue 20), on both databases: its plan and current wave, the
devices in each rollout state (never-seen apart, `installed`/`updated` apart from
`confirmed`), its timeline, and promote, pause, resume and abort through its forms, each
checked through the API and audited; refused transitions said on the page; a viewer only
reads."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from paku_iot.security.roles import Role
from paku_iot.server.service import Service
from paku_iot.settings import Settings
from paku_iot.storage import schema
from tests.ota.test_autopilot import PLAN, SEEN, UNSEEN, add_devices, publish, report, wave
from tests.support.ui import csrf_of, sign_in

CRITERIA = {
    "minConfirmed": 2,
    "minConfirmedPercent": 60,
    "abortFailurePercent": 40,
    "abortMinDevices": 7,
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The service's own autopilot is off: only the page's forms move the release."""
    return settings.model_copy(update={"ota_autopilot_interval_s": 0})


async def signed_in_as(
    ui: httpx.AsyncClient, service: Service, role: Role, name: str, page: str
) -> str:
    """Sign in with a named token of `role`; the CSRF token of `page` (a publisher has no
    fleet page to take it from, a viewer only the sign-out form's)."""
    token = await service.tokens.create(name, role)
    assert (await ui.post("/ui/signin", data={"token": token})).status_code == 303
    response = await ui.get(page)
    assert response.status_code == 200
    return csrf_of(response.text)


def state_row(html: str, state: str) -> str:
    match = re.search(rf'<tr data-state="{state}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {state}"
    return match.group(1)


def count_of(html: str, state: str) -> int:
    match = re.search(rf'id="count-{state}">(\d+)<', html)
    assert match, f"no count for {state}"
    return int(match.group(1))


def listed(html: str, state: str) -> list[str]:
    return re.findall(r'<a href="/ui/devices/([^"]+)">', state_row(html, state))


def timeline(html: str) -> list[dict[str, str]]:
    """The timeline table's rows: when, who, what, wave, details (tags stripped)."""
    body = html.split('id="timeline"', 1)[1].split("</table>", 1)[0]
    rows = []
    for row in re.findall(r'<tr data-kind="[^"]+">(.*?)</tr>', body, re.S):
        cells = re.findall(r'<td class="([\w -]+)">(.*?)</td>', row, re.S)
        rows.append(
            {
                cls.split()[-1].removeprefix("event-"): " ".join(
                    re.sub(r"<[^>]+>", " ", text).split()
                )
                for cls, text in cells
            }
        )
    return rows


async def api_release(api: httpx.AsyncClient, release_id: str) -> Any:
    response = await api.get(f"/ota/releases/{release_id}")
    assert response.status_code == 200
    return response.json()


async def test_the_page_shows_the_plan_wave_counts_and_devices_by_state(
    ui: httpx.AsyncClient, api: httpx.AsyncClient, service: Service
) -> None:
    await add_devices(service)
    published = await publish(api, plan=json.dumps(PLAN), notes="Fixes the flicker", **CRITERIA)
    rid = published["id"]
    first = sorted(wave(25))
    assert len(first) >= 8, first  # the split below needs a wave this big
    confirmed, installed, failed, rolled_back, downloading = (
        first[:3],
        first[3:4],
        first[4:5],
        first[5:6],
        first[6:7],
    )
    statuses = dict.fromkeys(confirmed, "confirmed") | dict.fromkeys(installed, "installed")
    statuses |= dict.fromkeys(failed, "failed") | dict.fromkeys(rolled_back, "rolled_back")
    await report(service, "2.0.0", statuses | dict.fromkeys(downloading, "downloading"))
    # Runs it, but never confirmed it: outside the first wave, so not pending either.
    running = sorted(set(SEEN) - set(first))[0]
    async with service.engine.begin() as conn:
        await conn.execute(
            schema.devices.update().where(schema.devices.c.id == running).values(fw_version="2.0.0")
        )

    await sign_in(ui)
    listing = await ui.get("/ui/firmware")
    assert f'href="/ui/firmware/{rid}"' in listing.text
    assert 'data-state="rolling">rolling</span>' in listing.text
    assert 'data-wave="1">wave 1 of 3</span>' in listing.text
    assert f'<td data-status="never_seen">{len(UNSEEN)}</td>' in listing.text

    page = await ui.get(f"/ui/firmware/{rid}")
    assert page.status_code == 200
    html = page.text
    assert "Release lamp 2.0.0" in html
    assert "Fixes the flicker" in html
    assert published["sha256"] in html
    assert "every device of the model" in html
    # The plan: three waves, the first current; soak times in words.
    plan_rows = re.findall(r'<tr data-wave="(\d)"( class="current")?', html)
    assert plan_rows == [("1", ' class="current"'), ("2", ""), ("3", "")]
    assert "<td>10 min</td>" in html
    assert "<td>none</td>" in html
    assert "Current wave: <strong>1 of 3</strong> (25%)" in html
    assert "its soak time ends" in html
    # The criteria as given at upload.
    assert "<dd>2 confirmed (as many among the devices the wave added" in html
    assert "and 60% of those that tried</dd>" in html
    assert "40% of those that tried" in html
    assert "7 tried" in html
    # Counts and the devices in each state.
    expected = {
        "confirmed": confirmed,
        "installed": installed,
        "failed": failed,
        "rolled_back": rolled_back,
        "downloading": downloading,
        "installing": [],
        "updated": [running],
        "pending": first[7:],
        "never_seen": UNSEEN,
    }
    for state, ids in expected.items():
        assert count_of(html, state) == len(ids), state
        assert listed(html, state) == sorted(ids), state
    # Unconfirmed states are grouped apart from `confirmed`, never-seen apart from pending.
    unconfirmed = html.split('class="state-group group-unconfirmed"')[1].split("</tbody>")[0]
    assert 'data-state="installed"' in unconfirmed
    assert 'data-state="updated"' in unconfirmed
    assert 'data-state="confirmed"' not in unconfirmed
    never = html.split('class="state-group group-never-seen"')[1].split("</tbody>")[0]
    assert "Never connected" in never
    assert 'data-state="pending"' not in never
    # The timeline so far: the plan, by the publisher.
    [entry] = timeline(html)
    assert entry["actor"] == "admin"
    assert entry["kind"] == "plan"
    assert entry["wave"] == "1"
    assert "25% for 10 min, 50% for 10 min, 100% for none" in entry["details"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", entry["at"])


async def test_a_long_state_lists_its_first_hundred_devices(
    ui: httpx.AsyncClient, api: httpx.AsyncClient, service: Service
) -> None:
    async with service.engine.begin() as conn:
        await conn.execute(
            schema.devices.insert(),
            [
                {"id": f"bulb-{n:03d}", "model": "lamp", "metadata": {}, "online": False}
                | {"created_at": datetime.now(UTC), "last_seen_at": None}
                for n in range(130)
            ],
        )
    rid = (await publish(api))["id"]
    await sign_in(ui)
    html = (await ui.get(f"/ui/firmware/{rid}")).text
    assert count_of(html, "never_seen") == 130
    assert listed(html, "never_seen") == [f"bulb-{n:03d}" for n in range(100)]
    assert "and 30 more" in state_row(html, "never_seen")


async def test_promote_pause_resume_and_abort_through_the_page(
    ui: httpx.AsyncClient, api: httpx.AsyncClient, service: Service
) -> None:
    await add_devices(service)
    rid = (await publish(api, plan=json.dumps(PLAN)))["id"]
    path = f"/ui/firmware/{rid}"
    csrf = await signed_in_as(ui, service, Role.PUBLISHER, "ops", path)

    async def post(action: str, **form: str) -> httpx.Response:
        return await ui.post(f"{path}/{action}", data={"csrf": csrf, **form})

    page = (await ui.get(path)).text
    for form in ("promote-form", "pause-form", "abort-form"):
        assert f'id="{form}"' in page, form
    assert 'id="resume-form"' not in page
    assert 'id="rollout-form"' not in page  # a plan: promoted, not set by hand
    assert "Promote 2.0.0 to wave 2 (50%)" in page

    # Without this session's CSRF token, nothing happens.
    for forged in ({}, {"csrf": "forged"}):
        assert (await ui.post(f"{path}/pause", data=forged)).status_code == 403
    assert (await api_release(api, rid))["state"] == "rolling"

    paused = await post("pause", reason="  flicker reports from site A ")
    assert (paused.status_code, paused.headers["location"]) == (303, f"{path}?notice=pause")
    body = await api_release(api, rid)
    assert (body["state"], body["stateReason"]) == ("paused", "flicker reports from site A")
    page = (await ui.get(paused.headers["location"])).text
    assert "Paused: offered to nobody new." in page
    assert '<dd id="state-reason">flicker reports from site A</dd>' in page
    assert 'id="resume-form"' in page
    assert 'id="pause-form"' not in page

    # Resuming twice: the second is refused, said on the page, and changes nothing.
    assert (await post("resume")).status_code == 303
    again = await post("resume")
    assert again.status_code == 409
    assert f"cannot resume release {rid}: it is rolling" in again.text
    assert 'id="release-error"' in again.text
    assert (await api_release(api, rid))["state"] == "rolling"

    assert (await post("promote")).status_code == 303
    body = await api_release(api, rid)
    assert (body["state"], body["currentWave"], body["rolloutPercent"]) == ("rolling", 2, 50)
    page = (await ui.get(path)).text
    assert "Current wave: <strong>2 of 3</strong> (50%)" in page
    assert re.findall(r'<tr data-wave="(\d)" class="current"', page) == ["2"]

    # Abort needs its box ticked, on the server too.
    unticked = await post("abort", reason="bricks lamps")
    assert unticked.status_code == 422
    assert "tick the box" in unticked.text
    assert (await api_release(api, rid))["state"] == "rolling"
    assert (await post("abort", reason="bricks lamps", understood="yes")).status_code == 303
    body = await api_release(api, rid)
    assert (body["state"], body["stateReason"]) == ("aborted", "bricks lamps")

    # An aborted release offers no control, and one posted anyway is refused on the page.
    page = (await ui.get(path)).text
    assert 'id="release-controls"' not in page
    assert '<dd id="state-reason">bricks lamps</dd>' in page
    refused = await post("promote")
    assert refused.status_code == 409
    assert f"cannot promote release {rid}: it is aborted" in refused.text

    entries = timeline(page)
    assert [(e["actor"], e["kind"], e["wave"]) for e in entries] == [
        ("admin", "plan", "1"),
        ("token:ops", "paused", "1"),
        ("token:ops", "resumed", "1"),
        ("token:ops", "promoted", "1"),
        ("token:ops", "aborted", "2"),
    ]
    assert "flicker reports from site A" in entries[1]["details"]
    assert "to wave 2 (50%)" in entries[3]["details"]
    assert "bricks lamps" in entries[4]["details"]
    audit = [r for r in await service.audit.page(limit=20, target=rid) if r.actor != "admin"]
    assert [(r.actor, r.action, r.details["via"]) for r in reversed(audit)] == [
        ("token:ops", "ota.pause", "ui"),
        ("token:ops", "ota.resume", "ui"),
        ("token:ops", "ota.promote", "ui"),
        ("token:ops", "ota.abort", "ui"),
    ]
    assert audit[0].details["reason"] == "bricks lamps"


async def test_a_release_without_a_plan_and_an_unknown_one(
    ui: httpx.AsyncClient, api: httpx.AsyncClient, service: Service
) -> None:
    rid = (await publish(api, rolloutPercent=10, tag="site-a"))["id"]
    csrf = await sign_in(ui)
    path = f"/ui/firmware/{rid}"
    page = (await ui.get(path)).text
    assert 'id="no-plan"' in page
    assert "devices tagged" in page
    assert ">site-a</span>" in page
    assert 'id="promote-form"' not in page
    set_percent = await ui.post(
        f"{path}/rollout", data={"csrf": csrf, "percent": "30", "back": "release"}
    )
    assert (set_percent.status_code, set_percent.headers["location"]) == (
        303,
        f"{path}?notice=rollout",
    )
    assert (await api_release(api, rid))["rolloutPercent"] == 30
    refused = await ui.post(f"{path}/promote", data={"csrf": csrf})
    assert refused.status_code == 409
    assert "has no plan" in refused.text

    # A release with a plan refuses a percentage on the page, not with a server error.
    planned = (await publish(api, version="2.1.0", plan=json.dumps(PLAN)))["id"]
    refused = await ui.post(f"/ui/firmware/{planned}/rollout", data={"csrf": csrf, "percent": "5"})
    assert refused.status_code == 409
    assert "follows its plan" in refused.text

    missing = await ui.get("/ui/firmware/fw-nope")
    assert missing.status_code == 404
    assert "No such release" in missing.text
    for action in ("promote", "pause", "resume", "abort"):
        gone = await ui.post(f"/ui/firmware/fw-nope/{action}", data={"csrf": csrf})
        assert gone.status_code == 404, action
        assert "No such release" in gone.text


async def test_a_viewer_reads_the_page_and_may_change_nothing(
    ui: httpx.AsyncClient, api: httpx.AsyncClient, service: Service
) -> None:
    await add_devices(service)
    rid = (await publish(api, plan=json.dumps(PLAN)))["id"]
    csrf = await signed_in_as(ui, service, Role.VIEWER, "wall-screen", f"/ui/firmware/{rid}")
    page = await ui.get(f"/ui/firmware/{rid}")
    assert 'id="plan"' in page.text
    assert 'id="timeline"' in page.text
    assert 'method="post" action="/ui/firmware/' not in page.text
    assert 'method="post" action="/ui/firmware/' not in (await ui.get("/ui/firmware")).text
    for action, form in (
        ("promote", {}),
        ("pause", {"reason": "x"}),
        ("resume", {}),
        ("abort", {"understood": "yes"}),
        ("rollout", {"percent": "5"}),
    ):
        refused = await ui.post(f"/ui/firmware/{rid}/{action}", data={"csrf": csrf, **form})
        assert refused.status_code == 403, action
        assert refused.json()["error"]["code"] == "insufficient_role"
    body = await api_release(api, rid)
    assert (body["state"], body["currentWave"]) == ("rolling", 1)
    audit = await service.audit.page(limit=10, target=rid)
    assert [r.action for r in audit if r.details.get("via") == "ui"] == []
