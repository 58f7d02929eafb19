"""Who gets in: sign-in, the session cookie, refusals without it, CSRF and origin checks,
revoked tokens, and that the cookie never opens the bearer-token API."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from paku_iot.web.ui.sessions import COOKIE_NAME, SessionCodec
from tests.support import ADMIN_TOKEN
from tests.support.ui import csrf_of, sign_in

PAGES = [
    "/ui/fleet",
    "/ui/devices/kitchen-01",
    "/ui/rejected",
    "/ui/firmware",
    "/ui/firmware/fw-1",
    "/ui/provision",
]
ACTIONS = [
    "/ui/devices/kitchen-01/commands",
    "/ui/devices/kitchen-01/config",
    "/ui/devices/kitchen-01/credentials",
    "/ui/devices/kitchen-01/tags",
    "/ui/devices/kitchen-01/decommission",
    "/ui/devices/kitchen-01/recommission",
    "/ui/firmware/fw-1/rollout",
    "/ui/firmware/fw-1/promote",
    "/ui/firmware/fw-1/pause",
    "/ui/firmware/fw-1/resume",
    "/ui/firmware/fw-1/abort",
    "/ui/provision/device",
    "/ui/provision/claim-codes",
    "/ui/signout",
]


def session_cookie(response: httpx.Response) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    assert COOKIE_NAME in cookie
    return cookie


async def test_pages_redirect_to_sign_in_and_actions_are_refused(ui: httpx.AsyncClient) -> None:
    for path in PAGES:
        response = await ui.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/signin?next=%2Fui%2F")
    for path in ["/ui/fleet/live", "/ui/devices/kitchen-01/live"]:
        assert (await ui.get(path)).status_code == 401, path
    for path in ACTIONS:
        response = await ui.post(path, data={"csrf": "x", "name": "ping", "percent": "5"})
        assert response.status_code == 401, path
    assert (await ui.get("/ui")).headers["location"] == "/ui/fleet"


async def test_a_wrong_token_is_refused_without_a_cookie(ui: httpx.AsyncClient) -> None:
    response = await ui.post("/ui/signin", data={"token": "not-the-token"})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert "set-cookie" not in response.headers
    assert (await ui.get("/ui/fleet")).status_code == 303


async def test_sign_in_sets_a_strict_http_only_cookie(ui: httpx.AsyncClient) -> None:
    response = await ui.post("/ui/signin", data={"token": ADMIN_TOKEN, "next": "/ui/firmware"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/firmware"
    morsel = session_cookie(response)[COOKIE_NAME]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "strict"
    assert morsel["path"] == "/ui"
    assert not morsel["secure"]  # plain HTTP here; see the HTTPS test
    page = await ui.get("/ui/fleet")
    assert page.status_code == 200
    assert "no-store" in page.headers["cache-control"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_cookie_is_secure_over_https(service: Service) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="https://paku.test"
    ) as client:
        response = await client.post("/ui/signin", data={"token": ADMIN_TOKEN})
    assert session_cookie(response)[COOKIE_NAME]["secure"] is True


async def test_sign_in_never_redirects_off_the_dashboard(ui: httpx.AsyncClient) -> None:
    for target in ["https://evil.example/", "//evil.example/ui/", "/devices", "/ui\\x"]:
        response = await ui.post("/ui/signin", data={"token": ADMIN_TOKEN, "next": target})
        assert response.headers["location"] == "/ui/fleet", target


async def test_sign_out_clears_the_cookie(ui: httpx.AsyncClient) -> None:
    csrf = await sign_in(ui)
    response = await ui.post("/ui/signout", data={"csrf": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/signin"
    morsel = session_cookie(response)[COOKIE_NAME]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert (await ui.get("/ui/fleet")).status_code == 303


async def test_actions_need_the_csrf_token_and_the_same_origin(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    csrf = await sign_in(ui)
    path = "/ui/devices/kitchen-01/commands"
    assert (await ui.post(path, data={"name": "ping"})).status_code == 403
    assert (await ui.post(path, data={"name": "ping", "csrf": "forged"})).status_code == 403
    other_site = {"Origin": "https://evil.example"}
    refused = await ui.post(path, data={"name": "ping", "csrf": csrf}, headers=other_site)
    assert refused.status_code == 403
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    refused = await ui.post(path, data={"name": "ping", "csrf": csrf}, headers=cross_site)
    assert refused.status_code == 403
    assert await service.commands.page("kitchen-01", limit=10) == []
    same = {"Origin": "http://paku.test"}
    accepted = await ui.post(path, data={"name": "ping", "csrf": csrf}, headers=same)
    assert accepted.status_code == 303
    [command] = await service.commands.page("kitchen-01", limit=10)
    assert command.name == "ping"


async def test_a_revoked_token_ends_its_sessions(ui: httpx.AsyncClient, service: Service) -> None:
    token = await service.tokens.create("ops")
    await sign_in(ui, token)
    assert (await ui.get("/ui/fleet")).status_code == 200
    await service.tokens.revoke("ops")
    assert (await ui.get("/ui/fleet")).status_code == 303
    assert (await ui.get("/ui/fleet/live")).status_code == 401


async def test_forged_tampered_or_expired_cookies_are_refused(
    ui: httpx.AsyncClient, service: Service
) -> None:
    await sign_in(ui)
    good = ui.cookies[COOKIE_NAME]
    version, body, mac = good.split(".")
    foreign = SessionCodec(b"some other key").issue("admin", ADMIN_TOKEN)
    expired = SessionCodec.from_data_dir(service.settings.data_dir).issue(
        "admin", ADMIN_TOKEN, now=0
    )
    # Signed with the right key, for a live token, but never signed in on the server.
    unrecorded = SessionCodec.from_data_dir(service.settings.data_dir).issue("admin", ADMIN_TOKEN)
    for value in [f"{version}.{body}x.{mac}", foreign, expired, unrecorded, "garbage"]:
        ui.cookies.clear()
        ui.cookies.set(COOKIE_NAME, value, domain="paku.test", path="/ui")
        assert (await ui.get("/ui/fleet")).status_code == 303, value


async def test_the_cookie_does_not_open_the_api(ui: httpx.AsyncClient) -> None:
    await sign_in(ui)
    assert (await ui.get("/devices")).status_code == 401


async def test_ui_actions_are_audited_with_the_actor(
    ui: httpx.AsyncClient, service: Service
) -> None:
    token = await service.tokens.create("ops")
    csrf = await sign_in(ui, token)
    response = await ui.post(
        "/ui/provision/device", data={"csrf": csrf, "model": "paku-sensor", "id": "porch-01"}
    )
    assert response.status_code == 201
    assert "porch-01" in response.text
    rows = await service.audit.page(limit=10, before_id=None, action=None, target="porch-01")
    assert [(r.actor, r.action, r.details["via"]) for r in rows] == [
        ("token:ops", "device.provision", "ui")
    ]


async def test_static_files_are_served_and_confined(ui: httpx.AsyncClient) -> None:
    css = await ui.get("/ui/static/app.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    uplot = await ui.get("/ui/static/vendor/uplot/uPlot.iife.min.js")
    assert uplot.status_code == 200
    for path in ["/ui/static/../sessions.py", "/ui/static/%2e%2e/sessions.py", "/ui/static/x"]:
        assert (await ui.get(path)).status_code == 404, path


@pytest.mark.parametrize("path", ["/ui/fleet", "/ui/provision", "/ui/firmware"])
async def test_every_signed_in_page_carries_the_sign_out_form(
    ui: httpx.AsyncClient, path: str
) -> None:
    csrf = await sign_in(ui)
    page = await ui.get(path)
    assert page.status_code == 200
    assert csrf_of(page.text) == csrf
    assert 'action="/ui/signout"' in page.text


async def test_a_copied_cookie_is_refused_after_sign_out(
    ui: httpx.AsyncClient, service: Service
) -> None:
    csrf = await sign_in(ui)
    copied = ui.cookies[COOKIE_NAME]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as thief:
        thief.cookies.set(COOKIE_NAME, copied, domain="paku.test", path="/ui")
        assert (await thief.get("/ui/fleet")).status_code == 200
        assert (await ui.post("/ui/signout", data={"csrf": csrf})).status_code == 303
        # Signed out on the server, not only in the browser that signed out.
        assert (await thief.get("/ui/fleet")).status_code == 303
        assert (await thief.get("/ui/fleet/live")).status_code == 401
        refused = await thief.post("/ui/devices/kitchen-01/commands", data={"csrf": csrf})
        assert refused.status_code == 401


async def test_sign_out_ends_only_its_own_session(ui: httpx.AsyncClient, service: Service) -> None:
    await sign_in(ui)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as other:
        other_csrf = await sign_in(other)
        assert (await other.post("/ui/signout", data={"csrf": other_csrf})).status_code == 303
    assert (await ui.get("/ui/fleet")).status_code == 200


async def test_a_cookie_from_before_a_restart_still_works(
    ui: httpx.AsyncClient, service: Service
) -> None:
    # Sessions live in the database, not in the process: a new app (a restart, another
    # replica) accepts the cookie.
    await sign_in(ui)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as restarted:
        restarted.cookies.set(COOKIE_NAME, ui.cookies[COOKIE_NAME], domain="paku.test", path="/ui")
        assert (await restarted.get("/ui/fleet")).status_code == 200
