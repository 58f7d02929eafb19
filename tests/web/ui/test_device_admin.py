"""The dashboard's tags and decommissioning over plain HTTP on both databases: the fleet
filters by tag and shows tags, the device page edits them (with CSRF), decommissions and
recommissions."""

from __future__ import annotations

import re

import httpx

from paku_iot.server.service import Service
from tests.support.ui import sign_in

ROW_ID = re.compile(r'<tr data-device-id="([^"]+)">')


async def test_the_fleet_filters_by_tag_and_shows_tags(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await service.registry.provision(model="m", device_id="hall-01", tags=["hall", "b"])
    await service.registry.provision(model="m", device_id="lab-01", tags=["lab"])
    await service.registry.provision(model="m", device_id="gone-01", tags=["hall"])
    await service.registry.decommission("gone-01")
    await sign_in(ui)
    page = await ui.get("/ui/fleet")
    assert ROW_ID.findall(page.text) == ["hall-01", "lab-01"]  # not the decommissioned one
    assert 'id="count-total">2<' in page.text
    assert '<option value="hall" >hall</option>' in page.text  # the tag filter's choices
    assert '<a class="tag" href="/ui/fleet?tag=lab">lab</a>' in page.text
    hall = await ui.get("/ui/fleet", params={"tag": "hall"})
    assert ROW_ID.findall(hall.text) == ["hall-01"]
    assert 'id="count-matching">1<' in hall.text
    live = await ui.get("/ui/fleet/live", params={"tag": "lab"})
    assert ROW_ID.findall(live.text) == ["lab-01"]
    gone = await ui.get("/ui/fleet", params={"show": "decommissioned"})
    assert ROW_ID.findall(gone.text) == ["gone-01"]


async def test_the_device_page_edits_tags_and_decommissions(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01", tags=["old"])
    csrf = await sign_in(ui)
    base = "/ui/devices/kitchen-01"
    page = await ui.get(base)
    assert 'id="tags-text" name="tags" maxlength="2000" value="old"' in page.text
    saved = await ui.post(f"{base}/tags", data={"csrf": csrf, "tags": "hall, floor-2  east"})
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{base}?notice=tags"
    assert (await service.registry.get("kitchen-01")).tags == ("east", "floor-2", "hall")
    bad = await ui.post(f"{base}/tags", data={"csrf": csrf, "tags": "Not/Ok"})
    assert bad.status_code == 422
    assert 'id="tags-error"' in bad.text
    assert (await service.registry.get("kitchen-01")).tags == ("east", "floor-2", "hall")
    no_csrf = await ui.post(f"{base}/tags", data={"tags": "x"})
    assert no_csrf.status_code == 403

    gone = await ui.post(f"{base}/decommission", data={"csrf": csrf})
    assert gone.status_code == 303
    page = await ui.get(gone.headers["location"])
    assert 'id="device-decommissioned"' in page.text
    assert 'id="decommissioned-note"' in page.text
    assert "/recommission" in page.text
    assert (await service.registry.get("kitchen-01")).has_credentials is False

    back = await ui.post(f"{base}/recommission", data={"csrf": csrf})
    assert back.status_code == 200
    assert 'id="cred-password"' in back.text
    assert (await service.registry.get("kitchen-01")).decommissioned_at is None
    # Every one of these is audited with the role it was done with, as the API's are.
    entries = await service.audit.page(limit=20)
    done = {(e.action, e.target): e.role for e in entries if e.action.startswith("device.")}
    assert done[("device.update", "kitchen-01")] == "admin"
    assert done[("device.decommission", "kitchen-01")] == "admin"
    assert done[("device.recommission", "kitchen-01")] == "admin"
