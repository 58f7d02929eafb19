"""Releases: publishing images, the manifest devices poll, rollout control and status."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

import semver

from paku_iot.exceptions import Conflict, InvalidInput, NotFound
from paku_iot.ota.control import ReleaseControl
from paku_iot.ota.files import FirmwareFiles
from paku_iot.ota.plans import Criteria, check_criteria, parse_plan
from paku_iot.ota.rollout import in_rollout
from paku_iot.ota.signer import ReleaseSignatures, ReleaseSigner
from paku_iot.ota.status import NEVER_SEEN, ROLLOUT_STATUSES, RolloutStatus, rollout_status
from paku_iot.ota.versions import parse_version, running_version, running_version_or_none
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import KEEP, DeviceRecord, Keep, ReleaseRecord
from paku_iot.storage.releases import ReleaseStore

log = logging.getLogger("paku_iot.ota")

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
        self.control = ReleaseControl(store, clock)

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
        plan: object = None,
        criteria: Criteria | None = None,
        actor: str = "system",
    ) -> ReleaseRecord:
        """Store and sign a release. Signatures the upload brings (made off the server by
        `paku-iot ota sign`) are checked against the image before it is kept. With a `plan`,
        the rollout percentage is its first wave's, and the autopilot's from there."""
        parse_version(version)
        if not 1 <= len(model) <= 64:
            raise InvalidInput("model must be 1-64 characters")
        if not 0 <= rollout_percent <= 100:
            raise InvalidInput("rolloutPercent must be between 0 and 100")
        waves = None if plan is None else parse_plan(plan)
        criteria = check_criteria(criteria or Criteria())
        if waves is not None:
            rollout_percent = waves[0]["percent"]
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
        now = self._clock()
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
            created_at=now,
            tag=tag,
            plan=waves,
            min_confirmed=criteria.min_confirmed,
            min_confirmed_percent=criteria.min_confirmed_percent,
            abort_failure_percent=criteria.abort_failure_percent,
            abort_min_devices=criteria.abort_min_devices,
            wave_started_at=now if waves is not None else None,
        )
        # A refused duplicate leaves its image in the store: it is content-addressed, so at
        # worst it is the very file the existing release serves.
        await self._store.insert(release, actor)
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
        actor: str,
        rollout_percent: int | None = None,
        paused: bool | None = None,
        tag: str | Keep | None = KEEP,
    ) -> ReleaseRecord:
        if rollout_percent is not None and not 0 <= rollout_percent <= 100:
            raise InvalidInput("rolloutPercent must be between 0 and 100")
        release = await self.get(release_id)
        if rollout_percent is not None and release.plan is not None:
            raise Conflict(
                f"release {release_id} follows its plan: promote it, or remove the plan",
                code="release_has_plan",
            )
        if not await self._store.update(
            release_id, rollout_percent=rollout_percent, paused=None, tag=tag
        ):
            raise NotFound(f"no release {release_id!r}", code="release_not_found")
        # `paused` is the state machine's (ota/control.py); asking for the state the release
        # is already in is not an error, as it was not before states existed.
        if paused and release.state != "paused":
            await self.control.pause(release_id, actor)
        elif paused is False and release.state != "rolling":
            await self.control.resume(release_id, actor)
        return await self.get(release_id)

    async def manifest(
        self, *, model: str | None, current: str | None, device: DeviceRecord | None, admin: bool
    ) -> list[ReleaseRecord]:
        """What a caller is offered, newest first: releases of `model` newer than `current`.
        A device gets only releases whose rollout includes it and that are not paused (unless
        it already started on one), not one it rolled back from, and, for a release
        restricted to a tag, only if it has the tag; an anonymous caller only unpaused 100%
        releases without a tag; nobody an aborted release."""
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
            # An aborted release is offered to nobody, not even a device part-way through.
            if r.state != "aborted" and (floor is None or semver.Version.parse(r.version) > floor)
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
        reported = await self._reported(device.id, candidates)
        offered = [
            r
            for r in candidates
            # A tag restricts who is offered the release; a device part-way through it that
            # lost the tag since still finishes (as with pausing).
            if reported.get(r.version) in IN_PROGRESS
            or (
                not r.paused
                # A device that rolled back from an image booted it and found it unhealthy:
                # offering it again would only loop it through the same rollback.
                and reported.get(r.version) != "rolled_back"
                and (r.tag is None or r.tag in device.tags)
                and in_rollout(device.id, r.rollout_percent)
            )
        ]
        return _newest_first(offered)

    async def _reported(self, device_id: str, releases: list[ReleaseRecord]) -> dict[str, str]:
        """This device's latest report on each of these versions. One that failed has not
        started (not IN_PROGRESS): pausing a broken release must stop its retries too."""
        reported: dict[str, str] = {}
        for release in releases:
            progress = await self._store.progress(release.version, [device_id])
            if device_id in progress:
                reported[release.version] = progress[device_id].status
        return reported

    async def rollout_status(self, release: ReleaseRecord) -> RolloutStatus:
        return await rollout_status(self._store, self._devices, release)

    async def devices_in(self, release: ReleaseRecord, state: str) -> list[str]:
        """The ids of the devices in one rollout state (NEVER_SEEN included), in id order."""
        if state not in (*ROLLOUT_STATUSES, NEVER_SEEN):
            raise InvalidInput(
                f"state must be one of {', '.join((*ROLLOUT_STATUSES, NEVER_SEEN))}",
                code="invalid_state",
            )
        status = await self.rollout_status(release)
        return status.never_seen if state == NEVER_SEEN else status.devices[state]
