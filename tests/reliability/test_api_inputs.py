"""Odd API input that schemathesis found turning into 500s on PostgreSQL (SQLite took it):
every such request is now a 422 with the usual error body, on both databases. And odd
credentials from a caller who has none: a 401, never a 500."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.web.app import create_app


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/ota/releases?model=a%00b"),
        ("GET", "/devices?model=%00"),
        ("GET", "/rejected?reason=x%00"),
        ("GET", "/audit?target=%00"),
        ("GET", "/devices/a%00b"),
        ("GET", "/devices/abc/events?type=%00"),
        ("DELETE", "/devices/a%00b"),
        ("GET", "/devices?cursor=" + cursor_of(b'["\\u0000"]')),
        ("GET", "/devices?cursor=" + cursor_of(b"[" * 20_000)),
    ],
)
async def test_nul_in_the_url_is_refused(api: httpx.AsyncClient, method: str, url: str) -> None:
    response = await api.request(method, url)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {"invalid_input", "invalid_cursor"}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m\u0000"},
        {"model": "m", "notes": "\u0000"},
        {"model": "m", "metadata": {"k": "v\u0000"}},
        {"model": "m", "metadata": {"k\u0000": 1}},
        {"model": "m", "metadata": nested(100)},
        {"model": "m", "metadata": nested(300)},
    ],
)
async def test_bodies_the_database_cannot_hold_are_refused(
    api: httpx.AsyncClient, body: object
) -> None:
    response = await api.post("/devices", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    listed = await api.get("/devices")
    assert listed.status_code == 200
    assert listed.json()["items"] == []


async def test_deep_but_sane_metadata_round_trips(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/devices", json={"model": "m", "id": "deep-1", "metadata": nested(60)}
    )
    assert response.status_code == 201, response.text
    assert (await api.get("/devices/deep-1")).json()["metadata"] == nested(60)


async def test_config_and_command_params_are_checked_too(api: httpx.AsyncClient) -> None:
    await api.post("/devices", json={"model": "m", "id": "cfg-1"})
    config = await api.put("/devices/cfg-1/config", json={"config": {"x": "\u0000"}})
    assert config.status_code == 422
    command = await api.post("/devices/cfg-1/commands", json={"name": "n", "params": nested(80)})
    assert command.status_code == 422


async def test_a_body_that_is_not_utf8_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/devices", content=b'{"model": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


async def test_a_malformed_firmware_upload_is_a_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/ota/firmware",
        content=b"--xyz\r\nTrue--xyz--\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code in {400, 422}
    assert "error" in response.json()


@pytest.fixture
async def anonymous(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The app with no credentials at all."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as client:
        yield client


@pytest.mark.parametrize(
    "value",
    [
        "v1.eyJhIjoiYWRtaW4ifQ.\u00e9\u00e9\u00e9",  # the MAC not ASCII
        "v1.\u00e9.abc",
        "\u00ff\u00fe\u00fd",
        "v1.a\u0000.b",
    ],
)
async def test_an_odd_session_cookie_is_refused_not_a_500(
    anonymous: httpx.AsyncClient, value: str
) -> None:
    # Sent as raw bytes: a browser sends whatever the cookie jar holds.
    cookie = {"cookie": f"paku_ui_session={value}".encode("latin-1")}
    live = await anonymous.get("/ui/fleet/live", headers=cookie)
    assert live.status_code == 401, live.text
    assert live.json()["error"]["code"] == "signin_required"
    page = await anonymous.get("/ui/fleet", headers=cookie)
    assert page.status_code == 303
    action = await anonymous.post("/ui/signout", data={"csrf": "x"}, headers=cookie)
    assert action.status_code == 401


@pytest.mark.parametrize(
    "credentials",
    [b"a\x00b:password", b"kitchen-01\x00:password", b"\x00:\x00", "\u00e9t\u00e9:pw".encode()],
)
async def test_odd_basic_credentials_are_refused_not_a_500(
    anonymous: httpx.AsyncClient, credentials: bytes
) -> None:
    header = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    response = await anonymous.get("/ota/manifest.json?model=m", headers=header)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert response.headers["www-authenticate"] == 'Basic realm="paku-iot"'
