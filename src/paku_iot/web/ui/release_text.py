"""A release's plan, rollout states and timeline in a few words, as its dashboard page shows
them (ota/plans.py, ota/status.py, ota/control.py; docs/ota.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from paku_iot.ota.status import NEVER_SEEN, ROLLOUT_STATUSES, RolloutStatus
from paku_iot.storage.records import ReleaseEvent, ReleaseRecord

DEVICES_SHOWN = 100

# The page groups the rollout states by what they mean for the rollout; `installed` and
# `updated` stand apart from `confirmed` because the autopilot never counts them as confirmed.
STATE_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("waiting", "Offered, no report yet", ("pending",)),
    ("in-progress", "Downloading or installing", ("downloading", "installing")),
    (
        "unconfirmed",
        "Written or running, not confirmed (never counted as confirmed)",
        ("installed", "updated"),
    ),
    ("confirmed", "Confirmed: a healthy first run", ("confirmed",)),
    ("failures", "Failures", ("failed", "rolled_back")),
)
NEVER_SEEN_GROUP = ("never-seen", "Never connected (not waited for)", (NEVER_SEEN,))


def duration(seconds: int) -> str:
    """A soak time as people say it: `10 min`, `1 h 30 min`, `2 d`; `none` for 0."""
    if seconds <= 0:
        return "none"
    parts = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class WaveRow:
    number: int  # 1-based, as the API and the timeline count waves
    percent: int
    soak: str
    current: bool
    done: bool


def wave_rows(release: ReleaseRecord) -> list[WaveRow]:
    # A completed release has passed its last wave too.
    finished = release.current_wave + (1 if release.state == "completed" else 0)
    return [
        WaveRow(
            number=n + 1,
            percent=wave["percent"],
            soak=duration(wave["soakSeconds"]),
            current=n == release.current_wave and release.state != "completed",
            done=n < finished,
        )
        for n, wave in enumerate(release.plan or [])
    ]


def soak_ends_at(release: ReleaseRecord) -> datetime | None:
    if release.plan is None or release.wave_started_at is None:
        return None
    soak = release.plan[release.current_wave]["soakSeconds"]
    return release.wave_started_at + timedelta(seconds=soak)


@dataclass(frozen=True, slots=True)
class StateRow:
    state: str
    count: int
    shown: list[str]  # the first DEVICES_SHOWN device ids
    more: int  # how many are not shown


@dataclass(frozen=True, slots=True)
class StateGroup:
    key: str
    heading: str
    rows: list[StateRow]


def _row(state: str, ids: list[str]) -> StateRow:
    ordered = sorted(ids)
    return StateRow(
        state, len(ordered), ordered[:DEVICES_SHOWN], max(0, len(ordered) - DEVICES_SHOWN)
    )


def state_groups(status: RolloutStatus) -> list[StateGroup]:
    """Every rollout state with its devices, grouped; never-seen devices last, apart. A state
    the groups do not name yet is still shown, in a group of its own."""
    named = {state for _, _, states in STATE_GROUPS for state in states}
    groups = [
        StateGroup(key, heading, [_row(s, status.devices.get(s, [])) for s in states])
        for key, heading, states in STATE_GROUPS
    ]
    others = [s for s in ROLLOUT_STATUSES if s not in named]
    if others:
        groups.append(
            StateGroup("other", "Other", [_row(s, status.devices.get(s, [])) for s in others])
        )
    key, heading, _ = NEVER_SEEN_GROUP
    groups.append(StateGroup(key, heading, [_row(NEVER_SEEN, status.never_seen)]))
    return groups


@dataclass(frozen=True, slots=True)
class TimelineRow:
    at: datetime
    actor: str
    kind: str
    wave: str
    change: str
    reason: str | None
    counts: str


def _change(event: ReleaseEvent) -> str:
    detail = event.detail
    if event.kind == "promoted" and "toWave" in detail:
        return f"to wave {detail['toWave']} ({detail.get('percent')}%)"
    if event.kind == "plan":
        plan = detail.get("plan")
        if plan is None:
            return "plan removed"
        return "plan: " + ", ".join(
            f"{w['percent']}% for {duration(w['soakSeconds'])}" for w in plan
        )
    return ""


def _counts(detail: dict[str, Any]) -> str:
    counts = detail.get("counts")
    if not isinstance(counts, dict):
        return ""
    # The states with devices in them: the decision's evidence, not a row of zeros.
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n)


def timeline_rows(events: list[ReleaseEvent]) -> list[TimelineRow]:
    return [
        TimelineRow(
            at=event.at,
            actor=event.actor,
            kind=event.kind,
            wave=str(event.detail.get("wave", "")),
            change=_change(event),
            reason=event.detail.get("reason"),
            counts=_counts(event.detail),
        )
        for event in events
    ]
