"""CORS (PAKU_CORS_ORIGINS): an allowed origin gets the headers, another does not, and the
dashboard never does. None by default: tests/web/api/test_roles.py."""

from __future__ import annotations

import httpx
import pytest

from paku_iot.settings import Settings

ALLOWED = "https://ops.example.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"cors_origins": (ALLOWED, "http://localhost:5173")})


def test_origins_are_read_comma_separated_and_must_be_bare_origins() -> None:
    read = Settings(cors_origins=f"{ALLOWED}, http://localhost:5173")  # type: ignore[arg-type]
    assert read.cors_origins == (ALLOWED, "http://localhost:5173")
    with pytest.raises(ValueError, match="not an origin"):
        Settings(cors_origins="https://ops.example.com/app")  # type: ignore[arg-type]


async def test_an_allowed_origin_gets_the_headers(api: httpx.AsyncClient) -> None:
    response = await api.get("/devices", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in response.headers
    preflight = await api.options(
        "/devices",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    # A refusal too, so that the browser app can read why.
    refused = await api.get("/devices", headers={"Origin": ALLOWED, "Authorization": "Bearer x"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED


async def test_another_origin_gets_none(api: httpx.AsyncClient) -> None:
    response = await api.get("/devices", headers={"Origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await api.options(
        "/devices",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


async def test_the_dashboard_never_gets_cors_headers(api: httpx.AsyncClient) -> None:
    response = await api.get("/ui/signin", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
