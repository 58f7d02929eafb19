"""The autopilot: every few seconds, each rolling release with a plan is promoted, paused or
aborted as ota/plans.py decides on its rollout's counts. A completed release stays watched
while it is the newest release devices of its model (and tag) are offered: its last wave's
devices still take it, and failures among them abort it as they would have while rolling.

It runs beside the collector (server/service.py). Several collectors may run it at once:
each step is a conditional update (ota/control.py), so a step decided twice happens once and
the loser's attempt is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import semver

from paku_iot.exceptions import Conflict
from paku_iot.ota.control import ReleaseControl
from paku_iot.ota.plans import Decision, decide, wave_tally
from paku_iot.ota.status import rollout_status
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.periodic import repeat
from paku_iot.storage.records import ReleaseRecord
from paku_iot.storage.releases import ReleaseStore

log = logging.getLogger("paku_iot.ota")

ACTOR = "autopilot"
INTERVAL_S = 5.0


class Autopilot:
    def __init__(
        self, store: ReleaseStore, devices: DeviceStore, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._devices = devices
        self._clock = clock
        self._control = ReleaseControl(store, clock)

    async def step(self) -> list[tuple[str, Decision]]:
        """Evaluate every rolling release with a plan, and every completed one still current,
        once; what was done to which."""
        done: list[tuple[str, Decision]] = []
        watched = await self._store.with_plan("rolling")
        watched += await self._current(await self._store.with_plan("completed"))
        for release in watched:
            decision = await self._evaluate(release)
            if decision is not None:
                done.append((release.id, decision))
        return done

    async def _current(self, completed: list[ReleaseRecord]) -> list[ReleaseRecord]:
        """The completed releases that are the newest version, aborted ones aside, of their
        model and tag: the others are superseded, and their counts no longer move much."""
        by_model: dict[str, list[ReleaseRecord]] = {}
        current: list[ReleaseRecord] = []
        for release in completed:
            if release.model not in by_model:
                by_model[release.model] = await self._store.of_model(release.model)
            rivals = [
                r for r in by_model[release.model] if r.tag == release.tag and r.state != "aborted"
            ]
            newest = max(rivals, key=lambda r: semver.Version.parse(r.version))
            if newest.id == release.id:
                current.append(release)
        return current

    async def _evaluate(self, release: ReleaseRecord) -> Decision | None:
        status = await rollout_status(self._store, self._devices, release)
        decision = decide(release, wave_tally(release, status.devices), self._clock())
        if decision is None:
            return None
        detail = {"counts": status.counts}
        try:
            if decision.kind == "aborted":
                await self._control.abort(release.id, ACTOR, decision.reason, **detail)
            elif decision.kind == "paused":
                await self._control.pause(release.id, ACTOR, decision.reason, **detail)
            else:
                await self._control.promote(release.id, ACTOR, detail)
        except Conflict:
            return None  # an operator, or another collector, moved it first
        log.info(
            "release %s %s: %s%s",
            release.id,
            release.version,
            decision.kind,
            f" ({decision.reason})" if decision.reason else "",
        )
        return decision

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        await repeat(self.step, interval_s, "autopilot step", log)
