"""Database URLs as users write them, mapped to the async drivers paku-iot uses."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from paku_iot.exceptions import SettingsError

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_database_url(url: str) -> URL:
    """`postgresql://...` -> asyncpg, `sqlite:///...` -> aiosqlite; anything else is refused."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(f"PAKU_DATABASE_URL is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        raise SettingsError(
            f"PAKU_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {backend!r}"
        )
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def describe(url: URL) -> str:
    """The URL without its password, safe to log."""
    return url.render_as_string(hide_password=True)
