"""Staged rollouts and version order, on 1,000 device ids."""

from __future__ import annotations

import pytest

from paku_iot.exceptions import InvalidInput
from paku_iot.ota.rollout import bucket, in_rollout
from paku_iot.ota.versions import newest_first, parse_version

IDS = [f"dev-{n:04d}" for n in range(1000)]


@pytest.mark.parametrize("percent", [0, 1, 10, 25, 50, 90, 100])
def test_a_rollout_includes_its_share_of_devices(percent: int) -> None:
    included = sum(in_rollout(d, percent) for d in IDS)
    # Binomial spread for n=1000 stays well within 4.5 points at p=0.5.
    assert abs(included - percent * 10) <= 45
    if percent in (0, 100):
        assert included == percent * 10


def test_raising_the_percentage_only_adds_devices() -> None:
    previous: set[str] = set()
    for percent in range(0, 101, 5):
        current = {d for d in IDS if in_rollout(d, percent)}
        assert previous <= current
        previous = current
    assert previous == set(IDS)


def test_buckets_are_stable_and_spread() -> None:
    assert bucket("dev-0001") == bucket("dev-0001")
    assert len({bucket(d) for d in IDS}) > 900


def test_versions_sort_by_semver_with_prereleases_below_their_release() -> None:
    assert newest_first(["1.0.0", "1.10.0", "1.2.0", "2.0.0-rc.1", "2.0.0", "1.2.0-beta"]) == [
        "2.0.0",
        "2.0.0-rc.1",
        "1.10.0",
        "1.2.0",
        "1.2.0-beta",
        "1.0.0",
    ]


@pytest.mark.parametrize("bad", ["v1.0.0", "1.0", "latest", "", "1.0.0.0", "01.0.0"])
def test_non_semver_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="semantic version"):
        parse_version(bad)
