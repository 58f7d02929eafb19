"""Release plans and the autopilot (issue 20), on both databases: reports are recorded as the
collector records them, and the autopilot steps on a clock the test moves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from paku_iot.ota.autopilot import Autopilot
from paku_iot.ota.rollout import in_rollout
from paku_iot.server.service import Service
from paku_iot.settings import Settings
from paku_iot.storage import schema
from paku_iot.storage.engine import transaction
from paku_iot.storage.records import OtaProgress
from paku_iot.storage.releases import ReleaseStore, record_progress

SEEN = [f"lamp-{n:03d}" for n in range(40)]
UNSEEN = ["lamp-new-1", "lamp-new-2"]
PLAN = [
    {"percent": 25, "soakSeconds": 600},
    {"percent": 50, "soakSeconds": 600},
    {"percent": 100, "soakSeconds": 0},
]


class Clock:
    """Real time plus an offset the test advances: releases changed through the API carry
    real times, which the autopilot must see as past."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


async def add_devices(service: Service) -> None:
    now = datetime.now(UTC)
    rows = [
        {"id": d, "model": "lamp", "metadata": {}, "created_at": now, "online": False}
        | {"last_seen_at": now if d in SEEN else None}
        for d in SEEN + UNSEEN
    ]
    async with transaction(service.engine) as conn:
        await conn.execute(schema.devices.insert(), rows)


async def report(service: Service, version: str, statuses: dict[str, str]) -> None:
    """As collector/ota_reports.py records `event/ota` reports."""
    at = datetime.now(UTC)
    async with transaction(service.engine) as conn:
        await record_progress(
            conn, [OtaProgress(d, version, s, None, at) for d, s in statuses.items()]
        )


def wave(percent: int, below: int = 0) -> list[str]:
    """The seen devices a wave at `percent` adds to one at `below`."""
    return [d for d in SEEN if in_rollout(d, percent) and not in_rollout(d, below)]


