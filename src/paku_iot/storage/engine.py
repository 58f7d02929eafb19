"""The database engine and the translation of driver errors into paku-iot's own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from paku_iot.exceptions import Unavailable
from paku_iot.storage.urls import async_database_url, describe

log = logging.getLogger("paku_iot.storage")


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the collector writes; NORMAL sync is durable across process
    # crashes in WAL mode (only an OS crash can lose the last commits); the busy timeout makes
    # a briefly locked database wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for a user-facing URL (`sqlite:///...` or `postgresql://...`)."""
    async_url = async_database_url(url)
    if async_url.get_backend_name() == "sqlite":
        database = async_url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
    else:
        engine = create_async_engine(async_url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    log.debug("database engine for %s", describe(async_url))
    return engine


# PostgreSQL SQLSTATE classes that mean "not now" rather than "not ever": connection
# exceptions, insufficient resources (disk full, too many connections), operator
# intervention (shutdown, cannot connect now), and a database closed to connections.
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
_UNAVAILABLE_SQLSTATES = frozenset({"55000", "3D000"})


def is_unavailable_error(exc: BaseException) -> bool:
    """True for errors that mean "the database is not reachable or not usable right now"."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES:
            return True
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


def unreachable(url: URL, exc: BaseException) -> Unavailable:
    """The one-line error for a database that cannot be reached, without its password."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return Unavailable(f"cannot reach the database {describe(url)}: {reason}")


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Turn "database down" driver errors into `Unavailable`; let the rest through."""
    try:
        yield
    except Exception as exc:
        if is_unavailable_error(exc):
            raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
        raise


async def ping(engine: AsyncEngine) -> None:
    async with translated_errors(), engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with translated_errors(), engine.begin() as conn:
        yield conn
