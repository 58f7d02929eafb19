"""Device tags through the HTTP API, on SQLite and PostgreSQL: set, changed, in bulk,
filtered on, refused, and used as the target of commands, configuration and OTA releases."""

from __future__ import annotations

import httpx
import pytest

from tests.ota.test_ota_api import as_device, manifest, publish


async def provision(api: httpx.AsyncClient, device_id: str, **fields: object) -> dict[str, object]:
    response = await api.post("/devices", json={"model": "lamp", "id": device_id, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def ids(api: httpx.AsyncClient, **params: object) -> list[str]:
    response = await api.get("/devices", params=params)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["items"]]


async def test_tags_are_set_changed_and_returned_everywhere(api: httpx.AsyncClient) -> None:
    created = await provision(api, "tag-1", tags=["floor-2", "b.wing", "floor-2"])
    assert created["tags"] == ["b.wing", "floor-2"]  # sorted, once each
    assert (await api.get("/devices/tag-1")).json()["tags"] == ["b.wing", "floor-2"]
    assert (await api.get("/devices")).json()["items"][0]["tags"] == ["b.wing", "floor-2"]

    patched = await api.patch("/devices/tag-1", json={"tags": ["east"]})
    assert patched.status_code == 200
    assert patched.json()["tags"] == ["east"]
    kept = await api.patch("/devices/tag-1", json={"notes": "n"})
    assert kept.json()["tags"] == ["east"]  # left out: kept
    cleared = await api.patch("/devices/tag-1", json={"tags": None})
    assert cleared.json()["tags"] == []


@pytest.mark.parametrize(
    "tags", [["UPPER"], ["has space"], [""], ["x" * 33], ["a/b"], [f"t{n}" for n in range(21)]]
)
async def test_bad_tags_are_refused(api: httpx.AsyncClient, tags: list[str]) -> None:
    response = await api.post("/devices", json={"model": "m", "id": "bad-1", "tags": tags})
    assert response.status_code == 422
    assert "tags" in response.json()["error"]["message"]
    await provision(api, "bad-2")
    assert (await api.patch("/devices/bad-2", json={"tags": tags})).status_code == 422
    bulk = await api.post("/devices/tags", json={"ids": ["bad-2"], "add": tags})
    assert bulk.status_code == 422


async def test_bulk_adds_and_removes_all_or_nothing(api: httpx.AsyncClient) -> None:
    await provision(api, "bulk-a", tags=["old", "keep"])
    await provision(api, "bulk-b")
    response = await api.post(
        "/devices/tags", json={"ids": ["bulk-b", "bulk-a"], "add": ["new"], "remove": ["old"]}
    )
    assert response.status_code == 200, response.text
    assert [(d["id"], d["tags"]) for d in response.json()["items"]] == [
        ("bulk-a", ["keep", "new"]),
        ("bulk-b", ["new"]),
    ]
    # Adding a tag a device has already changes nothing.
    again = await api.post("/devices/tags", json={"ids": ["bulk-a"], "add": ["new"]})
    assert again.json()["items"][0]["tags"] == ["keep", "new"]

    unknown = await api.post("/devices/tags", json={"ids": ["bulk-a", "ghost"], "add": ["x"]})
    assert unknown.status_code == 404
    assert "ghost" in unknown.json()["error"]["message"]
    nothing = await api.post("/devices/tags", json={"ids": ["bulk-a"]})
    assert nothing.status_code == 422

    # A device that would pass 20 tags undoes the change for every device in it.
    await api.patch("/devices/bulk-b", json={"tags": [f"t{n}" for n in range(20)]})
    over = await api.post("/devices/tags", json={"ids": ["bulk-a", "bulk-b"], "add": ["more"]})
    assert over.status_code == 422
    assert over.json()["error"]["code"] == "too_many_tags"
    assert (await api.get("/devices/bulk-a")).json()["tags"] == ["keep", "new"]


async def test_list_filters_by_tag_with_the_other_filters_and_pages(
    api: httpx.AsyncClient,
) -> None:
    for n in range(7):
        await provision(api, f"dev-{n}", tags=["even" if n % 2 == 0 else "odd"])
    await api.post("/devices", json={"model": "sensor", "id": "sen-1", "tags": ["even"]})
    assert await ids(api, tag="even") == ["dev-0", "dev-2", "dev-4", "dev-6", "sen-1"]
    assert await ids(api, tag="even", model="sensor") == ["sen-1"]
    assert await ids(api, tag="even", online="false", model="lamp") == [
        "dev-0",
        "dev-2",
        "dev-4",
        "dev-6",
    ]
    assert await ids(api, tag="none") == []
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "tag": "even"} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/devices", params=params)).json()
        seen.extend(d["id"] for d in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["dev-0", "dev-2", "dev-4", "dev-6", "sen-1"]


async def test_commands_and_config_target_a_tag(api: httpx.AsyncClient) -> None:
    await provision(api, "cmd-1", tags=["hall"])
    await provision(api, "cmd-2", tags=["hall", "lab"])
    await provision(api, "cmd-3", tags=["lab"])
    sent = await api.post("/commands", json={"tag": "hall", "name": "reboot"})
    assert sent.status_code == 202
    assert sorted(c["deviceId"] for c in sent.json()["items"]) == ["cmd-1", "cmd-2"]
    two = await api.post("/commands", json={"tag": "hall", "model": "lamp", "name": "x"})
    assert two.status_code == 422

    config = await api.put("/config", json={"tag": "lab", "config": {"interval": 5}})
    assert config.status_code == 200, config.text
    assert [(i["deviceId"], i["version"]) for i in config.json()["items"]] == [
        ("cmd-2", 1),
        ("cmd-3", 1),
    ]
    assert (await api.get("/devices/cmd-3/config")).json()["config"] == {"interval": 5}
    assert (await api.get("/devices/cmd-1/config")).json()["version"] == 0
    by_ids = await api.put("/config", json={"deviceIds": ["cmd-1"], "config": {"a": 1}})
    assert [i["deviceId"] for i in by_ids.json()["items"]] == ["cmd-1"]
    neither = await api.put("/config", json={"config": {}})
    assert neither.status_code == 422


async def test_a_release_restricted_to_a_tag_is_offered_only_to_its_devices(
    api: httpx.AsyncClient,
) -> None:
    beta = (await provision(api, "ota-beta", tags=["beta"]))["credentials"]
    other = (await provision(api, "ota-other"))["credentials"]
    assert isinstance(beta, dict)
    assert isinstance(other, dict)
    await publish(api, "1.1.0")
    response = await api.post(
        "/ota/firmware",
        data={"model": "lamp", "version": "2.0.0", "tag": "beta"},
        files={"file": ("firmware.bin", b"beta image")},
    )
    assert response.status_code == 201, response.text
    release = response.json()
    assert release["tag"] == "beta"

    beta_auth = as_device(api, "ota-beta", beta["password"])
    other_auth = as_device(api, "ota-other", other["password"])
    assert [e["version"] for e in await manifest(api, beta_auth, current="1.0.0")] == [
        "2.0.0",
        "1.1.0",
    ]
    assert [e["version"] for e in await manifest(api, other_auth, current="1.0.0")] == ["1.1.0"]
    status = (await api.get(f"/ota/releases/{release['id']}")).json()["rollout"]
    assert status["neverSeen"] == 1  # only devices with the tag are counted
    unseen = await api.get(f"/ota/releases/{release['id']}/devices", params={"state": "never_seen"})
    assert unseen.json()["items"] == ["ota-beta"]

    # Lifting the tag offers it to every device of the model.
    lifted = await api.patch(f"/ota/releases/{release['id']}", json={"tag": None})
    assert lifted.json()["tag"] is None
    offered = await manifest(api, other_auth, current="1.0.0")
    assert offered[0]["version"] == "2.0.0"
    bad = await api.patch(f"/ota/releases/{release['id']}", json={"tag": "Not A Tag"})
    assert bad.status_code == 422


async def test_deleting_a_device_deletes_its_tags(api: httpx.AsyncClient) -> None:
    await provision(api, "del-1", tags=["gone"])
    assert (await api.delete("/devices/del-1")).status_code == 204
    assert await ids(api, tag="gone") == []
    again = await provision(api, "del-1")
    assert again["tags"] == []  # the same id starts without the old one's tags