async def publish(api: httpx.AsyncClient, version: str = "2.0.0", **fields: Any) -> Any:
    data = {"model": "lamp", "version": version} | {k: str(v) for k, v in fields.items()}
    response = await api.post(
        "/ota/firmware", data=data, files={"file": ("firmware.bin", version.encode())}
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The service's own autopilot is off: the test steps one on its clock."""
    return settings.model_copy(update={"ota_autopilot_interval_s": 0})


@pytest.fixture
async def fleet(service: Service) -> tuple[Autopilot, Clock]:
    await add_devices(service)
    clock = Clock()
    return Autopilot(ReleaseStore(service.engine), service.device_store, clock), clock


async def release(api: httpx.AsyncClient, release_id: str) -> Any:
    return (await api.get(f"/ota/releases/{release_id}")).json()


async def kinds(api: httpx.AsyncClient, release_id: str) -> list[tuple[str, str]]:
    items = (await api.get(f"/ota/releases/{release_id}/timeline")).json()["items"]
    return [(e["kind"], e["actor"]) for e in items]


async def test_a_healthy_release_promotes_itself_through_every_wave(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    autopilot, clock = fleet
    published = await publish(api, plan=json.dumps(PLAN))
    rid = published["id"]
    assert (published["state"], published["currentWave"], published["rolloutPercent"]) == (
        "rolling",
        1,
        25,
    )
    assert published["plan"] == PLAN
    assert await autopilot.step() == []  # soaking, nobody confirmed

    first = wave(25)
    await report(service, "2.0.0", dict.fromkeys(first, "confirmed"))
    clock.advance(300)
    assert await autopilot.step() == []  # still soaking
    clock.advance(301)
    assert [d.kind for _, d in await autopilot.step()] == ["promoted"]
    body = await release(api, rid)
    assert (body["state"], body["currentWave"], body["rolloutPercent"]) == ("rolling", 2, 50)
    assert body["rollout"]["counts"]["confirmed"] == len(first)
    assert body["rollout"]["neverSeen"] == len(UNSEEN)
    assert body["rollout"]["counts"]["pending"] == len(wave(50, 25))

    await report(service, "2.0.0", dict.fromkeys(wave(50, 25), "confirmed"))
    clock.advance(601)
    assert [d.kind for _, d in await autopilot.step()] == ["promoted"]
    await report(service, "2.0.0", dict.fromkeys(wave(100, 50), "confirmed"))
    assert [d.kind for _, d in await autopilot.step()] == ["completed"]
    body = await release(api, rid)
    assert (body["state"], body["currentWave"], body["rolloutPercent"]) == ("completed", 3, 100)
    assert body["rollout"]["counts"]["confirmed"] == len(SEEN)
    assert await autopilot.step() == []  # nothing left to do
    assert await kinds(api, rid) == [
        ("plan", "admin"),
        ("promoted", "autopilot"),
        ("promoted", "autopilot"),
        ("completed", "autopilot"),
    ]
    timeline = (await api.get(f"/ota/releases/{rid}/timeline")).json()["items"]
    promoted = timeline[1]["detail"]
    assert (promoted["wave"], promoted["toWave"], promoted["percent"]) == (1, 2, 50)
    assert promoted["counts"]["confirmed"] == len(first)
    # A completed release is still offered (at its last wave's percentage).
    offered = (await api.get("/ota/manifest.json", params={"model": "lamp"})).json()
    assert [e["version"] for e in offered] == ["2.0.0"]
    # Paused after all, then resumed: the autopilot judges the last wave again.
    assert (await api.post(f"/ota/releases/{rid}/pause")).json()["state"] == "paused"
    assert (await api.post(f"/ota/releases/{rid}/resume")).json()["state"] == "rolling"
    assert [d.kind for _, d in await autopilot.step()] == ["completed"]


async def test_twenty_percent_failures_abort_the_first_wave(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    autopilot, _ = fleet
    rid = (await publish(api, plan=json.dumps(PLAN), abortFailurePercent=15, abortMinDevices=5))[
        "id"
    ]
    first = wave(25)
    assert len(first) >= 5
    failing = max(1, round(len(first) * 0.2))
    statuses = dict.fromkeys(first, "confirmed")
    statuses |= dict.fromkeys(first[:failing], "rolled_back")
    statuses[first[failing]] = "installing"  # part-way through when it is aborted
    await report(service, "2.0.0", {first[0]: "failed"} | statuses)

    # No soak wait: failures abort at once.
    [(_, decision)] = await autopilot.step()
    assert decision.kind == "aborted"
    body = await release(api, rid)
    assert body["state"] == "aborted"
    assert body["currentWave"] == 1
    assert body["stateReason"] == f"wave 1: {failing} of {len(first)} failed, abort at 15%"
    counts = body["rollout"]["counts"]
    assert counts["rolled_back"] == failing
    assert counts["pending"] == 0  # offered to nobody

    # Nobody is offered it, not even the device part-way through; those on it are listed.
    assert (await api.get("/ota/manifest.json", params={"model": "lamp"})).json() == []
    device = await service.device_store.get(first[failing])
    assert device is not None
    assert (
        await service.releases.manifest(model="lamp", current="1.0.0", device=device, admin=False)
        == []
    )
    confirmed = await api.get(
        f"/ota/releases/{rid}/devices", params={"state": "confirmed", "limit": 1000}
    )
    assert confirmed.json()["items"] == sorted(first[failing + 1 :])
    assert await kinds(api, rid) == [("plan", "admin"), ("aborted", "autopilot")]
    timeline = (await api.get(f"/ota/releases/{rid}/timeline")).json()["items"]
    assert timeline[-1]["detail"]["counts"]["rolled_back"] == failing


async def test_too_few_confirmations_pause_the_rollout_until_resumed(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    autopilot, clock = fleet
    rid = (await publish(api, plan=json.dumps(PLAN), minConfirmedPercent=80))["id"]
    first = wave(25)
    # Installed (even running it) but unconfirmed does not count.
    await report(service, "2.0.0", dict.fromkeys(first, "installed"))
    async with transaction(service.engine) as conn:
        await conn.execute(
            schema.devices.update()
            .where(schema.devices.c.id == first[0])
            .values(fw_version="2.0.0")
        )
    await report(service, "2.0.0", {first[1]: "confirmed"})
    clock.advance(601)
    [(_, decision)] = await autopilot.step()
    assert decision.kind == "paused"
    body = await release(api, rid)
    needed = -(-len(first) * 80 // 100)
    assert body["stateReason"] == f"wave 1: 1 of {len(first)} confirmed, {needed} needed"
    assert (body["state"], body["paused"]) == ("paused", True)
    assert body["rollout"]["counts"]["updated"] == 1
    assert body["rollout"]["counts"]["installed"] == len(first) - 2
    assert await autopilot.step() == []  # paused: left alone

    await report(service, "2.0.0", dict.fromkeys(first, "confirmed"))
    resumed = await api.post(f"/ota/releases/{rid}/resume")
    assert resumed.json()["state"] == "rolling"
    clock.offset = timedelta()
    assert await autopilot.step() == []  # a new soak starts at the resume
    clock.advance(601)
    assert [d.kind for _, d in await autopilot.step()] == ["promoted"]
    assert await kinds(api, rid) == [
        ("plan", "admin"),
        ("paused", "autopilot"),
        ("resumed", "admin"),
        ("promoted", "autopilot"),
    ]


async def test_manual_control_and_impossible_transitions(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    manual = (await publish(api, "1.5.0", rolloutPercent=10))["id"]
    assert (await release(api, manual))["plan"] is None
    refused = await api.post(f"/ota/releases/{manual}/promote")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "no_plan")
    # A release without a plan pauses and resumes as before.
    assert (await api.post(f"/ota/releases/{manual}/pause")).json()["paused"] is True
    assert (await api.post(f"/ota/releases/{manual}/resume")).json()["paused"] is False

    rid = (await publish(api, plan=json.dumps(PLAN)))["id"]
    promoted = (await api.post(f"/ota/releases/{rid}/promote")).json()
    assert (promoted["currentWave"], promoted["rolloutPercent"]) == (2, 50)
    paused = await api.post(f"/ota/releases/{rid}/pause", json={"reason": "checking logs"})
    assert (paused.json()["state"], paused.json()["stateReason"]) == ("paused", "checking logs")
    again = await api.post(f"/ota/releases/{rid}/pause")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_transition")
    # Promoting a paused release rolls it on.
    promoted = (await api.post(f"/ota/releases/{rid}/promote")).json()
    assert (promoted["state"], promoted["currentWave"]) == ("rolling", 3)
    percent = await api.patch(f"/ota/releases/{rid}", json={"rolloutPercent": 5})
    assert (percent.status_code, percent.json()["error"]["code"]) == (409, "release_has_plan")
    aborted = await api.post(f"/ota/releases/{rid}/abort", json={"reason": "bad build"})
    assert (aborted.json()["state"], aborted.json()["stateReason"]) == ("aborted", "bad build")
    for action in ("promote", "pause", "resume", "abort"):
        response = await api.post(f"/ota/releases/{rid}/{action}")
        assert (response.status_code, response.json()["error"]["code"]) == (
            409,
            "release_aborted",
        ), action
    replan = await api.patch(f"/ota/releases/{rid}", json={"plan": PLAN})
    assert replan.status_code == 409
    assert await kinds(api, rid) == [
        ("plan", "admin"),
        ("promoted", "admin"),
        ("paused", "admin"),
        ("promoted", "admin"),
        ("aborted", "admin"),
    ]
    audited = (await api.get("/audit", params={"target": rid})).json()["items"]
    assert {"ota.promote", "ota.pause", "ota.abort"} <= {e["action"] for e in audited}

    # A plan given later starts at its first wave; criteria alone keep the wave.
    planned = await api.patch(
        f"/ota/releases/{manual}", json={"plan": PLAN[1:], "abortMinDevices": 7}
    )
    body = planned.json()
    assert (body["currentWave"], body["rolloutPercent"], body["abortMinDevices"]) == (1, 50, 7)
    body = (await api.patch(f"/ota/releases/{manual}", json={"minConfirmed": 4})).json()
    assert (body["currentWave"], body["minConfirmed"], body["abortMinDevices"]) == (1, 4, 7)
    body = (await api.patch(f"/ota/releases/{manual}", json={"plan": None})).json()
    assert (body["plan"], body["rolloutPercent"]) == (None, 50)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"plan": "not json"}, "JSON list"),
        ({"plan": "[]"}, "list of 1-20 waves"),
        ({"plan": '[{"percent": 0}]'}, "percent must be 1-100"),
        ({"plan": '[{"percent": 101}]'}, "percent must be 1-100"),
        ({"plan": '[{"percent": 50}, {"percent": 50}]'}, "must increase"),
        ({"plan": '[{"percent": 50}, {"percent": 10}]'}, "must increase"),
        ({"plan": '[{"percent": 10, "soakSeconds": -1}]'}, "soakSeconds"),
        ({"plan": '[{"percent": 10, "soak": 5}]'}, "percent and soakSeconds"),
        ({"plan": '[{"percent": 10.5}]'}, "percent must be 1-100"),
    ],
    ids=["text", "empty", "zero", "over", "equal", "down", "negative-soak", "key", "float"],
)
async def test_bad_plans_are_refused(
    api: httpx.AsyncClient, fields: dict[str, str], message: str
) -> None:
    data = {"model": "lamp", "version": "1.0.0"} | fields
    response = await api.post("/ota/firmware", data=data, files={"file": ("f.bin", b"x")})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_plan"
    assert message in error["message"]
    assert (await api.get("/ota/releases")).json()["items"] == []


async def test_bad_criteria_and_patched_plans_are_refused(api: httpx.AsyncClient) -> None:
    for field, value in (("abortMinDevices", 0), ("abortFailurePercent", 101)):
        response = await api.post(
            "/ota/firmware",
            data={"model": "lamp", "version": "1.0.0", field: str(value)},
            files={"file": ("f.bin", b"x")},
        )
        assert response.status_code == 422, field
    rid = (await publish(api, "1.0.0"))["id"]
    bad = await api.patch(f"/ota/releases/{rid}", json={"plan": [{"percent": 200}]})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_plan")
    assert (await release(api, rid))["plan"] is None


async def test_devices_by_state_are_paged(
    api: httpx.AsyncClient, fleet: tuple[Autopilot, Clock]
) -> None:
    rid = (await publish(api))["id"]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"state": "never_seen", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(f"/ota/releases/{rid}/devices", params=params)).json()
        seen += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(UNSEEN)
    pending = await api.get(f"/ota/releases/{rid}/devices", params={"state": "pending"})
    assert pending.json()["items"] == sorted(SEEN)


