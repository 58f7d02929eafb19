"""Releases: publishing images, the manifest devices poll, rollout control and status."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

import semver

from paku_iot.exceptions import InvalidInput, NotFound
from paku_iot.ota.files import FirmwareFiles
from paku_iot.ota.rollout import in_rollout
from paku_iot.ota.signer import ReleaseSignatures, ReleaseSigner
from paku_iot.ota.versions import parse_version, running_version, running_version_or_none
from paku_iot.protocol import OTA_REPORT_STATUSES
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import KEEP, DeviceRecord, Keep, ReleaseRecord
from paku_iot.storage.releases import ReleaseStore

log = logging.getLogger("paku_iot.ota")

# How a device stands with a release (GET /ota/releases/{id}). `updated` comes only from the
# device's own state (fwVersion); the others from its `event/ota` reports.
ROLLOUT_STATUSES = ("pending", *OTA_REPORT_STATUSES, "updated")


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    counts: dict[str, int]
    devices: dict[str, list[str]] = field(default_factory=dict)


IN_PROGRESS = frozenset({"downloading", "installing", "installed"})


def _newest_first(releases: list[ReleaseRecord]) -> list[ReleaseRecord]:
    return sorted(releases, key=lambda r: semver.Version.parse(r.version), reverse=True)


class ReleaseService:
    def __init__(
        self,
        store: ReleaseStore,
        devices: DeviceStore,
        files: FirmwareFiles,
        signer: ReleaseSigner,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._devices = devices
        self._files = files
        self._signer = signer
        self._clock = clock

    @property
    def files(self) -> FirmwareFiles:
        return self._files

    @property
    def signer(self) -> ReleaseSigner:
        return self._signer

    async def publish(
        self,
        *,
        model: str,
        version: str,
        image: BinaryIO,
        notes: str | None = None,
        rollout_percent: int = 100,
        statement_signature: str | None = None,
        digest_signature: str | None = None,
        tag: str | None = None,
    ) -> ReleaseRecord:
        """Store and sign a release. Signatures the upload brings (made off the server by
        `paku-iot ota sign`) are checked against the image before it is kept."""
        parse_version(version)
        if not 1 <= len(model) <= 64:
            raise InvalidInput("model must be 1-64 characters")
        if not 0 <= rollout_percent <= 100:
            raise InvalidInput("rolloutPercent must be between 0 and 100")
        signed: list[ReleaseSignatures] = []

        def accept(sha256: str, size: int) -> None:
            signed.append(
                self._signer.signatures(
                    model=model,
                    version=version,
                    sha256=sha256,
                    size=size,
                    statement=statement_signature,
                    digest=digest_signature,
                )
            )

        sha256, size = await asyncio.to_thread(self._files.store, image, accept)
        release = ReleaseRecord(
            id="fw-" + secrets.token_hex(8),
            model=model,
            version=version,
            sha256=sha256,
            size=size,
            signature=signed[0].digest,
            statement_signature=signed[0].statement,
            rollout_percent=rollout_percent,
            paused=False,
            notes=notes,
            created_at=self._clock(),
            tag=tag,
        )
        # A refused duplicate leaves its image in the store: it is content-addressed, so at
        # worst it is the very file the existing release serves.
        await self._store.insert(release)
        log.info("released %s %s (%d bytes, %d%%)", model, version, size, rollout_percent)
        return release

    async def get(self, release_id: str) -> ReleaseRecord:
        release = await self._store.get(release_id)
        if release is None:
            raise NotFound(f"no release {release_id!r}", code="release_not_found")
        return release

    async def releases(self, model: str | None = None) -> list[ReleaseRecord]:
        return _newest_first(await self._store.of_model(model))

    async def update(
        self,
        release_id: str,
        *,
        rollout_percent: int | None = None,
        paused: bool | None = None,
        tag: str | Keep | None = KEEP,
    ) -> ReleaseRecord:
        if rollout_percent is not None and not 0 <= rollout_percent <= 100:
            raise InvalidInput("rolloutPercent must be between 0 and 100")
        if not await self._store.update(
            release_id, rollout_percent=rollout_percent, paused=paused, tag=tag
        ):
            raise NotFound(f"no release {release_id!r}", code="release_not_found")
        return await self.get(release_id)

    async def manifest(
        self, *, model: str | None, current: str | None, device: DeviceRecord | None, admin: bool
    ) -> list[ReleaseRecord]:
        """What a caller is offered, newest first: releases of `model` newer than `current`.
        A device gets only releases whose rollout includes it and that are not paused (unless
        it already started on one) and, for a release restricted to a tag, that the device
        has; an anonymous caller only unpaused 100% releases without a tag."""
        if current:
            floor: semver.Version | None = running_version(current, "current")
        elif current is None and device is not None:
            # A device that does not say what it runs is taken at its word from MQTT. A
            # version no rule reads leaves no floor: every release is newer than "unknown".
            floor = running_version_or_none(device.fw_version)
        else:
            floor = None
        candidates = [
            r
            for r in await self._store.of_model(model)
            if floor is None or semver.Version.parse(r.version) > floor
        ]
        if admin:
            return _newest_first(candidates)
        if device is None:
            return _newest_first(
                [
                    r
                    for r in candidates
                    if r.rollout_percent == 100 and not r.paused and r.tag is None
                ]
            )
        started = await self._started(device.id, candidates)
        offered = [
            r
            for r in candidates
            # A tag restricts who is offered the release; a device part-way through it that
            # lost the tag since still finishes (as with pausing).
            if r.version in started
            or (
                not r.paused
                and (r.tag is None or r.tag in device.tags)
                and in_rollout(device.id, r.rollout_percent)
            )
        ]
        return _newest_first(offered)

    async def _started(self, device_id: str, releases: list[ReleaseRecord]) -> set[str]:
        """Versions this device is part-way through. A device that failed has not started:
        pausing a broken release must stop its retries too."""
        started: set[str] = set()
        for release in releases:
            progress = await self._store.progress(release.version, [device_id])
            if device_id in progress and progress[device_id].status in IN_PROGRESS:
                started.add(release.version)
        return started

    async def rollout_status(self, release: ReleaseRecord) -> RolloutStatus:
        devices: list[DeviceRecord] = []
        after: str | None = None
        while True:
            page = await self._devices.page(
                limit=1000, after_id=after, model=release.model, tag=release.tag
            )
            devices.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].id
        progress = await self._store.progress(release.version, (d.id for d in devices))
        by_status: dict[str, list[str]] = {status: [] for status in ROLLOUT_STATUSES}
        target = semver.Version.parse(release.version)
        for device in devices:
            running = running_version_or_none(device.fw_version)
            if running is not None and running >= target:
                by_status["updated"].append(device.id)  # this version, or past it already
            elif device.id in progress:
                by_status[progress[device.id].status].append(device.id)
            elif not release.paused and in_rollout(device.id, release.rollout_percent):
                by_status["pending"].append(device.id)
        return RolloutStatus(
            counts={status: len(ids) for status, ids in by_status.items()}, devices=by_status
        )
