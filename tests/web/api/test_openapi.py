"""The OpenAPI document as a client generator reads it: security schemes, stable operation
ids, and for every operation exactly the statuses it can answer.

The last is checked by asking: each operation gets a request for every status it can answer
(`probes`), each request must get that status with the documented body, and then the
statuses seen must be the statuses documented, no more and no fewer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from paku_iot.security.roles import Role
from paku_iot.server.service import Service
from paku_iot.settings import Settings
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.records import AlertEvent, AlertTransition
from tests.support import eventually
from tests.support.broker import Broker

# The schema does not depend on the database: one kind is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

METRICS_TOKEN = "test-metrics-token-0123456789"
MAX_FIRMWARE = 1024  # the smallest limit the settings allow, so that 413 is cheap to reach

# What generated clients name their calls: changing one breaks their users' code.
OPERATION_IDS = {
    ("get", "/health"): "health",
    ("get", "/metrics"): "metrics",
    ("post", "/devices"): "provision_device",
    ("get", "/devices"): "list_devices",
    ("get", "/devices/{device_id}"): "get_device",
    ("patch", "/devices/{device_id}"): "update_device",
    ("delete", "/devices/{device_id}"): "delete_device",
    ("post", "/devices/{device_id}/credentials"): "rotate_credentials",
    ("post", "/devices/tags"): "change_tags",
    ("post", "/devices/{device_id}/decommission"): "decommission_device",
    ("post", "/devices/{device_id}/recommission"): "recommission_device",
    ("get", "/devices/{device_id}/telemetry"): "device_telemetry",
    ("get", "/devices/{device_id}/events"): "device_events",
    ("get", "/devices/{device_id}/telemetry/aggregate"): "aggregate_telemetry",
    ("get", "/telemetry/export"): "export_telemetry",
    ("get", "/events/export"): "export_events",
    ("get", "/rejected"): "rejected_messages",
    ("post", "/devices/{device_id}/commands"): "send_command",
    ("get", "/devices/{device_id}/commands"): "list_commands",
    ("post", "/commands"): "send_bulk_command",
    ("get", "/devices/{device_id}/commands/{command_id}"): "get_command",
    ("put", "/devices/{device_id}/config"): "put_config",
    ("get", "/devices/{device_id}/config"): "get_config",
    ("put", "/config"): "put_bulk_config",
    ("post", "/ota/firmware"): "publish_firmware",
    ("get", "/ota/releases"): "list_releases",
    ("get", "/ota/releases/{release_id}"): "get_release",
    ("patch", "/ota/releases/{release_id}"): "update_release",
    ("post", "/ota/releases/{release_id}/promote"): "promote_release",
    ("post", "/ota/releases/{release_id}/pause"): "pause_release",
    ("post", "/ota/releases/{release_id}/resume"): "resume_release",
    ("post", "/ota/releases/{release_id}/abort"): "abort_release",
    ("get", "/ota/releases/{release_id}/timeline"): "release_timeline",
    ("get", "/ota/releases/{release_id}/devices"): "release_devices",
    ("get", "/ota/manifest.json"): "manifest",
    ("get", "/ota/firmware/{sha256}.bin"): "download_firmware",
    ("head", "/ota/firmware/{sha256}.bin"): "firmware_headers",
    ("get", "/ota/public-key"): "public_key",
    ("post", "/claim-codes"): "create_claim_codes",
    ("post", "/claim"): "claim",
    ("get", "/audit"): "audit_log",
    ("post", "/alert-rules"): "create_alert_rule",
    ("get", "/alert-rules"): "list_alert_rules",
    ("get", "/alert-rules/{rule_id}"): "get_alert_rule",
    ("patch", "/alert-rules/{rule_id}"): "update_alert_rule",
    ("delete", "/alert-rules/{rule_id}"): "delete_alert_rule",
    ("get", "/alerts"): "list_alerts",
    ("get", "/alerts/{alert_id}"): "get_alert",
    ("post", "/alerts/{alert_id}/acknowledge"): "acknowledge_alert",
    ("post", "/alerts/{alert_id}/silence"): "silence_alert",
    ("get", "/alerts/{alert_id}/deliveries"): "alert_deliveries",
}
PUBLIC = {"health", "download_firmware", "firmware_headers", "public_key", "claim"}
DEVICE_OR_ADMIN = {"manifest"}
METRICS = {"metrics"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"metrics_token": METRICS_TOKEN, "ota_max_firmware_bytes": MAX_FIRMWARE}
    )


async def openapi(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation)."""
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            found[operation["operationId"]] = (method, path, operation)
    return found


