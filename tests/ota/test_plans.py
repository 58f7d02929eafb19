"""What the autopilot decides on a wave's counts (ota/plans.py), without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from paku_iot.ota.plans import Decision, Tally, decide, wave_tally
from paku_iot.ota.rollout import in_rollout
from paku_iot.storage.records import ReleaseRecord

T0 = datetime(2026, 12, 5, tzinfo=UTC)
RELEASE = ReleaseRecord(
    id="fw-1",
    model="lamp",
    version="2.0.0",
    sha256="0" * 64,
    size=1,
    signature=None,
    statement_signature=None,
    rollout_percent=10,
    paused=False,
    notes=None,
    created_at=T0,
    plan=[{"percent": 10, "soakSeconds": 60}, {"percent": 100, "soakSeconds": 60}],
    wave_started_at=T0,
)
AFTER_SOAK = T0 + timedelta(seconds=61)


@pytest.mark.parametrize(
    ("tally", "now", "expected"),
    [
        (Tally(tried=10, confirmed=10, failures=0), T0, None),  # soaking
        (Tally(tried=10, confirmed=10, failures=0), AFTER_SOAK, Decision("promoted")),
        (Tally(tried=10, confirmed=5, failures=0), AFTER_SOAK, Decision("promoted")),
        (
            Tally(tried=10, confirmed=4, failures=0),
            AFTER_SOAK,
            Decision("paused", "wave 1: 4 of 10 confirmed, 5 needed"),
        ),
        (
            Tally(tried=0, confirmed=0, failures=0),
            AFTER_SOAK,
            Decision("paused", "wave 1: 0 of 0 confirmed, 1 needed"),
        ),
        # Failures abort at once, soak or not, once enough tried.
        (
            Tally(tried=10, confirmed=9, failures=1),
            T0,
            Decision("aborted", "wave 1: 1 of 10 failed, abort at 10%"),
        ),
        # Too few tried to abort, too many failed to promote.
        (Tally(tried=2, confirmed=1, failures=1), T0, None),
        (
            Tally(tried=2, confirmed=1, failures=1),
            AFTER_SOAK,
            Decision("paused", "wave 1: 1 of 2 failed (abort at 10% once 3 tried)"),
        ),
        (Tally(tried=20, confirmed=19, failures=1), AFTER_SOAK, Decision("promoted")),
    ],
)
def test_a_wave_is_promoted_paused_or_aborted(
    tally: Tally, now: datetime, expected: Decision | None
) -> None:
    assert decide(RELEASE, tally, now) == expected


def test_the_last_wave_completes_and_only_rolling_releases_with_a_plan_move() -> None:
    last = replace(RELEASE, current_wave=1, rollout_percent=100)
    assert decide(last, Tally(10, 10, 0), AFTER_SOAK) == Decision("completed")
    for state in ("paused", "aborted"):
        assert decide(replace(RELEASE, state=state), Tally(10, 0, 9), AFTER_SOAK) is None
    # A completed release is only ever aborted: its last wave's devices still take it.
    done = replace(last, state="completed")
    assert decide(done, Tally(10, 1, 9), AFTER_SOAK) == Decision(
        "aborted", "wave 2: 9 of 10 failed, abort at 10%"
    )
    assert decide(done, Tally(10, 1, 0), AFTER_SOAK) is None  # never paused for confirmations
    assert decide(done, Tally(2, 0, 2), AFTER_SOAK) is None  # too few tried to abort
    assert decide(replace(RELEASE, plan=None), Tally(10, 0, 9), AFTER_SOAK) is None


def test_at_zero_percent_any_failure_aborts() -> None:
    strict = replace(RELEASE, abort_failure_percent=0, abort_min_devices=1)
    assert decide(strict, Tally(50, 49, 1), T0) == Decision(
        "aborted", "wave 1: 1 of 50 failed, abort at 0%"
    )
    assert decide(strict, Tally(50, 50, 0), AFTER_SOAK) == Decision("promoted")


def test_a_wave_is_not_promoted_before_any_device_it_added_confirmed() -> None:
    """Earlier waves' confirmations alone do not promote a wave whose own devices have not
    run the build yet (asleep, or slower than the soak time)."""
    waves = [{"percent": p, "soakSeconds": 60} for p in (10, 50, 100)]
    second = replace(RELEASE, plan=waves, current_wave=1, rollout_percent=50)
    waiting = Tally(tried=10, confirmed=10, failures=0, added=9, added_confirmed=0)
    assert decide(second, waiting, AFTER_SOAK) == Decision(
        "paused", "wave 2: 0 of the 9 devices it added confirmed, 1 needed"
    )
    one = replace(waiting, tried=11, confirmed=11, added_confirmed=1)
    assert decide(second, one, AFTER_SOAK) == Decision("promoted")
    # A wave that added no device that was ever seen has nobody to wait for.
    assert decide(second, replace(waiting, added=0), AFTER_SOAK) == Decision("promoted")
    # minConfirmed counts among the added devices too, up to as many as there are.
    three = replace(second, min_confirmed=3)
    assert decide(three, replace(one, added=2, added_confirmed=1), AFTER_SOAK) == Decision(
        "paused", "wave 2: 1 of the 2 devices it added confirmed, 2 needed"
    )
    assert decide(three, replace(one, added=2, added_confirmed=2), AFTER_SOAK) == Decision(
        "promoted"
    )
    # Completing offers it to nobody new: the last wave's own devices are not waited for.
    last = replace(second, current_wave=2, rollout_percent=100)
    assert decide(last, waiting, AFTER_SOAK) == Decision("completed")


def test_the_wave_tally_counts_apart_the_devices_the_current_wave_added() -> None:
    ids = [f"lamp-{n:03d}" for n in range(200)]
    first = [d for d in ids if in_rollout(d, 10)]
    added = [d for d in ids if in_rollout(d, 100) and not in_rollout(d, 10)]
    devices = {"confirmed": first + added[:3], "pending": added[3:], "failed": []}
    tally = wave_tally(replace(RELEASE, current_wave=1, rollout_percent=100), devices)
    assert tally == Tally(
        tried=len(first) + 3,
        confirmed=len(first) + 3,
        failures=0,
        added=len(added),
        added_confirmed=3,
    )
    # In the first wave, every device of the wave is one it added.
    tally = wave_tally(RELEASE, {"confirmed": first[:2], "pending": first[2:]})
    assert (tally.added, tally.added_confirmed) == (len(first), 2)
