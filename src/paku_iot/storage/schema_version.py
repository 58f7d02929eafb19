"""Which schema revision the database is at, read without Alembic.

Every process checks this at start; only `paku-iot migrate` needs Alembic itself (and its
Mako templates, a few MB a process would otherwise carry for nothing).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.exceptions import SettingsError
from paku_iot.storage.engine import is_unavailable_error, unreachable

# The newest migration in storage/migrations/versions; a test checks it against Alembic's
# own idea of the head, so adding a migration without updating this fails CI.
SCHEMA_HEAD = "0014"


def _is_missing_table(exc: BaseException) -> bool:
    message = str(getattr(exc, "orig", None) or exc).lower()
    return "alembic_version" in message and (
        "no such table" in message or "does not exist" in message
    )


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision in `alembic_version`, or None for a database never migrated."""
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    except Exception as exc:
        # First: SQLite reports a missing table as an OperationalError, like an outage.
        if _is_missing_table(exc):
            return None
        if is_unavailable_error(exc):
            raise unreachable(engine.url, exc) from None
        raise
    return None if row is None else str(row[0])


async def require_current_schema(engine: AsyncEngine) -> None:
    """Refuse to run against a database whose schema is not at the newest migration."""
    current = await current_revision(engine)
    if current != SCHEMA_HEAD:
        raise SettingsError(
            f"the database schema is at {current or 'nothing'}, this version needs "
            f"{SCHEMA_HEAD}: run `paku-iot migrate` first"
        )