async def test_every_operation_has_its_stable_snake_case_id(api: httpx.AsyncClient) -> None:
    document = await openapi(api)
    ids = [op["operationId"] for methods in document["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)), "operation ids repeat"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
    found = {
        (m, p): op["operationId"] for p, ms in document["paths"].items() for m, op in ms.items()
    }
    assert found == OPERATION_IDS


async def test_security_schemes_say_who_may_call_what(api: httpx.AsyncClient) -> None:
    document = await openapi(api)
    schemes = document["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "AdminToken": ("http", "bearer"),
        "DeviceCredentials": ("http", "basic"),
        "MetricsToken": ("http", "bearer"),
    }
    for operation_id, (method, path, operation) in operations(document).items():
        security = operation.get("security")
        if operation_id in PUBLIC:
            assert security is None, (method, path)
        elif operation_id in DEVICE_OR_ADMIN:
            assert security == [{"AdminToken": []}, {"DeviceCredentials": []}], (method, path)
        elif operation_id in METRICS:
            assert security == [{"MetricsToken": []}, {}]  # optional, as settings say
        else:
            assert security == [{"AdminToken": []}], (method, path)


@dataclass(frozen=True)
class Probe:
    """A request that gets `status` from the operation at `method` `path` (a template)."""

    status: int
    method: str
    path: str
    values: dict[str, str] = field(default_factory=dict)  # the path's parameters
    request: dict[str, Any] = field(default_factory=dict)  # httpx.request's other arguments

    @property
    def url(self) -> str:
        return self.path.format(**self.values)


NOBODY = {"headers": {"Authorization": ""}}
WRONG_TOKEN = {"headers": {"Authorization": "Bearer wrong"}}
NUL_IN_QUERY = {"params": {"q": "\x00"}}  # refused before routing, whatever the route
NUL = "a%00b"  # a path parameter with a NUL, refused the same way


@dataclass
class Fleet:
    """What the probes need to exist: a device (with its password), a command, a release,
    a claim code, an alert rule and an alert."""

    password: str
    command_id: str
    release_id: str
    sha256: str
    claim_code: str
    rule_id: str
    alert_id: int
    viewer_token: str
    publisher_token: str


ALERT_RULE = {
    "name": "hot",
    "kind": "threshold",
    "field": "t",
    "above": 30,
    "destinations": [{"type": "ntfy", "url": "https://ntfy.example/t"}],
}


async def make_fleet(api: httpx.AsyncClient, service: Service) -> Fleet:
    created = (await api.post("/devices", json={"model": "lamp", "id": "dev-1"})).json()
    await api.post("/devices", json={"model": "lamp", "id": "gone-1"})
    command = (await api.post("/devices/dev-1/commands", json={"name": "blink"})).json()
    release = (
        await api.post(
            "/ota/firmware",
            data={"model": "lamp", "version": "1.0.0"},
            files={"file": ("firmware.bin", b"\x01" * 100)},
        )
    ).json()
    [code] = (await api.post("/claim-codes", json={"model": "lamp"})).json()["items"]
    rule = (await api.post("/alert-rules", json=ALERT_RULE)).json()
    await api.post("/alert-rules", json=ALERT_RULE | {"name": "gone"})
    # No evaluator in this test: an alert opened straight through the store.
    [alert] = await AlertStore(service.engine).apply(
        [AlertTransition(rule["id"], "dev-1", AlertEvent.OPENED, datetime.now(UTC), {})],
        lambda _: (),
    )
    return Fleet(
        password=created["credentials"]["password"],
        command_id=command["id"],
        release_id=release["id"],
        sha256=release["sha256"],
        claim_code=code["claimCode"],
        rule_id=rule["id"],
        alert_id=alert.id,
        viewer_token=await service.tokens.create("viewer", Role.VIEWER),
        publisher_token=await service.tokens.create("ci", Role.PUBLISHER),
    )


def probes(fleet: Fleet) -> list[Probe]:
    dev = {"device_id": "dev-1"}
    ghost = {"device_id": "ghost-1"}
    command = {"device_id": "dev-1", "command_id": fleet.command_id}
    release = {"release_id": fleet.release_id}
    image = {"sha256": fleet.sha256}
    device_auth = {"auth": ("dev-1", fleet.password)}
    table = [
        Probe(200, "get", "/health"),
        Probe(422, "get", "/health", request=NUL_IN_QUERY),
        Probe(
            200,
            "get",
            "/metrics",
            request={"headers": {"Authorization": f"Bearer {METRICS_TOKEN}"}},
        ),
        Probe(401, "get", "/metrics"),  # the admin token is not the metrics token
        Probe(422, "get", "/metrics", request=NUL_IN_QUERY),
        Probe(201, "post", "/devices", request={"json": {"model": "lamp", "id": "dev-2"}}),
        Probe(401, "post", "/devices", request={"json": {"model": "lamp"}, **NOBODY}),
        Probe(409, "post", "/devices", request={"json": {"model": "lamp", "id": "dev-1"}}),
        Probe(422, "post", "/devices", request={"json": {"model": ""}}),
        Probe(200, "get", "/devices"),
        Probe(401, "get", "/devices", request=WRONG_TOKEN),
        Probe(422, "get", "/devices", request={"params": {"limit": 0}}),
        Probe(200, "get", "/devices/{device_id}", dev),
        Probe(401, "get", "/devices/{device_id}", dev, NOBODY),
        Probe(404, "get", "/devices/{device_id}", ghost),
        Probe(422, "get", "/devices/{device_id}", {"device_id": NUL}),
        Probe(200, "patch", "/devices/{device_id}", dev, {"json": {"notes": "hall"}}),
        Probe(401, "patch", "/devices/{device_id}", dev, {"json": {"notes": "x"}, **NOBODY}),
        Probe(404, "patch", "/devices/{device_id}", ghost, {"json": {"notes": "x"}}),
        Probe(422, "patch", "/devices/{device_id}", dev, {"json": {}}),
        Probe(204, "delete", "/devices/{device_id}", {"device_id": "gone-1"}),
        Probe(401, "delete", "/devices/{device_id}", dev, NOBODY),
        Probe(404, "delete", "/devices/{device_id}", ghost),
        Probe(422, "delete", "/devices/{device_id}", {"device_id": NUL}),
        Probe(200, "post", "/devices/{device_id}/credentials", {"device_id": "dev-2"}),
        Probe(401, "post", "/devices/{device_id}/credentials", dev, NOBODY),
        Probe(404, "post", "/devices/{device_id}/credentials", ghost),
        Probe(422, "post", "/devices/{device_id}/credentials", {"device_id": NUL}),
        Probe(200, "post", "/devices/tags", request={"json": {"ids": ["dev-1"], "add": ["x"]}}),
        Probe(401, "post", "/devices/tags", request={"json": {"ids": ["dev-1"]}, **NOBODY}),
        Probe(404, "post", "/devices/tags", request={"json": {"ids": ["ghost-1"], "add": ["x"]}}),
        Probe(422, "post", "/devices/tags", request={"json": {"ids": []}}),
        Probe(200, "post", "/devices/{device_id}/decommission", {"device_id": "dev-2"}),
        Probe(401, "post", "/devices/{device_id}/decommission", dev, NOBODY),
        Probe(404, "post", "/devices/{device_id}/decommission", ghost),
        Probe(422, "post", "/devices/{device_id}/decommission", {"device_id": NUL}),
        Probe(409, "post", "/devices/{device_id}/credentials", {"device_id": "dev-2"}),
        Probe(200, "post", "/devices/{device_id}/recommission", {"device_id": "dev-2"}),
        Probe(401, "post", "/devices/{device_id}/recommission", dev, NOBODY),
        Probe(404, "post", "/devices/{device_id}/recommission", ghost),
        Probe(409, "post", "/devices/{device_id}/recommission", dev),
        Probe(422, "post", "/devices/{device_id}/recommission", {"device_id": NUL}),
    ]
    for path in ("/devices/{device_id}/telemetry", "/devices/{device_id}/events"):
        table += [
            Probe(200, "get", path, dev),
            Probe(401, "get", path, dev, NOBODY),
            Probe(404, "get", path, ghost),
            Probe(422, "get", path, dev, {"params": {"from": "2026-01-01T00:00:00"}}),  # no zone
        ]
    for path in ("/telemetry/export", "/events/export"):
        table += [
            Probe(200, "get", path, request={"params": {"model": "lamp"}}),
            Probe(401, "get", path, request={"params": {"model": "lamp"}, **NOBODY}),
            Probe(422, "get", path),  # no model
        ]
    aggregate = "/devices/{device_id}/telemetry/aggregate"
    buckets = {"field": "t", "bucket": "1h", "fn": "avg"}
    table += [
        Probe(200, "get", aggregate, dev, {"params": buckets}),
        Probe(401, "get", aggregate, dev, {"params": buckets, **NOBODY}),
        Probe(404, "get", aggregate, ghost, {"params": buckets}),
        Probe(422, "get", aggregate, dev, {"params": {**buckets, "bucket": "1y"}}),
    ]
    table += [
        Probe(200, "get", "/rejected"),
        Probe(401, "get", "/rejected", request=NOBODY),
        Probe(422, "get", "/rejected", request={"params": {"cursor": "nonsense!"}}),
        Probe(202, "post", "/devices/{device_id}/commands", dev, {"json": {"name": "blink"}}),
        Probe(401, "post", "/devices/{device_id}/commands", dev, {"json": {"name": "x"}, **NOBODY}),
        Probe(404, "post", "/devices/{device_id}/commands", ghost, {"json": {"name": "blink"}}),
        Probe(422, "post", "/devices/{device_id}/commands", dev, {"json": {"name": "a b"}}),
        Probe(200, "get", "/devices/{device_id}/commands", dev),
        Probe(401, "get", "/devices/{device_id}/commands", dev, NOBODY),
        Probe(404, "get", "/devices/{device_id}/commands", ghost),
        Probe(422, "get", "/devices/{device_id}/commands", dev, {"params": {"status": "lost"}}),
        Probe(202, "post", "/commands", request={"json": {"name": "x", "deviceIds": ["dev-1"]}}),
        Probe(401, "post", "/commands", request={"json": {"name": "x", "model": "m"}, **NOBODY}),
        Probe(404, "post", "/commands", request={"json": {"name": "x", "deviceIds": ["ghost-1"]}}),
        Probe(422, "post", "/commands", request={"json": {"name": "x"}}),  # nobody to send to
        Probe(200, "get", "/devices/{device_id}/commands/{command_id}", command),
        Probe(401, "get", "/devices/{device_id}/commands/{command_id}", command, NOBODY),
        Probe(
            404, "get", "/devices/{device_id}/commands/{command_id}", dev | {"command_id": "c-0"}
        ),
        Probe(422, "get", "/devices/{device_id}/commands/{command_id}", dev | {"command_id": NUL}),
        Probe(200, "put", "/devices/{device_id}/config", dev, {"json": {"config": {"a": 1}}}),
        Probe(401, "put", "/devices/{device_id}/config", dev, {"json": {"config": {}}, **NOBODY}),
        Probe(404, "put", "/devices/{device_id}/config", ghost, {"json": {"config": {}}}),
        Probe(422, "put", "/devices/{device_id}/config", dev, {"json": {"config": [1]}}),
        Probe(200, "get", "/devices/{device_id}/config", dev),
        Probe(401, "get", "/devices/{device_id}/config", dev, NOBODY),
        Probe(404, "get", "/devices/{device_id}/config", ghost),
        Probe(422, "get", "/devices/{device_id}/config", {"device_id": NUL}),
        Probe(200, "put", "/config", request={"json": {"deviceIds": ["dev-1"], "config": {}}}),
        Probe(401, "put", "/config", request={"json": {"tag": "x", "config": {}}, **NOBODY}),
        Probe(404, "put", "/config", request={"json": {"deviceIds": ["ghost-1"], "config": {}}}),
        Probe(422, "put", "/config", request={"json": {"config": {}}}),
    ]
    firmware = {"data": {"model": "lamp", "version": "1.1.0"}}
    table += [
        Probe(201, "post", "/ota/firmware", request={**firmware, "files": {"file": b"\x02" * 9}}),
        Probe(
            400,
            "post",
            "/ota/firmware",
            request={
                "content": b"--xyz\r\nTrue--xyz--\r\n",
                "headers": {"content-type": "multipart/form-data; boundary=xyz"},
            },
        ),
        Probe(
            401, "post", "/ota/firmware", request={**firmware, "files": {"file": b"x"}, **NOBODY}
        ),
        Probe(409, "post", "/ota/firmware", request={**firmware, "files": {"file": b"\x03"}}),
        Probe(
            413,
            "post",
            "/ota/firmware",
            request={
                "data": {"model": "lamp", "version": "9.0.0"},
                "files": {"file": b"\x04" * (MAX_FIRMWARE + 65 * 1024)},
            },
        ),
        Probe(
            422,
            "post",
            "/ota/firmware",
            request={"data": {"model": "lamp", "version": "one"}, "files": {"file": b"x"}},
        ),
        Probe(200, "get", "/ota/releases"),
        Probe(401, "get", "/ota/releases", request=NOBODY),
        Probe(422, "get", "/ota/releases", request={"params": {"model": "\x00"}}),
        Probe(200, "get", "/ota/releases/{release_id}", release),
        Probe(401, "get", "/ota/releases/{release_id}", release, NOBODY),
        Probe(404, "get", "/ota/releases/{release_id}", {"release_id": "fw-0"}),
        Probe(422, "get", "/ota/releases/{release_id}", {"release_id": NUL}),
        Probe(200, "patch", "/ota/releases/{release_id}", release, {"json": {"paused": False}}),
        Probe(401, "patch", "/ota/releases/{release_id}", release, {"json": {}, **NOBODY}),
        Probe(404, "patch", "/ota/releases/{release_id}", {"release_id": "fw-0"}, {"json": {}}),
        Probe(
            422, "patch", "/ota/releases/{release_id}", release, {"json": {"rolloutPercent": 101}}
        ),
        *release_control_probes(release),
        Probe(200, "get", "/ota/manifest.json", request={**device_auth, **NOBODY}),
        Probe(401, "get", "/ota/manifest.json", request=NOBODY),
        Probe(401, "get", "/ota/manifest.json", request={"auth": ("dev-1", "wrong")}),
        Probe(
            422, "get", "/ota/manifest.json", request={**device_auth, "params": {"model": "fan"}}
        ),
        Probe(200, "get", "/ota/public-key"),
        Probe(422, "get", "/ota/public-key", request=NUL_IN_QUERY),
        Probe(201, "post", "/claim-codes", request={"json": {"model": "lamp", "count": 1}}),
        Probe(401, "post", "/claim-codes", request={"json": {"model": "lamp"}, **NOBODY}),
        Probe(409, "post", "/claim-codes", request={"json": {"model": "lamp", "ids": ["dev-1"]}}),
        Probe(422, "post", "/claim-codes", request={"json": {"model": "lamp", "count": 0}}),
        Probe(200, "post", "/claim", request={"json": {"claimCode": fleet.claim_code}}),
        Probe(422, "post", "/claim", request={"json": {}}),
        # Ten refusals from one address, then it has to wait.
        *[Probe(403, "post", "/claim", request={"json": {"claimCode": "WRONG"}})] * 10,
        Probe(429, "post", "/claim", request={"json": {"claimCode": "WRONG"}}),
        Probe(200, "get", "/audit"),
        Probe(401, "get", "/audit", request=NOBODY),
        Probe(422, "get", "/audit", request={"params": {"limit": 1001}}),
    ]
    rule = {"rule_id": fleet.rule_id}
    no_rule = {"rule_id": "ar-0"}
    alert = {"alert_id": str(fleet.alert_id)}
    no_alert = {"alert_id": "999999"}
    table += [
        Probe(201, "post", "/alert-rules", request={"json": ALERT_RULE}),
        Probe(401, "post", "/alert-rules", request={"json": ALERT_RULE, **NOBODY}),
        Probe(404, "post", "/alert-rules", request={"json": ALERT_RULE | {"deviceId": "ghost-1"}}),
        Probe(422, "post", "/alert-rules", request={"json": ALERT_RULE | {"kind": "x"}}),
        Probe(200, "get", "/alert-rules"),
        Probe(401, "get", "/alert-rules", request=NOBODY),
        Probe(422, "get", "/alert-rules", request={"params": {"limit": 0}}),
        Probe(200, "get", "/alert-rules/{rule_id}", rule),
        Probe(401, "get", "/alert-rules/{rule_id}", rule, NOBODY),
        Probe(404, "get", "/alert-rules/{rule_id}", no_rule),
        Probe(422, "get", "/alert-rules/{rule_id}", {"rule_id": NUL}),
        Probe(200, "patch", "/alert-rules/{rule_id}", rule, {"json": {"name": "warm"}}),
        Probe(401, "patch", "/alert-rules/{rule_id}", rule, {"json": {}, **NOBODY}),
        Probe(404, "patch", "/alert-rules/{rule_id}", no_rule, {"json": {"name": "x"}}),
        Probe(422, "patch", "/alert-rules/{rule_id}", rule, {"json": {}}),
        Probe(401, "delete", "/alert-rules/{rule_id}", rule, NOBODY),
        Probe(404, "delete", "/alert-rules/{rule_id}", no_rule),
        Probe(422, "delete", "/alert-rules/{rule_id}", {"rule_id": NUL}),
        Probe(200, "get", "/alerts"),
        Probe(401, "get", "/alerts", request=NOBODY),
        Probe(422, "get", "/alerts", request={"params": {"state": "closed"}}),
        Probe(200, "get", "/alerts/{alert_id}", alert),
        Probe(401, "get", "/alerts/{alert_id}", alert, NOBODY),
        Probe(404, "get", "/alerts/{alert_id}", no_alert),
        Probe(422, "get", "/alerts/{alert_id}", {"alert_id": "one"}),
        Probe(200, "post", "/alerts/{alert_id}/acknowledge", alert),
        Probe(401, "post", "/alerts/{alert_id}/acknowledge", alert, NOBODY),
        Probe(404, "post", "/alerts/{alert_id}/acknowledge", no_alert),
        Probe(422, "post", "/alerts/{alert_id}/acknowledge", {"alert_id": "one"}),
        Probe(200, "post", "/alerts/{alert_id}/silence", alert, {"json": {"seconds": 60}}),
        Probe(401, "post", "/alerts/{alert_id}/silence", alert, {"json": {}, **NOBODY}),
        Probe(404, "post", "/alerts/{alert_id}/silence", no_alert, {"json": {"seconds": 60}}),
        Probe(422, "post", "/alerts/{alert_id}/silence", alert, {"json": {"seconds": 0}}),
        Probe(200, "get", "/alerts/{alert_id}/deliveries", alert),
        Probe(401, "get", "/alerts/{alert_id}/deliveries", alert, NOBODY),
        Probe(404, "get", "/alerts/{alert_id}/deliveries", no_alert),
        Probe(422, "get", "/alerts/{alert_id}/deliveries", {"alert_id": "one"}),
        # Last: the rule's alert goes with it.
        Probe(204, "delete", "/alert-rules/{rule_id}", rule),
    ]
    table += refusals(fleet)
    for method in ("get", "head"):
        path = "/ota/firmware/{sha256}.bin"
        table += [
            Probe(200, method, path, image),
            Probe(206, method, path, image, {"headers": {"Range": "bytes=10-"}}),
            Probe(400, method, path, image, {"headers": {"Range": "pages=1-2"}}),
            Probe(404, method, path, {"sha256": "0" * 64}),
            Probe(416, method, path, image, {"headers": {"Range": "bytes=5000-"}}),
            Probe(422, method, path, {"sha256": NUL}),
        ]
    return table


# Every role may read releases: the only token routes no role is refused.
NO_ROLE_REFUSED = {"list_releases", "get_release", "release_timeline", "release_devices"}


def release_control_probes(release: dict[str, str]) -> list[Probe]:
    """The release gets a plan, moves through its states, and ends aborted."""
    base = "/ota/releases/{release_id}"
    no_release = {"release_id": "fw-0"}
    nul = {"release_id": NUL}
    plan = {"json": {"plan": [{"percent": 50}, {"percent": 100}]}}
    table = [
        Probe(409, "post", base + "/promote", release),  # no plan yet
        Probe(200, "patch", base, release, plan),
        Probe(409, "patch", base, release, {"json": {"rolloutPercent": 10}}),
        Probe(200, "post", base + "/promote", release),
        Probe(200, "post", base + "/pause", release, {"json": {"reason": "look first"}}),
        Probe(422, "post", base + "/pause", release, {"json": {"reason": "x" * 501}}),
        Probe(409, "post", base + "/pause", release),
        Probe(200, "post", base + "/resume", release),
        Probe(409, "post", base + "/resume", release),
        Probe(200, "get", base + "/timeline", release),
        Probe(200, "get", base + "/devices", release, {"params": {"state": "pending"}}),
        Probe(422, "get", base + "/devices", release, {"params": {"state": "lost"}}),
        Probe(401, "get", base + "/devices", release, {"params": {"state": "pending"}, **NOBODY}),
        Probe(404, "get", base + "/devices", no_release, {"params": {"state": "pending"}}),
        Probe(401, "get", base + "/timeline", release, NOBODY),
        Probe(404, "get", base + "/timeline", no_release),
        Probe(422, "get", base + "/timeline", nul),
    ]
    for action in ("promote", "pause", "resume", "abort"):
        table += [
            Probe(401, "post", f"{base}/{action}", release, NOBODY),
            Probe(404, "post", f"{base}/{action}", no_release),
            Probe(422, "post", f"{base}/{action}", nul),
        ]
    table += [
        Probe(200, "post", base + "/abort", release, {"json": {"reason": "bad build"}}),
        Probe(409, "post", base + "/abort", release),
    ]
    return table


def refusals(fleet: Fleet) -> list[Probe]:
    """403 from each token route whose permission some role lacks: a publisher's token for
    the fleet's routes, a viewer's for the release writes (tests/web/api/test_roles.py walks
    every role)."""
    table = []
    for (method, path), operation_id in OPERATION_IDS.items():
        if operation_id in PUBLIC | DEVICE_OR_ADMIN | METRICS | NO_ROLE_REFUSED:
            continue
        token = fleet.viewer_token if path.startswith("/ota/") else fleet.publisher_token
        values = dict.fromkeys(re.findall(r"\{(\w+)\}", path), "1")
        request: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
        if method in ("post", "put", "patch"):
            request["json"] = {}
        table.append(Probe(403, method, path, values, request))
    return table


# With the broker away: health says so, and a configuration that could not reach the device
# is refused.
WITHOUT_BROKER = [
    Probe(503, "get", "/health"),
    Probe(
        503, "put", "/devices/{device_id}/config", {"device_id": "dev-1"}, {"json": {"config": {}}}
    ),
    Probe(503, "put", "/config", request={"json": {"deviceIds": ["dev-1"], "config": {}}}),
]


def check_body(probe: Probe, response: httpx.Response, documented: dict[str, Any]) -> None:
    """The answer has the documented body: our error shape, or the declared content type."""
    content = documented.get("content", {})
    if probe.method == "head" or not content:
        assert response.content == b"", probe
        return
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        if schema.get("$ref", "").endswith("/ErrorResponse"):
            error = response.json()["error"]
            assert isinstance(error["code"], str), probe
            assert error["message"], probe
        return
    # One of the declared types (an export declares CSV and NDJSON).
    assert any(response.headers["content-type"].startswith(m) for m in content), (
        probe,
        response.headers,
    )


async def run(
    api: httpx.AsyncClient, document: dict[str, Any], table: list[Probe]
) -> dict[str, set[int]]:
    by_route = {(m, p): op for p, ms in document["paths"].items() for m, op in ms.items()}
    answered: dict[str, set[int]] = {}
    for probe in table:
        operation = by_route[(probe.method, probe.path)]
        response = await api.request(probe.method.upper(), probe.url, **probe.request)
        assert response.status_code == probe.status, (probe, response.text[:500])
        answered.setdefault(operation["operationId"], set()).add(response.status_code)
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, (
            f"{operation['operationId']} answered an undocumented {response.status_code}"
        )
        check_body(probe, response, documented)
    return answered


@pytest.mark.timeout(60)
async def test_each_operation_documents_exactly_the_statuses_it_answers(
    api: httpx.AsyncClient, broker: Broker, service: Service
) -> None:
    document = await openapi(api)
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's shape
    answered = await run(api, document, probes(await make_fleet(api, service)))

    broker.stop()  # the backend notices within moments
    without_broker = await eventually(lambda: run(api, document, WITHOUT_BROKER))
    for operation_id, seen in without_broker.items():
        answered[operation_id] |= seen

    for operation_id, (method, path, operation) in operations(document).items():
        documented = {int(status) for status in operation["responses"]}
        assert answered.get(operation_id, set()) == documented, (method, path)
