"""The Docker engine and images every test here needs (tests/support/stacks.py)."""

from __future__ import annotations

import pytest

from tests.support.stacks import prepare_engine


@pytest.fixture(scope="session")
def engine() -> list[str]:
    """A Docker engine that answers, docker-compose, and the images both compose files name
    (the official ones, or local stand-ins): what was done to get them."""
    return prepare_engine("dev", "prod")