async def test_a_device_that_rolled_back_is_not_offered_the_release_again(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    await publish(api)  # 100%, no plan
    back, failed = SEEN[:2]
    await report(service, "2.0.0", {back: "rolled_back", failed: "failed"})

    async def offered(device_id: str) -> list[str]:
        device = await service.device_store.get(device_id)
        assert device is not None
        entries = await service.releases.manifest(
            model="lamp", current="1.0.0", device=device, admin=False
        )
        return [r.version for r in entries]

    assert await offered(back) == []
    assert await offered(failed) == ["2.0.0"]  # a failed download or install may retry
    assert await offered(SEEN[2]) == ["2.0.0"]


async def test_a_wave_whose_own_devices_never_ran_the_build_pauses(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    autopilot, clock = fleet
    rid = (await publish(api, plan=json.dumps(PLAN)))["id"]
    await report(service, "2.0.0", dict.fromkeys(wave(25), "confirmed"))
    clock.advance(601)
    assert [d.kind for _, d in await autopilot.step()] == ["promoted"]
    # The second wave's devices stay asleep through its soak: the first wave's confirmations
    # (all of those that tried) are not enough to go to 100%.
    clock.advance(601)
    [(_, decision)] = await autopilot.step()
    assert decision.kind == "paused"
    added = len(wave(50, 25))
    body = await release(api, rid)
    assert body["stateReason"] == f"wave 2: 0 of the {added} devices it added confirmed, 1 needed"
    assert body["rollout"]["counts"]["pending"] == 0  # paused: offered to nobody new


async def test_a_completed_release_is_still_aborted_while_it_is_the_newest(
    api: httpx.AsyncClient, service: Service, fleet: tuple[Autopilot, Clock]
) -> None:
    """A last wave without soak time completes at once; the devices it added fail only
    afterwards. The autopilot still aborts the release, as long as no newer one took over."""
    autopilot, clock = fleet
    plan = [{"percent": 25, "soakSeconds": 600}, {"percent": 100, "soakSeconds": 0}]
    old = (await publish(api, "2.0.0", plan=json.dumps(plan)))["id"]
    rid = (await publish(api, "2.1.0", plan=json.dumps(plan)))["id"]
    for version in ("2.0.0", "2.1.0"):
        await report(service, version, dict.fromkeys(wave(25), "confirmed"))
    clock.advance(601)
    assert sorted(d.kind for _, d in await autopilot.step()) == ["promoted", "promoted"]
    assert sorted(d.kind for _, d in await autopilot.step()) == ["completed", "completed"]
    assert await autopilot.step() == []

    failing = wave(100, 25)[:3]
    # 2.0.0 is superseded by 2.1.0: its late failures move nothing.
    await report(service, "2.0.0", dict.fromkeys(failing, "rolled_back"))
    assert await autopilot.step() == []
    assert (await release(api, old))["state"] == "completed"
    # 2.1.0 is what devices are offered now: the same failures abort it.
    await report(service, "2.1.0", dict.fromkeys(failing, "rolled_back"))
    [(aborted, decision)] = await autopilot.step()
    assert (aborted, decision.kind) == (rid, "aborted")
    body = await release(api, rid)
    assert body["state"] == "aborted"
    tried = len(wave(25)) + len(failing)
    assert body["stateReason"] == f"wave 2: {len(failing)} of {tried} failed, abort at 10%"
    assert await kinds(api, rid) == [
        ("plan", "admin"),
        ("promoted", "autopilot"),
        ("completed", "autopilot"),
        ("aborted", "autopilot"),
    ]
    # With 2.1.0 aborted, 2.0.0 is the newest offered again, and watched again.
    [(again, decision)] = await autopilot.step()
    assert (again, decision.kind) == (old, "aborted")
