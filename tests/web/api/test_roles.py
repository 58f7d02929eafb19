"""Token roles on the API: every route, called with a token of every role, answers 403
exactly where the role lacks what the route needs (on both databases), and the audit log
names the role an action was taken with.

`ALLOWED` is the permission table as a reader checks it, route by route, written out here
rather than read from the code: a route whose declaration drifts from it fails, and so does a
new route nobody put in the table."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from paku_iot.security.roles import Role, roles_with
from paku_iot.server.service import Service
from paku_iot.web.api.auth import ADMIN_ONLY, declared_permissions
from paku_iot.web.app import API_ROUTERS, create_app

READERS = {Role.VIEWER, Role.OPERATOR, Role.ADMIN}
OPERATORS = {Role.OPERATOR, Role.ADMIN}
RELEASE_READERS = set(Role)
RELEASE_WRITERS = {Role.PUBLISHER, Role.ADMIN}
ADMINS = {Role.ADMIN}
EVERYONE = None  # no admin token needed: health, metrics, device endpoints, claiming

ALLOWED: dict[tuple[str, str], set[Role] | None] = {
    ("GET", "/health"): EVERYONE,
    ("GET", "/metrics"): EVERYONE,
    ("POST", "/devices"): ADMINS,
    ("GET", "/devices"): READERS,
    ("GET", "/devices/{device_id}"): READERS,
    ("PATCH", "/devices/{device_id}"): OPERATORS,
    ("DELETE", "/devices/{device_id}"): ADMINS,
    ("POST", "/devices/{device_id}/credentials"): ADMINS,
    ("POST", "/devices/tags"): OPERATORS,
    ("POST", "/devices/{device_id}/decommission"): ADMINS,
    ("POST", "/devices/{device_id}/recommission"): ADMINS,
    ("GET", "/devices/{device_id}/telemetry"): READERS,
    ("GET", "/devices/{device_id}/events"): READERS,
    ("GET", "/devices/{device_id}/telemetry/aggregate"): READERS,
    ("GET", "/telemetry/export"): READERS,
    ("GET", "/events/export"): READERS,
    ("GET", "/rejected"): READERS,
    ("POST", "/devices/{device_id}/commands"): OPERATORS,
    ("POST", "/commands"): OPERATORS,
    ("GET", "/devices/{device_id}/commands"): READERS,
    ("GET", "/devices/{device_id}/commands/{command_id}"): READERS,
    ("PUT", "/devices/{device_id}/config"): OPERATORS,
    ("GET", "/devices/{device_id}/config"): READERS,
    ("PUT", "/config"): OPERATORS,
    ("POST", "/ota/firmware"): RELEASE_WRITERS,
    ("GET", "/ota/releases"): RELEASE_READERS,
    ("GET", "/ota/releases/{release_id}"): RELEASE_READERS,
    ("PATCH", "/ota/releases/{release_id}"): RELEASE_WRITERS,
    ("POST", "/ota/releases/{release_id}/promote"): RELEASE_WRITERS,
    ("POST", "/ota/releases/{release_id}/pause"): RELEASE_WRITERS,
    ("POST", "/ota/releases/{release_id}/resume"): RELEASE_WRITERS,
    ("POST", "/ota/releases/{release_id}/abort"): RELEASE_WRITERS,
    ("GET", "/ota/releases/{release_id}/timeline"): RELEASE_READERS,
    ("GET", "/ota/releases/{release_id}/devices"): RELEASE_READERS,
    ("GET", "/ota/manifest.json"): EVERYONE,
    ("GET", "/ota/firmware/{sha256}.bin"): EVERYONE,
    ("HEAD", "/ota/firmware/{sha256}.bin"): EVERYONE,
    ("GET", "/ota/public-key"): EVERYONE,
    ("POST", "/claim-codes"): ADMINS,
    ("POST", "/claim"): EVERYONE,
    ("GET", "/audit"): ADMINS,
    ("POST", "/alert-rules"): ADMINS,
    ("GET", "/alert-rules"): READERS,
    ("GET", "/alert-rules/{rule_id}"): READERS,
    ("PATCH", "/alert-rules/{rule_id}"): ADMINS,
    ("DELETE", "/alert-rules/{rule_id}"): ADMINS,
    ("GET", "/alerts"): READERS,
    ("GET", "/alerts/{alert_id}"): READERS,
    ("POST", "/alerts/{alert_id}/acknowledge"): OPERATORS,
    ("POST", "/alerts/{alert_id}/silence"): OPERATORS,
    ("GET", "/alerts/{alert_id}/deliveries"): READERS,
}


def api_operations(service: Service) -> list[tuple[str, str]]:
    """Every (method, path) of the API, as the app's OpenAPI document lists them (FastAPI
    0.165 keeps included routers nested in `app.routes`; the document is the flat list, and
    `test_openapi.py` checks that every API route is in it). The dashboard is tested on its
    own (tests/web/ui/test_roles.py)."""
    paths = service_openapi(service)["paths"]
    return sorted((method.upper(), path) for path, item in paths.items() for method in item)


def concrete(path: str) -> str:
    # Ids that name nothing: an allowed call answers its own 404 (or 422), never a change.
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture
async def clients(service: Service) -> AsyncIterator[dict[Role, httpx.AsyncClient]]:
    app = create_app(service)
    made: dict[Role, httpx.AsyncClient] = {}
    for role in Role:
        token = await service.tokens.create(f"as-{role}", role)
        made[role] = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://paku.test",
            headers={"Authorization": f"Bearer {token}"},
        )
    yield made
    for client in made.values():
        await client.aclose()


def test_the_table_lists_every_api_route(service: Service) -> None:
    assert set(api_operations(service)) == set(ALLOWED)
    # The middleware that refuses anonymous calls before the body is read finds the token
    # routes by their security in the OpenAPI document.
    paths = service_openapi(service)["paths"]
    for (method, path), roles in ALLOWED.items():
        security = paths[path][method.lower()].get("security")
        assert (security == ADMIN_ONLY) == (roles is not EVERYONE), (method, path)


def test_each_token_route_declares_the_permission_the_table_expects() -> None:
    declared = declared_permissions(API_ROUTERS)
    assert set(declared) == {op for op, roles in ALLOWED.items() if roles is not EVERYONE}
    for operation, permission in declared.items():
        assert set(roles_with(permission)) == ALLOWED[operation], (operation, permission)


async def test_a_refused_upload_is_not_read(clients: dict[Role, httpx.AsyncClient]) -> None:
    """The middleware refuses a role without the permission before the body, as it refuses
    a caller without a token: a viewer's upload is never spooled."""
    sent: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(100):
            sent.append(i)
            yield b"x" * 65536

    response = await clients[Role.VIEWER].post(
        "/ota/firmware",
        content=body(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_role"
    assert len(sent) <= 1


def service_openapi(service: Service) -> dict[str, Any]:
    document: dict[str, Any] = create_app(service).openapi()
    return document


async def test_each_role_gets_403_exactly_where_it_lacks_the_permission(
    service: Service, clients: dict[Role, httpx.AsyncClient]
) -> None:
    wrong: list[str] = []
    operations = api_operations(service)
    assert len(operations) == len(ALLOWED)
    for method, path in operations:
        allowed = ALLOWED[(method, path)]
        for role, client in clients.items():
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            response = await client.request(method, concrete(path), **body)
            refused = response.status_code == 403
            should_refuse = allowed is not EVERYONE and role not in allowed
            if refused != should_refuse:
                wrong.append(f"{role} {method} {path}: {response.status_code}")
            if should_refuse and refused:
                error = response.json()["error"]
                assert error["code"] == "insufficient_role"
                assert f"role '{role}'" in error["message"]
    assert wrong == []


async def test_a_refusal_names_the_role_and_what_is_needed(
    clients: dict[Role, httpx.AsyncClient],
) -> None:
    response = await clients[Role.VIEWER].delete("/devices/kitchen-01")
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "insufficient_role",
        "message": "token:as-viewer has role 'viewer', which lacks 'devices:admin' "
        "(roles that have it: admin)",
    }


async def test_the_audit_log_names_the_role(
    api: httpx.AsyncClient, service: Service, clients: dict[Role, httpx.AsyncClient]
) -> None:
    await service.registry.provision(model="lamp", device_id="aud-r1")
    sent = await clients[Role.OPERATOR].post("/devices/aud-r1/commands", json={"name": "ping"})
    assert sent.status_code == 202, sent.text
    patched = await clients[Role.OPERATOR].patch("/devices/aud-r1", json={"notes": "hall"})
    assert patched.status_code == 200, patched.text
    await api.delete("/devices/aud-r1")
    trail = (await api.get("/audit", params={"target": "aud-r1"})).json()["items"]
    assert [(e["action"], e["actor"], e["role"]) for e in trail] == [
        ("device.delete", "admin", "admin"),
        ("device.update", "token:as-operator", "operator"),
        ("command.send", "token:as-operator", "operator"),
    ]


async def test_no_cors_headers_by_default(api: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://ops.example.com"}
    response = await api.get("/devices", headers=origin)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await api.options(
        "/devices", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers
