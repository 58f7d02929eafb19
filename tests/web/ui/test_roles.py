"""The dashboard by role: a page shows only the forms the signed-in token's role may use,
and the server refuses the others anyway (403) when posted by hand."""

from __future__ import annotations

import httpx

from paku_iot.security.roles import Role
from paku_iot.server.service import Service
from tests.support.ui import csrf_of, sign_in


async def signed_in_as(ui: httpx.AsyncClient, service: Service, role: Role) -> str:
    token = await service.tokens.create(f"ui-{role}", role)
    response = await ui.post("/ui/signin", data={"token": token})
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


async def test_a_viewer_sees_no_admin_form_and_its_post_is_refused(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await service.registry.provision(model="lamp", device_id="kitchen-01")
    assert await signed_in_as(ui, service, Role.VIEWER) == "/ui/fleet"
    page = await ui.get("/ui/devices/kitchen-01")
    assert page.status_code == 200
    assert "token:ui-viewer (viewer)" in page.text
    assert "Rotate credentials" not in page.text
    assert 'id="command-form"' not in page.text
    assert 'href="/ui/provision"' not in page.text
    csrf = csrf_of(page.text)  # the sign-out form's: a real session's token

    refused = await ui.post("/ui/devices/kitchen-01/credentials", data={"csrf": csrf})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_role"
    assert "'viewer'" in refused.json()["error"]["message"]
    claim = await ui.post("/ui/provision/claim-codes", data={"csrf": csrf, "model": "lamp"})
    assert claim.status_code == 403
    assert (await ui.get("/ui/provision")).status_code == 403
    assert await service.audit.page(limit=10, action="device.rotate_credentials") == []


async def test_an_operator_sends_commands_but_does_not_rotate(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await service.registry.provision(model="lamp", device_id="kitchen-01")
    await signed_in_as(ui, service, Role.OPERATOR)
    page = await ui.get("/ui/devices/kitchen-01")
    assert 'id="command-form"' in page.text
    assert "Rotate credentials" not in page.text
    sent = await ui.post(
        "/ui/devices/kitchen-01/commands", data={"csrf": csrf_of(page.text), "name": "ping"}
    )
    assert sent.status_code in (200, 303), sent.text


async def test_a_publisher_lands_on_firmware_and_sees_no_fleet(
    ui: httpx.AsyncClient, service: Service
) -> None:
    assert await signed_in_as(ui, service, Role.PUBLISHER) == "/ui/firmware"
    page = await ui.get("/ui/firmware")
    assert page.status_code == 200
    assert 'href="/ui/fleet"' not in page.text.split("</header>")[0].replace(
        'class="brand" href="/ui/fleet"', ""
    )
    assert (await ui.get("/ui/fleet")).status_code == 403


async def test_the_bootstrap_admin_sees_everything(ui: httpx.AsyncClient, service: Service) -> None:
    await service.registry.provision(model="lamp", device_id="kitchen-01")
    await sign_in(ui)
    page = await ui.get("/ui/devices/kitchen-01")
    assert "Rotate credentials" in page.text
    assert 'id="command-form"' in page.text
    assert 'href="/ui/provision"' in page.text
    assert "admin (admin)" in page.text
