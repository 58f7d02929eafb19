"""Where the devices of a release's model stand with it: the rollout's counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import semver

from paku_iot.ota.rollout import in_rollout
from paku_iot.ota.versions import running_version_or_none
from paku_iot.protocol import OTA_REPORT_STATUSES
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import DeviceRecord, ReleaseRecord
from paku_iot.storage.releases import ReleaseStore

# How a device stands with a release (GET /ota/releases/{id}), first match wins:
# - `confirmed`, `failed`, `rolled_back`: its latest `event/ota` report on this version;
# - `updated`: its own state (fwVersion) says it runs this version or a later one, but it has
#   not confirmed it (firmware older than confirmation, or not yet): never counted as
#   confirmed, so the autopilot promotes on confirmations only;
# - `downloading`, `installing`, `installed` (written, not yet running): its latest report;
# - never seen (NEVER_SEEN, counted apart): it has never connected, so is not waited for;
# - `pending`: offered the release now, no report yet.
ROLLOUT_STATUSES = ("pending", *OTA_REPORT_STATUSES, "updated")
NEVER_SEEN = "never_seen"
_REPORTED_FINAL = frozenset({"confirmed", "failed", "rolled_back"})


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    counts: dict[str, int]
    devices: dict[str, list[str]] = field(default_factory=dict)
    never_seen: list[str] = field(default_factory=list)


async def rollout_status(
    store: ReleaseStore, devices_store: DeviceStore, release: ReleaseRecord
) -> RolloutStatus:
    devices: list[DeviceRecord] = []
    after: str | None = None
    while True:
        page = await devices_store.page(
            limit=1000, after_id=after, model=release.model, tag=release.tag
        )
        devices.extend(page)
        if len(page) < 1000:
            break
        after = page[-1].id
    progress = await store.progress(release.version, (d.id for d in devices))
    by_status: dict[str, list[str]] = {status: [] for status in ROLLOUT_STATUSES}
    never_seen: list[str] = []
    target = semver.Version.parse(release.version)
    offered = not release.paused and release.state != "aborted"
    for device in devices:
        reported = progress[device.id].status if device.id in progress else None
        running = running_version_or_none(device.fw_version)
        if reported in _REPORTED_FINAL:
            by_status[reported].append(device.id)
        elif running is not None and running >= target:
            by_status["updated"].append(device.id)  # this version, or past it already
        elif reported is not None:
            by_status.setdefault(reported, []).append(device.id)
        elif device.last_seen_at is None:
            never_seen.append(device.id)
        elif offered and in_rollout(device.id, release.rollout_percent):
            by_status["pending"].append(device.id)
    return RolloutStatus(
        counts={status: len(ids) for status, ids in by_status.items()},
        devices=by_status,
        never_seen=never_seen,
    )
