"""Fixtures of the compose tests: the brokers started from the broker container's
entrypoint, stopped (the whole process group) after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.containers import EntrypointBroker


@pytest.fixture
def entrypoint_brokers() -> Iterator[list[EntrypointBroker]]:
    started: list[EntrypointBroker] = []
    yield started
    for broker in started:
        broker.stop()
