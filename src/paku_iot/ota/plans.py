"""Release plans: the waves a release rolls out in, and what the autopilot decides.

A plan is a list of waves `{"percent": P, "soakSeconds": S}`, percents strictly increasing
within 1..100. The current wave's percent is the rollout percentage (ota/rollout.py). After a
wave's soak time, the wave is promoted when enough of the devices that tried the release
confirmed it (at least `min_confirmed`, and `min_confirmed_percent` of them) and failures
stay below `abort_failure_percent`; otherwise the rollout pauses, saying why. At any time,
failures (`failed`, `rolled_back`) reaching `abort_failure_percent` of the devices that
tried, once at least `abort_min_devices` tried, abort it. docs/ota.md is the prose.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from paku_iot.exceptions import InvalidInput
from paku_iot.ota.rollout import in_rollout
from paku_iot.storage.records import ReleaseRecord

STATES = ("rolling", "paused", "completed", "aborted")
MAX_WAVES = 20
MAX_SOAK_SECONDS = 90 * 24 * 3600

# Rollout statuses (ota/releases.py) of devices that tried the release, and of those among
# them that failed it.
TRIED = frozenset(
    {"downloading", "installing", "installed", "updated", "confirmed", "failed", "rolled_back"}
)
FAILURES = frozenset({"failed", "rolled_back"})


@dataclass(frozen=True, slots=True)
class Criteria:
    min_confirmed: int = 1
    min_confirmed_percent: int = 50
    abort_failure_percent: int = 10
    abort_min_devices: int = 3


def check_criteria(criteria: Criteria) -> Criteria:
    if criteria.min_confirmed < 0:
        raise InvalidInput("minConfirmed must be 0 or more", code="invalid_plan")
    for name, value in (
        ("minConfirmedPercent", criteria.min_confirmed_percent),
        ("abortFailurePercent", criteria.abort_failure_percent),
    ):
        if not 0 <= value <= 100:
            raise InvalidInput(f"{name} must be between 0 and 100", code="invalid_plan")
    if criteria.abort_min_devices < 1:
        raise InvalidInput("abortMinDevices must be 1 or more", code="invalid_plan")
    return criteria


def parse_plan(value: Any) -> list[dict[str, int]]:
    """The plan in its stored form, from JSON text (a multipart field) or a parsed list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput("plan must be a JSON list of waves", code="invalid_plan") from None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_WAVES:
        raise InvalidInput(f"plan must be a list of 1-{MAX_WAVES} waves", code="invalid_plan")
    waves: list[dict[str, int]] = []
    for n, wave in enumerate(value, 1):
        if not isinstance(wave, dict) or set(wave) - {"percent", "soakSeconds"}:
            raise InvalidInput(
                f"wave {n}: an object with percent and soakSeconds", code="invalid_plan"
            )
        percent, soak = wave.get("percent"), wave.get("soakSeconds", 0)
        if type(percent) is not int or not 1 <= percent <= 100:
            raise InvalidInput(f"wave {n}: percent must be 1-100", code="invalid_plan")
        if type(soak) is not int or not 0 <= soak <= MAX_SOAK_SECONDS:
            raise InvalidInput(
                f"wave {n}: soakSeconds must be 0-{MAX_SOAK_SECONDS}", code="invalid_plan"
            )
        if waves and percent <= waves[-1]["percent"]:
            raise InvalidInput(
                f"wave {n}: percents must increase ({percent} after {waves[-1]['percent']})",
                code="invalid_plan",
            )
        waves.append({"percent": percent, "soakSeconds": soak})
    return waves


def criteria_of(release: ReleaseRecord) -> Criteria:
    return Criteria(
        release.min_confirmed,
        release.min_confirmed_percent,
        release.abort_failure_percent,
        release.abort_min_devices,
    )


