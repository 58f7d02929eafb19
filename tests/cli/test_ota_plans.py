"""`paku-iot ota publish --plan`, `ota promote|pause|resume|abort` and `ota timeline` against a
running `paku-iot dev` (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import cli


async def test_a_plan_driven_by_hand_from_the_command_line(
    dev_api: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, _ = dev_api
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"\x07" * 64)
    plan = '[{"percent": 10, "soakSeconds": 3600}, {"percent": 100, "soakSeconds": 60}]'
    published = await cli(
        env,
        tmp_path,
        *("ota", "publish", str(image), "--model", "lamp", "--version", "2.0.0"),
        *("--plan", plan, "--abort-min-devices", "5", "--json"),
    )
    assert published.returncode == 0, published.stderr
    release = json.loads(published.stdout)
    rid = release["id"]
    assert (release["rolloutPercent"], release["abortMinDevices"]) == (10, 5)

    paused = await cli(env, tmp_path, "ota", "pause", rid, "--reason", "canary logs")
    assert paused.returncode == 0, paused.stderr
    assert "paused, wave 1 of 2: canary logs" in paused.stdout
    again = await cli(env, tmp_path, "ota", "pause", rid)
    assert again.returncode == 1
    assert "cannot pause release" in again.stderr
    assert "Traceback" not in again.stderr
    resumed = await cli(env, tmp_path, "ota", "resume", rid, "--json")
    assert json.loads(resumed.stdout)["state"] == "rolling"
    promoted = await cli(env, tmp_path, "ota", "promote", rid)
    assert "100%  rolling, wave 2 of 2" in promoted.stdout
    status = await cli(env, tmp_path, "ota", "status", rid)
    assert "rolling, wave 2 of 2" in status.stdout
    assert "confirmed 0" in status.stdout
    aborted = await cli(env, tmp_path, "ota", "abort", rid, "--reason", "bad build")
    assert "aborted, wave 2 of 2: bad build" in aborted.stdout
    refused = await cli(env, tmp_path, "ota", "promote", rid)
    assert refused.returncode == 1
    assert "it is aborted" in refused.stderr

    timeline = await cli(env, tmp_path, "ota", "timeline", rid)
    lines = timeline.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "plan",
        "paused",
        "resumed",
        "promoted",
        "aborted",
    ]
    assert lines[-1].endswith("by admin: bad build")
    as_json = json.loads((await cli(env, tmp_path, "ota", "timeline", rid, "--json")).stdout)
    assert as_json[1]["detail"]["reason"] == "canary logs"
