"""A release's state machine: promote, pause, resume, abort and set its plan, by an operator
or the autopilot. Every change is one conditional UPDATE plus its timeline event
(storage/releases.py), so a step decided twice (two collectors, an operator racing the
autopilot) happens once.

    rolling --promote--> rolling (next wave) | completed (after the last wave)
    rolling | completed --pause--> paused --resume--> rolling (the wave's soak starts again)
    rolling | paused | completed --abort--> aborted (offered to nobody, for good)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from paku_iot.exceptions import Conflict, NotFound
from paku_iot.ota.plans import Criteria, check_criteria, parse_plan
from paku_iot.storage.records import KEEP, ReleaseEvent, ReleaseRecord
from paku_iot.storage.releases import ReleaseStore

MAX_REASON_CHARS = 500


def _refuse(release: ReleaseRecord, action: str) -> Conflict:
    if release.state in ("aborted", "completed"):
        return Conflict(
            f"cannot {action} release {release.id}: it is {release.state}",
            code=f"release_{release.state}",
        )
    return Conflict(
        f"cannot {action} release {release.id}: it is {release.state}", code="invalid_transition"
    )


class ReleaseControl:
    def __init__(self, store: ReleaseStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    async def _get(self, release_id: str) -> ReleaseRecord:
        release = await self._store.get(release_id)
        if release is None:
            raise NotFound(f"no release {release_id!r}", code="release_not_found")
        return release

    async def _apply(
        self,
        release: ReleaseRecord,
        kind: str,
        values: dict[str, Any],
        actor: str,
        detail: dict[str, Any],
    ) -> ReleaseRecord:
        done = await self._store.transition(
            release.id,
            (release.state, release.current_wave),
            values,
            at=self._clock(),
            actor=actor,
            kind=kind,
            detail={"wave": release.current_wave + 1, **detail},
        )
        if not done:
            raise Conflict(
                f"release {release.id} changed meanwhile; look again", code="release_changed"
            )
        return await self._get(release.id)

    async def promote(
        self, release_id: str, actor: str, detail: dict[str, Any] | None = None
    ) -> ReleaseRecord:
        """The next wave, or `completed` after the last."""
        release = await self._get(release_id)
        if release.state not in ("rolling", "paused"):
            raise _refuse(release, "promote")
        if release.plan is None:
            raise Conflict(
                f"release {release_id} has no plan: raise its rolloutPercent instead",
                code="no_plan",
            )
        after = release.current_wave + 1
        if after >= len(release.plan):
            values: dict[str, Any] = {"state": "completed", "paused": False}
            kind = "completed"
        else:
            values = {
                "state": "rolling",
                "paused": False,
                "current_wave": after,
                "rollout_percent": release.plan[after]["percent"],
                "wave_started_at": self._clock(),
            }
            kind = "promoted"
            detail = {"toWave": after + 1, "percent": values["rollout_percent"], **(detail or {})}
        values["state_reason"] = None
        return await self._apply(release, kind, values, actor, detail or {})

    async def pause(
        self, release_id: str, actor: str, reason: str | None = None, **detail: Any
    ) -> ReleaseRecord:
        release = await self._get(release_id)
        # A completed release may be paused too: it is still offered to the devices that
        # have not taken it yet. Resumed, the autopilot judges its last wave again.
        if release.state not in ("rolling", "completed"):
            raise _refuse(release, "pause")
        reason = _clip(reason)
        values = {"state": "paused", "paused": True, "state_reason": reason}
        return await self._apply(release, "paused", values, actor, {"reason": reason, **detail})

    async def resume(self, release_id: str, actor: str) -> ReleaseRecord:
        release = await self._get(release_id)
        if release.state != "paused":
            raise _refuse(release, "resume")
        # A new soak: the autopilot judges the wave afresh, rather than pausing it again at
        # once on the counts that paused it.
        values = {
            "state": "rolling",
            "paused": False,
            "state_reason": None,
            "wave_started_at": self._clock(),
        }
        return await self._apply(release, "resumed", values, actor, {})

    async def abort(
        self, release_id: str, actor: str, reason: str | None = None, **detail: Any
    ) -> ReleaseRecord:
        release = await self._get(release_id)
        if release.state == "aborted":
            raise _refuse(release, "abort")
        reason = _clip(reason)
        values = {"state": "aborted", "paused": True, "state_reason": reason}
        return await self._apply(release, "aborted", values, actor, {"reason": reason, **detail})

    async def set_plan(
        self, release_id: str, actor: str, plan: Any, criteria: Criteria
    ) -> ReleaseRecord:
        """Set the criteria and, unless `plan` is KEEP, the plan: a new one starts again at
        its first wave; None takes it away (the rollout percentage stays where it was)."""
        release = await self._get(release_id)
        if release.state not in ("rolling", "paused"):
            raise _refuse(release, "change the plan of")
        check_criteria(criteria)
        values: dict[str, Any] = {
            "min_confirmed": criteria.min_confirmed,
            "min_confirmed_percent": criteria.min_confirmed_percent,
            "abort_failure_percent": criteria.abort_failure_percent,
            "abort_min_devices": criteria.abort_min_devices,
        }
        waves = release.plan if plan is KEEP else None if plan is None else parse_plan(plan)
        if plan is not KEEP:
            values["plan"] = waves
        if plan is not KEEP and waves is not None:
            values |= {
                "state": "rolling",
                "paused": False,
                "state_reason": None,
                "current_wave": 0,
                "rollout_percent": waves[0]["percent"],
                "wave_started_at": self._clock(),
            }
        detail = {
            "plan": waves,
            "minConfirmed": criteria.min_confirmed,
            "minConfirmedPercent": criteria.min_confirmed_percent,
            "abortFailurePercent": criteria.abort_failure_percent,
            "abortMinDevices": criteria.abort_min_devices,
        }
        return await self._apply(release, "plan", values, actor, detail)

    async def timeline(self, release_id: str) -> list[ReleaseEvent]:
        await self._get(release_id)
        return await self._store.events(release_id)


def _clip(reason: str | None) -> str | None:
    return None if reason is None else reason[:MAX_REASON_CHARS]