@dataclass(frozen=True, slots=True)
class Tally:
    """Where the devices of the current wave stand with the release: over the whole rollout so
    far (a wave includes the waves before it), and apart, over the devices this wave added."""

    tried: int
    confirmed: int
    failures: int
    # Seen devices the current wave added to the one before (pending or further), and how
    # many of them confirmed: a wave is not promoted on the confirmations of earlier waves
    # alone while its own devices have not run the build yet.
    added: int = 0
    added_confirmed: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> Tally:
        return cls(
            tried=sum(n for status, n in counts.items() if status in TRIED),
            confirmed=counts.get("confirmed", 0),
            failures=sum(n for status, n in counts.items() if status in FAILURES),
        )


def wave_tally(release: ReleaseRecord, devices: dict[str, list[str]]) -> Tally:
    """The tally of a release's current wave from its devices by rollout status
    (ota/status.py; never-seen devices are not in it)."""
    counts = {status: len(ids) for status, ids in devices.items()}
    if release.plan is None:
        return Tally.of(counts)
    wave = release.current_wave
    below = release.plan[wave - 1]["percent"] if wave > 0 else 0
    percent = release.plan[wave]["percent"]

    def added(device_id: str) -> bool:
        return in_rollout(device_id, percent) and not in_rollout(device_id, below)

    new = {status: sum(1 for d in ids if added(d)) for status, ids in devices.items()}
    return replace(
        Tally.of(counts), added=sum(new.values()), added_confirmed=new.get("confirmed", 0)
    )


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # promoted | completed | paused | aborted
    reason: str | None = None


def _failing(tally: Tally, criteria: Criteria) -> bool:
    # "Reaches" the threshold: 10% with 1 failure of 10 tried aborts. At 0%, any failure.
    return tally.failures > 0 and tally.failures * 100 >= criteria.abort_failure_percent * (
        tally.tried
    )


def needed(tally: Tally, criteria: Criteria) -> int:
    return max(
        criteria.min_confirmed, math.ceil(criteria.min_confirmed_percent * tally.tried / 100)
    )


def decide(release: ReleaseRecord, tally: Tally, now: datetime) -> Decision | None:
    """What the autopilot does with a release now; None: wait. A rolling release is
    promoted, paused or aborted; a completed one, still taken by devices of its last wave,
    can only be aborted."""
    if release.plan is None or release.state not in ("rolling", "completed"):
        return None
    criteria = criteria_of(release)
    wave = release.current_wave + 1
    if tally.tried >= criteria.abort_min_devices and _failing(tally, criteria):
        return Decision(
            "aborted",
            f"wave {wave}: {tally.failures} of {tally.tried} failed, "
            f"abort at {criteria.abort_failure_percent}%",
        )
    if release.state == "completed":
        return None
    soak = timedelta(seconds=release.plan[release.current_wave]["soakSeconds"])
    if release.wave_started_at is not None and now < release.wave_started_at + soak:
        return None
    if _failing(tally, criteria):
        # Too few tried to abort, too many failed to go on.
        return Decision(
            "paused",
            f"wave {wave}: {tally.failures} of {tally.tried} failed "
            f"(abort at {criteria.abort_failure_percent}% once {criteria.abort_min_devices} "
            "tried)",
        )
    want = needed(tally, criteria)
    if tally.confirmed < want:
        return Decision(
            "paused", f"wave {wave}: {tally.confirmed} of {tally.tried} confirmed, {want} needed"
        )
    last = release.current_wave + 1 >= len(release.plan)
    if last:
        # Completing offers the release to nobody new: the last wave's own devices are not
        # waited for (its soak time is the way to have them judged first).
        return Decision("completed")
    want_added = min(criteria.min_confirmed, tally.added)
    if tally.added_confirmed < want_added:
        return Decision(
            "paused",
            f"wave {wave}: {tally.added_confirmed} of the {tally.added} devices it added "
            f"confirmed, {want_added} needed",
        )
    return Decision("promoted")
