"""Schema migrations with Alembic, run programmatically (no alembic.ini needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from paku_iot.storage.engine import is_unavailable_error, unreachable
from paku_iot.storage.urls import async_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`. Blocking: call it outside the event loop (or in a
    thread), since Alembic drives its own loop for the async driver."""
    try:
        command.upgrade(alembic_config(database_url), revision)
    except Exception as exc:
        if is_unavailable_error(exc):
            raise unreachable(async_database_url(database_url), exc) from None
        raise


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def upgrade_in_thread(database_url: str) -> asyncio.Future[None]:
    """`upgrade` from inside a running loop, without nesting event loops."""
    return asyncio.ensure_future(asyncio.to_thread(upgrade, database_url))
